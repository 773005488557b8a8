package plugin

import (
	"strconv"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// The two request paths that matter, measured in the SDK emulator against Go code ("go") and
// the compiled module in wazero ("wasm"). The numbers include the emulator's own work (header
// maps, copying), so they are an upper bound of the filter's cost per request.

// BenchmarkRequestCacheHit: a user whose exchanged token is cached — read the header, hash,
// one shared-data read, write the header, continue.
func BenchmarkRequestCacheHit(b *testing.B) {
	for _, runner := range runners {
		b.Run(runner, func(b *testing.B) {
			h := start(b, runner, pluginConfig(exchangeOn))
			h.serviceTokenReady()
			id, _ := h.userRequest(testUserToken)
			h.answer(h.oneCallout("urn:ietf:params:oauth:grant-type:token-exchange"), "200", tokenBody(testExchanged, 3600))
			h.wantForwarded(id, testExchanged)
			headers := [][2]string{{":method", "GET"}, {":path", "/api"}, {":authority", "kagenti.local"},
				{headerUserToken, testUserToken}, {headerBackstage, backstageUserName}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := h.host.InitializeHttpContext()
				if a := h.host.CallOnRequestHeaders(id, headers, false); a != types.ActionContinue {
					b.Fatalf("cache hit did not continue")
				}
				h.host.CompleteHttpContext(id)
			}
		})
	}
}

// BenchmarkRequestCacheMiss: a new user each time — hold, dispatch the exchange from the root
// context, parse the IdP's answer, store it, resume.
func BenchmarkRequestCacheMiss(b *testing.B) {
	for _, runner := range runners {
		b.Run(runner, func(b *testing.B) {
			// A new user per iteration, as fast as they come: without the new-key bucket.
			h := start(b, runner, pluginConfig(`"tokenExchange":{"enabled":true,"audience":"kagenti","newKeyExchangesPerSecond":0}`))
			h.serviceTokenReady()
			answer := [][2]string{{":status", "200"}, {"content-type", "application/json"}}
			body := []byte(tokenBody(testExchanged, 3600))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				user := "USER" + strconv.Itoa(i) + ".eyJzdWIiOiJ1c2VyIn0.signature"
				id := h.host.InitializeHttpContext()
				headers := [][2]string{{":method", "GET"}, {":path", "/api"}, {":authority", "kagenti.local"}, {headerUserToken, user}}
				if a := h.host.CallOnRequestHeaders(id, headers, false); a != types.ActionPause {
					b.Fatalf("miss was not held")
				}
				calls := h.host.GetCalloutAttributesFromContext(1)
				h.host.CallOnHttpCallResponse(calls[len(calls)-1].CalloutID, answer, nil, body)
				if h.host.GetCurrentHttpStreamAction(id) != types.ActionContinue {
					b.Fatalf("miss was not resumed")
				}
				h.host.CompleteHttpContext(id)
			}
		})
	}
}
