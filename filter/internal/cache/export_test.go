package cache

// Test-only views of the unexported encoding, for the external test package.

// TestEntry mirrors entry with exported fields.
type TestEntry struct {
	ID          [16]byte
	ExpiresAtMs int64
	StoredAtMs  int64
	Token       []byte
}

const DroppedMs = droppedMs

func DecodeSlot(v []byte) ([]TestEntry, bool) {
	var es [EntriesPerSlot]entry
	n, ok := decodeSlot(v, &es)
	if !ok {
		return nil, false
	}
	out := make([]TestEntry, n)
	for i := range es[:n] {
		out[i] = TestEntry{ID: es[i].id, ExpiresAtMs: es[i].expiresAtMs, StoredAtMs: es[i].storedAtMs, Token: es[i].token}
	}
	return out, true
}

// EncodeSlot encodes entries as given, even invalid ones (for building corrupt values).
func EncodeSlot(es []TestEntry) []byte {
	in := make([]entry, len(es))
	for i, e := range es {
		in[i] = entry{id: e.ID, expiresAtMs: e.ExpiresAtMs, storedAtMs: e.StoredAtMs, token: e.Token}
	}
	return appendSlot(nil, in)
}

func DecodeService(v []byte) (ServiceToken, bool) {
	r, ok := decodeService(v)
	if !ok {
		return ServiceToken{}, false
	}
	return ServiceToken{Token: string(r.token), ExpiresAtMs: r.expiresAtMs, RefreshAtMs: r.refreshAtMs, ObtainedAtMs: r.obtainedAtMs}, true
}

func EncodeService(t ServiceToken) []byte {
	return appendService(nil, t.ExpiresAtMs, t.RefreshAtMs, t.ObtainedAtMs, t.Token)
}

// ID is the id stored in the slot for k.
func (k Key) ID() [16]byte { return k.id() }
