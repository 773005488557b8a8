package cache

import (
	"encoding/binary"
	"errors"
)

// The generation word: one 8-byte counter per namespace that every drop of a token (an upstream
// 401) increments. A worker that keeps tokens in its own memory (a per-VM memo in front of
// shared data) notes the word when it reads a token, and trusts the copy only while the word is
// unchanged, so that a token dropped on one worker is sent by none. Reading it is one small
// shared-data get; a foreign write to it only makes memos miss.
const generationBytes = 8

// Generation reads the word (0 if absent or not 8 bytes).
func (c *Cache) Generation() uint64 {
	v, _, err := c.peek(c.gKey) // decoded at once: a peek will do
	if err != nil || len(v) != generationBytes {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// BumpGeneration increments the word (compare-and-swap, at most MaxAttempts writes).
func (c *Cache) BumpGeneration() error {
	return c.update(c.gKey, func(cur []byte) []byte {
		var n uint64
		if len(cur) == generationBytes {
			n = binary.BigEndian.Uint64(cur)
		}
		return binary.BigEndian.AppendUint64(make([]byte, 0, generationBytes), n+1)
	})
}

// update writes next(cur) to a small key of its own with compare-and-swap, retrying lost races
// at most MaxAttempts times (cur is nil for a missing key). Unlike apply it does not read back a
// key it created: for the counters it serves, a concurrent creation losing one step is harmless.
func (c *Cache) update(key string, next func(cur []byte) []byte) error {
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		cur, cas, err := c.store.Get(key)
		switch {
		case err == nil:
		case errors.Is(err, ErrNotFound):
			cur, cas = nil, createCas
		default:
			return err
		}
		err = c.store.Set(key, next(cur), cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrCasMismatch) {
			return err
		}
	}
	return ErrContended
}
