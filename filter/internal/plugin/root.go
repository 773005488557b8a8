// Package plugin wires the filter's logic to the proxy-wasm host: the VM and root contexts
// (configuration, ticks, the wake-up queue, callouts) and the HTTP contexts (read the user
// token, hold, inject). Everything else lives in host-free packages.
package plugin

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"

	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm"
	"github.com/proxy-wasm/proxy-wasm-go-sdk/proxywasm/types"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
)

const (
	// tickMs drives the deadline sweep and the service-account refresh. Each worker ticks on its
	// own; an idle tick only compares a few integers.
	tickMs = 50
	// flightGraceMs is how long after its own timeout a callout may still answer before its
	// flight is abandoned (Envoy answers every callout by its timeout; this covers lost callbacks).
	flightGraceMs = 500
	// Bounds of the per-VM tables: past them a request falls back at once instead of growing memory.
	maxHeldPerVM    = 4096
	maxFlightsPerVM = 1024
	// Retry back-off of the service-account fetch after a failure.
	saRetryMinMs = 1_000
	saRetryMaxMs = 30_000
	// saUnknownLifetimeMs is how long a service-account token whose answer gave no expiry (no
	// expires_in, not a JWT) is used before it is fetched again.
	saUnknownLifetimeMs = 60_000
	// saRefreshJitterMaxMs spreads the workers' refresh checks, so that the first worker to
	// refresh stores the new token before the others look and they do not all fetch at once.
	saRefreshJitterMaxMs = 10_000
)

// serviceFlightKey names the service-account fetch among the flights. Exchange flights are keyed
// by 32 raw hash bytes, so this 3-byte key cannot collide with them.
const serviceFlightKey = "\x00sa"

// NewVMContext returns the VM context the wasm entry point registers.
func NewVMContext() types.VMContext { return &vmContext{} }

type vmContext struct{ types.DefaultVMContext }

func (*vmContext) NewPluginContext(contextID uint32) types.PluginContext {
	return &rootContext{contextID: contextID}
}

// saStatus is this VM's view of the service-account token.
type saStatus uint8

const (
	saUnknown saStatus = iota // no fetch has finished yet: requests that need it are held
	saOK                      // the last fetch succeeded
	saFailed                  // the last fetch failed: without a valid token, answer 503 at once
)

type rootContext struct {
	types.DefaultPluginContext
	contextID uint32

	cfg      *config.Config
	client   oauth.Client
	endpoint oauth.Endpoint
	cache    *cache.Cache
	flights  *flight.Registry
	warns    *warnLimiter
	metrics  *metrics

	// held maps a held request's context id to its stream, so a root callback can resume it.
	held map[uint32]*httpContext
	// owner identifies this VM in exchange leases (see cache.TryLease) and in the waker list.
	owner string
	// vmID is the vm_id other VMs' wake-up queues are registered under.
	vmID string

	// wakeQueue is this VM's own shared queue. Enqueueing to it from a request gets us into the
	// root context, where callouts survive the cancellation of the request that asked for them.
	wakeQueue    uint32
	hasWakeQueue bool
	// inRoot is true while a root callback runs (tick, queue, callout answer).
	inRoot bool

	sa struct {
		needed      bool
		status      saStatus
		nextCheckMs int64 // when the tick looks at the shared token again
		retryAtMs   int64 // earliest next fetch after a failure
		failures    int
		// local keeps a token shared data could not take (over 8 KiB, or the write failed), so
		// this worker does not fetch again for every request.
		local cache.ServiceToken
	}

	scratch []uint32
}

