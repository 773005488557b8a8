package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
)

// The TestStack tests run against whatever stack they are pointed at:
//
//   - by default (make test), the stand-ins: e2e/idp, the module in e2e/host, e2e/upstream;
//   - with E2E_IDP_URL and E2E_PROXY_URL (make test-stack, after make stack), a real Keycloak
//     importing envoy-config/keycloak/realm-demo.json and a real Envoy running
//     envoy-config/envoy.yaml in front of the echo upstream; E2E_ADMIN_URL is Envoy's admin
//     interface, where the metrics are read from /stats.
//
// They use only what both have: logins with the demo users (the password grant of the public
// client kagenti-ui), requests through the proxy, and the filter's metrics. Tests that need to
// inject faults into the IdP or the proxy stay with the stand-ins (they skip against a real
// stack, saying so in one line).
type stack struct {
	t        *testing.T
	external bool
	proxy    string // base URL of the listener
	token    string // the realm's token endpoint
	metric   func(name string) uint64
	client   *http.Client
	env      *env // the stand-ins, when not external
}

func newStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{t: t, client: &http.Client{Timeout: 30 * time.Second}}
	idpURL, proxyURL := os.Getenv("E2E_IDP_URL"), os.Getenv("E2E_PROXY_URL")
	if idpURL != "" && proxyURL != "" {
		s.external = true
		s.proxy = strings.TrimSuffix(proxyURL, "/")
		s.token = strings.TrimSuffix(idpURL, "/") + "/realms/demo/protocol/openid-connect/token"
		admin := strings.TrimSuffix(os.Getenv("E2E_ADMIN_URL"), "/")
		s.metric = func(name string) uint64 { return s.envoyStat(admin, name) }
		return s
	}
	e := newEnv(t, envOptions{workers: 4})
	e.serviceTokenReady()
	s.env, s.proxy, s.token = e, e.proxy.URL(), e.idp.TokenEndpoint()
	s.metric = func(name string) uint64 { v, _ := e.proxy.Metric(name); return v }
	return s
}

// standInsOnly skips a test that needs fault injection when the stack is real.
func standInsOnly(t *testing.T, why string) {
	if os.Getenv("E2E_IDP_URL") != "" && os.Getenv("E2E_PROXY_URL") != "" {
		t.Skip("needs the stand-ins (" + why + "): not run against a real stack")
	}
}

// login is the demo user's access token from the password grant of kagenti-ui.
func (s *stack) login(username, password string) string {
	s.t.Helper()
	form := url.Values{"grant_type": {"password"}, "client_id": {idp.UIClientID}, "username": {username},
		"password": {password}, "scope": {"openid"}}
	resp, err := s.client.PostForm(s.token, form)
	if err != nil {
		s.t.Fatalf("login %s: %v", username, err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		s.t.Fatalf("login %s: status %d %v", username, resp.StatusCode, err)
	}
	if s.env != nil {
		s.env.remember(body.AccessToken)
	}
	return body.AccessToken
}

// get sends GET path through the proxy with the user token (if any).
func (s *stack) get(path, userToken string) (int, upstream.Echo) {
	s.t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, s.proxy+path, nil)
	if userToken != "" {
		req.Header.Set("x-user-oidc-token", userToken)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var echo upstream.Echo
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&echo); err != nil {
			s.t.Fatalf("GET %s: the upstream's echo: %v", path, err)
		}
	}
	return resp.StatusCode, echo
}

