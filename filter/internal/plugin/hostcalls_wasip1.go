//go:build wasip1

package plugin

import (
	"unsafe"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// The calls a memo hit makes, imported directly rather than through the SDK: the SDK's wrappers
// take the address of local out-parameters, which makes them escape to the heap, so each call
// allocated once more than it must, and they turn every status into an error value. These write into package variables instead (a VM runs one call at
// a time). The host still allocates each returned value in the module (proxy_on_memory_allocate:
// Envoy's contract, cpp-host src/exports.cc), which is the one allocation left per value.

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize unsafe.Pointer, cas unsafe.Pointer) uint32

// Out-parameters of the calls above.
var (
	outPtr  *byte
	outSize uint32
	outCas  uint32
)

const (
	mapTypeRequestHeaders = 0
	statusOK              = 0
	statusNotFound        = 1
)

// requestHeader is the first value of a request header, as Envoy's get answers it.
func requestHeader(name string) (string, bool) {
	if proxyGetHeaderMapValue(mapTypeRequestHeaders, unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)),
		unsafe.Pointer(&outPtr), unsafe.Pointer(&outSize)) != statusOK {
		return "", false
	}
	p, n := outPtr, outSize
	outPtr = nil // the value is the caller's now; the variable must not keep it alive
	if n == 0 {
		return "", true
	}
	return unsafe.String(p, n), true
}

// sharedData reads key from shared data, as cache.Store.Get answers.
func sharedData(key string) ([]byte, uint32, error) {
	switch proxyGetSharedData(unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)),
		unsafe.Pointer(&outPtr), unsafe.Pointer(&outSize), unsafe.Pointer(&outCas)) {
	case statusOK:
	case statusNotFound:
		return nil, 0, cache.ErrNotFound
	default:
		return nil, 0, errSharedDataRefused
	}
	p, n := outPtr, outSize
	outPtr = nil
	if n == 0 {
		return []byte{}, outCas, nil
	}
	return unsafe.Slice(p, n), outCas, nil
}
