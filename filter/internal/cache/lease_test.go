package cache_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

// Workers coordinate one exchange per key through a lease in the key's slot.
func TestLeaseIsExclusiveUntilItExpires(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 8), cache.New(s, ns, 8)
		k := userKey(1)
		if won, _, err := a.TryLease(k, "A", 1000, 0); !won || err != nil {
			t.Fatalf("first claim: won=%v err=%v", won, err)
		}
		won, cur, _ := b.TryLease(k, "B", 1000, 10)
		if won || cur.State != cache.Leased || cur.Owner != "A" || cur.UntilMs != 1000 {
			t.Fatalf("second claim: won=%v cur=%+v, want A's lease", won, cur)
		}
		if won, _, _ := a.TryLease(k, "A", 1000, 20); !won {
			t.Fatalf("the holder's own claim must stand")
		}
		if l := b.Look(k, 999); l.State != cache.Leased {
			t.Fatalf("Look before expiry: %+v", l)
		}
		mustMiss(t, b, k, 500) // a lease is never a token
		// A holder that died: its lease expires and is taken over.
		if won, _, _ := b.TryLease(k, "B", 3000, 1000); !won {
			t.Fatalf("expired lease not taken over")
		}
	})
}

// The first token stored ends the lease for everyone; later claims see the token.
func TestTokenEndsLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 8), cache.New(s, ns, 8)
		k := userKey(2)
		a.TryLease(k, "A", 1000, 0)
		mustPut(t, a, k, "tok-2", 5000, 100)
		if l := b.Look(k, 200); l.State != cache.Hit || l.Token != "tok-2" {
			t.Fatalf("Look after Put: %+v", l)
		}
		won, cur, _ := b.TryLease(k, "B", 1000, 200)
		if won || cur.State != cache.Hit || cur.Token != "tok-2" {
			t.Fatalf("claim over a valid token: won=%v %+v", won, cur)
		}
	})
}

// A failure backs the key off until its expiry; consecutive failures are counted across the
// leases in between; a success resets the count.
func TestFailureBackOffAndCount(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 8), cache.New(s, ns, 8)
		k := userKey(3)
		a.TryLease(k, "A", 1000, 0)
		if n, err := a.PutFailure(k, 502, 2000, 100); n != 1 || err != nil {
			t.Fatalf("first failure: count %d err %v", n, err)
		}
		l := b.Look(k, 1999)
		if l.State != cache.Failed || l.Status != 502 || l.UntilMs != 2000 || l.Failures != 1 {
			t.Fatalf("Look during back-off: %+v", l)
		}
		if won, cur, _ := b.TryLease(k, "B", 5000, 1500); won || cur.State != cache.Failed {
			t.Fatalf("claim during back-off: won=%v %+v", won, cur)
		}
		mustMiss(t, b, k, 1500)
		if won, _, _ := b.TryLease(k, "B", 5000, 2000); !won {
			t.Fatalf("claim after back-off refused")
		}
		if n, _ := b.PutFailure(k, 401, 9000, 2100); n != 2 {
			t.Fatalf("second consecutive failure counted %d, want 2", n)
		}
		b.TryLease(k, "B", 20000, 9000)
		mustPut(t, b, k, "tok-3", 30000, 9100)
		mustPut(t, b, k, "tok-3", 30000, 9100)
		a.Delete(k)
		a.TryLease(k, "A", 40000, 31000)
		if n, _ := a.PutFailure(k, 502, 41000, 31000); n != 1 {
			t.Fatalf("failure after a success counted %d, want 1", n)
		}
	})
}

// A late failure never replaces a token another worker stored meanwhile.
func TestFailureKeepsValidToken(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a := cache.New(s, ns, 8)
		k := userKey(4)
		mustPut(t, a, k, "tok-4", 5000, 0)
		if n, err := a.PutFailure(k, 502, 2000, 100); n != 0 || err != nil {
			t.Fatalf("PutFailure over a token: %d %v", n, err)
		}
		mustHit(t, a, k, 200, "tok-4")
	})
}