func (r *rootContext) OnPluginStart(int) types.OnPluginStartStatus {
	data, err := proxywasm.GetPluginConfiguration()
	if err != nil {
		data = nil // an absent configuration is reported by Parse like an empty one
	}
	cfg, err := config.Parse(data, os.LookupEnv)
	if err != nil {
		logError(err.Error())
		return types.OnPluginStartStatusFailed
	}
	r.cfg = cfg
	r.client = oauth.Client{ID: cfg.ClientID, Secret: cfg.ClientSecret, Basic: cfg.ClientAuth == config.ClientAuthBasic}
	r.endpoint = oauth.Endpoint{Scheme: cfg.TokenEndpoint.Scheme, Authority: cfg.TokenEndpoint.Authority, Path: cfg.TokenEndpoint.Path}
	r.cache = cache.New(sharedStore{}, cfg.Namespace(), cfg.CacheSlots)
	r.flights = flight.New(maxHeldPerVM, maxFlightsPerVM)
	r.warns = newWarnLimiter()
	r.metrics = newMetrics()
	r.held = map[uint32]*httpContext{}
	// Strict exchange never uses the service-account token, so it never fetches one.
	r.sa.needed = !cfg.TokenExchange.Enabled || cfg.FallbackToServiceAccount
	if len(cfg.Rules) > 0 {
		// With rules only matching requests are ours: fetch if some rule can use the token.
		r.sa.needed = false
		for _, rule := range cfg.Rules {
			r.sa.needed = r.sa.needed || !rule.Enabled || cfg.FallbackToServiceAccount
		}
	}

	// Queue names are per (vm_id, name) and the last registrant gets the wake-ups, so every VM
	// (one per worker) needs a name of its own.
	var id [8]byte
	for i := range id {
		id[i] = byte(rand.Uint32())
	}
	// The same random id names this VM as the holder of exchange leases in shared data.
	r.owner = hex.EncodeToString(id[:])
	if q, err := proxywasm.RegisterSharedQueue(wakeQueuePrefix + r.owner); err == nil {
		r.wakeQueue, r.hasWakeQueue = q, true
		// Other workers wake this one when a token it may wait for lands in shared data.
		if v, err := proxywasm.GetProperty([]string{"plugin_vm_id"}); err == nil {
			r.vmID = string(v)
		}
		if err := r.cache.RegisterWaker(r.owner); err != nil {
			logInfo("joining the waker list failed (" + err.Error() + "): waits on other workers end on tick")
		}
	} else {
		logError("registering the wake-up queue failed (" + err.Error() + "): callouts will be tied to the requests that start them")
	}
	// No callout is allowed during start-up: the first service-account fetch waits for the first tick.
	if err := proxywasm.SetTickPeriodMilliSeconds(tickMs); err != nil {
		logError("setting the tick period failed: " + err.Error())
		return types.OnPluginStartStatusFailed
	}
	mode := "off (service-account token only)"
	if cfg.TokenExchange.Enabled {
		mode = "on, audience " + strconv.Quote(cfg.TokenExchange.Audience)
		if !cfg.FallbackToServiceAccount {
			mode += ", strict"
		}
	}
	logInfo("started: token endpoint " + cfg.TokenEndpoint.URL + " via cluster " + strconv.Quote(cfg.Cluster) + ", exchange " + mode)
	return types.OnPluginStartStatusOK
}

func (r *rootContext) NewHttpContext(contextID uint32) types.HttpContext {
	return &httpContext{id: contextID, root: r}
}

func (r *rootContext) OnTick() {
	defer r.enterRoot()()
	now := nowMs()
	var abandoned []*flight.Flight
	r.scratch, abandoned = r.flights.Expired(now, r.scratch[:0], nil)
	for _, f := range abandoned {
		// A wait on another worker's fetch says nothing about the IdP: only our own silent
		// callout counts as a failed fetch.
		if f.Key == serviceFlightKey && !f.Remote {
			// Its callout never answered: for the back-off that is a failed fetch.
			r.serviceFetchFailed(&oauth.Failure{Class: oauth.Transient, Description: "no answer from the token endpoint"}, now)
		}
	}
	for _, ctx := range r.scratch {
		if h := r.held[ctx]; h != nil {
			r.deadlinePassed(h)
		}
	}
	r.refreshServiceToken(now)
	r.pollRemoteFlights(now)
	// Backstop for a lost wake-up: a flight still waiting for dispatch is sent from here.
	if r.flights.Flights() > 0 {
		var pending [16]*flight.Flight
		for _, f := range r.flights.Undispatched(pending[:0]) {
			r.dispatch(f)
		}
	}
}

