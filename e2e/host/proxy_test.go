package host

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"
)

// echo answers with what it received, so tests see what went upstream.
func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "text/plain")
	w.Header().Set("x-upstream", "yes")
	b, _ := io.ReadAll(r.Body)
	io.WriteString(w, "got "+string(b))
}

// A paused request waits, body included, until the plugin resumes it from another callback
// (here a tick, after proxy_set_effective_context); it then goes upstream with the headers the
// plugin changed while it was held.
func TestPauseAndResume(t *testing.T) {
	up := newUpstream(t, echo)
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	answer := make(chan reply, 1)
	go func() {
		r, err := doErr(context.Background(), h, "POST", "/held", map[string]string{"x-probe": "hold"}, strings.NewReader("payload"))
		if err != nil {
			t.Error(err)
		}
		answer <- r
	}()
	waitLog(t, h, "held ")
	if n := len(up.seen()); n != 0 {
		t.Fatalf("%d requests reached the upstream while the request was held", n)
	}
	select {
	case r := <-answer:
		t.Fatalf("answered while held: %+v", r)
	default:
	}
	if r := probe(t, h, "release", nil); r.body != "release: ok" {
		t.Fatalf("release: %+v", r)
	}
	waitLog(t, h, "resumed ", ": ok ok ok")
	r := <-answer
	if r.status != 200 || r.body != "got payload" || r.header.Get("x-seen-status") != "200 ok" {
		t.Errorf("answer %+v", r)
	}
	seen := up.seen()
	if len(seen) != 1 || seen[0].header.Get("x-resumed") != "yes" || seen[0].body != "payload" || seen[0].header.Get("x-probe") != "hold" {
		t.Errorf("upstream saw %+v", seen)
	}
}

// A client that goes away while its request is held ends the stream: on_log (OnHttpStreamDone)
// runs, the context is deleted, and nothing goes upstream. Also when its body was still coming.
func TestClientGoesAwayWhileHeld(t *testing.T) {
	up := newUpstream(t, echo)
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	for _, name := range []string{"no body", "unfinished body"} {
		t.Run(name, func(t *testing.T) {
			ctx, cancelRequest := context.WithCancel(context.Background())
			cancel := cancelRequest
			var body io.Reader
			if name == "unfinished body" {
				pr, pw := io.Pipe()
				go pw.Write([]byte("first part, then nothing"))
				body = pr
				// The client's transport waits for its body writer; end it with the request.
				cancel = func() { cancelRequest(); pw.CloseWithError(context.Canceled) }
			}
			isHeld := func(l Log) bool { return strings.HasPrefix(l.Message, "held ") }
			before := countLogs(h, isHeld)
			done := make(chan error, 1)
			go func() {
				_, err := doErr(ctx, h, "POST", "/gone", map[string]string{"x-probe": "hold"}, body)
				done <- err
			}()
			if err := h.WaitFor(wait, func() bool { return countLogs(h, isHeld) > before }); err != nil {
				t.Fatal(err)
			}
			held := lastLog(h, "held ")
			cancel()
			if err := <-done; err == nil {
				t.Error("the cancelled request succeeded")
			}
			id := strings.TrimPrefix(held.Message, "held ")
			l := waitLog(t, h, "stream done "+id+": path /gone (ok)")
			if !strings.HasSuffix(l.Message, `status ""`) {
				t.Errorf("on_log saw a response: %q", l.Message)
			}
		})
	}
	if n := len(up.seen()); n != 0 {
		t.Errorf("%d requests reached the upstream", n)
	}
}

func lastLog(h *Host, prefix string) Log {
	var found Log
	for _, l := range h.Logs() {
		if strings.HasPrefix(l.Message, prefix) {
			found = l
		}
	}
	return found
}

