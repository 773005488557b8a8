package plugin

import (
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

const exchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"

// After a failed exchange, requests with the same user token settle at once for the back-off
// window instead of calling the IdP again.
func TestFailureBackOffStopsRepeatedCallouts(t *testing.T) {
	forEachRunner(t, func(t *testing.T, runner string) {
		t.Run("fallback", func(t *testing.T) {
			h := start(t, runner, pluginConfig(exchangeOn))
			h.serviceTokenReady()
			first, _ := h.userRequest(testUserToken)
			h.answer(h.oneCallout(exchangeGrant), "503", "")
			h.wantForwarded(first, testServiceToken)
			for i := 0; i < 5; i++ {
				id, action := h.userRequest(testUserToken)
				if action != types.ActionContinue {
					t.Fatalf("request during the back-off was held")
				}
				h.wantForwarded(id, testServiceToken)
			}
			h.noCallout()
			if got := h.counter(metricBackedOff); got != 5 {
				t.Fatalf("%s = %d, want 5", metricBackedOff, got)
			}
			// Another user is not affected.
			h.userRequest(testUserToken2)
			h.oneCallout(exchangeGrant)
		})
		t.Run("strict", func(t *testing.T) {
			h := start(t, runner, pluginConfig(exchangeOn+`,"fallbackToServiceAccount":false`))
			first, _ := h.userRequest(testUserToken)
			h.answer(h.oneCallout(exchangeGrant), "400", `{"error":"invalid_grant"}`)
			h.wantReply(first, 401, "invalid_token")
			again, _ := h.userRequest(testUserToken)
			h.noCallout()
			h.wantReply(again, 401, "invalid_token") // the same answer the failure called for
		})
	})
}

// The window grows with consecutive failures, is longer for configuration failures, ends, and
// failureBackoffMs 0 turns it off (Go runner: moves the clock).
func TestFailureBackOffWindow(t *testing.T) {
	clock := fakeClock(t)
	t.Run("grows", func(t *testing.T) {
		h := start(t, "go", pluginConfig(exchangeOn))
		h.serviceTokenReady()
		h.userRequest(testUserToken)
		h.answer(h.oneCallout(exchangeGrant), "500", "")
		clock.advance(1999)
		h.userRequest(testUserToken)
		h.noCallout()
		clock.advance(1)
		h.userRequest(testUserToken)
		h.answer(h.oneCallout(exchangeGrant), "500", "") // second failure: 4 s
		clock.advance(3999)
		h.userRequest(testUserToken)
		h.noCallout()
		clock.advance(1)
		id, _ := h.userRequest(testUserToken)
		h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 300))
		h.wantForwarded(id, testExchanged)
	})
	t.Run("configuration failure backs off longer", func(t *testing.T) {
		h := start(t, "go", pluginConfig(exchangeOn))
		h.serviceTokenReady()
		h.userRequest(testUserToken)
		h.answer(h.oneCallout(exchangeGrant), "400", `{"error":"invalid_request","error_description":"Standard token exchange is not enabled for the requested client"}`)
		clock.advance(15999)
		h.userRequest(testUserToken)
		h.noCallout()
		clock.advance(1)
		h.userRequest(testUserToken)
		h.oneCallout(exchangeGrant)
	})
	t.Run("off", func(t *testing.T) {
		h := start(t, "go", pluginConfig(exchangeOn+`,"failureBackoffMs":0`))
		h.serviceTokenReady()
		h.userRequest(testUserToken)
		h.answer(h.oneCallout(exchangeGrant), "500", "")
		h.userRequest(testUserToken)
		h.oneCallout(exchangeGrant)
	})
}

// A lease left by a worker that died is taken over once it expires (Go runner: the emulator
// has one VM, so the other worker's lease is written into shared data directly).
func TestExpiredLeaseOfAnotherWorkerIsTakenOver(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn+`,"timeoutMs":1000`))
	h.serviceTokenReady()
	r := h.rootForTest()
	k := cacheKeyFor(testUserToken)
	if won, _, err := r.cache.TryLease(k, "another-worker", nowMs()+700, nowMs()); !won || err != nil {
		t.Fatalf("setting up the other worker's lease: %v %v", won, err)
	}
	id, _ := h.userRequest(testUserToken)
	h.noCallout() // the other worker is exchanging: wait for it
	clock.advance(tickMs)
	h.host.Tick()
	h.noCallout()
	h.wantHeld(id)
	clock.advance(700) // its lease expired without a result
	h.host.Tick()
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(testExchanged, 300))
	h.wantForwarded(id, testExchanged)
}

// A result another worker stores while this one waits on its lease is picked up on the tick.
func TestResultOfAnotherWorkerIsPickedUp(t *testing.T) {
	clock := fakeClock(t)
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	r := h.rootForTest()
	k := cacheKeyFor(testUserToken)
	r.cache.TryLease(k, "another-worker", nowMs()+5000, nowMs())
	a, _ := h.userRequest(testUserToken)
	b, _ := h.userRequest(testUserToken)
	h.noCallout()
	if got := h.counter(metricJoined); got != 2 {
		t.Fatalf("%s = %d, want 2 (both requests joined the other worker's exchange)", metricJoined, got)
	}
	if err := r.worker.StoreExchanged(k, testExchanged, nowMs()+60_000, nowMs()); err != nil {
		t.Fatal(err)
	}
	clock.advance(tickMs)
	h.host.Tick()
	h.wantForwarded(a, testExchanged)
	h.wantForwarded(b, testExchanged)
	h.noCallout()
}

// A token shared data cannot hold (over 8 KiB) still serves its requests, and the lease is
// released so that other workers exchange at once instead of waiting on it (Go runner).
func TestUncacheableTokenReleasesLease(t *testing.T) {
	h := start(t, "go", pluginConfig(exchangeOn))
	h.serviceTokenReady()
	long := "LONG." + strings.Repeat("x", 9000) + ".sig"
	id, _ := h.userRequest(testUserToken)
	h.answer(h.oneCallout(exchangeGrant), "200", tokenBody(long, 300))
	h.wantForwarded(id, long)
	if l := h.rootForTest().cache.Look(cacheKeyFor(testUserToken), nowMs()); l.State != cache.Miss {
		t.Fatalf("slot after an uncacheable token: %+v, want nothing (lease released)", l)
	}
}
