// Command probe is a proxy-wasm plugin made to observe the host: each request names an action
// in its x-probe header, and most actions answer with a local reply whose body reports what the
// host returned. Root contexts log what they see at start-up, on ticks and on queue wake-ups.
package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

func main() {}

func init() { proxywasm.SetVMContext(&vmContext{}) }

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) OnVMStart(int) types.OnVMStartStatus {
	cfg, err := proxywasm.GetVMConfiguration()
	proxywasm.LogInfof("vm start: vm config %q (%v)", cfg, errText(err))
	return true
}

func (*vmContext) NewPluginContext(id uint32) types.PluginContext {
	return &root{id: id, held: map[uint32]bool{}}
}

type root struct {
	types.DefaultPluginContext
	id        uint32
	shared    uint32 // "probe-shared": every VM registers it, the last one gets the wake-ups
	own       uint32 // a queue only this VM registered
	inRequest bool   // true while OnHttpRequestHeaders runs on this VM
	held      map[uint32]bool
	gone      []uint32
	ticks     int
	requests  proxywasm.MetricCounter
	gauge     proxywasm.MetricGauge
	hist      proxywasm.MetricHistogram
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func (r *root) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	conf := string(data)
	proxywasm.LogInfof("plugin start: config %q (%s)", conf, errText(err))
	if strings.Contains(conf, "refuse") {
		proxywasm.LogError("probe: refusing this configuration")
		return types.OnPluginStartStatusFailed
	}
	for _, p := range []string{"plugin_name", "plugin_root_id", "xds.cluster_name", "request.path"} {
		v, err := proxywasm.GetProperty(strings.Split(p, "."))
		proxywasm.LogInfof("root property %s = %q (%s)", p, v, errText(err))
	}
	r.shared, _ = proxywasm.RegisterSharedQueue("probe-shared")
	own := "probe-own-" + strconv.FormatUint(rand.Uint64(), 16)
	r.own, _ = proxywasm.RegisterSharedQueue(own)
	proxywasm.LogInfof("root %d own queue %s", r.id, own)
	r.requests = proxywasm.DefineCounterMetric("probe_requests")
	r.gauge = proxywasm.DefineGaugeMetric("probe_gauge")
	r.hist = proxywasm.DefineHistogramMetric("probe_hist")
	if err := proxywasm.SetTickPeriodMilliSeconds(20); err != nil {
		proxywasm.LogErrorf("tick: %v", err)
	}
	return types.OnPluginStartStatusOK
}

func (r *root) OnTick() {
	r.ticks++
	if r.ticks <= 3 {
		proxywasm.LogInfof("tick %d", r.ticks)
	}
	for _, id := range r.gone {
		proxywasm.LogInfof("effective context of deleted stream %d: %s", id, errText(proxywasm.SetEffectiveContext(id)))
	}
	r.gone = nil
	// Held streams are probed every tick (one may be gone without this module being told: the
	// SDK reports no on_done or on_delete to streams).
	for id := range r.held {
		proxywasm.LogInfof("effective context of held-stream %d: %s", id, errText(proxywasm.SetEffectiveContext(id)))
	}
	if len(r.held) == 0 {
		return
	}
	if _, _, err := proxywasm.GetSharedData("release"); err != nil {
		return
	}
	for id := range r.held {
		delete(r.held, id)
		err1 := proxywasm.SetEffectiveContext(id)
		err2 := proxywasm.AddHttpRequestHeader("x-resumed", "yes")
		err3 := proxywasm.ResumeHttpRequest()
		proxywasm.LogInfof("resumed %d: %s %s %s", id, errText(err1), errText(err2), errText(err3))
	}
}

func (r *root) OnQueueReady(id uint32) {
	data, err := proxywasm.DequeueSharedQueue(id)
	which := "other" // e.g. the queue of a VM that is gone, whose context id this one has now
	switch id {
	case r.own:
		which = "own"
	case r.shared:
		which = "shared"
	}
	proxywasm.LogInfof("queue ready (%s) on root %d: %q %s, inside a request: %v", which, r.id, data, errText(err), r.inRequest)
}