// ReleaseLease removes only the owner's own lease.
func TestReleaseLease(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 8), cache.New(s, ns, 8)
		k := userKey(5)
		a.TryLease(k, "A", 1000, 0)
		b.ReleaseLease(k, "B")
		if l := b.Look(k, 10); l.State != cache.Leased {
			t.Fatalf("another owner released A's lease: %+v", l)
		}
		a.ReleaseLease(k, "A")
		if won, _, _ := b.TryLease(k, "B", 1000, 10); !won {
			t.Fatalf("released lease not free")
		}
	})
}

// Two workers racing to create a new slot: exactly one holds the lease.
func TestLeaseRaceOnNewSlot(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	a, b := cache.New(s, ns, 1), cache.New(s, ns, 1)
	k := userKey(6)
	var bWon bool
	s.BeforeSet = func(string) {
		s.BeforeSet = nil
		bWon, _, _ = b.TryLease(k, "B", 1000, 0) // lands between a's Get and Set
	}
	aWon, cur, err := a.TryLease(k, "A", 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if aWon == bWon {
		t.Fatalf("both or neither won: a=%v b=%v", aWon, bWon)
	}
	if !aWon && (cur.State != cache.Leased || cur.Owner != "B") {
		t.Fatalf("a lost but sees %+v", cur)
	}
}

// A full slot evicts tokens before live leases and back-off markers.
func TestMarkersAreEvictedLast(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, 1)
	c.TryLease(userKey(1), "A", 1000, 0)
	c.PutFailure(userKey(2), 502, 2000, 0)
	for i := 3; i < 10; i++ {
		mustPut(t, c, userKey(i), "tok", 100_000, 0)
	}
	if l := c.Look(userKey(1), 10); l.State != cache.Leased {
		t.Fatalf("lease evicted by tokens: %+v", l)
	}
	if l := c.Look(userKey(2), 10); l.State != cache.Failed {
		t.Fatalf("back-off marker evicted by tokens: %+v", l)
	}
}

// Markers nobody could have written are not honoured: no key can be blocked for good, and a
// corrupt count cannot make the back-off computation go wrong.
func TestForeignMarkersAreIgnored(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, 1)
	k := userKey(1)
	s.Raw(c.SlotKey(k), cache.EncodeSlot([]cache.TestEntry{{ID: k.ID(), ExpiresAtMs: 1 << 62, Token: []byte("!F502:3")}}))
	if l := c.Look(k, 0); l.State != cache.Miss {
		t.Fatalf("marker expiring in 146 million years honoured: %+v", l)
	}
	s.Raw(c.SlotKey(k), cache.EncodeSlot([]cache.TestEntry{{ID: k.ID(), ExpiresAtMs: 1000, Token: []byte("!F502:-3")}}))
	if l := c.Look(k, 0); l.State != cache.Failed || l.Failures != 0 {
		t.Fatalf("negative failure count read back as %+v", l)
	}
	s.Raw(c.SlotKey(k), cache.EncodeSlot([]cache.TestEntry{{ID: k.ID(), ExpiresAtMs: 1000, Token: []byte("!L:99999")}}))
	if l := c.Look(k, 0); l.Failures != 16 {
		t.Fatalf("huge failure count not capped: %+v", l)
	}
}

// The service-account fetch has a lease of its own key, failure marker included.
func TestServiceLease(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	a, b := cache.New(s, ns, 1), cache.New(s, ns, 1)
	if won, _, _ := a.TryServiceLease("A", 1000, 0); !won {
		t.Fatal("first claim")
	}
	if won, cur, _ := b.TryServiceLease("B", 1000, 0); won || cur.Owner != "A" {
		t.Fatalf("second claim: %v %+v", won, cur)
	}
	if err := a.PutServiceFailure(3000, 500); err != nil {
		t.Fatal(err)
	}
	if l := b.LookServiceLease(600); l.State != cache.Failed || l.UntilMs != 3000 {
		t.Fatalf("failed fetch not visible: %+v", l)
	}
	if won, _, _ := b.TryServiceLease("B", 9000, 3000); !won {
		t.Fatal("claim after the failure window")
	}
	b.ReleaseServiceLease("B")
	if l := a.LookServiceLease(3001); l.State != cache.Miss {
		t.Fatalf("released lease still there: %+v", l)
	}
}

