package coord

import (
	"encoding/hex"
	"strconv"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/flight"
	"github.com/kagenti/token-exchange-filter/filter/internal/oauth"
	"github.com/kagenti/token-exchange-filter/filter/internal/seal"
)

const (
	// TickMs drives the deadline sweep, the service-account refresh and the waker heartbeat.
	// Each worker ticks on its own; an idle tick only compares a few integers.
	TickMs = 50
	// FlightGraceMs is how long after its own timeout a callout may still answer before its
	// flight is abandoned (Envoy answers every callout by its timeout; this covers lost callbacks).
	FlightGraceMs = 500
	// Bounds of the per-VM tables: past them a request falls back at once instead of growing memory.
	maxHeldPerVM    = 4096
	maxFlightsPerVM = 1024
)

// WakeQueuePrefix + owner names each VM's wake-up queue.
const WakeQueuePrefix = "token-exchange/wake/"

// wakeMessage is what the wake-up queue carries; only its arrival matters (the SDK refuses an
// empty message).
var wakeMessage = []byte{1}

// Worker is one VM of the filter: one per Envoy worker thread, plus the main thread's and the
// short-lived canary. It is not safe for concurrent use; a VM is single-threaded.
type Worker struct {
	host     Host
	cfg      *config.Config
	client   oauth.Client
	endpoint oauth.Endpoint
	// Cache is the shared-data view (exported for tests that play another worker).
	Cache   *cache.Cache
	flights *flight.Registry
	warns   warnLimiter

	exchange exchangeSource
	service  serviceSource
	refresh  refreshSource
	// refreshAheadMs is refreshAheadSeconds in ms (0: refresh is off).
	refreshAheadMs int64

	// held maps a held request's stream id to it, so a root callback can settle it.
	held map[uint32]*Request
	// redactor cuts the client secret out of IdP text before it is logged.
	redactor *oauth.Redactor
	// memo holds exchanged tokens this VM served lately (see memo.go).
	memo memo
	// sealer seals what goes into shared data (package seal).
	sealer *seal.Sealer
	// rulesUseHosts: some rule has a host list, so :authority is read.
	rulesUseHosts bool
	// owner identifies this VM in leases and in the waker list.
	owner string

	// wakeQueue is this VM's own shared queue. Enqueueing to it from a request gets us into the
	// root context, where callouts survive the cancellation of the request that asked for them.
	// It is registered on the first tick or request, never at start-up: in Envoy a queue
	// outlives its VM, and the canary VM (started, configured, dropped) would leave one behind.
	wakeQueue    uint32
	hasWakeQueue bool
	queueRefused bool // registration failed: retried on ticks only, not on every request
	// nextHeartbeatMs is when this VM next renews its waker record; 0 until its first tick,
	// so that a VM that never serves (the canary) never joins the list.
	nextHeartbeatMs int64
	// inRoot is true while a root callback runs (tick, queue, callout answer).
	inRoot bool

	scratch []uint32
}

// NewWorker starts a worker over host with a parsed configuration. It neither registers its
// wake-up queue nor joins the waker list: both wait until the VM serves (its first tick or
// request), as the canary VM (which runs start-up and dies) must leave nothing behind.
func NewWorker(host Host, cfg *config.Config, store cache.Store) *Worker {
	w := &Worker{
		host:     host,
		cfg:      cfg,
		client:   oauth.Client{ID: cfg.ClientID, Secret: cfg.ClientSecret, Basic: cfg.ClientAuth == config.ClientAuthBasic},
		endpoint: oauth.Endpoint{Scheme: cfg.TokenEndpoint.Scheme, Authority: cfg.TokenEndpoint.Authority, Path: cfg.TokenEndpoint.Path},
		Cache:    cache.New(store, cfg.Namespace(), cfg.CacheSlots),
		flights:  flight.New(maxHeldPerVM, maxFlightsPerVM),
		warns:    newWarnLimiter(),
		held:     map[uint32]*Request{},
	}
	// Markers read from shared data count only as far ahead as this configuration writes them.
	failureCap := longestBackoffMs(cfg)
	if failureCap == 0 {
		failureCap = 1 // back-off off: any failure marker is someone else's
	}
	w.Cache.SetMarkerCaps(cache.MarkerCaps{
		LeaseMs:          int64(cfg.TimeoutMs) + FlightGraceMs + TickMs,
		FailureMs:        failureCap,
		ServiceFailureMs: saRetryMaxMs + TickMs,
	})
	w.redactor = oauth.NewRedactor(w.client)
	w.rulesUseHosts = cfg.RulesUseHosts()
	w.sealer = seal.New(cfg.ClientSecret, cfg.Namespace(), host.Random)
	w.exchange.w = w
	w.service.w = w
	w.refresh.w = w
	w.refreshAheadMs = cfg.RefreshAheadSeconds * 1000
	w.service.init(cfg)

	// Queue names are per (vm_id, name) and the last registrant gets the wake-ups, so every VM
	// needs a name of its own. The same random id names it as the holder of leases. The queue
	// itself is registered only when the VM first serves (wakeQueueReady).
	var id [8]byte
	r := host.Random()
	for i := range id {
		id[i] = byte(r >> (8 * i))
	}
	w.owner = hex.EncodeToString(id[:])
	mode := "off (service-account token only)"
	if cfg.TokenExchange.Enabled {
		mode = "on, audience " + strconv.Quote(cfg.TokenExchange.Audience)
		if cfg.TokenExchange.Audience == "" {
			mode = "on, no audience requested (Keycloak issues every audience mapped to the client)"
		}
		if !cfg.FallbackToServiceAccount {
			mode += ", strict"
		}
	}
	w.logInfo("started: token endpoint " + cfg.TokenEndpoint.URL + " via cluster " + strconv.Quote(cfg.Cluster) + ", exchange " + mode)
	return w
}

