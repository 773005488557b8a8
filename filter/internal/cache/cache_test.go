package cache_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

const ns = "txf2:1a2b3c4d"

// forEachStore runs f against Envoy's semantics and the SDK emulator's: the cache must behave
// the same on both.
func forEachStore(t *testing.T, f func(t *testing.T, s *cachetest.Store)) {
	t.Helper()
	t.Run("envoy", func(t *testing.T) { f(t, cachetest.NewEnvoyStore()) })
	t.Run("proxytest", func(t *testing.T) { f(t, cachetest.NewProxytestStore()) })
}

// token returns a distinct token of n bytes.
func token(i, n int) string {
	p := "tok-" + strconv.Itoa(i) + "-"
	if n <= len(p) {
		return p[:n]
	}
	return p + strings.Repeat("x", n-len(p))
}

func userKey(i int) cache.Key { return cache.KeyFor("user-"+strconv.Itoa(i), "aud", "") }

// slotEntries decodes the stored slot of k (failing the test if it does not decode).
func slotEntries(t *testing.T, s *cachetest.Store, c *cache.Cache, k cache.Key) []cache.TestEntry {
	t.Helper()
	v, ok := s.Value(c.SlotKey(k))
	if !ok {
		t.Fatalf("slot %s missing", c.SlotKey(k))
	}
	es, ok := cache.DecodeSlot(v)
	if !ok {
		t.Fatalf("slot %s does not decode: %x", c.SlotKey(k), v)
	}
	return es
}

func mustHit(t *testing.T, c *cache.Cache, k cache.Key, now int64, want string) {
	t.Helper()
	got, ok := c.Get(k, now)
	if !ok || got != want {
		t.Fatalf("Get at %d = %.20q, %v; want %.20q, true", now, got, ok, want)
	}
}

func mustMiss(t *testing.T, c *cache.Cache, k cache.Key, now int64) {
	t.Helper()
	if got, ok := c.Get(k, now); ok {
		t.Fatalf("Get at %d = %.20q, hit; want miss", now, got)
	}
}

func mustPut(t *testing.T, c *cache.Cache, k cache.Key, tok string, exp, now int64) {
	t.Helper()
	if err := c.Put(k, tok, exp, now); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

func TestKeyForFraming(t *testing.T) {
	pairs := [][2][3]string{
		{{"ab", "c", ""}, {"a", "bc", ""}},
		{{"a", "", "b"}, {"a", "b", ""}},
		{{"", "a", "b"}, {"a", "", "b"}},
		{{"tok", "aud", "s1"}, {"tok", "aud", "s2"}},
		{{"tok", "aud1", ""}, {"tok", "aud2", ""}},
		{{"tok1", "aud", ""}, {"tok2", "aud", ""}},
	}
	for _, p := range pairs {
		a, b := p[0], p[1]
		if cache.KeyFor(a[0], a[1], a[2]) == cache.KeyFor(b[0], b[1], b[2]) {
			t.Errorf("KeyFor%q == KeyFor%q", a, b)
		}
	}
	// The documented construction, for inputs below and above the stack buffer.
	for _, n := range []int{0, 100, 4096, 5000} {
		u, a, s := strings.Repeat("u", n), "audience", "openid"
		var m []byte
		for _, f := range []string{u, a, s} {
			m = binary.BigEndian.AppendUint32(m, uint32(len(f)))
			m = append(m, f...)
		}
		if got, want := cache.KeyFor(u, a, s), cache.Key(sha256.Sum256(m)); got != want {
			t.Errorf("KeyFor(len %d) = %x, want %x", n, got, want)
		}
	}
}

func TestHitMissExpiry(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1024)
		k := userKey(1)
		mustMiss(t, c, k, 0)
		mustPut(t, c, k, "T1", 1000, 0)
		mustHit(t, c, k, 0, "T1")
		mustHit(t, c, k, 999, "T1")
		mustMiss(t, c, k, 1000) // expiresAtMs is exclusive
		mustMiss(t, c, k, 5000)
		mustMiss(t, c, userKey(2), 0)
		// A new token for the same key replaces the old one.
		mustPut(t, c, k, "T1b", 3000, 1500)
		mustHit(t, c, k, 2000, "T1b")
		if n := len(slotEntries(t, s, c, k)); n != 1 {
			t.Fatalf("slot holds %d entries, want 1", n)
		}
	})
}

