package plugin

import (
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/proxytest"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// Every scenario runs twice, as the SDK's own examples do: against this package's Go code, and
// against the compiled build/plugin.wasm inside the SDK's wazero runner. The compiled module is
// the product; the Go run gives readable failures.
var runners = []string{"go", "wasm"}

// wasmModule is the compiled filter (build/plugin.wasm under `make test`, else a fresh build).
var wasmModule = wasmbuild.Module

// wasmVM is one instance of the compiled module shared by every test of the package: compiling
// the module takes seconds, and the SDK's runner offers no compilation cache. Each test still
// gets a fresh root context (the emulator creates plugin context 1 anew, replacing the previous
// one inside the module, as Envoy does on a configuration update), a fresh shared-data store
// and fresh queues; stream ids are unique across tests.
//
// It is the sdkemulator build (wasmbuild.EmulatorModule): the SDK's runner lacks one import of
// the shipped module. The shipped module's imports and exports are checked in module_test.go,
// and it runs in e2e/'s Envoy-faithful host.
var wasmVM = sync.OnceValues(func() (proxytest.WasmVMContext, error) {
	wasm, err := wasmbuild.EmulatorModule()
	if err != nil {
		return nil, err
	}
	return proxytest.NewWasmVMContext(wasm)
})

// forEachRunner runs fn once per runner as subtests.
func forEachRunner(t *testing.T, fn func(t *testing.T, runner string)) {
	t.Helper()
	for _, runner := range runners {
		t.Run(runner, func(t *testing.T) { fn(t, runner) })
	}
}

// Test fixtures. The secret and tokens are distinctive so that a leak into any log line or local
// reply is found by a plain substring search.
const (
	testSecret        = "s3cr3t-Client-Secret-VALUE"
	testEndpoint      = "https://kc.example.com/realms/demo/protocol/openid-connect/token"
	testCluster       = "outbound|443||kc.example.com"
	testServiceToken  = "SERVICEACCOUNT.eyJzdWIiOiJzZXJ2aWNlIn0.sa-signature"
	testUserToken     = "USERAAA.eyJzdWIiOiJ1c2VyLWEifQ.user-a-signature"
	testUserToken2    = "USERBBB.eyJzdWIiOiJ1c2VyLWIifQ.user-b-signature"
	testExchanged     = "EXCHANGED1.eyJzdWIiOiJ1c2VyLWEiLCJhdWQiOiJrYWdlbnRpIn0.ex-signature"
	testExchanged2    = "EXCHANGED2.eyJzdWIiOiJ1c2VyLWIiLCJhdWQiOiJrYWdlbnRpIn0.ex-signature"
	headerUserToken   = "x-user-oidc-token"
	headerBackstage   = "x-backstage-user"
	backstageUserName = "alice@example.com"
)

// secrets are strings no log line or local reply may ever contain.
var secrets = []string{testSecret, testServiceToken, testUserToken, testUserToken2, testExchanged, testExchanged2}

// harness drives one plugin instance in the SDK emulator.
type harness struct {
	t      testing.TB
	host   proxytest.HostEmulator
	seen   int // callouts already returned by newCallouts
	runner string
	vm     *recordingVM // Go runner only
}

// start loads the plugin with cfg and requires a successful start.
func start(t testing.TB, runner, cfg string) *harness {
	t.Helper()
	h, status := load(t, runner, cfg)
	if status != types.OnPluginStartStatusOK {
		t.Fatalf("plugin refused to start; error logs: %q", h.host.GetErrorLogs())
	}
	return h
}

// load loads the plugin with cfg and returns the start status.
func load(t testing.TB, runner, cfg string) (*harness, types.OnPluginStartStatus) {
	t.Helper()
	var vm types.VMContext
	var recorder *recordingVM
	switch runner {
	case "go":
		recorder = &recordingVM{}
		vm = recorder
	case "wasm":
		v, err := wasmVM()
		if err != nil {
			t.Fatal(err)
		}
		vm = v
	}
	opt := proxytest.NewEmulatorOption().WithVMContext(vm).WithPluginConfiguration([]byte(cfg))
	host, reset := proxytest.NewHostEmulator(opt)
	t.Cleanup(reset)
	h := &harness{t: t, host: host, runner: runner, vm: recorder}
	t.Cleanup(h.assertNoSecretInLogs)
	if st := host.StartVM(); st != types.OnVMStartStatusOK {
		t.Fatalf("VM start failed")
	}
	return h, host.StartPlugin()
}

// pluginConfig builds a plugin configuration with the test endpoint and client plus extra fields.
func pluginConfig(extra string) string {
	base := `"tokenEndpoint":"` + testEndpoint + `","clientId":"gateway","clientSecret":"` + testSecret + `"`
	if extra != "" {
		base += "," + extra
	}
	return "{" + base + "}"
}

const exchangeOn = `"tokenExchange":{"enabled":true,"audience":"kagenti"}`

// callout is one dispatched HTTP call, with its form body decoded.
type callout struct {
	proxytest.HttpCalloutAttribute
	form url.Values
}

func (c callout) header(name string) string { return headerValue(c.Headers, name) }

// newCallouts returns the callouts dispatched since the last call. The filter dispatches from
// the root context, so that is where the emulator records them.
func (h *harness) newCallouts() []callout {
	h.t.Helper()
	all := h.host.GetCalloutAttributesFromContext(proxytest.PluginContextID)
	var out []callout
	for _, a := range all[h.seen:] {
		form, err := url.ParseQuery(string(a.Body))
		if err != nil {
			h.t.Fatalf("callout body is not a form: %v", err)
		}
		out = append(out, callout{HttpCalloutAttribute: a, form: form})
	}
	h.seen = len(all)
	return out
}

// oneCallout requires exactly one new callout with the given grant type and returns it.
func (h *harness) oneCallout(grant string) callout {
	h.t.Helper()
	cs := h.newCallouts()
	if len(cs) != 1 {
		h.t.Fatalf("want 1 new callout, got %d", len(cs))
	}
	if got := cs[0].form.Get("grant_type"); got != grant {
		h.t.Fatalf("callout grant_type = %q, want %q", got, grant)
	}
	return cs[0]
}

func (h *harness) noCallout() {
	h.t.Helper()
	if cs := h.newCallouts(); len(cs) != 0 {
		h.t.Fatalf("want no callout, got %d (first grant %q)", len(cs), cs[0].form.Get("grant_type"))
	}
}

// answer delivers an IdP answer to callout c.
func (h *harness) answer(c callout, status string, body string) {
	h.t.Helper()
	h.host.CallOnHttpCallResponse(c.CalloutID, [][2]string{{":status", status}, {"content-type", "application/json"}}, nil, []byte(body))
}

// reset delivers Envoy's "reset after headers" answer: no headers, no body.
func (h *harness) resetCallout(c callout) {
	h.t.Helper()
	h.host.CallOnHttpCallResponse(c.CalloutID, nil, nil, nil)
}

func tokenBody(token string, expiresIn int) string {
	return `{"access_token":"` + token + `","expires_in":` + itoa(expiresIn) +
		`,"refresh_expires_in":0,"token_type":"Bearer","not-before-policy":0,"scope":"profile email"}`
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// serviceTokenReady answers the first tick's client-credentials fetch.
func (h *harness) serviceTokenReady() {
	h.t.Helper()
	h.host.Tick()
	h.answer(h.oneCallout("client_credentials"), "200", tokenBody(testServiceToken, 300))
}

// userExchanged sends testUserToken's first request, answers its exchange with testExchanged
// (valid for ttl seconds) and checks the request went on with it; it returns the stream id.
func (h *harness) userExchanged(ttl int) uint32 {
	h.t.Helper()
	id, _ := h.userRequest(testUserToken)
	h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, ttl))
	h.wantForwarded(id, testExchanged)
	return id
}

