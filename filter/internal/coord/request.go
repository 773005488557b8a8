package coord

import (
	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
	"strconv"
	"strings"
)

// Request is one HTTP stream. It only decides on request and response headers: bodies,
// including streamed ones, pass through untouched.
//
// It holds only what a memo hit needs (64 bytes): every stream allocates one, and in a wasm VM
// the allocation's clearing and marking cost grows with its size (a 200-byte Request made a
// stream's creation cost 1.5–2 µs more in wazero). What a request needs once it goes past a hit
// (a miss, a wait, a fallback that waits) is in beyondHit, allocated then.
type Request struct {
	id uint32
	// inHeaders is true while OnRequestHeaders runs: a request settled then continues by
	// returning Continue, not by ResumeRequest (it was never paused).
	inHeaders bool
	// settled: the request got its token or a local reply; replied: the latter.
	settled, replied bool
	// deadlineExpired: the wait ran out; a fallback may not wait again.
	deadlineExpired bool
	// done: the host ended the stream; nothing may touch it again.
	done bool

	w *Worker
	// deadlineMs is when a held request must be settled, whatever happens to its flight.
	deadlineMs int64

	// What the request was sent upstream with, for dropping it on an upstream 401: the memo
	// entry of an exchanged token (its cache key and sealed entry), or the service-account token.
	used        *memoEntry
	usedService string

	more *beyondHit // nil until the request goes past a memo hit
}

// beyondHit is the state of a request that was not settled by a memo hit.
type beyondHit struct {
	// waitingFor is the flight key the request is held on, while held.
	waitingFor string
	// memoKey is where the exchanged token is filed in the worker's memo ("" user token: not
	// filed); userUntilMs the user token's exp on the monotonic clock (0: none known).
	memoKey     memoKey
	userUntilMs int64
	// stale is the cached token a request waits to replace (refresh.go).
	stale *memoEntry
}

// beyond is req's beyondHit, allocated at its first use.
func (req *Request) beyond() *beyondHit {
	if req.more == nil {
		req.more = &beyondHit{}
	}
	return req.more
}

// maxHeaderRemovals bounds the removal of a repeated user-token header on hosts whose remove
// takes one value at a time.
const maxHeaderRemovals = 16

// NewRequest returns the state of stream id.
func (w *Worker) NewRequest(id uint32) *Request { return &Request{id: id, w: w} }

// InitRequest makes *req, a zero Request, the state of stream id, for a caller that holds the
// Request inside its own per-stream value (one allocation per stream instead of two). It sets
// the two fields rather than assigning a whole Request: on a fresh allocation the rest is zero
// already, and a whole copy with its write barriers costs more than creating the stream.
func (w *Worker) InitRequest(req *Request, id uint32) { req.id, req.w = id, w }

