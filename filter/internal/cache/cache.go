// Package cache keeps exchanged tokens in Envoy's shared data, which every worker VM of one
// Envoy sees, with bounded memory whatever the number of users.
//
// Shared data never forgets a key and has no size limit, so entries live in a fixed number of
// slots (Config.CacheSlots), each one shared-data key holding at most EntriesPerSlot entries.
// An entry is found by a 32-byte Key (SHA-256 over the user token, audience and scope); raw
// tokens never appear in keys. Writes use compare-and-swap; expired entries are reused first,
// then the entry closest to expiry is evicted.
//
// Everything read back from shared data is untrusted: another plugin version (or a bug) may
// have written it, so a value that does not decode exactly is treated as absent and the next
// write replaces it. A Cache is not safe for concurrent use by goroutines; it needs none, as a
// proxy-wasm VM is single-threaded. Workers share data only through the Store.
//
// API:
//
//	k := KeyFor(userToken, audience, scope)  // once per request
//	c := New(store, "txf2:<config hash>", cfg.CacheSlots)
//	c.Get(k, nowMs) / c.Put(k, token, expiresAtMs, nowMs) / c.Delete(k) / c.DeleteToken(k, token)
//	c.ServiceToken(nowMs) / c.PutServiceToken(t) / c.DropServiceToken(token)
//	SharedBytesBound(slots, len(namespace))  // worst-case shared-data bytes
//
// Times are Unix milliseconds from the host clock; expiries already have the skew subtracted.
package cache

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"
)

// Store is the part of the proxy-wasm shared-data API the cache needs. The plugin implements it
// over proxywasm.GetSharedData/SetSharedData; tests use a fake with Envoy's semantics
// (cachetest.NewEnvoyStore).
//
// An implementation must pass cas through unchanged (the cache relies on a non-zero cas when it
// creates a key, see createCas), must map "no such key" to ErrNotFound and a lost race to
// ErrCasMismatch (errors.Is is used, so wrapping is fine), and must copy value in Set (Envoy
// does). The cache never modifies a slice Get returned.
type Store interface {
	// Get returns the value and its CAS version, or ErrNotFound.
	Get(key string) (value []byte, cas uint32, err error)
	// Set writes value if cas matches the stored version (cas 0 = unconditional). Note Envoy's
	// trap: on a key that does not exist yet the cas is ignored. Returns ErrCasMismatch on a lost race.
	Set(key string, value []byte, cas uint32) error
}

// A Peeker is a Store that can also read a value its caller decodes at once and does not keep:
// Peek's value may live in memory the host reuses once the current callback returns. The cache
// peeks only at the generation word, read on every memo hit.
type Peeker interface {
	Peek(key string) (value []byte, cas uint32, err error)
}

// Errors a Store returns.
var (
	ErrNotFound    = errors.New("shared data: not found")
	ErrCasMismatch = errors.New("shared data: cas mismatch")
)

// Errors the cache returns. Neither is fatal: the token is still valid for the request at
// hand, it is just not shared with the other workers. The plugin may count them.
var (
	// ErrContended: every one of MaxAttempts compare-and-swap writes lost a race; the write was
	// given up.
	ErrContended = errors.New("cache: shared data contended, write given up")
	// ErrNotCacheable: PutServiceToken got an empty token or one longer than MaxTokenBytes.
	// (Put, by contract, silently ignores such tokens instead.)
	ErrNotCacheable = errors.New("cache: token not cacheable")
)

// Sizing. The bound on shared data per plugin configuration is
// CacheSlots * (SlotHeaderBytes + EntriesPerSlot*(EntryHeaderBytes+MaxTokenBytes)) plus the keys
// (see SharedBytesBound, which also counts the service-account record).
const (
	EntriesPerSlot   = 4
	MaxTokenBytes    = 8 << 10 // longer tokens are used but not cached
	SlotHeaderBytes  = 2       // format version, entry count
	EntryHeaderBytes = 16 + 8 + 8 + 2
)

// MaxAttempts bounds the compare-and-swap writes of one Put, Delete or service-token update.
// Contention on one slot is rare (a slot is written once per token exchange), so a few retries
// settle it; more would only delay the request that is waiting on the worker.
const MaxAttempts = 4