func (r *rootContext) OnQueueReady(queueID uint32) {
	defer r.enterRoot()()
	if queueID != r.wakeQueue {
		return
	}
	// The messages only say "look"; what to dispatch is in the flight table.
	for {
		if _, err := proxywasm.DequeueSharedQueue(queueID); err != nil {
			break
		}
	}
	var pending [16]*flight.Flight
	for _, f := range r.flights.Undispatched(pending[:0]) {
		r.dispatch(f)
	}
	// Or another worker finished an exchange this one waits for.
	r.pollRemoteFlights(nowMs())
}

// enterRoot marks a root callback; the returned func restores the previous state (the SDK's
// emulator runs queue callbacks re-entrantly, inside the request callback that enqueued).
func (r *rootContext) enterRoot() func() {
	prev := r.inRoot
	r.inRoot = true
	return func() { r.inRoot = prev }
}

// wakeQueuePrefix + owner names each VM's wake-up queue.
const wakeQueuePrefix = "token-exchange/wake/"

// wakeOthers tells the other VMs of this plugin that a token or failure landed in shared data,
// so that requests waiting on this worker's exchange resume now instead of at their next tick.
// Called once per finished exchange; a VM that is gone has no queue any more and is skipped.
func (r *rootContext) wakeOthers() {
	var buf [8]string
	for _, owner := range r.cache.Wakers(buf[:0]) {
		if owner == r.owner {
			continue
		}
		if q, err := proxywasm.ResolveSharedQueue(r.vmID, wakeQueuePrefix+owner); err == nil {
			_ = proxywasm.EnqueueSharedQueue(q, wakeMessage)
		}
	}
}

// wakeMessage is what the wake-up queue carries; only its arrival matters (the SDK refuses an
// empty message).
var wakeMessage = []byte{1}

// launch gets a new flight's callout sent from the root context.
func (r *rootContext) launch(f *flight.Flight) {
	if r.inRoot {
		r.dispatch(f)
		return
	}
	if r.hasWakeQueue {
		if err := proxywasm.EnqueueSharedQueue(r.wakeQueue, wakeMessage); err == nil {
			return
		}
	}
	// Degraded path: the callout is tied to the current request; if its client goes away the
	// answer is lost and the flight's deadline releases the other waiters.
	r.dispatch(f)
}

// dispatch sends f's callout. A dispatch error (unknown cluster, missing pseudo-header) fails
// the flight at once, like a transient failure.
func (r *rootContext) dispatch(f *flight.Flight) {
	now := nowMs()
	var body []byte
	if f.Key == serviceFlightKey {
		// One fetch per Envoy: claim the service lease first, or wait for the worker that has it.
		if won, cur, err := r.cache.TryServiceLease(r.owner, f.DeadlineMs, now); err == nil && !won {
			if cur.State == cache.Failed {
				r.remoteServiceFailure(f, cur)
				return
			}
			f.Remote, f.Dispatched = true, true
			return
		}
		body = oauth.ClientCredentialsForm(r.client)
	} else {
		// One exchange per key for the whole Envoy: claim the key's lease first. If another
		// worker holds it, wait for its result; if the result is already there, use it.
		won, cur, err := r.cache.TryLease(cacheKey(f.Key), r.owner, f.DeadlineMs, now)
		if err == nil && !won {
			r.settleFromCache(f, cur, now)
			return
		}
		// err != nil: shared data refused; exchanging without a lease is still correct.
		body = oauth.ExchangeForm(f.Subject, f.Audience, f.Scope, r.client)
	}
	// The callout ends by the flight's deadline minus the grace, which is the first waiter's deadline.
	timeout := f.DeadlineMs - flightGraceMs - now
	if timeout < 1 {
		timeout = 1
	}
	_, err := proxywasm.DispatchHttpCall(r.cfg.Cluster, oauth.RequestHeaders(r.endpoint, r.client), body, nil, uint32(timeout),
		func(numHeaders, bodySize, _ int) { r.onCalloutResponse(f, numHeaders, bodySize) })
	if err != nil {
		r.warns.warn("dispatch", now, "calling the token endpoint through cluster "+strconv.Quote(r.cfg.Cluster)+
			" failed: "+err.Error()+" (is the cluster defined in Envoy?)")
		r.finishFlight(f, oauth.Token{}, &oauth.Failure{Class: oauth.Transient}, now)
		return
	}
	f.Dispatched = true
}

