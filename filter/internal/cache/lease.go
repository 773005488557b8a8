package cache

import (
	"strconv"
	"strings"
)

// Besides tokens, a slot entry can hold a marker, so that the workers of one Envoy coordinate
// through the same bounded slots (no key per user, ever):
//
//   - a lease "!L<owner>:<failures>": worker <owner> is exchanging this key until the entry's
//     expiry; the others wait for its result instead of calling the IdP themselves. A lease
//     whose holder died or timed out simply expires and is taken over.
//   - a failure "!F<status>:<failures>": the last exchange for this key failed; until the
//     entry's expiry, requests for it settle at once (fallback, or <status> in strict mode)
//     instead of calling the IdP again — the back-off. <failures> counts consecutive failures,
//     carried through the next lease, so the back-off can grow.
//
// '!' is outside the token alphabet (the oauth package accepts only token68/JWT characters), so
// a marker can never be mistaken for a token. Put replaces a marker; a marker never replaces a
// valid token.
const (
	markerPrefix  = '!'
	leasePrefix   = "!L"
	failurePrefix = "!F"
)

// State is what a slot says about one key.
type State uint8

const (
	Miss   State = iota // nothing usable: no entry, or an expired one
	Hit                 // a valid token
	Leased              // another worker is exchanging it (or we are)
	Failed              // the last exchange failed; back off until UntilMs
)

// Lookup is the answer of Look.
type Lookup struct {
	State   State
	Token   string // Hit
	UntilMs int64  // Hit, Leased, Failed: when the entry expires
	// StoredAtMs is when a Hit's token was written (an exchange's or a refresh's result).
	StoredAtMs int64
	Owner      string // Leased
	Status     int    // Failed: the strict-mode status of the failure (401 or 502)
	Failures   int    // Leased, Failed: consecutive failures of this key so far
}

// MaxMarkerMs bounds how far ahead a lease or failure may expire (the longest back-off is
// 600 s). A marker claiming more was not written by this filter and is ignored, so that nothing
// in shared data can block a key for good.
const MaxMarkerMs = 600_000 + 60_000

// maxFailures caps the consecutive-failure count read back from shared data.
const maxFailures = 16

// MaxMarkerBytes bounds a marker's length (owner ids are 16 hex digits).
const MaxMarkerBytes = 64

// serviceLeaseID is the entry id of the service-account fetch lease in its own key.
var serviceLeaseID = [16]byte{'s', 'e', 'r', 'v', 'i', 'c', 'e', '-', 'l', 'e', 'a', 's', 'e'}

// Look reads the entry of k at nowMs. Expired leases and failures are a Miss, but Failures
// still reports their count, so the next failure backs off longer.
func (c *Cache) Look(k Key, nowMs int64) Lookup { return c.lookAt(c.SlotKey(k), k.id(), nowMs) }

// LookServiceLease reads the service-account fetch lease (Leased, Failed or Miss).
func (c *Cache) LookServiceLease(nowMs int64) Lookup {
	return c.lookAt(c.slKey, serviceLeaseID, nowMs)
}

func (c *Cache) lookAt(key string, id [16]byte, nowMs int64) Lookup {
	v, _, err := c.store.Get(key)
	if err != nil {
		return Lookup{}
	}
	var es [EntriesPerSlot]entry
	n, valid := decodeSlot(v, &es)
	if !valid {
		return Lookup{}
	}
	for i := range es[:n] {
		if es[i].id == id {
			return lookupOf(&es[i], nowMs, c.capFor(id))
		}
	}
	return Lookup{}
}

// MarkerCaps bound how far ahead of now a marker read from shared data may expire, by this
// configuration's own maxima: a marker claiming more was not written by it (another plugin in
// the vm_id, an older version), and is ignored, so that one foreign marker cannot block a key or
// the service-account token for longer than this configuration ever would. Zero fields keep
// MaxMarkerMs.
type MarkerCaps struct {
	LeaseMs          int64 // a lease: the longest callout plus its grace
	FailureMs        int64 // an exchange back-off: the longest window
	ServiceFailureMs int64 // a service-account fetch back-off
}