// createCas is the cas used to write a key that Get reported missing. Envoy ignores the cas on
// a key that does not exist, so the key is created; but if another worker created it in the
// meantime, a non-zero cas makes this write fail with ErrCasMismatch instead of silently
// overwriting that worker's entry (cas 0 would be unconditional). Envoy hands out cas values
// from one process-wide counter starting at 1, so the last value before it wraps is the least
// likely to match a real version. The read-back after creating (see apply) catches what is left.
// proxytest stores cas+1 on creation (here 0) and compares exactly, which also works.
const createCas = math.MaxUint32

// Key identifies one cached token: SHA-256 over (user token, audience, scope), each length-prefixed.
type Key [32]byte

// id is the part of the key stored in the slot. Bytes 0..3 choose the slot; the 16 bytes stored
// are independent of them, so entries of one slot differ in their id.
func (k *Key) id() (id [16]byte) {
	copy(id[:], k[8:24])
	return id
}

// Cache is the token cache of one plugin configuration over a Store.
type Cache struct {
	store      Store
	peek       func(key string) ([]byte, uint32, error) // the store's Peek, else its Get
	slots      uint32
	slotPrefix string // namespace + ":s:"
	saKey      string // namespace + ":sa"
	slKey      string // namespace + ":sl": the service-account fetch lease
	wKey       string // namespace + ":w": the waker list
	bKey       string // namespace + ":b": the new-key bucket
	gKey       string // namespace + ":g": the generation word
	caps       MarkerCaps
}

// New returns a cache over store whose shared-data keys all start with namespace (e.g.
// "txf2:1a2b3c4d"; it should change whenever the tokens a configuration would obtain change,
// and stay the same across restarts and workers). slots is the number of slot keys; 0 is taken
// as 1 rather than failing, as the configuration validates the range.
func New(store Store, namespace string, slots uint32) *Cache {
	if slots == 0 {
		slots = 1
	}
	c := &Cache{
		store:      store,
		peek:       store.Get,
		slots:      slots,
		slotPrefix: namespace + ":s:",
		saKey:      namespace + ":sa",
		slKey:      namespace + ":sl",
		wKey:       namespace + ":w",
		bKey:       namespace + ":b",
		gKey:       namespace + ":g",
	}
	if p, ok := store.(Peeker); ok {
		c.peek = p.Peek
	}
	return c
}

// Slots reports the number of slots.
func (c *Cache) Slots() uint32 { return c.slots }

// SlotIndex is the slot holding k's entry.
func (c *Cache) SlotIndex(k Key) uint32 {
	return binary.BigEndian.Uint32(k[0:4]) % c.slots
}

// SlotKey is the shared-data key of k's slot. Built per call (one small allocation) rather
// than precomputed, so a cache with many slots costs nothing until they are used.
func (c *Cache) SlotKey(k Key) string {
	var b [64]byte
	buf := append(b[:0], c.slotPrefix...)
	buf = strconv.AppendUint(buf, uint64(c.SlotIndex(k)), 10)
	return string(buf)
}

// ServiceTokenKey is the shared-data key of the service-account token record.
func (c *Cache) ServiceTokenKey() string { return c.saKey }

// Get returns the token cached under k if it is still valid at nowMs (nowMs < its expiry; the
// caller subtracted the skew when it stored the expiry). Any store error or a slot that does
// not decode is a miss.
func (c *Cache) Get(k Key, nowMs int64) (token string, ok bool) {
	v, _, err := c.store.Get(c.SlotKey(k))
	if err != nil {
		return "", false
	}
	var es [EntriesPerSlot]entry
	n, valid := decodeSlot(v, &es)
	if !valid {
		return "", false
	}
	id := k.id()
	for i := range es[:n] {
		if es[i].id == id {
			if nowMs < es[i].expiresAtMs && es[i].token[0] != markerPrefix {
				return string(es[i].token), true
			}
			return "", false
		}
	}
	return "", false
}

