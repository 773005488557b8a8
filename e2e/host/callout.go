package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// calloutResult is what proxy_on_http_call_response sees: headers (with :status) and body, or
// nil headers for a failure after the response started (0 headers, 0 body, as Envoy's
// onHttpCallFailure).
type calloutResult struct {
	headers pairs
	body    []byte
}

// Envoy's local replies for a failed upstream request (router and async client).
const (
	bodyTimeout     = "upstream request timeout"
	bodyConnFailure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyConnReset   = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
)

// localReplyHeaders are the headers of an Envoy local reply: :status, then for a non-empty body
// content-length and content-type text/plain unless extra set one.
func localReplyHeaders(code int, body []byte, extra pairs) pairs {
	h := pairs{{":status", strconv.Itoa(code)}}
	h = append(h, extra...)
	if len(body) > 0 {
		h.replace("content-length", strconv.Itoa(len(body)))
		if _, ok := h.get("content-type"); !ok {
			h.add("content-type", "text/plain")
		}
	}
	return h
}

// httpCall is proxy_http_call (Context::httpCall): the callout belongs to the root context, is
// sent over real HTTP to the cluster's address, and is answered on this VM's loop through
// proxy_on_http_call_response(root, token, ...), never inside the call that dispatched it.
func (v *vm) httpCall(cluster string, hdrs pairs, body []byte, timeoutMs uint32) (uint32, uint32) {
	h := v.h
	addr, ok := h.cfg.Clusters[cluster]
	if !ok || int32(timeoutMs) < 0 {
		return 0, statusBadArgument
	}
	for _, name := range []string{":path", ":method", ":authority"} {
		if _, ok := hdrs.get(name); !ok {
			return 0, statusBadArgument
		}
	}
	if h.clusterUnhealthy(cluster) {
		return 0, statusInternalFailure // no healthy host: fails inline, no callback
	}
	tok := v.nextCall
	for tok == 0 || v.calls[tok] != nil {
		tok++
	}
	v.nextCall = tok + 1
	started := h.goTrack(func() {
		res, ok := h.callout(addr, hdrs, body, timeoutMs)
		if ok {
			v.post(func() { v.onCalloutDone(tok, res) })
		}
	})
	if !started {
		return 0, statusInternalFailure
	}
	// The callout belongs to the dispatching context's root (Context::httpCall on root_context()).
	v.calls[tok] = v.rootOf(v.current)
	h.countCallout(cluster)
	return tok, statusOK
}

func (v *vm) onCalloutDone(tok uint32, res calloutResult) {
	root := v.calls[tok]
	delete(v.calls, tok)
	if v.failed.Load() || root == nil {
		return
	}
	v.callResp = &res
	if res.headers == nil {
		v.status, v.statusMsg = statusBrokenConnection, "reset"
	}
	v.call("proxy_on_http_call_response", root.id, uint64(root.id), uint64(tok),
		uint64(len(res.headers)), uint64(len(res.body)), 0)
	v.callResp, v.statusMsg = nil, ""
}

// callout performs one callout. false means the host is closing: Envoy cancels outstanding
// callouts without calling back.
func (h *Host) callout(addr string, hdrs pairs, body []byte, timeoutMs uint32) (calloutResult, bool) {
	ctx := h.calloutCtx
	if timeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeoutMs)*time.Millisecond)
		defer cancel()
	}
	req, err := outboundRequest(ctx, addr, hdrs, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return calloutResult{}, true
	}
	resp, err := h.transport.RoundTrip(req)
	if h.calloutCtx.Err() != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return calloutResult{}, false
	}
	if err != nil {
		code, msg := upstreamFailure(ctx, err)
		return calloutResult{headers: localReplyHeaders(code, []byte(msg), nil), body: []byte(msg)}, true
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(h.cfg.CalloutBodyLimit)+1))
	if h.calloutCtx.Err() != nil {
		return calloutResult{}, false
	}
	if err != nil || len(data) > h.cfg.CalloutBodyLimit {
		return calloutResult{}, true // reset after headers, timeout during the body, or over the limit
	}
	return calloutResult{headers: responsePairs(resp), body: data}, true
}

// upstreamFailure maps a failure before response headers to Envoy's local reply.
func upstreamFailure(ctx context.Context, err error) (int, string) {
	var op *net.OpError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return http.StatusGatewayTimeout, bodyTimeout
	case errors.As(err, &op) && op.Op == "dial":
		return http.StatusServiceUnavailable, bodyConnFailure
	default:
		return http.StatusServiceUnavailable, bodyConnReset
	}
}

// hopByHop headers are connection-specific: never forwarded.
var hopByHop = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "host": true}

// outboundRequest builds a plain-HTTP request to addr from pseudo-headers and headers: names
// stay lower-case on the wire, :authority becomes Host, and Go adds no User-Agent of its own.
func outboundRequest(ctx context.Context, addr string, hdrs pairs, body io.Reader, length int64) (*http.Request, error) {
	method, _ := hdrs.get(":method")
	path, _ := hdrs.get(":path")
	authority, _ := hdrs.get(":authority")
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("invalid :path %q", path)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+"/", body)
	if err != nil {
		return nil, err
	}
	// The path goes on the wire exactly as given ("//x", "/a/../b", "%61" included), as Envoy
	// forwards it: Path and RawPath rather than Opaque, which Go writes as an absolute URI when
	// it starts with "//".
	raw, query, _ := strings.Cut(path, "?")
	unescaped, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("invalid :path %q", path)
	}
	req.URL.Path, req.URL.RawPath, req.URL.RawQuery = unescaped, raw, query
	req.Host = authority
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	req.Header = http.Header{"User-Agent": {""}} // "" suppresses Go's default
	var ua []string
	for _, kv := range hdrs {
		switch k := kv[0]; {
		case strings.HasPrefix(k, ":") || hopByHop[k] || k == "content-length":
		case k == "user-agent":
			ua = append(ua, kv[1])
		default:
			req.Header[k] = append(req.Header[k], kv[1])
		}
	}
	if ua != nil {
		req.Header["User-Agent"] = ua
	}
	return req, nil
}

// responsePairs turns a response into Envoy's header map: :status first, lower-case names.
// Go does not keep the order of header lines, so the names are sorted.
func responsePairs(resp *http.Response) pairs {
	p := pairs{{":status", strconv.Itoa(resp.StatusCode)}}
	p.addHeader(resp.Header)
	return p
}
