package host

import (
	"sync"
	"time"
)

// CallKind is one kind of call into the module: an exported function, and whether it ran for a
// root context (start-up, ticks, callout answers, queue wake-ups, the final on_done/on_delete)
// or for a stream's HTTP context (on_context_create, on_request_headers, on_response_headers,
// on_done, on_log, on_delete of a request).
type CallKind struct {
	Export string // e.g. "proxy_on_request_headers"
	Root   bool
}

// CallTime is what the module spent in calls of one kind.
type CallTime struct {
	Calls int64
	Time  time.Duration
}

// moduleTiming accumulates CallTime per CallKind over every VM of a Host.
type moduleTiming struct {
	mu sync.Mutex
	by map[CallKind]CallTime
}

func (t *moduleTiming) add(k CallKind, d time.Duration) {
	t.mu.Lock()
	if t.by == nil {
		t.by = map[CallKind]CallTime{}
	}
	c := t.by[k]
	c.Calls++
	c.Time += d
	t.by[k] = c
	t.mu.Unlock()
}

// ModuleTime returns, per kind of call, how many calls entered the module and the time spent
// inside them, summed over every VM (worker, main-thread, canary and base VMs, reloaded ones
// included) since Start or the last ResetModuleTime. It is for benchmarks: the module's own cost
// per request, as Envoy would spend it on a worker thread.
//
// A call is timed from the export's invocation to its return, on the VM's goroutine: the
// module's code, the host functions it calls (header and shared-data access, logging, as Envoy
// would run them inside the call) and the allocator calls the host makes for it. Not counted:
// the host's work before and after the call (actions deferred until the call returns, such as
// resuming a stream or sending a local reply), waiting in the VM's loop, nested calls (only the
// outermost is timed). It is wall-clock time: with more runnable goroutines than cores it also
// counts time the goroutine was descheduled, so measure with requests sent one at a time.
func (h *Host) ModuleTime() map[CallKind]CallTime {
	h.timing.mu.Lock()
	defer h.timing.mu.Unlock()
	out := make(map[CallKind]CallTime, len(h.timing.by))
	for k, v := range h.timing.by {
		out[k] = v
	}
	return out
}

// ResetModuleTime sets every ModuleTime counter back to zero.
func (h *Host) ResetModuleTime() {
	h.timing.mu.Lock()
	h.timing.by = nil
	h.timing.mu.Unlock()
}

// StreamModuleTime sums ModuleTime over the calls made for streams (HTTP contexts), leaving out
// root-context calls (ticks, callout answers, queue wake-ups).
func (h *Host) StreamModuleTime() CallTime {
	var sum CallTime
	for k, v := range h.ModuleTime() {
		if !k.Root {
			sum.Calls += v.Calls
			sum.Time += v.Time
		}
	}
	return sum
}
