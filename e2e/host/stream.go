package host

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// phase of a stream, as seen from the filter.
type phase int

const (
	phRequest  phase = iota // on_request_headers ran or the request is held
	phUpstream              // the request went upstream; no response headers yet
	phResponse              // on_response_headers ran or the response is held
	phBody                  // response headers went to the client (or the stream was reset)
	phDone                  // on_done/on_log/on_delete delivered, context gone
)

type outcomeKind int

const (
	outForward outcomeKind = iota // send the request upstream with these headers
	outRespond                    // write this response (headers, and body if local)
	outReset                      // reset the stream (abort the client connection)
)

type outcome struct {
	kind    outcomeKind
	headers pairs
	body    []byte
	local   bool
}

// stream is one HTTP request through the filter: an HTTP context in one VM. Fields below out
// are owned by the VM's loop; the handler goroutine only receives outcomes on out.
type stream struct {
	h        *Host
	v        *vm
	out      chan outcome
	remote   string
	local    string
	protocol string
	start    time.Time

	cancelMu sync.Mutex
	cancelUp context.CancelFunc // aborts the upstream exchange (set by the handler)

	id        uint32
	plugin    int      // which plugin configuration's listener took the request
	root      *rootCtx // that plugin's root context in v
	phase     phase
	created   bool
	paused    bool // the phase's callback stopped iteration and nothing resumed it yet
	resume    bool // continue_stream arrived during the callback that then stopped
	wasReset  bool
	req       pairs
	reqOpen   bool // request_headers_ is set
	resp      pairs
	respOpen  bool // response_headers_ is set
	localBody []byte
	isLocal   bool
	logPhase  bool
	props     map[string][]byte
}

func (s *stream) send(o outcome) {
	select {
	case s.out <- o:
	default: // at most one outcome per phase plus one reset fit; never block the loop
	}
}

// begin creates the HTTP context and runs on_request_headers (ActiveStream::decodeHeaders).
func (s *stream) begin(endOfStream bool) {
	v := s.v
	if v.failed.Load() {
		s.afterFailure()
		return
	}
	s.id = v.newContextID()
	s.root = v.roots[s.plugin]
	v.streams[s.id] = s
	if _, _, ok := v.call("proxy_on_context_create", s.id, uint64(s.id), uint64(s.root.id)); !ok {
		s.afterFailure()
		return
	}
	s.created = true
	s.reqOpen = true
	ret, stopped, ok := v.call("proxy_on_request_headers", s.id, uint64(s.id), uint64(len(s.req)), b2u(endOfStream))
	switch {
	case !ok:
		s.afterFailure()
	case s.phase != phRequest: // a local reply or a reset took over
	case (uint32(ret) == 0 && !stopped) || s.resume:
		s.forward()
	default:
		s.paused = true // Pause (or any stop) is StopAllIterationAndWatermark: the whole request waits
	}
}

func (s *stream) forward() {
	s.paused, s.resume, s.reqOpen = false, false, false
	s.phase = phUpstream
	s.send(outcome{kind: outForward, headers: s.req.clone()})
}

// continueRequest is the deferred continueDecoding of proxy_continue_stream(Request).
func (s *stream) continueRequest() {
	if s.phase != phRequest {
		return
	}
	if s.paused {
		s.forward()
	} else {
		s.resume = true
	}
}

// continueResponse is the deferred continueEncoding of proxy_continue_stream(Response).
func (s *stream) continueResponse() {
	if s.phase != phResponse {
		return
	}
	if s.paused {
		s.respond()
	} else {
		s.resume = true
	}
}

// sendLocal is the deferred sendLocalReply of proxy_send_local_response. Before the response
// started it goes through the response path (on_response_headers sees it); while the filter
// holds the upstream's response headers it replaces them without another callback; once
// headers went to the client, the stream is reset.
func (s *stream) sendLocal(code uint32, body []byte, extra pairs) {
	h := localReplyHeaders(int(code), body, extra)
	switch s.phase {
	case phRequest, phUpstream:
		s.cancelUpstream()
		s.response(h, body, true)
	case phResponse:
		s.resp, s.localBody, s.isLocal = h, body, true
		s.respond()
	case phBody:
		s.reset()
	}
}

