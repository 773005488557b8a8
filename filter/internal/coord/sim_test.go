package coord

// A deterministic simulation of one Envoy: N worker VMs, the main-thread VM and a canary that
// starts and dies, all running real Workers over one shared-data store with Envoy's CAS rules
// (cachetest's Envoy mode: cas ignored on a new key), shared queues with Envoy's semantics
// (proxy-wasm-cpp-host src/shared_queue.cc: wake-ups are posted asynchronously to the last
// registrant; a queue outlives its VM and keeps accepting items; dequeue works on any token),
// callouts answered late, early, never, or failing in every way, also inline (no healthy host),
// clients cancelling, upstream 401s, a worker replaced mid-run, and a virtual clock that also
// steps backwards. Every choice comes from one seeded random source, so a failing seed replays
// exactly: SIM_SEED=<n> go test -run TestSimulation ./filter/internal/coord -v
//
// Invariants, checked after every step: no stream ever carries another user's token; every
// held request is settled by its deadline plus one tick; at most one exchange callout per key
// is pending in the whole Envoy unless its lease could have expired (a callout was lost), also
// when the wall clock steps by minutes (coordination runs on the monotonic clock); shared data stays within cache.SharedBytesBound; items pending in dead
// VMs' queues stay bounded, and are drained to zero once traffic stops; held-request and flight
// tables are empty once traffic stops.

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kagenti/token-exchange-filter/filter/config"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
	"github.com/kagenti/token-exchange-filter/filter/internal/cache/cachetest"
)

const (
	simTimeoutMs = 1000
	simUsers     = 8
	simSlots     = 4 // few slots: users evict each other, markers included
	// maxDeadQueueItems bounds the items waiting in dead VMs' queues: a dead VM is woken only
	// while its waker record is fresh (cache.WakerStaleMs), at most once per finished fetch.
	maxDeadQueueItems = 256
)

type simQueue struct {
	name       string
	items      int
	registrant *simVM
}

type simCallout struct {
	vm        *simVM
	subject   string // "" for client credentials
	dueWallMs int64  // Envoy answers 504 by its timeout
	onAnswer  func(Answer)
}

type simStream struct {
	id        uint32
	vm        *simVM
	req       *Request
	user      int // -1: no token
	deadline  int64
	header    string
	replied   uint32
	settled   bool
	done      bool
	continued bool // on its own callback (Continue) or resumed
}

type simVM struct {
	name    string
	w       *Worker
	alive   bool
	ticks   bool // a serving VM; the canary and main thread never get requests
	wakes   []uint32
	streams map[uint32]*simStream
	current *simStream
	held    int64
}

type simEnvoy struct {
	t        *testing.T
	seed     uint64
	rng      *rand.Rand
	wall     int64
	store    *cachetest.Store
	wallStep int64 // how far the wall clock is off the monotonic one (it steps)
	bound    int   // cache.SharedBytesBound of cfg, computed once
	cfg      *config.Config
	queues   map[uint32]*simQueue
	byName   map[string]uint32
	vms      []*simVM
	callouts []*simCallout
	nextID   uint32
	steps    int
	lost     int // callouts whose answer was lost
	// outage: the IdP fails every answer while set.
	outage bool
	stats  *simStats
	// lastFail is when the last failed answer for a subject arrived (0: none since a success),
	// for the back-off invariant.
	lastFail map[string]int64
}

// simStats counts what the schedules did, so a run shows it exercised the paths it checks.
type simStats struct{ requests, callouts, answered, exchanged, service, replies, lost int }

// userToken is user u's token: JWT-shaped, as the filter accepts by default (memoised: the
// invariants ask for it on every step).
func userToken(u int) string {
	if u >= 0 && u < len(userTokens) {
		return userTokens[u]
	}
	return makeUserToken(u)
}

var userTokens = func() (t [256]string) {
	for u := range t {
		t[u] = makeUserToken(u)
	}
	return t
}()

func makeUserToken(u int) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u`+strconv.Itoa(u)+`"}`)) + ".sig"
}

const exchangedPrefix = "xtok-"

func exchangedFor(sub string) string { return exchangedPrefix + sub }

func (e *simEnvoy) failf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf("seed %d, step %d (SIM_SEED=%d replays it): %s", e.seed, e.steps, e.seed, fmt.Sprintf(format, args...))
}

// simHost is one VM's view of the simulated Envoy.
type simHost struct {
	e  *simEnvoy
	vm *simVM
}