// Held is the number of requests this VM holds; Flights the number of fetches it runs or waits on.
func (w *Worker) Held() int    { return w.flights.Held() }
func (w *Worker) Flights() int { return w.flights.Flights() }

// OnTick sweeps deadlines, refreshes the service-account token, renews the waker record,
// polls other workers' fetches and sends flights whose wake-up was lost.
func (w *Worker) OnTick() {
	defer w.enterRoot()()
	now := w.host.NowMs()
	w.heartbeat(now)
	var abandoned []*flight.Flight
	w.scratch, abandoned = w.flights.Expired(now, w.scratch[:0], nil)
	for _, f := range abandoned {
		w.sourceOf(f).abandoned(f, now)
	}
	for _, id := range w.scratch {
		if req := w.held[id]; req != nil {
			req.deadlineExpired = true
			w.sourceFor(req.more.waitingFor).expired(req) // (held: more is set)
		}
	}
	w.service.refresh(now)
	w.pollRemote(now)
	// Backstop for a lost wake-up: a flight still waiting for dispatch is sent from here.
	if w.flights.Flights() > 0 {
		var pending [16]*flight.Flight
		for _, f := range w.flights.Undispatched(pending[:0]) {
			w.dispatch(f)
		}
	}
}

// OnQueueReady handles a wake-up. Envoy delivers a queue's wake-ups by context id, so the id
// may be another VM's queue (a dead registrant's, whose id this context now has): it is drained
// too, so nothing piles up in Envoy's heap.
func (w *Worker) OnQueueReady(queue uint32) {
	defer w.enterRoot()()
	w.drain(queue)
	if queue != w.wakeQueue {
		return
	}
	// The messages only say "look"; what to dispatch is in the flight table.
	var pending [16]*flight.Flight
	for _, f := range w.flights.Undispatched(pending[:0]) {
		w.dispatch(f)
	}
	// Or another worker finished a fetch this one waits for.
	w.pollRemote(w.host.NowMs())
}

// drain empties a queue; bounded, as a hostile neighbour could keep filling it.
func (w *Worker) drain(queue uint32) {
	for i := 0; i < 4096; i++ {
		if _, err := w.host.Dequeue(queue); err != nil {
			return
		}
	}
}

// enterRoot marks a root callback; the returned func restores the previous state (the SDK's
// emulator runs queue callbacks re-entrantly, inside the request callback that enqueued).
func (w *Worker) enterRoot() func() {
	prev := w.inRoot
	w.inRoot = true
	return func() { w.inRoot = prev }
}

// heartbeat renews this VM's waker record (joining on the first tick) and drains the queues of
// VMs whose records went stale: they died, and Envoy keeps their queues while any VM lives.
func (w *Worker) heartbeat(now int64) {
	// Due on the first tick, once the period has passed, or at once when the clock stepped
	// back by more than a period (the record would otherwise look stale to the others).
	due := w.nextHeartbeatMs == 0 || now >= w.nextHeartbeatMs || now < w.nextHeartbeatMs-2*cache.WakerHeartbeatMs
	if !due || !w.wakeQueueReady(true) {
		return
	}
	w.nextHeartbeatMs = now + cache.WakerHeartbeatMs
	var buf [8]string
	dead, err := w.Cache.Heartbeat(w.owner, now, buf[:0])
	if err != nil {
		w.warns.warn(w, "wakers", now, "joining the waker list failed ("+err.Error()+"): waits on other workers end on tick")
	}
	w.drainOwners(dead)
}