// SetMarkerCaps sets the caps (see MarkerCaps).
func (c *Cache) SetMarkerCaps(m MarkerCaps) { c.caps = m }

// markerCap is the cap for one key: a lease and a failure may be held in the same entry.
type markerCap struct{ leaseMs, failureMs int64 }

func (c *Cache) capFor(id [16]byte) markerCap {
	orMax := func(ms int64) int64 {
		if ms <= 0 || ms > MaxMarkerMs {
			return MaxMarkerMs
		}
		return ms
	}
	failure := c.caps.FailureMs
	if id == serviceLeaseID {
		failure = c.caps.ServiceFailureMs
	}
	return markerCap{leaseMs: orMax(c.caps.LeaseMs), failureMs: orMax(failure)}
}

func lookupOf(e *entry, nowMs int64, caps markerCap) Lookup {
	live := nowMs < e.expiresAtMs
	if e.token[0] != markerPrefix {
		if live {
			return Lookup{State: Hit, Token: string(e.token), UntilMs: e.expiresAtMs, StoredAtMs: e.storedAtMs}
		}
		return Lookup{}
	}
	m := string(e.token)
	head, count, _ := strings.Cut(m, ":")
	failures, _ := strconv.Atoi(count)
	failures = min(max(failures, 0), maxFailures)
	// Not ours if it claims more than this configuration ever writes: never honour a marker
	// that would block the key longer (written so that no value can overflow).
	ahead := func(capMs int64) bool { return e.expiresAtMs > nowMs && e.expiresAtMs-nowMs > capMs }
	l := Lookup{UntilMs: e.expiresAtMs, Failures: failures}
	switch {
	case strings.HasPrefix(head, leasePrefix):
		l.Owner = head[len(leasePrefix):]
		if live && !ahead(caps.leaseMs) {
			l.State = Leased
		}
	case strings.HasPrefix(head, failurePrefix):
		l.Status, _ = strconv.Atoi(head[len(failurePrefix):])
		if live && !ahead(caps.failureMs) {
			l.State = Failed
		}
	}
	return l
}

// TryLease claims the exchange of k for owner until untilMs, unless the slot already holds a
// valid token, a live lease of another owner, or a live failure. It returns whether the lease
// is owner's now, and what the slot held otherwise. Envoy's CAS makes the claim exclusive: of
// two workers racing for one key, one wins and the other sees its lease.
func (c *Cache) TryLease(k Key, owner string, untilMs, nowMs int64) (won bool, cur Lookup, err error) {
	return c.tryLeaseAt(c.SlotKey(k), k.id(), owner, untilMs, nowMs)
}

// TryServiceLease claims the service-account fetch for owner, like TryLease. It lives in a key
// of its own, so that no user token can evict it.
func (c *Cache) TryServiceLease(owner string, untilMs, nowMs int64) (won bool, cur Lookup, err error) {
	return c.tryLeaseAt(c.slKey, serviceLeaseID, owner, untilMs, nowMs)
}

func (c *Cache) tryLeaseAt(key string, id [16]byte, owner string, untilMs, nowMs int64) (bool, Lookup, error) {
	o := op{kind: opLease, id: id, owner: owner, expiresAtMs: untilMs, nowMs: nowMs, caps: c.capFor(id)}
	err := c.apply(key, &o)
	return o.won, o.found, err
}

// PutFailure records that the exchange of k failed: requests for k back off until untilMs.
// strictStatus is the local-reply status strict mode gives them. The consecutive-failure count
// is one more than the lease or failure the slot held for k.
func (c *Cache) PutFailure(k Key, strictStatus int, untilMs, nowMs int64) (failures int, err error) {
	return c.putFailureAt(c.SlotKey(k), k.id(), strictStatus, untilMs, nowMs)
}

