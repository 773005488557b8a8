package coord

import "unsafe"

// The memo is a small per-VM copy of the cache in front of shared data, so that a request of a
// user this VM served lately costs a map lookup and one 8-byte shared-data read (the generation
// word) instead of validating and hashing the token (SHA-256 of a 1.5 KB token is ~40 µs in
// V8) and reading and decoding its slot. An entry is trusted only while the generation word is
// what it was when the token was read from shared data (every drop on any worker bumps it) and
// until the earlier of the token's and the user token's own expiry. An entry holds the user token
// it was made for and answers only that very token.
//
// The map is not keyed by the whole user token: hashing 1.5 KB per hit (the runtime's fallback
// hash; wasm has no AES instructions) cost as much as the compare. It is keyed by one word, a
// summary of the token's length and last bytes (a JWT ends in its signature) with audience and
// scope, so that the lookup is the runtime's fast path for 8-byte keys (a struct key of those
// fields was hashed and compared field by field: a tenth of a hit in V8). A hit then compares the
// stored user token, audience and scope once. Keys whose summaries collide (a sender can make
// one up) only take each other's place: a miss, never another token's answer.

// The memo is bounded by entries and by bytes (an entry holds the user token, the "Bearer …"
// value and the sealed entry: ~3 KB with Keycloak's tokens, much more with padded ones), so
// that a VM's memory does not grow with token sizes.
const (
	maxMemoEntries = 1024
	maxMemoBytes   = 512 << 10
)

type memoKey struct{ userToken, audience, scope string }

// memoTail is how many of a user token's last bytes its summary holds.
const memoTail = 32

// slot is a memo key's summary: what the map is keyed by.
func (k memoKey) slot() uint64 {
	t := k.userToken
	h := uint64(len(t)) * slotMul
	if n := len(t); n >= memoTail {
		// The last 32 bytes as four words (unaligned loads, as in sameToken).
		p := unsafe.Pointer(unsafe.StringData(t[n-memoTail:]))
		h = slotMix(h ^ *(*uint64)(p))
		h = slotMix(h ^ *(*uint64)(unsafe.Add(p, 8)))
		h = slotMix(h ^ *(*uint64)(unsafe.Add(p, 16)))
		h = slotMix(h ^ *(*uint64)(unsafe.Add(p, 24)))
	} else {
		for i := 0; i < n; i++ {
			h = slotMix(h ^ uint64(t[i]))
		}
	}
	// Audience and scope are short configured strings; their lengths keep ("ab","") and
	// ("a","b") apart.
	h = slotMix(h ^ uint64(len(k.audience))<<32 ^ uint64(len(k.scope)))
	for i := 0; i < len(k.audience); i++ {
		h = h*slotMul ^ uint64(k.audience[i])
	}
	for i := 0; i < len(k.scope); i++ {
		h = h*slotMul ^ uint64(k.scope[i])
	}
	return slotMix(h)
}

const slotMul = 0x9e3779b97f4a7c15 // 2^64 / golden ratio, odd

// slotMix spreads every bit of h over the word (a multiply and xor-shifts, as splitmix64's
// finalizer): the map hashes the word again with its own seed, so this only has to keep tokens
// with similar tails apart.
func slotMix(h uint64) uint64 {
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return h
}

// answers reports whether e was filed under k: the same user token, audience and scope.
func (e *memoEntry) answers(k memoKey) bool {
	return e.audience == k.audience && e.scope == k.scope && sameToken(e.userToken, k.userToken)
}

type memoEntry struct {
	userToken string // the user token it answers (the key's, kept for the compare)
	// audience and scope are the rest of the key it was filed under (put sets the three).
	audience, scope string
	bearer          string // "Bearer <exchanged token>", ready for the header
	token           string // its sealed entry in shared data (an upstream 401 drops it by value)
	key             string // its cache key, as a flight key
	untilMs         int64  // monotonic: the earlier of its expiry and the user token's exp
	generation      uint64 // the generation word when the token was read
	// For the refresh ahead of expiry (refresh.go): the token's own expiry and when it was
	// stored (monotonic), the user token's exp (0: none known), and when this VM looks again
	// whether the token is being refreshed.
	tokenUntilMs int64
	storedAtMs   int64
	userUntilMs  int64
	nextCheckMs  int64
}

// newMemoEntry is the entry of exchanged token (sealed in shared data as blob, under key) usable
// until untilMs, stored at storedAtMs, for a user token that expires at userUntilMs (0: unknown).
func newMemoEntry(token, blob, key string, untilMs, storedAtMs, userUntilMs int64, generation uint64) *memoEntry {
	e := &memoEntry{bearer: "Bearer " + token, token: blob, key: key, untilMs: untilMs, generation: generation,
		tokenUntilMs: untilMs, storedAtMs: storedAtMs, userUntilMs: userUntilMs}
	if userUntilMs != 0 {
		e.untilMs = min(untilMs, userUntilMs)
	}
	return e
}

