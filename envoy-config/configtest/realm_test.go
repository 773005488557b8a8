package configtest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/config"
)

// The parts of a Keycloak realm representation the filter depends on. Booleans are pointers: the
// realm must state them, not rely on Keycloak's defaults.
type kcRealm struct {
	Realm   string     `json:"realm"`
	Enabled *bool      `json:"enabled"`
	Clients []kcClient `json:"clients"`
	Users   []kcUser   `json:"users"`
}

type kcClient struct {
	ClientID                  string            `json:"clientId"`
	Enabled                   *bool             `json:"enabled"`
	PublicClient              *bool             `json:"publicClient"`
	BearerOnly                *bool             `json:"bearerOnly"`
	Secret                    string            `json:"secret"`
	StandardFlowEnabled       *bool             `json:"standardFlowEnabled"`
	ImplicitFlowEnabled       *bool             `json:"implicitFlowEnabled"`
	DirectAccessGrantsEnabled *bool             `json:"directAccessGrantsEnabled"`
	ServiceAccountsEnabled    *bool             `json:"serviceAccountsEnabled"`
	Attributes                map[string]string `json:"attributes"`
	ProtocolMappers           []kcMapper        `json:"protocolMappers"`
}

type kcMapper struct {
	Name           string            `json:"name"`
	Protocol       string            `json:"protocol"`
	ProtocolMapper string            `json:"protocolMapper"`
	Config         map[string]string `json:"config"`
}

type kcUser struct {
	Username      string `json:"username"`
	Enabled       *bool  `json:"enabled"`
	Email         string `json:"email"`
	EmailVerified *bool  `json:"emailVerified"`
	FirstName     string `json:"firstName"`
	LastName      string `json:"lastName"`
	Credentials   []struct {
		Type      string `json:"type"`
		Value     string `json:"value"`
		Temporary *bool  `json:"temporary"`
	} `json:"credentials"`
}

const standardTokenExchange = "standard.token.exchange.enabled"

func is(b *bool, want bool) bool { return b != nil && *b == want }

// checkRealm checks that a plugin configured as cfg can work against the realm: its realm exists,
// its client may exchange tokens and get a service-account token, the user-facing client's tokens
// may be exchanged by it, the requested audience exists and is available, and the demo users exist.
func checkRealm(data []byte, cfg *config.Config) error {
	var realm kcRealm
	if err := json.Unmarshal(data, &realm); err != nil {
		return fmt.Errorf("decoding the realm: %w", err)
	}
	var p problems
	if want := realmOf(cfg); realm.Realm != want || !is(realm.Enabled, true) {
		p.addf("realm %q (enabled %v), want enabled realm %q from tokenEndpoint %s", realm.Realm, realm.Enabled != nil && *realm.Enabled, want, cfg.TokenEndpoint.URL)
	}
	clients := map[string]kcClient{}
	for _, c := range realm.Clients {
		clients[c.ClientID] = c
	}

	filter, ok := clients[cfg.ClientID]
	switch {
	case !ok:
		p.addf("no client %q (the plugin's clientId)", cfg.ClientID)
	default:
		if !is(filter.Enabled, true) || !is(filter.PublicClient, false) || is(filter.BearerOnly, true) || filter.Secret == "" {
			p.addf("client %q must be enabled, confidential (publicClient false) and have a secret", cfg.ClientID)
		}
		if filter.Attributes[standardTokenExchange] != "true" {
			p.addf("client %q: attribute %s is %q, want \"true\" (else: Standard token exchange is not enabled for the requested client)",
				cfg.ClientID, standardTokenExchange, filter.Attributes[standardTokenExchange])
		}
		if !is(filter.ServiceAccountsEnabled, true) {
			p.addf("client %q: serviceAccountsEnabled must be true (the service-account token is the fallback)", cfg.ClientID)
		}
		if !is(filter.StandardFlowEnabled, false) || !is(filter.ImplicitFlowEnabled, false) || !is(filter.DirectAccessGrantsEnabled, false) {
			p.addf("client %q: standard, implicit and direct-access flows must be off: nobody logs in to it", cfg.ClientID)
		}
		// Keycloak only narrows: a requested audience must be one the client's mappers give
		// (StandardTokenExchangeProvider.checkRequestedAudiences); unset, the token carries
		// every mapped audience, so at least one must be mapped for the API to accept it.
		for _, aud := range requestedAudiences(cfg) {
			if aud == "" {
				if len(mappedAudiences(filter)) == 0 {
					p.addf("client %q: no audience is requested and no oidc-audience-mapper gives one: the exchanged token has no API audience", cfg.ClientID)
				}
				continue
			}
			if !addsAudience(filter, aud) {
				p.addf("client %q: no oidc-audience-mapper adding %q to access tokens (else: Requested audience not available)",
					cfg.ClientID, aud)
			}
		}
	}

	if ui, ok := clients[uiClientID]; !ok {
		p.addf("no client %q (the user-facing client)", uiClientID)
	} else {
		if !is(ui.Enabled, true) || !is(ui.PublicClient, true) || !is(ui.DirectAccessGrantsEnabled, true) {
			p.addf("client %q must be enabled, public, with direct access grants (the demo's password grant)", uiClientID)
		}
		if !addsAudience(ui, cfg.ClientID) {
			p.addf("client %q: no oidc-audience-mapper adding %q to access tokens (else the exchange is refused: 403 access_denied)",
				uiClientID, cfg.ClientID)
		}
	}

	for _, aud := range requestedAudiences(cfg) {
		if aud == "" {
			continue
		}
		if api, ok := clients[aud]; !ok {
			p.addf("no client %q (the exchange's audience; else: 400 invalid_client Audience not found)", aud)
		} else if !is(api.Enabled, true) || !is(api.PublicClient, false) || !is(api.StandardFlowEnabled, false) ||
			!is(api.ImplicitFlowEnabled, false) || !is(api.DirectAccessGrantsEnabled, false) ||
			!is(api.ServiceAccountsEnabled, false) || api.Attributes[standardTokenExchange] == "true" {
			p.addf("client %q must be enabled and confidential with every flow off (an audience only)", aud)
		}
	}

	users := map[string]kcUser{}
	for _, u := range realm.Users {
		users[u.Username] = u
	}
	for _, name := range []string{"alice", "bob"} {
		u, ok := users[name]
		if !ok {
			p.addf("no user %q", name)
			continue
		}
		// Keycloak's user profile requires email, first and last name; without them the password
		// grant fails with "Account is not fully set up".
		if !is(u.Enabled, true) || !strings.Contains(u.Email, "@") || !is(u.EmailVerified, true) || u.FirstName == "" || u.LastName == "" {
			p.addf("user %q must be enabled with a verified email, first and last name", name)
		}
		if !hasPassword(u) {
			p.addf("user %q needs a password credential that is not temporary", name)
		}
	}
	return p.err()
}

