package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
)

// The addresses envoy-config/envoy.yaml uses; the demo listens on the same ones by default.
const (
	defaultProxy    = "127.0.0.1:10000"
	defaultIdP      = "127.0.0.1:18180"
	defaultUpstream = "127.0.0.1:18080"
	secretEnv       = "TOKEN_EXCHANGE_CLIENT_SECRET"
	uiClient        = "kagenti-ui"
)

type options struct {
	proxyAddr, idpAddr, upstreamAddr string
	workers                          int
	wasm, envoyConfig, proxyKind     string
	checkOnly                        bool
}

func defaultOptions() options {
	return options{proxyAddr: defaultProxy, idpAddr: defaultIdP, upstreamAddr: defaultUpstream, workers: 4,
		wasm: "build/plugin.wasm", envoyConfig: "envoy-config/envoy.yaml", proxyKind: "auto"}
}

type demo struct {
	out      io.Writer
	idp      *idp.IdP
	upstream *upstream.Upstream
	proxyURL string
	proxyBy  string
	closers  []func()
	client   *http.Client
}

func (d *demo) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func start(ctx context.Context, o options, out io.Writer) (*demo, error) {
	d := &demo{out: out, client: &http.Client{Timeout: 15 * time.Second}}
	module, err := os.ReadFile(o.wasm)
	if err != nil {
		return nil, fmt.Errorf("reading the filter: %w (run `make build` first)", err)
	}
	pluginConfig, err := pluginConfigOf(o.envoyConfig)
	if err != nil {
		return nil, err
	}

	cfg := idp.DefaultConfig()
	cfg.Listen = o.idpAddr
	if d.idp, err = idp.Start(cfg); err != nil {
		return nil, fmt.Errorf("starting the OIDC provider on %s: %w", o.idpAddr, err)
	}
	d.closers = append(d.closers, func() { _ = d.idp.Close() })
	if d.upstream, err = upstream.Start(o.upstreamAddr); err != nil {
		d.close()
		return nil, fmt.Errorf("starting the echo upstream on %s: %w", o.upstreamAddr, err)
	}
	d.closers = append(d.closers, func() { _ = d.upstream.Close() })

	// The plugin configuration is envoy.yaml's, pointed at this IdP (the same address unless
	// the demo was asked to listen elsewhere).
	pluginConfig, err = withTokenEndpoint(pluginConfig, d.idp.TokenEndpoint())
	if err != nil {
		d.close()
		return nil, err
	}
	secret := idp.FilterClientSecret

	envoyBin := findEnvoy()
	useEnvoy := o.proxyKind == "envoy" || (o.proxyKind == "auto" && envoyBin != nil &&
		o.proxyAddr == defaultProxy && o.idpAddr == defaultIdP && o.upstreamAddr == defaultUpstream)
	if useEnvoy {
		if envoyBin == nil {
			d.close()
			return nil, errors.New("no Envoy found: set ENVOY_BIN, put envoy on PATH, or install func-e")
		}
		if err := d.startEnvoy(ctx, envoyBin, o, secret); err != nil {
			d.close()
			return nil, err
		}
	} else {
		px, err := host.Start(ctx, host.Config{
			Module: module, PluginConfig: pluginConfig, VMID: "token-exchange", RootID: "token-exchange",
			PluginName: "token-exchange", Workers: o.workers, Listen: o.proxyAddr,
			Clusters:        map[string]string{"idp": d.idp.Addr(), "upstream": d.upstream.Addr()},
			UpstreamCluster: "upstream",
			Env:             map[string]string{secretEnv: secret},
		})
		if err != nil {
			d.close()
			return nil, fmt.Errorf("starting the proxy: %w", err)
		}
		d.closers = append(d.closers, func() { _ = px.Close() })
		d.proxyURL = px.URL()
		d.proxyBy = fmt.Sprintf("the built-in Envoy-faithful host (%d workers; install Envoy ≥ 1.39 or func-e to use a real one)", o.workers)
	}

	d.say("token-exchange filter demo")
	d.say("  proxy     %s  — %s, running %s", d.proxyURL, d.proxyBy, o.wasm)
	d.say("  IdP       %s  — OIDC provider, Keycloak layout, realm %q", d.idp.URL(), d.idp.Realm())
	d.say("  upstream  %s  — echo server: shows the headers and token claims it received", d.upstream.URL())
	d.say("")
	return d, nil
}

