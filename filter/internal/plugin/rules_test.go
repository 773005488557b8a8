package plugin

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

const rulesConfig = exchangeOn + `,"rules":[` +
	`{"pathPrefix":"/agents","audience":"agents-api"},` +
	`{"pathPrefix":"/legacy","enabled":false},` +
	`{"hosts":["*.kagenti.local"],"pathPrefix":"/api"}]`

func (h *harness) requestTo(authority, path string, headers ...[2]string) (uint32, types.Action) {
	id := h.host.InitializeHttpContext()
	base := [][2]string{{":method", "GET"}, {":path", path}, {":authority", authority}, {":scheme", "http"}}
	return id, h.host.CallOnRequestHeaders(id, append(base, headers...), false)
}

// Per-route rules: first match wins and overrides the exchange settings; a request matching no
// rule passes through untouched.
func TestRules(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(rulesConfig))
		h.serviceTokenReady()
		user := [2]string{headerUserToken, testUserToken}

		// No rule matches: untouched.
		id, action := h.requestTo("other.example.com", "/api/x", user, [2]string{"authorization", "Bearer caller-own"})
		if action != types.ActionContinue {
			t.Fatalf("unmatched request: action %v", action)
		}
		if v, _ := h.requestHeader(id, "authorization"); v != "Bearer caller-own" {
			t.Fatalf("unmatched request: authorization changed to %q", v)
		}
		if v, _ := h.requestHeader(id, headerUserToken); v != testUserToken {
			t.Fatalf("unmatched request: user token header removed")
		}
		h.noCallout()
		if got := h.counter(metricPassedThrough); got != 1 {
			t.Fatalf("%s = %d, want 1", metricPassedThrough, got)
		}

		// First rule: its own audience.
		id, _ = h.requestTo("gw", "/agents/run", user)
		c := h.oneCallout(exchangeGrant)
		if c.form.Get("audience") != "agents-api" {
			t.Fatalf("rule audience not sent: %q", c.form.Get("audience"))
		}
		h.answer(c, "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)

		// Third rule, by host: the top-level audience, and a cache entry of its own.
		id, _ = h.requestTo("eu.kagenti.local:8443", "/api/items", user)
		c = h.oneCallout(exchangeGrant)
		if c.form.Get("audience") != "kagenti" {
			t.Fatalf("inherited audience not sent: %q", c.form.Get("audience"))
		}
		h.answer(c, "200", tokenBody(testExchanged2, 300))
		h.wantForwarded(id, testExchanged2)

		// Second rule: exchange off on that route, the service-account token.
		id, _ = h.requestTo("gw", "/legacy/report", user)
		h.noCallout()
		h.wantForwarded(id, testServiceToken)

		// Both exchanged tokens stay cached, each for its own route.
		a, _ := h.requestTo("gw", "/agents/again", user)
		b, _ := h.requestTo("x.kagenti.local", "/api/again", user)
		h.noCallout()
		h.wantForwarded(a, testExchanged)
		h.wantForwarded(b, testExchanged2)
	})
}
