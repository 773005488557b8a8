package plugin

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/coord"
)

// httpContext is one request. Only header callbacks are overridden: bodies, streamed ones
// included, pass through untouched.
type httpContext struct {
	types.DefaultHttpContext
	req coord.Request // held by value: the stream's one allocation
}

// The header callbacks read header values lent for the callback's length (lend.go): the
// coordinator copies what it keeps, and returnLent ends their lifetime as the callback returns.

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	borrowLent()
	action := h.req.OnRequestHeaders(requestHeaders{})
	returnLent()
	if action == coord.Continue {
		return types.ActionContinue
	}
	return types.ActionPause
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	borrowLent()
	h.req.OnResponseHeaders(responseStatus)
	returnLent()
	return types.ActionContinue
}

func (h *httpContext) OnHttpStreamDone() { h.req.OnDone() }

func responseStatus() (string, bool) { return responseHeader(":status") }

// requestHeaders is coord.RequestHeaders over the current stream's request headers.
type requestHeaders struct{}

func (requestHeaders) Count(name string) int {
	hs, err := proxywasm.GetHttpRequestHeaders()
	if err != nil {
		return 0
	}
	n := 0
	for _, h := range hs {
		if h[0] == name {
			n++
		}
	}
	return n
}

func (requestHeaders) Get(name string) (string, bool) { return requestHeader(name) }

func (requestHeaders) Remove(name string) { _ = proxywasm.RemoveHttpRequestHeader(name) }

func (requestHeaders) RemoveTakesAll() bool { return removeTakesAll }

func (requestHeaders) Size() (int, bool) { return requestHeaderMapSize() }
