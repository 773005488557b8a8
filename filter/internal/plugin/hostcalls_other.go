//go:build !wasip1

package plugin

import (
	"errors"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// Go-mode tests: the same calls through the SDK, which routes them to its emulator.

func requestHeader(name string) (string, bool) {
	v, err := proxywasm.GetHttpRequestHeader(name)
	return v, err == nil
}

func sharedData(key string) (value []byte, cas uint32, found bool, refused bool) {
	v, cas, err := proxywasm.GetSharedData(key)
	switch {
	case err == nil:
		return v, cas, true, false
	case errors.Is(err, types.ErrorStatusNotFound):
		return nil, 0, false, false
	default:
		return nil, 0, false, true
	}
}
