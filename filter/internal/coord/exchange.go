package coord

import (
	"strconv"
	"strings"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
	"github.com/kagenti/token-exchange-filter/filter/internal/seal"
)

// exchangeSource fetches a token for one user token (RFC 8693 token exchange). Its flights are
// keyed by the cache key; its lease and back-off marker live in the key's cache slot.
type exchangeSource struct {
	w *Worker
	// invalidStreak counts exchanges of different keys refused in a row as "Invalid token";
	// lastInvalid is the key of the last one; explained tells whether the likely cause was logged.
	invalidStreak int
	lastInvalid   string
	explained     bool
	// retrying: a flight is being retried after a forged cache entry was deleted.
	retrying bool
}

// The exchange back-off window: failureBackoffMs doubled per consecutive failure at most
// backoffDoublings times, configurationBackoffFactor times longer for configuration failures,
// never past config.MaxFailureBackoffMs.
const (
	backoffDoublings           = 4
	configurationBackoffFactor = 8
)

// longestBackoffMs is the longest window this configuration writes (0: back-off is off).
func longestBackoffMs(cfg *config.Config) int64 {
	if cfg.FailureBackoffMs == 0 {
		return 0
	}
	return min(int64(cfg.FailureBackoffMs)<<backoffDoublings*configurationBackoffFactor, int64(config.MaxFailureBackoffMs))
}

// invalidTokenStreak is how many different user tokens refused in a row as "Invalid token"
// make a set-up problem likelier than users who all logged out.
const invalidTokenStreak = 8

// noteInvalidToken watches for many different users failing with "Invalid token": Keycloak
// says that for an issuer mismatch (tokens minted at http://localhost:8080 checked by a
// Keycloak that the filter reaches as 127.0.0.1) and for clock skew too, which fail everyone.
// The likely cause is logged once per VM.
func (s *exchangeSource) noteInvalidToken(key string, fail *oauth.Failure) {
	if fail.Class != oauth.SubjectRejected || !strings.EqualFold(fail.Description, "Invalid token") {
		s.invalidStreak = 0
		return
	}
	if key != s.lastInvalid {
		s.invalidStreak++
		s.lastInvalid = key
	}
	if s.invalidStreak >= invalidTokenStreak && !s.explained {
		s.explained = true
		s.w.logWarn(strconv.Itoa(s.invalidStreak) + " different user tokens in a row were refused as \"Invalid token\". " +
			"Unless these users all logged out, Keycloak most likely does not accept its own tokens' issuer: the iss the users' tokens carry " +
			"(e.g. http://localhost:8080/realms/…) must be the URL Keycloak knows itself by (set its hostname, KC_HOSTNAME, so that both agree, " +
			"whatever address the filter calls), or the clocks of Envoy, Keycloak and the token issuer are skewed")
	}
}

func (s *exchangeSource) claim(f *flight.Flight, now int64) bool {
	// One exchange per key for the whole Envoy: claim the key's lease first. If another
	// worker holds it, wait for its result; if the result is already there, use it.
	// The key's token expired while a refresh of it runs: wait for the refresh (polled like a
	// lease elsewhere) rather than call the IdP a second time. A refresh that failed moments
	// ago backs the key off like a failed exchange.
	switch r := s.w.Cache.Look(cache.RefreshKey(cacheKey(f.Key)), now); r.State {
	case cache.Failed:
		s.w.settleEach(f, func(req *Request) { req.backedOff(r.Status) })
		return false
	case cache.Leased:
		f.Remote, f.Dispatched = true, true
		return false
	}
	generation := s.w.Cache.Generation() // before the read: see memo.go
	won, cur, err := s.w.Cache.TryLease(cacheKey(f.Key), s.w.owner, f.DeadlineMs, now)
	if err == nil && !won {
		s.settleFromCache(f, cur, generation)
		return false
	}
	// Lease first, then look again: a refresh that leased the key's refresh entry between our
	// look and our lease must stay the only callout; wait for it instead.
	if err == nil {
		if r := s.w.Cache.Look(cache.RefreshKey(cacheKey(f.Key)), now); r.State == cache.Leased {
			_ = s.w.Cache.ReleaseLease(cacheKey(f.Key), s.w.owner)
			f.Remote, f.Dispatched = true, true
			return false
		}
	}
	// err != nil: shared data refused; exchanging without a lease is still correct.
	return true
}