// request sends request headers and returns the stream id and the filter's action.
func (h *harness) request(headers ...[2]string) (uint32, types.Action) {
	id := h.host.InitializeHttpContext()
	base := [][2]string{{":method", "GET"}, {":path", "/api/agents"}, {":authority", "kagenti.local"}, {":scheme", "http"}}
	return id, h.host.CallOnRequestHeaders(id, append(base, headers...), false)
}

func (h *harness) userRequest(token string) (uint32, types.Action) {
	return h.request([2]string{headerUserToken, token}, [2]string{headerBackstage, backstageUserName})
}

func (h *harness) requestHeader(id uint32, name string) (string, bool) {
	for _, kv := range h.host.GetCurrentRequestHeaders(id) {
		if kv[0] == name {
			return kv[1], true
		}
	}
	return "", false
}

// wantForwarded requires that stream id continues upstream carrying "Bearer token".
func (h *harness) wantForwarded(id uint32, token string) {
	h.t.Helper()
	if a := h.host.GetCurrentHttpStreamAction(id); a != types.ActionContinue {
		h.t.Fatalf("stream %d: action %v, want Continue", id, a)
	}
	if lr := h.host.GetSentLocalResponse(id); lr != nil {
		h.t.Fatalf("stream %d: unexpected local reply %d %s", id, lr.StatusCode, lr.Data)
	}
	got, _ := h.requestHeader(id, "authorization")
	if got != "Bearer "+token {
		h.t.Fatalf("stream %d: authorization = %q, want Bearer %s", id, got, fingerprintForTest(token))
	}
}

