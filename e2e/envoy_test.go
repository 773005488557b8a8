package e2e

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// The same scenarios against a real Envoy, when one is installed: ENVOY_BIN, `envoy` on PATH, or
// func-e (which downloads Envoy itself). It runs envoy-config/envoy.yaml, the configuration we
// ship, with its addresses moved to free ports.

func findRealEnvoy(t *testing.T) []string {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		return []string{p}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return []string{p}
	}
	if p, err := exec.LookPath("func-e"); err == nil {
		return []string{p, "run"}
	}
	t.Skip("real Envoy not found: set ENVOY_BIN, put envoy (≥ 1.39) on PATH, or install func-e to run this suite against Envoy")
	return nil
}

type realEnvoy struct {
	url string
	idp *idp.IdP
	up  *upstream.Upstream
}

func startRealEnvoy(t *testing.T) *realEnvoy {
	envoy := findRealEnvoy(t)
	module, err := wasmbuild.Module()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wasm := filepath.Join(dir, "plugin.wasm")
	if err := os.WriteFile(wasm, module, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := idp.Start(idp.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	up, err := upstream.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Close() })

	raw, err := os.ReadFile(filepath.Join(wasmbuild.RepoRoot(), "envoy-config", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	proxyPort, adminPort := freePort(t), freePort(t)
	cfg := strings.NewReplacer(
		"port_value: 10000", "port_value: "+strconv.Itoa(proxyPort),
		"port_value: 9901", "port_value: "+strconv.Itoa(adminPort),
		"port_value: 18080", "port_value: "+strconv.Itoa(up.Port()),
		"port_value: 18180", "port_value: "+strconv.Itoa(p.Port()),
		"127.0.0.1:18180", p.Addr(),
		"filename: build/plugin.wasm", "filename: "+wasm,
	).Replace(string(raw))
	cfgPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, envoy[0], append(envoy[1:], "-c", cfgPath, "--base-id", strconv.Itoa(proxyPort))...)
	cmd.Env = append(os.Environ(), "TOKEN_EXCHANGE_CLIENT_SECRET="+idp.FilterClientSecret)
	logs, _ := os.Create(filepath.Join(dir, "envoy.log"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "envoy.log"))
			t.Logf("envoy log:\n%s", b)
		}
	})
	e := &realEnvoy{url: "http://127.0.0.1:" + strconv.Itoa(proxyPort), idp: p, up: up}
	// Envoy answers on its admin port once ready; poll its readiness endpoint.
	ready := "http://127.0.0.1:" + strconv.Itoa(adminPort) + "/ready"
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Envoy not ready within 60 s")
		}
		time.Sleep(100 * time.Millisecond) // no event to wait on: Envoy is another process
	}
	return e
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRealEnvoy_ExchangeCacheAndFallback(t *testing.T) {
	e := startRealEnvoy(t)
	alice, err := e.idp.MintUserToken("alice", uiClient)
	if err != nil {
		t.Fatal(err)
	}
	get := func(token string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.url+"/api", nil)
		if token != "" {
			req.Header.Set("x-user-oidc-token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		last, ok := e.up.LastRequest()
		if resp.StatusCode != http.StatusOK || !ok {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if last.Header.Get("x-user-oidc-token") != "" {
			t.Fatalf("user token went upstream")
		}
		return last.Claims
	}
	if c := get(alice); c["sub"] != e.idp.Subject("alice") || c["azp"] != idp.FilterClientID {
		t.Fatalf("upstream saw %v, want alice's exchanged token", c)
	}
	for i := 0; i < 5; i++ {
		get(alice)
	}
	if n := e.idp.TokenExchangeCount(); n != 1 { // later requests find it in shared data, on any worker
		t.Fatalf("%d exchanges for one user", n)
	}
	if c := get(""); c["sub"] != idp.ServiceAccountSubject(idp.FilterClientID) {
		t.Fatalf("no user token: upstream saw %v, want the service-account token", c)
	}
	_ = e.idp.Stop()
	bob, _ := e.idp.MintUserToken("bob", uiClient)
	if c := get(bob); c["sub"] != idp.ServiceAccountSubject(idp.FilterClientID) {
		t.Fatalf("IdP down: upstream saw %v, want the service-account fallback", c)
	}
}