// OnRequestHeaders decides the request: token now (Continue), held or answered (Pause).
func (req *Request) OnRequestHeaders(hdr RequestHeaders) Action {
	w := req.w
	req.inHeaders = true
	defer func() { req.inHeaders = false }()

	ex := w.cfg.TokenExchange // a copy: a rule may override enabled, audience and scope
	minLifeMs := w.cfg.MinLifetimeSeconds * 1000
	if len(w.cfg.Rules) > 0 {
		var authority string
		if w.rulesUseHosts { // else Match ignores it: one header read less per request
			authority, _ = hdr.Get(":authority")
		}
		path, _ := hdr.Get(":path")
		rule, ok := w.cfg.Match(authority, path)
		if !ok {
			// Not one of ours: no token added, no header removed, no callout.
			w.count(RequestsPassedThrough)
			return Continue
		}
		ex.Enabled, ex.Audience, ex.Scope = rule.Enabled, rule.Audience, rule.Scope
		minLifeMs = rule.MinLifetimeSeconds * 1000
	}
	// The clock, read once, only for a request of ours: a pass-through needs no time.
	now := w.host.NowMs()
	req.deadlineMs = now + int64(w.cfg.TimeoutMs)
	raw, present := hdr.Get(ex.UserTokenHeader)
	present = present && raw != ""
	token := raw
	if present && ex.UserTokenHeader == "authorization" {
		var isBearer bool
		if token, isBearer = oauth.BearerToken(raw); !isBearer {
			present = false // another scheme (Basic, …) carries no user token
		}
	}
	var generation uint64
	if ex.Enabled && present {
		// A user this VM served lately: no validation, no hashing, no slot to decode. The
		// generation word is read before anything else from shared data, so that a token read
		// after it can never be newer than the word it is filed under. (The token was validated
		// when it was filed, as the single value of its header.)
		mk := memoKey{token, ex.Audience, ex.Scope}
		generation = w.Cache.Generation()
		if e, ok := w.memo.get(mk, now, generation); ok {
			// The header's value is lent for this callback only; the entry's copy is the same
			// token and lives as long as the request may need it (an upstream 401 forgets it).
			mk.userToken = e.userToken
			if !req.removeOnceSent(hdr, ex.UserTokenHeader, raw, ex.RemoveUserTokenHeader) {
				return req.repeatedUserToken(ex, now)
			}
			req.sendCached(e, mk, minLifeMs, now)
			return req.action()
		}
	}
	// Several values of the header: which one is the user's is anybody's guess (a proxy in
	// front may have appended one), so none is. Counted before the removal takes them all.
	several := present && ex.Enabled && hdr.Count(ex.UserTokenHeader) > 1
	req.removeUserTokenHeader(hdr, ex)
	if !ex.Enabled {
		req.useServiceToken()
		return req.action()
	}
	if !present {
		w.logDebug("no user token in " + ex.UserTokenHeader + ": " + w.failureOutcomeShort())
		return req.withoutUserToken(replyTokenMissing, FallbackNoUserToken)
	}
	if several {
		return req.repeatedUserToken(ex, now)
	}
	if !oauth.ValidUserToken(token) {
		w.warns.warn(w, "invalid-user-token", now, "a user token in "+ex.UserTokenHeader+
			" is over 16 KiB or has characters outside the token alphabet; "+w.failureOutcomeShort())
		return req.withoutUserToken(replyTokenRejected, FallbackInvalidUserToken)
	}
	// What can be checked locally and cheaply, before the cache and any callout (the claims are
	// read, not verified: they only ever refuse or shorten).
	claims := oauth.ReadUserClaims(token)
	switch {
	case !claims.JWT && !ex.AllowOpaqueTokens:
		w.warns.warn(w, "opaque-user-token", now, "a user token in "+ex.UserTokenHeader+
			" is not a JWT (set tokenExchange.allowOpaqueTokens to exchange opaque tokens); "+w.failureOutcomeShort())
		return req.withoutUserToken(replyTokenRejected, FallbackInvalidUserToken)
	case claims.HasExp && claims.Exp*1000 <= w.host.WallMs():
		// Keycloak would refuse it ("Invalid token"), and a token cached for it must not
		// outlive it: checked before the cache, so neither the IdP nor the cache serves it.
		w.logDebug("the user token in " + ex.UserTokenHeader + " is past its exp: " + w.failureOutcomeShort())
		return req.withoutUserToken(replyTokenRejected, FallbackExpiredUserToken)
	case ex.ExpectedIssuer != "" && claims.JWT && claims.Issuer != ex.ExpectedIssuer:
		// The token's own iss is the sender's to choose: never logged.
		w.warns.warn(w, "issuer", now, "a user token in "+ex.UserTokenHeader+" was not issued by tokenExchange.expectedIssuer "+
			strconv.Quote(ex.ExpectedIssuer)+"; "+w.failureOutcomeShort())
		return req.withoutUserToken(replyTokenRejected, FallbackInvalidUserToken)
	}

	// From here the user token is kept (in the memo, a flight, a callout): a copy of the
	// header's lent value, made only for a token that got this far.
	token = strings.Clone(token)
	more := req.beyond()
	more.memoKey = memoKey{token, ex.Audience, ex.Scope}
	if claims.HasExp {
		more.userUntilMs = now + (claims.Exp*1000 - w.host.WallMs())
	}
	key := cache.KeyFor(token, ex.Audience, ex.Scope)
	switch cur := w.Cache.Look(key, now); cur.State {
	case cache.Hit:
		if token, untilMs, ok := w.exchange.open(string(key[:]), cur); ok {
			e := req.entryFor(token, cur.Token, string(key[:]), untilMs, cur.StoredAtMs, generation)
			if more.memoKey.userToken != "" {
				w.memo.put(more.memoKey, e)
			}
			req.sendCached(e, more.memoKey, minLifeMs, now)
			break
		}
		// A forged entry (now deleted) is a miss.
		w.count(CacheMiss)
		w.hold(req, string(key[:]), &w.exchange, token, ex.Audience, ex.Scope)
	case cache.Failed:
		// The last exchange of this user token failed moments ago: do not call the IdP again.
		w.count(CacheMiss)
		req.backedOff(cur.Status)
	case cache.Miss:
		w.count(CacheMiss)
		// Nothing known about this user token anywhere in this Envoy: a new exchange draws from
		// the bucket that bounds what made-up tokens can cost the IdP (joining a running one is free).
		if _, running := w.flights.Get(string(key[:])); !running && !w.Cache.TakeNewKey(ex.NewKeyRate, ex.NewKeyBurst, now) {
			w.count(FallbackRateLimited)
			w.warns.warn(w, "new-key-bucket", now, "more new user tokens than tokenExchange.newKeyExchangesPerSecond allows; "+w.failureOutcomeShort())
			if !w.cfg.FallbackToServiceAccount {
				req.reply(replyBusy)
				return req.action()
			}
			req.useServiceToken()
			return req.action()
		}
		w.hold(req, string(key[:]), &w.exchange, token, ex.Audience, ex.Scope)
	default:
		w.count(CacheMiss)
		w.hold(req, string(key[:]), &w.exchange, token, ex.Audience, ex.Scope)
	}
	return req.action()
}

