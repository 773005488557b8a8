// Package upstream is an echo server that stands in for the API behind the token-exchange filter in
// end-to-end tests.
//
// Any request is answered 200 with a JSON description of what arrived:
//
//	{"method":"GET","path":"/x","query":"a=1","host":"127.0.0.1:1234",
//	 "headers":{"authorization":["Bearer eyJ…"],"x-backstage-user":["alice"]},
//	 "claims":{…payload of the Bearer JWT of authorization, not verified…} or null,
//	 "body":"…" (bodies up to 64 KiB),"body_size":3,"body_sha256":"…"}
//
// Header names are lower-cased. With SetVerifier, "verified" (and "verify_error") tell whether
// the bearer token passed the verifier.
//
// GET /sse?events=N&interval=50ms streams N server-sent events "data: event i" (i = 1..N), one
// every interval, flushing after each. With hold=1 the stream stops after the first event until
// ReleaseStreams is called: a client that reads event 1 while the stream is held proves that
// nothing on the way buffers the response.
//
// A request is answered with another status when it carries the header x-echo-status: <code>
// (e.g. 401), or 401 when its bearer token was passed to Reject. The header x-echo-delay: <duration>
// delays the answer. Every request is recorded (Requests, WaitForRequests).
package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxEchoBody is the largest request body echoed in the "body" field.
const MaxEchoBody = 64 << 10

// Headers the echo server understands.
const (
	HeaderStatus = "x-echo-status"
	HeaderDelay  = "x-echo-delay"
)

// Request is a request the upstream received.
type Request struct {
	Time     time.Time
	Method   string
	Path     string
	RawQuery string
	Host     string
	Header   http.Header
	// BearerToken of the authorization header ("" if none); Claims its payload (nil if none or
	// not a JWT), not verified.
	BearerToken string
	Claims      map[string]any
	// Body up to MaxEchoBody bytes; BodySize and BodySHA256 of the whole body.
	Body       []byte
	BodySize   int64
	BodySHA256 string
	// Status the upstream answered.
	Status int
	// EventTimes are the times the events of a /sse stream were sent (so far): written and
	// flushed right after.
	EventTimes []time.Time
}

// Echo is the JSON answer of the upstream.
type Echo struct {
	Method      string              `json:"method"`
	Path        string              `json:"path"`
	Query       string              `json:"query,omitempty"`
	Host        string              `json:"host"`
	Headers     map[string][]string `json:"headers"`
	Claims      map[string]any      `json:"claims"`
	Body        *string             `json:"body,omitempty"`
	BodySize    int64               `json:"body_size"`
	BodySHA256  string              `json:"body_sha256"`
	Verified    *bool               `json:"verified,omitempty"`
	VerifyError string              `json:"verify_error,omitempty"`
	Rejected    bool                `json:"rejected,omitempty"`
}

// Upstream is a running echo server. Its methods are safe for concurrent use.
type Upstream struct {
	addr string
	srv  *http.Server

	mu       sync.Mutex
	rejected map[string]bool
	verify   func(string) (map[string]any, error)
	requests []*Request
	changed  chan struct{}
	released int // generation of ReleaseStreams
}

// Start starts an echo upstream on listen (default "127.0.0.1:0"; loopback addresses only).
// It accepts HTTP/1.1 and cleartext HTTP/2 (h2c with prior knowledge).
func Start(listen string) (*Upstream, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if err := checkLoopback(listen); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("upstream: listen: %w", err)
	}
	u := &Upstream{addr: ln.Addr().String(), rejected: map[string]bool{}, changed: make(chan struct{})}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	u.srv = &http.Server{
		Handler:           u,
		ReadHeaderTimeout: 30 * time.Second,
		Protocols:         &protocols,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

// URL is http://127.0.0.1:<port>.
func (u *Upstream) URL() string { return "http://" + u.addr }

// Addr is 127.0.0.1:<port>.
func (u *Upstream) Addr() string { return u.addr }

// Port is the TCP port.
func (u *Upstream) Port() int {
	_, p, _ := net.SplitHostPort(u.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Close stops the server and closes every connection.
func (u *Upstream) Close() error { return u.srv.Close() }

// Reject makes every request whose bearer token is token (with or without "Bearer ") answer 401.
func (u *Upstream) Reject(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rejected[stripBearer(token)] = true
}

// Unreject undoes Reject.
func (u *Upstream) Unreject(token string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.rejected, stripBearer(token))
}

// SetVerifier sets a function that verifies bearer tokens (e.g. (*idp.IdP).VerifyToken); the echo
// then reports "verified" and "verify_error". Verification never changes the status.
func (u *Upstream) SetVerifier(verify func(token string) (map[string]any, error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.verify = verify
}

// ReleaseStreams lets every /sse stream held (hold=1) before this call go on.
func (u *Upstream) ReleaseStreams() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.released++
	u.notifyLocked()
}

// Requests returns copies of the requests received so far, oldest first.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]Request, len(u.requests))
	for i, r := range u.requests {
		c := *r
		c.Header = r.Header.Clone()
		c.Body = slices.Clone(r.Body)
		c.EventTimes = slices.Clone(r.EventTimes)
		out[i] = c
	}
	return out
}

// RequestCount is the number of requests received.
func (u *Upstream) RequestCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

// LastRequest returns the latest request (false when there is none).
func (u *Upstream) LastRequest() (Request, bool) {
	all := u.Requests()
	if len(all) == 0 {
		return Request{}, false
	}
	return all[len(all)-1], true
}

// Reset forgets the recorded requests (rejected tokens and the verifier stay).
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.requests = nil
	u.notifyLocked()
}

