package e2e

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/e2e/upstream"
)

func claim(e upstream.Echo, name string) string { v, _ := e.Claims[name].(string); return v }

// Short-lived exchanged tokens for the refresh tests: 8 s from the IdP, 2 s of skew, so 6 s
// usable; a 4 s window makes a token due 2 s after it was stored, and the half-lifetime rule
// lets a key be refreshed 3 s after its token was stored. User tokens live 10 minutes.
const (
	refreshTokenLifetime = 8 * time.Second
	refreshPlugin        = exchangeOn + `,"expirySkewSeconds":2,"refreshAheadSeconds":4`
	// refreshIdPLatency makes a request that waited for an exchange stand out.
	refreshIdPLatency = 400 * time.Millisecond
)

// exchangeTimes records when the IdP answered each token exchange.
type exchangeTimes struct {
	mu sync.Mutex
	at []time.Time
}

func (x *exchangeTimes) hook(grant string, _ map[string]any) {
	if grant == idp.GrantTokenExchange {
		x.mu.Lock()
		x.at = append(x.at, time.Now())
		x.mu.Unlock()
	}
}

func (x *exchangeTimes) all() []time.Time {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]time.Time(nil), x.at...)
}

// An active user (a request every 100 ms, spread over 4 workers) across two token lifetimes:
// only the first request waits for an exchange; after it, the token is replaced ahead of its
// expiry by one background exchange per lifetime for the whole Envoy, never one per worker.
func TestE2E_RefreshAheadOneExchangePerLifetimeAcrossWorkers(t *testing.T) {
	var times exchangeTimes
	e := newEnv(t, envOptions{workers: 4, plugin: refreshPlugin, beforeProxy: func(p *idp.IdP) {
		p.SetAccessTokenLifetime(refreshTokenLifetime)
		p.SetResponseHook(times.hook)
	}})
	e.serviceTokenReady()
	e.idp.SetLatency(idp.TokenExchangeOnly, refreshIdPLatency)
	tok := e.longLivedToken("alice")
	first := e.get("/api", tok)
	e.wantUserToken(first, "alice")
	start := time.Now()
	var slow int
	for time.Since(start) < 2*refreshTokenLifetime {
		r := e.get("/api", tok)
		e.wantUserToken(r, "alice")
		if r.elapsed >= refreshIdPLatency {
			slow++
		}
		time.Sleep(100 * time.Millisecond) // the user's pace, not a wait for a condition
	}
	if slow > 0 {
		t.Errorf("%d requests after the first waited for an exchange", slow)
	}
	at := times.all()
	// 16 s of traffic after the first exchange: a refresh every 3–4 s at most, whatever the workers.
	if len(at) < 3 || len(at) > 7 {
		t.Errorf("%d exchanges in %v (the first and the refreshes), want 3 to 7", len(at), 2*refreshTokenLifetime)
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 2*time.Second {
			t.Errorf("exchanges %d and %d %v apart: more than one refresh per lifetime", i-1, i, gap)
		}
	}
	started, _ := e.proxy.Metric("token_exchange.refresh.started")
	succeeded, _ := e.proxy.Metric("token_exchange.refresh.success")
	if started == 0 || succeeded != started || int(started) != len(at)-1 {
		t.Errorf("refresh.started %d, refresh.success %d, exchanges %d", started, succeeded, len(at))
	}
}