func TestDistinctUserAudienceScope(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1) // one slot: distinct entries must coexist by id
		keys := []cache.Key{
			cache.KeyFor("u1", "a1", ""),
			cache.KeyFor("u2", "a1", ""),
			cache.KeyFor("u1", "a2", ""),
			cache.KeyFor("u1", "a1", "s"),
		}
		for i, k := range keys {
			mustPut(t, c, k, token(i, 10), 1000, 0)
		}
		for i, k := range keys {
			mustHit(t, c, k, 0, token(i, 10))
		}
	})
}

func TestEvictionOrder(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		k := make([]cache.Key, 8)
		for i := range k {
			k[i] = userKey(i)
		}
		// Fill the slot; k1 expires first although it is not the oldest.
		mustPut(t, c, k[0], "t0", 500, 0)
		mustPut(t, c, k[1], "t1", 100, 0)
		mustPut(t, c, k[2], "t2", 300, 0)
		mustPut(t, c, k[3], "t3", 400, 0)
		// Full and nothing expired: the earliest expiry (k1) goes.
		mustPut(t, c, k[4], "t4", 1000, 50)
		mustMiss(t, c, k[1], 50)
		for _, i := range []int{0, 2, 3, 4} {
			mustHit(t, c, k[i], 50, "t"+strconv.Itoa(i))
		}
		// At 350, k2 (300) has expired: it is replaced, not k3 (400, the earliest live one).
		mustPut(t, c, k[5], "t5", 1000, 350)
		mustMiss(t, c, k[2], 0) // gone, not just expired
		mustHit(t, c, k[3], 350, "t3")
		mustHit(t, c, k[0], 350, "t0")
		// At 450, k3 (400) has expired: dropped while rewriting, leaving a free position.
		mustPut(t, c, k[6], "t6", 2000, 450)
		es := slotEntries(t, s, c, k[0])
		if len(es) != 4 {
			t.Fatalf("slot holds %d entries, want 4", len(es))
		}
		for _, e := range es {
			if e.ExpiresAtMs <= 450 {
				t.Errorf("expired entry (exp %d) kept after a rewrite at 450", e.ExpiresAtMs)
			}
		}
		// At 1200, k0 (500), k4 and k5 (1000) have expired: all dropped by the next write.
		mustPut(t, c, k[7], "t7", 3000, 1200)
		es = slotEntries(t, s, c, k[0])
		if len(es) != 2 {
			t.Fatalf("slot holds %d entries after expiry, want 2 (k6, k7)", len(es))
		}
		mustHit(t, c, k[6], 1200, "t6")
		mustHit(t, c, k[7], 1200, "t7")
		mustMiss(t, c, k[7], 3000)
	})
}

func TestEvictionTieBreak(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, 1)
	for i := 0; i < cache.EntriesPerSlot; i++ {
		mustPut(t, c, userKey(i), token(i, 5), 1000, 0)
	}
	mustPut(t, c, userKey(9), "new", 1000, 0)
	mustMiss(t, c, userKey(0), 0) // equal expiry: the first position goes
	for i := 1; i < cache.EntriesPerSlot; i++ {
		mustHit(t, c, userKey(i), 0, token(i, 5))
	}
	mustHit(t, c, userKey(9), 0, "new")
}

