package coord

// The memo is a small per-VM copy of the cache in front of shared data, so that a request of a
// user this VM served lately costs a map lookup and one 8-byte shared-data read (the generation
// word) instead of validating and hashing the token (SHA-256 of a 1.5 KB token is ~40 µs in
// V8) and reading and decoding its slot. An entry is trusted only while the generation word is
// what it was when the token was read from shared data (every drop on any worker bumps it) and
// until the earlier of the token's and the user token's own expiry. Keys are exact strings, so
// an entry can only ever answer the very token it was made for.

// The memo is bounded by entries and by bytes (an entry holds the user token, the "Bearer …"
// value and the sealed entry: ~3 KB with Keycloak's tokens, much more with padded ones), so
// that a VM's memory does not grow with token sizes.
const (
	maxMemoEntries = 1024
	maxMemoBytes   = 512 << 10
)

type memoKey struct{ userToken, audience, scope string }

type memoEntry struct {
	bearer     string // "Bearer <exchanged token>", ready for the header
	token      string // its sealed entry in shared data (an upstream 401 drops it by value)
	key        string // its cache key, as a flight key
	untilMs    int64  // monotonic: the earlier of its expiry and the user token's exp
	generation uint64 // the generation word when the token was read
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
	entries map[memoKey]*memoEntry
	bytes   int // what the entries' strings hold
}

func entryBytes(k memoKey, e *memoEntry) int {
	return len(k.userToken) + len(k.audience) + len(k.scope) + len(e.bearer) + len(e.token) + len(e.key)
}

func (m *memo) get(k memoKey, nowMs int64, generation uint64) (*memoEntry, bool) {
	e, ok := m.entries[k]
	if !ok {
		return nil, false
	}
	if nowMs >= e.untilMs || e.generation != generation {
		m.forget(k)
		return nil, false
	}
	return e, true
}

func (m *memo) put(k memoKey, e *memoEntry) {
	n := entryBytes(k, e)
	if n > maxMemoBytes/8 {
		return // one huge token must not empty the memo
	}
	if m.entries == nil {
		m.entries = make(map[memoKey]*memoEntry)
	}
	m.forget(k)
	for len(m.entries) > 0 && (len(m.entries) >= maxMemoEntries || m.bytes+n > maxMemoBytes) {
		for old := range m.entries { // a random one: Go's map order
			m.forget(old)
			break
		}
	}
	m.entries[k] = e
	m.bytes += n
}

func (m *memo) forget(k memoKey) {
	if e, ok := m.entries[k]; ok {
		m.bytes -= entryBytes(k, e)
		delete(m.entries, k)
	}
}
