package plugin

import (
	"encoding/base64"
	"strconv"
	"testing"
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