// A local reply goes through the response path: the plugin's own on_response_headers sees it
// (with :status), then it is written to the client; the upstream is never asked.
func TestLocalReplyPassesThroughResponseHeaders(t *testing.T) {
	up := newUpstream(t, echo)
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	r := probe(t, h, "local", nil)
	if r.status != 418 || r.body != "short and stout" {
		t.Fatalf("reply %d %q", r.status, r.body)
	}
	for k, want := range map[string]string{"x-probe-reply": "yes", "x-seen-status": "418 ok",
		"content-type": "text/plain", "content-length": "15"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if len(up.seen()) != 0 {
		t.Error("the upstream was asked")
	}
	waitLog(t, h, "stream done", `status "418"`)
}

// Header maps: the request map has the pseudo-headers first and what Envoy's connection manager
// adds; add, replace and remove reach the upstream; response headers carry :status; request
// headers are gone once the request continued (BadArgument in on_response_headers).
func TestHeaderMaps(t *testing.T) {
	up := newUpstream(t, echo)
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	r := probe(t, h, "headers", map[string]string{"x-replace": "old", "x-remove": "bye", "x-keep": "kept"})
	if r.status != 200 || r.header.Get("x-upstream") != "yes" {
		t.Fatalf("reply %+v", r)
	}
	if got := r.header.Get("x-seen-status"); got != "200 ok" {
		t.Errorf("on_response_headers saw :status %q", got)
	}
	if got := r.header.Get("x-request-headers-in-response"); got != types.ErrorStatusBadArgument.Error() {
		t.Errorf("request headers in on_response_headers: %q, want bad argument", got)
	}
	l := waitLog(t, h, "request headers: ")
	if !strings.HasPrefix(l.Message, "request headers: :method,:path,:authority,:scheme,") ||
		!strings.Contains(l.Message, "x-forwarded-proto") || !strings.Contains(l.Message, "x-request-id") ||
		!strings.HasSuffix(l.Message, "mutations ok ok ok") {
		t.Errorf("log %q", l.Message)
	}
	seen := up.seen()[0].header
	if seen.Get("x-added") != "1" || seen.Get("x-replace") != "new" || seen.Get("x-remove") != "" ||
		seen.Get("x-keep") != "kept" || seen.Get("x-forwarded-proto") != "http" || seen.Get("x-request-id") == "" {
		t.Errorf("upstream saw %v", seen)
	}
	// on_log sees the final request headers and the response headers.
	waitLog(t, h, "stream done", "path /probe (ok)", `status "200"`)
}

// Streamed responses pass through unbuffered: the client reads the first event while the
// upstream is still waiting to send the second.
func TestStreamingIsNotBuffered(t *testing.T) {
	next := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: two\n\n")
	})
	h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
	resp, err := http.Get(h.URL() + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("x-seen-status") != "200 ok" || resp.Header.Get("content-type") != "text/event-stream" {
		t.Errorf("headers %v", resp.Header)
	}
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("read %q, want %q", got, want)
			}
		case <-time.After(wait):
			t.Fatalf("%q did not arrive: the response is buffered", want)
		}
	}
	expect("data: one")
	expect("")
	close(next)
	expect("data: two")
}