// requestedAudiences are the audiences a configuration can request: the default and every
// enabled rule's ("" = none requested).
func requestedAudiences(cfg *config.Config) []string {
	out := []string{cfg.TokenExchange.Audience}
	for _, r := range cfg.Rules {
		if r.Enabled && !slices.Contains(out, r.Audience) {
			out = append(out, r.Audience)
		}
	}
	return out
}

// mappedAudiences are the audiences c's audience mappers add to its access tokens.
func mappedAudiences(c kcClient) []string {
	var out []string
	for _, m := range c.ProtocolMappers {
		if m.Protocol == "openid-connect" && m.ProtocolMapper == "oidc-audience-mapper" && m.Config["access.token.claim"] == "true" {
			out = append(out, m.Config["included.client.audience"])
		}
	}
	return out
}

// addsAudience: an audience mapper on c puts aud into the access tokens issued to c.
func addsAudience(c kcClient, aud string) bool {
	for _, m := range c.ProtocolMappers {
		if m.Protocol == "openid-connect" && m.ProtocolMapper == "oidc-audience-mapper" &&
			m.Config["included.client.audience"] == aud && m.Config["access.token.claim"] == "true" {
			return true
		}
	}
	return false
}

func hasPassword(u kcUser) bool {
	for _, c := range u.Credentials {
		if c.Type == "password" && c.Value != "" && is(c.Temporary, false) {
			return true
		}
	}
	return false
}

// realmOf extracts the realm from a Keycloak token endpoint path (/realms/<realm>/protocol/...).
func realmOf(cfg *config.Config) string {
	rest, ok := strings.CutPrefix(cfg.TokenEndpoint.Path, "/realms/")
	if !ok {
		return ""
	}
	realm, _, _ := strings.Cut(rest, "/")
	return realm
}

