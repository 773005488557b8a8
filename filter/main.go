// Command filter is the wasm entry point of the token-exchange filter. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o build/plugin.wasm ./filter
//
// Everything happens in internal/plugin; init registers it, and main is never called.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"

	"github.com/kagenti/token-exchange-filter/filter/internal/plugin"
)

func init() { proxywasm.SetVMContext(plugin.NewVMContext()) }

func main() {}
