package plugin

import (
	"context"
	"github.com/kagenti/token-exchange-filter/filter/internal/coord"
	"github.com/tetratelabs/wazero"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// The numbered scenarios of docs BEHAVIOUR.md, each against Go code and the compiled module.

// Scenario 1: no tokenExchange block, or enabled:false — the old behaviour, unchanged.
func TestScenario1_ExchangeOffUsesServiceAccountToken(t *testing.T) {
	for name, cfg := range map[string]string{
		"absent":   pluginConfig(""),
		"disabled": pluginConfig(`"tokenExchange":{"enabled":false,"audience":"kagenti"}`),
		"null":     pluginConfig(`"tokenExchange":null`),
	} {
		t.Run(name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h := start(t, runner, cfg)
				h.host.Tick()
				c := h.oneCallout("client_credentials")
				if c.Upstream != testCluster {
					t.Fatalf("callout cluster = %q, want %q", c.Upstream, testCluster)
				}
				if c.form.Get("client_id") != "gateway" || c.form.Get("client_secret") != testSecret {
					t.Fatalf("client credentials not sent as form fields")
				}
				h.answer(c, "200", tokenBody(testServiceToken, 300))

				for i := 0; i < 3; i++ {
					id, action := h.userRequest(testUserToken)
					if action != types.ActionContinue {
						t.Fatalf("request %d: action %v, want Continue", i, action)
					}
					h.wantForwarded(id, testServiceToken)
					// Exchange off: the user's token still never goes upstream.
					if _, ok := h.requestHeader(id, headerUserToken); ok {
						t.Fatalf("user token header went upstream with exchange off")
					}
				}
				h.noCallout()
			})
		})
	}
}

// Scenario 2: a request with the user token is held until the exchange resolves, then continues
// with the exchanged token; the exchange request is RFC 8693 as Keycloak expects it.
func TestScenario2_ExchangeHoldsThenInjects(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()

		id, action := h.userRequest(testUserToken)
		if action != types.ActionPause {
			t.Fatalf("action %v, want Pause while the exchange runs", action)
		}
		h.wantHeld(id)
		c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		wantForm := map[string]string{
			"subject_token":      testUserToken,
			"subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
			"audience":           "kagenti",
			"client_id":          "gateway",
			"client_secret":      testSecret,
		}
		for k, v := range wantForm {
			if got := c.form.Get(k); got != v {
				t.Errorf("form %s = %q, want %q", k, fingerprintForTest(got), fingerprintForTest(v))
			}
		}
		if c.form.Has("scope") {
			t.Errorf("scope sent although none is configured")
		}
		wantHeaders := map[string]string{
			":method": "POST", ":path": "/realms/demo/protocol/openid-connect/token", ":authority": "kc.example.com",
			"content-type": "application/x-www-form-urlencoded", "accept": "application/json",
		}
		for k, v := range wantHeaders {
			if got := c.header(k); got != v {
				t.Errorf("callout header %s = %q, want %q", k, got, v)
			}
		}
		if c.Upstream != testCluster {
			t.Errorf("cluster %q, want %q", c.Upstream, testCluster)
		}

		h.answer(c, "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)
		// Scenario 11 and removeUserTokenHeader: other headers stay, the user token does not.
		if _, ok := h.requestHeader(id, headerUserToken); ok {
			t.Fatalf("user token header still present upstream")
		}
		if v, _ := h.requestHeader(id, headerBackstage); v != backstageUserName {
			t.Fatalf("%s = %q, want it kept", headerBackstage, v)
		}
	})
}

