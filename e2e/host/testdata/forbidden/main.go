// Command forbidden calls a host function that Envoy refuses while the module initialises:
// only logging and a few WASI calls are allowed in init(), so this traps with
// "restricted_callback" and the module never starts.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() {
	proxywasm.LogInfo("forbidden: logging is allowed during init")
	_, err := proxywasm.GetProperty([]string{"plugin_name"})
	proxywasm.LogInfof("forbidden: not reached (%v)", err)
	proxywasm.SetVMContext(&types.DefaultVMContext{})
}