// A streaming route with minLifetimeSeconds waits for a fresh token when the cached one has
// too little left, while another route is served the cached one at once.
func TestE2E_MinLifetimeRouteWaitsForFreshToken(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2, plugin: exchangeOn + `,"expirySkewSeconds":2,"refreshAheadSeconds":0,` +
		`"rules":[{"pathPrefix":"/api/stream","minLifetimeSeconds":5},{"pathPrefix":"/api"}]`,
		beforeProxy: func(p *idp.IdP) { p.SetAccessTokenLifetime(refreshTokenLifetime) }})
	e.serviceTokenReady()
	tok := e.longLivedToken("alice")
	e.wantUserToken(e.get("/api", tok), "alice")
	first := e.idp.TokenExchangeCount()
	time.Sleep(1500 * time.Millisecond) // 4.5 s of 6 left: under the route's 5 (the token's age is the condition)
	e.idp.SetLatency(idp.TokenExchangeOnly, refreshIdPLatency)
	other := e.get("/api/agents", tok)
	e.wantUserToken(other, "alice")
	if other.elapsed >= refreshIdPLatency || e.idp.TokenExchangeCount() != first {
		t.Fatalf("the route without minLifetime waited %v / exchanged", other.elapsed)
	}
	stream := e.get("/api/stream/events", tok)
	e.wantUserToken(stream, "alice")
	if stream.elapsed < refreshIdPLatency || e.idp.TokenExchangeCount() != first+1 {
		t.Fatalf("the streaming route took %v with %d exchanges: it should have waited for one", stream.elapsed, e.idp.TokenExchangeCount()-first)
	}
	if exp, _ := stream.echo.Claims["exp"].(float64); time.Until(time.Unix(int64(exp), 0)) < 5*time.Second {
		t.Errorf("the streaming route's token expires in %v, under its minLifetimeSeconds", time.Until(time.Unix(int64(exp), 0)))
	}
}

// A refresh that fails leaves the old token in use until it expires: requests keep being served
// with it at once, none falls back to the service account.
func TestE2E_FailedRefreshKeepsTheOldToken(t *testing.T) {
	e := newEnv(t, envOptions{workers: 4, plugin: refreshPlugin, beforeProxy: func(p *idp.IdP) {
		p.SetAccessTokenLifetime(refreshTokenLifetime)
	}})
	e.serviceTokenReady()
	tok := e.longLivedToken("alice")
	first := e.get("/api", tok)
	e.wantUserToken(first, "alice")
	e.idp.SetFault(idp.TokenExchangeOnly, idp.Fault{Kind: idp.FaultStatus, Status: 503})
	// Until the refresh has been tried and failed (3 s after the token was stored), and after.
	deadline := time.Now().Add(10 * time.Second)
	for failed := uint64(0); failed == 0; failed, _ = e.proxy.Metric("token_exchange.refresh.failure") {
		if time.Now().After(deadline) {
			t.Fatal("no refresh was tried")
		}
		r := e.get("/api", tok)
		e.wantUserToken(r, "alice")
		if claim(r.echo, "jti") != claim(first.echo, "jti") {
			t.Fatal("another token than the cached one was sent")
		}
		time.Sleep(100 * time.Millisecond) // the user's pace
	}
	for range 5 {
		r := e.get("/api", tok)
		e.wantUserToken(r, "alice")
		if claim(r.echo, "jti") != claim(first.echo, "jti") {
			t.Fatal("after the failed refresh, another token than the cached one was sent")
		}
	}
}

// A user token that expires before the cached token leaves nothing to refresh: no callout.
func TestE2E_NoRefreshPastTheUserTokenExp(t *testing.T) {
	e := newEnv(t, envOptions{workers: 2, plugin: refreshPlugin, beforeProxy: func(p *idp.IdP) {
		p.SetAccessTokenLifetime(refreshTokenLifetime)
	}})
	e.serviceTokenReady()
	tok, err := e.idp.MintUserTokenWith("alice", uiClient, idp.MintOptions{Lifetime: 5 * time.Second}) // before the 6 s
	if err != nil {
		t.Fatal(err)
	}
	e.remember(tok)
	e.wantUserToken(e.get("/api", tok), "alice")
	exchanges := e.idp.TokenExchangeCount()
	// The user stays active through the token's refresh window (it opens 2 s after the exchange).
	logged := func() bool {
		for _, l := range e.proxy.Logs() {
			if strings.Contains(l.Message, "the user token it was exchanged for expires first") {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(4 * time.Second); !logged(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no log line says why the token is not refreshed")
		}
		e.wantUserToken(e.get("/api", tok), "alice")
	}
	if n := e.idp.TokenExchangeCount(); n != exchanges {
		t.Errorf("%d exchanges after the first, want none", n-exchanges)
	}
}

// longLivedToken is a 10-minute user token: longer than every exchanged token of these tests.
func (e *env) longLivedToken(username string) string {
	e.t.Helper()
	tok, err := e.idp.MintUserTokenWith(username, uiClient, idp.MintOptions{Lifetime: 10 * time.Minute})
	if err != nil {
		e.t.Fatal(err)
	}
	e.remember(tok)
	return tok
}