// pluginConfigs are the plugin configurations of the shipped Envoy and Istio set-ups: the realm
// must serve both.
func pluginConfigs(t *testing.T) map[string]*config.Config {
	t.Helper()
	envoy, err := checkBootstrap(readConfig(t, envoyFile))
	if err != nil {
		t.Fatalf("%s: %v", envoyFile, err)
	}
	istio, err := checkIstio(readIstioFiles(t))
	if err != nil {
		t.Fatalf("envoy-config/istio: %v", err)
	}
	return map[string]*config.Config{envoyFile: envoy.config, wasmPluginFile: istio}
}

func TestRealmServesThePlugin(t *testing.T) {
	realm := readConfig(t, realmFile)
	for file, cfg := range pluginConfigs(t) {
		if err := checkRealm(realm, cfg); err != nil {
			t.Errorf("%s against %s:\n%v", realmFile, file, err)
		}
	}
}

// TestRealmCatchesBreakage breaks the realm one way at a time: each must be reported.
func TestRealmCatchesBreakage(t *testing.T) {
	orig := readConfig(t, realmFile)
	cfg := pluginConfigs(t)[envoyFile]
	for _, tc := range []struct {
		name, old, new string
		want           []string
	}{
		{"not JSON", `"realm": "demo",`, `"realm": "demo"`, []string{"decoding the realm"}},
		{"realm name", `"realm": "demo",`, `"realm": "other",`, []string{`realm "other"`}},
		{"filter client missing", `"clientId": "token-exchange-filter",`, `"clientId": "filter",`, []string{`no client "token-exchange-filter"`}},
		{"filter client without secret", `"secret": "change-me-token-exchange-filter-secret",`, `"secret": "",`, []string{"confidential"}},
		{"standard token exchange off", `"standard.token.exchange.enabled": "true"`, `"standard.token.exchange.enabled": "false"`, []string{"Standard token exchange is not enabled"}},
		{"no service account", `"serviceAccountsEnabled": true,`, `"serviceAccountsEnabled": false,`, []string{"serviceAccountsEnabled"}},
		{"filter audience mapper", `"included.client.audience": "kagenti-api",`, `"included.client.audience": "other",`, []string{"Requested audience not available"}},
		{"ui audience mapper", `"included.client.audience": "token-exchange-filter",`, `"included.client.audience": "other",`, []string{"403 access_denied"}},
		{"ui mapper type", `"protocolMapper": "oidc-audience-mapper",
          "consentRequired": false,
          "config": {
            "included.client.audience": "token-exchange-filter",`, `"protocolMapper": "oidc-hardcoded-claim-mapper",
          "consentRequired": false,
          "config": {
            "included.client.audience": "token-exchange-filter",`, []string{"403 access_denied"}},
		{"ui client missing", `"clientId": "kagenti-ui",`, `"clientId": "ui",`, []string{`no client "kagenti-ui"`}},
		{"ui no password grant", `"directAccessGrantsEnabled": true,`, `"directAccessGrantsEnabled": false,`, []string{"direct access grants"}},
		{"api client missing", `"clientId": "kagenti-api",`, `"clientId": "api",`, []string{`no client "kagenti-api"`}},
		{"api may exchange", `"standard.token.exchange.enabled": "false"`, `"standard.token.exchange.enabled": "true"`, []string{"every flow off"}},
		{"user missing", `"username": "bob",`, `"username": "carol",`, []string{`no user "bob"`}},
		{"user without email", `"email": "alice@example.com",`, `"email": "",`, []string{`user "alice"`}},
		{"temporary password", `{ "type": "password", "value": "bob-password", "temporary": false }`, `{ "type": "password", "value": "bob-password", "temporary": true }`, []string{`user "bob" needs a password`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, checkRealm(mutate(t, orig, tc.old, tc.new), cfg), tc.want...)
		})
	}
}

// Audiences are checked the way Keycloak decides them: unset is fine when a mapper gives the
// client an audience; the filter's own clientId (never in its own tokens' aud) and a rule's
// unmapped audience are reported.
func TestRealmChecksEveryAudience(t *testing.T) {
	realm := readConfig(t, realmFile)
	base := *pluginConfigs(t)[envoyFile]
	unset := base
	unset.TokenExchange.Audience = ""
	if err := checkRealm(realm, &unset); err != nil {
		t.Errorf("audience unset: %v", err)
	}
	own := base
	own.TokenExchange.Audience = base.ClientID
	wantError(t, checkRealm(realm, &own), "Requested audience not available")
	rule := base
	rule.Rules = []config.Rule{{PathPrefix: "/agents", Enabled: true, Audience: "kagenti-agents"}}
	wantError(t, checkRealm(realm, &rule), `"kagenti-agents"`, "Requested audience not available")
}