// Envoy's router answers for the upstream: 404 without a route, 503 when the upstream cannot
// be reached, 504 after the route timeout; the filter sees each on_response_headers.
func TestRouterReplies(t *testing.T) {
	t.Run("no route", func(t *testing.T) {
		h := startProbe(t, Config{Workers: 1})
		r := do(t, h, "GET", "/", nil, nil)
		if r.status != 404 || r.header.Get("x-seen-status") != "404 ok" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("connect failure", func(t *testing.T) {
		h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": freePort(t)}})
		r := do(t, h, "GET", "/", nil, nil)
		if r.status != 503 || r.body != bodyConnFailure || r.header.Get("x-seen-status") != "503 ok" {
			t.Errorf("%+v", r)
		}
	})
	t.Run("route timeout", func(t *testing.T) {
		up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		h := startProbe(t, Config{Workers: 1, RouteTimeout: 100 * time.Millisecond, UpstreamCluster: "up",
			Clusters: map[string]string{"up": up.addr}})
		r := do(t, h, "GET", "/", nil, nil)
		if r.status != 504 || r.body != bodyTimeout || r.header.Get("x-seen-status") != "504 ok" {
			t.Errorf("%+v", r)
		}
	})
}

// A request held past the stream idle timeout gets Envoy's 408, through the response path.
func TestIdleTimeoutOfHeldRequest(t *testing.T) {
	h := startProbe(t, Config{Workers: 1, StreamIdleTimeout: 100 * time.Millisecond})
	r := probe(t, h, "hold", nil)
	if r.status != 408 || r.body != "stream timeout" || r.header.Get("x-seen-status") != "408 ok" {
		t.Errorf("%+v", r)
	}
}

// A trap (here a Go panic in the module) answers that request 503 and fails the VM; what
// follows depends on the failure policy.
func TestTrapAndFailurePolicies(t *testing.T) {
	panicLogged := func(t *testing.T, h *Host) {
		t.Helper()
		l := waitLog(t, h, "Function: proxy_on_request_headers failed:")
		if !l.Host || l.Level != LogError {
			t.Errorf("trap log %+v", l)
		}
		// The Go runtime's report on stderr: every fd_write is one error line, as in Envoy.
		if l := waitLog(t, h, "probe: asked to panic"); l.Level != LogError || l.Host {
			t.Errorf("panic report %+v", l)
		}
	}
	t.Run("fail closed", func(t *testing.T) {
		up := newUpstream(t, echo)
		h := startProbe(t, Config{Workers: 1, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
		if r := probe(t, h, "panic", nil); r.status != 503 || r.body != "" {
			t.Errorf("trapping request: %+v", r)
		}
		panicLogged(t, h)
		if r := do(t, h, "GET", "/", nil, nil); r.status != 503 {
			t.Errorf("later request: %+v", r)
		}
		if !h.Failed(0) || len(up.seen()) != 0 {
			t.Errorf("failed %v, upstream saw %d", h.Failed(0), len(up.seen()))
		}
	})
	t.Run("fail open", func(t *testing.T) {
		up := newUpstream(t, echo)
		h := startProbe(t, Config{Workers: 1, FailurePolicy: FailOpen, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
		// CHECK_FAIL: with fail-open even the trapping request continues, without the filter.
		if r := probe(t, h, "panic", nil); r.status != 200 || r.header.Get("x-seen-status") != "" {
			t.Errorf("trapping request: %+v", r)
		}
		panicLogged(t, h)
		if r := do(t, h, "GET", "/", nil, nil); r.status != 200 || r.header.Get("x-seen-status") != "" {
			t.Errorf("later request should bypass the filter: %+v", r)
		}
	})
	t.Run("fail reload", func(t *testing.T) {
		up := newUpstream(t, echo)
		h := startProbe(t, Config{Workers: 1, FailurePolicy: FailReload, UpstreamCluster: "up", Clusters: map[string]string{"up": up.addr}})
		if r := probe(t, h, "panic", nil); r.status != 503 {
			t.Errorf("trapping request: %+v", r)
		}
		panicLogged(t, h)
		if r := do(t, h, "GET", "/", nil, nil); r.status != 200 || r.header.Get("x-seen-status") != "200 ok" {
			t.Errorf("later request should pass a fresh VM: %+v", r)
		}
		waitLog(t, h, "reloaded the failed VM")
		if n := countLogs(h, func(l Log) bool { return l.Worker == 0 && strings.HasPrefix(l.Message, "plugin start") }); n != 2 {
			t.Errorf("worker 0 started its plugin %d times, want 2", n)
		}
		if h.Failed(0) {
			t.Error("the worker's VM is still the failed one")
		}
	})
}

// Requests go round-robin over the workers, or stay with their connection's worker.
func TestWorkerSelection(t *testing.T) {
	// workersOf sends 4 requests one after the other and returns the worker of each (on_log
	// names the path; log order across workers need not be request order).
	workersOf := func(h *Host, client *http.Client) []int {
		for i := 0; i < 4; i++ {
			resp, err := client.Get(h.URL() + "/" + strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		ws := make([]int, 4)
		err := h.WaitFor(wait, func() bool {
			n := 0
			for _, l := range h.Logs() {
				for i := range ws {
					if strings.HasPrefix(l.Message, "stream done") && strings.Contains(l.Message, "path /"+strconv.Itoa(i)+" ") {
						ws[i] = l.Worker
						n++
					}
				}
			}
			return n == 4
		})
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	client := &http.Client{Transport: &http.Transport{}} // keeps its connection alive
	if ws := workersOf(startProbe(t, Config{Workers: 2}), client); ws[0] == ws[1] || ws[0] != ws[2] || ws[1] != ws[3] {
		t.Errorf("round-robin: workers %v", ws)
	}
	if ws := workersOf(startProbe(t, Config{Workers: 2, PerConnection: true}), client); ws[0] != ws[1] || ws[0] != ws[2] || ws[0] != ws[3] {
		t.Errorf("per connection: workers %v", ws)
	}
}

// Close ends held requests and returns.
func TestCloseEndsHeldRequests(t *testing.T) {
	h, err := Start(context.Background(), Config{Module: guest(t, "probe"), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := doErr(context.Background(), h, "GET", "/", map[string]string{"x-probe": "hold"}, nil)
		done <- err
	}()
	waitLog(t, h, "held ")
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if err := <-done; err == nil {
		t.Error("the held request got an answer")
	}
	waitLog(t, h, "stream done") // on_log still ran, before the VM stopped
}

// Close waits for every goroutine the host started: handlers of held requests, callouts in
// flight (cancelled without a callback), body pumps, VM loops and ticks.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	backend := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mod := guest(t, "probe")
	before := runtime.NumGoroutine()
	h, err := Start(context.Background(), Config{Module: mod, Workers: 2, Clusters: map[string]string{"backend": backend.addr}})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	send := func(headers map[string]string, body io.Reader) {
		req, _ := http.NewRequest("POST", h.URL()+"/", body)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		go func() {
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	send(map[string]string{"x-probe": "hold"}, strings.NewReader("body"))
	send(map[string]string{"x-probe": "callout", "x-path": "/slow", "x-timeout": "0"}, nil)
	waitLog(t, h, "held ")
	if err := h.WaitFor(wait, func() bool { return h.Callouts("backend") == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left, %d before Start:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
}
