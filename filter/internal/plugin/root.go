// Package plugin adapts proxy-wasm's callbacks to the coordinator (filter/internal/coord),
// which makes every decision. Here: reading the configuration, the tick period, and turning
// each callback into one coord call; host.go turns coord's Host calls into proxy-wasm calls.
package plugin

import (
	"os"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/coord"
)

// tickMs is the tick period the coordinator expects.
const (
	tickMs        = coord.TickMs
	flightGraceMs = coord.FlightGraceMs
	saRetryMinMs  = coord.ServiceRetryMinMs
)

// NewVMContext returns the VM context the wasm entry point registers.
func NewVMContext() types.VMContext { return &vmContext{} }

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &rootContext{contextID: contextID}
}

type rootContext struct {
	types.DefaultPluginContext
	contextID uint32
	host      *wasmHost
	worker    *coord.Worker
	// cache is the worker's shared-data view (tests play another worker through it).
	cache *cache.Cache
}

func (r *rootContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		data = nil // an absent configuration is reported by Parse like an empty one
	}
	cfg, err := config.Parse(data, os.LookupEnv)
	if err != nil {
		logError(err.Error())
		return types.OnPluginStartStatusFailed
	}
	r.host = newWasmHost()
	r.worker = coord.NewWorker(r.host, cfg, sharedStore{})
	r.cache = r.worker.Cache
	// No callout is allowed during start-up: the first service-account fetch waits for the first tick.
	if err := proxywasm.SetTickPeriodMilliSeconds(tickMs); err != nil {
		logError("setting the tick period failed: " + err.Error())
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (r *rootContext) NewHttpContext(contextID uint32) types.HttpContext {
	if r.worker == nil {
		return nil // start-up failed: the host does not create streams then
	}
	h := &httpContext{}
	r.worker.InitRequest(&h.req, contextID)
	return h
}

func (r *rootContext) OnTick() { r.worker.OnTick() }

func (r *rootContext) OnQueueReady(queueID uint32) { r.worker.OnQueueReady(queueID) }

// OnPluginDone runs when Envoy tears the plugin down (configuration update, drain).
func (r *rootContext) OnPluginDone() bool {
	if r.worker != nil {
		r.worker.OnDone()
	}
	return true
}
