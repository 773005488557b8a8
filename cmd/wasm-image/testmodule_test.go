package main

import (
	"bytes"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"os"
	"path/filepath"
	"testing"
)

// fakeModule returns a small structurally valid WebAssembly module: the header ("\0asm",
// version 1) and one custom section named "fake" holding n deterministic pseudo-random bytes.
func fakeModule(n int) []byte {
	b := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	payload := append([]byte{4, 'f', 'a', 'k', 'e'}, make([]byte, n)...)
	x := uint32(2463534242)
	for i := 5; i < len(payload); i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		payload[i] = byte(x)
	}
	b = append(b, 0) // custom section id
	for size := uint32(len(payload)); ; {
		c := byte(size & 0x7f)
		size >>= 7
		if size == 0 {
			b = append(b, c)
			break
		}
		b = append(b, c|0x80)
	}
	return append(b, payload...)
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha256Hex(b []byte) string {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h.Hex
}
