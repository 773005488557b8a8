package cache_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

const benchTokenBytes = 1200 // a typical Keycloak access token

// BenchmarkGetHit: a hit on the last of 4 entries. "envoy" includes the fake store copying the
// value out, as the SDK's GetSharedData does; "nocopy" (the emulator's semantics) shows the
// cache's own cost.
func BenchmarkGetHit(b *testing.B) {
	for _, mode := range []string{"envoy", "nocopy"} {
		b.Run(mode, func(b *testing.B) {
			s := cachetest.NewEnvoyStore()
			s.Proxytest = mode == "nocopy"
			c := cache.New(s, ns, 1)
			for i := 0; i < cache.EntriesPerSlot; i++ {
				if err := c.Put(userKey(i), token(i, benchTokenBytes), 1<<40, 0); err != nil {
					b.Fatal(err)
				}
			}
			k := userKey(cache.EntriesPerSlot - 1)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, ok := c.Get(k, 1); !ok {
					b.Fatal("miss")
				}
			}
		})
	}
}

// BenchmarkPutMiss: storing a fresh exchange result into a 1024-slot cache under load (slots
// mostly full, some entries replaced, some evicted).
func BenchmarkPutMiss(b *testing.B) {
	s := cachetest.NewEnvoyStore()
	c := cache.New(s, ns, 1024)
	keys := make([]cache.Key, 8192)
	for i := range keys {
		keys[i] = userKey(i)
	}
	tok := token(0, benchTokenBytes)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := c.Put(keys[i%len(keys)], tok, int64(1_000_000+i), int64(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkKeyFor(b *testing.B) {
	user := strings.Repeat("u", benchTokenBytes)
	b.ReportAllocs()
	for b.Loop() {
		_ = cache.KeyFor(user, "kagenti-api", "openid")
	}
}

func BenchmarkSlotKey(b *testing.B) {
	c := cache.New(cachetest.NewEnvoyStore(), ns, 1024)
	k := cache.KeyFor("u", "a", strconv.Itoa(7))
	b.ReportAllocs()
	for b.Loop() {
		_ = c.SlotKey(k)
	}
}