// PutServiceFailure records a failed service-account fetch in place of its lease: the workers
// waiting on it answer at once and retry after untilMs.
func (c *Cache) PutServiceFailure(untilMs, nowMs int64) error {
	_, err := c.putFailureAt(c.slKey, serviceLeaseID, 503, untilMs, nowMs)
	return err
}

func (c *Cache) putFailureAt(key string, id [16]byte, status int, untilMs, nowMs int64) (int, error) {
	o := op{kind: opFailure, id: id, status: status, expiresAtMs: untilMs, nowMs: nowMs, caps: c.capFor(id)}
	err := c.apply(key, &o)
	return o.failures, err
}

// ReleaseLease removes owner's lease on k (the exchange ended without anything to store), so
// that waiting workers take over at once instead of waiting for the lease to expire.
func (c *Cache) ReleaseLease(k Key, owner string) error {
	o := op{kind: opDelete, id: k.id(), owner: owner, matchLease: true}
	return c.apply(c.SlotKey(k), &o)
}

// ReleaseServiceLease removes owner's service-account fetch lease.
func (c *Cache) ReleaseServiceLease(owner string) error {
	o := op{kind: opDelete, id: serviceLeaseID, owner: owner, matchLease: true}
	return c.apply(c.slKey, &o)
}

func leaseMarker(owner string, failures int) string {
	return leasePrefix + owner + ":" + strconv.Itoa(failures)
}

func failureMarker(status, failures int) string {
	return failurePrefix + strconv.Itoa(status) + ":" + strconv.Itoa(failures)
}

// modifyLease decides a lease claim against the current slot value.
func (o *op) modifyLease(cur []byte) ([]byte, bool) {
	o.won, o.found = false, Lookup{}
	var es [EntriesPerSlot]entry
	if n, ok := decodeSlot(cur, &es); ok {
		for i := range es[:n] {
			if es[i].id != o.id {
				continue
			}
			l := lookupOf(&es[i], o.nowMs, o.caps)
			o.found = l
			switch {
			case l.State == Leased && l.Owner == o.owner:
				o.won = true
				return nil, false // already ours
			case l.State != Miss:
				return nil, false
			}
			o.token = leaseMarker(o.owner, l.Failures)
		}
	}
	if o.token == "" {
		o.token = leaseMarker(o.owner, 0)
	}
	// A full slot of live tokens keeps them: the claim is still ours, only unshared, as when
	// shared data refuses the write.
	o.won = true
	return o.modifyPut(cur)
}

// modifyFailure writes a failure marker over whatever the slot holds for the key, unless a
// valid token is there (another worker succeeded meanwhile: keep it).
func (o *op) modifyFailure(cur []byte) ([]byte, bool) {
	o.failures = 1
	var es [EntriesPerSlot]entry
	if n, ok := decodeSlot(cur, &es); ok {
		for i := range es[:n] {
			if es[i].id != o.id {
				continue
			}
			l := lookupOf(&es[i], o.nowMs, o.caps)
			if l.State == Hit {
				o.failures = 0
				return nil, false
			}
			o.failures = l.Failures + 1
		}
	}
	o.token = failureMarker(o.status, o.failures)
	return o.modifyPut(cur)
}

// leaseDone reports, after creating the slot, whether v holds our lease (or the claim lost to
// something that must stand).
func (o *op) leaseDone(v []byte) bool {
	var es [EntriesPerSlot]entry
	n, ok := decodeSlot(v, &es)
	if !ok {
		return false
	}
	for i := range es[:n] {
		if es[i].id == o.id {
			l := lookupOf(&es[i], o.nowMs, o.caps)
			if l.State == Leased && l.Owner == o.owner {
				return true
			}
			if l.State != Miss { // someone else's lease, a token or a failure won the race
				o.won, o.found = false, l
				return true
			}
			return false
		}
	}
	return false
}