// removeUserTokenHeader strips the user token header when the configuration says so: before
// anything goes upstream, and with exchange off too (a roll-back to enabled:false must not start
// leaking it), also when nothing was read: the host reads the first of repeated headers, and the
// SDK reads an empty value as absent, so an empty first value would hide a second. Envoy's
// remove takes every value (source/extensions/common/wasm/context.cc, removeHeaderMapValue →
// HeaderMap::remove); a host that takes one (the SDK's emulator) is covered by removing until
// none is left, a bounded few times.
func (req *Request) removeUserTokenHeader(hdr RequestHeaders, ex config.Exchange) {
	if ex.RemoveUserTokenHeader {
		req.removeAll(hdr, ex.UserTokenHeader)
	}
}

// repeatedUserToken settles a request that carried the user-token header more than once: which
// value is the user's is anybody's guess (a proxy in front may have appended one), so none is.
func (req *Request) repeatedUserToken(ex config.Exchange, now int64) Action {
	w := req.w
	w.warns.warn(w, "repeated-user-token", now, "a request carried "+ex.UserTokenHeader+" more than once; "+w.failureOutcomeShort())
	return req.withoutUserToken(replyTokenRejected, FallbackInvalidUserToken)
}

// withoutUserToken settles a request that brought no usable user token: strict mode answers
// strict, otherwise the service-account token is used (counted as fallback).
func (req *Request) withoutUserToken(strict localReply, fallback Metric) Action {
	if !req.w.cfg.FallbackToServiceAccount {
		req.reply(strict)
	} else {
		req.w.count(fallback)
		req.useServiceToken()
	}
	return req.action()
}

// action is what OnRequestHeaders returns once the request is settled or held.
func (req *Request) action() Action {
	if req.settled && !req.replied {
		return Continue
	}
	return Pause // held, or answered locally
}

// backedOff settles a request whose user token is in its failure back-off: the service-account
// token, or in strict mode the reply the failure called for.
func (req *Request) backedOff(strictStatus int) {
	req.w.count(RequestsBackedOff)
	req.failed(strictStatus)
}

// useServiceToken sends the request on with the service-account token, holds it until the
// first fetch finishes, or answers 503 when the last fetch failed and no valid token is left.
func (req *Request) useServiceToken() {
	w := req.w
	sa := &w.service
	now := w.host.NowMs()
	if t, used, ok := sa.token(now); ok {
		req.useToken(t, used)
		return
	}
	if sa.status == saFailed || req.deadlineExpired {
		req.reply(replyNoToken)
		// A fresh attempt may start in the background, but this request does not wait for it.
		if now >= sa.retryAtMs {
			if _, running := w.flights.Get(serviceFlightKey); !running {
				sa.start(now)
			}
		}
		return
	}
	w.hold(req, serviceFlightKey, sa, "", "", "")
}

// exchangeFailed settles the request after a failed exchange.
func (req *Request) exchangeFailed(fail *oauth.Failure) { req.failed(fail.StrictStatus()) }

// failed settles a request whose exchange failed (now or within its back-off): the
// service-account token, or in strict mode the local reply for strictStatus.
func (req *Request) failed(strictStatus int) {
	w := req.w
	if !w.cfg.FallbackToServiceAccount {
		if strictStatus == 401 {
			req.reply(replyTokenRejected)
		} else {
			req.reply(replyExchangeFailed)
		}
		return
	}
	w.count(FallbackExchangeFailed)
	req.useServiceToken()
}

