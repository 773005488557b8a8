package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// Soak: many users behind 4 workers while the IdP misbehaves at random, 10% errors (500, 503,
// reset connections) and 5% answers slower than timeoutMs, and clients give up on 5% of the
// requests that wait for an exchange. Every request must end (exchanged token, service-account
// fallback or the filter's local reply) within timeoutMs + 100 ms plus what the same traffic
// costs this machine without faults; every request that reaches the upstream carries its own
// user's token or the service-account token, never another user's; the workers' memory
// plateaus; nothing stays held.
//
// Small by default (a few seconds, part of make test). SOAK=<duration> runs the faulty phase that
// long, with more users:
//
//	SOAK=10m go test -run TestE2E_Soak -timeout 0 -v ./e2e
func TestE2E_Soak(t *testing.T) {
	const (
		timeoutMs = 500
		// idpLatency is the healthy IdP's answer time (Keycloak's is of this order): requests that
		// wait for an exchange are held that long, and clients cancel within it.
		idpLatency = 30 * time.Millisecond
		every      = 4 * time.Millisecond // 250 requests per second
		renewP     = 0.25                 // a request first gives its user a new token (a cache miss)
		cancelP    = 0.05                 // a request sent while its user's token is not exchanged yet is cancelled
	)
	faultDur, users := 10*time.Second, 200
	if v := os.Getenv("SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK=%q: want a duration such as 10m", v)
		}
		faultDur, users = d, 1000
	}
	baseDur := min(max(faultDur/4, 2500*time.Millisecond), 30*time.Second)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d users, baseline %v, faults %v", seed, users, baseDur, faultDur)

	// On an Envoy whose proxy-wasm-cpp-host predates 94091cd, the strictest host there is.
	e := newEnv(t, envOptions{legacyHost: true, plugin: exchangeUnlimited + `,"timeoutMs":` + strconv.Itoa(timeoutMs)})
	e.serviceTokenReady()
	s := &soak{e: e, users: make([]*soakUser, users), rng: rand.New(rand.NewPCG(seed, seed^0x5eed)), sample: 1}
	if os.Getenv("SOAK") != "" {
		s.sample = 64
	}
	for i := range s.users {
		name := "soak-user-" + strconv.Itoa(i)
		if err := e.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		s.users[i] = &soakUser{name: name, subject: e.idp.Subject(name), token: e.userToken(name), pending: true}
	}

	// The same traffic without faults: what a request costs this machine (2 cores shared by the
	// clients, the host, the module, the IdP and the upstream).
	s.e.idp.SetLatency(idp.AllGrants, idpLatency)
	pagesStart := s.largestPages()
	base := s.run(t, baseDur, every, renewP, cancelP, idpLatency, nil)
	t.Logf("without faults: %s", base)

	// 10% errors (500 with Keycloak's error body, 503, reset connections), 5% answers 300 ms past
	// timeoutMs, the others answered after idpLatency.
	s.e.idp.SetFault(idp.AllGrants, idp.Mix(
		idp.Chance{P: 0.04, Fault: idp.RespondError(500, "unknown_error", "soak").After(idpLatency)},
		idp.Chance{P: 0.03, Fault: idp.Respond(503, "").After(idpLatency)},
		idp.Chance{P: 0.03, Fault: idp.ResetConnection().After(idpLatency)},
		idp.Chance{P: 0.05, Fault: idp.Latency(timeoutMs*time.Millisecond + 300*time.Millisecond)},
		idp.Chance{P: 0.85, Fault: idp.Latency(idpLatency)},
	))
	pagesWarm := s.largestPages()
	var pagesThird uint32
	faulty := s.run(t, faultDur, every, renewP, cancelP, idpLatency, func() { pagesThird = s.largestPages() })
	s.e.idp.ClearFaults()
	t.Logf("with faults: %s", faulty)

	limit := timeoutMs*time.Millisecond + 100*time.Millisecond + base.slowest
	if faulty.slowest > limit {
		t.Errorf("slowest request took %v, more than timeoutMs + 100 ms + the fault-free cost %v", faulty.slowest, base.slowest)
	}
	if faulty.canceled == 0 || faulty.exchanged == 0 || faulty.fallback == 0 {
		t.Errorf("the faults did not show: %s", faulty)
	}

	// Nothing stays held: cancelled requests and abandoned flights are all cleaned up.
	if err := e.proxy.WaitFor(5*time.Second, func() bool {
		v, _ := e.proxy.Metric("token_exchange.requests_held")
		return v == 0
	}); err != nil {
		v, _ := e.proxy.Metric("token_exchange.requests_held")
		t.Errorf("%d requests still held after the traffic stopped", int64(v))
	}
	// Nothing piles up in shared queues (Envoy's heap), dead VMs' queues included.
	if err := e.proxy.WaitFor(5*time.Second, func() bool { items, _ := e.proxy.QueueItems(); return items <= 8 }); err != nil {
		items, bytes := e.proxy.QueueItems()
		t.Errorf("%d items (%d bytes) wait in shared queues after the traffic stopped", items, bytes)
	}

	s.checkUpstream(t)

	// Memory plateaus: the largest worker VM does not grow over the last two thirds of the faulty
	// phase by more than one 4 MiB heap arena (64 pages), the unit in which Go's runtime on wasm
	// asks for memory; a leak of anything per request or per user would grow it steadily.
	pagesEnd := s.largestPages()
	t.Logf("largest worker VM: %d pages before the traffic, %d after the fault-free phase, %d at a third of the faulty phase, %d at the end; shared data %d bytes in %d keys",
		pagesStart, pagesWarm, pagesThird, pagesEnd, e.proxy.SharedDataBytes(), e.proxy.SharedDataKeys())
	if pagesEnd > pagesThird+64 {
		t.Errorf("worker memory grew from %d to %d pages after warm-up", pagesThird, pagesEnd)
	}
}

