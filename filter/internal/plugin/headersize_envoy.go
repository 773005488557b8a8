//go:build wasip1 && !sdkemulator

package plugin

import "unsafe"

// proxy_get_header_map_size, which the SDK does not wrap: Envoy answers HeaderMap::byteSize(),
// the sum of every name's and value's length (source/extensions/common/wasm/context.cc,
// getHeaderMapSize), and every proxy-wasm-cpp-host since ABI 0.1 exports it (src/exports.cc).
//
//go:wasmimport env proxy_get_header_map_size
func proxyGetHeaderMapSize(mapType uint32, size unsafe.Pointer) uint32

// removeTakesAll: Envoy's proxy_remove_header_map_value takes every value of the name
// (context.cc removeHeaderMapValue → HeaderMap::remove).
const removeTakesAll = true

// sizeOut receives the size: a package variable, not a local whose address would make it
// escape to the heap on every call (the VM is single-threaded).
var sizeOut uint32

func requestHeaderMapSize() (int, bool) {
	if proxyGetHeaderMapSize(mapTypeRequestHeaders, unsafe.Pointer(&sizeOut)) != 0 {
		return 0, false
	}
	return int(sizeOut), true
}