// drainOwners empties the queues of VMs that left the waker list: Envoy keeps a dead VM's
// queue while any VM of the vm_id lives.
func (w *Worker) drainOwners(owners []string) {
	for _, owner := range owners {
		if q, err := w.host.ResolveQueue(WakeQueuePrefix + owner); err == nil {
			w.drain(q)
		}
	}
}

// wakeQueueReady registers this VM's wake-up queue if it has none yet. A refused registration
// is retried only when retry is set (ticks), so that requests do not each try again.
func (w *Worker) wakeQueueReady(retry bool) bool {
	if w.hasWakeQueue || (w.queueRefused && !retry) {
		return w.hasWakeQueue
	}
	q, err := w.host.RegisterQueue(WakeQueuePrefix + w.owner)
	if err != nil {
		if !w.queueRefused {
			w.logError("registering the wake-up queue failed (" + err.Error() + "): callouts are tied to the requests that start them")
		}
		w.queueRefused = true
		return false
	}
	w.wakeQueue, w.hasWakeQueue, w.queueRefused = q, true, false
	return true
}

// OnDone is the plugin's teardown (a configuration update or Envoy draining it): this VM
// leaves the waker list at once, so the others stop enqueueing to a queue nobody will read,
// and its own queue is emptied.
func (w *Worker) OnDone() {
	defer w.enterRoot()()
	if !w.hasWakeQueue {
		return
	}
	var buf [8]string
	now := w.host.NowMs()
	dead, _ := w.Cache.LeaveWakers(w.owner, now, buf[:0])
	w.drainOwners(dead)
	w.drain(w.wakeQueue)
}

// wakeOthers tells the other live VMs of this plugin that a token or failure landed in shared
// data, so that requests waiting on this worker's fetch resume now instead of at their next
// tick. Called once per finished fetch.
func (w *Worker) wakeOthers() {
	var buf [8]string
	for _, owner := range w.Cache.Wakers(buf[:0], w.host.NowMs()) {
		if owner == w.owner {
			continue
		}
		if q, err := w.host.ResolveQueue(WakeQueuePrefix + owner); err == nil {
			_ = w.host.Enqueue(q, wakeMessage)
		}
	}
}

// launch gets a new flight's callout sent from the root context.
func (w *Worker) launch(f *flight.Flight) {
	if w.inRoot {
		w.dispatch(f)
		return
	}
	if w.wakeQueueReady(false) {
		if err := w.host.Enqueue(w.wakeQueue, wakeMessage); err == nil {
			return
		}
	}
	// Degraded path: the callout is tied to the current request; if its client goes away the
	// answer is lost and the flight's deadline releases the other waiters.
	w.dispatch(f)
}

// dispatch claims f's lease and sends its callout, or lets f wait on the worker that holds the
// lease. A dispatch error (unknown cluster, no healthy host) fails the flight at once, like a
// transient failure.
func (w *Worker) dispatch(f *flight.Flight) {
	now := w.host.NowMs()
	src := w.sourceOf(f)
	if !src.claim(f, now) {
		return
	}
	// The callout ends by the flight's deadline minus the grace, which is the first waiter's deadline.
	timeout := f.DeadlineMs - FlightGraceMs - now
	if timeout < 1 {
		timeout = 1
	}
	err := w.host.Dispatch(w.cfg.Cluster, oauth.RequestHeaders(w.endpoint, w.client), src.form(f), uint32(min(timeout, 1<<31)),
		func(a Answer) { w.onAnswer(f, a) })
	if err != nil {
		w.warns.warn(w, "dispatch", now, "calling the token endpoint through cluster "+strconv.Quote(w.cfg.Cluster)+
			" failed: "+err.Error()+" (is the cluster defined in Envoy, with a healthy host?)")
		w.finishFlight(f, oauth.Token{}, &oauth.Failure{Class: oauth.Transient}, now)
		return
	}
	f.Dispatched = true
}