// Scenario 3: the configured audience is sent; without one, none (Keycloak then issues every
// audience mapped to the client; it refuses the client's own id unless a mapper adds it).
// Scope only when set.
func TestScenario3_AudienceAndScope(t *testing.T) {
	cases := []struct {
		name, exchange, wantAudience, wantScope string
	}{
		{"configured", `"tokenExchange":{"enabled":true,"audience":"kagenti-api"}`, "kagenti-api", ""},
		{"default is none", `"tokenExchange":{"enabled":true}`, "", ""},
		{"scope", `"tokenExchange":{"enabled":true,"audience":"kagenti-api","scope":"openid agents:read"}`, "kagenti-api", "openid agents:read"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h := start(t, runner, pluginConfig(tc.exchange))
				h.userRequest(testUserToken)
				c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
				if got := c.form.Get("audience"); got != tc.wantAudience || c.form.Has("audience") != (tc.wantAudience != "") {
					t.Fatalf("audience = %q, want %q", got, tc.wantAudience)
				}
				if got := c.form.Get("scope"); got != tc.wantScope || c.form.Has("scope") != (tc.wantScope != "") {
					t.Fatalf("scope = %q (present %v), want %q", got, c.form.Has("scope"), tc.wantScope)
				}
			})
		})
	}
}

// Scenario 4: the token is reused for the same user until it expires; another user gets an
// exchange of their own.
func TestScenario4_CacheReuseAndSeparation(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()

		h.userExchanged(300)

		id2, action := h.userRequest(testUserToken)
		if action != types.ActionContinue {
			t.Fatalf("repeat request: action %v, want Continue from the cache", action)
		}
		h.noCallout()
		h.wantForwarded(id2, testExchanged)

		id3, action := h.userRequest(testUserToken2)
		if action != types.ActionPause {
			t.Fatalf("another user: action %v, want Pause for a new exchange", action)
		}
		c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		if c.form.Get("subject_token") != testUserToken2 {
			t.Fatalf("second exchange does not carry the second user's token")
		}
		h.answer(c, "200", tokenBody(testExchanged2, 300))
		h.wantForwarded(id3, testExchanged2)

		// Both users stay cached side by side.
		idA, _ := h.userRequest(testUserToken)
		idB, _ := h.userRequest(testUserToken2)
		h.noCallout()
		h.wantForwarded(idA, testExchanged)
		h.wantForwarded(idB, testExchanged2)
	})
}

// Scenario 4, expiry: a token with no time left after the skew serves the waiting requests only.
func TestScenario4_TokenWithoutTimeLeftIsNotCached(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn+`,"expirySkewSeconds":30`))
		h.serviceTokenReady()
		a, _ := h.userRequest(testUserToken)
		b, _ := h.userRequest(testUserToken)
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 30))
		h.wantForwarded(a, testExchanged)
		h.wantForwarded(b, testExchanged)

		c, action := h.userRequest(testUserToken)
		if action != types.ActionPause {
			t.Fatalf("token with no time left was cached")
		}
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
		h.wantForwarded(c, testExchanged)
	})
}

