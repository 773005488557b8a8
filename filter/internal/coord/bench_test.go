package coord

import (
	"errors"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

// benchHost is the least a Worker needs to serve requests: one VM, its queue answered inline,
// callouts answered by the benchmark.
type benchHost struct {
	now      int64
	pending  func(Answer)
	header   string
	upstream int
	clock    int // NowMs calls
}

func (h *benchHost) NowMs() int64                           { h.clock++; return h.now }
func (h *benchHost) WallMs() int64                          { return 1_800_000_000_000 + h.now }
func (h *benchHost) Random() uint64                         { return 42 }
func (h *benchHost) RegisterQueue(string) (uint32, error)   { return 0, errors.New("no queues") }
func (h *benchHost) ResolveQueue(string) (uint32, error)    { return 0, errors.New("no queues") }
func (h *benchHost) Enqueue(uint32, []byte) error           { return errors.New("no queues") }
func (h *benchHost) Dequeue(uint32) ([]byte, error)         { return nil, errors.New("empty") }
func (h *benchHost) Focus(uint32) error                     { return nil }
func (h *benchHost) SetRequestHeader(_, value string) error { h.header = value; return nil }
func (h *benchHost) ResumeRequest() error                   { h.upstream++; return nil }
func (h *benchHost) SendReply(uint32, [][2]string, []byte) error {
	return nil
}
func (h *benchHost) Log(Level, string)   {}
func (h *benchHost) Count(Metric, int64) {}
func (h *benchHost) Dispatch(_ string, _ [][2]string, _ []byte, _ uint32, onAnswer func(Answer)) error {
	h.pending = onAnswer
	return nil
}

// exchangeWorker is a worker with exchange on (audience "api") on a benchHost, its memo empty.
func exchangeWorker(tb testing.TB) (*Worker, *benchHost) {
	tb.Helper()
	cfg, err := config.Parse([]byte(`{"tokenEndpoint":"https://kc.example.com/realms/demo/protocol/openid-connect/token",
		"clientId":"gateway","clientSecret":"bench-secret","tokenExchange":{"enabled":true,"audience":"api"}}`), nil)
	if err != nil {
		tb.Fatal(err)
	}
	h := &benchHost{now: 1000}
	return NewWorker(h, cfg, cachetest.NewEnvoyStore()), h
}

// hitWorker is a worker whose memo holds the user's exchanged token.
func hitWorker(tb testing.TB) (*Worker, *benchHost, mapHeaders) {
	tb.Helper()
	w, h := exchangeWorker(tb)
	hdr := mapHeaders{"x-user-oidc-token": userToken(7)}
	if a := w.NewRequest(1).OnRequestHeaders(hdr); a != Pause || h.pending == nil {
		tb.Fatalf("the first request was not held for an exchange (%v)", a)
	}
	h.pending(Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"xtok-bench","expires_in":300}`)})
	if h.header != "Bearer xtok-bench" {
		tb.Fatalf("first request got %q", h.header)
	}
	return w, h, hdr
}

// A memo hit allocates nothing: no hashing, no decoding, the "Bearer …" value ready.
func TestMemoHitAllocatesNothing(t *testing.T) {
	w, h, hdr := hitWorker(t)
	tok := userToken(7)
	req := w.NewRequest(2) // a stream's state is allocated once, when the stream starts
	allocs := testing.AllocsPerRun(200, func() {
		hdr["x-user-oidc-token"] = tok
		*req = Request{id: 2, w: w}
		if req.OnRequestHeaders(hdr) != Continue || h.header != "Bearer xtok-bench" {
			t.Fatal("not a hit")
		}
	})
	if allocs != 0 {
		t.Errorf("a memo hit allocates %.1f times", allocs)
	}
}

func BenchmarkMemoHit(b *testing.B) {
	w, _, hdr := hitWorker(b)
	tok := userToken(7)
	req := w.NewRequest(2)
	b.ReportAllocs()
	for b.Loop() {
		hdr["x-user-oidc-token"] = tok
		*req = Request{id: 2, w: w}
		req.OnRequestHeaders(hdr)
	}
}

// The memo stays within its byte budget whatever the token sizes, and within its entry count.
func TestMemoIsBounded(t *testing.T) {
	var m memo
	for i := 0; i < 5000; i++ {
		tok := userToken(i%256) + strings.Repeat("p", i%5000)
		m.put(memoKey{userToken: tok, audience: "api"}, &memoEntry{bearer: "Bearer " + tok, token: tok, key: "k", untilMs: 1 << 40})
		if m.bytes > maxMemoBytes || len(m.entries) > maxMemoEntries {
			t.Fatalf("after %d puts: %d bytes in %d entries", i+1, m.bytes, len(m.entries))
		}
	}
	sum := 0
	for _, e := range m.entries {
		sum += entryBytes(e)
	}
	if sum != m.bytes {
		t.Fatalf("accounting: %d bytes counted, %d held", m.bytes, sum)
	}
}

// The memo is keyed by a summary of the user token (its length and last bytes): a token made up
// to share another's summary is never served the other's token, and only takes its place.
func TestMemoSummaryCollisionIsAMissNeverAnotherTokensAnswer(t *testing.T) {
	w, h, hdr := hitWorker(t)
	a := userToken(7)
	// The same length and the same last bytes, another header: a JWT of its own
	// ({"axy":"RS256"} instead of {"alg":"RS256"}; base64 characters 4-7 are bytes 3-5).
	b := a[:4] + "eHki" + a[8:]
	if len(a) <= memoTail || a[len(a)-memoTail:] != b[len(b)-memoTail:] || (memoKey{userToken: a}).slot() != (memoKey{userToken: b}).slot() {
		t.Fatal("the test tokens do not collide")
	}
	h.header, h.pending = "", nil
	hdr["x-user-oidc-token"] = b
	if w.NewRequest(2).OnRequestHeaders(hdr) == Continue && h.header == "Bearer xtok-bench" {
		t.Fatal("a token sharing the summary of a cached one was sent that one's exchanged token")
	}
	if h.pending == nil {
		t.Fatalf("the colliding token was not exchanged on its own (upstream got %q)", h.header)
	}
	h.pending(Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"xtok-b","expires_in":300}`)})
	if h.header != "Bearer xtok-b" {
		t.Fatalf("the colliding token's request got %q", h.header)
	}
	// Both users are served their own token from here on (a from shared data again).
	for i, c := range []struct{ user, want string }{{a, "Bearer xtok-bench"}, {b, "Bearer xtok-b"}, {a, "Bearer xtok-bench"}} {
		h.header = ""
		hdr["x-user-oidc-token"] = c.user
		if w.NewRequest(uint32(3+i)).OnRequestHeaders(hdr) != Continue || h.header != c.want {
			t.Fatalf("request %d got %q, want %q", i, h.header, c.want)
		}
	}
}

// sameToken tells tokens apart wherever they differ, whatever their lengths.
func TestSameToken(t *testing.T) {
	base := strings.Repeat("abcdefghij", 160)
	for n := 0; n <= 140; n++ { // every remainder after zero, one and two 64-byte turns (8-byte words, then bytes)
		a := base[:n]
		if !sameToken(a, strings.Clone(a)) {
			t.Fatalf("length %d: a token differs from its copy", n)
		}
		for i := 0; i < n; i++ {
			b := []byte(a)
			b[i] ^= 0x20
			if sameToken(a, string(b)) {
				t.Fatalf("length %d: a difference at byte %d went unseen", n, i)
			}
		}
		if n > 0 && sameToken(a, a[:n-1]) {
			t.Fatalf("length %d: a prefix counts as the token", n)
		}
	}
	if !sameToken(base, strings.Clone(base)) || sameToken(base, base[:len(base)-1]+"k") {
		t.Fatal("a 1.6 KB token")
	}
}