// response runs on_response_headers for a response from upstream or a local reply.
func (s *stream) response(h pairs, body []byte, local bool) {
	s.phase = phResponse
	s.paused, s.resume, s.reqOpen = false, false, false
	s.resp, s.localBody, s.isLocal = h, body, local
	if !s.created || s.v.failed.Load() {
		if s.v.failed.Load() {
			s.afterFailure()
		} else {
			s.respond()
		}
		return
	}
	s.respOpen = true
	endOfStream := local && len(body) == 0
	ret, stopped, ok := s.v.call("proxy_on_response_headers", s.id, uint64(s.id), uint64(len(h)), b2u(endOfStream))
	switch {
	case !ok:
		s.afterFailure()
	case s.phase != phResponse:
	case (uint32(ret) == 0 && !stopped) || s.resume:
		s.respond()
	default:
		s.paused = true
	}
}

// upstreamResponse hands the upstream's (or the router's) response to the filter, unless a
// local reply already answered.
func (s *stream) upstreamResponse(h pairs, body []byte, local bool) {
	if s.phase == phUpstream {
		s.response(h, body, local)
	}
}

func (s *stream) respond() {
	s.paused, s.resume, s.respOpen = false, false, false
	s.phase = phBody
	s.send(outcome{kind: outRespond, headers: s.resp.clone(), body: s.localBody, local: s.isLocal})
}

// reset is resetStream: the client connection is aborted and the stream ends.
func (s *stream) reset() {
	if s.wasReset || s.phase == phDone {
		return
	}
	s.wasReset = true
	s.phase = phBody
	s.cancelUpstream()
	s.send(outcome{kind: outReset})
}

func (s *stream) cancelUpstream() {
	s.cancelMu.Lock()
	defer s.cancelMu.Unlock()
	if s.cancelUp != nil {
		s.cancelUp()
	}
}

// afterFailure applies the failure policy to this stream after its VM failed (CHECK_FAIL):
// fail-open streams carry on without the filter; otherwise a 503 local reply that no longer
// passes through the failed VM, or a reset once the response started.
func (s *stream) afterFailure() {
	if s.h.cfg.FailurePolicy == FailOpen {
		switch s.phase {
		case phRequest:
			s.forward()
		case phResponse:
			s.respond()
		}
		return
	}
	switch s.phase {
	case phRequest, phUpstream, phResponse:
		s.cancelUpstream()
		s.resp, s.localBody, s.isLocal = pairs{{":status", "503"}}, nil, true
		s.respond()
	case phBody:
		s.reset()
	}
}

// idleTimeout is Envoy's stream idle timeout for a request the filter holds: a 408 local reply.
func (s *stream) idleTimeout() {
	if s.phase == phRequest {
		s.sendLocal(http.StatusRequestTimeout, []byte("stream timeout"), nil)
	}
}

// finish ends the stream as Envoy does, unless the VM failed (then Envoy calls nothing):
// HTTP/1 and HTTP/2 log first (doDeferredStreamDestroy runs the access loggers, then destroys
// the filters; Context::onDestroy calls onDone then onDelete): on_log (with the final request
// and response headers readable), on_done, on_delete. With Config.DeferredLog (HTTP/3's
// QuicStatsGatherer) the filters are destroyed first and on_log comes later, after on_delete.
// Either way the C++ context outlives on_delete a little (deferred deletion): until then
// proxy_set_effective_context on its id succeeds and stream calls on it answer Ok doing nothing.
func (s *stream) finish() {
	if s.phase == phDone {
		return
	}
	s.phase = phDone
	s.reqOpen, s.respOpen = false, false
	v := s.v
	delete(v.streams, s.id)
	if !s.created {
		return
	}
	v.zombies[s.id] = s
	if !v.h.cfg.DeferredLog {
		s.log()
	}
	v.call("proxy_on_done", s.id, uint64(s.id))
	v.call("proxy_on_delete", s.id, uint64(s.id))
	if !v.h.cfg.DeferredLog {
		v.post(func() { delete(v.zombies, s.id) })
		return
	}
	time.AfterFunc(v.h.cfg.DeferredLogDelay, func() {
		v.post(func() {
			s.log()
			delete(v.zombies, s.id)
		})
	})
}

func (s *stream) log() {
	s.logPhase = true
	s.v.call("proxy_on_log", s.id, uint64(s.id))
	s.logPhase = false
}

// await waits for the loop's next outcome, for the client to go away, or for the host to close
// (then the handler aborts the connection: no answer is better than a made-up one). While the
// filter holds the request, Envoy's stream idle timeout applies.
func (s *stream) await(ctx context.Context, held bool) (outcome, bool) {
	var idle <-chan time.Time
	if held && s.h.cfg.StreamIdleTimeout > 0 {
		t := time.NewTimer(s.h.cfg.StreamIdleTimeout)
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case o := <-s.out:
			return o, true
		case <-ctx.Done():
			return outcome{}, false
		case <-s.h.closing:
			panic(http.ErrAbortHandler)
		case <-idle:
			idle = nil
			s.v.post(s.idleTimeout)
		}
	}
}

