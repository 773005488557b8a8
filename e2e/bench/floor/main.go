// Command floor is the benchmark's floor filter: the header work a cache hit needs and nothing
// else (read the user token header, remove it, write the authorization header, continue), so
// that make bench can say how close the real filter's hit comes to it.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &root{} }

type root struct{ types.DefaultPluginContext }

func (*root) NewHttpContext(uint32) types.HttpContext { return &stream{} }

type stream struct{ types.DefaultHttpContext }

const bearer = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmbG9vciJ9.floor-signature"

func (*stream) OnHttpRequestHeaders(int, bool) types.Action {
	if _, err := proxywasm.GetHttpRequestHeader("x-user-oidc-token"); err == nil {
		_ = proxywasm.RemoveHttpRequestHeader("x-user-oidc-token")
	}
	_ = proxywasm.ReplaceHttpRequestHeader("authorization", bearer)
	return types.ActionContinue
}
