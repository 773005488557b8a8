package plugin

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// jwt makes a JWT-shaped user token with the given payload (never verified by the filter).
func jwt(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
}

// A user token that is not a JWT costs no callout unless opaque tokens are allowed.
func TestOpaqueUserTokenIsRefusedLocally(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		id, _ := h.userRequest("an-opaque-token-0123456789")
		h.wantForwarded(id, testServiceToken)
		h.noCallout()
		if n := h.counter("token_exchange.fallback.invalid_user_token"); n != 1 {
			t.Errorf("fallback.invalid_user_token = %d, want 1", n)
		}
	})
}

func TestOpaqueUserTokenAllowed(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"tokenExchange":{"enabled":true,"audience":"kagenti","allowOpaqueTokens":true}`))
		h.serviceTokenReady()
		id, _ := h.userRequest("an-opaque-token-0123456789")
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)
	})
}

// With tokenExchange.expectedIssuer, a token of another issuer costs no callout.
func TestExpectedIssuer(t *testing.T) {
	const iss = "https://kc.example.com/realms/demo"
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"tokenExchange":{"enabled":true,"audience":"kagenti","expectedIssuer":"`+iss+`"}`))
		h.serviceTokenReady()
		for _, foreign := range []string{jwt(`{"iss":"https://evil.example.com/realms/demo","sub":"x"}`), jwt(`{"sub":"no-iss"}`)} {
			id, _ := h.userRequest(foreign)
			h.wantForwarded(id, testServiceToken)
			h.noCallout()
		}
		id, _ := h.userRequest(jwt(`{"iss":"` + iss + `","sub":"alice"}`))
		h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)
	})
}

// New user tokens draw from a bucket shared by the Envoy: past its burst they fall back (strict
// mode: 503) and are counted, while a key already in flight or cached costs nothing.
func TestNewKeyBucket(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(`"tokenExchange":{"enabled":true,"audience":"kagenti","newKeyExchangesPerSecond":1,"newKeyExchangeBurst":2}`))
		h.serviceTokenReady()
		for i := 0; i < 2; i++ {
			id, _ := h.userRequest(jwt(`{"sub":"u` + strconv.Itoa(i) + `"}`))
			h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
			h.wantForwarded(id, testExchanged)
		}
		id, _ := h.userRequest(jwt(`{"sub":"u-third"}`))
		h.wantForwarded(id, testServiceToken)
		h.noCallout()
		if n := h.counter("token_exchange.fallback.new_key_rate_limited"); n != 1 {
			t.Errorf("fallback.new_key_rate_limited = %d, want 1", n)
		}
		// A cached user is not limited.
		id, _ = h.userRequest(jwt(`{"sub":"u0"}`))
		h.wantForwarded(id, testExchanged)
	})
}

// Shared data is sealed: a neighbour in the vm_id that copies bob's entry under alice's key, or
// plants a token of its own, gets neither used (alice is exchanged for real), and nobody reads a
// cached token in the clear.
func TestSharedDataIsSealed(t *testing.T) {
	for _, copyBob := range []bool{true, false} {
		t.Run(map[bool]string{true: "bob's entry under alice's key", false: "a planted token"}[copyBob], func(t *testing.T) {
			h := start(t, "go", pluginConfig(exchangeOn))
			h.serviceTokenReady()
			r := h.rootForTest()
			now := nowMs()
			bob := cacheKeyFor(testUserToken2)
			if err := r.worker.StoreExchanged(bob, testExchanged2, now+60_000, now); err != nil {
				t.Fatal(err)
			}
			blob := r.cache.Look(bob, now).Token
			if strings.Contains(blob, testExchanged2) {
				t.Fatal("a cached token is readable in shared data")
			}
			planted := testExchanged2
			if copyBob {
				planted = blob
			}
			if err := r.cache.Put(cacheKeyFor(testUserToken), planted, now+60_000, now); err != nil {
				t.Fatal(err)
			}
			id, action := h.userRequest(testUserToken)
			if action == types.ActionContinue {
				t.Fatal("alice's request went on with a planted entry")
			}
			h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 300))
			h.wantForwarded(id, testExchanged)
		})
	}
}

// Several values of the user token header: none is taken for the user's (a proxy in front may
// have appended one); the request falls back without a callout, and no value goes upstream.
func TestSeveralUserTokenValuesAreInvalid(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		h := start(t, runner, pluginConfig(exchangeOn))
		h.serviceTokenReady()
		id, _ := h.request([2]string{headerUserToken, testUserToken}, [2]string{headerUserToken, testUserToken2})
		h.wantForwarded(id, testServiceToken)
		h.noCallout()
		if n := h.counter("token_exchange.fallback.invalid_user_token"); n != 1 {
			t.Errorf("fallback.invalid_user_token = %d, want 1", n)
		}
		for _, kv := range h.host.GetCurrentRequestHeaders(id) {
			if kv[0] == headerUserToken && kv[1] != "" {
				t.Fatalf("%s went upstream", headerUserToken)
			}
		}
	})
}
