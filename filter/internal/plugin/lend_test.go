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