func TestPutNotCacheable(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 16)
		k := userKey(1)
		cases := []struct {
			name     string
			tok      string
			exp, now int64
		}{
			{"empty", "", 1000, 0},
			{"too long", token(1, cache.MaxTokenBytes+1), 1000, 0},
			{"expires now", "T", 1000, 1000},
			{"expired", "T", 999, 1000},
			{"skew ate it", "T", -30000, 0},
		}
		for _, tc := range cases {
			if err := c.Put(k, tc.tok, tc.exp, tc.now); err != nil {
				t.Errorf("%s: Put = %v, want nil", tc.name, err)
			}
		}
		if s.Gets() != 0 || s.Sets() != 0 || s.Len() != 0 {
			t.Fatalf("not-cacheable Puts touched the store: %d gets, %d sets, %d keys", s.Gets(), s.Sets(), s.Len())
		}
		max := token(2, cache.MaxTokenBytes)
		mustPut(t, c, k, max, 1000, 0)
		mustHit(t, c, k, 0, max)
	})
}

func TestCasRetry(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 1), cache.New(s, ns, 1) // two workers
		mustPut(t, a, userKey(0), "t0", 1000, 0)         // the slot exists
		s.ResetCounters()
		s.BeforeSet = func(string) {
			s.BeforeSet = nil
			mustPut(t, b, userKey(1), "t1", 1000, 0)
		}
		mustPut(t, a, userKey(2), "t2", 1000, 0)
		for i := 0; i < 3; i++ {
			mustHit(t, a, userKey(i), 0, "t"+strconv.Itoa(i))
		}
		if s.Mismatches() != 1 {
			t.Fatalf("mismatches = %d, want 1", s.Mismatches())
		}
	})
}

// The new-key race: both workers read "not found" and both create the slot.
func TestNewKeyRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 1), cache.New(s, ns, 1)
		s.BeforeSet = func(string) {
			s.BeforeSet = nil
			mustPut(t, b, userKey(1), "t1", 1000, 0) // creates the slot between a's Get and Set
		}
		mustPut(t, a, userKey(2), "t2", 1000, 0)
		mustHit(t, a, userKey(1), 0, "t1")
		mustHit(t, a, userKey(2), 0, "t2")
	})
}

// A writer that creates keys with cas 0 (the naive way) overwrites unconditionally in Envoy.
// Whether it lands before or after our creating Set, our entry must survive.
func TestNewKeyRaceUnconditionalWriter(t *testing.T) {
	for _, hook := range []string{"before", "after"} {
		t.Run(hook, func(t *testing.T) {
			s := cachetest.NewEnvoyStore()
			a := cache.New(s, ns, 1)
			k1 := userKey(1)
			other := cache.EncodeSlot([]cache.TestEntry{{ID: k1.ID(), ExpiresAtMs: 1000, Token: []byte("t1")}})
			naive := func(key string) {
				s.BeforeSet, s.AfterSet = nil, nil
				if err := s.Set(key, other, 0); err != nil {
					t.Fatal(err)
				}
			}
			if hook == "before" {
				s.BeforeSet = naive
			} else {
				s.AfterSet = naive
			}
			mustPut(t, a, userKey(2), "t2", 1000, 0)
			mustHit(t, a, k1, 0, "t1")
			mustHit(t, a, userKey(2), 0, "t2")
		})
	}
}

