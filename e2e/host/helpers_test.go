package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kagenti/token-exchange-filter/internal/compat"
	"github.com/kagenti/token-exchange-filter/internal/wasmbuild"
)

// wait is the deadline of every wait on a condition in these tests.
const wait = 10 * time.Second

// guest modules, built once per test binary from testdata/<name> with upstream Go.
var guests = sync.OnceValues(func() (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "host-guests-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, err
	}
	overlay, err := compat.Overlay(strings.TrimSpace(string(goroot)), filepath.Join(dir, "compat"))
	if err != nil {
		return nil, err
	}
	builds := map[string][]string{
		"probe":        {"-buildmode=c-shared", "./testdata/probe"},
		"probe-compat": {"-buildmode=c-shared", "-overlay", overlay, "./testdata/probe"}, // the filter's runtime patch
		"forbidden":    {"-buildmode=c-shared", "./testdata/forbidden"},
		"command":      {"./testdata/probe"}, // no c-shared: a WASI command whose _start exits
	}
	out := map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(builds))
	for name, args := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			file := filepath.Join(dir, name+".wasm")
			cmd := exec.Command("go", append([]string{"build", "-o", file}, args...)...)
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
			if msg, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("building %s: %v\n%s", name, err, msg)
				return
			}
			b, err := os.ReadFile(file)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			out[name] = b
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	return out, errors.Join(<-errs)
})

func guest(t *testing.T, name string) []byte {
	t.Helper()
	m, err := guests()
	if err != nil {
		t.Fatal(err)
	}
	return m[name]
}

// realFilter is the compiled filter: build/plugin.wasm under make test, else a fresh build.
func realFilter(t *testing.T) []byte {
	t.Helper()
	b, err := wasmbuild.Module()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// start starts a host and closes it at the end of the test; on failure it shows what was logged.
func start(t *testing.T, cfg Config) *Host {
	t.Helper()
	h, err := Start(context.Background(), cfg)
	if err != nil {
		var se *StartError
		if errors.As(err, &se) {
			for _, l := range se.Logs {
				t.Logf("log: %+v", l)
			}
		}
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			for _, l := range h.Logs() {
				t.Logf("log: %+v", l)
			}
		}
	})
	return h
}

func startProbe(t *testing.T, cfg Config) *Host {
	t.Helper()
	cfg.Module = guest(t, "probe")
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	return start(t, cfg)
}

type reply struct {
	status int
	header http.Header
	body   string
}

// do sends a request through the host and reads the whole answer.
func do(t *testing.T, h *Host, method, path string, headers map[string]string, body io.Reader) reply {
	t.Helper()
	r, err := doErr(context.Background(), h, method, path, headers, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func doErr(ctx context.Context, h *Host, method, path string, headers map[string]string, body io.Reader) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.URL()+path, body)
	if err != nil {
		return reply{}, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}, err
}

func probe(t *testing.T, h *Host, action string, headers map[string]string) reply {
	t.Helper()
	all := map[string]string{"x-probe": action}
	for k, v := range headers {
		all[k] = v
	}
	return do(t, h, "GET", "/probe", all, nil)
}

// waitLog waits for a log line containing all the fragments.
func waitLog(t *testing.T, h *Host, fragments ...string) Log {
	t.Helper()
	l, err := h.WaitLog(wait, func(l Log) bool { return containsAll(l.Message, fragments...) })
	if err != nil {
		t.Fatalf("no log line with %q: %v", fragments, err)
	}
	return l
}

func containsAll(s string, fragments ...string) bool {
	for _, f := range fragments {
		if !strings.Contains(s, f) {
			return false
		}
	}
	return true
}

func countLogs(h *Host, match func(Log) bool) int {
	n := 0
	for _, l := range h.Logs() {
		if match(l) {
			n++
		}
	}
	return n
}

// upstream is a loopback HTTP server recording what reached it.
type upstream struct {
	addr string
	mu   sync.Mutex
	reqs []*seenRequest
}

type seenRequest struct {
	header http.Header
	host   string
	path   string
	body   string
}

func newUpstream(t *testing.T, handler http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("content-type", "text/plain")
			fmt.Fprintf(w, "upstream saw %s %s", r.Method, r.URL.Path)
		}
	}
	u.addr = newLoopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, &seenRequest{header: r.Header.Clone(), host: r.Host, path: r.URL.RequestURI(), body: string(b)})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		handler(w, r)
	})
	return u
}

// newLoopbackServer serves handler on 127.0.0.1 until the test ends and returns its host:port.
func newLoopbackServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	ts := httptest.NewServer(handler)
	t.Cleanup(ts.Close)
	return strings.TrimPrefix(ts.URL, "http://")
}

func (u *upstream) seen() []*seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*seenRequest(nil), u.reqs...)
}
