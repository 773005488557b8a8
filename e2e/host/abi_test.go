package host

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// Shared data follows src/shared_data.cc, not the SDK's emulator: on a key that does not exist
// yet the cas is ignored, cas 0 is unconditional, a stale cas is CasMismatch, an empty value
// reads back as empty (not NotFound), and one global counter makes every cas new.
func TestSharedDataCAS(t *testing.T) {
	h := startProbe(t, Config{VMID: "probe-vm"})
	r := probe(t, h, "cas", map[string]string{"x-key": "user-1"})
	want := strings.Join([]string{
		"set-new-with-cas=ok",
		"get=ok",
		"set-wrong-cas=" + types.ErrorStatusCasMismatch.Error(),
		"set-right-cas=ok",
		"set-stale-cas=" + types.ErrorStatusCasMismatch.Error(),
		"set-zero-cas=ok",
		"final=v5 cas-grew=true (ok)",
		"set-empty=ok",
		`get-empty="" (ok)`,
		"get-missing=" + types.ErrorStatusNotFound.Error(),
	}, "\n")
	if r.body != want {
		t.Fatalf("CAS report:\n%s\nwant:\n%s", r.body, want)
	}
	if v, _, ok := h.SharedData("user-1"); !ok || string(v) != "v5" {
		t.Errorf("SharedData(user-1) = %q, %v", v, ok)
	}
	// Keys: user-1, user-1-empty. Bytes: key and value lengths.
	if h.SharedDataKeys() != 2 || h.SharedDataBytes() != len("user-1")+len("v5")+len("user-1-empty") {
		t.Errorf("SharedDataKeys %d, SharedDataBytes %d", h.SharedDataKeys(), h.SharedDataBytes())
	}
	// The other worker (requests go round-robin) sees the same store: the key exists now, so
	// the arbitrary cas no longer passes.
	r = probe(t, h, "cas", map[string]string{"x-key": "user-1"})
	if !strings.HasPrefix(r.body, "set-new-with-cas="+types.ErrorStatusCasMismatch.Error()+"\n") {
		t.Errorf("second worker: %s", r.body)
	}
}

// A queue wake-up runs later on the registrant's own loop, never inside the enqueue.
func TestQueueReadyIsAsynchronous(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	probe(t, h, "enqueue-own", nil)
	l := waitLog(t, h, `queue ready (own)`, `"enqueue-own" ok`)
	if !strings.HasSuffix(l.Message, "inside a request: false") || l.Worker != 0 {
		t.Errorf("wake-up %+v: want it on worker 0, after the request callback returned", l)
	}
	enq := waitLog(t, h, "enqueued enqueue-own")
	logs := h.Logs()
	if indexOf(logs, enq) > indexOf(logs, l) {
		t.Error("on_queue_ready ran before the enqueue returned")
	}
}

func indexOf(logs []Log, l Log) int {
	for i, x := range logs {
		if x == l {
			return i
		}
	}
	return -1
}

// Registering a name again moves the wake-ups to the last registrant: every VM registers
// "probe-shared" at start-up, worker 2 last, so an enqueue on worker 0 wakes worker 2 only.
func TestQueueWakesLastRegistrant(t *testing.T) {
	h := startProbe(t, Config{Workers: 3})
	probe(t, h, "enqueue-shared", nil) // first request: worker 0
	l := waitLog(t, h, `queue ready (shared)`, `"enqueue-shared"`)
	if l.Worker != 2 {
		t.Errorf("wake-up on worker %d, want 2 (the last registrant)", l.Worker)
	}
	if enq := waitLog(t, h, "enqueued enqueue-shared"); enq.Worker != 0 {
		t.Errorf("enqueue ran on worker %d, want 0", enq.Worker)
	}
}

// proxy_http_call returns BadArgument for an unknown cluster and for a missing :path (the
// SDK then gives no callback).
func TestCalloutBadArguments(t *testing.T) {
	backend := newUpstream(t, nil)
	h := startProbe(t, Config{Workers: 1, Clusters: map[string]string{"backend": backend.addr}})
	if r := probe(t, h, "callout", map[string]string{"x-cluster": "nowhere", "x-path": "/"}); r.body != "dispatch: bad argument" {
		t.Errorf("unknown cluster: %q", r.body)
	}
	if r := probe(t, h, "callout", nil); r.body != "dispatch: bad argument" {
		t.Errorf("missing :path: %q", r.body)
	}
	if h.CalloutsTotal() != 0 || len(backend.seen()) != 0 {
		t.Errorf("%d callouts counted, %d reached the backend; want none", h.CalloutsTotal(), len(backend.seen()))
	}
}