func (r *rootContext) onCalloutResponse(f *flight.Flight, numHeaders, bodySize int) {
	defer r.enterRoot()()
	now := nowMs()
	status := 0
	if numHeaders > 0 {
		if headers, err := proxywasm.GetHttpCallResponseHeaders(); err == nil {
			status = atoiStatus(headerValue(headers, ":status"))
		}
	}
	var body []byte
	if bodySize > 0 {
		// One byte past the limit is enough for the parser to reject an over-size body.
		n := bodySize
		if n > oauth.MaxBodyBytes+1 {
			n = oauth.MaxBodyBytes + 1
		}
		body, _ = proxywasm.GetHttpCallResponseBody(0, n)
	}
	tok, fail := oauth.ParseResponse(status, numHeaders, body, now)
	r.finishFlight(f, tok, fail, now)
}

// finishFlight stores a result and settles every request held on the flight.
func (r *rootContext) finishFlight(f *flight.Flight, tok oauth.Token, fail *oauth.Failure, now int64) {
	key := f.Key
	switch {
	case key == serviceFlightKey && fail == nil:
		r.metrics.serviceSuccess.inc()
	case key == serviceFlightKey:
		r.metrics.serviceFailure.inc()
	case fail == nil:
		r.metrics.exchangeSuccess.inc()
	default:
		r.metrics.exchangeFailed(fail.Class)
	}
	if cur, ok := r.flights.Get(key); !ok || cur != f {
		// A late answer to an abandoned flight: its requests were settled already. A token still
		// fills the cache; a failure must not overwrite what newer flights found out.
		if fail == nil {
			if key == serviceFlightKey {
				r.serviceTokenResult(tok, nil, nil, now)
			} else {
				r.exchangeResult(key, tok, nil, nil, now)
			}
		}
		return
	}
	waiters := r.finish(f)
	if key == serviceFlightKey {
		r.serviceTokenResult(tok, fail, waiters, now)
	} else {
		r.exchangeResult(key, tok, fail, waiters, now)
	}
}

func (r *rootContext) exchangeResult(key string, tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64) {
	k := cacheKey(key)
	if fail != nil {
		backoff := r.backOff(k, fail, now)
		defer r.wakeOthers()
		r.warns.warn("exchange:"+fail.Class.String(), now, "token exchange failed: "+fail.String()+
			", "+strconv.Itoa(len(waiters))+" waiting request(s) "+r.failureOutcome()+backoff)
		for _, ctx := range waiters {
			if h := r.held[ctx]; h != nil {
				h.exchangeFailed(fail)
			}
		}
		return
	}
	lifeMs, ok := r.lifetimeMs(tok)
	stored := false
	if ok && len(tok.AccessToken) <= cache.MaxTokenBytes {
		err := r.cache.Put(k, tok.AccessToken, now+lifeMs, now)
		if err != nil {
			r.warns.warn("cache", now, "storing an exchanged token in shared data failed: "+err.Error())
		}
		stored = err == nil
	}
	if !stored {
		// Nothing shared (no time left, too long for an entry, or the write failed): free the
		// key so that other workers' waiters exchange at once instead of waiting on our lease.
		_ = r.cache.ReleaseLease(k, r.owner)
	}
	defer r.wakeOthers()
	for _, ctx := range waiters {
		if h := r.held[ctx]; h != nil {
			h.useToken(tok.AccessToken, key, "")
		}
	}
}

