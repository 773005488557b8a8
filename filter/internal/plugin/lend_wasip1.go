//go:build wasip1

package plugin

import "unsafe"

// malloc is the allocator Envoy calls to place a returned value in the module.
//
//go:wasmexport malloc
func malloc(size uint32) unsafe.Pointer {
	n := max(int(size), 1)
	if lent.next {
		lent.next = false
		if p := lend(n); p != nil {
			return p
		}
	}
	return unsafe.Pointer(unsafe.SliceData(make([]byte, n)))
}