func (h simHost) NowMs() int64   { return h.e.wall }
func (h simHost) WallMs() int64  { return h.e.wall + h.e.wallStep }
func (h simHost) Random() uint64 { return h.e.rng.Uint64() }

func (h simHost) RegisterQueue(name string) (uint32, error) {
	e := h.e
	id, ok := e.byName[name]
	if !ok {
		id = uint32(len(e.queues) + 1)
		e.byName[name] = id
		e.queues[id] = &simQueue{name: name}
	}
	e.queues[id].registrant = h.vm // the last registrant gets the wake-ups
	return id, nil
}

func (h simHost) ResolveQueue(name string) (uint32, error) {
	if id, ok := h.e.byName[name]; ok {
		return id, nil
	}
	return 0, errors.New("not found")
}

func (h simHost) Enqueue(id uint32, _ []byte) error {
	q := h.e.queues[id]
	if q == nil {
		return errors.New("not found")
	}
	q.items++ // appended whether or not its VM lives
	if q.registrant.alive {
		q.registrant.wakes = append(q.registrant.wakes, id)
	}
	return nil
}

func (h simHost) Dequeue(id uint32) ([]byte, error) {
	q := h.e.queues[id]
	if q == nil || q.items == 0 {
		return nil, errors.New("empty")
	}
	q.items--
	return []byte{1}, nil
}

func (h simHost) Dispatch(_ string, _ [][2]string, body []byte, timeoutMs uint32, onAnswer func(Answer)) error {
	e := h.e
	if e.rng.IntN(40) == 0 {
		return errors.New("no healthy upstream") // inline failure: no callback ever
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		e.failf("callout body is not a form: %v", err)
	}
	e.stats.callouts++
	c := &simCallout{vm: h.vm, subject: form.Get("subject_token"), dueWallMs: e.wall + int64(timeoutMs), onAnswer: onAnswer}
	if at := e.lastFail[c.subject]; c.subject != "" && at != 0 && e.wall < at+int64(e.cfg.FailureBackoffMs) &&
		e.lost == 0 && e.cfg.CacheSlots > simSlots {
		e.failf("an exchange callout %d ms after the key's failed exchange, inside its back-off of %d ms", e.wall-at, e.cfg.FailureBackoffMs)
	}
	if c.subject != "" {
		for _, o := range e.callouts {
			if o.subject == c.subject && e.lost == 0 {
				e.failf("a second exchange callout for one key while the first is pending (lease not expired)")
			}
		}
	}
	e.callouts = append(e.callouts, c)
	return nil
}

func (h simHost) Focus(id uint32) error {
	s := h.vm.streams[id]
	if s == nil || s.done {
		h.vm.current = nil
		return errors.New("no such stream")
	}
	h.vm.current = s
	return nil
}

func (h simHost) SetRequestHeader(name, value string) error {
	s := h.vm.current
	if s == nil {
		h.e.failf("a header write with no current stream")
	}
	if name == h.e.cfg.OutputHeader {
		s.header = value
	}
	return nil
}

func (h simHost) ResumeRequest() error {
	s := h.vm.current
	if s == nil || s.continued {
		h.e.failf("resume of a stream that is not paused")
	}
	s.continued, s.settled = true, true
	return nil
}

func (h simHost) SendReply(status uint32, _ [][2]string, _ []byte) error {
	s := h.vm.current
	if s == nil || s.settled {
		h.e.failf("a reply to a stream that is already settled")
	}
	s.replied, s.settled = status, true
	return nil
}

func (h simHost) Log(_ Level, msg string) {
	if strings.Contains(msg, "utok") || strings.Contains(msg, "xtok") || strings.Contains(msg, "satok") || strings.Contains(msg, "sim-secret") {
		h.e.failf("a token or secret in a log line: %q", msg)
	}
}

func (h simHost) Count(m Metric, delta int64) {
	if m == RequestsHeld {
		h.vm.held += delta
	}
}

type mapHeaders map[string]string

func (m mapHeaders) Get(name string) (string, bool) { v, ok := m[name]; return v, ok }
func (m mapHeaders) Remove(name string)             { delete(m, name) }
func (m mapHeaders) RemoveTakesAll() bool           { return true }
func (m mapHeaders) Size() (int, bool) {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n, true
}
func (m mapHeaders) Count(name string) int {
	if _, ok := m[name]; ok {
		return 1
	}
	return 0
}