func (w *Worker) onAnswer(f *flight.Flight, a Answer) {
	defer w.enterRoot()()
	now := w.host.NowMs()
	// A JWT's exp is wall time; the secret and the user token are cut out of whatever comes back.
	tok, fail := oauth.ParseResponseRedacting(a.Status, a.NumHeaders, a.Body, w.host.WallMs(), w.redactor, f.Subject)
	w.finishFlight(f, tok, fail, now)
}

// finishFlight stores a result and settles every request held on the flight.
func (w *Worker) finishFlight(f *flight.Flight, tok oauth.Token, fail *oauth.Failure, now int64) {
	src := w.sourceOf(f)
	src.count(fail)
	if cur, ok := w.flights.Get(f.Key); !ok || cur != f {
		// A late answer to an abandoned flight: its requests were settled already. A token still
		// fills the cache; a failure must not overwrite what newer flights found out.
		if fail == nil {
			src.result(f.Key, tok, nil, nil, now)
		}
		return
	}
	src.result(f.Key, tok, fail, w.finish(f), now)
}

// settleEach ends f and settles each of its requests whose stream still exists.
func (w *Worker) settleEach(f *flight.Flight, settle func(req *Request)) {
	w.settleIDs(w.finish(f), settle)
}

// settleIDs settles each request of ids whose stream still exists.
func (w *Worker) settleIDs(ids []uint32, settle func(req *Request)) {
	for _, id := range ids {
		if req := w.held[id]; req != nil {
			settle(req)
		}
	}
}

// finish ends f and returns its held requests. They are copied out of scratch: settling one can
// start a new flight, which reuses scratch.
func (w *Worker) finish(f *flight.Flight) []uint32 {
	waiters := w.flights.Finish(f, w.scratch[:0])
	var buf [32]uint32
	return append(buf[:0], waiters...)
}

// pollRemote looks whether the workers this VM waits on have finished; a lease that ended
// without a result (its holder died, or released it) is taken over.
func (w *Worker) pollRemote(now int64) {
	var remote [16]*flight.Flight
	for _, f := range w.flights.RemoteFlights(remote[:0]) {
		w.sourceOf(f).poll(f, now)
	}
}

// takeOver makes a flight that waited on another worker fetch by itself. It gets a full timeout:
// its requests are still settled by their own deadlines, and a callout cut short would only
// fail and back the key off.
func (w *Worker) takeOver(f *flight.Flight, now int64) {
	f.Remote, f.Dispatched = false, false
	f.DeadlineMs = max(f.DeadlineMs, now+int64(w.cfg.TimeoutMs)+FlightGraceMs)
	w.dispatch(f)
}

// lifetimeMs is how long a fresh token may be used from now: its lifetime minus the skew. A
// token without a known expiry, or with no time left, serves the requests that waited for it
// and is not kept.
func (w *Worker) lifetimeMs(tok oauth.Token) (int64, bool) {
	if !tok.HasExpiry {
		return 0, false
	}
	life := tok.ExpiresIn - w.cfg.ExpirySkewSeconds
	if life <= 0 {
		return 0, false
	}
	return life * 1000, true
}

func (w *Worker) failureOutcome() string {
	if w.cfg.FallbackToServiceAccount {
		return "fall back to the service-account token"
	}
	return "answered locally (strict mode)"
}

// failureOutcomeShort says, for logs, what happens to a request without a usable user token.
func (w *Worker) failureOutcomeShort() string {
	if w.cfg.FallbackToServiceAccount {
		return "using the service-account token"
	}
	return "answering 401 (strict mode)"
}

func (w *Worker) count(m Metric) { w.host.Count(m, 1) }

func (w *Worker) logDebug(msg string) { w.host.Log(Debug, LogPrefix+msg) }
func (w *Worker) logInfo(msg string)  { w.host.Log(Info, LogPrefix+msg) }
func (w *Worker) logWarn(msg string)  { w.host.Log(Warn, LogPrefix+msg) }
func (w *Worker) logError(msg string) { w.host.Log(Error, LogPrefix+msg) }

// StoreExchanged puts token into shared data for key, sealed, as another worker of this
// configuration would (tests play that worker with it).
func (w *Worker) StoreExchanged(key cache.Key, token string, untilMs, nowMs int64) error {
	return w.Cache.Put(key, w.sealer.Seal(token, key[:], untilMs), untilMs, nowMs)
}

// StoreServiceToken puts t into shared data, sealed, as another worker of this configuration
// would.
func (w *Worker) StoreServiceToken(t cache.ServiceToken) error {
	t.Token = w.sealer.Seal(t.Token, serviceBinding, t.ExpiresAtMs)
	return w.Cache.PutServiceToken(t)
}
