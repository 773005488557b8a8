package cache_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

// keyWithID returns a key whose stored id is id (the slot bits are irrelevant with one slot).
func keyWithID(id [16]byte) cache.Key {
	var k cache.Key
	copy(k[8:24], id[:])
	return k
}

func FuzzDecodeSlot(f *testing.F) {
	k1, k2 := userKey(1), userKey(2)
	f.Add([]byte{})
	f.Add([]byte{1, 0})
	f.Add(validSlot(k1, "secret"))
	f.Add(cache.EncodeSlot([]cache.TestEntry{
		{ID: k1.ID(), ExpiresAtMs: 10, Token: []byte("a")},
		{ID: k2.ID(), ExpiresAtMs: math.MinInt64, Token: []byte("bb")},
		{ID: userKey(3).ID(), ExpiresAtMs: math.MaxInt64, Token: []byte("ccc")},
		{ID: userKey(4).ID(), ExpiresAtMs: -1, Token: []byte("dddd")},
	}))
	for _, v := range corruptSlots(k1) {
		f.Add(v)
	}
	f.Add(cache.EncodeSlot([]cache.TestEntry{
		{ID: k1.ID(), ExpiresAtMs: 10, Token: []byte("!Lworker:2")},
		{ID: k2.ID(), ExpiresAtMs: 10, Token: []byte("!F502:x")},
		{ID: userKey(3).ID(), ExpiresAtMs: 10, Token: []byte("!")},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, ok := cache.DecodeSlot(data)
		if ok {
			if got := cache.EncodeSlot(es); !bytes.Equal(got, data) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, data)
			}
		}
		s := cachetest.NewEnvoyStore()
		c := cache.New(s, ns, 1)
		key := c.SlotKey(cache.Key{})
		s.Raw(key, data)

		// Probe every decoded id, and the id where a first entry would sit.
		var probes [][16]byte
		for _, e := range es {
			probes = append(probes, e.ID)
		}
		if len(data) >= 18 {
			probes = append(probes, [16]byte(data[2:18]))
		}
		probes = append(probes, [16]byte{})
		for _, id := range probes {
			tok, hit := c.Get(keyWithID(id), math.MinInt64)
			var want *cache.TestEntry
			for i := range es {
				if es[i].ID == id {
					want = &es[i]
				}
			}
			switch {
			case hit && !ok:
				t.Fatalf("Get returned a token from a value that does not decode: %x", data)
			case hit && (want == nil || tok != string(want.Token) || want.ExpiresAtMs == math.MinInt64):
				t.Fatalf("Get returned %q for id %x, not its well-formed live entry", tok, id)
			case hit && want.Token[0] == '!':
				t.Fatalf("Get returned a lease or failure marker as a token: %q", tok)
			case !hit && want != nil && want.ExpiresAtMs != math.MinInt64 && want.Token[0] != '!':
				t.Fatalf("Get missed the live entry for id %x", id)
			}
			// Look and a lease claim never fail on what another version or a bug left there.
			l := c.Look(keyWithID(id), 0)
			if l.State == cache.Hit && (want == nil || l.Token != string(want.Token)) {
				t.Fatalf("Look returned a token that is not the entry's")
			}
		}
		if !bytes.Equal(mustValue(t, s, key), data) {
			t.Fatal("Get modified the stored value")
		}

		// Put always leaves a well-formed slot holding the new entry and nothing that was not a
		// live, well-formed entry before.
		nk := keyWithID([16]byte{0xff, 0xfe, 0xfd})
		if err := c.Put(nk, "fresh", math.MaxInt64, 0); err != nil {
			t.Fatal(err)
		}
		after, ok2 := cache.DecodeSlot(mustValue(t, s, key))
		if !ok2 {
			t.Fatal("slot does not decode after Put")
		}
		found := false
		for _, e := range after {
			if e.ID == nk.ID() {
				found = string(e.Token) == "fresh"
				continue
			}
			kept := false
			for _, o := range es {
				kept = kept || (o.ID == e.ID && o.ExpiresAtMs == e.ExpiresAtMs && bytes.Equal(o.Token, e.Token) && o.ExpiresAtMs > 0)
			}
			if !kept {
				t.Fatalf("Put kept an entry that was not a live entry before: %+v", e)
			}
		}
		if !found {
			t.Fatal("new entry missing after Put")
		}
	})
}

func mustValue(t *testing.T, s *cachetest.Store, key string) []byte {
	t.Helper()
	v, ok := s.Value(key)
	if !ok {
		t.Fatalf("%s missing", key)
	}
	return v
}

func FuzzDecodeServiceToken(f *testing.F) {
	v := cache.EncodeService(cache.ServiceToken{Token: "secret", ExpiresAtMs: 1000, RefreshAtMs: 800})
	f.Add([]byte{})
	f.Add(v)
	f.Add(v[:len(v)-1])
	f.Add(append(append([]byte(nil), v...), 0))
	f.Add(cache.EncodeService(cache.ServiceToken{Token: "x", ExpiresAtMs: cache.DroppedMs, RefreshAtMs: cache.DroppedMs}))
	f.Add(validSlot(userKey(1), "secret"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, ok := cache.DecodeService(data)
		if ok {
			if got := cache.EncodeService(rec); !bytes.Equal(got, data) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, data)
			}
			if l := int(binary.BigEndian.Uint16(data[25:27])); l == 0 || l > cache.MaxTokenBytes {
				t.Fatalf("accepted token length %d", l)
			}
		}
		s := cachetest.NewEnvoyStore()
		c := cache.New(s, ns, 1)
		s.Raw(c.ServiceTokenKey(), data)
		got, hit := c.ServiceToken(math.MinInt64)
		switch {
		case hit && (!ok || got != rec):
			t.Fatalf("ServiceToken = %+v from a value that decodes to %+v, %v", got, rec, ok)
		case !hit && ok && rec.ExpiresAtMs != math.MinInt64:
			t.Fatalf("ServiceToken missed %+v", rec)
		}
		if ok {
			if _, err := c.DropServiceToken(rec.Token, 0, 0); err != nil {
				t.Fatal(err)
			}
			if _, hit := c.ServiceToken(math.MinInt64); hit {
				t.Fatal("still served after drop")
			}
		}
		if err := c.PutServiceToken(cache.ServiceToken{Token: "fresh", ExpiresAtMs: math.MaxInt64}); err != nil {
			t.Fatal(err)
		}
		if got, hit := c.ServiceToken(0); !hit || got.Token != "fresh" {
			if !(ok && rec.ExpiresAtMs == math.MaxInt64) { // an equally fresh record may stay
				t.Fatalf("after Put: %+v, %v", got, hit)
			}
		}
	})
}