func (r *root) NewHttpContext(id uint32) types.HttpContext { return &stream{id: id, root: r} }

type stream struct {
	types.DefaultHttpContext
	id   uint32
	root *root
}

func (s *stream) reply(code uint32, body string) types.Action {
	if err := proxywasm.SendHttpResponse(code, [][2]string{{"x-probe-reply", "yes"}}, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("local reply: %v", err)
	}
	return types.ActionPause
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	r := s.root
	r.inRequest = true
	defer func() { r.inRequest = false }()
	action, _ := proxywasm.GetHttpRequestHeader("x-probe")
	switch action {
	case "":
		return types.ActionContinue
	case "panic":
		panic("probe: asked to panic")
	case "hold":
		r.held[s.id] = true
		if cfg, _ := proxywasm.GetProperty([]string{"plugin_root_id"}); len(cfg) > 0 {
			proxywasm.LogInfof("plugin %s holds stream %d", cfg, s.id)
		}
		proxywasm.LogInfof("held %d", s.id)
		return types.ActionPause
	case "release":
		return s.reply(200, "release: "+errText(proxywasm.SetSharedData("release", []byte("1"), 0)))
	case "local":
		return s.reply(418, "short and stout")
	case "sleep":
		// The Go runtime sleeps and collects garbage through poll_oneoff, which must succeed
		// (Envoy < 1.39 answered ENOSYS and the runtime aborted).
		time.Sleep(20 * time.Millisecond)
		runtime.GC()
		return s.reply(200, "slept")
	case "headers":
		errs := []string{
			errText(proxywasm.AddHttpRequestHeader("x-added", "1")),
			errText(proxywasm.ReplaceHttpRequestHeader("x-replace", "new")),
			errText(proxywasm.RemoveHttpRequestHeader("x-remove")),
		}
		hs, err := proxywasm.GetHttpRequestHeaders()
		var names []string
		for _, h := range hs {
			names = append(names, h[0])
		}
		proxywasm.LogInfof("request headers: %s (%s); mutations %s", strings.Join(names, ","), errText(err), strings.Join(errs, " "))
		return types.ActionContinue
	case "enqueue-own", "enqueue-shared":
		q := r.own
		if action == "enqueue-shared" {
			q = r.shared
		}
		err := proxywasm.EnqueueSharedQueue(q, []byte(action))
		proxywasm.LogInfof("enqueued %s: %s", action, errText(err))
		return s.reply(200, "enqueued")
	case "enqueue-to": // a queue by name, e.g. one registered by a VM that is gone
		q, err := proxywasm.ResolveSharedQueue("", headerOr("x-queue", ""))
		if err == nil {
			err = proxywasm.EnqueueSharedQueue(q, []byte(action))
		}
		return s.reply(200, "enqueued: "+errText(err))
	case "cas":
		return s.reply(200, casReport(headerOr("x-key", "k")))
	case "effective":
		return s.reply(200, "unknown context: "+errText(proxywasm.SetEffectiveContext(987654)))
	case "props":
		var out []string
		for _, p := range []string{"plugin_name", "plugin_root_id", "plugin_vm_id", "xds.cluster_name", "xds.route_name", "request.path", "request.method", "nope"} {
			v, err := proxywasm.GetProperty(strings.Split(p, "."))
			out = append(out, fmt.Sprintf("%s=%s(%s)", p, v, errText(err)))
		}
		return s.reply(200, strings.Join(out, "\n"))
	case "metrics":
		r.requests.Increment(1)
		r.gauge.Add(-3)
		r.gauge.Add(5)
		r.hist.Record(7)
		return s.reply(200, fmt.Sprintf("counter=%d gauge=%d", r.requests.Value(), r.gauge.Value()))
	case "callout":
		return s.callout()
	}
	return s.reply(400, "unknown action "+action)
}