// WaitFor waits until cond holds for the recorded requests (checked now and after every change),
// or ctx ends.
func (u *Upstream) WaitFor(ctx context.Context, cond func([]Request) bool) error {
	for {
		u.mu.Lock()
		ch := u.changed
		u.mu.Unlock()
		reqs := u.Requests()
		if cond(reqs) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("upstream: condition not reached after %d requests: %w", len(reqs), ctx.Err())
		}
	}
}

// WaitForRequests waits until at least n requests have been received.
func (u *Upstream) WaitForRequests(ctx context.Context, n int) error {
	return u.WaitFor(ctx, func(r []Request) bool { return len(r) >= n })
}

func (u *Upstream) notifyLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// ServeHTTP echoes the request, or streams events on GET /sse.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, size, sum := readBody(r.Body)
	token := bearerToken(r.Header.Get("Authorization"))
	rec := &Request{
		Time:        time.Now(),
		Method:      r.Method,
		Path:        r.URL.Path,
		RawQuery:    r.URL.RawQuery,
		Host:        r.Host,
		Header:      r.Header.Clone(),
		BearerToken: token,
		Claims:      decodeClaims(token),
		Body:        body,
		BodySize:    size,
		BodySHA256:  sum,
	}

	u.mu.Lock()
	rejected := token != "" && u.rejected[token]
	verify := u.verify
	u.mu.Unlock()

	status := http.StatusOK
	if rejected {
		status = http.StatusUnauthorized
	}
	if v := r.Header.Get(HeaderStatus); v != "" {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 100 && n <= 999 {
			status = n
		}
	}
	rec.Status = status
	u.mu.Lock()
	u.requests = append(u.requests, rec)
	u.notifyLocked()
	u.mu.Unlock()

	if v := r.Header.Get(HeaderDelay); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
	}

	if status == http.StatusOK && r.Method == http.MethodGet && r.URL.Path == "/sse" {
		u.serveSSE(w, r, rec)
		return
	}

	echo := Echo{
		Method:     r.Method,
		Path:       r.URL.Path,
		Query:      r.URL.RawQuery,
		Host:       r.Host,
		Headers:    lowerHeaders(r.Header),
		Claims:     rec.Claims,
		BodySize:   size,
		BodySHA256: sum,
		Rejected:   rejected,
	}
	if size <= MaxEchoBody {
		s := string(body)
		echo.Body = &s
	}
	if verify != nil && token != "" {
		_, err := verify(token)
		ok := err == nil
		echo.Verified = &ok
		if err != nil {
			echo.VerifyError = err.Error()
		}
	}
	if rejected && status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	b, _ := json.Marshal(echo)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serveSSE streams events=N (default 5) events, interval (default 50ms) apart.
func (u *Upstream) serveSSE(w http.ResponseWriter, r *http.Request, rec *Request) {
	q := r.URL.Query()
	events := 5
	if v := q.Get("events"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			events = n
		}
	}
	interval := 50 * time.Millisecond
	if v := q.Get("interval"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			interval = d
		}
	}
	hold := q.Get("hold") == "1" || q.Get("hold") == "true"
	u.mu.Lock()
	generation := u.released
	u.mu.Unlock()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
	for i := 1; i <= events; i++ {
		if i == 2 && hold && !u.waitRelease(r.Context(), generation) {
			return
		}
		if i > 1 && interval > 0 {
			t := time.NewTimer(interval)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		// The time is recorded before the event is written, so a client that has read event i
		// finds i entries in EventTimes.
		u.mu.Lock()
		rec.EventTimes = append(rec.EventTimes, time.Now())
		u.notifyLocked()
		u.mu.Unlock()
		if _, err := fmt.Fprintf(w, "data: event %d\n\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// waitRelease waits for a ReleaseStreams after generation; false if ctx ends first.
func (u *Upstream) waitRelease(ctx context.Context, generation int) bool {
	for {
		u.mu.Lock()
		released, ch := u.released > generation, u.changed
		u.mu.Unlock()
		if released {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func readBody(body io.Reader) (head []byte, size int64, sum string) {
	h := sha256.New()
	var buf strings.Builder
	n, _ := io.Copy(io.MultiWriter(h, &limitWriter{w: &buf, n: MaxEchoBody}), body)
	return []byte(buf.String()), n, hex.EncodeToString(h.Sum(nil))
}

// limitWriter writes the first n bytes to w and discards the rest.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(int64(len(p)), l.n)
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		l.n -= k
	}
	return len(p), nil
}

func lowerHeaders(h http.Header) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		lk := strings.ToLower(k)
		out[lk] = append(out[lk], v...)
	}
	return out
}

// bearerToken returns the token of an "Authorization: Bearer <token>" value.
func bearerToken(h string) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

func stripBearer(t string) string {
	if tok := bearerToken(t); tok != "" {
		return tok
	}
	return strings.TrimSpace(t)
}

// decodeClaims returns the payload of a JWT, not verified (nil if token is not a JWT).
func decodeClaims(token string) map[string]any {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil
	}
	return claims
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("upstream: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return errors.New("upstream: listen address " + addr + " is not a loopback address")
	}
	return nil
}
