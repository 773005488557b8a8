package cachetest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

func TestEnvoySemantics(t *testing.T) {
	s := NewEnvoyStore()
	if _, _, err := s.Get("k"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get missing = %v", err)
	}
	if err := s.Set("k", []byte("a"), 777); err != nil { // cas ignored on a new key
		t.Fatal(err)
	}
	v, c1, err := s.Get("k")
	if err != nil || string(v) != "a" || c1 == 0 {
		t.Fatalf("Get = %q, %d, %v", v, c1, err)
	}
	v[0] = 'x' // a copy: the store is unaffected
	if err := s.Set("k", []byte("b"), c1+100); !errors.Is(err, cache.ErrCasMismatch) {
		t.Fatalf("stale cas = %v", err)
	}
	if err := s.Set("k", []byte("b"), c1); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("k", []byte("c"), 0); err != nil { // unconditional
		t.Fatal(err)
	}
	if err := s.Set("k", []byte("d"), c1); !errors.Is(err, cache.ErrCasMismatch) {
		t.Fatalf("old cas = %v", err)
	}
	if err := s.Set("e", nil, 0); err != nil {
		t.Fatal(err)
	}
	if v, _, err := s.Get("e"); err != nil || len(v) != 0 {
		t.Fatalf("empty value = %q, %v (Envoy returns it)", v, err)
	}
	if got := s.Bytes(); got != len("k")+len("c")+len("e") {
		t.Fatalf("Bytes = %d", got)
	}
	if s.Gets() != 3 || s.Sets() != 6 || s.Mismatches() != 2 || s.Len() != 2 {
		t.Fatalf("counters: %d gets, %d sets, %d mismatches, %d keys", s.Gets(), s.Sets(), s.Mismatches(), s.Len())
	}
	// The counter skips 0 when it wraps.
	s.SetNextCas(^uint32(0))
	_ = s.Set("w", []byte("1"), 0)
	_ = s.Set("w", []byte("2"), 0)
	if s.Cas("w") != 1 {
		t.Fatalf("cas after wrap = %d, want 1", s.Cas("w"))
	}
}

func TestProxytestSemantics(t *testing.T) {
	s := NewProxytestStore()
	if err := s.Set("k", []byte("a"), 5); err != nil {
		t.Fatal(err)
	}
	if _, c, _ := s.Get("k"); c != 6 {
		t.Fatalf("cas after creation with 5 = %d, want 6", c)
	}
	if err := s.Set("k", []byte("b"), 0); !errors.Is(err, cache.ErrCasMismatch) {
		t.Fatalf("cas 0 on an existing key = %v, want mismatch", err)
	}
	if err := s.Set("k", []byte("b"), 6); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("e", []byte{}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get("e"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("empty value = %v, want ErrNotFound", err)
	}
}

func TestHooks(t *testing.T) {
	s := NewEnvoyStore()
	var order []string
	s.BeforeSet = func(key string) {
		order = append(order, "before "+key)
		_ = s.Set("other", []byte("x"), 0) // no recursion
	}
	s.AfterSet = func(key string) { order = append(order, "after "+key) }
	if err := s.Set("k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if len(order) != 2 || order[0] != "before k" || order[1] != "after k" {
		t.Fatalf("hook order %q", order)
	}
	if v, ok := s.Value("other"); !ok || !bytes.Equal(v, []byte("x")) {
		t.Fatal("hook's write missing")
	}
	if keys := s.Keys(); len(keys) != 2 || keys[0] != "k" || keys[1] != "other" {
		t.Fatalf("Keys = %q", keys)
	}
}
