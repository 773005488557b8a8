package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// TestSelfCheck runs `make run`'s walk-through on free ports with the built-in host: each step
// is checked by the demo itself, and the output a newcomer reads names each of them.
func TestSelfCheck(t *testing.T) {
	module, err := wasmbuild.Module()
	if err != nil {
		t.Fatal(err)
	}
	wasm := filepath.Join(t.TempDir(), "plugin.wasm")
	if err := os.WriteFile(wasm, module, 0o644); err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	o.proxyAddr, o.idpAddr, o.upstreamAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	o.wasm = wasm
	o.envoyConfig = filepath.Join(wasmbuild.RepoRoot(), "envoy-config", "envoy.yaml")
	o.proxyKind = "host"
	o.checkOnly = true
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"✓ 1. alice", "✓ 2. bob", "✓ 3. alice again", "✓ 4. burst", "✓ 5. no user token", "✓ 6. IdP stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// The demo runs exactly the plugin configuration envoy.yaml ships.
func TestPluginConfigComesFromEnvoyYAML(t *testing.T) {
	cfg, err := pluginConfigOf(filepath.Join(wasmbuild.RepoRoot(), "envoy-config", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"clientId": "token-exchange-filter"`, `"clientSecretEnv": "TOKEN_EXCHANGE_CLIENT_SECRET"`, `"audience": "kagenti-api"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("plugin configuration lacks %s:\n%s", want, cfg)
		}
	}
}