// The waker list keeps each VM once, the newest MaxWakers of them.
func TestWakers(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		for _, o := range []string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"} {
			if err := c.RegisterWaker(o); err != nil {
				t.Fatal(err)
			}
		}
		if got := c.Wakers(nil, 0); len(got) != 2 || got[0] != "aaaaaaaaaaaaaaaa" || got[1] != "bbbbbbbbbbbbbbbb" {
			t.Fatalf("wakers %v", got)
		}
		for i := 0; i < cache.MaxWakers; i++ {
			c.RegisterWaker(strings.Repeat(string(rune('c'+i%20)), 15) + string(rune('A'+i%26)))
		}
		if got := c.Wakers(nil, 0); len(got) != cache.MaxWakers || got[0] == "aaaaaaaaaaaaaaaa" {
			t.Fatalf("waker list not bounded to the newest %d: %d entries, first %q", cache.MaxWakers, len(got), got[0])
		}
		if err := c.RegisterWaker("short"); err == nil {
			t.Fatal("an owner id of the wrong length was accepted")
		}
	})
}

// A VM that stops renewing (a dead canary, a VM of an old configuration) leaves the waker list
// once its record is stale, and the VM that renews next is told, so it can drain its queue.
func TestWakerHeartbeatAgesOutDeadVMs(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		const live, dead = "aaaaaaaaaaaaaaaa", "dddddddddddddddd"
		mustBeat := func(owner string, now int64) []string {
			t.Helper()
			gone, err := c.Heartbeat(owner, now, nil)
			if err != nil {
				t.Fatal(err)
			}
			return gone
		}
		mustBeat(dead, 1000)
		mustBeat(live, 1000)
		if got := c.Wakers(nil, 1000+cache.WakerStaleMs-1); len(got) != 2 {
			t.Fatalf("both VMs renewed lately, wakers %v", got)
		}
		if gone := mustBeat(live, 1000+cache.WakerStaleMs-1); len(gone) != 0 {
			t.Fatalf("a live VM was dropped: %v", gone)
		}
		if got := c.Wakers(nil, 1000+cache.WakerStaleMs); len(got) != 1 || got[0] != live {
			t.Fatalf("a stale record is still woken: %v", got)
		}
		if gone := mustBeat(live, 1000+cache.WakerStaleMs); len(gone) != 1 || gone[0] != dead {
			t.Fatalf("the renewing VM was not told of the dead one: %v", gone)
		}
		// A record far in the future (another writer, or a clock that stepped back) is stale too.
		mustBeat(dead, 1_000_000)
		if got := c.Wakers(nil, 6000); len(got) != 0 {
			t.Fatalf("a record from the far future counts as live: %v", got)
		}
	})
}

// A VM whose plugin is torn down leaves at once: nobody enqueues to its dead queue afterwards,
// and the others stay listed.
func TestLeaveWakersRemovesOnlyThatVM(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		const stays, leaves = "aaaaaaaaaaaaaaaa", "llllllllllllllll"
		for _, o := range []string{leaves, stays} {
			if _, err := c.Heartbeat(o, 1000, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.LeaveWakers(leaves, 1001, nil); err != nil {
			t.Fatal(err)
		}
		if got := c.Wakers(nil, 1002); len(got) != 1 || got[0] != stays {
			t.Fatalf("after one VM left, wakers %v; want only %s", got, stays)
		}
		// Leaving twice, or without having joined, is harmless.
		if _, err := c.LeaveWakers(leaves, 1003, nil); err != nil {
			t.Fatal(err)
		}
		if got := c.Wakers(nil, 1004); len(got) != 1 {
			t.Fatalf("a second leave changed the list: %v", got)
		}
	})
}