// ServeHTTP is the listener: the HTTP connection manager with this filter, then the router to
// the upstream cluster.
func (h *Host) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.enter() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer h.wg.Done()
	_ = http.NewResponseController(w).EnableFullDuplex()
	body := h.startBodyPump(r)
	defer body.stop()
	req := requestPairs(r)
	v, mode := h.slotFor(r).get(h)
	switch mode {
	case modeBypass:
		h.proxy(w, r, nil, req, body)
		return
	case modeFailed:
		h.writeResponse(w, r.Context(), outcome{kind: outRespond, headers: pairs{{":status", "503"}}, local: true}, nil)
		return
	}
	s := &stream{h: h, v: v, out: make(chan outcome, 4), remote: r.RemoteAddr, protocol: r.Proto,
		start: time.Now(), req: req}
	if i, ok := r.Context().Value(pluginKey{}).(int); ok {
		s.plugin = i
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(interface{ String() string }); ok {
		s.local = la.String()
	}
	eos := body == nil
	v.post(func() { s.begin(eos) })
	defer v.post(s.finish)
	h.proxy(w, r, s, req, body)
}

// proxy runs one exchange. s is nil when the filter is bypassed (fail-open after a failure).
func (h *Host) proxy(w http.ResponseWriter, r *http.Request, s *stream, req pairs, body *bodyPump) {
	ctx := r.Context()
	var fromLoop chan outcome // nil without a filter: never ready
	if s != nil {
		fromLoop = s.out
		o, ok := s.await(ctx, true)
		if !ok {
			return
		}
		switch o.kind {
		case outRespond:
			h.writeResponse(w, ctx, o, nil)
			return
		case outReset:
			panic(http.ErrAbortHandler)
		}
		req = o.headers
	}

	upCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s != nil {
		s.cancelMu.Lock()
		s.cancelUp = cancel
		s.cancelMu.Unlock()
	}
	results := make(chan upstreamResult, 1)
	if !h.goTrack(func() { results <- h.roundTrip(upCtx, cancel, req, body) }) {
		return
	}
	var res upstreamResult
	select {
	case res = <-results:
	case o := <-fromLoop: // a local reply or a reset while the request was upstream
		cancel()
		(<-results).close()
		h.finishWith(w, ctx, o)
		return
	case <-ctx.Done():
		cancel()
		(<-results).close()
		return
	case <-h.closing:
		cancel()
		(<-results).close()
		panic(http.ErrAbortHandler)
	}

	if s == nil {
		h.writeResponse(w, ctx, outcome{kind: outRespond, headers: res.headers, body: res.local, local: res.resp == nil}, res.body())
		return
	}
	s.v.post(func() { s.upstreamResponse(res.headers, res.local, res.resp == nil) })
	o, ok := s.await(ctx, false)
	if !ok {
		res.close()
		return
	}
	if o.kind != outRespond || o.local {
		res.close()
		h.finishWith(w, ctx, o)
		return
	}
	h.writeResponse(w, ctx, o, res.body())
}

func (h *Host) finishWith(w http.ResponseWriter, ctx context.Context, o outcome) {
	if o.kind == outRespond {
		h.writeResponse(w, ctx, o, nil)
		return
	}
	panic(http.ErrAbortHandler)
}

// upstreamResult is the upstream's response, or the router's local reply when there is none.
type upstreamResult struct {
	resp    *http.Response
	headers pairs
	local   []byte
}

func (u upstreamResult) body() io.ReadCloser {
	if u.resp == nil {
		return nil
	}
	return u.resp.Body
}

func (u upstreamResult) close() {
	if u.resp != nil {
		u.resp.Body.Close()
	}
}