// The trap itself, shown on the fake: had the cache created keys with cas 0, the other
// worker's entry would be lost. (Guards the fake's fidelity, which the tests above rely on.)
func TestEnvoyTrapOnFake(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	if _, _, err := s.Get("k"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.Set("k", []byte("theirs"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("k", []byte("ours"), 0); err != nil { // cas 0: unconditional
		t.Fatalf("cas 0 on an existing key: %v", err)
	}
	if err := s.Set("new", []byte("x"), 12345); err != nil { // cas ignored on a new key
		t.Fatalf("cas on a new key: %v", err)
	}
	if err := s.Set("k", []byte("late"), math.MaxUint32); !errors.Is(err, cache.ErrCasMismatch) {
		t.Fatalf("stale cas on an existing key: %v", err)
	}
}

func TestContended(t *testing.T) {
	forEachStore(t, func(t *testing.T, s0 *cachetest.Store) {
		for _, exists := range []bool{true, false} {
			s := sameKind(s0)
			c := cache.New(s, ns, 1)
			key := c.SlotKey(userKey(0))
			if exists {
				mustPut(t, c, userKey(0), "t0", 1000, 0)
			}
			s.ResetCounters()
			other := cache.EncodeSlot([]cache.TestEntry{{ID: userKey(9).ID(), ExpiresAtMs: 1000, Token: []byte("t9")}})
			s.BeforeSet = func(string) { s.Raw(key, other) } // someone always writes first
			if err := c.Put(userKey(1), "t1", 1000, 0); !errors.Is(err, cache.ErrContended) {
				t.Fatalf("exists=%v: Put = %v, want ErrContended", exists, err)
			}
			if s.Sets() != cache.MaxAttempts {
				t.Fatalf("exists=%v: %d Sets, want %d", exists, s.Sets(), cache.MaxAttempts)
			}
			s.BeforeSet = nil
			mustHit(t, c, userKey(9), 0, "t9") // the other writer's value is intact
		}
	})
}

// sameKind returns an empty store with s's semantics.
func sameKind(s *cachetest.Store) *cachetest.Store {
	if s.Proxytest {
		return cachetest.NewProxytestStore()
	}
	return cachetest.NewEnvoyStore()
}

type failingStore struct {
	cache.Store
	getErr, setErr error
}

func (f failingStore) Get(key string) ([]byte, uint32, error) {
	if f.getErr != nil {
		return nil, 0, f.getErr
	}
	return f.Store.Get(key)
}

func (f failingStore) Set(key string, v []byte, cas uint32) error {
	if f.setErr != nil {
		return f.setErr
	}
	return f.Store.Set(key, v, cas)
}

func TestStoreErrors(t *testing.T) {
	boom := errors.New("boom")
	s := cachetest.NewEnvoyStore()
	good := cache.New(s, ns, 1)
	mustPut(t, good, userKey(1), "t1", 1000, 0)
	mustPut(t, good, userKey(2), "t2", 1000, 0)
	if err := good.PutServiceToken(cache.ServiceToken{Token: "sa", ExpiresAtMs: 1000}); err != nil {
		t.Fatal(err)
	}

	c := cache.New(failingStore{Store: s, setErr: boom}, ns, 1)
	if err := c.Put(userKey(3), "t3", 1000, 0); !errors.Is(err, boom) {
		t.Errorf("Put with failing Set = %v", err)
	}
	if err := c.Delete(userKey(1)); !errors.Is(err, boom) {
		t.Errorf("Delete with failing Set = %v", err)
	}
	if _, err := c.DropServiceToken("sa", 0, 0); !errors.Is(err, boom) {
		t.Errorf("DropServiceToken with failing Set = %v", err)
	}
	c = cache.New(failingStore{Store: s, getErr: boom}, ns, 1)
	mustMiss(t, c, userKey(1), 0)
	if _, ok := c.ServiceToken(0); ok {
		t.Error("ServiceToken hit with failing Get")
	}
	if err := c.Put(userKey(3), "t3", 1000, 0); !errors.Is(err, boom) {
		t.Errorf("Put with failing Get = %v", err)
	}
	mustHit(t, good, userKey(2), 0, "t2")
}

// validSlot returns a valid slot value holding one entry for k.
func validSlot(k cache.Key, tok string) []byte {
	return cache.EncodeSlot([]cache.TestEntry{{ID: k.ID(), ExpiresAtMs: math.MaxInt64, Token: []byte(tok)}})
}

func corruptSlots(k cache.Key) map[string][]byte {
	v := validSlot(k, "secret")
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), v...)) }
	two := cache.EncodeSlot([]cache.TestEntry{
		{ID: k.ID(), ExpiresAtMs: math.MaxInt64, Token: []byte("secret")},
		{ID: k.ID(), ExpiresAtMs: math.MaxInt64, Token: []byte("other")},
	})
	big := cache.EncodeSlot([]cache.TestEntry{{ID: k.ID(), ExpiresAtMs: math.MaxInt64, Token: bytes.Repeat([]byte("s"), cache.MaxTokenBytes+1)}})
	five := make([]cache.TestEntry, 5)
	for i := range five {
		five[i] = cache.TestEntry{ID: k.ID(), ExpiresAtMs: math.MaxInt64, Token: []byte("secret")}
		five[i].ID[0] = byte(i) // distinct ids (the first is k's unless k.ID()[0] != 0)
	}
	five[0].ID = k.ID()
	zeroLen := mod(func(b []byte) []byte {
		binary.BigEndian.PutUint16(b[2+32:], 0)
		return b[:2+34]
	})
	return map[string][]byte{
		"truncated":        mod(func(b []byte) []byte { return b[:len(b)-1] }),
		"truncated header": mod(func(b []byte) []byte { return b[:2+28] }),
		"only version":     mod(func(b []byte) []byte { return b[:1] }),
		"trailing byte":    mod(func(b []byte) []byte { return append(b, 0) }),
		"count too high":   mod(func(b []byte) []byte { b[1] = cache.EntriesPerSlot + 1; return b }),
		"count above data": mod(func(b []byte) []byte { b[1] = 2; return b }),
		"count below data": mod(func(b []byte) []byte { b[1] = 0; return b }),
		"length zero":      zeroLen,
		"length too long":  mod(func(b []byte) []byte { binary.BigEndian.PutUint16(b[2+32:], 7); return b }),
		"oversize token":   big,
		"five entries":     cache.EncodeSlot(five),
		"duplicate id":     two,
		"version 0":        mod(func(b []byte) []byte { b[0] = 0; return b }),
		"version 1":        mod(func(b []byte) []byte { b[0] = 1; return b }), // the format before storedAtMs
		"version 3":        mod(func(b []byte) []byte { b[0] = 3; return b }),
		"version 255":      mod(func(b []byte) []byte { b[0] = 255; return b }),
		"service record":   cache.EncodeService(cache.ServiceToken{Token: "secret", ExpiresAtMs: math.MaxInt64}),
		"text":             []byte("secret"),
		"empty":            {},
	}
}