// envoyCommand is how to run Envoy: the binary and the arguments before "-c FILE".
type envoyCommand struct {
	path string
	args []string
}

func findEnvoy() *envoyCommand {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		return &envoyCommand{path: p}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return &envoyCommand{path: p}
	}
	if p, err := exec.LookPath("func-e"); err == nil {
		return &envoyCommand{path: p, args: []string{"run"}}
	}
	return nil
}

func (d *demo) startEnvoy(ctx context.Context, e *envoyCommand, o options, secret string) error {
	cfg, err := filepath.Abs(o.envoyConfig)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, e.path, append(e.args, "-c", cfg, "--log-level", "warn")...)
	cmd.Env = append(os.Environ(), secretEnv+"="+secret)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting Envoy: %w", err)
	}
	d.closers = append(d.closers, func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	d.proxyURL = "http://" + o.proxyAddr
	d.proxyBy = "Envoy (" + e.path + ") with " + o.envoyConfig
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", o.proxyAddr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("Envoy did not start listening within 30 s")
		}
		time.Sleep(100 * time.Millisecond) // polling a port Envoy opens when ready: there is no event to wait on
	}
}

// pluginConfigOf returns the Wasm filter's plugin configuration from an Envoy bootstrap, so the
// demo runs exactly what envoy-config/envoy.yaml ships.
func pluginConfigOf(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var found []byte
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["name"] == "envoy.filters.http.wasm" {
				if tc, ok := v["typed_config"].(map[string]any); ok {
					if c, ok := tc["config"].(map[string]any); ok {
						if conf, ok := c["configuration"].(map[string]any); ok {
							if s, ok := conf["value"].(string); ok && found == nil {
								found = []byte(s)
							}
						}
					}
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if found == nil {
		return nil, fmt.Errorf("%s: no envoy.filters.http.wasm filter with a configuration", path)
	}
	return found, nil
}

func withTokenEndpoint(pluginConfig []byte, endpoint string) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(pluginConfig, &m); err != nil {
		return nil, fmt.Errorf("plugin configuration: %w", err)
	}
	m["tokenEndpoint"] = endpoint
	return json.Marshal(m)
}

// passwordGrant logs a user in at the IdP as the UI would, and returns the access token.
func (d *demo) passwordGrant(username string) (string, error) {
	u, _ := d.idp.User(username)
	form := url.Values{"grant_type": {"password"}, "client_id": {uiClient}, "username": {username}, "password": {u.Password}}
	resp, err := d.client.PostForm(d.idp.TokenEndpoint(), form)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.AccessToken == "" {
		return "", fmt.Errorf("login of %s failed: status %d %s", username, resp.StatusCode, body.Error)
	}
	return body.AccessToken, nil
}

type seen struct {
	status                  int
	sub, azp, user, service string
	aud                     []string
}

// call sends one request through the proxy and returns what the upstream saw.
func (d *demo) call(userToken string) (seen, error) {
	req, _ := http.NewRequest(http.MethodGet, d.proxyURL+"/api/agents", nil)
	if userToken != "" {
		req.Header.Set("x-user-oidc-token", userToken)
	}
	req.Header.Set("x-backstage-user", "demo")
	resp, err := d.client.Do(req)
	if err != nil {
		return seen{}, err
	}
	defer resp.Body.Close()
	s := seen{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return s, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var echo upstream.Echo
	if err := json.NewDecoder(resp.Body).Decode(&echo); err != nil {
		return s, err
	}
	s.sub, _ = echo.Claims["sub"].(string)
	s.azp, _ = echo.Claims["azp"].(string)
	s.user, _ = echo.Claims["preferred_username"].(string)
	switch a := echo.Claims["aud"].(type) {
	case string:
		s.aud = []string{a}
	case []any:
		for _, x := range a {
			if v, ok := x.(string); ok {
				s.aud = append(s.aud, v)
			}
		}
	}
	return s, nil
}

func (s seen) String() string {
	return fmt.Sprintf("sub=%s (%s) aud=%v azp=%s", short(s.sub), s.user, s.aud, s.azp)
}

func short(s string) string {
	if len(s) > 13 {
		return s[:13] + "…"
	}
	return s
}

// selfCheck walks through what the filter does, checking each step.
func (d *demo) selfCheck(ctx context.Context) error {
	d.say("Self-check")
	alice, err := d.passwordGrant("alice")
	if err != nil {
		return err
	}
	bob, err := d.passwordGrant("bob")
	if err != nil {
		return err
	}
	d.say("  logged in alice and bob at the IdP (password grant, client %s)", uiClient)

	wantUser := func(step, username string, s seen, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		if s.sub != d.idp.Subject(username) || s.azp != idp.FilterClientID || !has(s.aud, idp.APIClientID) {
			return fmt.Errorf("%s: upstream saw %v, want %s's token for %s", step, s, username, idp.APIClientID)
		}
		d.say("  ✓ %s → upstream got %s's own exchanged token: %v", step, username, s)
		return nil
	}
	s, err := d.call(alice)
	if err := wantUser("1. alice's request", "alice", s, err); err != nil {
		return err
	}
	s, err = d.call(bob)
	if err := wantUser("2. bob's request", "bob", s, err); err != nil {
		return err
	}

	before := d.idp.TokenExchangeCount()
	for i := 0; i < 3; i++ {
		if s, err = d.call(alice); err != nil {
			return fmt.Errorf("3. repeat: %w", err)
		}
	}
	if n := d.idp.TokenExchangeCount() - before; n != 0 {
		return fmt.Errorf("3. repeat: %d new exchanges, want 0 (cache)", n)
	}
	d.say("  ✓ 3. alice again, 3 times → served from the shared-data cache: 0 new exchanges at the IdP")

	// A fresh login gives a new token: a burst of requests with it, all at once.
	fresh, err := d.passwordGrant("alice")
	if err != nil {
		return err
	}
	before = d.idp.TokenExchangeCount()
	const burst = 20
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, err := d.call(fresh); err != nil || s.sub != d.idp.Subject("alice") {
				errs <- fmt.Errorf("4. burst: %v %v", s, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	n := d.idp.TokenExchangeCount() - before
	if n != 1 {
		return fmt.Errorf("4. burst: %d exchanges for one new token, want 1", n)
	}
	d.say("  ✓ 4. burst of %d concurrent requests with a new token, spread over the workers → 1 exchange at the IdP", burst)

	// The fallback needs the service-account token: a request without a user token gets it,
	// waiting for the first fetch if that is still under way.
	s, err = d.call("")
	if err != nil || s.sub != idp.ServiceAccountSubject(idp.FilterClientID) {
		return fmt.Errorf("5. no user token: upstream saw %v (%v), want the service-account token", s, err)
	}
	d.say("  ✓ 5. no user token → the service-account token, as before the filter: %v", s)

	if err := d.idp.Stop(); err != nil {
		return err
	}
	down, _ := d.idp.MintUserToken("bob", uiClient) // a token not cached yet
	s, err = d.call(down)
	if rerr := d.idp.Restart(); rerr != nil {
		return rerr
	}
	if err != nil {
		return fmt.Errorf("6. IdP down: %w", err)
	}
	if s.sub != idp.ServiceAccountSubject(idp.FilterClientID) {
		return fmt.Errorf("6. IdP down: upstream saw %v, want the service-account token", s)
	}
	d.say("  ✓ 6. IdP stopped → bob's new token cannot be exchanged, the service-account fallback takes over")
	d.say("       (IdP started again)")
	d.say("")
	return nil
}

func has(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (d *demo) printTryIt() {
	d.say("Try it (Ctrl-C stops everything):")
	d.say("  TOKEN=$(curl -s %s -d grant_type=password -d client_id=%s -d username=alice -d password=alice-password | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
		d.idp.TokenEndpoint(), uiClient)
	d.say("  curl -s %s/api -H \"x-user-oidc-token: $TOKEN\"   # the upstream shows alice's exchanged token", d.proxyURL)
	d.say("  curl -s %s/api                                    # no user token: the service-account token", d.proxyURL)
	d.say("  curl -sN '%s/sse?events=5&interval=500ms' -H \"x-user-oidc-token: $TOKEN\"   # streamed through", d.proxyURL)
}