// Scenario 4, expiry in time (Go only: the wasm runner's clock cannot be moved).
func TestScenario4_CachedTokenExpiresAfterLifetimeMinusSkew(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"expirySkewSeconds":30`))
	h.serviceTokenReady()
	h.userExchanged(100)

	clock.advance(69_999) // 100 s lifetime - 30 s skew = 70 s of use
	if _, action := h.userRequest(testUserToken); action != types.ActionContinue {
		t.Fatalf("token not served from the cache before lifetime minus skew")
	}
	clock.advance(1)
	if _, action := h.userRequest(testUserToken); action != types.ActionPause {
		t.Fatalf("token still served at lifetime minus skew")
	}
	h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
}

// Scenario 5: concurrent requests with the same user token cause exactly one callout.
func TestScenario5_ConcurrentRequestsShareOneExchange(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		var ids []uint32
		for i := 0; i < 5; i++ {
			id, action := h.userRequest(testUserToken)
			if action != types.ActionPause {
				t.Fatalf("request %d not held", i)
			}
			ids = append(ids, id)
		}
		c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		for _, id := range ids {
			h.wantHeld(id)
		}
		h.answer(c, "200", tokenBody(testExchanged, 300))
		for _, id := range ids {
			h.wantForwarded(id, testExchanged)
		}
		h.noCallout()
	})
}

// Scenario 5 and 13: three requests wait on one exchange, the first (which started it) is
// cancelled by its client before the IdP answers; the other two still get the exchanged token.
func TestScenario5_CancelledInitiatorDoesNotStrandOthers(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		first, _ := h.userRequest(testUserToken)
		second, _ := h.userRequest(testUserToken)
		third, _ := h.userRequest(testUserToken)
		c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")

		h.host.CompleteHttpContext(first) // the client went away
		h.answer(c, "200", tokenBody(testExchanged, 300))

		h.wantForwarded(second, testExchanged)
		h.wantForwarded(third, testExchanged)
		// And the result was cached although its initiator is gone.
		if _, action := h.userRequest(testUserToken); action != types.ActionContinue {
			t.Fatalf("result of the cancelled initiator's exchange was not cached")
		}
		h.noCallout()
	})
}

// Scenario 6: fallback to the service-account token.
func TestScenario6_FallbackWhenHeaderAbsentOrEmpty(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		absent, action := h.request([2]string{headerBackstage, backstageUserName})
		if action != types.ActionContinue {
			t.Fatalf("absent header: action %v", action)
		}
		h.wantForwarded(absent, testServiceToken)
		empty, _ := h.request([2]string{headerUserToken, ""})
		h.wantForwarded(empty, testServiceToken)
		h.noCallout()
		if countLogs(h.host.GetDebugLogs(), "no user token") == 0 {
			t.Fatalf("no debug log for the absent header")
		}
		if len(h.host.GetWarnLogs()) != 0 {
			t.Fatalf("absent header is not a warning: %q", h.host.GetWarnLogs())
		}
	})
}

// idpFailures is every failure BEHAVIOUR.md names, with the strict-mode status it calls for.
var idpFailures = []struct {
	name, status, body string
	reset              bool
	strictStatus       uint32
}{
	{name: "connect failure", status: "503", body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure", strictStatus: 502},
	{name: "timeout", status: "504", body: "upstream request timeout", strictStatus: 502},
	{name: "5xx", status: "500", body: `{"error":"unknown_error"}`, strictStatus: 502},
	{name: "429", status: "429", body: "", strictStatus: 502},
	{name: "reset after headers", reset: true, strictStatus: 502},
	{name: "unsupported_grant_type", status: "400", body: `{"error":"unsupported_grant_type","error_description":"Unsupported grant_type"}`, strictStatus: 502},
	{name: "exchange not enabled for client", status: "400", body: `{"error":"invalid_request","error_description":"Standard token exchange is not enabled for the requested client"}`, strictStatus: 401},
	{name: "invalid subject token", status: "400", body: `{"error":"invalid_request","error_description":"Invalid token"}`, strictStatus: 401},
	{name: "invalid_grant", status: "400", body: `{"error":"invalid_grant","error_description":"Invalid token"}`, strictStatus: 401},
	{name: "invalid_token", status: "400", body: `{"error":"invalid_token"}`, strictStatus: 401},
	{name: "invalid_client", status: "400", body: `{"error":"invalid_client","error_description":"Client is not within the token audience"}`, strictStatus: 502},
	{name: "unauthorized_client", status: "401", body: `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`, strictStatus: 502},
	{name: "invalid_scope", status: "400", body: `{"error":"invalid_scope","error_description":"Invalid scopes: x"}`, strictStatus: 502},
	{name: "access_denied", status: "403", body: `{"error":"access_denied","error_description":"Client not allowed to exchange"}`, strictStatus: 401},
	{name: "html error page", status: "502", body: "<html><body>Bad Gateway</body></html>", strictStatus: 502},
	{name: "200 html", status: "200", body: "<html>login</html>", strictStatus: 502},
	{name: "200 without access_token", status: "200", body: `{"token_type":"Bearer","expires_in":300}`, strictStatus: 502},
	{name: "200 empty body", status: "200", body: "", strictStatus: 502},
}

func (h *harness) fail(c callout, f struct {
	name, status, body string
	reset              bool
	strictStatus       uint32
}) {
	if f.reset {
		h.resetCallout(c)
		return
	}
	h.answer(c, f.status, f.body)
}

func TestScenario6_FallbackOnEveryExchangeFailure(t *testing.T) {
	for _, f := range idpFailures {
		t.Run(f.name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h := start(t, runner, pluginConfig(exchangeOn))
				h.serviceTokenReady()
				a, _ := h.userRequest(testUserToken)
				b, _ := h.userRequest(testUserToken)
				h.fail(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), f)
				h.wantForwarded(a, testServiceToken)
				h.wantForwarded(b, testServiceToken)
				if _, ok := h.requestHeader(a, headerUserToken); ok {
					t.Fatalf("user token header went upstream on fallback")
				}
				if countLogs(h.host.GetWarnLogs(), "token exchange failed") != 1 {
					t.Fatalf("want one warning, got %q", h.host.GetWarnLogs())
				}
			})
		})
	}
}

// Scenario 6: the failure warning is rate-limited, not one line per request.
func TestScenario6_FailureWarningIsRateLimited(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		for i := 0; i < 20; i++ { // 20 users during an IdP outage
			id, _ := h.userRequest("USER" + itoa(i) + ".e30.sig")
			h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "500", "")
			h.wantForwarded(id, testServiceToken)
		}
		if n := countLogs(h.host.GetWarnLogs(), "token exchange failed"); n != 1 {
			t.Fatalf("20 failures wrote %d warnings, want 1", n)
		}
	})
}

// Scenario 7: strict mode answers locally instead of falling back.
func TestScenario7_StrictMode(t *testing.T) {
	strict := pluginConfig(exchangeOn + `,"fallbackToServiceAccount":false`)
	t.Run("header absent", func(t *testing.T) {
		forEachRunner(t, func(t *testing.T, runner string) {
			h := start(t, runner, strict)
			id, action := h.request()
			if action != types.ActionPause {
				t.Fatalf("action %v after a local reply, want Pause", action)
			}
			h.wantReply(id, 401, "invalid_token")
			h.host.Tick()
			h.noCallout() // strict mode never needs the service-account token
		})
	})
	for _, f := range idpFailures {
		t.Run(f.name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h := start(t, runner, strict)
				id, _ := h.userRequest(testUserToken)
				h.fail(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), f)
				code := "token_exchange_failed"
				if f.strictStatus == 401 {
					code = "invalid_token"
				}
				h.wantReply(id, f.strictStatus, code)
			})
		})
	}
}

// Scenario 8: no token at all — the last service-account fetch failed: 503 at once.
func TestScenario8_NoTokenAvailableAnswers503AtOnce(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(""))
		h.host.Tick()
		h.answer(h.oneCallout("client_credentials"), "503", "upstream connect error")
		id, action := h.request()
		if action != types.ActionPause {
			t.Fatalf("action %v", action)
		}
		h.wantReply(id, 503, "temporarily_unavailable")
	})
}

// Scenario 8 with exchange on: the exchange fails and so did the service-account fetch.
func TestScenario8_ExchangeAndServiceTokenBothFail(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.host.Tick()
		h.answer(h.oneCallout("client_credentials"), "401", `{"error":"unauthorized_client"}`)
		id, _ := h.userRequest(testUserToken)
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "500", "")
		h.wantReply(id, 503, "temporarily_unavailable")
	})
}

// Scenario 8: before the first service-account fetch has finished, requests are held, then continue.
func TestScenario8_HeldUntilFirstServiceTokenFetch(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(""))
		a, action := h.request()
		if action != types.ActionPause {
			t.Fatalf("request before the first fetch: action %v, want Pause", action)
		}
		b, _ := h.request()
		c := h.oneCallout("client_credentials") // started on demand, shared by both
		h.host.Tick()
		h.noCallout() // the tick does not start a second fetch
		h.answer(c, "200", tokenBody(testServiceToken, 300))
		h.wantForwarded(a, testServiceToken)
		h.wantForwarded(b, testServiceToken)
	})
}

// Scenario 8, and 13: a held request is answered by timeoutMs even if the fetch never returns
// (Go only: moves the clock).
func TestScenario13_HeldRequestReleasedAtDeadline(t *testing.T) {
	clock := fakeClock(t)
	t.Run("service token never arrives", func(t *testing.T) {
		h := start(t, "go", pluginConfig(`"timeoutMs":1000`))
		id, _ := h.request()
		h.oneCallout("client_credentials")
		clock.advance(999)
		h.host.Tick()
		h.wantHeld(id)
		clock.advance(1)
		h.host.Tick()
		h.wantReply(id, 503, "temporarily_unavailable")
	})
	t.Run("exchange never answers, fallback", func(t *testing.T) {
		h := start(t, "go", pluginConfig(exchangeOn+`,"timeoutMs":1000`))
		h.serviceTokenReady()
		id, _ := h.userRequest(testUserToken)
		h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		clock.advance(1000)
		h.host.Tick()
		h.wantForwarded(id, testServiceToken)
	})
	t.Run("exchange never answers, strict", func(t *testing.T) {
		h := start(t, "go", pluginConfig(exchangeOn+`,"timeoutMs":1000,"fallbackToServiceAccount":false`))
		id, _ := h.userRequest(testUserToken)
		h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		clock.advance(1000)
		h.host.Tick()
		h.wantReply(id, 502, "token_exchange_failed")
	})
}

// Scenario 9: an upstream 401 drops the cached token so the next request fetches a fresh one,
// once the token has been in use for Drop401MinAgeMs; a newer one stays, so a path answering
// 401 to everything costs at most one exchange per user per window. (Go runner: the clock moves.)
func TestScenario9_Upstream401DropsCachedToken(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	id := h.userExchanged(300)
	// A storm of 401s on the fresh token drops nothing.
	for i := 0; i < 50; i++ {
		h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
		again, action := h.userRequest(testUserToken)
		if action != types.ActionContinue {
			t.Fatalf("401 number %d dropped a token in use for less than %d ms", i+1, coord.Drop401MinAgeMs)
		}
		h.wantForwarded(again, testExchanged)
		id = again
	}
	h.noCallout()

	clock.advance(coord.Drop401MinAgeMs)
	h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
	next, action := h.userRequest(testUserToken)
	if action != types.ActionPause {
		t.Fatalf("token still cached after an upstream 401")
	}
	h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged2, 300))
	h.wantForwarded(next, testExchanged2)

	// A 200 or 403 does not drop anything.
	clock.advance(coord.Drop401MinAgeMs)
	h.host.CallOnResponseHeaders(next, [][2]string{{":status", "403"}}, false)
	if _, action := h.userRequest(testUserToken); action != types.ActionContinue {
		t.Fatalf("a 403 dropped the cached token")
	}
}

func TestScenario9_Upstream401DropsServiceToken(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(""))
	h.serviceTokenReady()
	id, _ := h.request()
	h.wantForwarded(id, testServiceToken)
	for i := 0; i < 50; i++ { // anonymous requests to a path that answers 401
		h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
		id, _ = h.request()
		h.wantForwarded(id, testServiceToken)
	}
	h.host.Tick()
	h.noCallout()

	clock.advance(coord.Drop401MinAgeMs)
	h.host.CallOnResponseHeaders(id, [][2]string{{":status", "401"}}, false)
	next, action := h.request()
	if action != types.ActionPause {
		t.Fatalf("service-account token still used after an upstream 401")
	}
	h.answer(h.oneCallout("client_credentials"), "200", tokenBody("SERVICE2.e30.sig", 300))
	h.wantForwarded(next, "SERVICE2.e30.sig")
	// The new token is fresh: the 401 storm goes on, and costs nothing more.
	for i := 0; i < 50; i++ {
		h.host.CallOnResponseHeaders(next, [][2]string{{":status", "401"}}, false)
		next, _ = h.request()
		h.wantForwarded(next, "SERVICE2.e30.sig")
	}
	h.noCallout()
}

// Scenario 9: the filter's own 401 local reply is not mistaken for an upstream 401.
func TestScenario9_OwnLocalReplyDropsNothing(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn+`,"fallbackToServiceAccount":false`))
		h.userExchanged(300)
		refused, _ := h.request()
		h.wantReply(refused, 401, "invalid_token")
		h.host.CallOnResponseHeaders(refused, [][2]string{{":status", "401"}}, false)
		if _, action := h.userRequest(testUserToken); action != types.ActionContinue {
			t.Fatalf("the filter's own 401 dropped a cached token")
		}
	})
}

// Scenario 10: bodies pass through unbuffered and unchanged in both directions.
// In the compiled module the body callbacks are not even exported (make build strips them), so
// Envoy never enters the VM for a body chunk; the emulator's wasm runner would call a missing
// export, so there the export list is what is checked. The Go runner runs the SDK's callbacks.
func TestScenario10_BodiesPassThrough(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		if runner == "wasm" {
			mod, err := wasmModule()
			if err != nil {
				t.Fatal(err)
			}
			m, err := wazero.NewRuntime(context.Background()).CompileModule(context.Background(), mod)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"proxy_on_request_body", "proxy_on_response_body"} {
				if _, ok := m.ExportedFunctions()[name]; ok {
					t.Errorf("the module exports %s: Envoy would enter the VM for every body chunk", name)
				}
			}
			return
		}
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		id, _ := h.userRequest(testUserToken)
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
		if a := h.host.CallOnRequestBody(id, []byte(`{"prompt":"hi"}`), true); a != types.ActionContinue {
			t.Fatalf("request body: action %v", a)
		}
		if got := string(h.host.GetCurrentRequestBody(id)); got != `{"prompt":"hi"}` {
			t.Fatalf("request body changed: %q", got)
		}
		h.host.CallOnResponseHeaders(id, [][2]string{{":status", "200"}, {"content-type", "text/event-stream"}}, false)
		for _, chunk := range []string{"data: one\n\n", "data: two\n\n"} {
			if a := h.host.CallOnResponseBody(id, []byte(chunk), false); a != types.ActionContinue {
				t.Fatalf("SSE chunk buffered: action %v", a)
			}
			if got := string(h.host.GetCurrentResponseBody(id)); got != chunk {
				t.Fatalf("SSE chunk changed: %q", got)
			}
		}
	})
}

// User tokens that are too long or not of the token alphabet never reach the IdP.
func TestUntrustedUserTokenIsRejectedWithoutCallout(t *testing.T) {
	bad := map[string]string{
		"over 16 KiB":  strings.Repeat("a", 16*1024+1),
		"space inside": "abc def",
		"quote":        `abc"def`,
		"non-ascii":    "abcé",
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			// One emulator at a time: the SDK's emulator is a process-wide singleton.
			forEachRunner(t, func(t *testing.T, runner string) {
				t.Run("fallback", func(t *testing.T) {
					h := start(t, runner, pluginConfig(exchangeOn))
					h.serviceTokenReady()
					id, _ := h.request([2]string{headerUserToken, tok})
					h.noCallout()
					h.wantForwarded(id, testServiceToken)
				})
				t.Run("strict", func(t *testing.T) {
					h := start(t, runner, pluginConfig(exchangeOn+`,"fallbackToServiceAccount":false`))
					id, _ := h.request([2]string{headerUserToken, tok})
					h.noCallout()
					h.wantReply(id, 401, "invalid_token")
				})
			})
		})
	}
}