func TestCorruptSlotsIgnoredAndOverwritten(t *testing.T) {
	forEachStore(t, func(t *testing.T, s0 *cachetest.Store) {
		k := userKey(1)
		for name, v := range corruptSlots(k) {
			if name == "empty" && s0.Proxytest {
				// The emulator reads an empty value as not found but keeps its cas: nothing
				// can write that key there. The cache never writes an empty value.
				continue
			}
			s := sameKind(s0)
			c := cache.New(s, ns, 1)
			s.Raw(c.SlotKey(k), v)
			mustMiss(t, c, k, 0)
			mustMiss(t, c, k, math.MinInt64)
			if err := c.Delete(k); err != nil {
				t.Fatalf("%s: Delete = %v", name, err)
			}
			k2 := userKey(2)
			mustPut(t, c, k2, "fresh", 1000, 0)
			es := slotEntries(t, s, c, k2)
			if len(es) != 1 || es[0].ID != k2.ID() || string(es[0].Token) != "fresh" {
				t.Fatalf("%s: slot after Put = %+v, want only the new entry", name, es)
			}
			mustMiss(t, c, k, 0)
			mustHit(t, c, k2, 0, "fresh")
		}
	})
}

func TestDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 1)
		if err := c.Delete(userKey(1)); err != nil {
			t.Fatal(err)
		}
		if s.Len() != 0 || s.Sets() != 0 {
			t.Fatalf("Delete on an empty store wrote: %d keys, %d sets", s.Len(), s.Sets())
		}
		for i := 1; i <= 3; i++ {
			mustPut(t, c, userKey(i), token(i, 8), 1000, 0)
		}
		if err := c.Delete(userKey(2)); err != nil {
			t.Fatal(err)
		}
		mustMiss(t, c, userKey(2), 0)
		mustHit(t, c, userKey(1), 0, token(1, 8))
		mustHit(t, c, userKey(3), 0, token(3, 8))
		s.ResetCounters()
		if err := c.Delete(userKey(2)); err != nil {
			t.Fatal(err)
		}
		if s.Sets() != 0 {
			t.Fatal("Delete of a missing entry wrote")
		}
		// DeleteToken: only the token the upstream refused.
		if removed, err := c.DeleteToken(userKey(1), "an older token", 0, 0); err != nil || removed {
			t.Fatal(err)
		}
		mustHit(t, c, userKey(1), 0, token(1, 8))
		if removed, err := c.DeleteToken(userKey(1), token(1, 8), 0, 0); err != nil || !removed {
			t.Fatal(err)
		}
		mustMiss(t, c, userKey(1), 0)
		if err := c.Delete(userKey(3)); err != nil {
			t.Fatal(err)
		}
		if es := slotEntries(t, s, c, userKey(3)); len(es) != 0 {
			t.Fatalf("slot after deleting all = %+v", es)
		}
		// An emptied slot is still a valid (non-empty) value and takes new entries.
		mustPut(t, c, userKey(4), "t4", 1000, 0)
		mustHit(t, c, userKey(4), 0, "t4")
	})
}

func TestDeleteRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 1), cache.New(s, ns, 1)
		mustPut(t, a, userKey(1), "t1", 1000, 0)
		s.BeforeSet = func(string) {
			s.BeforeSet = nil
			mustPut(t, b, userKey(2), "t2", 1000, 0)
		}
		if err := a.Delete(userKey(1)); err != nil {
			t.Fatal(err)
		}
		mustMiss(t, a, userKey(1), 0)
		mustHit(t, a, userKey(2), 0, "t2")
	})
}

func TestNamespacesAndSlots(t *testing.T) {
	s := cachetest.NewEnvoyStore()
	c1, c2 := cache.New(s, "txf2:aaaaaaaa", 8), cache.New(s, "txf2:bbbbbbbb", 8)
	mustPut(t, c1, userKey(1), "t1", 1000, 0)
	mustMiss(t, c2, userKey(1), 0)
	for _, key := range s.Keys() {
		if !strings.HasPrefix(key, "txf2:aaaaaaaa:s:") {
			t.Errorf("unexpected key %q", key)
		}
	}
	k := userKey(1)
	want := "txf2:aaaaaaaa:s:" + strconv.Itoa(int(binary.BigEndian.Uint32(k[0:4])%8))
	if got := c1.SlotKey(k); got != want {
		t.Errorf("SlotKey = %q, want %q", got, want)
	}
	if got := c1.ServiceTokenKey(); got != "txf2:aaaaaaaa:sa" {
		t.Errorf("ServiceTokenKey = %q", got)
	}
	z := cache.New(s, "z", 0) // 0 slots counts as 1
	if z.Slots() != 1 || z.SlotKey(k) != "z:s:0" {
		t.Errorf("slots 0: %d, %q", z.Slots(), z.SlotKey(k))
	}
	mustPut(t, z, k, "tz", 1000, 0)
	mustHit(t, z, k, 0, "tz")
}