func (s *exchangeSource) form(f *flight.Flight) []byte {
	return oauth.ExchangeForm(f.Subject, f.Audience, f.Scope, s.w.client)
}

func (s *exchangeSource) count(fail *oauth.Failure) {
	if fail == nil {
		s.w.count(ExchangeSuccess)
	} else if m, ok := exchangeFailureMetric(fail.Class); ok {
		s.w.count(m)
	}
}

func (s *exchangeSource) result(key string, tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64) {
	w := s.w
	k := cacheKey(key)
	defer w.wakeOthers()
	if fail != nil {
		backoff := s.backOff(k, fail, now)
		hint := ""
		if h := oauth.SetupHint(fail.Description); h != "" {
			hint = "; every user will fail alike until Keycloak is set up: " + h
		}
		w.warns.warn(w, "exchange:"+fail.Class.String(), now, "token exchange failed: "+fail.String()+
			", "+strconv.Itoa(len(waiters))+" waiting request(s) "+w.failureOutcome()+backoff+hint)
		s.noteInvalidToken(key, fail)
		w.settleIDs(waiters, func(req *Request) { req.exchangeFailed(fail) })
		return
	}
	s.invalidStreak = 0
	lifeMs, blob := w.storeFresh(k, tok, now, "an exchanged")
	stored := blob != ""
	if !stored {
		// Nothing shared (no time left, too long for an entry, or the write failed): free the
		// key so that other workers' waiters exchange at once instead of waiting on our lease.
		_ = w.Cache.ReleaseLease(k, w.owner)
	}
	// A token this fresh cannot have been dropped yet: the current word files it safely.
	generation := w.Cache.Generation()
	w.settleIDs(waiters, func(req *Request) { req.useExchanged(tok.AccessToken, blob, key, now+lifeMs, now, generation) })
}

// storeFresh seals a fetched token and stores it under k until its usable lifetime ends, and
// returns that lifetime (0: no known expiry or none left, nothing stored) and the sealed entry
// ("" when nothing was stored: no time left, too long for an entry, or the write failed, which
// is logged as what's token, e.g. "an exchanged").
func (w *Worker) storeFresh(k cache.Key, tok oauth.Token, now int64, what string) (lifeMs int64, blob string) {
	lifeMs, ok := w.lifetimeMs(tok)
	if !ok || len(tok.AccessToken)+seal.Overhead > cache.MaxTokenBytes {
		return lifeMs, ""
	}
	sealed := w.sealer.Seal(tok.AccessToken, k[:], now+lifeMs)
	if err := w.Cache.Put(k, sealed, now+lifeMs, now); err != nil {
		w.warns.warn(w, "cache", now, "storing "+what+" token in shared data failed: "+err.Error())
		return lifeMs, ""
	}
	return lifeMs, sealed
}

// backOff records a failed exchange in the key's slot, so that requests for the key (on every
// worker) settle at once until the window ends instead of calling the IdP again, and returns a
// note for the log line.
func (s *exchangeSource) backOff(k cache.Key, fail *oauth.Failure, now int64) string {
	if window, ok := s.w.backOffEntry(k, fail, now); ok {
		return "; this user token backs off for " + strconv.FormatInt(window, 10) + " ms"
	}
	return ""
}

