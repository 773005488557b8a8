package host

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// callOrder returns the positions in logs of the traced calls of exports on context id.
func callOrder(logs []Log, id string, exports ...string) []int {
	out := make([]int, len(exports))
	for i := range out {
		out[i] = -1
	}
	for i, l := range logs {
		for j, e := range exports {
			if l.Host && l.Message == "call "+e+" "+id && out[j] < 0 {
				out[j] = i
			}
		}
	}
	return out
}

// streamID is the context id of the n-th stream's on_request_headers (n from 0).
func streamID(t *testing.T, h *Host) string {
	t.Helper()
	l := waitLog(t, h, "call proxy_on_request_headers ")
	return strings.TrimPrefix(l.Message, "call proxy_on_request_headers ")
}

// Stream end follows Envoy: HTTP/1 and HTTP/2 log, then destroy the filter (on_log, on_done,
// on_delete: doDeferredStreamDestroy, Context::onDestroy); HTTP/3 defers logging past
// on_delete, where the Go SDK no longer knows the context and drops on_log (its
// OnHttpStreamDone never runs).
func TestStreamEndOrder(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		t.Run(fmt.Sprintf("deferredLog=%v", deferred), func(t *testing.T) {
			h := startProbe(t, Config{Workers: 1, TraceCalls: true, DeferredLog: deferred})
			probe(t, h, "local", nil)
			id := streamID(t, h)
			waitLog(t, h, "call proxy_on_log "+id)
			waitLog(t, h, "call proxy_on_delete "+id)
			at := callOrder(h.Logs(), id, "proxy_on_log", "proxy_on_done", "proxy_on_delete")
			if !deferred && !(at[0] < at[1] && at[1] < at[2]) {
				t.Fatalf("positions of on_log, on_done, on_delete: %v; want that order", at)
			}
			if deferred && !(at[1] < at[2] && at[2] < at[0]) {
				t.Fatalf("positions of on_log, on_done, on_delete: %v; want on_done, on_delete, on_log", at)
			}
			done := countLogs(h, func(l Log) bool { return strings.HasPrefix(l.Message, "stream done "+id+":") })
			if want := map[bool]int{false: 1, true: 0}[deferred]; done != want {
				t.Errorf("the SDK's OnHttpStreamDone ran %d times, want %d", done, want)
			}
		})
	}
}

// A stream's C++ context outlives on_delete until Envoy really drops it (deferred deletion;
// with HTTP/3 until the deferred log): proxy_set_effective_context on its id still answers Ok
// after on_delete, then BadArgument.
func TestDeletedStreamContextLingers(t *testing.T) {
	h := startProbe(t, Config{Workers: 1, TraceCalls: true, DeferredLog: true, DeferredLogDelay: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := doErr(ctx, h, "GET", "/", map[string]string{"x-probe": "hold"}, nil)
		done <- err
	}()
	id := streamID(t, h)
	waitLog(t, h, "effective context of held-stream "+id+": ok")
	cancel()
	<-done
	deleted := waitLog(t, h, "call proxy_on_delete "+id)
	gone := waitLog(t, h, "effective context of held-stream "+id+": "+types.ErrorStatusBadArgument.Error())
	logs := h.Logs()
	okAfterDelete := false
	for _, l := range logs[indexOf(logs, deleted):indexOf(logs, gone)] {
		okAfterDelete = okAfterDelete || l.Message == "effective context of held-stream "+id+": ok"
	}
	if !okAfterDelete {
		t.Fatal("proxy_set_effective_context failed at once after on_delete; Envoy's context lingers until dropped")
	}
	if log := callOrder(logs, id, "proxy_on_log")[0]; log < 0 || log > indexOf(logs, gone) {
		t.Errorf("the context was dropped before its deferred on_log ran (on_log at %d, dropped by %d)", log, indexOf(logs, gone))
	}
}

// A queue outlives the VM that registered it, and its wake-ups go by context id to the VM that
// runs on the registrant's thread now (SharedQueue::enqueue, getThreadLocalWasm): after a
// FAIL_RELOAD, the new VM's root context 1 is woken for the dead VM's queue.
func TestQueueWakeUpGoesToTheThreadsCurrentVM(t *testing.T) {
	h := startProbe(t, Config{Workers: 1, FailurePolicy: FailReload})
	old, err := h.WaitLog(wait, func(l Log) bool { return l.Worker == 0 && strings.HasPrefix(l.Message, "root 1 own queue ") })
	if err != nil {
		t.Fatal("worker 0 did not log its queue's name")
	}
	name := strings.TrimPrefix(old.Message, "root 1 own queue ")
	if r := probe(t, h, "panic", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("panic: %d", r.status)
	}
	// This request reloads the VM; the new VM enqueues to the dead VM's queue.
	if r := probe(t, h, "enqueue-to", map[string]string{"x-queue": name}); r.body != "enqueued: ok" {
		t.Fatalf("enqueue to the dead VM's queue: %q", r.body)
	}
	woke := waitLog(t, h, "queue ready (other) on root 1", `"enqueue-to" ok`)
	if reload := waitLog(t, h, "reloaded the failed VM"); woke.Worker != 0 || indexOf(h.Logs(), woke) < indexOf(h.Logs(), reload) {
		t.Errorf("wake-up %+v: want it in worker 0's new VM", woke)
	}
	if items, _ := h.QueueItems(); items != 0 {
		t.Errorf("%d items left in queues", items)
	}
}

// The context that has the registrant's id may be a stream: Envoy calls on_queue_ready on it,
// and the Go SDK panics there ("invalid context"), which fails the VM. (A queue registered by
// a root whose id a later VM on that thread gave to a stream, e.g. after a configuration
// update and a reload.)
func TestQueueWakeUpCanReachAStream(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = doErr(ctx, h, "GET", "/", map[string]string{"x-probe": "hold"}, nil) }()
	held := waitLog(t, h, "held ")
	var id uint32
	fmt.Sscanf(strings.TrimPrefix(held.Message, "held "), "%d", &id)
	v := h.workers[0].cur.Load()
	tok := h.queues.register("", "queue-of-a-gone-root", v, id)
	if st := h.queues.enqueue(tok, []byte("x")); st != statusOK {
		t.Fatalf("enqueue: status %d", st)
	}
	waitLog(t, h, "Function: proxy_on_queue_ready failed")
	if !h.Failed(0) {
		t.Error("the VM did not fail")
	}
}