func TestServiceToken(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 4)
		if _, ok := c.ServiceToken(0); ok {
			t.Fatal("hit on an empty store")
		}
		put := func(tok string, exp, refresh int64) {
			t.Helper()
			if err := c.PutServiceToken(cache.ServiceToken{Token: tok, ExpiresAtMs: exp, RefreshAtMs: refresh}); err != nil {
				t.Fatal(err)
			}
		}
		want := func(now int64, tok string) {
			t.Helper()
			got, ok := c.ServiceToken(now)
			if tok == "" {
				if ok {
					t.Fatalf("ServiceToken(%d) = %+v, want none", now, got)
				}
				return
			}
			if !ok || got.Token != tok {
				t.Fatalf("ServiceToken(%d) = %+v, %v; want %q", now, got, ok, tok)
			}
		}
		put("T1", 1000, 800)
		got, _ := c.ServiceToken(500)
		if got != (cache.ServiceToken{Token: "T1", ExpiresAtMs: 1000, RefreshAtMs: 800}) {
			t.Fatalf("ServiceToken = %+v", got)
		}
		want(999, "T1")
		want(1000, "")
		put("T0", 900, 700) // older: does not replace
		want(0, "T1")
		put("T1", 1000, 800) // identical: no write
		put("T2", 2000, 1800)
		want(0, "T2")
		if removed, err := c.DropServiceToken("T1", 0, 0); err != nil || removed { // an old token's 401
			t.Fatal(err)
		}
		want(0, "T2")
		if removed, err := c.DropServiceToken("T2", 0, 0); err != nil || !removed {
			t.Fatal(err)
		}
		want(0, "")
		want(math.MinInt64, "")
		s.ResetCounters()
		if removed, err := c.DropServiceToken("T2", 0, 0); err != nil || removed { // already dropped
			t.Fatal(err)
		}
		if s.Sets() != 0 {
			t.Fatal("second drop wrote")
		}
		put("T2", 2000, 1800) // an IdP may hand out the same token again: accepted
		want(0, "T2")
		put("T3", 3000, 2800)
		want(0, "T3")
		for _, bad := range []string{"", token(1, cache.MaxTokenBytes+1)} {
			if err := c.PutServiceToken(cache.ServiceToken{Token: bad, ExpiresAtMs: 9000}); !errors.Is(err, cache.ErrNotCacheable) {
				t.Fatalf("PutServiceToken(len %d) = %v, want ErrNotCacheable", len(bad), err)
			}
		}
		want(0, "T3")
	})
}

func TestServiceTokenCorrupt(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		c := cache.New(s, ns, 4)
		v := cache.EncodeService(cache.ServiceToken{Token: "secret", ExpiresAtMs: math.MaxInt64})
		bad := map[string][]byte{
			"truncated":   v[:len(v)-1],
			"header only": v[:19],
			"short":       v[:10],
			"trailing":    append(append([]byte(nil), v...), 0),
			"version 1":   append([]byte{1}, v[1:]...),
			"slot value":  validSlot(userKey(1), "secret"),
			"length 0":    append(append([]byte(nil), v[:17]...), 0, 0),
			"oversize": cache.EncodeService(cache.ServiceToken{
				Token: token(1, cache.MaxTokenBytes+1), ExpiresAtMs: math.MaxInt64}),
		}
		for name, b := range bad {
			s.Raw(c.ServiceTokenKey(), b)
			if got, ok := c.ServiceToken(0); ok {
				t.Fatalf("%s: ServiceToken = %+v", name, got)
			}
			if _, err := c.DropServiceToken("secret", 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := c.PutServiceToken(cache.ServiceToken{Token: "fresh", ExpiresAtMs: 1000}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got, ok := c.ServiceToken(0); !ok || got.Token != "fresh" {
				t.Fatalf("%s: after Put, ServiceToken = %+v, %v", name, got, ok)
			}
		}
	})
}