func (e *simEnvoy) startVM(name string, serving bool) *simVM {
	vm := &simVM{name: name, alive: true, ticks: serving, streams: map[uint32]*simStream{}}
	vm.w = NewWorker(simHost{e, vm}, e.cfg, e.store)
	e.vms = append(e.vms, vm)
	return vm
}

// kill ends a VM: its streams are reset, its callouts cancelled; its queue stays (Envoy's).
func (e *simEnvoy) kill(vm *simVM) {
	vm.alive = false
	for _, s := range vm.streams {
		s.done = true
	}
	kept := e.callouts[:0]
	for _, c := range e.callouts {
		if c.vm != vm {
			kept = append(kept, c)
		}
	}
	e.callouts = kept
	vm.wakes = nil
}

func (e *simEnvoy) serving() []*simVM {
	var out []*simVM
	for _, vm := range e.vms {
		if vm.alive && vm.ticks {
			out = append(out, vm)
		}
	}
	return out
}

func (e *simEnvoy) newRequest() {
	workers := e.serving()
	vm := workers[e.rng.IntN(len(workers))]
	e.nextID++
	s := &simStream{id: e.nextID, vm: vm, user: e.rng.IntN(simUsers+1) - 1, deadline: e.wall + simTimeoutMs}
	e.stats.requests++
	s.req = vm.w.NewRequest(s.id)
	vm.streams[s.id] = s
	hdr := mapHeaders{":authority": "api", ":path": "/"}
	name := e.cfg.TokenExchange.UserTokenHeader
	if s.user >= 0 {
		hdr[name] = userToken(s.user)
		if name == "authorization" {
			hdr[name] = "Bearer " + userToken(s.user)
		}
	}
	vm.current = s
	act := s.req.OnRequestHeaders(hdr)
	vm.current = nil
	if _, leaked := hdr[name]; leaked && s.user >= 0 {
		e.failf("the user token header went upstream")
	}
	if act == Continue {
		s.continued, s.settled = true, true
	}
}