// With userTokenHeader "authorization" the Bearer scheme is stripped and the header replaced.
func TestUserTokenInAuthorizationHeader(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"tokenExchange":{"enabled":true,"userTokenHeader":"authorization"}`))
		h.serviceTokenReady()
		id, _ := h.request([2]string{"authorization", "Bearer " + testUserToken})
		c := h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange")
		if c.form.Get("subject_token") != testUserToken {
			t.Fatalf("Bearer scheme not stripped from the subject token")
		}
		h.answer(c, "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)

		basic, _ := h.request([2]string{"authorization", "Basic dXNlcjpwYXNz"})
		h.noCallout()
		h.wantForwarded(basic, testServiceToken)
	})
}

// clientAuth basic sends the client credentials as an HTTP Basic header, not in the form.
func TestClientAuthBasic(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn+`,"clientAuth":"basic"`))
		h.host.Tick()
		c := h.oneCallout("client_credentials")
		if !strings.HasPrefix(c.header("authorization"), "Basic ") {
			t.Fatalf("no Basic authorization header on the callout")
		}
		if c.form.Has("client_secret") || c.form.Has("client_id") {
			t.Fatalf("client credentials also sent in the form")
		}
	})
}

// outputHeader puts the token elsewhere and leaves authorization alone.
func TestOutputHeader(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"outputHeader":"x-api-token"`))
		h.serviceTokenReady()
		id, _ := h.request([2]string{"authorization", "Bearer upstream-own"})
		if v, _ := h.requestHeader(id, "x-api-token"); v != "Bearer "+testServiceToken {
			t.Fatalf("x-api-token not written")
		}
		if v, _ := h.requestHeader(id, "authorization"); v != "Bearer upstream-own" {
			t.Fatalf("authorization changed although outputHeader is x-api-token")
		}
	})
}

