// Package compat makes the Go runtime of the compiled filter safe on Envoys whose
// proxy-wasm-cpp-host predates commit 94091cd (PR #533): there poll_oneoff answers ENOSYS, and
// it is not allowed while the host runs the module's allocator, so the upstream Go runtime
// throws ("poll_oneoff failed", golang/go#78513) or traps ("restricted_callback") the first time
// it sleeps or polls, typically in a garbage collection once any timer has started the
// network poller.
//
// It writes patched copies of two files of the installed toolchain's runtime into a build
// directory, with a `go build -overlay` file that substitutes them; Go's own sources are never
// copied into the repository. Each patch is anchored on the exact text it replaces: a toolchain
// whose files changed fails the build with one line instead of building an unpatched module.
package compat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// patch replaces one exact piece of a runtime file.
type patch struct {
	file, old, new, why string
}

var patches = []patch{
	{
		file: "runtime/os_wasip1.go",
		why: "usleep sleeps through poll_oneoff with a clock subscription and throws when it fails. " +
			"A proxy-wasm VM is single-threaded: while it sleeps nothing else runs, so the spin-wait " +
			"sleeps of the scheduler and the collector gain nothing. Go's js/wasm port has always had " +
			"an empty usleep.",
		old: `func usleep(usec uint32) {
	var in subscription
	var out event
	var nevents size

	eventtype := in.u.eventtype()
	*eventtype = eventtypeClock

	subscription := in.u.subscriptionClock()
	subscription.id = clockMonotonic
	subscription.timeout = timestamp(usec) * 1e3
	subscription.precision = 1e3

	if poll_oneoff(&in, &out, 1, &nevents) != 0 {
		throw("wasi_snapshot_preview1.poll_oneoff")
	}
}`,
		new: `func usleep(usec uint32) {
	// token-exchange-filter compat (internal/compat): no host call. A wasm VM is single-threaded,
	// nothing runs while it sleeps, and older proxy-wasm hosts answer ENOSYS or forbid the call.
}`,
	},
	{
		file: "runtime/netpoll_wasip1.go",
		why: "with no file descriptor to watch only the timeout subscription is left: no event can " +
			"come but the clock's, so the poll is skipped (the scheduler checks its timers again at " +
			"once). This is the netpoll(0) of every start-the-world.",
		old: `	if len(pollsubs) == 0 {
		unlock(&mtx)
		return gList{}, 0
	}
`,
		new: `	if len(pollsubs) == 0 {
		unlock(&mtx)
		return gList{}, 0
	}
	// token-exchange-filter compat (internal/compat): only the timeout is left, nothing can be
	// ready; skip the host call (older proxy-wasm hosts answer ENOSYS or forbid it).
	if len(pollsubs) == 1 && delay >= 0 {
		unlock(&mtx)
		return gList{}, 0
	}
`,
	},
	{
		file: "runtime/netpoll_wasip1.go",
		why: "a host that does not implement poll_oneoff (ENOSYS) or the subscription (ENOTSUP) " +
			"has no events to report: that is not a reason to crash.",
		old: `	errno := poll_oneoff(&pollsubs[0], &evts[0], uint32(len(pollsubs)), &nevents)
	if errno != 0 {`,
		new: `	errno := poll_oneoff(&pollsubs[0], &evts[0], uint32(len(pollsubs)), &nevents)
	if errno == 52 || errno == 58 { // token-exchange-filter compat: ENOSYS, ENOTSUP: no events
		unlock(&mtx)
		return gList{}, 0
	}
	if errno != 0 {`,
	},
}

// Overlay writes the patched files for the toolchain at goroot into dir and returns the path of
// the overlay file for go build -overlay.
func Overlay(goroot, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	patched := map[string]string{}
	for _, p := range patches {
		src := filepath.Join(goroot, "src", filepath.FromSlash(p.file))
		text, ok := patched[src]
		if !ok {
			b, err := os.ReadFile(src)
			if err != nil {
				return "", fmt.Errorf("compat: %v", err)
			}
			text = string(b)
		}
		if strings.Count(text, p.old) != 1 {
			return "", fmt.Errorf("compat: %s of this Go toolchain (%s) does not hold the text the patch replaces; "+
				"build with the pinned toolchain, or with COMPAT=0 for an Envoy ≥ 1.39", p.file, goroot)
		}
		patched[src] = strings.Replace(text, p.old, p.new, 1)
	}
	replace := map[string]string{}
	for src, text := range patched {
		dst := filepath.Join(dir, filepath.Base(src))
		if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
			return "", err
		}
		abs, err := filepath.Abs(dst)
		if err != nil {
			return "", err
		}
		replace[src] = abs
	}
	b, err := json.MarshalIndent(map[string]any{"Replace": replace}, "", "  ")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "overlay.json")
	return out, os.WriteFile(out, b, 0o644)
}