// Leases and failure markers of made-up user tokens never push real users' live tokens out of
// a full slot; a marker still replaces another marker.
func TestMarkersNeverEvictLiveTokens(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1) // one slot: every key shares it
		var real []cache.Key
		for i := 0; i < cache.EntriesPerSlot; i++ {
			k := cache.KeyFor(fmt.Sprintf("real-user-%d", i), "api", "")
			if err := c.Put(k, fmt.Sprintf("tok%d", i), 100_000, 1000); err != nil {
				t.Fatal(err)
			}
			real = append(real, k)
		}
		for i := 0; i < 20; i++ {
			garbage := cache.KeyFor(fmt.Sprintf("garbage-%d", i), "api", "")
			if _, _, err := c.TryLease(garbage, "aaaaaaaaaaaaaaaa", 5000, 1000); err != nil {
				t.Fatal(err)
			}
			if _, err := c.PutFailure(garbage, 401, 9000, 1000); err != nil {
				t.Fatal(err)
			}
		}
		for i, k := range real {
			if l := c.Look(k, 2000); l.State != cache.Hit || l.Token != fmt.Sprintf("tok%d", i) {
				t.Fatalf("real user %d: %+v after a flood of markers", i, l)
			}
		}
		// With room (an expired token), a marker is stored.
		if err := c.Put(real[0], "short", 1500, 1000); err != nil {
			t.Fatal(err)
		}
		g := cache.KeyFor("garbage-x", "api", "")
		if _, err := c.PutFailure(g, 401, 9000, 2000); err != nil {
			t.Fatal(err)
		}
		if l := c.Look(g, 2001); l.State != cache.Failed {
			t.Errorf("a marker was refused a free place: %+v", l)
		}
	})
}

// A marker that claims more than this configuration ever writes (another plugin in the vm_id)
// is ignored: a foreign service back-off of 10 minutes does not block the service-account
// token when this configuration backs off 30 s at most.
func TestForeignMarkersAreCappedByConfiguration(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		c.SetMarkerCaps(cache.MarkerCaps{LeaseMs: 6_000, FailureMs: 64_000, ServiceFailureMs: 30_000})
		if err := c.PutServiceFailure(1000+600_000, 1000); err != nil { // as a neighbour would
			t.Fatal(err)
		}
		if l := c.LookServiceLease(1001); l.State != cache.Miss {
			t.Errorf("a 10-minute service back-off was honoured: %+v", l)
		}
		if err := c.PutServiceFailure(1000+20_000, 1000); err != nil {
			t.Fatal(err)
		}
		if l := c.LookServiceLease(1001); l.State != cache.Failed {
			t.Errorf("a back-off within this configuration's own was ignored: %+v", l)
		}
		k := cache.KeyFor("user", "api", "")
		if won, _, err := c.TryLease(k, "dddddddddddddddd", 1000+60_000, 1000); !won || err != nil {
			t.Fatal(won, err)
		}
		if won, _, _ := c.TryLease(k, "aaaaaaaaaaaaaaaa", 7000, 1001); !won {
			t.Error("a lease claiming a minute, ten times this configuration's longest, blocked the key")
		}
	})
}

// The generation word counts drops; a missing or foreign value reads as 0 and is overwritten.
func TestGeneration(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		if g := c.Generation(); g != 0 {
			t.Fatalf("fresh generation %d", g)
		}
		for i := 1; i <= 3; i++ {
			if err := c.BumpGeneration(); err != nil {
				t.Fatal(err)
			}
			if g := c.Generation(); g != uint64(i) {
				t.Fatalf("after %d bumps: %d", i, g)
			}
		}
		s.Raw(ns+":g", []byte("garbage"))
		if g := c.Generation(); g != 0 {
			t.Fatalf("foreign value read as %d", g)
		}
		if err := c.BumpGeneration(); err != nil || c.Generation() != 1 {
			t.Fatalf("bump over a foreign value: %v, %d", err, c.Generation())
		}
	})
}

// The new-key bucket holds burst tokens, refills at the rate, and a foreign or future-dated
// value reads as a full bucket: nothing in shared data can empty it for good.
func TestNewKeyBucket(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		taken := 0
		for i := 0; i < 10; i++ {
			if c.TakeNewKey(2, 3, 1000) {
				taken++
			}
		}
		if taken != 3 {
			t.Fatalf("took %d tokens from a burst of 3", taken)
		}
		if !c.TakeNewKey(2, 3, 1500) || c.TakeNewKey(2, 3, 1500) {
			t.Fatal("2 per second: one token after 500 ms, not two")
		}
		s.Raw(ns+":b", []byte("\\x01garbage-garbage"))
		if !c.TakeNewKey(2, 3, 1600) {
			t.Fatal("a foreign value emptied the bucket")
		}
		if !c.TakeNewKey(0, 1, 1600) {
			t.Fatal("rate 0 is no limit")
		}
	})
}