type soak struct {
	e     *env
	users []*soakUser
	rng   *rand.Rand // used by the pacing goroutine only
	// sample: only every sample-th token is given to the env's check that no log line holds a
	// token (it compares every log line with every token: quadratic over a long soak).
	sample int64
	seen   atomic.Int64
}

func (s *soak) remember(token string) {
	if s.seen.Add(1)%s.sample == 0 {
		s.e.remember(token)
	}
}

// do is env.do for a soak request (with the x-soak-user header), remembering sampled tokens only.
func (s *soak) do(ctx context.Context, token, user string) (reply, error) {
	return s.e.send(ctx, "/api", token, s.remember, "x-soak-user", user)
}

type soakUser struct {
	name, subject string

	mu      sync.Mutex
	token   string // the user's current token
	pending bool   // no request has come back with an exchanged token for it yet
}

// soakStats summarises one phase.
type soakStats struct {
	sent, exchanged, fallback, local, canceled int64
	slowest                                    time.Duration
}

func (s soakStats) String() string {
	return "sent " + strconv.FormatInt(s.sent, 10) + ", exchanged " + strconv.FormatInt(s.exchanged, 10) +
		", fallback " + strconv.FormatInt(s.fallback, 10) + ", local replies " + strconv.FormatInt(s.local, 10) +
		", cancelled while waiting " + strconv.FormatInt(s.canceled, 10) + ", slowest " + s.slowest.String()
}