// cacheKey turns a flight key back into the cache key it was made from.
func cacheKey(key string) (k cache.Key) {
	copy(k[:], key)
	return k
}

// backOff records a failed exchange in the key's slot, so that requests for the key (on every
// worker) settle at once until the window ends instead of calling the IdP again, and returns a
// note for the log line. The window doubles with consecutive failures up to 16 times
// failureBackoffMs; configuration-class failures (every user fails alike) start 8 times longer.
func (r *rootContext) backOff(k cache.Key, fail *oauth.Failure, now int64) string {
	base := r.cfg.FailureBackoffMs
	if base == 0 {
		_ = r.cache.ReleaseLease(k, r.owner)
		return ""
	}
	failures := r.cache.Look(k, now).Failures // 0..16, read back from shared data
	window := base << uint(min(failures, 4))
	if fail.Class == oauth.Configuration {
		window *= 8
	}
	window = min(window, int64(config.MaxFailureBackoffMs))
	if _, err := r.cache.PutFailure(k, fail.StrictStatus(), now+window, now); err != nil {
		_ = r.cache.ReleaseLease(k, r.owner)
		return ""
	}
	return "; this user token backs off for " + strconv.FormatInt(window, 10) + " ms"
}

// settleFromCache ends flight f with what another worker left in shared data: its token, its
// failure, or — while its lease runs — nothing yet, and f waits for it (polled on tick).
func (r *rootContext) settleFromCache(f *flight.Flight, cur cache.Lookup, now int64) {
	switch cur.State {
	case cache.Hit:
		r.settleEach(f, func(h *httpContext) { h.useToken(cur.Token, f.Key, "") })
	case cache.Failed:
		r.settleEach(f, func(h *httpContext) { h.backedOff(cur.Status) })
	default:
		// Its requests join the exchange another worker is making.
		f.Remote, f.Dispatched = true, true
		for i := 0; i < f.Waiting(); i++ {
			r.metrics.joined.inc()
		}
	}
}

// pollRemoteFlights looks, on each tick, whether the workers this VM waits on have finished;
// a lease that ended without a result (its holder died, or released it) is taken over.
func (r *rootContext) pollRemoteFlights(now int64) {
	var remote [16]*flight.Flight
	for _, f := range r.flights.RemoteFlights(remote[:0]) {
		if f.Key == serviceFlightKey {
			r.pollRemoteServiceFetch(f, now)
			continue
		}
		cur := r.cache.Look(cacheKey(f.Key), now)
		switch cur.State {
		case cache.Hit, cache.Failed:
			r.settleFromCache(f, cur, now)
		case cache.Miss:
			r.takeOver(f, now)
		}
	}
}

// pollRemoteServiceFetch ends a wait on another worker's service-account fetch once a fresh
// token is in shared data, or takes the fetch over when that worker's lease is gone.
func (r *rootContext) pollRemoteServiceFetch(f *flight.Flight, now int64) {
	if t, ok := r.cache.ServiceToken(now); ok && now < t.RefreshAtMs {
		r.sa.status, r.sa.failures, r.sa.retryAtMs = saOK, 0, 0
		r.sa.nextCheckMs = t.RefreshAtMs + r.refreshJitter(t.ExpiresAtMs-now)
		r.settleEach(f, func(h *httpContext) { h.useToken(t.Token, "", t.Token) })
		return
	}
	switch cur := r.cache.LookServiceLease(now); cur.State {
	case cache.Failed:
		r.remoteServiceFailure(f, cur)
	case cache.Miss:
		r.takeOver(f, now)
	}
}

