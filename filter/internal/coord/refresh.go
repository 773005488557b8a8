package coord

import (
	"strconv"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

// Refresh ahead of expiry. A request whose cached token has less than refreshAheadSeconds of
// its usable lifetime left is served with it at once, and starts a background exchange for its
// key with the user token it carries, so that active users never wait for an exchange when
// their token expires. One refresh per key per Envoy: a refresh lease in the key's refresh entry
// (cache.RefreshKey), which also holds the back-off after a failed refresh; the token entry
// itself is left alone, so the old token stays in use until the new one is stored or, after a
// failure, until it expires. A key is refreshed at most once per half of its token's usable
// lifetime (counted from when that token was stored): a token shorter than the window is then
// refreshed every half lifetime, not on every request.
//
// minLifetimeSeconds (top level or per rule) is for streams that must not outlive their token:
// a request whose cached token has less than that left is held for a fresh exchange, joining
// the refresh if one runs, while other routes go on with the old token at once.
//
// Neither ever goes past the user token's own exp: when it comes before the cached token's
// expiry there is nothing to refresh, and no callout is made.

// refreshFlightPrefix marks a refresh's flight: the prefix and the 32-byte cache key (exchange
// flights are the bare 32 bytes, the service-account fetch "\x00sa").
const refreshFlightPrefix = "\x01"

const (
	// refreshCheckEveryMs is how often a VM looks again, per key, whether a token in its window
	// is being refreshed or was refreshed by another worker (a shared-data read each time).
	refreshCheckEveryMs = 1000
	// refreshMarginMs: a user token that expires less than this after the cached token makes a
	// refresh pointless.
	refreshMarginMs = 1000
)

// refreshSource fetches the replacement of a cached token (the flight's source).
type refreshSource struct {
	w *Worker
	// old is, per running refresh flight, the memo entry of the token it replaces and the memo
	// key of the user token that started it.
	old map[string]refreshOf
	// noted: the log-once notes already written on this VM.
	noted [numRefreshNotes]bool
}

type refreshOf struct {
	entry *memoEntry
	key   memoKey
}

type refreshNote uint8

const (
	noteShortTokens refreshNote = iota
	noteUserExpiresFirst
	noteMinLifetimeUnreachable
	noteMinLifetimeUserExpires
	numRefreshNotes
)

func (s *refreshSource) note(n refreshNote, msg string) {
	if !s.noted[n] {
		s.noted[n] = true
		s.w.logInfo(msg)
	}
}

// sendCached sends the request on with cached token e (filed under mk) unless it must wait for a
// fresh one (mustWait holds or answers it), then starts the background refresh mustWait asked
// for: after the request has its token, because the refresh's dispatch may run other contexts'
// callbacks (the SDK's emulator runs queue callbacks inline).
func (req *Request) sendCached(e *memoEntry, mk memoKey, minLifeMs int64, now int64) {
	w := req.w
	var refresh *memoEntry
	if minLifeMs > 0 || w.refreshAheadMs > 0 {
		var held bool
		if held, refresh = req.mustWait(e, mk, minLifeMs, now); held {
			return
		}
	}
	w.count(CacheHit)
	req.useBearer(e.bearer, e, "")
	if refresh != nil {
		w.refresh.start(refresh, mk, now)
	}
}

// mustWait decides, for a request about to be sent with cached token e (filed under mk), whether
// it must wait for a fresh one (minLifeMs, from minLifetimeSeconds: held, or in strict mode
// answered) and whether e is in its refresh window. It reports true when the request was held or
// answered, and otherwise the entry to refresh in the background once the request has its token
// (nil: none).
func (req *Request) mustWait(e *memoEntry, mk memoKey, minLifeMs int64, now int64) (bool, *memoEntry) {
	w := req.w
	s := &w.refresh
	userFirst := e.userUntilMs != 0 && e.userUntilMs <= e.tokenUntilMs+refreshMarginMs
	if minLifeMs > 0 && e.untilMs-now < minLifeMs {
		switch {
		case e.userUntilMs != 0 && e.userUntilMs-now < minLifeMs:
			s.note(noteMinLifetimeUserExpires, "a request needing minLifetimeSeconds ("+strconv.FormatInt(minLifeMs/1000, 10)+
				" s) carried a user token that expires sooner: no exchange can give more, so "+req.minLifetimeOutcome())
			if !w.cfg.FallbackToServiceAccount {
				req.reply(replyTokenRejected)
				return true, nil
			}
		case e.tokenUntilMs-e.storedAtMs < minLifeMs:
			s.note(noteMinLifetimeUnreachable, "the IdP's exchanged tokens are usable for less than minLifetimeSeconds ("+
				strconv.FormatInt(minLifeMs/1000, 10)+" s): a fresh one would not last longer, so the cached one is used")
		default:
			key := refreshFlightPrefix + e.key
			// The fresh token is filed where e is and, like e, capped by the user token's exp.
			more := req.beyond()
			more.stale, more.memoKey, more.userUntilMs = e, mk, e.userUntilMs
			s.remember(key, e, mk) // before hold: its dispatch may claim at once
			w.hold(req, key, s, mk.userToken, mk.audience, mk.scope)
			if _, running := w.flights.Get(key); !running {
				delete(s.old, key) // settled at once (table full, or claimed and done)
			}
			return true, nil
		}
	}
	if w.refreshAheadMs == 0 || e.tokenUntilMs-now >= w.refreshAheadMs || now < e.nextCheckMs {
		return false, nil
	}
	e.nextCheckMs = now + refreshCheckEveryMs
	switch {
	case userFirst:
		s.note(noteUserExpiresFirst, "a cached token in its refresh window is not refreshed: the user token it was exchanged for expires first")
	case now-e.storedAtMs < (e.tokenUntilMs-e.storedAtMs)/2:
		// Refreshed (or first stored) less than half its lifetime ago.
		if e.tokenUntilMs-e.storedAtMs < w.refreshAheadMs {
			s.note(noteShortTokens, "the IdP's exchanged tokens are usable for less than refreshAheadSeconds: each is refreshed once half its lifetime has passed")
		}
	default:
		return false, e // started by sendCached once the request has its token
	}
	return false, nil
}

// minLifetimeOutcome says what happens to a request whose minLifetime cannot be met.
func (req *Request) minLifetimeOutcome() string {
	if req.w.cfg.FallbackToServiceAccount {
		return "the cached token is used"
	}
	return "strict mode answers 401"
}

// start begins a background refresh of e's key, for the user token, audience and scope of mk,
// unless one runs on this VM already.
func (s *refreshSource) start(e *memoEntry, mk memoKey, now int64) {
	w := s.w
	key := refreshFlightPrefix + e.key
	f := w.flights.Start(key, now+int64(w.cfg.TimeoutMs)+FlightGraceMs)
	if f == nil {
		return // running, or the flight table is full
	}
	f.Subject, f.Audience, f.Scope = mk.userToken, mk.audience, mk.scope
	s.remember(key, e, mk)
	w.launch(f)
}

func (s *refreshSource) remember(key string, e *memoEntry, mk memoKey) {
	if s.old == nil {
		s.old = map[string]refreshOf{}
	}
	if _, ok := s.old[key]; !ok {
		s.old[key] = refreshOf{entry: e, key: mk}
	}
}

func (s *refreshSource) keys(f *flight.Flight) (k, rk cache.Key) {
	k = cacheKey(f.Key[len(refreshFlightPrefix):])
	return k, cache.RefreshKey(k)
}

// claim takes the refresh lease, unless another worker refreshed the token already (then its
// token is used), an exchange or another refresh of the key runs (the flight's requests wait
// for it), or the key backs off.
func (s *refreshSource) claim(f *flight.Flight, now int64) bool {
	w := s.w
	k, rk := s.keys(f)
	switch s.adoptNewer(f, k, now) {
	case adopted:
		return false
	case exchanging:
		s.waitOrEnd(f)
		return false
	}
	won, cur, err := w.Cache.TryLease(rk, w.owner, f.DeadlineMs, now)
	switch {
	case err != nil:
		// Unlike an exchange, a refresh is never made without the Envoy-wide lease: the old
		// token is still good, and other workers would refresh too.
		s.end(f, nil)
		return false
	case !won && cur.State == cache.Leased:
		s.waitOrEnd(f)
		return false
	case !won:
		s.end(f, nil) // backing off: the old token stays
		return false
	}
	// A slot full of live tokens takes no marker: the claim was "won" without being shared.
	if l := w.Cache.Look(rk, now); l.State != cache.Leased || l.Owner != w.owner {
		s.end(f, nil)
		return false
	}
	// Lease first, then look: an exchange of the key (its token expired meanwhile) that leased
	// the token entry between our look and our lease must stay the only callout.
	if cur := w.Cache.Look(k, now); cur.State == cache.Leased {
		_ = w.Cache.ReleaseLease(rk, w.owner)
		s.waitOrEnd(f)
		return false
	}
	w.count(RefreshStarted)
	return true
}

// waitOrEnd: another worker is fetching the key's token. Requests held for it wait (polled);
// a background refresh has nothing to do.
func (s *refreshSource) waitOrEnd(f *flight.Flight) {
	if f.Waiting() > 0 {
		f.Remote, f.Dispatched = true, true
		return
	}
	s.end(f, nil)
}

type keyState uint8

const (
	unchanged  keyState = iota
	adopted             // a newer token was there, and f was settled with it
	exchanging          // an exchange of the key holds its lease
)

// adoptNewer settles f with a token stored after the one it replaces, if there is one.
func (s *refreshSource) adoptNewer(f *flight.Flight, k cache.Key, now int64) keyState {
	w := s.w
	old, ok := s.old[f.Key]
	if !ok {
		return unchanged
	}
	generation := w.Cache.Generation() // before the read: see memo.go
	cur := w.Cache.Look(k, now)
	if cur.State == cache.Leased {
		return exchanging
	}
	if cur.State != cache.Hit || cur.StoredAtMs <= old.entry.storedAtMs || cur.Token == old.entry.token {
		return unchanged
	}
	token, untilMs, ok := w.exchange.open(string(k[:]), cur)
	if !ok {
		return unchanged
	}
	s.replace(f, token, cur.Token, untilMs, cur.StoredAtMs, generation)
	return adopted
}

// replace puts the new token into this VM's memo and settles f's requests with it.
func (s *refreshSource) replace(f *flight.Flight, token, blob string, untilMs, storedAtMs int64, generation uint64) {
	s.replaceIDs(f.Key, s.w.finish(f), token, blob, untilMs, storedAtMs, generation)
}

// end finishes f without a new token: its requests go on with the token they would have had.
func (s *refreshSource) end(f *flight.Flight, fail *oauth.Failure) {
	delete(s.old, f.Key)
	s.w.settleEach(f, func(req *Request) { req.useStale(fail) })
}

func (s *refreshSource) form(f *flight.Flight) []byte {
	return oauth.ExchangeForm(f.Subject, f.Audience, f.Scope, s.w.client)
}

func (s *refreshSource) count(fail *oauth.Failure) {
	if fail == nil {
		s.w.count(RefreshSuccess)
	} else {
		s.w.count(RefreshFailure)
	}
}

func (s *refreshSource) result(key string, tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64) {
	w := s.w
	k := cacheKey(key[len(refreshFlightPrefix):])
	rk := cache.RefreshKey(k)
	defer w.wakeOthers()
	if _, newer := w.flights.Get(key); newer {
		// A late answer to an abandoned refresh while a newer one runs: the lease and the memo
		// note are the newer one's. A token still fills the cache.
		if fail == nil {
			w.storeFresh(k, tok, now, "a refreshed")
		}
		return
	}
	if fail != nil {
		note := s.backOff(rk, fail, now)
		w.warns.warn(w, "refresh:"+fail.Class.String(), now, "refreshing a cached token failed: "+fail.String()+
			"; the old token stays in use until it expires"+note)
		delete(s.old, key)
		w.settleIDs(waiters, func(req *Request) { req.useStale(fail) })
		w.pollRemote(now)
		return
	}
	lifeMs, blob := w.storeFresh(k, tok, now, "a refreshed")
	_ = w.Cache.ReleaseLease(rk, w.owner)
	if lifeMs == 0 {
		delete(s.old, key)
		w.settleIDs(waiters, func(req *Request) { req.useStale(nil) })
		return
	}
	generation := w.Cache.Generation()
	s.replaceIDs(key, waiters, tok.AccessToken, blob, now+lifeMs, now, generation)
	// Exchanges of this key that waited on the refresh (their token expired meanwhile) end now.
	w.pollRemote(now)
}

// replaceIDs is replace for a flight already finished (key and its waiters given). The memo
// entry of the user token that started the refresh is replaced once; its waiters (the same
// user token, audience and scope: the same key) are sent with it.
func (s *refreshSource) replaceIDs(key string, waiters []uint32, token, blob string, untilMs, storedAtMs int64, generation uint64) {
	w := s.w
	cacheKey := key[len(refreshFlightPrefix):]
	old, ok := s.old[key]
	delete(s.old, key)
	if !ok || old.key.userToken == "" {
		w.settleIDs(waiters, func(req *Request) { req.useExchanged(token, blob, cacheKey, untilMs, storedAtMs, generation) })
		return
	}
	e := newMemoEntry(token, blob, cacheKey, untilMs, storedAtMs, old.entry.userUntilMs, generation)
	w.memo.put(old.key, e)
	w.settleIDs(waiters, func(req *Request) { req.useBearer(e.bearer, e, "") })
}

// backOff records a failed refresh in the key's refresh entry (not in the token's), with the
// exchange back-off's window, so that no worker refreshes the key again before it ends.
func (s *refreshSource) backOff(rk cache.Key, fail *oauth.Failure, now int64) string {
	if window, ok := s.w.backOffEntry(rk, fail, now); ok {
		return "; its refresh backs off for " + strconv.FormatInt(window, 10) + " ms"
	}
	return ""
}

// poll ends a wait on another worker's refresh: its token, once stored, or the old one when
// that refresh failed; a lease that ended without either is taken over.
func (s *refreshSource) poll(f *flight.Flight, now int64) {
	w := s.w
	k, rk := s.keys(f)
	switch s.adoptNewer(f, k, now) {
	case adopted:
		return
	case exchanging:
		return // still waiting
	}
	switch w.Cache.Look(rk, now).State {
	case cache.Leased:
	case cache.Failed:
		s.end(f, &oauth.Failure{Class: oauth.Transient})
	default:
		w.takeOver(f, now)
	}
}

func (s *refreshSource) abandoned(f *flight.Flight, _ int64) { delete(s.old, f.Key) }

func (s *refreshSource) expired(req *Request) {
	req.useStale(&oauth.Failure{Class: oauth.Transient, Description: "timed out waiting for the token refresh"})
}

func (s *refreshSource) flightDeadline(req *Request, _ int64) int64 {
	return req.deadlineMs + FlightGraceMs
}

func (s *refreshSource) full(req *Request) { req.useStale(&oauth.Failure{Class: oauth.Transient}) }

// staleEntry is the cached token req waits to replace, if any.
func (req *Request) staleEntry() *memoEntry {
	if req.more == nil {
		return nil
	}
	return req.more.stale
}

// useStale sends a request that waited for a fresh token on with the token it would have had,
// while that is still valid; otherwise it fails like an exchange (fallback, or strict mode's
// reply).
func (req *Request) useStale(fail *oauth.Failure) {
	w := req.w
	// Not a token dropped meanwhile (an upstream 401 bumps the generation word).
	if e := req.staleEntry(); e != nil && w.host.NowMs() < e.untilMs && e.generation == w.Cache.Generation() {
		w.count(CacheHit)
		req.useBearer(e.bearer, e, "")
		return
	}
	if fail == nil {
		fail = &oauth.Failure{Class: oauth.Transient}
	}
	req.exchangeFailed(fail)
}