// useToken writes the service-account token (usedService: what an upstream 401 drops) into
// the output header and lets the request go upstream.
func (req *Request) useToken(token, usedService string) {
	req.useBearer("Bearer "+token, nil, usedService)
}

// useExchanged sends the request on with an exchanged token (blob: its sealed entry in shared
// data, "" if it is not there) read while the generation word was generation, valid until
// untilMs, and files it in the worker's memo.
func (req *Request) useExchanged(token, blob, key string, untilMs, storedAtMs int64, generation uint64) {
	e := req.entryFor(token, blob, key, untilMs, storedAtMs, generation)
	if req.more != nil && req.more.memoKey.userToken != "" {
		req.w.memo.put(req.more.memoKey, e)
	}
	req.useBearer(e.bearer, e, "")
}

// entryFor is the memo entry of an exchanged token for this request's user token.
func (req *Request) entryFor(token, blob, key string, untilMs, storedAtMs int64, generation uint64) *memoEntry {
	var userUntilMs int64
	if req.more != nil {
		userUntilMs = req.more.userUntilMs
	}
	return newMemoEntry(token, blob, key, untilMs, storedAtMs, userUntilMs, generation)
}

// useBearer writes a ready "Bearer …" value; used (an exchanged token's memo entry) or
// usedService say what it carries, for an upstream 401.
func (req *Request) useBearer(bearer string, used *memoEntry, usedService string) {
	w := req.w
	if !req.release() {
		return
	}
	if err := w.host.SetRequestHeader(w.cfg.OutputHeader, bearer); err != nil {
		w.logError("writing " + w.cfg.OutputHeader + " failed: " + err.Error())
	}
	req.used, req.usedService = used, usedService
	req.settled = true
	if !req.inHeaders {
		if err := w.host.ResumeRequest(); err != nil {
			w.logError("resuming a held request failed: " + err.Error())
		}
	}
}

// reply answers the request locally.
func (req *Request) reply(rep localReply) {
	if !req.release() {
		return
	}
	rep.send(req.w)
	req.settled, req.replied = true, true
}

// release forgets the request in the hold tables and, when called from a root callback, makes
// its stream the target of the host calls that follow. It reports false when the stream is
// gone: then nothing may be written, or it would land on another stream.
func (req *Request) release() bool {
	req.unhold()
	if req.done {
		req.settled = true
		return false
	}
	if req.w.inRoot {
		if err := req.w.host.Focus(req.id); err != nil {
			req.settled = true
			return false
		}
	}
	return true
}

func (req *Request) unhold() {
	if req.more == nil || req.more.waitingFor == "" {
		return
	}
	w := req.w
	w.flights.Drop(req.id)
	delete(w.held, req.id)
	req.more.waitingFor = ""
	w.host.Count(RequestsHeld, -1)
}

// OnResponseHeaders drops the token the upstream refused (401) so that the next request
// fetches a fresh one. status reads the response's :status (lent, like RequestHeaders.Get).
func (req *Request) OnResponseHeaders(status func() (string, bool)) {
	if req.used == nil && req.usedService == "" {
		return
	}
	if s, ok := status(); !ok || s != "401" {
		return
	}
	w := req.w
	now := w.host.NowMs()
	if e := req.used; e != nil {
		// Only if it still holds the token we sent (another worker may have stored a fresh
		// one) and that token has been in use a while (Drop401MinAgeMs).
		w.memo.forget(e.memoKey())
		if removed, _ := w.Cache.DeleteToken(cacheKey(e.key), e.token, now, Drop401MinAgeMs); removed {
			// Every worker's memo stops trusting what it read before.
			_ = w.Cache.BumpGeneration()
			w.logDebug("upstream answered 401: dropped the cached exchanged token")
		}
	}
	if req.usedService != "" {
		w.service.dropped(req.usedService, now)
		w.logDebug("upstream answered 401: dropped service-account token " + oauth.Fingerprint(req.usedService) + " unless it is new")
	}
}

// OnDone: the host ended the stream. A held request's flight goes on for the others and the
// cache; the stream itself is never touched again (Envoy may still accept calls on it for a
// while, see ENVOY-HOST.md).
func (req *Request) OnDone() {
	req.unhold()
	req.done = true
}