// remoteServiceFailure ends a wait on another worker's service-account fetch that failed: this
// worker backs off as that one does, and its waiting requests get a token that is still valid
// or 503 at once.
func (r *rootContext) remoteServiceFailure(f *flight.Flight, cur cache.Lookup) {
	r.sa.status = saFailed
	r.sa.retryAtMs = max(r.sa.retryAtMs, cur.UntilMs)
	r.settleEach(f, (*httpContext).useServiceToken)
}

// settleEach ends f and settles each of its requests whose stream still exists.
func (r *rootContext) settleEach(f *flight.Flight, settle func(h *httpContext)) {
	for _, ctx := range r.finish(f) {
		if h := r.held[ctx]; h != nil {
			settle(h)
		}
	}
}

// finish ends f and returns its held requests. They are copied out of scratch: settling one can
// start a new flight, which reuses scratch.
func (r *rootContext) finish(f *flight.Flight) []uint32 {
	waiters := r.flights.Finish(f, r.scratch[:0])
	var buf [32]uint32
	return append(buf[:0], waiters...)
}

// takeOver makes a flight that waited on another worker fetch by itself. It gets a full timeout:
// its requests are still settled by their own deadlines, and a callout cut short would only
// fail and back the key off.
func (r *rootContext) takeOver(f *flight.Flight, now int64) {
	f.Remote, f.Dispatched = false, false
	f.DeadlineMs = max(f.DeadlineMs, now+int64(r.cfg.TimeoutMs)+flightGraceMs)
	r.dispatch(f)
}

// lifetimeMs is how long a fresh token may be used from now: its lifetime minus the skew. A
// token without a known expiry, or with no time left, serves the requests that waited for it
// and is not kept.
func (r *rootContext) lifetimeMs(tok oauth.Token) (int64, bool) {
	if !tok.HasExpiry {
		return 0, false
	}
	life := tok.ExpiresIn - r.cfg.ExpirySkewSeconds
	if life <= 0 {
		return 0, false
	}
	return life * 1000, true
}

func (r *rootContext) failureOutcome() string {
	if r.cfg.FallbackToServiceAccount {
		return "fall back to the service-account token"
	}
	return "answered locally (strict mode)"
}

func (r *rootContext) serviceTokenResult(tok oauth.Token, fail *oauth.Failure, waiters []uint32, now int64) {
	if fail != nil {
		r.serviceFetchFailed(fail, now)
		// The workers waiting on this fetch learn of the failure from the lease's key and back
		// off with us, instead of all fetching at once.
		if err := r.cache.PutServiceFailure(r.sa.retryAtMs, now); err != nil {
			_ = r.cache.ReleaseServiceLease(r.owner)
		}
		r.wakeOthers()
		// Another worker may have stored a token meanwhile; otherwise 503.
		for _, ctx := range waiters {
			if h := r.held[ctx]; h != nil {
				h.useServiceToken()
			}
		}
		return
	}
	r.sa.status = saOK
	r.sa.failures = 0
	r.sa.retryAtMs = 0
	r.sa.local = cache.ServiceToken{}
	lifeMs, ok := r.lifetimeMs(tok)
	if !tok.HasExpiry {
		lifeMs, ok = saUnknownLifetimeMs, true
	}
	if ok {
		t := cache.ServiceToken{Token: tok.AccessToken, ExpiresAtMs: now + lifeMs, RefreshAtMs: now + lifeMs*3/4}
		if err := r.cache.PutServiceToken(t); err != nil {
			r.sa.local = t
			if !errors.Is(err, cache.ErrNotCacheable) {
				r.warns.warn("cache", now, "storing the service-account token in shared data failed: "+err.Error())
			}
		}
		r.sa.nextCheckMs = t.RefreshAtMs + r.refreshJitter(lifeMs)
		logDebug("service-account token " + oauth.Fingerprint(tok.AccessToken) + " fetched, usable for " +
			strconv.FormatInt(lifeMs/1000, 10) + " s")
	} else {
		// No time left after the skew: it serves the waiting requests, and the next request that
		// needs one fetches again. The tick does not loop on it.
		r.sa.nextCheckMs = now + saRetryMinMs
		r.warns.warn("service:lifetime", now, "the service-account token expires within expirySkewSeconds; "+
			"it serves the waiting requests only (lower expirySkewSeconds or raise the token lifespan)")
	}
	// Only now, with the token stored, may waiting workers look: released earlier, they would
	// find neither lease nor token and fetch again.
	_ = r.cache.ReleaseServiceLease(r.owner)
	r.wakeOthers()
	for _, ctx := range waiters {
		if h := r.held[ctx]; h != nil {
			h.useToken(tok.AccessToken, "", tok.AccessToken)
		}
	}
}