// wantHeld requires that stream id is paused without a local reply.
func (h *harness) wantHeld(id uint32) {
	h.t.Helper()
	if a := h.host.GetCurrentHttpStreamAction(id); a != types.ActionPause {
		h.t.Fatalf("stream %d: action %v, want Pause (held)", id, a)
	}
	if lr := h.host.GetSentLocalResponse(id); lr != nil {
		h.t.Fatalf("stream %d: unexpected local reply %d", id, lr.StatusCode)
	}
}

// wantReply requires a local reply with status and a JSON error body free of secrets.
func (h *harness) wantReply(id uint32, status uint32, errorCode string) {
	h.t.Helper()
	lr := h.host.GetSentLocalResponse(id)
	if lr == nil {
		got, _ := h.requestHeader(id, "authorization")
		h.t.Fatalf("stream %d: want local reply %d, got none (action %v, authorization %q)", id, status,
			h.host.GetCurrentHttpStreamAction(id), got)
	}
	if lr.StatusCode != status {
		h.t.Fatalf("stream %d: local reply %d, want %d (%s)", id, lr.StatusCode, status, lr.Data)
	}
	if !strings.Contains(string(lr.Data), `"error":"`+errorCode+`"`) || !strings.Contains(string(lr.Data), `"error_description":`) {
		h.t.Fatalf("stream %d: reply body %s, want error %q with a description", id, lr.Data, errorCode)
	}
	if headerValue(lr.Headers, "content-type") != "application/json" {
		h.t.Fatalf("stream %d: reply content-type %q", id, headerValue(lr.Headers, "content-type"))
	}
	for _, s := range secrets {
		if strings.Contains(string(lr.Data), s) || strings.Contains(headerText(lr.Headers), s) {
			h.t.Fatalf("stream %d: local reply contains a secret", id)
		}
	}
}

func headerText(hs [][2]string) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h[0] + ": " + h[1] + "\n")
	}
	return b.String()
}

func (h *harness) logs() []string {
	var all []string
	all = append(all, h.host.GetTraceLogs()...)
	all = append(all, h.host.GetDebugLogs()...)
	all = append(all, h.host.GetInfoLogs()...)
	all = append(all, h.host.GetWarnLogs()...)
	all = append(all, h.host.GetErrorLogs()...)
	all = append(all, h.host.GetCriticalLogs()...)
	return all
}

// assertNoSecretInLogs runs after every test: no log line at any level contains a token or the secret.
func (h *harness) assertNoSecretInLogs() {
	for _, line := range h.logs() {
		for _, s := range secrets {
			if strings.Contains(line, s) {
				h.t.Errorf("log line contains a secret (%s): %q", fingerprintForTest(s), strings.ReplaceAll(line, s, "<SECRET>"))
			}
		}
	}
}

func fingerprintForTest(s string) string {
	if len(s) > 10 {
		return s[:10] + "…"
	}
	return s
}

// countLogs counts log lines of the given slice containing substr.
func countLogs(lines []string, substr string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}