// Invalid configuration: the plugin refuses to start and logs one line naming the field.
func TestInvalidConfigurationRefusesToStart(t *testing.T) {
	cases := map[string]struct{ cfg, field string }{
		"not json":          {`{"tokenEndpoint":`, ""},
		"empty":             {``, ""},
		"unknown field":     {pluginConfig(`"colour":"blue"`), "colour"},
		"unknown nested":    {pluginConfig(`"tokenExchange":{"enabled":true,"audiance":"x"}`), "tokenExchange.audiance"},
		"wrong type":        {pluginConfig(`"timeoutMs":"5000"`), "timeoutMs"},
		"timeout zero":      {pluginConfig(`"timeoutMs":0`), "timeoutMs"},
		"timeout too large": {pluginConfig(`"timeoutMs":60001`), "timeoutMs"},
		"relative url":      {`{"tokenEndpoint":"/token","clientId":"gateway","clientSecret":"x"}`, "tokenEndpoint"},
		"missing clientId":  {`{"tokenEndpoint":"` + testEndpoint + `","clientSecret":"x"}`, "clientId"},
		"missing secret":    {`{"tokenEndpoint":"` + testEndpoint + `","clientId":"gateway"}`, "clientSecret"},
		"bad clientAuth":    {pluginConfig(`"clientAuth":"jwt"`), "clientAuth"},
		"enabled not bool":  {pluginConfig(`"tokenExchange":{"enabled":"yes"}`), "tokenExchange.enabled"},
		"bad header":        {pluginConfig(`"outputHeader":"bad header"`), "outputHeader"},
		"negative skew":     {pluginConfig(`"expirySkewSeconds":-1`), "expirySkewSeconds"},
		"secret env unset":  {`{"tokenEndpoint":"` + testEndpoint + `","clientId":"gateway","clientSecretEnv":"TXF_TEST_UNSET_VAR"}`, "clientSecretEnv"},
		"both secrets":      {pluginConfig(`"clientSecretEnv":"TXF_TEST_UNSET_VAR"`), "clientSecretEnv"},
		"cacheSlots zero":   {pluginConfig(`"cacheSlots":0`), "cacheSlots"},
		"cacheSlots huge":   {pluginConfig(`"cacheSlots":16385`), "cacheSlots"},
		"duplicate field":   {pluginConfig(`"timeoutMs":100,"timeoutMs":200`), "timeoutMs"},
		"bad user header":   {pluginConfig(`"tokenExchange":{"enabled":true,"userTokenHeader":":path"}`), "tokenExchange.userTokenHeader"},
		"exchange not obj":  {pluginConfig(`"tokenExchange":true`), "tokenExchange"},
		"url with userinfo": {`{"tokenEndpoint":"https://u:p@kc.example.com/token","clientId":"gateway","clientSecret":"x"}`, "tokenEndpoint"},
		"url with fragment": {`{"tokenEndpoint":"https://kc.example.com/token#x","clientId":"gateway","clientSecret":"x"}`, "tokenEndpoint"},
		"ftp url":           {`{"tokenEndpoint":"ftp://kc.example.com/token","clientId":"gateway","clientSecret":"x"}`, "tokenEndpoint"},
		"over-size":         {pluginConfig(`"scope":"` + strings.Repeat("x", 70000) + `"`), ""},
		"top-level array":   {`[1,2]`, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h, status := load(t, runner, tc.cfg)
				if status != types.OnPluginStartStatusFailed {
					t.Fatalf("plugin started with an invalid configuration")
				}
				errs := h.host.GetErrorLogs()
				if len(errs) != 1 {
					t.Fatalf("want exactly one error line, got %q", errs)
				}
				if tc.field != "" && !strings.Contains(errs[0], tc.field+":") {
					t.Fatalf("error line %q does not name %s", errs[0], tc.field)
				}
				if strings.Contains(errs[0], testSecret) {
					t.Fatalf("error line contains the secret")
				}
			})
		})
	}
}

