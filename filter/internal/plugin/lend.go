package plugin

import "unsafe"

// Lending: the values a memo hit reads are written into scratch memory this VM reuses, not into
// a fresh heap allocation each.
//
// A host call that returns a value (a header, shared data) has the host ask the module for room
// and copy the value there. Envoy asks an export named malloc, and proxy_on_memory_allocate only
// when there is none (proxy-wasm-cpp-host src/wasm.cc, WasmBase::getFunctions: _GET(malloc),
// then _GET_ALIAS(malloc, proxy_on_memory_allocate)); the SDK's proxy_on_memory_allocate makes a
// new slice per value. A hit reads :path, the 1.5 KB user token and the generation word: three
// heap allocations and, every few requests, a span refill and a GC cycle. The calls in
// hostcalls_wasip1.go instead set lent.next just before the host call when a header callback is
// running (between borrowLent and returnLent), and malloc (lend_wasip1.go) answers from the
// scratch buffer; a value so read is valid until the callback returns, when returnLent wipes the
// scratch (no token bytes stay in it between callbacks) and makes it reusable.
//
// Every other allocation the host asks for (the SDK's calls, a lent call on a host that asks
// proxy_on_memory_allocate instead, a value larger than the scratch) is a plain heap allocation,
// as the SDK's own: lending only ever shortens a value's life, never lengthens it.

// maxLent bounds the scratch buffer: a value that does not fit is allocated on the heap (a user
// token is at most 16 KiB; a header value may be much larger).
const maxLent = 32 << 10

// minLent is the scratch's first size: a Keycloak access token with :path and the generation word.
const minLent = 4 << 10

var lent struct {
	depth int    // header callbacks running (a host could nest one in another)
	next  bool   // the next allocation the host asks for is lent
	buf   []byte // the scratch
	used  int    // bytes of buf lent since the last returnLent
	want  int    // the size buf should have to have lent what was asked since then
}

// lend returns n bytes of the scratch, 8-byte aligned, or nil when they do not fit.
func lend(n int) unsafe.Pointer {
	start := (lent.used + 7) &^ 7
	if start+n > len(lent.buf) {
		lent.want = min(max(lent.want, start+n), maxLent)
		return nil
	}
	lent.used = start + n
	return unsafe.Pointer(&lent.buf[start])
}

// borrowLent starts a callback that reads lent values; returnLent ends it.
func borrowLent() { lent.depth++ }

// returnLent ends the lifetime of every lent value when the outermost callback that reads lent
// values returns (Envoy runs a local reply's response callback after the request callback, not
// inside it — context.cc sendLocalResponse, addAfterVmCallAction — but a host that nested them
// must not wipe what the outer callback still reads). The scratch is wiped (a token read into it
// must not outlive the callback in memory that a later read may hand out half-overwritten) and
// grown, bounded, if a value did not fit.
func returnLent() {
	if lent.depth > 0 {
		lent.depth--
	}
	if lent.depth > 0 {
		return
	}
	lent.next = false
	clear(lent.buf[:lent.used])
	lent.used = 0
	if lent.want > len(lent.buf) {
		lent.buf = make([]byte, max(lent.want, minLent))
	}
}