type memo struct {
	entries map[uint64]*memoEntry
	bytes   int // what the entries' strings hold
}

func entryBytes(e *memoEntry) int {
	return len(e.userToken) + len(e.audience) + len(e.scope) + len(e.bearer) + len(e.token) + len(e.key)
}

func (m *memo) get(k memoKey, nowMs int64, generation uint64) (*memoEntry, bool) {
	s := k.slot()
	e, ok := m.entries[s]
	if !ok || !e.answers(k) {
		return nil, false // (another key's entry stays: it is not stale)
	}
	if nowMs >= e.untilMs || e.generation != generation {
		m.drop(s)
		return nil, false
	}
	return e, true
}

// memoKey is the key e was filed under.
func (e *memoEntry) memoKey() memoKey { return memoKey{e.userToken, e.audience, e.scope} }

// put files e under k; e is the caller's no more (its key becomes k). e must be a fresh entry,
// never filed before: drop subtracts what put added, from the fields put sets.
func (m *memo) put(k memoKey, e *memoEntry) {
	e.userToken, e.audience, e.scope = k.userToken, k.audience, k.scope
	s := k.slot()
	n := entryBytes(e)
	if n > maxMemoBytes/8 {
		return // one huge token must not empty the memo
	}
	if m.entries == nil {
		m.entries = make(map[uint64]*memoEntry)
	}
	m.drop(s) // the same key's older entry, or one whose summary collides
	for len(m.entries) > 0 && (len(m.entries) >= maxMemoEntries || m.bytes+n > maxMemoBytes) {
		for old := range m.entries { // a random one: Go's map order
			m.drop(old)
			break
		}
	}
	m.entries[s] = e
	m.bytes += n
}

// forget drops k's entry, if the memo holds one for that very token.
func (m *memo) forget(k memoKey) {
	s := k.slot()
	if e, ok := m.entries[s]; ok && e.answers(k) {
		m.drop(s)
	}
}

func (m *memo) drop(s uint64) {
	if e, ok := m.entries[s]; ok {
		m.bytes -= entryBytes(e)
		delete(m.entries, s)
	}
}

// sameToken reports whether a and b are the same token, reading 8-byte words (eight a turn) and
// always all of them. Go's string compare on wasm is a byte-at-a-time loop (internal/bytealg/equal_wasm.s,
// memeqbody), which made the one compare of a 1.5 KB token a tenth of a memo hit in V8; and a
// compare that stops at the first difference would tell by its time how much of a stored token a
// made-up one got right. (The 8-byte loads may be unaligned, as a token cut out of
// "Bearer <token>" is: wasm's i64.load takes any address, as amd64 and arm64 do.)
func sameToken(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	n := len(a)
	if n == 0 {
		return true
	}
	pa, pb := unsafe.Pointer(unsafe.StringData(a)), unsafe.Pointer(unsafe.StringData(b))
	var diff uint64
	i := 0
	// 64 bytes a turn: the loop's own work (bound check, branch) is a small share of it.
	for ; i+64 <= n; i += 64 {
		p, q := unsafe.Add(pa, i), unsafe.Add(pb, i)
		// (^ and | bind alike in Go: the parentheses are needed.)
		diff |= (*(*uint64)(p) ^ *(*uint64)(q)) |
			(*(*uint64)(unsafe.Add(p, 8)) ^ *(*uint64)(unsafe.Add(q, 8))) |
			(*(*uint64)(unsafe.Add(p, 16)) ^ *(*uint64)(unsafe.Add(q, 16))) |
			(*(*uint64)(unsafe.Add(p, 24)) ^ *(*uint64)(unsafe.Add(q, 24))) |
			(*(*uint64)(unsafe.Add(p, 32)) ^ *(*uint64)(unsafe.Add(q, 32))) |
			(*(*uint64)(unsafe.Add(p, 40)) ^ *(*uint64)(unsafe.Add(q, 40))) |
			(*(*uint64)(unsafe.Add(p, 48)) ^ *(*uint64)(unsafe.Add(q, 48))) |
			(*(*uint64)(unsafe.Add(p, 56)) ^ *(*uint64)(unsafe.Add(q, 56)))
	}
	for ; i+8 <= n; i += 8 {
		diff |= *(*uint64)(unsafe.Add(pa, i)) ^ *(*uint64)(unsafe.Add(pb, i))
	}
	for ; i < n; i++ {
		diff |= uint64(*(*byte)(unsafe.Add(pa, i)) ^ *(*byte)(unsafe.Add(pb, i)))
	}
	return diff == 0
}