// envoyStat reads one counter from Envoy's admin /stats (wasmcustom.<name>: <value>).
func (s *stack) envoyStat(admin, name string) uint64 {
	s.t.Helper()
	if admin == "" {
		s.t.Skip("E2E_ADMIN_URL is not set: Envoy's metrics cannot be read")
	}
	resp, err := s.client.Get(admin + "/stats?filter=" + url.QueryEscape("^wasmcustom\\."+strings.ReplaceAll(name, ".", "\\.")+"$"))
	if err != nil {
		s.t.Fatalf("reading Envoy's stats: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wasmcustom."+name+": "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// wantExchanged: the upstream saw a token exchanged for user: their name, the API as audience,
// the filter as authorised party, and no user token header.
func (s *stack) wantExchanged(status int, e upstream.Echo, user string) {
	s.t.Helper()
	if status != http.StatusOK {
		s.t.Fatalf("status %d", status)
	}
	if got := claim(e, "preferred_username"); got != user {
		s.t.Fatalf("upstream saw preferred_username %q, want %q", got, user)
	}
	aud := e.Claims["aud"]
	if a, ok := aud.(string); ok {
		aud = []any{a}
	}
	found := false
	list, _ := aud.([]any)
	for _, a := range list {
		found = found || a == apiAudience
	}
	if !found {
		s.t.Fatalf("upstream token aud %v lacks %s", e.Claims["aud"], apiAudience)
	}
	if got := claim(e, "azp"); got != filterClient {
		s.t.Fatalf("upstream token azp %q, want %q", got, filterClient)
	}
	if len(e.Headers["x-user-oidc-token"]) > 0 {
		s.t.Fatal("the user's token went upstream")
	}
}

func (s *stack) wantServiceAccount(status int, e upstream.Echo) {
	s.t.Helper()
	if status != http.StatusOK {
		s.t.Fatalf("status %d", status)
	}
	if got, want := claim(e, "preferred_username"), idp.ServiceAccountUsername(filterClient); got != want {
		s.t.Fatalf("upstream saw %q, want the service account %q", got, want)
	}
	if len(e.Headers["x-user-oidc-token"]) > 0 {
		s.t.Fatal("the user's token went upstream")
	}
}

// Each demo user's request reaches the API with a token exchanged for that user.
func TestStack_UsersGetTheirOwnExchangedTokens(t *testing.T) {
	s := newStack(t)
	for _, u := range []idp.User{idp.Alice, idp.Bob} {
		status, echo := s.get("/api", s.login(u.Username, u.Password))
		s.wantExchanged(status, echo, u.Username)
	}
}

// The second request of a user is served from the cache: a hit, no new exchange.
func TestStack_SecondRequestIsACacheHit(t *testing.T) {
	s := newStack(t)
	tok := s.login(idp.Alice.Username, idp.Alice.Password)
	status, first := s.get("/api", tok)
	s.wantExchanged(status, first, idp.Alice.Username)
	hits, exchanges := s.metric("token_exchange.cache.hit"), s.metric("token_exchange.exchange.success")
	status, second := s.get("/api", tok)
	s.wantExchanged(status, second, idp.Alice.Username)
	if claim(second, "jti") != claim(first, "jti") {
		t.Errorf("the second request carried another exchanged token (jti %q, then %q)", claim(first, "jti"), claim(second, "jti"))
	}
	if got := s.metric("token_exchange.cache.hit"); got != hits+1 {
		t.Errorf("cache.hit %d → %d, want one more", hits, got)
	}
	if got := s.metric("token_exchange.exchange.success"); got != exchanges {
		t.Errorf("exchange.success %d → %d, want no new exchange", exchanges, got)
	}
}

// Without a user token, and with one that is not a token, the service-account token is sent.
func TestStack_FallbackToTheServiceAccount(t *testing.T) {
	s := newStack(t)
	status, echo := s.get("/api", "")
	s.wantServiceAccount(status, echo)
	status, echo = s.get("/api", "not a token")
	s.wantServiceAccount(status, echo)
	if got := s.metric("token_exchange.fallback.no_user_token"); got == 0 {
		t.Error("fallback.no_user_token not counted")
	}
}

// A token the IdP refuses to exchange (the user logged out, the token forged) falls back, and
// backs off: the second request costs no callout.
func TestStack_RefusedTokenFallsBack(t *testing.T) {
	s := newStack(t)
	tok := s.login(idp.Alice.Username, idp.Alice.Password)
	forged := tok[:strings.LastIndexByte(tok, '.')+1] + "c2lnbmF0dXJl" // same claims, another signature
	if s.env != nil {
		s.env.remember(forged)
	}
	status, echo := s.get("/api", forged)
	s.wantServiceAccount(status, echo)
	if got := s.metric("token_exchange.exchange.failure.subject_rejected"); got == 0 {
		t.Error("exchange.failure.subject_rejected not counted")
	}
}

// Strict mode answers 401 where fallback sends the service-account token. It needs a plugin
// configuration of its own, which a real Envoy running envoy.yaml does not have.
func TestStack_StrictModeAnswers401(t *testing.T) {
	standInsOnly(t, "a second plugin configuration")
	e := newEnv(t, envOptions{workers: 2, plugin: exchangeOn + `,"fallbackToServiceAccount":false`})
	e.wantLocalReply(e.get("/api", ""), http.StatusUnauthorized, "invalid_token")
}

// An IdP outage: the service-account token already cached keeps every user served.
func TestStack_IdPOutageFallsBack(t *testing.T) {
	standInsOnly(t, "making the IdP fail")
	s := newStack(t)
	tok := s.login(idp.Alice.Username, idp.Alice.Password)
	s.env.idp.SetFault(idp.TokenExchangeOnly, idp.Fault{Kind: idp.FaultStatus, Status: 503})
	status, echo := s.get("/api", tok)
	s.wantServiceAccount(status, echo)
}