// Put stores token under k until expiresAtMs. A token that cannot be cached (empty, longer
// than MaxTokenBytes, or already expired at nowMs) is ignored and Put returns nil: the caller
// still uses it for the requests at hand. Entries of the slot that expired by nowMs are dropped;
// if the slot is still full, the entry that expires first is evicted. Returns ErrContended if
// every attempt lost a race, or the store's own error.
func (c *Cache) Put(k Key, token string, expiresAtMs, nowMs int64) error {
	if expiresAtMs <= nowMs || len(token) == 0 || len(token) > MaxTokenBytes {
		return nil
	}
	o := op{kind: opPut, id: k.id(), token: token, expiresAtMs: expiresAtMs, nowMs: nowMs}
	return c.apply(c.SlotKey(k), &o)
}

// Delete removes the entry of k, whatever token it holds. A missing entry is not an error.
func (c *Cache) Delete(k Key) error {
	o := op{kind: opDelete, id: k.id()}
	return c.apply(c.SlotKey(k), &o)
}

// DeleteToken removes the entry of k only if it still holds token and was stored at least
// minAgeMs before nowMs. Use it on an upstream 401: another worker may already have replaced the
// refused token with a fresh one, which must stay; and a token younger than minAgeMs stays too,
// so that a path answering 401 to everything costs at most one exchange per key per minAgeMs.
// It reports whether the token was removed.
func (c *Cache) DeleteToken(k Key, token string, nowMs, minAgeMs int64) (bool, error) {
	o := op{kind: opDelete, id: k.id(), token: token, matchToken: true, nowMs: nowMs, minAgeMs: minAgeMs}
	err := c.apply(c.SlotKey(k), &o)
	return o.removed, err
}

type opKind uint8

const (
	opPut opKind = iota
	opDelete
	opPutService
	opDropService
	opLease
	opFailure
)

// op is one read-modify-write. A struct rather than closures keeps apply free of allocations
// beyond the value it writes.
type op struct {
	kind        opKind
	id          [16]byte
	token       string
	matchToken  bool      // opDelete: only if the entry holds token
	minAgeMs    int64     // opDelete with matchToken, opDropService: only if stored that long before nowMs
	caps        markerCap // opLease, opFailure: how far ahead a marker read back may expire
	removed     bool      // opDelete, opDropService: the last modify took something out
	expiresAtMs int64
	refreshAtMs int64
	nowMs       int64
	matchLease  bool   // opDelete: only if the entry is a lease of owner
	owner       string // opLease, opDelete with matchLease
	status      int    // opFailure: strict-mode status
	// Results of opLease and opFailure.
	won      bool
	found    Lookup
	failures int
}

// apply runs o against key with compare-and-swap, at most MaxAttempts writes.
//
// A key Get reported missing is written with createCas and then read back: Envoy ignores the
// cas when it creates a key, so two workers may both "create" it and the later one overwrite
// the earlier. If our change is not in the value read back, it is merged again into that value,
// with the cas that came with it.
func (c *Cache) apply(key string, o *op) error {
	cur, cas, err := c.store.Get(key)
	for attempt := 1; ; attempt++ {
		found := true
		if err != nil {
			if !errors.Is(err, ErrNotFound) {
				return err
			}
			cur, found = nil, false
		}
		next, write := o.modify(cur)
		if !write {
			return nil
		}
		setCas := cas
		if !found {
			setCas = createCas
		}
		err = c.store.Set(key, next, setCas)
		switch {
		case err == nil && found:
			return nil
		case err == nil:
			cur, cas, err = c.store.Get(key)
			if err == nil && o.done(cur) {
				return nil
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				return nil // written, but it cannot be checked: as good as it gets
			}
		case errors.Is(err, ErrCasMismatch):
			if attempt >= MaxAttempts {
				return ErrContended
			}
			cur, cas, err = c.store.Get(key)
			continue
		default:
			return err
		}
		if attempt >= MaxAttempts {
			return ErrContended
		}
	}
}

