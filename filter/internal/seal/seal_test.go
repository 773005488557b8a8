package seal

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	s := New("the-secret", "txf2:abcd", rand.Uint64)
	blob := s.Seal("eyJ.token.sig", []byte("key-of-alice"), 12345)
	if strings.Contains(blob, "eyJ.token.sig") {
		t.Fatal("the token is readable in shared data")
	}
	tok, until, ok := s.Open(blob, []byte("key-of-alice"))
	if !ok || tok != "eyJ.token.sig" || until != 12345 {
		t.Fatalf("open: %q %d %v", tok, until, ok)
	}
	if s.Seal("eyJ.token.sig", []byte("key-of-alice"), 12345) == blob {
		t.Error("two seals of one token are equal: the nonce repeats")
	}
	// Moved to another user's key, tampered with, or sealed under another secret: refused.
	if _, _, ok := s.Open(blob, []byte("key-of-bob")); ok {
		t.Error("an entry opened under another key")
	}
	b := []byte(blob)
	b[len(b)-1] ^= 1
	if _, _, ok := s.Open(string(b), []byte("key-of-alice")); ok {
		t.Error("a tampered entry opened")
	}
	other := New("another-secret", "txf2:abcd", rand.Uint64)
	if _, _, ok := other.Open(blob, []byte("key-of-alice")); ok {
		t.Error("a configuration with another secret opened our entry")
	}
	forged := other.Seal("planted", []byte("key-of-alice"), 1<<62)
	if _, _, ok := s.Open(forged, []byte("key-of-alice")); ok {
		t.Error("a neighbour's planted token opened")
	}
	for _, junk := range []string{"", "x", "!Lowner:1", strings.Repeat("\x01", Overhead)} {
		if _, _, ok := s.Open(junk, []byte("k")); ok {
			t.Errorf("%q opened", junk)
		}
	}
}

func FuzzOpen(f *testing.F) {
	s := New("k", "ns", rand.Uint64)
	f.Add(s.Seal("t", []byte("b"), 1))
	f.Add("\x01")
	f.Fuzz(func(t *testing.T, blob string) {
		s.Open(blob, []byte("b")) // must never panic
	})
}
