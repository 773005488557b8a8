package compat

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The patch applies to the toolchain make test runs with, and says so in every file it writes.
func TestOverlayAppliesToTheInstalledToolchain(t *testing.T) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path, err := Overlay(strings.TrimSpace(string(goroot)), dir)
	if err != nil {
		t.Fatal(err)
	}
	var ov struct{ Replace map[string]string }
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &ov); err != nil || len(ov.Replace) != 2 {
		t.Fatalf("overlay %s: %v %v", b, err, ov.Replace)
	}
	for src, dst := range ov.Replace {
		text, err := os.ReadFile(dst)
		if err != nil || !strings.Contains(string(text), "token-exchange-filter compat") {
			t.Errorf("%s → %s: not patched (%v)", src, dst, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "os_wasip1.go")); err != nil {
		t.Error(err)
	}
}

// A toolchain whose runtime changed fails with one clear line.
func TestOverlayRefusesAChangedRuntime(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"os_wasip1.go", "netpoll_wasip1.go"} {
		p := filepath.Join(root, "src", "runtime", f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("package runtime\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Overlay(root, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "does not hold the text the patch replaces") {
		t.Fatalf("err = %v", err)
	}
}
