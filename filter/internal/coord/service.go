package coord

import (
	"errors"
	"strconv"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

const (
	// Retry back-off of the service-account fetch after a failure (ServiceRetryMinMs doubling).
	ServiceRetryMinMs = 1_000
	// Drop401MinAgeMs is how long a token must have been in use before an upstream 401 drops
	// it: a path that answers 401 to everything (anonymous requests carry the service-account
	// token) then costs at most one fetch, or one exchange per user, per this window, however
	// many requests it gets. A token really revoked is replaced within it.
	Drop401MinAgeMs = 10_000
	saRetryMaxMs    = 30_000
	// saUnknownLifetimeMs is how long a service-account token whose answer gave no expiry (no
	// expires_in, not a JWT) is used before it is fetched again.
	saUnknownLifetimeMs = 60_000
	// saRefreshJitterMaxMs spreads the workers' refresh checks, so that the first worker to
	// refresh stores the new token before the others look and they do not all fetch at once.
	saRefreshJitterMaxMs = 10_000
)

// saStatus is this VM's view of the service-account token.
type saStatus uint8

const (
	saUnknown saStatus = iota // no fetch has finished yet: requests that need it are held
	saOK                      // the last fetch succeeded
	saFailed                  // the last fetch failed: without a valid token, answer 503 at once
)

// serviceSource fetches the service-account token (client credentials), one fetch for the
// whole Envoy through a lease in its own key, refreshed ahead of expiry from the tick.
type serviceSource struct {
	w           *Worker
	needed      bool
	status      saStatus
	nextCheckMs int64 // when the tick looks at the shared token again
	retryAtMs   int64 // earliest next fetch after a failure
	failures    int
	// local keeps a token shared data could not take (over 8 KiB, or the write failed), so
	// this worker does not fetch again for every request.
	local cache.ServiceToken
	// The last sealed record read from shared data and what it opened to, so that a request
	// compares strings instead of decrypting.
	lastBlob, lastPlain string
	lastUntilMs         int64
}

func (s *serviceSource) init(cfg *config.Config) {
	// Strict exchange never uses the service-account token, so it never fetches one.
	s.needed = !cfg.TokenExchange.Enabled || cfg.FallbackToServiceAccount
	if len(cfg.Rules) > 0 {
		// With rules only matching requests are ours: fetch if some rule can use the token.
		s.needed = false
		for _, rule := range cfg.Rules {
			s.needed = s.needed || !rule.Enabled || cfg.FallbackToServiceAccount
		}
	}
}

func (s *serviceSource) claim(f *flight.Flight, now int64) bool {
	won, cur, err := s.w.Cache.TryServiceLease(s.w.owner, f.DeadlineMs, now)
	if err != nil || won {
		return true
	}
	if cur.State == cache.Failed {
		s.remoteFailure(f, cur)
		return false
	}
	f.Remote, f.Dispatched = true, true
	return false
}

func (s *serviceSource) form(*flight.Flight) []byte { return oauth.ClientCredentialsForm(s.w.client) }

func (s *serviceSource) count(fail *oauth.Failure) {
	if fail == nil {
		s.w.count(ServiceFetchSuccess)
	} else {
		s.w.count(ServiceFetchFailure)
	}
}

func (s *serviceSource) result(_ string, tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64) {
	w := s.w
	if fail != nil {
		s.fetchFailed(fail, now)
		// The workers waiting on this fetch learn of the failure from the lease's key and back
		// off with us, instead of all fetching at once.
		if err := w.Cache.PutServiceFailure(s.retryAtMs, now); err != nil {
			_ = w.Cache.ReleaseServiceLease(w.owner)
		}
		w.wakeOthers()
		// Another worker may have stored a token meanwhile; otherwise 503.
		w.settleIDs(waiters, (*Request).useServiceToken)
		return
	}
	s.status, s.failures, s.retryAtMs = saOK, 0, 0
	s.local = cache.ServiceToken{}
	used := tok.AccessToken // what an upstream 401 drops: the sealed record when shared
	lifeMs, ok := w.lifetimeMs(tok)
	if !tok.HasExpiry {
		lifeMs, ok = saUnknownLifetimeMs, true
	}
	if ok {
		t := cache.ServiceToken{Token: tok.AccessToken, ExpiresAtMs: now + lifeMs, RefreshAtMs: now + lifeMs*3/4, ObtainedAtMs: now}
		sealed := t
		sealed.Token = w.sealer.Seal(tok.AccessToken, serviceBinding, t.ExpiresAtMs)
		if err := w.Cache.PutServiceToken(sealed); err != nil {
			s.local = t
			if !errors.Is(err, cache.ErrNotCacheable) {
				w.warns.warn(w, "cache", now, "storing the service-account token in shared data failed: "+err.Error())
			}
		} else {
			s.lastBlob, s.lastPlain, s.lastUntilMs = sealed.Token, tok.AccessToken, t.ExpiresAtMs
			used = sealed.Token
		}
		s.nextCheckMs = t.RefreshAtMs + s.jitter(lifeMs)
		w.logDebug("service-account token " + oauth.Fingerprint(tok.AccessToken) + " fetched, usable for " +
			strconv.FormatInt(lifeMs/1000, 10) + " s")
	} else {
		// No time left after the skew: it serves the waiting requests, and the next request that
		// needs one fetches again. The tick does not loop on it.
		s.nextCheckMs = now + ServiceRetryMinMs
		w.warns.warn(w, "service:lifetime", now, "the service-account token expires within expirySkewSeconds; "+
			"it serves the waiting requests only (lower expirySkewSeconds or raise the token lifespan)")
	}
	// Only now, with the token stored, may waiting workers look: released earlier, they would
	// find neither lease nor token and fetch again.
	_ = w.Cache.ReleaseServiceLease(w.owner)
	w.wakeOthers()
	w.settleIDs(waiters, func(req *Request) { req.useToken(tok.AccessToken, used) })
}

// poll ends a wait on another worker's fetch once a fresh token is in shared data, or takes
// the fetch over when that worker's lease is gone.
func (s *serviceSource) poll(f *flight.Flight, now int64) {
	w := s.w
	if t, blob, ok := s.shared(now); ok && now < t.RefreshAtMs {
		s.status, s.failures, s.retryAtMs = saOK, 0, 0
		s.nextCheckMs = t.RefreshAtMs + s.jitter(t.ExpiresAtMs-now)
		w.settleEach(f, func(req *Request) { req.useToken(t.Token, blob) })
		return
	}
	switch cur := w.Cache.LookServiceLease(now); cur.State {
	case cache.Failed:
		s.remoteFailure(f, cur)
	case cache.Miss:
		w.takeOver(f, now)
	}
}

// remoteFailure ends a wait on another worker's fetch that failed: this worker backs off as
// that one does, and its waiting requests get a token that is still valid or 503 at once.
func (s *serviceSource) remoteFailure(f *flight.Flight, cur cache.Lookup) {
	s.status = saFailed
	s.retryAtMs = max(s.retryAtMs, cur.UntilMs)
	s.w.settleEach(f, (*Request).useServiceToken)
}

// abandoned: only our own silent callout counts as a failed fetch; a wait on another
// worker's fetch says nothing about the IdP.
func (s *serviceSource) abandoned(f *flight.Flight, now int64) {
	if !f.Remote {
		s.fetchFailed(&oauth.Failure{Class: oauth.Transient, Description: "no answer from the token endpoint"}, now)
	}
}

// expired: a token another worker stored meanwhile, or 503.
func (s *serviceSource) expired(req *Request) { req.useServiceToken() }

// The fetch serves everyone and gets the full timeout: a request that falls back late must not
// shorten it (each request is still settled by its own deadline through the tick).
func (s *serviceSource) flightDeadline(_ *Request, now int64) int64 {
	return now + int64(s.w.cfg.TimeoutMs) + FlightGraceMs
}

func (s *serviceSource) full(req *Request) { req.reply(replyNoToken) }

// fetchFailed records a failed fetch and backs off exponentially.
func (s *serviceSource) fetchFailed(fail *oauth.Failure, now int64) {
	s.status = saFailed
	s.failures++
	backoff := min(int64(ServiceRetryMinMs)<<min(s.failures-1, 5), saRetryMaxMs)
	s.retryAtMs = now + backoff
	s.w.warns.warn(s.w, "service:"+fail.Class.String(), now, "fetching the service-account token failed: "+fail.String()+
		"; retrying in "+strconv.FormatInt(backoff, 10)+" ms")
}

// token returns a usable service-account token, and what an upstream 401 drops (the sealed
// record): the shared one, or the one this worker keeps because shared data could not take it.
func (s *serviceSource) token(now int64) (token, used string, ok bool) {
	if t, blob, ok := s.shared(now); ok {
		return t.Token, blob, true
	}
	if s.local.Token != "" && now < s.local.ExpiresAtMs {
		return s.local.Token, s.local.Token, true
	}
	return "", "", false
}

// serviceBinding binds the sealed service-account record to its key.
var serviceBinding = []byte("service-account")

// shared reads the service-account record from shared data and opens it: the token in the
// clear, its expiry the earlier of the record's and the sealed one, and the sealed form (blob).
// The last opened record is remembered, so that requests do not each decrypt it. A record that
// does not open was not written by this configuration (a neighbour in the vm_id): it is marked
// dropped, so that our next fetch replaces it.
func (s *serviceSource) shared(now int64) (t cache.ServiceToken, blob string, ok bool) {
	w := s.w
	rec, found := w.Cache.ServiceToken(now)
	if !found {
		return cache.ServiceToken{}, "", false
	}
	if rec.Token != s.lastBlob {
		plain, until, opened := w.sealer.Open(rec.Token, serviceBinding)
		if !opened {
			_, _ = w.Cache.DropServiceToken(rec.Token, now, 0)
			w.warns.warn(w, "unsealed", now, "the service-account record in shared data was not written by this configuration "+
				"(another plugin in the vm_id?): it is ignored")
			return cache.ServiceToken{}, "", false
		}
		s.lastBlob, s.lastPlain, s.lastUntilMs = rec.Token, plain, until
	}
	t = rec
	t.Token = s.lastPlain
	t.ExpiresAtMs = min(rec.ExpiresAtMs, s.lastUntilMs)
	t.RefreshAtMs = min(rec.RefreshAtMs, t.ExpiresAtMs)
	if now >= t.ExpiresAtMs {
		return cache.ServiceToken{}, "", false
	}
	return t, rec.Token, true
}

// jitter is a per-worker delay of up to 1/8 of the lifetime (at most 10 s).
func (s *serviceSource) jitter(lifeMs int64) int64 {
	span := min(lifeMs/8, saRefreshJitterMaxMs)
	if span <= 0 {
		return 0
	}
	return int64(s.w.host.Random() % uint64(span))
}

// refresh starts a background fetch when the shared token is missing or due for refresh and
// no fetch is running. Each worker checks on its own tick.
func (s *serviceSource) refresh(now int64) {
	if !s.needed || now < s.nextCheckMs || now < s.retryAtMs {
		return
	}
	if _, running := s.w.flights.Get(serviceFlightKey); running {
		return
	}
	if t, _, ok := s.shared(now); ok && now < t.RefreshAtMs {
		// Another worker refreshed it.
		s.status = saOK
		s.nextCheckMs = t.RefreshAtMs + s.jitter(t.ExpiresAtMs-now)
		return
	}
	if t := s.local; t.Token != "" && now < t.RefreshAtMs {
		s.nextCheckMs = t.RefreshAtMs
		return
	}
	s.start(now)
}

func (s *serviceSource) start(now int64) {
	if f := s.w.flights.Start(serviceFlightKey, now+int64(s.w.cfg.TimeoutMs)+FlightGraceMs); f != nil {
		s.w.launch(f)
	}
}

// dropped forgets a service-account token the upstream refused.
func (s *serviceSource) dropped(token string, now int64) {
	if removed, _ := s.w.Cache.DropServiceToken(token, now, Drop401MinAgeMs); removed {
		_ = s.w.Cache.BumpGeneration()
	}
	if s.local.Token == token && now-s.local.ObtainedAtMs >= Drop401MinAgeMs {
		s.local = cache.ServiceToken{}
	}
	s.nextCheckMs = 0
}
