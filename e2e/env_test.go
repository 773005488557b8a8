package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// env is one complete set-up: the IdP, the echo upstream and the compiled filter in the
// Envoy-faithful host with several workers, all on loopback.
type env struct {
	t        *testing.T
	idp      *idp.IdP
	upstream *upstream.Upstream
	proxy    *host.Host
	client   *http.Client
	// fill completes a plugin fragment as newEnv did (for Reconfigure).
	fill func(fragment string) []byte
	// hostCfg is the proxy's configuration (another replica starts with it: replica).
	hostCfg host.Config

	mu      sync.Mutex
	secrets map[string]bool // every token and secret seen: none may appear in a log line
}

type envOptions struct {
	workers int
	// plugin is the plugin configuration without tokenEndpoint, cluster and the client, which
	// the env fills in; "" means exchange on with audience kagenti-api.
	plugin string
	// beforeProxy runs after the IdP started and before the proxy does (e.g. to inject a fault
	// into the first service-account fetch).
	beforeProxy func(*idp.IdP)
	// secret overrides the client secret the proxy is given (default: the right one).
	secret string
	// istio runs the plugin as Istio does: vm_id "", shared with every other plugin.
	istio bool
	// plugins are further plugin configurations (filled in like plugin) sharing the VMs, each
	// with its own listener (e.proxy.PluginURL(i)).
	plugins []string
	// deferredLog runs streams as HTTP/3 does: on_log after on_delete.
	deferredLog bool
	// pluginFor, when set, makes the plugin fragment from the IdP's issuer (instead of plugin).
	pluginFor func(issuer string) string
	// legacyHost runs the proxy as an Envoy whose proxy-wasm-cpp-host predates 94091cd.
	legacyHost bool
	// module replaces the compiled filter (a variant build).
	module []byte
	// trapsExpected stops the cleanup from failing the test on traps the host reported.
	trapsExpected bool
}

const (
	filterClient = idp.FilterClientID
	uiClient     = "kagenti-ui"
	apiAudience  = "kagenti-api"
	exchangeOn   = `"tokenExchange":{"enabled":true,"audience":"kagenti-api"}`
	// exchangeUnlimited is exchangeOn without the new-key bucket, for tests of many new users
	// that measure something else.
	exchangeUnlimited = `"tokenExchange":{"enabled":true,"audience":"kagenti-api","newKeyExchangesPerSecond":0}`
)

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.workers == 0 {
		o.workers = 4
	}
	if o.plugin == "" {
		o.plugin = exchangeOn
	}
	module := o.module
	if module == nil {
		var err error
		if module, err = wasmbuild.Module(); err != nil {
			t.Fatal(err)
		}
	}
	p, err := idp.Start(idp.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if o.beforeProxy != nil {
		o.beforeProxy(p)
	}
	if o.pluginFor != nil {
		o.plugin = o.pluginFor(p.Issuer())
	}
	u, err := upstream.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = u.Close() })

	secret, _ := p.Client(filterClient)
	if o.secret != "" {
		secret.Secret = o.secret
	}
	fill := func(fragment string) []byte {
		return []byte(`{"tokenEndpoint":"` + p.TokenEndpoint() + `","cluster":"idp","clientId":"` + filterClient +
			`","clientSecretEnv":"TOKEN_EXCHANGE_CLIENT_SECRET",` + fragment + `}`)
	}
	vmID := "token-exchange"
	if o.istio {
		vmID = ""
	}
	var more []host.Plugin
	for i, fragment := range o.plugins {
		name := fmt.Sprintf("token-exchange-%d", i+2)
		more = append(more, host.Plugin{Name: name, RootID: name, Config: fill(fragment)})
	}
	hostCfg := host.Config{
		Module:          module,
		PluginConfig:    fill(o.plugin),
		Plugins:         more,
		DeferredLog:     o.deferredLog,
		LegacyCppHost:   o.legacyHost,
		VMID:            vmID,
		RootID:          "token-exchange",
		PluginName:      "token-exchange",
		Workers:         o.workers,
		Clusters:        map[string]string{"idp": p.Addr(), "upstream": u.Addr()},
		UpstreamCluster: "upstream",
		Env:             map[string]string{"TOKEN_EXCHANGE_CLIENT_SECRET": secret.Secret},
	}
	px, err := host.Start(context.Background(), hostCfg)
	if err != nil {
		t.Fatalf("starting the proxy: %v", err)
	}
	e := &env{t: t, idp: p, upstream: u, proxy: px, fill: fill, hostCfg: hostCfg, secrets: map[string]bool{secret.Secret: true},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	t.Cleanup(func() {
		e.assertNoSecretInLogs()
		_ = px.Close()
		for _, l := range px.Logs() {
			if l.Host && !o.trapsExpected { // a trap, proc_exit or VM reload: the module must never get there
				t.Errorf("host reported (worker %d): %s", l.Worker, l.Message)
			}
		}
	})
	return e
}

