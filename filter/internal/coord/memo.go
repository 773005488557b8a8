package coord

// The memo is a small per-VM copy of the cache in front of shared data, so that a request of a
// user this VM served lately costs a map lookup and one 8-byte shared-data read (the generation
// word) instead of validating and hashing the token (SHA-256 of a 1.5 KB token is ~40 µs in
// V8) and reading and decoding its slot. An entry is trusted only while the generation word is
// what it was when the token was read from shared data (every drop on any worker bumps it) and
// until the earlier of the token's and the user token's own expiry. Keys are exact strings, so
// an entry can only ever answer the very token it was made for.

// maxMemoEntries bounds the memo (entries hold two token-sized strings, ~3 KB for Keycloak's).
const maxMemoEntries = 256

type memoKey struct{ userToken, audience, scope string }

type memoEntry struct {
	bearer     string // "Bearer <exchanged token>", ready for the header
	token      string // its sealed entry in shared data (an upstream 401 drops it by value)
	key        string // its cache key, as a flight key
	untilMs    int64  // monotonic: the earlier of its expiry and the user token's exp
	generation uint64 // the generation word when the token was read
}

type memo struct{ entries map[memoKey]*memoEntry }

func (m *memo) get(k memoKey, nowMs int64, generation uint64) (*memoEntry, bool) {
	e, ok := m.entries[k]
	if !ok {
		return nil, false
	}
	if nowMs >= e.untilMs || e.generation != generation {
		delete(m.entries, k)
		return nil, false
	}
	return e, true
}

func (m *memo) put(k memoKey, e *memoEntry) {
	if m.entries == nil {
		m.entries = make(map[memoKey]*memoEntry)
	}
	if _, ok := m.entries[k]; !ok && len(m.entries) >= maxMemoEntries {
		for old := range m.entries { // a random one: Go's map order
			delete(m.entries, old)
			break
		}
	}
	m.entries[k] = e
}

func (m *memo) forget(k memoKey) { delete(m.entries, k) }
