package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/idp"
)

// The refresh phase: active users (one request every refreshEvery each, 4 workers, round-robin)
// over refreshLifetimes lifetimes of short exchanged tokens, with the refresh ahead of expiry on
// and off, and the same load with long-lived tokens (pure cache hits) for comparison.
const (
	refreshUsers     = 20
	refreshEvery     = 200 * time.Millisecond
	refreshLifetimes = 3
	refreshLifetime  = 12 * time.Second
	refreshSkewS     = 2
	refreshAheadS    = 2
	// refreshIdPLatency makes an exchange cost what a real one does.
	refreshIdPLatency = 20 * time.Millisecond
)

type refreshRun struct {
	held      float64 // requests held for an exchange, per user
	exchanges int
	latencies []time.Duration // every request but each user's first
}

func (b *bench) refresh(res *Result) error {
	defer b.idp.SetAccessTokenLifetime(idp.DefaultAccessTokenLifetime)
	defer b.idp.SetLatency(idp.TokenExchangeOnly, 0)
	b.idp.SetLatency(idp.TokenExchangeOnly, refreshIdPLatency)
	skew := fmt.Sprintf(`"expirySkewSeconds":%d,`, refreshSkewS)
	duration := refreshLifetimes * refreshLifetime

	b.idp.SetAccessTokenLifetime(refreshLifetime)
	on, err := b.refreshRun(skew+fmt.Sprintf(`"refreshAheadSeconds":%d,`, refreshAheadS), duration)
	if err != nil {
		return err
	}
	off, err := b.refreshRun(skew+`"refreshAheadSeconds":0,`, duration)
	if err != nil {
		return err
	}
	b.idp.SetAccessTokenLifetime(idp.DefaultAccessTokenLifetime)
	hits, err := b.refreshRun(skew, refreshLifetime)
	if err != nil {
		return err
	}

	res.RefreshUsers = refreshUsers
	res.RefreshHeldPerUser, res.RefreshHeldPerUserOff = on.held, off.held
	res.RefreshExchangesPerUserPerLifetime = float64(on.exchanges) / refreshUsers / refreshLifetimes
	// The design: the first exchange, then one refresh per (usable lifetime - window).
	period := refreshLifetime.Seconds() - refreshSkewS - refreshAheadS
	res.RefreshExpectedPerLifetime = (1 + float64(int(duration.Seconds()/period))) / refreshLifetimes
	res.RefreshP50Us, res.RefreshP99Us = pct(on.latencies, 50), pct(on.latencies, 99)
	res.RefreshOffP99Us, res.RefreshHitP99Us = pct(off.latencies, 99), pct(hits.latencies, 99)
	res.Notes["refresh"] = fmt.Sprintf("%d users, each a request every %v for %v (%d lifetimes of %v exchanged tokens, skew %d s, "+
		"refreshAheadSeconds %d), 4 workers, the IdP answering exchanges after %v. refresh_held_per_user: requests held for an "+
		"exchange (cache.miss) per user, goal 1 (the first); *_off with refreshAheadSeconds 0. refresh_exchanges_per_user_per_lifetime: "+
		"exchanges at the IdP per user per token lifetime, all workers together; refresh_expected_per_user_per_lifetime is the design's "+
		"(the first exchange, then one refresh every usable lifetime - window), the same for any number of workers. refresh_p50/p99_us: request latency through the proxy "+
		"(client side, each user's first request left out); refresh_hit_p99_us the same load with 300 s tokens (only cache hits), "+
		"refresh_off_p99_us with refresh off.", refreshUsers, refreshEvery, duration, refreshLifetimes, refreshLifetime, refreshSkewS,
		refreshAheadS, refreshIdPLatency)
	return nil
}

// refreshRun runs the active users for d on a fresh proxy with the extra top-level fields.
func (b *bench) refreshRun(extra string, d time.Duration) (refreshRun, error) {
	px, err := b.launch(b.proxyConfigWith(workers, false, extra))
	if err != nil {
		return refreshRun{}, err
	}
	defer px.Close()
	prev := b.proxy
	b.proxy = px
	defer func() { b.proxy = prev }()
	tokens := make([]string, refreshUsers)
	for i := range tokens {
		name := fmt.Sprintf("refresh-user-%d", b.nextID.Add(1))
		if err := b.idp.AddUser(idp.User{Username: name, Password: "pw"}); err != nil {
			return refreshRun{}, err
		}
		if tokens[i], err = b.idp.MintUserTokenWith(name, uiClient, idp.MintOptions{Lifetime: 10 * time.Minute}); err != nil {
			return refreshRun{}, err
		}
	}
	before := b.idp.TokenExchangeCount()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var bad error
	var wg sync.WaitGroup
	for _, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(refreshEvery)
			defer t.Stop()
			for first := true; ; first = false {
				begin := time.Now()
				r := b.get(context.Background(), tok)
				took := time.Since(begin)
				mu.Lock()
				if r.status != http.StatusOK && bad == nil {
					bad = fmt.Errorf("refresh phase: status %d %v", r.status, r.err)
				}
				if !first {
					lat = append(lat, took)
				}
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
	if bad != nil {
		return refreshRun{}, bad
	}
	misses, _ := px.Metric("token_exchange.cache.miss")
	slices.Sort(lat)
	return refreshRun{held: float64(misses) / refreshUsers, exchanges: b.idp.TokenExchangeCount() - before, latencies: lat}, nil
}

func pct(sorted []time.Duration, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	return percentile(sorted, p).Microseconds()
}