// serviceFetchFailed records a failed service-account fetch and backs off exponentially.
func (r *rootContext) serviceFetchFailed(fail *oauth.Failure, now int64) {
	r.sa.status = saFailed
	r.sa.failures++
	backoff := min(int64(saRetryMinMs)<<min(r.sa.failures-1, 5), saRetryMaxMs)
	r.sa.retryAtMs = now + backoff
	r.warns.warn("service:"+fail.Class.String(), now, "fetching the service-account token failed: "+fail.String()+
		"; retrying in "+strconv.FormatInt(backoff, 10)+" ms")
}

// serviceToken returns a usable service-account token: the shared one, or the one this worker
// keeps because shared data could not take it.
func (r *rootContext) serviceToken(now int64) (string, bool) {
	if t, ok := r.cache.ServiceToken(now); ok {
		return t.Token, true
	}
	if r.sa.local.Token != "" && now < r.sa.local.ExpiresAtMs {
		return r.sa.local.Token, true
	}
	return "", false
}

// refreshJitter is a per-worker delay of up to 1/8 of the lifetime (at most 10 s).
func (r *rootContext) refreshJitter(lifeMs int64) int64 {
	span := min(lifeMs/8, saRefreshJitterMaxMs)
	if span <= 0 {
		return 0
	}
	return rand.Int64N(span)
}

// refreshServiceToken starts a background fetch when the shared token is missing or due for
// refresh and no fetch is running. Each worker checks on its own tick.
func (r *rootContext) refreshServiceToken(now int64) {
	if !r.sa.needed || now < r.sa.nextCheckMs || now < r.sa.retryAtMs {
		return
	}
	if _, running := r.flights.Get(serviceFlightKey); running {
		return
	}
	if t, ok := r.cache.ServiceToken(now); ok && now < t.RefreshAtMs {
		// Another worker refreshed it.
		r.sa.status = saOK
		r.sa.nextCheckMs = t.RefreshAtMs + r.refreshJitter(t.ExpiresAtMs-now)
		return
	}
	if t := r.sa.local; t.Token != "" && now < t.RefreshAtMs {
		r.sa.nextCheckMs = t.RefreshAtMs
		return
	}
	r.startServiceFetch(now)
}

func (r *rootContext) startServiceFetch(now int64) {
	if f := r.flights.Start(serviceFlightKey, now+int64(r.cfg.TimeoutMs)+flightGraceMs); f != nil {
		r.launch(f)
	}
}

// deadlinePassed settles a request whose wait ran out (tick sweep): with no time left it may
// not wait again, so it gets a token that is already there or a local reply.
func (r *rootContext) deadlinePassed(h *httpContext) {
	h.deadlineExpired = true
	if h.waitingFor == serviceFlightKey {
		h.useServiceToken() // a token another worker stored meanwhile, or 503
		return
	}
	h.exchangeFailed(&oauth.Failure{Class: oauth.Transient, Description: "timed out waiting for the token exchange"})
}
