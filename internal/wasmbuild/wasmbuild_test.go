package wasmbuild

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// The pinned build is reproducible: a fresh build is byte for byte the module make build made
// (or, without one, a second fresh build), so the OCI digests are the same on every machine.
func TestBuildIsReproducible(t *testing.T) {
	first, err := Module()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Fatalf("two builds differ: %d and %d bytes", len(first), len(again))
	}
}

// The Makefile and the tests build with the same toolchain.
func TestToolchainPinnedOnce(t *testing.T) {
	mk, err := os.ReadFile(filepath.Join(RepoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^WASM_TOOLCHAIN \?= (\S+)$`).FindSubmatch(mk)
	if m == nil || string(m[1]) != Toolchain {
		t.Fatalf("Makefile WASM_TOOLCHAIN %q, wasmbuild.Toolchain %q", m, Toolchain)
	}
}
