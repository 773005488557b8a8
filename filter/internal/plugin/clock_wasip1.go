//go:build wasip1

package plugin

// clockTimeGet is WASI's clock_time_get, imported directly: Go's own monotonic readings are
// relative to each VM's runtime start, so they differ between workers, while the raw clock is
// Envoy's process-wide monotonic time (proxy-wasm-cpp-host src/exports.cc,
// wasi_unstable_clock_time_get: clock 1 is getMonotonicTimeNanoseconds, the dispatcher's
// steady clock, the same on every thread).
//
//go:wasmimport wasi_snapshot_preview1 clock_time_get
func clockTimeGet(id uint32, precision uint64, out *uint64) uint32

const clockMonotonic = 1

// clockOut receives the reading: a package variable, because the address of a local would make
// it escape to the heap on every call (the VM runs one call at a time).
var clockOut uint64

// monotonicMs is Envoy's monotonic clock in milliseconds, or 0 if the host refuses it.
func monotonicMs() int64 {
	if clockTimeGet(clockMonotonic, 1, &clockOut) != 0 {
		return 0
	}
	return int64(clockOut / 1e6)
}