// clientSecretEnv reads the secret from the VM's environment (Go runner: the process's
// environment stands in for Envoy's vm_config.environment_variables).
func TestClientSecretFromEnvironment(t *testing.T) {
	t.Setenv("TXF_TEST_CLIENT_SECRET", testSecret)
	h := start(t, "go", `{"tokenEndpoint":"`+testEndpoint+`","clientId":"gateway","clientSecretEnv":"TXF_TEST_CLIENT_SECRET"}`)
	h.host.Tick()
	if c := h.oneCallout("client_credentials"); c.form.Get("client_secret") != testSecret {
		t.Fatalf("secret from the environment not used")
	}
}

// A repeated user-token header whose first value is empty must not smuggle the second value
// upstream: with removal on, every value goes, whatever the first one holds.
func TestRepeatedUserTokenHeaderNeverGoesUpstream(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"tokenExchange":{"enabled":true,"audience":"kagenti"}`))
		h.serviceTokenReady()
		id, _ := h.request([2]string{headerUserToken, ""}, [2]string{headerUserToken, testUserToken})
		// (The SDK's emulator removes one value per call and reads an empty one as absent, so an
		// empty value may stay there; Envoy removes every value at once. No token may stay.)
		for _, kv := range h.host.GetCurrentRequestHeaders(id) {
			if kv[0] == headerUserToken && kv[1] != "" {
				t.Fatalf("%s went upstream (%d bytes)", headerUserToken, len(kv[1]))
			}
		}
	})
}

// A repeated user-token header counts as an invalid token on a memo hit too: the first value
// being a token this VM exchanged a moment ago must not let a request through with a second
// value riding along (BEHAVIOUR.md 14; a proxy in front may have appended either one).
func TestRepeatedUserTokenHeaderOnAMemoHitIsInvalid(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		id := h.userExchanged(3600)

		for _, second := range []string{testUserToken2, testUserToken} {
			id, _ = h.request([2]string{headerUserToken, testUserToken}, [2]string{headerUserToken, second})
			h.wantForwarded(id, testServiceToken)
			for _, kv := range h.host.GetCurrentRequestHeaders(id) {
				if kv[0] == headerUserToken {
					t.Fatalf("%s went upstream (%d bytes)", headerUserToken, len(kv[1]))
				}
			}
		}
		// The memo still serves the same token sent once.
		id, _ = h.userRequest(testUserToken)
		h.wantForwarded(id, testExchanged)
		if got := h.counter(metricFallbackInvalidToken); got != 2 {
			t.Fatalf("%s = %d, want 2", metricFallbackInvalidToken, got)
		}
	})
}