// roundTrip sends the request to the route's cluster. Failures become Envoy router replies:
// no route 404, connect failure or reset before headers 503, route timeout 504 (here the
// timeout covers the wait for response headers; cancel aborts the exchange).
func (h *Host) roundTrip(ctx context.Context, cancel context.CancelFunc, req pairs, body *bodyPump) upstreamResult {
	local := func(code int, msg string) upstreamResult {
		return upstreamResult{headers: localReplyHeaders(code, []byte(msg), nil), local: []byte(msg)}
	}
	if h.cfg.UpstreamCluster == "" {
		return local(http.StatusNotFound, "")
	}
	var rb io.Reader = http.NoBody
	length := int64(0)
	if body != nil {
		rb, length = body, body.length
	}
	var timedOut atomic.Bool
	if h.cfg.RouteTimeout > 0 {
		t := time.AfterFunc(h.cfg.RouteTimeout, func() { timedOut.Store(true); cancel() })
		defer t.Stop()
	}
	r, err := outboundRequest(ctx, h.cfg.Clusters[h.cfg.UpstreamCluster], req, rb, length)
	if err != nil {
		return local(http.StatusNotFound, "")
	}
	resp, err := h.transport.RoundTrip(r)
	if err != nil {
		if timedOut.Load() {
			return local(http.StatusGatewayTimeout, bodyTimeout)
		}
		_, msg := upstreamFailure(ctx, err)
		return local(http.StatusServiceUnavailable, msg)
	}
	return upstreamResult{resp: resp, headers: responsePairs(resp)}
}

// writeResponse writes a response to the client: headers as the filter left them, then the
// local body or the upstream body, every chunk flushed at once (streams and server-sent events
// pass through unbuffered). A failure of the upstream body after headers resets the client.
func (h *Host) writeResponse(w http.ResponseWriter, ctx context.Context, o outcome, upstream io.ReadCloser) {
	status := http.StatusBadGateway
	if code, err := strconv.Atoi(headerOr(o.headers, ":status")); err == nil && code >= 100 && code <= 999 {
		status = code
	}
	hdr := w.Header()
	for _, kv := range o.headers {
		if !strings.HasPrefix(kv[0], ":") && !hopByHop[kv[0]] {
			hdr.Add(kv[0], kv[1])
		}
	}
	if _, ok := o.headers.get("content-type"); !ok {
		hdr["Content-Type"] = nil // Envoy adds none; keep Go from sniffing one
	}
	if o.local && len(o.body) == 0 {
		hdr.Set("Content-Length", "0")
	}
	w.WriteHeader(status)
	if o.local || upstream == nil {
		_, _ = w.Write(o.body)
		return
	}
	defer upstream.Close()
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := upstream.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			panic(http.ErrAbortHandler) // upstream reset after headers, or a reset by the filter
		}
	}
}

// requestPairs is the request header map Envoy's connection manager hands to filters:
// pseudo-headers first, lower-case names, plus x-forwarded-proto and a generated
// x-request-id when absent. Go does not keep header order, so names are sorted.
func requestPairs(r *http.Request) pairs {
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") {
		path = r.URL.RequestURI()
	}
	p := pairs{{":method", r.Method}, {":path", path}, {":authority", r.Host}, {":scheme", "http"}}
	p.addHeader(r.Header)
	if len(r.TransferEncoding) > 0 {
		p.add("transfer-encoding", strings.Join(r.TransferEncoding, ", "))
	}
	if _, ok := p.get("x-forwarded-proto"); !ok {
		p.add("x-forwarded-proto", "http")
	}
	if _, ok := p.get("x-request-id"); !ok {
		p.add("x-request-id", newUUID())
	}
	return p
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// bodyPump reads the client's request body as Envoy does: into a bounded buffer (1 MiB, the
// default per-connection buffer limit) from the start, whether or not the filter holds the
// request; nothing of it goes upstream before the request continues. Reading also lets Go
// notice a client that goes away while its request is held.
type bodyPump struct {
	ch     chan []byte
	err    error // set before ch is closed
	cur    []byte
	length int64
	done   chan struct{}
	once   sync.Once
}

func (h *Host) startBodyPump(r *http.Request) *bodyPump {
	if r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
		return nil
	}
	p := &bodyPump{ch: make(chan []byte, 32), length: r.ContentLength, done: make(chan struct{})}
	if !h.goTrack(func() {
		defer close(p.ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := r.Body.Read(buf)
			if n > 0 {
				select {
				case p.ch <- buf[:n]:
				case <-p.done:
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					p.err = err
				}
				return
			}
		}
	}) {
		return nil
	}
	return p
}

func (p *bodyPump) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		c, ok := <-p.ch
		if !ok {
			if p.err != nil {
				return 0, p.err
			}
			return 0, io.EOF
		}
		p.cur = c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

func (p *bodyPump) stop() {
	if p != nil {
		p.once.Do(func() { close(p.done) })
	}
}
