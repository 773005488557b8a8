//go:build wasip1

package plugin

import (
	"strconv"
	"unsafe"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// The calls a memo hit makes, imported directly rather than through the SDK: the SDK's wrappers
// take the address of local out-parameters, which makes them escape to the heap, so each call
// allocated once more than it must, and they turn every status into an error value. These write
// into package variables instead (a VM runs one call at a time). The host still asks the module
// for room for each returned value (cpp-host src/exports.cc), which the values read inside a
// header callback take from scratch memory (lend.go).

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize unsafe.Pointer) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize unsafe.Pointer, cas unsafe.Pointer) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

// setRequestHeader sets a request header to value, replacing every value it had (Envoy's
// replaceHeaderMapValue → HeaderMap::setCopy).
func setRequestHeader(name, value string) error {
	if st := proxyReplaceHeaderMapValue(mapTypeRequestHeaders, unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)),
		unsafe.Pointer(unsafe.StringData(value)), uint32(len(value))); st != statusOK {
		return hostStatus(st)
	}
	return nil
}

// hostStatus is a refused call's status as an error: a proxy-wasm ABI status number, as the
// SDK numbers them (proxywasm/internal/abi_enums.go: 2 is BadArgument, what Envoy answers for a
// header map the current callback does not have).
type hostStatus uint32

func (s hostStatus) Error() string { return "host status " + strconv.Itoa(int(s)) }

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(metricID uint32, offset int64) uint32

// incrementMetric adds offset to a counter or gauge; a refused call is not counted (the SDK's
// wrapper panics instead, which the caller had to recover from on every request).
func incrementMetric(metricID uint32, offset int64) { _ = proxyIncrementMetric(metricID, offset) }

// Out-parameters of the calls above.
var (
	outPtr  *byte
	outSize uint32
	outCas  uint32
)

const (
	mapTypeRequestHeaders  = 0
	mapTypeResponseHeaders = 2
	statusOK               = 0
	statusNotFound         = 1
)

// requestHeader is the first value of a request header, as Envoy's get answers it: inside a
// header callback lent, valid until the callback returns (lend.go); elsewhere a heap copy.
func requestHeader(name string) (string, bool) { return mapValue(mapTypeRequestHeaders, name) }

// responseHeader is requestHeader for the response headers.
func responseHeader(name string) (string, bool) { return mapValue(mapTypeResponseHeaders, name) }

func mapValue(mapType uint32, name string) (string, bool) {
	lent.next = lent.depth > 0 // lent only inside a header callback, which returns it
	status := proxyGetHeaderMapValue(mapType, unsafe.Pointer(unsafe.StringData(name)), uint32(len(name)),
		unsafe.Pointer(&outPtr), unsafe.Pointer(&outSize))
	lent.next = false // the host asks for no room for an absent or empty value
	if status != statusOK {
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
func sharedData(key string) ([]byte, uint32, error) { return readSharedData(key, false) }

// peekSharedData is sharedData with the value lent inside a header callback, as
// cache.Peeker.Peek answers (elsewhere, e.g. in a callout's answer, it is a heap copy).
func peekSharedData(key string) ([]byte, uint32, error) { return readSharedData(key, true) }

func readSharedData(key string, lend bool) ([]byte, uint32, error) {
	lent.next = lend && lent.depth > 0
	status := proxyGetSharedData(unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)),
		unsafe.Pointer(&outPtr), unsafe.Pointer(&outSize), unsafe.Pointer(&outCas))
	lent.next = false
	switch status {
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