func headerOr(name, def string) string {
	if v, err := proxywasm.GetHttpRequestHeader(name); err == nil {
		return v
	}
	return def
}

// casReport exercises shared data on a new key with Envoy's CAS rules.
func casReport(key string) string {
	var out []string
	add := func(what string, err error) { out = append(out, what+"="+errText(err)) }
	add("set-new-with-cas", proxywasm.SetSharedData(key, []byte("v1"), 424242))
	_, cas, err := proxywasm.GetSharedData(key)
	add("get", err)
	add("set-wrong-cas", proxywasm.SetSharedData(key, []byte("v2"), cas+1000))
	add("set-right-cas", proxywasm.SetSharedData(key, []byte("v3"), cas))
	add("set-stale-cas", proxywasm.SetSharedData(key, []byte("v4"), cas))
	add("set-zero-cas", proxywasm.SetSharedData(key, []byte("v5"), 0))
	v, cas2, err := proxywasm.GetSharedData(key)
	out = append(out, fmt.Sprintf("final=%s cas-grew=%v (%s)", v, cas2 > cas, errText(err)))
	add("set-empty", proxywasm.SetSharedData(key+"-empty", nil, 0))
	v, _, err = proxywasm.GetSharedData(key + "-empty")
	out = append(out, fmt.Sprintf("get-empty=%q (%s)", v, errText(err)))
	_, _, err = proxywasm.GetSharedData(key + "-missing")
	add("get-missing", err)
	return strings.Join(out, "\n")
}

// callout dispatches to the cluster in x-cluster (default "backend") with :path from x-path
// (none when absent) and the timeout in x-timeout, holds the request, and answers from the
// callback with what it saw.
func (s *stream) callout() types.Action {
	hdrs := [][2]string{{":method", "GET"}, {":authority", "backend.local"}, {":scheme", "http"}}
	if p, err := proxywasm.GetHttpRequestHeader("x-path"); err == nil {
		hdrs = append(hdrs, [2]string{":path", p})
	}
	timeout, _ := strconv.Atoi(headerOr("x-timeout", "5000"))
	_, err := proxywasm.DispatchHttpCall(headerOr("x-cluster", "backend"), hdrs, nil, nil, uint32(timeout),
		func(numHeaders, bodySize, _ int) {
			hs, herr := proxywasm.GetHttpCallResponseHeaders()
			status := ""
			for _, h := range hs {
				if h[0] == ":status" {
					status = h[1]
				}
			}
			body, berr := proxywasm.GetHttpCallResponseBody(0, bodySize)
			s.reply(200, fmt.Sprintf("headers=%d status=%s body=%q (%s, %s)", numHeaders, status, body, errText(herr), errText(berr)))
		})
	if err != nil {
		proxywasm.LogErrorf("dispatch failed: %v", err)
		if errors.Is(err, types.ErrorStatusBadArgument) {
			return s.reply(200, "dispatch: bad argument")
		}
		return s.reply(500, "dispatch: "+err.Error())
	}
	return types.ActionPause
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	status, err := proxywasm.GetHttpResponseHeader(":status")
	_ = proxywasm.AddHttpResponseHeader("x-seen-status", status+" "+errText(err))
	_, err = proxywasm.GetHttpRequestHeader(":path")
	_ = proxywasm.AddHttpResponseHeader("x-request-headers-in-response", errText(err))
	return types.ActionContinue
}

func (s *stream) OnHttpStreamDone() {
	p, err := proxywasm.GetHttpRequestHeader(":path")
	st, _ := proxywasm.GetHttpResponseHeader(":status")
	proxywasm.LogInfof("stream done %d: path %s (%s) status %q", s.id, p, errText(err), st)
	if s.root.held[s.id] {
		delete(s.root.held, s.id)
		s.root.gone = append(s.root.gone, s.id)
	}
}