// backOffEntry writes a failure marker for entry k (a key's token entry, or its refresh entry)
// with the back-off window: failureBackoffMs doubled with each consecutive failure up to 16
// times, configuration-class failures (every user fails alike) starting 8 times longer. With
// back-off off, or shared data refusing the marker, the lease is released instead (ok=false).
func (w *Worker) backOffEntry(k cache.Key, fail *oauth.Failure, now int64) (windowMs int64, ok bool) {
	base := w.cfg.FailureBackoffMs
	if base == 0 {
		_ = w.Cache.ReleaseLease(k, w.owner)
		return 0, false
	}
	failures := w.Cache.Look(k, now).Failures // 0..16, read back from shared data
	window := base << uint(min(failures, backoffDoublings))
	if fail.Class == oauth.Configuration {
		window *= configurationBackoffFactor
	}
	window = min(window, longestBackoffMs(w.cfg))
	if _, err := w.Cache.PutFailure(k, fail.StrictStatus(), now+window, now); err != nil {
		_ = w.Cache.ReleaseLease(k, w.owner)
		return 0, false
	}
	return window, true
}

// settleFromCache ends flight f with what another worker left in shared data: its token, its
// failure, or — while its lease runs — nothing yet, and f waits for it.
func (s *exchangeSource) settleFromCache(f *flight.Flight, cur cache.Lookup, generation uint64) {
	w := s.w
	switch cur.State {
	case cache.Hit:
		token, untilMs, ok := s.open(f.Key, cur)
		switch {
		case ok:
			w.settleEach(f, func(req *Request) { req.useExchanged(token, cur.Token, f.Key, untilMs, cur.StoredAtMs, generation) })
		case !s.retrying:
			// The forged entry is gone: exchange for real (once; a neighbour writing it back
			// at once fails the flight rather than looping).
			s.retrying = true
			w.takeOver(f, w.host.NowMs())
			s.retrying = false
		default:
			w.settleEach(f, func(req *Request) { req.exchangeFailed(&oauth.Failure{Class: oauth.Transient}) })
		}
	case cache.Failed:
		w.settleEach(f, func(req *Request) { req.backedOff(cur.Status) })
	default:
		// Its requests join the exchange another worker is making.
		f.Remote, f.Dispatched = true, true
		for i := 0; i < f.Waiting(); i++ {
			w.count(RequestsJoined)
		}
	}
}

// open opens a cached entry of key: the token in the clear and the earlier of the entry's and the
// sealed expiry. An entry that does not open was not written by this configuration (another
// plugin in the vm_id planted or damaged it): it is deleted, so that an exchange can replace it,
// and reported.
func (s *exchangeSource) open(key string, cur cache.Lookup) (string, int64, bool) {
	w := s.w
	k := cacheKey(key)
	token, untilMs, ok := w.sealer.Open(cur.Token, k[:])
	if !ok {
		_ = w.Cache.Delete(k)
		w.warns.warn(w, "unsealed", w.host.NowMs(), "a cache entry in shared data was not written by this configuration "+
			"(another plugin in the vm_id?): it is ignored and replaced")
		return "", 0, false
	}
	return token, min(untilMs, cur.UntilMs), true
}

func (s *exchangeSource) poll(f *flight.Flight, now int64) {
	generation := s.w.Cache.Generation() // before the read: see memo.go
	cur := s.w.Cache.Look(cacheKey(f.Key), now)
	switch cur.State {
	case cache.Hit, cache.Failed:
		s.settleFromCache(f, cur, generation)
	case cache.Miss:
		s.w.takeOver(f, now)
	}
}

// abandoned: a wait on an exchange says nothing more than the requests' own timeouts do.
func (s *exchangeSource) abandoned(*flight.Flight, int64) {}

func (s *exchangeSource) expired(req *Request) {
	req.exchangeFailed(&oauth.Failure{Class: oauth.Transient, Description: "timed out waiting for the token exchange"})
}

// An exchange ends by its first request's deadline.
func (s *exchangeSource) flightDeadline(req *Request, _ int64) int64 {
	return req.deadlineMs + FlightGraceMs
}

func (s *exchangeSource) full(req *Request) {
	req.deadlineExpired = true
	req.exchangeFailed(&oauth.Failure{Class: oauth.Transient})
}
