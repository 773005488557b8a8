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
	v, _, err := c.store.Get(c.gKey)
	if err != nil || len(v) != generationBytes {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// BumpGeneration increments the word (compare-and-swap, at most MaxAttempts writes).
func (c *Cache) BumpGeneration() error {
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		cur, cas, err := c.store.Get(c.gKey)
		var n uint64
		switch {
		case err == nil && len(cur) == generationBytes:
			n = binary.BigEndian.Uint64(cur)
		case err == nil:
		case errors.Is(err, ErrNotFound):
			cas = createCas
		default:
			return err
		}
		next := binary.BigEndian.AppendUint64(make([]byte, 0, generationBytes), n+1)
		err = c.store.Set(c.gKey, next, cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrCasMismatch) {
			return err
		}
	}
	return ErrContended
}
