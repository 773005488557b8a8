package plugin

import (
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// The service-account token is fetched once and reused, whatever shape the IdP's answer takes.
func TestServiceTokenIsReusedWhateverItsShape(t *testing.T) {
	long := "LONG." + strings.Repeat("x", 9000) + ".sig" // over the 8 KiB shared-data entry limit
	cases := map[string]struct{ token, body string }{
		"no expires_in, not a JWT": {"OPAQUESERVICETOKEN", `{"access_token":"OPAQUESERVICETOKEN","token_type":"Bearer"}`},
		"too long for shared data": {long, tokenBody(long, 300)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			forEachRunner(t, func(t *testing.T, runner string) {
				h := start(t, runner, pluginConfig(""))
				h.host.Tick()
				h.answer(h.oneCallout("client_credentials"), "200", tc.body)
				for i := 0; i < 5; i++ {
					id, action := h.request()
					if action != types.ActionContinue {
						t.Fatalf("request %d held: the token was not kept", i)
					}
					h.wantForwarded(id, tc.token)
					h.host.Tick()
				}
				h.noCallout()
			})
		})
	}
}

// A token with no time left after the skew serves the waiting requests and does not make the
// tick fetch in a loop (Go only: moves the clock).
func TestServiceTokenWithoutTimeLeftDoesNotLoop(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(`"expirySkewSeconds":30`))
	waiting, _ := h.request()
	h.answer(h.oneCallout("client_credentials"), "200", tokenBody(testServiceToken, 30))
	h.wantForwarded(waiting, testServiceToken)
	for i := 0; i < 10; i++ { // 500 ms of ticks
		clock.advance(tickMs)
		h.host.Tick()
	}
	h.noCallout()
	if n := countLogs(h.host.GetWarnLogs(), "expirySkewSeconds"); n != 1 {
		t.Fatalf("want one warning naming expirySkewSeconds, got %d", n)
	}
}

// The late failure of an abandoned fetch does not overwrite the success of a newer one
// (Go only: moves the clock).
func TestLateFailureOfAbandonedFetchIsIgnored(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(`"timeoutMs":1000`))
	first, _ := h.request()
	stale := h.oneCallout("client_credentials")
	clock.advance(1000 + flightGraceMs)
	h.host.Tick() // first request answered 503; the silent fetch is abandoned and counts as failed
	h.wantReply(first, 503, "temporarily_unavailable")
	h.noCallout() // backing off

	clock.advance(saRetryMinMs)
	h.host.Tick() // the back-off is over: a new fetch starts in the background
	fresh := h.oneCallout("client_credentials")
	h.answer(fresh, "200", tokenBody(testServiceToken, 300))
	second, _ := h.request()
	h.wantForwarded(second, testServiceToken)

	h.answer(stale, "500", "") // the abandoned fetch finally answers
	third, action := h.request()
	if action != types.ActionContinue {
		t.Fatalf("a late failure of an abandoned fetch made the filter forget its token")
	}
	h.wantForwarded(third, testServiceToken)
}

// The service-account refresh happens ahead of expiry, in the background, with no request held.
func TestServiceTokenRefreshedAheadOfExpiry(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(`"expirySkewSeconds":0`))
	h.serviceTokenReady() // 300 s lifetime: refresh due at 225 s (plus up to 10 s of per-worker jitter)
	clock.advance(224_000)
	h.host.Tick()
	h.noCallout()
	clock.advance(11_000)
	h.host.Tick()
	refresh := h.oneCallout("client_credentials")
	id, action := h.request()
	if action != types.ActionContinue {
		t.Fatalf("request held during a background refresh")
	}
	h.wantForwarded(id, testServiceToken)
	h.answer(refresh, "200", tokenBody("SERVICE2.eyJ9.sig", 300))
	next, _ := h.request()
	h.wantForwarded(next, "SERVICE2.eyJ9.sig")
}

// One worker fetches the service-account token; the others wait for it in shared data and take
// the fetch over if that worker's lease ends without a token (Go runner: the emulator has one
// VM, so the other worker's lease and token are written into shared data directly).
func TestServiceTokenFetchedByOneWorker(t *testing.T) {
	clock := fakeClock(t)
	t.Run("waits for the other worker's token", func(t *testing.T) {
		h := start(t, "go", pluginConfig(""))
		r := h.rootForTest()
		r.cache.TryServiceLease("another-worker", nowMs()+5000, nowMs())
		h.host.Tick()
		id, _ := h.request()
		h.noCallout()
		h.wantHeld(id)
		now := nowMs()
		if err := r.worker.StoreServiceToken(cache.ServiceToken{Token: testServiceToken, ExpiresAtMs: now + 300_000, RefreshAtMs: now + 200_000}); err != nil {
			t.Fatal(err)
		}
		clock.advance(tickMs)
		h.host.Tick()
		h.wantForwarded(id, testServiceToken)
		h.noCallout()
	})
	t.Run("takes over a lease that ends without a token", func(t *testing.T) {
		h := start(t, "go", pluginConfig(`"timeoutMs":2000`))
		r := h.rootForTest()
		r.cache.TryServiceLease("another-worker", nowMs()+300, nowMs())
		id, _ := h.request()
		h.noCallout()
		clock.advance(300)
		h.host.Tick()
		h.answer(h.oneCallout("client_credentials"), "200", tokenBody(testServiceToken, 300))
		h.wantForwarded(id, testServiceToken)
	})
}

// Another worker's failed service-account fetch: this worker answers 503 at once and backs off
// with it instead of fetching too (Go runner).
func TestRemoteServiceFetchFailure(t *testing.T) {
	fakeClock(t)
	h := start(t, "go", pluginConfig(""))
	r := h.rootForTest()
	if err := r.cache.PutServiceFailure(nowMs()+5000, nowMs()); err != nil {
		t.Fatal(err)
	}
	id, _ := h.request()
	h.noCallout()
	h.wantReply(id, 503, "temporarily_unavailable")
}
