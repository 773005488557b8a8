package configtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped files, relative to envoy-config/.
const (
	envoyFile       = "envoy.yaml"
	wasmPluginFile  = "istio/wasmplugin.yaml"
	serviceEntry    = "istio/serviceentry.yaml"
	destinationRule = "istio/destinationrule.yaml"
	statsMatcher    = "istio/proxy-stats-matcher.yaml"
	secretEnvPatch  = "istio/secret-env-patch.yaml"
	secretEnvDoc    = "istio/secret-env.md"
	realmFile       = "keycloak/realm-demo.json"
)

// What the shipped files promise each other and the README.
const (
	wantClientID  = "token-exchange-filter"
	wantAudience  = "kagenti-api"
	wantSecretEnv = "TOKEN_EXCHANGE_CLIENT_SECRET"
	wantPluginID  = "token-exchange" // Envoy name/root_id/vm_id, Istio pluginName
	uiClientID    = "kagenti-ui"
	// fakeSecret stands in for the secret the proxy's environment provides.
	fakeSecret = "secret-from-the-proxy-environment"
)

func readConfig(t *testing.T, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// mutate replaces old in data, which must occur exactly once: a mutation never silently stops
// applying, or hits a comment instead, when the file changes.
func mutate(t *testing.T, data []byte, old, new string) []byte {
	t.Helper()
	if n := bytes.Count(data, []byte(old)); n != 1 {
		t.Fatalf("mutation target %q occurs %d times, want exactly once", old, n)
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1)
}

// problems collects the findings of one check, so that a test reports all of them at once.
type problems []error

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

func (p problems) err() error { return errors.Join(p...) }

// wantError asserts that err mentions every one of parts.
func wantError(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, part := range parts {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error does not mention %q:\n%v", part, err)
		}
	}
}
