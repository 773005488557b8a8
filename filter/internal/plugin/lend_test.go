package plugin

import (
	"strings"
	"testing"
	"unsafe"
)

// The scratch lends what fits, aligned and without overlap; what does not fit goes to the heap
// and the scratch grows for next time, never past maxLent; returnLent wipes what was lent.
func TestLentScratch(t *testing.T) {
	t.Cleanup(func() { lent.buf, lent.used, lent.want, lent.next = nil, 0, 0, false })
	lent.buf, lent.used, lent.want = nil, 0, 0

	if lend(100) != nil {
		t.Fatal("an empty scratch lent memory")
	}
	returnLent()
	if len(lent.buf) != minLent {
		t.Fatalf("after a miss the scratch is %d bytes, want %d", len(lent.buf), minLent)
	}

	a, b := lend(13), lend(1500)
	if a == nil || b == nil {
		t.Fatal("the scratch did not lend what fits")
	}
	if uintptr(b)%8 != 0 || uintptr(b)-uintptr(a) < 13 {
		t.Fatalf("lent regions %p and %p overlap or are unaligned", a, b)
	}
	token := unsafe.Slice((*byte)(b), 1500)
	copy(token, strings.Repeat("t", 1500))
	if lend(minLent) != nil {
		t.Fatal("the scratch lent more than it holds")
	}
	returnLent()
	if strings.Contains(string(lent.buf), "t") {
		t.Fatal("returnLent left a lent value in the scratch")
	}
	if len(lent.buf) <= minLent {
		t.Fatalf("the scratch did not grow after a value did not fit (%d bytes)", len(lent.buf))
	}

	lend(1 << 20)
	returnLent()
	if len(lent.buf) > maxLent {
		t.Fatalf("the scratch grew to %d bytes, past maxLent", len(lent.buf))
	}
}

// A callback nested in another (no Envoy does this: a local reply's response callback runs after
// the request callback returns) must not wipe what the outer one still reads.
func TestLentValuesLiveUntilTheOutermostCallbackReturns(t *testing.T) {
	t.Cleanup(func() { lent.buf, lent.used, lent.want, lent.next, lent.depth = nil, 0, 0, false, 0 })
	lent.buf, lent.used, lent.want, lent.depth = make([]byte, minLent), 0, 0, 0

	borrowLent() // the request callback
	p := lend(5)
	copy(unsafe.Slice((*byte)(p), 5), "token")
	borrowLent() // a nested response callback
	returnLent()
	if got := string(unsafe.Slice((*byte)(p), 5)); got != "token" {
		t.Fatalf("a nested callback's return wiped the outer callback's value (%q)", got)
	}
	returnLent()
	if got := string(unsafe.Slice((*byte)(p), 5)); got == "token" {
		t.Fatal("the outermost callback's return left its lent value in the scratch")
	}
	if lent.depth != 0 || lent.used != 0 {
		t.Fatalf("after the outermost return: depth %d, %d bytes lent", lent.depth, lent.used)
	}
}

// A stream's state is its one allocation, made for every request: in a wasm VM the clearing and
// marking of an allocation cost by its size (a 200-byte state made creating a stream 1.5–2 µs
// dearer in wazero, per e2e/bench). What only a request past a memo hit needs is allocated then
// (coord.beyondHit). Measured on the test's own architecture: wasm's pointers and ints are 8 bytes
// too, so the size is the same.
func TestStreamStateStaysSmall(t *testing.T) {
	if n := unsafe.Sizeof(httpContext{}); n > 64 {
		t.Fatalf("httpContext is %d bytes, want at most 64: move what a memo hit does not need into coord.beyondHit", n)
	}
}
