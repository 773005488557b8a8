// Package wasmbuild gives tests the compiled filter module: the file named by
// $TOKEN_EXCHANGE_WASM (what `make test` builds), or a fresh build of ./filter into a temporary
// directory, so that `go test ./...` alone never tests a stale module.
package wasmbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/kagenti/token-exchange-filter/internal/compat"
	"github.com/kagenti/token-exchange-filter/internal/wasmstrip"
)

// EnvVar names the variable `make test` sets to build/plugin.wasm.
const EnvVar = "TOKEN_EXCHANGE_WASM"

// Toolchain is the Go toolchain the module is built with (the Makefile's WASM_TOOLCHAIN; a test
// keeps them equal).
const Toolchain = "go1.26.8"

// Module returns the compiled filter, building it at most once per process.
var Module = sync.OnceValues(func() ([]byte, error) {
	if p := os.Getenv(EnvVar); p != "" {
		return os.ReadFile(p)
	}
	return Build()
})

// EmulatorModule is the filter built for the SDK's emulator (its wazero runner): with the
// sdkemulator tag, which works Envoy's header-map byte size out from the header pairs, because
// that runner exports no proxy_get_header_map_size. Everything else is make build's module.
var EmulatorModule = sync.OnceValues(func() ([]byte, error) {
	return BuildWith(Options{Compat: true, Tags: []string{"sdkemulator"}})
})

// Build compiles the filter as make build does: the pinned toolchain, the runtime patch for
// older Envoys (internal/compat), then the body and trailer exports dropped (internal/wasmstrip).
func Build() ([]byte, error) { return BuildWith(Options{Compat: true}) }

// Options vary a build for tests that compare variants.
type Options struct {
	// Compat applies the runtime patch for Envoys before proxy-wasm-cpp-host 94091cd
	// (make build's default; COMPAT=0 is false).
	Compat bool
	// Tags are extra build tags (e.g. the filter's netpollprobe).
	Tags []string
}

// BuildWith compiles the filter like Build, with the given variations.
func BuildWith(o Options) ([]byte, error) {
	dir, err := os.MkdirTemp("", "token-exchange-wasm")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	env := append(os.Environ(), "GOTOOLCHAIN="+Toolchain)
	args := []string{"build", "-buildmode=c-shared", "-trimpath"}
	if o.Compat {
		gorootCmd := exec.Command("go", "env", "GOROOT")
		gorootCmd.Env = env
		goroot, err := gorootCmd.Output()
		if err != nil {
			return nil, err
		}
		overlay, err := compat.Overlay(strings.TrimSpace(string(goroot)), filepath.Join(dir, "compat"))
		if err != nil {
			return nil, err
		}
		args = append(args, "-overlay", overlay)
	}
	if len(o.Tags) > 0 {
		args = append(args, "-tags", strings.Join(o.Tags, ","))
	}
	out := filepath.Join(dir, "plugin.wasm")
	cmd := exec.Command("go", append(args, "-o", out, "./filter")...)
	cmd.Dir = RepoRoot()
	cmd.Env = append(env, "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the wasm module: %v\n%s", err, b)
	}
	mod, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	return wasmstrip.Strip(mod, wasmstrip.BodyAndTrailerCallbacks)
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..")
}