// run sends a request every tick for d, each for a random user; at a third of d it calls third.
// A request sent while its user's token has not come back exchanged is cancelled with chance
// cancelP, within cancelWithin (while it waits for the IdP's answer).
func (s *soak) run(t *testing.T, d, every time.Duration, renewP, cancelP float64, cancelWithin time.Duration, third func()) soakStats {
	t.Helper()
	var (
		mu    sync.Mutex
		st    soakStats
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	failf := func(format string, args ...any) {
		if fails.Add(1) <= 5 {
			t.Errorf(format, args...)
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	begin := time.Now()
	thirdDone := third == nil
	nextCheck := 5 * time.Second
	for now := range tick.C {
		elapsed := now.Sub(begin)
		if elapsed >= d {
			break
		}
		if !thirdDone && elapsed >= d/3 {
			third()
			thirdDone = true
		}
		if elapsed >= nextCheck {
			s.checkUpstream(t)
			nextCheck += 5 * time.Second
		}
		u := s.users[s.rng.IntN(len(s.users))]
		renew := s.rng.Float64() < renewP
		cancelRoll := s.rng.Float64()
		cancelAfter := time.Duration(1 + s.rng.Int64N(int64(cancelWithin-1)))
		st.sent++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if renew {
				tok, err := s.e.idp.MintUserToken(u.name, uiClient)
				if err != nil {
					failf("minting a token of %s: %v", u.name, err)
					return
				}
				s.remember(tok)
				u.mu.Lock()
				u.token, u.pending = tok, true
				u.mu.Unlock()
			}
			u.mu.Lock()
			tok, pending := u.token, u.pending
			u.mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cancelled := pending && cancelRoll < cancelP
			if cancelled {
				time.AfterFunc(cancelAfter, cancel)
			}
			r, err := s.do(ctx, tok, u.name)
			mu.Lock()
			defer mu.Unlock()
			if cancelled && errors.Is(err, context.Canceled) {
				st.canceled++
				return
			}
			if err != nil {
				failf("request of %s: %v", u.name, err)
				return
			}
			st.slowest = max(st.slowest, r.elapsed)
			switch {
			case r.status == http.StatusOK && r.claim("sub") == u.subject:
				if !contains(r.audiences(), apiAudience) || r.claim("azp") != filterClient {
					failf("request of %s: a token of %s that is not an exchanged one (aud %v, azp %q)", u.name, u.name, r.audiences(), r.claim("azp"))
				}
				st.exchanged++
				u.mu.Lock()
				if u.token == tok {
					u.pending = false
				}
				u.mu.Unlock()
			case r.status == http.StatusOK && r.claim("sub") == idp.ServiceAccountSubject(filterClient):
				st.fallback++
			case r.status == http.StatusOK:
				failf("request of %s carried another user's token: sub %q (%s)", u.name, r.claim("sub"), r.claim("preferred_username"))
			case r.status == http.StatusUnauthorized || r.status == http.StatusBadGateway || r.status == http.StatusServiceUnavailable:
				st.local++
			default:
				failf("request of %s: status %d %s", u.name, r.status, r.body)
			}
		}()
	}
	wg.Wait()
	s.checkUpstream(t)
	return st
}

// checkUpstream: every request that reached the upstream (cancelled ones included) carried its
// own user's token or the fallback. The upstream and the IdP record every request; they are
// forgotten after each check so that a long soak does not grow the test's own memory (a request
// recorded between the check and the reset escapes this check, not the client-side one).
func (s *soak) checkUpstream(t *testing.T) {
	t.Helper()
	sa := idp.ServiceAccountSubject(filterClient)
	for _, r := range s.e.upstream.Requests() {
		name := r.Header.Get("X-Soak-User")
		if name == "" {
			continue
		}
		i, err := strconv.Atoi(strings.TrimPrefix(name, "soak-user-"))
		if err != nil || i < 0 || i >= len(s.users) {
			t.Errorf("the upstream got a request of an unknown user %q", name)
			continue
		}
		if sub, _ := r.Claims["sub"].(string); sub != s.users[i].subject && sub != sa {
			t.Errorf("the upstream got a request of %s with sub %q (%v): another user's token", name, sub, r.Claims["preferred_username"])
		}
	}
	s.e.upstream.Reset()
	s.e.idp.ResetCounts()
}

func (s *soak) largestPages() uint32 {
	pages := s.e.proxy.MemoryPages()
	var most uint32
	for _, p := range pages[:len(pages)-1] { // the last one is the main-thread VM
		most = max(most, p)
	}
	return most
}