// replica starts one more proxy like e.proxy: another Envoy of the same gateway, with shared
// data of its own, in front of the same IdP and upstream. It is closed with the test, and its
// traps fail the test like the first proxy's.
func (e *env) replica() *host.Host {
	e.t.Helper()
	px, err := host.Start(context.Background(), e.hostCfg)
	if err != nil {
		e.t.Fatalf("starting a replica: %v", err)
	}
	e.t.Cleanup(func() {
		_ = px.Close()
		for _, l := range px.Logs() {
			if l.Host {
				e.t.Errorf("replica host reported (worker %d): %s", l.Worker, l.Message)
			}
		}
	})
	return px
}

// userToken mints a real access token for username, as the UI client's login would.
func (e *env) userToken(username string) string {
	e.t.Helper()
	tok, err := e.idp.MintUserToken(username, uiClient)
	if err != nil {
		e.t.Fatal(err)
	}
	e.remember(tok)
	return tok
}

func (e *env) remember(secret string) {
	e.mu.Lock()
	e.secrets[secret] = true
	e.mu.Unlock()
}

// reply is what the client got back through the proxy.
type reply struct {
	status  int
	body    []byte
	echo    upstream.Echo // when the upstream answered
	elapsed time.Duration
}

func (r reply) claim(name string) string {
	v, _ := r.echo.Claims[name].(string)
	return v
}

func (r reply) audiences() []string {
	switch v := r.echo.Claims["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, a := range v {
			s, _ := a.(string)
			out = append(out, s)
		}
		return out
	}
	return nil
}

func (r reply) header(name string) string {
	if vs := r.echo.Headers[name]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// get sends GET path through the proxy with the user token (if any) and extra headers.
func (e *env) get(path, userToken string, headers ...string) reply {
	e.t.Helper()
	r, err := e.do(context.Background(), path, userToken, headers...)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	return r
}

func (e *env) do(ctx context.Context, path, userToken string, headers ...string) (reply, error) {
	return e.send(ctx, path, userToken, e.remember, headers...)
}

// send sends GET path through the proxy and hands every token the upstream received to remember
// (for the check that no log line holds one).
func (e *env) send(ctx context.Context, path, userToken string, remember func(string), headers ...string) (reply, error) {
	url := e.proxy.URL() + path
	if strings.HasPrefix(path, "http://") { // another listener (envOptions.plugins)
		url = path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return reply{}, err
	}
	if userToken != "" {
		req.Header.Set("x-user-oidc-token", userToken)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1]) // a name given again (or the user token's) repeats
	}
	start := time.Now()
	resp, err := e.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: body, elapsed: time.Since(start)}
	if err != nil {
		return r, err
	}
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("content-type"), "application/json") {
		if err := json.Unmarshal(body, &r.echo); err != nil {
			return r, err
		}
		if tok := strings.TrimPrefix(r.header("authorization"), "Bearer "); tok != "" {
			remember(tok)
		}
	}
	return r, nil
}

// wantUserToken requires that the upstream saw an exchanged token for username: the user's
// sub, the API as audience, the filter as authorised party.
func (e *env) wantUserToken(r reply, username string) {
	e.t.Helper()
	if r.status != http.StatusOK {
		e.t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if got, want := r.claim("sub"), e.idp.Subject(username); got != want {
		e.t.Fatalf("upstream saw sub %q, want %s's %q (preferred_username %q)", got, username, want, r.claim("preferred_username"))
	}
	if !contains(r.audiences(), apiAudience) {
		e.t.Fatalf("upstream token aud %v lacks %s", r.audiences(), apiAudience)
	}
	if got := r.claim("azp"); got != filterClient {
		e.t.Fatalf("upstream token azp %q, want %q", got, filterClient)
	}
	if r.header("x-user-oidc-token") != "" {
		e.t.Fatalf("the user's token went upstream")
	}
}

// wantServiceToken requires that the upstream saw the service-account token.
func (e *env) wantServiceToken(r reply) {
	e.t.Helper()
	if r.status != http.StatusOK {
		e.t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if got, want := r.claim("sub"), idp.ServiceAccountSubject(filterClient); got != want {
		e.t.Fatalf("upstream saw sub %q (%s), want the service account %q", got, r.claim("preferred_username"), want)
	}
	if r.header("x-user-oidc-token") != "" {
		e.t.Fatalf("the user's token went upstream")
	}
}

// wantLocalReply requires a local reply of the filter with status and OAuth error code.
func (e *env) wantLocalReply(r reply, status int, code string) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	var body struct{ Error, ErrorDescription string }
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error != code {
		e.t.Fatalf("local reply body %s, want error %q", r.body, code)
	}
}

// serviceTokenReady waits until a service-account token has been fetched and stored in
// shared data, where every worker finds it.
func (e *env) serviceTokenReady() {
	e.t.Helper()
	if _, err := e.proxy.WaitLog(10*time.Second, func(l host.Log) bool {
		return strings.Contains(l.Message, "service-account token") && strings.Contains(l.Message, "fetched")
	}); err != nil {
		e.t.Fatalf("no service-account token fetched: %v", err)
	}
}

// assertNoSecretInLogs: no log line of any VM contains a token or the client secret.
func (e *env) assertNoSecretInLogs() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.proxy.Logs() {
		for s := range e.secrets {
			if len(s) >= 8 && strings.Contains(l.Message, s) {
				e.t.Errorf("log line (%s, worker %d) contains a token or secret: %q", l.Level, l.Worker,
					strings.ReplaceAll(l.Message, s, "<SECRET>"))
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}