// Istio shares one VM per thread between WasmPlugins of equal image, VM configuration and
// vm_id: each plugin has its own root context (ids 1 and 2), configuration, properties and
// tick, and its requests go to its own root.
func TestPluginsShareOneVM(t *testing.T) {
	h := startProbe(t, Config{Workers: 1, RootID: "first", PluginName: "first", PluginConfig: []byte("cfg-1"),
		Plugins: []Plugin{{Name: "second", RootID: "second", Config: []byte("cfg-2")}}})
	for _, want := range []string{`plugin start: config "cfg-1"`, `plugin start: config "cfg-2"`, "root 1 own queue", "root 2 own queue"} {
		if n := countLogs(h, func(l Log) bool { return l.Worker == 0 && strings.Contains(l.Message, want) }); n != 1 {
			t.Errorf("worker 0 logged %q %d times, want once", want, n)
		}
	}
	if err := h.WaitFor(wait, func() bool {
		return countLogs(h, func(l Log) bool { return l.Worker == 0 && l.Message == "tick 1" }) == 2
	}); err != nil {
		t.Error("each root context ticks on its own: want two first ticks on worker 0")
	}
	for base, want := range map[string]string{h.URL(): "plugin_root_id=first(ok)", h.PluginURL(0): "plugin_root_id=second(ok)"} {
		req, _ := http.NewRequest("GET", base+"/probe", nil)
		req.Header.Set("x-probe", "props")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("%s: properties %q, want %s", base, body, want)
		}
	}
}

// A plugin with the same vm_id (Istio: every WasmPlugin, vm_id "") reads and writes the same
// shared data.
func TestForeignPluginSharesData(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	h.SetSharedData("", "release", []byte("1"))
	if v, _, ok := h.SharedData("release"); !ok || string(v) != "1" {
		t.Fatalf("SharedData after a foreign write: %q %v", v, ok)
	}
	r := probe(t, h, "cas", map[string]string{"x-key": "release"})
	if !strings.HasPrefix(r.body, "set-new-with-cas="+types.ErrorStatusCasMismatch.Error()) {
		t.Errorf("the module did not see the foreign key: %q", r.body)
	}
}

// The canary runs OnPluginStart and is dropped: a queue it registers there is dead at once,
// and Envoy keeps it (the probe registers two queues at start-up, "probe-shared", whose last
// registrant lives, and one of its own).
func TestCanaryQueueOutlivesIt(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	if n := h.DeadQueues(); n != 1 {
		t.Fatalf("%d dead queues after start-up, want 1 (the canary's own)", n)
	}
}

// A plugin configuration update keeps the VMs: a canary checks the new configuration, then every
// VM gets a new root context for it (a fresh id) and the old root context gets on_done and
// on_delete; a queue the old root registered is dead from then on.
func TestReconfigureReplacesRootContexts(t *testing.T) {
	h := startProbe(t, Config{Workers: 1, TraceCalls: true, PluginConfig: []byte("cfg-1")})
	before := h.DeadQueues() // the canary's
	if err := h.Reconfigure(0, []byte("cfg-2")); err != nil {
		t.Fatal(err)
	}
	if n := countLogs(h, func(l Log) bool { return strings.Contains(l.Message, `plugin start: config "cfg-2"`) }); n != 3 {
		t.Errorf("the new configuration started %d times, want 3 (canary, main thread, worker)", n)
	}
	for _, w := range []int{0, WorkerMain} {
		if n := countLogs(h, func(l Log) bool { return l.Worker == w && l.Host && l.Message == "call proxy_on_delete 1" }); n != 1 {
			t.Errorf("worker %d: the old root context 1 was deleted %d times, want once", w, n)
		}
	}
	if _, err := h.WaitLog(wait, func(l Log) bool {
		return l.Worker == 0 && strings.HasPrefix(l.Message, "root ") && !strings.HasPrefix(l.Message, "root 1 ") && strings.Contains(l.Message, "own queue")
	}); err != nil {
		t.Error("worker 0's new root context has no new id")
	}
	// The old roots' own queues (worker and main thread) and the new canary's are dead.
	if got := h.DeadQueues() - before; got != 3 {
		t.Errorf("%d more dead queues after the update, want 3", got)
	}
	if r := probe(t, h, "local", nil); r.status != 418 {
		t.Errorf("the new root context does not serve: %d", r.status)
	}
}