func TestServiceTokenRace(t *testing.T) {
	forEachStore(t, func(t *testing.T, s *cachetest.Store) {
		a, b := cache.New(s, ns, 4), cache.New(s, ns, 4)
		// Both create the record; b's is fresher and lands between a's Get and Set.
		s.BeforeSet = func(string) {
			s.BeforeSet = nil
			if err := b.PutServiceToken(cache.ServiceToken{Token: "B", ExpiresAtMs: 2000}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.PutServiceToken(cache.ServiceToken{Token: "A", ExpiresAtMs: 1000}); err != nil {
			t.Fatal(err)
		}
		if got, _ := a.ServiceToken(0); got.Token != "B" {
			t.Fatalf("fresher token lost: %+v", got)
		}
		// Now the other order: an older token lands first; the fresher one wins on retry.
		s.BeforeSet = func(string) {
			s.BeforeSet = nil
			if err := b.PutServiceToken(cache.ServiceToken{Token: "C", ExpiresAtMs: 2500}); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.PutServiceToken(cache.ServiceToken{Token: "D", ExpiresAtMs: 3000}); err != nil {
			t.Fatal(err)
		}
		if got, _ := a.ServiceToken(0); got.Token != "D" {
			t.Fatalf("got %+v, want D", got)
		}
	})
}

func TestSharedBytesBoundValue(t *testing.T) {
	// 1024 × (32906 + 13 + 3) + (10×1 + 90×2 + 900×3 + 24×4) + 8219 + 13 + 3 + …, the waker list
	// 64 × (16 + 8): each record carries its VM's last heartbeat; the new-key bucket 17 + 13 + 2;
	// the generation word 8 + 13 + 2
	if got, want := cache.SharedBytesBound(1024, len(ns)), 33725071; got != want {
		t.Fatalf("SharedBytesBound(1024, %d) = %d, want %d", len(ns), got, want)
	}
	if cache.SharedBytesBound(0, 1) != cache.SharedBytesBound(1, 1) {
		t.Fatal("0 slots should count as 1")
	}
}

// The bound is exact: every slot full of maximal tokens plus a maximal service token reaches it.
func TestSharedBytesBoundTight(t *testing.T) {
	const slots = 105 // index digits 1, 2 and 3
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, slots)
	perSlot := make([]int, slots)
	filled := 0
	for i := 0; filled < slots; i++ {
		k := userKey(i)
		idx := c.SlotIndex(k)
		if perSlot[idx] == cache.EntriesPerSlot {
			continue
		}
		mustPut(t, c, k, token(i, cache.MaxTokenBytes), math.MaxInt64, 0)
		if perSlot[idx]++; perSlot[idx] == cache.EntriesPerSlot {
			filled++
		}
	}
	if err := c.PutServiceToken(cache.ServiceToken{Token: token(0, cache.MaxTokenBytes), ExpiresAtMs: 1}); err != nil {
		t.Fatal(err)
	}
	if won, _, err := c.TryServiceLease("0123456789abcdef", 1000, 0); !won || err != nil {
		t.Fatal(won, err)
	}
	for i := 0; i < cache.MaxWakers+3; i++ { // the waker list is full and stays full
		if err := c.RegisterWaker(fmt.Sprintf("%016x", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.TakeNewKey(1, 1, 0)
	if err := c.BumpGeneration(); err != nil {
		t.Fatal(err)
	}
	// Tight to the byte but for the service lease's marker, whose length the bound caps at
	// MaxMarkerBytes while a real one is shorter.
	got, want := s.Bytes(), cache.SharedBytesBound(slots, len(ns))
	if got > want || want-got >= cache.MaxMarkerBytes {
		t.Fatalf("full cache holds %d bytes, bound %d", got, want)
	}
}

func TestSharedBytesBoundHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 puts")
	}
	const slots, n = 256, 100_000
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, slots)
	base := strings.Repeat("t", 1024)
	for i := 0; i < n; i++ {
		id := strconv.Itoa(i)
		tok := id + base[len(id):]
		if err := c.Put(cache.KeyFor("user-"+id, "aud", "scope"), tok, int64(1_000_000+i), int64(i/10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PutServiceToken(cache.ServiceToken{Token: base, ExpiresAtMs: 1}); err != nil {
		t.Fatal(err)
	}
	bound := cache.SharedBytesBound(slots, len(ns))
	if s.Bytes() > bound || s.Len() > slots+1 {
		t.Fatalf("%d bytes in %d keys, bound %d bytes in %d keys", s.Bytes(), s.Len(), bound, slots+1)
	}
	t.Logf("%d bytes in %d keys (bound %d for %d-byte tokens)", s.Bytes(), s.Len(), bound, cache.MaxTokenBytes)
	// The most recent keys are still there.
	id := strconv.Itoa(n - 1)
	mustHit(t, c, cache.KeyFor("user-"+id, "aud", "scope"), 0, id+base[len(id):])
}