// What the callout callback sees, for every way a callout can end.
func TestCalloutResults(t *testing.T) {
	release := make(chan struct{})
	backend := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("x-backend", "1")
			w.Write([]byte("hello"))
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/reset-after-headers":
			w.Header().Set("content-length", "100")
			w.WriteHeader(200)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		case "/big":
			w.Write(make([]byte, 2<<20))
		}
	})
	t.Cleanup(func() { close(release) })
	closedPort := freePort(t)
	h := startProbe(t, Config{Workers: 1, Clusters: map[string]string{"backend": backend.addr, "closed": closedPort}})
	cases := []struct{ name, path, cluster, timeout, want string }{
		{"answer", "/ok", "backend", "", `headers=5 status=200 body="hello" (ok, ok)`},
		{"timeout", "/slow", "backend", "200", `headers=3 status=504 body="upstream request timeout" (ok, ok)`},
		{"connect failure", "/", "closed", "", `headers=3 status=503 body="upstream connect error or disconnect/reset before headers. reset reason: connection failure" (ok, ok)`},
		{"reset after headers", "/reset-after-headers", "backend", "", `headers=0 status= body="" (` + types.ErrorStatusNotFound.Error() + ", " + types.ErrorStatusNotFound.Error() + ")"},
		{"body over the limit", "/big", "backend", "", `headers=0 status= body="" (` + types.ErrorStatusNotFound.Error() + ", " + types.ErrorStatusNotFound.Error() + ")"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := probe(t, h, "callout", map[string]string{"x-path": c.path, "x-cluster": c.cluster, "x-timeout": c.timeout})
			if r.status != 200 || r.body != c.want {
				t.Errorf("got %d %q\nwant 200 %q", r.status, r.body, c.want)
			}
			if got := h.Callouts("backend") + h.Callouts("closed"); got != i+1 {
				t.Errorf("%d callouts counted, want %d", got, i+1)
			}
		})
	}
	// The answer carried the backend's headers, lower-case, with :status first.
	seen := backend.seen()
	if len(seen) == 0 || seen[0].host != "backend.local" || seen[0].header.Get("User-Agent") != "" {
		t.Errorf("the callout reached the backend as %+v", seen)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxy_set_effective_context with an id that is not a live context is BadArgument (exports.cc),
// also for a stream that was deleted since.
func TestEffectiveContext(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	if r := probe(t, h, "effective", nil); r.body != "unknown context: "+types.ErrorStatusBadArgument.Error() {
		t.Errorf("unknown id: %q", r.body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := doErr(ctx, h, "GET", "/", map[string]string{"x-probe": "hold"}, nil)
		done <- err
	}()
	held := waitLog(t, h, "held ")
	id := strings.TrimPrefix(held.Message, "held ")
	cancel()
	<-done
	waitLog(t, h, "stream done "+id+":")
	waitLog(t, h, "effective context of deleted stream "+id+": "+types.ErrorStatusBadArgument.Error())
}

// Properties of a stream: plugin_*, xds.cluster_name (the route's cluster), xds.route_name,
// request.*; unknown paths are NotFound.
func TestProperties(t *testing.T) {
	up := newUpstream(t, nil)
	h := startProbe(t, Config{Workers: 1, VMID: "vm-1", RootID: "root-1", PluginName: "plugin-1", RouteName: "route-1",
		UpstreamCluster: "outbound|80||api", Clusters: map[string]string{"outbound|80||api": up.addr}})
	r := probe(t, h, "props", nil)
	want := strings.Join([]string{"plugin_name=plugin-1(ok)", "plugin_root_id=root-1(ok)", "plugin_vm_id=vm-1(ok)",
		"xds.cluster_name=outbound|80||api(ok)", "xds.route_name=route-1(ok)", "request.path=/probe(ok)",
		"request.method=GET(ok)", "nope=(" + types.ErrorStatusNotFound.Error() + ")"}, "\n")
	if r.body != want {
		t.Errorf("properties:\n%s\nwant:\n%s", r.body, want)
	}
}

// Metrics are process-wide by name: every VM defines the same three, and a counter, a gauge
// (that can go down) and a histogram add up across workers.
func TestMetrics(t *testing.T) {
	h := startProbe(t, Config{Workers: 2})
	probe(t, h, "metrics", nil)
	if r := probe(t, h, "metrics", nil); r.body != "counter=2 gauge=4" {
		t.Errorf("second request (other worker) reports %q", r.body)
	}
	for name, want := range map[string]uint64{"probe_requests": 2, "probe_gauge": 4, "probe_hist": 2} {
		if got, ok := h.Metric(name); !ok || got != want {
			t.Errorf("Metric(%s) = %d, %v; want %d", name, got, ok, want)
		}
	}
	if _, ok := h.Metric("nope"); ok {
		t.Error("an undefined metric exists")
	}
}

// Every VM (workers and main thread) ticks on its own timer.
func TestTicksPerVM(t *testing.T) {
	h := startProbe(t, Config{Workers: 2})
	err := h.WaitFor(wait, func() bool {
		ticked := map[int]bool{}
		for _, l := range h.Logs() {
			if l.Message == "tick 3" {
				ticked[l.Worker] = true
			}
		}
		return ticked[0] && ticked[1] && ticked[WorkerMain] && !ticked[WorkerCanary]
	})
	if err != nil {
		t.Fatalf("want 3 ticks on workers 0, 1 and main, none on the canary: %v", err)
	}
}

// time.Sleep and the garbage collector in the module go through poll_oneoff, which returns at
// once with success (Envoy ≥ 1.39).
func TestGoRuntimeSleepsAndCollects(t *testing.T) {
	h := startProbe(t, Config{Workers: 1})
	if r := probe(t, h, "sleep", nil); r.status != 200 || r.body != "slept" {
		t.Errorf("%+v", r)
	}
	for i, p := range h.MemoryPages() {
		if p == 0 {
			t.Errorf("VM %d has no memory", i)
		}
	}
}