func (e *simEnvoy) answer(i int) {
	c := e.callouts[i]
	e.callouts = append(e.callouts[:i], e.callouts[i+1:]...)
	var a Answer
	switch k := e.rng.IntN(20); {
	case e.wall >= c.dueWallMs:
		a = Answer{NumHeaders: 2, Status: 504, Body: []byte("upstream request timeout")}
	case e.outage || k == 0:
		a = Answer{NumHeaders: 2, Status: 503, Body: []byte("upstream connect error")}
	case k == 1:
		a = Answer{} // reset after headers
	case k == 2:
		a = Answer{NumHeaders: 3, Status: 400, Body: []byte(`{"error":"invalid_grant","error_description":"Invalid token"}`)}
	case k == 3:
		a = Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":`)}
	case c.subject == "":
		a = Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"satok` + strconv.Itoa(e.rng.IntN(1000)) + `","expires_in":` + strconv.Itoa(20+e.rng.IntN(300)) + `}`)}
	default:
		a = Answer{NumHeaders: 3, Status: 200, Body: []byte(`{"access_token":"` + exchangedFor(c.subject) + `","expires_in":` + strconv.Itoa(5+e.rng.IntN(120)) + `}`)}
	}
	e.stats.answered++
	if c.subject != "" {
		if a.Status == 200 && len(a.Body) > 20 {
			e.lastFail[c.subject] = 0
		} else {
			e.lastFail[c.subject] = e.wall
		}
	}
	c.onAnswer(a)
	c.vm.current = nil
}

// advance moves the wall clock in steps of at most one tick, ticking every live VM after each
// and answering 504 for callouts that reach their timeout, as Envoy does.
func (e *simEnvoy) advance(ms int64) {
	for ms > 0 {
		d := min(ms, TickMs)
		ms -= d
		e.wall += d
		for i := 0; i < len(e.callouts); {
			if e.wall >= e.callouts[i].dueWallMs {
				e.answer(i)
				continue
			}
			i++
		}
		for _, vm := range e.vms {
			if vm.alive && vm.ticks {
				vm.w.OnTick()
				vm.current = nil
			}
		}
	}
}

func (e *simEnvoy) deliverWake(vm *simVM) {
	id := vm.wakes[0]
	vm.wakes = vm.wakes[1:]
	vm.w.OnQueueReady(id)
	vm.current = nil
}

func (e *simEnvoy) step(traffic bool) {
	e.steps++
	switch k := e.rng.IntN(100); {
	case traffic && k < 30:
		e.newRequest()
	case k < 50:
		var ready []*simVM
		for _, vm := range e.vms {
			if vm.alive && len(vm.wakes) > 0 {
				ready = append(ready, vm)
			}
		}
		if len(ready) > 0 {
			e.deliverWake(ready[e.rng.IntN(len(ready))])
		}
	case k < 65:
		if len(e.callouts) > 0 {
			i := e.rng.IntN(len(e.callouts))
			if e.rng.IntN(200) == 0 { // Envoy never answers: a lost callback
				e.callouts = append(e.callouts[:i], e.callouts[i+1:]...)
				e.lost++
				return
			}
			e.answer(i)
		}
	case k < 85:
		e.advance(int64(1 + e.rng.IntN(120)))
	case traffic && k < 92: // a client goes away
		e.forRandomStream(func(s *simStream) bool { return !s.done }, func(s *simStream) {
			s.done = true
			s.req.OnDone()
		})
	case traffic && k < 97: // the upstream refuses the token it got
		e.forRandomStream(func(s *simStream) bool { return s.continued && !s.done && s.header != "" }, func(s *simStream) {
			s.req.OnResponseHeaders(func() (string, bool) { return "401", true })
		})
	case traffic && k == 97 && e.rng.IntN(4) == 0:
		// The wall clock steps (NTP), by up to 5 minutes either way. Only JWT exp reads it:
		// leases, deadlines and back-offs run on the monotonic clock, so the invariants hold
		// without any exemption.
		e.wallStep += int64(e.rng.IntN(600_001)) - 300_000
	case traffic && k == 98:
		e.outage = !e.outage
	}
}

func (e *simEnvoy) forRandomStream(ok func(*simStream) bool, do func(*simStream)) {
	var pick []*simStream
	for _, vm := range e.vms {
		if !vm.alive {
			continue
		}
		for _, s := range vm.streams {
			if ok(s) {
				pick = append(pick, s)
			}
		}
	}
	if len(pick) == 0 {
		return
	}
	// Map order is random: sort by id so the seed alone decides.
	slices.SortFunc(pick, func(a, b *simStream) int { return cmp.Compare(a.id, b.id) })
	do(pick[e.rng.IntN(len(pick))])
}

func (e *simEnvoy) check() {
	for _, vm := range e.vms {
		for _, s := range vm.streams {
			if s.header != "" {
				const prefix = "Bearer " + exchangedPrefix
				mine := s.user >= 0 && strings.HasPrefix(s.header, prefix) && s.header[len(prefix):] == userToken(s.user)
				if !mine {
					if !strings.HasPrefix(s.header, "Bearer satok") {
						e.failf("stream %d of user %d carries %q", s.id, s.user, s.header)
					}
				}
			}
			if vm.alive && !s.settled && !s.done && e.wall > s.deadline+TickMs {
				e.failf("stream %d held past its deadline (+%d ms)", s.id, e.wall-s.deadline)
			}
		}
		if vm.held != int64(vm.w.Held()) {
			e.failf("%s: held gauge %d, table %d", vm.name, vm.held, vm.w.Held())
		}
	}
	if e.bound == 0 {
		e.bound = cache.SharedBytesBound(e.cfg.CacheSlots, len(e.cfg.Namespace()))
	}
	if got, bound := e.store.Bytes(), e.bound; got > bound {
		e.failf("shared data %d bytes, bound %d", got, bound)
	}
	if n := e.deadQueueItems(); n > maxDeadQueueItems {
		e.failf("%d items pending in dead VMs' queues", n)
	}
}

func (e *simEnvoy) deadQueueItems() int {
	n := 0
	for _, q := range e.queues {
		if !q.registrant.alive {
			n += q.items
		}
	}
	return n
}

// simConfig: few slots make users evict each other (markers included); many slots keep every
// key's back-off marker, so the back-off invariant can be checked exactly.
// refresh varies the refresh ahead of expiry: 0 off, 1 the default (60 s), 2 the default with
// minLifetimeSeconds 20 (requests held for fresh tokens).
func simConfig(t *testing.T, fallback, manySlots bool, refresh uint64) *config.Config {
	slots := simSlots
	if manySlots {
		slots = 1024
	}
	extra := ""
	switch refresh {
	case 0:
		extra = `,"refreshAheadSeconds":0`
	case 2:
		extra = `,"minLifetimeSeconds":20`
	}
	js := `{"tokenEndpoint":"http://idp:8080/realms/r/protocol/openid-connect/token","clientId":"gw",` +
		`"clientSecret":"sim-secret","timeoutMs":` + strconv.Itoa(simTimeoutMs) + `,"cacheSlots":` + strconv.Itoa(slots) +
		`,"fallbackToServiceAccount":` + strconv.FormatBool(fallback) + extra + `,"tokenExchange":{"enabled":true}}`
	cfg, err := config.Parse([]byte(js), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runSim plays one schedule and returns the steps it took.
func runSim(t *testing.T, seed uint64, steps int, st *simStats) int {
	e := &simEnvoy{stats: st,
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		wall: 1_800_000_000_000, store: cachetest.NewEnvoyStore(),
		cfg: simConfig(t, seed%4 != 0, seed%2 == 1, seed/4%3), lastFail: map[string]int64{}, queues: map[uint32]*simQueue{}, byName: map[string]uint32{},
	}
	e.startVM("main", false)
	canary := e.startVM("canary", false)
	e.kill(canary) // the canary runs start-up and dies at once
	workers := 2 + int(seed%3)
	for i := 0; i < workers; i++ {
		e.startVM("worker"+strconv.Itoa(i), true)
	}
	for i := 0; i < steps; i++ {
		if i == steps/2 && seed%5 == 0 {
			// A worker is replaced mid-run (FAIL_RELOAD after a trap): its leases and queue stay.
			old := e.serving()[0]
			e.kill(old)
			e.startVM(old.name+"-reloaded", true)
		}
		e.step(true)
		e.check()
	}
	// Traffic stops: everything settles, tables empty, dead VMs' queues drained.
	e.outage = false
	// Idle until every dead VM's waker record is stale 40 s at most.
	for i := 0; i < 800 && (len(e.callouts) > 0 || e.pendingWakes() > 0 || i*TickMs < 8000 || e.deadQueueItems() > 0); i++ {
		e.steps++
		for len(e.callouts) > 0 {
			e.answer(0)
		}
		for _, vm := range e.vms {
			for vm.alive && len(vm.wakes) > 0 {
				e.deliverWake(vm)
			}
		}
		e.advance(TickMs)
		e.check()
	}
	for _, vm := range e.serving() {
		if vm.w.Held() != 0 || vm.w.Flights() != 0 {
			e.failf("%s: %d held requests and %d flights after traffic stopped", vm.name, vm.w.Held(), vm.w.Flights())
		}
		for _, s := range vm.streams {
			if !s.settled && !s.done {
				e.failf("stream %d never settled", s.id)
			}
		}
	}
	for _, vm := range e.vms {
		for _, s := range vm.streams {
			switch {
			case s.replied != 0:
				st.replies++
			case strings.HasPrefix(s.header, "Bearer xtok"):
				st.exchanged++
			case s.header != "":
				st.service++
			}
		}
	}
	st.lost += e.lost
	if n := e.deadQueueItems(); n != 0 {
		e.failf("%d items left in dead VMs' queues after traffic stopped", n)
	}
	return e.steps
}

func (e *simEnvoy) pendingWakes() int {
	n := 0
	for _, vm := range e.vms {
		if vm.alive {
			n += len(vm.wakes)
		}
	}
	return n
}

// TestSimulation runs SIM_SEEDS schedules (default 2000) of 300 steps each; SIM_SEED replays one.
func TestSimulation(t *testing.T) {
	seeds, first := uint64(2000), uint64(1)
	if v := os.Getenv("SIM_SEEDS"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SIM_SEEDS=%q", v)
		}
		seeds = n
	}
	if v := os.Getenv("SIM_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SIM_SEED=%q", v)
		}
		seeds, first = 1, n
	}
	if testing.Short() {
		seeds = min(seeds, 200)
	}
	total, st := 0, &simStats{}
	for s := first; s < first+seeds; s++ {
		total += runSim(t, s, 300, st)
	}
	t.Logf("simulation: %d schedules, %d steps explored; %d requests: %d with an exchanged token, %d with the service-account token, %d answered locally; %d callouts (%d answered, %d lost)",
		seeds, total, st.requests, st.exchanged, st.service, st.replies, st.callouts, st.answered, st.lost)
	if seeds >= 100 && (st.exchanged == 0 || st.service == 0 || st.replies == 0 || st.answered == 0) {
		t.Fatalf("the schedules missed a path: %+v", *st)
	}
}
