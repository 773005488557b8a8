// Command floor is the benchmark's floor filter: the header work a cache hit needs and nothing
// else, so that make bench can say how close the real filter's hit comes to it. Under the
// bench's configuration (rules on paths) a hit reads :path, reads the user token header,
// removes it, writes the authorization header, and reads the response's :status (an upstream
// 401 drops the token); the floor does exactly that, with the same bytes: the bench gives it
// the hit's user token and, as its plugin configuration, the very authorization value the
// filter wrote for that user. Everything else a hit does (the memo, the generation word, the
// clock, the metric, the bookkeeping) is what the floor leaves out.
package main

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &root{} }

type root struct {
	types.DefaultPluginContext
	authorization string
}

func (r *root) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, err := proxywasm.GetPluginConfiguration()
	if err != nil || len(cfg) == 0 {
		proxywasm.LogError("floor: the plugin configuration must be the authorization value to write")
		return types.OnPluginStartStatusFailed
	}
	r.authorization = string(cfg)
	return types.OnPluginStartStatusOK
}

func (r *root) NewHttpContext(uint32) types.HttpContext { return &stream{root: r} }

type stream struct {
	types.DefaultHttpContext
	root   *root
	wrote  bool
	status string
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	if _, err := proxywasm.GetHttpRequestHeader(":path"); err != nil {
		return types.ActionContinue
	}
	if _, err := proxywasm.GetHttpRequestHeader("x-user-oidc-token"); err == nil {
		_ = proxywasm.RemoveHttpRequestHeader("x-user-oidc-token")
	}
	s.wrote = proxywasm.ReplaceHttpRequestHeader("authorization", s.root.authorization) == nil
	return types.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	if s.wrote {
		s.status, _ = proxywasm.GetHttpResponseHeader(":status")
	}
	return types.ActionContinue
}
