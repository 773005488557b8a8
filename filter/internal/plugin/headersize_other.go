//go:build !wasip1 || sdkemulator

package plugin

import "github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

// requestHeaderMapSize is Envoy's HeaderMap::byteSize() worked out from the header pairs: the
// SDK's emulator (Go tests, and its wazero runner, which exports no proxy_get_header_map_size)
// has no size call.
// removeTakesAll is false: the emulator's remove takes the first value of a name only.
const removeTakesAll = false

func requestHeaderMapSize() (int, bool) {
	hs, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		return 0, false
	}
	n := 0
	for _, h := range hs {
		n += len(h[0]) + len(h[1])
	}
	return n, true
}
