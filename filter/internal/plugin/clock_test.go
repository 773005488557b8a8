package plugin

import (
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// testClock replaces the plugin's clock in Go-runner tests, so expiry and deadlines are tested
// by moving time, never by sleeping.
type testClock struct{ ms int64 }

func fakeClock(t *testing.T) *testClock {
	c := &testClock{ms: 1_800_000_000_000}
	prevNow, prevWall := nowMs, wallMs
	nowMs = func() int64 { return c.ms }
	wallMs = func() int64 { return c.ms }
	t.Cleanup(func() { nowMs, wallMs = prevNow, prevWall })
	return c
}

func (c *testClock) advance(ms int64) { c.ms += ms }

// recordingVM is the Go runner's VM context: the plugin's own, remembering the root contexts it
// creates so that a test can reach into shared data as another worker would.
type recordingVM struct {
	vmContext
	roots []*rootContext
}

func (v *recordingVM) NewPluginContext(id uint32) types.PluginContext {
	r := v.vmContext.NewPluginContext(id).(*rootContext)
	v.roots = append(v.roots, r)
	return r
}

// rootForTest returns the plugin's root context (Go runner only).
func (h *harness) rootForTest() *rootContext {
	h.t.Helper()
	if h.vm == nil || len(h.vm.roots) == 0 {
		h.t.Fatal("no root context (Go runner only)")
	}
	return h.vm.roots[len(h.vm.roots)-1]
}

func cacheKeyFor(userToken string) cache.Key {
	return cache.KeyFor(userToken, "kagenti", "")
}
