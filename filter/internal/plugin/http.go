package plugin

import (
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

// httpContext is one request. It only touches request and response headers: bodies, including
// streamed ones, pass through untouched (no body callbacks are overridden).
type httpContext struct {
	types.DefaultHttpContext
	id   uint32
	root *rootContext

	// inHeaders is true while OnHttpRequestHeaders runs: a request settled then continues by
	// returning Continue, not by ResumeHttpRequest (it was never paused).
	inHeaders bool
	// settled: the request got its token or a local reply; replied: the latter.
	settled, replied bool
	// deadlineMs is when a held request must be settled, whatever happens to its flight.
	deadlineMs int64
	// deadlineExpired: the wait ran out; a fallback may not wait again.
	deadlineExpired bool
	// waitingFor is the flight key the request is held on, while held.
	waitingFor string

	// What the request was sent upstream with, for dropping it on an upstream 401.
	usedKey     string // cache key of an exchanged token
	usedToken   string // that exchanged token
	usedService string // the service-account token
}

func (h *httpContext) OnHttpRequestHeaders(int, bool) types.Action {
	r := h.root
	h.inHeaders = true
	defer func() { h.inHeaders = false }()
	h.deadlineMs = nowMs() + int64(r.cfg.TimeoutMs)

	ex := r.cfg.TokenExchange // a copy: a rule may override enabled, audience and scope
	if len(r.cfg.Rules) > 0 {
		authority, _ := proxywasm.GetHttpRequestHeader(":authority")
		path, _ := proxywasm.GetHttpRequestHeader(":path")
		rule, ok := r.cfg.Match(authority, path)
		if !ok {
			// Not one of ours: no token added, no header removed, no callout.
			r.metrics.passedThrough.inc()
			return types.ActionContinue
		}
		ex.Enabled, ex.Audience, ex.Scope = rule.Enabled, rule.Audience, rule.Scope
	}
	raw, err := proxywasm.GetHttpRequestHeader(ex.UserTokenHeader)
	present := err == nil && raw != ""
	if present && ex.RemoveUserTokenHeader {
		// Before anything else, and with exchange off too: whatever happens next, the user's
		// token never goes upstream (a roll-back to enabled:false must not start leaking it).
		_ = proxywasm.RemoveHttpRequestHeader(ex.UserTokenHeader)
	}
	if !ex.Enabled {
		h.useServiceToken()
		return h.action()
	}
	token := raw
	if present && ex.UserTokenHeader == "authorization" {
		var isBearer bool
		if token, isBearer = oauth.BearerToken(raw); !isBearer {
			present = false // another scheme (Basic, …) carries no user token
		}
	}
	switch {
	case !present:
		logDebug("no user token in " + ex.UserTokenHeader + ": " + r.failureOutcomeShort())
		if !r.cfg.FallbackToServiceAccount {
			h.reply(replyTokenMissing)
		} else {
			r.metrics.fallbackNoToken.inc()
			h.useServiceToken()
		}
		return h.action()
	case !oauth.ValidUserToken(token):
		r.warns.warn("invalid-user-token", nowMs(), "a user token in "+ex.UserTokenHeader+
			" is over 16 KiB or has characters outside the token alphabet; "+r.failureOutcomeShort())
		if !r.cfg.FallbackToServiceAccount {
			h.reply(replyTokenRejected)
		} else {
			r.metrics.fallbackInvalid.inc()
			h.useServiceToken()
		}
		return h.action()
	}

	key := cache.KeyFor(token, ex.Audience, ex.Scope)
	switch cur := r.cache.Look(key, nowMs()); cur.State {
	case cache.Hit:
		r.metrics.cacheHit.inc()
		h.useToken(cur.Token, string(key[:]), "")
	case cache.Failed:
		// The last exchange of this user token failed moments ago: do not call the IdP again.
		r.metrics.cacheMiss.inc()
		h.backedOff(cur.Status)
	default:
		r.metrics.cacheMiss.inc()
		h.hold(string(key[:]), token, ex.Audience, ex.Scope)
	}
	return h.action()
}

// backedOff settles a request whose user token is in its failure back-off: the service-account
// token, or in strict mode the reply the failure called for.
func (h *httpContext) backedOff(strictStatus int) {
	h.root.metrics.backedOff.inc()
	if !h.root.cfg.FallbackToServiceAccount {
		if strictStatus == 401 {
			h.reply(replyTokenRejected)
		} else {
			h.reply(replyExchangeFailed)
		}
		return
	}
	h.root.metrics.fallbackFailed.inc()
	h.useServiceToken()
}

// action is what OnHttpRequestHeaders returns once the request is settled or held.
func (h *httpContext) action() types.Action {
	if h.settled && !h.replied {
		return types.ActionContinue
	}
	return types.ActionPause // held, or answered locally
}

// hold parks the request on the flight for key, starting the flight when it is the first.
// subject is what the fetch needs (the user token); "" for the service-account fetch.
func (h *httpContext) hold(key, subject, audience, scope string) {
	r := h.root
	now := nowMs()
	// An exchange ends by its first request's deadline. The service-account fetch serves everyone
	// and gets the full timeout: a request that falls back late must not shorten it (each request
	// is still settled by its own deadline through the tick).
	flightDeadline := h.deadlineMs + flightGraceMs
	if key == serviceFlightKey {
		flightDeadline = now + int64(r.cfg.TimeoutMs) + flightGraceMs
	}
	f, started, err := r.flights.Hold(h.id, key, h.deadlineMs, flightDeadline)
	if err != nil {
		r.warns.warn("full", now, "too many requests held on this worker; settling at once")
		if key == serviceFlightKey {
			h.reply(replyNoToken)
		} else {
			h.deadlineExpired = true
			h.exchangeFailed(&oauth.Failure{Class: oauth.Transient})
		}
		return
	}
	if h.waitingFor == "" {
		r.metrics.held.add(1)
	}
	h.waitingFor = key
	r.held[h.id] = h
	if !started {
		r.metrics.joined.inc()
	}
	if started {
		f.Subject, f.Audience, f.Scope = subject, audience, scope
		r.launch(f)
	}
}

// useServiceToken sends the request on with the service-account token, holds it until the
// first fetch finishes, or answers 503 when the last fetch failed and no valid token is left.
func (h *httpContext) useServiceToken() {
	r := h.root
	now := nowMs()
	if t, ok := r.serviceToken(now); ok {
		h.useToken(t, "", t)
		return
	}
	if r.sa.status == saFailed || h.deadlineExpired {
		h.reply(replyNoToken)
		// A fresh attempt may start in the background, but this request does not wait for it.
		if now >= r.sa.retryAtMs {
			if _, running := r.flights.Get(serviceFlightKey); !running {
				r.startServiceFetch(now)
			}
		}
		return
	}
	h.hold(serviceFlightKey, "", "", "")
}

// exchangeFailed settles the request after a failed exchange: the service-account token, or
// in strict mode the local reply the failure calls for.
func (h *httpContext) exchangeFailed(fail *oauth.Failure) {
	if !h.root.cfg.FallbackToServiceAccount {
		if fail.StrictStatus() == 401 {
			h.reply(replyTokenRejected)
		} else {
			h.reply(replyExchangeFailed)
		}
		return
	}
	h.root.metrics.fallbackFailed.inc()
	h.useServiceToken()
}

// useToken writes the token into the output header and lets the request go upstream.
func (h *httpContext) useToken(token, usedKey, usedService string) {
	r := h.root
	if !h.release() {
		return
	}
	if err := proxywasm.ReplaceHttpRequestHeader(r.cfg.OutputHeader, "Bearer "+token); err != nil {
		logError("writing " + r.cfg.OutputHeader + " failed: " + err.Error())
	}
	h.usedKey, h.usedService = usedKey, usedService
	if usedKey != "" {
		h.usedToken = token
	}
	h.settled = true
	if !h.inHeaders {
		if err := proxywasm.ResumeHttpRequest(); err != nil {
			logError("resuming a held request failed: " + err.Error())
		}
	}
}

// reply answers the request locally.
func (h *httpContext) reply(rep localReply) {
	if !h.release() {
		return
	}
	rep.send()
	h.root.metrics.replied(rep.status)
	h.settled, h.replied = true, true
}

// release forgets the request in the hold tables and, when called from a root callback, makes
// its stream the target of the host calls that follow. It reports false when the host no longer
// knows the stream: then nothing may be written, or it would land on another stream.
func (h *httpContext) release() bool {
	r := h.root
	if h.waitingFor != "" {
		r.flights.Drop(h.id)
		delete(r.held, h.id)
		h.waitingFor = ""
		r.metrics.held.add(-1)
	}
	if r.inRoot {
		if err := proxywasm.SetEffectiveContext(h.id); err != nil {
			h.settled = true
			return false
		}
	}
	return true
}

func (h *httpContext) OnHttpResponseHeaders(int, bool) types.Action {
	if h.usedKey == "" && h.usedService == "" {
		return types.ActionContinue
	}
	status, err := proxywasm.GetHttpResponseHeader(":status")
	if err != nil || status != "401" {
		return types.ActionContinue
	}
	// The upstream refused the token we added: forget it so the next request fetches a fresh one.
	r := h.root
	if h.usedKey != "" {
		var k cache.Key
		copy(k[:], h.usedKey)
		// Only if it still holds the token we sent: another worker may have stored a fresh one.
		_ = r.cache.DeleteToken(k, h.usedToken)
		logDebug("upstream answered 401: dropped the cached exchanged token")
	}
	if h.usedService != "" {
		_ = r.cache.DropServiceToken(h.usedService)
		if r.sa.local.Token == h.usedService {
			r.sa.local = cache.ServiceToken{}
		}
		r.sa.nextCheckMs = 0
		logDebug("upstream answered 401: dropped service-account token " + oauth.Fingerprint(h.usedService))
	}
	return types.ActionContinue
}

func (h *httpContext) OnHttpStreamDone() {
	// A held request whose client went away: its flight goes on for the others and the cache.
	if h.waitingFor != "" {
		h.root.flights.Drop(h.id)
		delete(h.root.held, h.id)
		h.waitingFor = ""
		h.root.metrics.held.add(-1)
	}
}

// failureOutcomeShort says, for logs, what happens to a request without a usable user token.
func (r *rootContext) failureOutcomeShort() string {
	if r.cfg.FallbackToServiceAccount {
		return "using the service-account token"
	}
	return "answering 401 (strict mode)"
}