// modify returns the value to write given the current one (nil if missing), or write=false
// when nothing needs writing.
func (o *op) modify(cur []byte) (next []byte, write bool) {
	switch o.kind {
	case opPut:
		return o.modifyPut(cur)
	case opDelete:
		return o.modifyDelete(cur)
	case opPutService:
		return o.modifyPutService(cur)
	case opDropService:
		return o.modifyDropService(cur)
	case opLease:
		o.token = ""
		return o.modifyLease(cur)
	case opFailure:
		return o.modifyFailure(cur)
	}
	return nil, false
}

// done reports whether v, read back after creating the key, already holds the change.
func (o *op) done(v []byte) bool {
	switch o.kind {
	case opLease:
		return o.leaseDone(v)
	case opPut, opFailure:
		var es [EntriesPerSlot]entry
		n, ok := decodeSlot(v, &es)
		if !ok {
			return false
		}
		for i := range es[:n] {
			if es[i].id == o.id {
				return es[i].expiresAtMs == o.expiresAtMs && string(es[i].token) == o.token
			}
		}
		return false
	case opPutService:
		_, write := o.modifyPutService(v)
		return !write
	default:
		// Delete and drop never create a key: they have nothing to remove from a missing one.
		_, write := o.modify(v)
		return !write
	}
}

// modifyPut puts o's entry into the slot. A full slot evicts the token closest to expiry, but
// a marker (lease or failure) never evicts a live token: made-up user tokens must not push real
// users out of the cache. A marker that finds only live tokens is not written (write=false).
func (o *op) modifyPut(cur []byte) ([]byte, bool) {
	var old [EntriesPerSlot]entry
	n, ok := decodeSlot(cur, &old)
	if !ok {
		n = 0 // foreign or corrupt: overwrite
	}
	var es [EntriesPerSlot]entry
	m := 0
	for i := range old[:n] {
		if old[i].id == o.id || old[i].expiresAtMs <= o.nowMs {
			continue
		}
		es[m] = old[i]
		m++
	}
	if m == EntriesPerSlot {
		// Evict the token closest to expiry. Leases and back-off markers go last: they live
		// seconds, and losing one brings back duplicate exchanges or callouts to a failing IdP,
		// while an evicted token is merely fetched again.
		victim := -1
		for i := 0; i < m; i++ {
			marker := es[i].token[0] == markerPrefix
			if victim < 0 {
				victim = i
				continue
			}
			vMarker := es[victim].token[0] == markerPrefix
			if (vMarker && !marker) || (vMarker == marker && es[i].expiresAtMs < es[victim].expiresAtMs) {
				victim = i
			}
		}
		if o.token[0] == markerPrefix && es[victim].token[0] != markerPrefix {
			return nil, false
		}
		copy(es[victim:m], es[victim+1:m])
		m--
	}
	// The new entry is appended from the string itself: converting it to []byte first would
	// cost a copy of the token.
	size := slotSize(es[:m]) + EntryHeaderBytes + len(o.token)
	buf := appendSlotHeader(make([]byte, 0, size), m+1)
	for i := range es[:m] {
		buf = appendEntry(buf, es[i].id, es[i].expiresAtMs, es[i].storedAtMs, es[i].token)
	}
	return appendEntry(buf, o.id, o.expiresAtMs, o.nowMs, o.token), true
}

// tooYoung: something stored at atMs is less than minAgeMs old (written without overflow for any
// atMs shared data may hold; one from the future is young).
func (o *op) tooYoung(atMs int64) bool {
	return o.minAgeMs > 0 && atMs > o.nowMs-o.minAgeMs
}

func (o *op) modifyDelete(cur []byte) ([]byte, bool) {
	var es [EntriesPerSlot]entry
	n, ok := decodeSlot(cur, &es)
	if !ok {
		return nil, false
	}
	for i := range es[:n] {
		if es[i].id != o.id {
			continue
		}
		if o.matchToken && (string(es[i].token) != o.token || o.tooYoung(es[i].storedAtMs)) {
			return nil, false
		}
		if o.matchLease && !strings.HasPrefix(string(es[i].token), leasePrefix+o.owner+":") {
			return nil, false
		}
		copy(es[i:n], es[i+1:n])
		n--
		o.removed = true
		return appendSlot(make([]byte, 0, slotSize(es[:n])), es[:n]), true
	}
	return nil, false
}
