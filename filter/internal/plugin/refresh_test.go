package plugin

import (
	"strconv"
	"strings"
	"testing"
)

// Tokens of 300 s with the default skew of 30 s are usable for 270 s; the default
// refreshAheadSeconds (60) makes them due for a refresh 210 s after they were stored.
const (
	testRefreshed   = "REFRESHED1.eyJzdWIiOiJ1c2VyLWEiLCJhdWQiOiJrYWdlbnRpIn0.re-signature"
	usableMs        = 270_000
	refreshWindowMs = 60_000
)

// cached exchanges testUserToken once (the first request waits for it) and returns the time it
// was stored.
func (h *harness) cached() {
	h.t.Helper()
	id, _ := h.userRequest(testUserToken)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 300))
	h.wantForwarded(id, testExchanged)
}

func (h *harness) requestPath(path, token string) uint32 {
	id := h.host.InitializeHttpContext()
	h.host.CallOnRequestHeaders(id, [][2]string{{":method", "GET"}, {":path", path}, {":authority", "kagenti.local"},
		{":scheme", "http"}, {headerUserToken, token}}, false)
	return id
}

// A hit in the refresh window is served at once with the cached token and starts one
// background exchange with the user token it carries; its result serves what follows.
func TestRefreshStartedByNearExpiryHitDoesNotHoldIt(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	h.cached()
	clock.advance(usableMs - refreshWindowMs - 1000) // not yet due
	h.wantForwarded(h.userRequest1(), testExchanged)
	h.noCallout()
	clock.advance(2000) // 59 s left: due
	h.wantForwarded(h.userRequest1(), testExchanged)
	c := h.oneCallout(exchangeGrant)
	if c.form.Get("subject_token") != testUserToken {
		t.Fatalf("the refresh exchanges %q", fingerprintForTest(c.form.Get("subject_token")))
	}
	h.wantForwarded(h.userRequest1(), testExchanged) // while it runs: old token, no second refresh
	h.noCallout()
	h.answer(c, "200", tokenBody(testRefreshed, 300))
	h.wantForwarded(h.userRequest1(), testRefreshed)
	h.noCallout()
	for name, want := range map[string]uint64{"token_exchange.refresh.started": 1, "token_exchange.refresh.success": 1} {
		if got := h.counter(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func (h *harness) userRequest1() uint32 {
	id, _ := h.userRequest(testUserToken)
	return id
}

// refreshAheadSeconds 0 turns refresh off: the token is used to its end, then exchanged anew
// with the request held.
func TestRefreshOffWithZero(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"refreshAheadSeconds":0`))
	h.serviceTokenReady()
	h.cached()
	clock.advance(usableMs - 1000)
	h.wantForwarded(h.userRequest1(), testExchanged)
	h.noCallout()
	clock.advance(1000)
	id := h.userRequest1()
	h.wantHeld(id)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testRefreshed, 300))
	h.wantForwarded(id, testRefreshed)
}

// A failed refresh keeps the old token in use until its own expiry, and the key's refresh backs
// off like a failed exchange (no callout within the window, on any request).
func TestRefreshFailureKeepsOldTokenUntilExpiry(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	h.cached()
	clock.advance(usableMs - refreshWindowMs + 1000)
	h.wantForwarded(h.userRequest1(), testExchanged)
	h.answer(h.oneCallout(exchangeGrant), "503", `{"error":"temporarily_unavailable"}`)
	if got := h.counter("token_exchange.refresh.failure"); got != 1 {
		t.Errorf("refresh.failure = %d, want 1", got)
	}
	for range 3 {
		clock.advance(500) // inside the 2 s back-off
		h.wantForwarded(h.userRequest1(), testExchanged)
		h.noCallout()
	}
	clock.advance(2000) // back-off over: the next check refreshes again
	h.wantForwarded(h.userRequest1(), testExchanged)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testRefreshed, 300))
	h.wantForwarded(h.userRequest1(), testRefreshed)
}

// When the user token expires before the cached token, there is nothing to refresh: no callout.
func TestNoRefreshPastUserTokenExp(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	user := jwt(`{"sub":"user-a","exp":` + strconv.FormatInt(clock.ms/1000+250, 10) + `}`) // before 270 s
	id, _ := h.userRequest(user)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 300))
	h.wantForwarded(id, testExchanged)
	clock.advance(usableMs - refreshWindowMs + 5000)
	id, _ = h.userRequest(user)
	h.wantForwarded(id, testExchanged)
	h.noCallout()
	if !h.logged("the user token it was exchanged for expires first") {
		t.Error("no log line says why the token is not refreshed")
	}
}

// A route with minLifetimeSeconds holds its request for a fresh token when the cached one has
// less than that left, while a route without it is served the cached token at once; both
// share the one refresh.
func TestMinLifetimeRouteHoldsWhileOthersGoOn(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"rules":[{"pathPrefix":"/api/stream","minLifetimeSeconds":120},{"pathPrefix":"/api"}]`))
	h.serviceTokenReady()
	h.cached()
	clock.advance(usableMs - 110_000) // 110 s left: under 120, not yet in the 60 s window
	stream := h.requestPath("/api/stream/events", testUserToken)
	h.wantHeld(stream)
	c := h.oneCallout(exchangeGrant)
	other := h.requestPath("/api/agents", testUserToken)
	h.wantForwarded(other, testExchanged)
	second := h.requestPath("/api/stream/events", testUserToken) // joins the same exchange
	h.wantHeld(second)
	h.noCallout()
	h.answer(c, "200", tokenBody(testRefreshed, 300))
	h.wantForwarded(stream, testRefreshed)
	h.wantForwarded(second, testRefreshed)
	h.wantForwarded(h.requestPath("/api/stream/events", testUserToken), testRefreshed)
	h.noCallout()
}

// When even the user token expires within minLifetimeSeconds, no exchange can help: the cached
// token is used, and the log says why (once).
func TestMinLifetimeBeyondUserTokenUsesCachedToken(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"minLifetimeSeconds":200`))
	h.serviceTokenReady()
	user := jwt(`{"sub":"user-a","exp":` + strconv.FormatInt(clock.ms/1000+290, 10) + `}`)
	id, _ := h.userRequest(user)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 300))
	h.wantForwarded(id, testExchanged)
	clock.advance(100_000) // 170 s left of the token, 190 s of the user token: both under 200
	id, _ = h.userRequest(user)
	h.wantForwarded(id, testExchanged)
	h.noCallout()
	if !h.logged("expires sooner") {
		t.Error("no log line says why the request was not held")
	}
}

func (h *harness) logged(part string) bool {
	for _, l := range h.logs() {
		if strings.Contains(l, part) {
			return true
		}
	}
	return false
}

// A token fetched for a request held from the memo path is still capped by the user token's
// own exp: once that has passed, the fresh token is not sent (the user token is refused
// locally and the service-account token goes instead).
func TestFreshTokenOfAHeldMemoHitEndsWithTheUserToken(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"minLifetimeSeconds":60`))
	h.serviceTokenReady()
	user := jwt(`{"sub":"user-a","exp":` + strconv.FormatInt(clock.ms/1000+250, 10) + `}`)
	id, _ := h.userRequest(user)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 150))
	h.wantForwarded(id, testExchanged)
	h.wantForwarded(h.requestFor(user), testExchanged) // now a memo hit
	clock.advance(100_000)                             // 20 s of 120 left: under 60
	held := h.requestFor(user)
	h.wantHeld(held)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testRefreshed, 400))
	h.wantForwarded(held, testRefreshed)
	clock.advance(200_000) // the user token expired 50 s ago; the refreshed token has 140 s left
	h.host.Tick()          // the service-account token is renewed meanwhile
	h.answer(h.oneCallout("client_credentials"), "200", tokenBody(testServiceToken, 300))
	late := h.requestFor(user)
	h.wantForwarded(late, testServiceToken)
}

func (h *harness) requestFor(token string) uint32 {
	id, _ := h.userRequest(token)
	return id
}
