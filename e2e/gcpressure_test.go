package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/host"
	"github.com/kagenti/token-exchange-filter/e2e/idp"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// gcPressureUsers and gcPressureRounds size the garbage-collection workload: users with 4 KB
// tokens, each sending one request per round (the first an exchange, the rest cache hits).
const (
	gcPressureUsers  = 150
	gcPressureRounds = 4
)

// A Go module that has armed any timer polls (WASI poll_oneoff) at the end of every
// stop-the-world of every garbage collection. An Envoy before proxy-wasm-cpp-host 94091cd
// answers ENOSYS and the unpatched runtime throws, or forbids the call outright when the
// collection runs inside its allocation call; either kills the VM. The runtime patch
// (internal/compat, make build's default) makes no such call. The filter is built here with
// -tags netpollprobe, which arms one timer as a dependency would (filter/netpoll_probe.go): the
// filter alone never initialises netpoll (TestE2E_LegacyEnvoyServesWithoutTrap checks that it
// makes no poll_oneoff call at all).
func TestE2E_GCPressureNeedsTheRuntimePatch(t *testing.T) {
	var patched, unpatched []byte
	var errPatched, errUnpatched error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		patched, errPatched = wasmbuild.BuildWith(wasmbuild.Options{Compat: true, Tags: []string{"netpollprobe"}})
	}()
	go func() {
		defer wg.Done()
		unpatched, errUnpatched = wasmbuild.BuildWith(wasmbuild.Options{Compat: false, Tags: []string{"netpollprobe"}})
	}()
	wg.Wait()
	if errPatched != nil || errUnpatched != nil {
		t.Fatal(errPatched, errUnpatched)
	}

	// On a current Envoy the unpatched module polls about twice per collection (sweep and mark
	// termination each restart the world): the number of collections the workload causes.
	var collections int64
	t.Run("unpatched on a current Envoy polls", func(t *testing.T) {
		e := newEnv(t, envOptions{workers: 1, plugin: exchangeUnlimited, module: unpatched})
		served, _ := gcPressure(e, false)
		polls := e.proxy.PollOneoffCalls()
		collections = polls / 2
		t.Logf("%d requests: %d poll_oneoff calls (≈%d garbage collections)", served, polls, collections)
		if polls < 4 {
			t.Fatalf("only %d poll_oneoff calls: the workload no longer collects garbage often enough to test anything", polls)
		}
	})
	t.Run("unpatched on a legacy Envoy traps", func(t *testing.T) {
		e := newEnv(t, envOptions{workers: 1, plugin: exchangeUnlimited, module: unpatched, legacyHost: true, trapsExpected: true})
		served, failedAt := gcPressure(e, true)
		if failedAt < 0 {
			t.Fatalf("%d requests without a trap: the legacy host no longer shows the failure the patch is for", served)
		}
		// The runtime writes its fatal error to stderr in pieces (one log line per write).
		var stderr strings.Builder
		trap := ""
		for _, l := range e.proxy.Logs() {
			switch {
			case l.Host && trap == "":
				trap = l.Message
			case !l.Host && l.Level == host.LogError:
				stderr.WriteString(l.Message)
			}
		}
		t.Logf("trapped at request %d of %d (the workload collects ≈%d times in all): %q, after the runtime wrote %.160q",
			failedAt+1, gcPressureUsers*gcPressureRounds, collections, trap, stderr.String())
		// Either failure mode of that host: the runtime throws on ENOSYS ("poll_oneoff failed"), or
		// a collection the host's allocation call triggered polls, which that host forbids there.
		enosys := strings.Contains(stderr.String(), "poll_oneoff failed")
		restricted := strings.Contains(trap, "restricted host call: wasi_snapshot_preview1.poll_oneoff")
		if trap == "" || !enosys && !restricted {
			t.Errorf("want a trap from poll_oneoff (ENOSYS thrown, or called inside the allocator); trap %q, stderr %q", trap, firstLine(stderr.String()))
		}
	})
	t.Run("patched on a legacy Envoy serves", func(t *testing.T) {
		e := newEnv(t, envOptions{workers: 1, plugin: exchangeUnlimited, module: patched, legacyHost: true})
		served, failedAt := gcPressure(e, true)
		if failedAt >= 0 {
			t.Fatalf("request %d failed", failedAt+1)
		}
		if n := e.proxy.PollOneoffCalls(); n != 0 {
			t.Errorf("%d poll_oneoff calls", n)
		}
		t.Logf("%d requests over ≈%d garbage collections, no poll_oneoff call, no trap", served, collections)
	})
}

// gcPressure sends the workload; with stopAtFailure it stops at the first request not answered
// by the upstream and returns its index (-1 when every request was served).
func gcPressure(e *env, stopAtFailure bool) (served, failedAt int) {
	e.t.Helper()
	e.serviceTokenReady()
	padding := strings.Repeat("x", 4000)
	tokens := make([]string, gcPressureUsers)
	for i := range tokens {
		name := fmt.Sprintf("gc-user-%d", i)
		if err := e.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			e.t.Fatal(err)
		}
		tok, err := e.idp.MintUserTokenWith(name, uiClient, idp.MintOptions{Claims: map[string]any{"padding": padding}})
		if err != nil {
			e.t.Fatal(err)
		}
		e.remember(tok)
		tokens[i] = tok
	}
	for round := 0; round < gcPressureRounds; round++ {
		for i, tok := range tokens {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := e.do(ctx, "/api", tok)
			cancel()
			if err != nil || r.status != 200 || r.claim("preferred_username") != fmt.Sprintf("gc-user-%d", i) {
				if stopAtFailure {
					return served, served
				}
				e.t.Fatalf("request %d: status %d", served, r.status)
			}
			served++
		}
	}
	return served, -1
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
