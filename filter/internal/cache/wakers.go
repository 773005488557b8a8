package cache

import "errors"

// The waker list: the VMs of this plugin that want to be told when a token or failure lands in
// shared data, so that requests waiting on another worker's exchange resume at once rather than
// at their next tick. One key per namespace, holding at most MaxWakers owner ids of OwnerIDBytes
// each, oldest first; a VM that goes away (configuration update, canary) is pushed out by newer
// ones, and waking a VM that is gone only fails to find its queue.
const (
	MaxWakers    = 64
	OwnerIDBytes = 16
)

var errBadOwner = errors.New("cache: owner id must be OwnerIDBytes long")

// RegisterWaker adds owner to the waker list (once).
func (c *Cache) RegisterWaker(owner string) error {
	if len(owner) != OwnerIDBytes {
		return errBadOwner
	}
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		cur, cas, err := c.store.Get(c.wKey)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if !validWakers(cur) {
			cur = nil
		}
		for i := 0; i+OwnerIDBytes <= len(cur); i += OwnerIDBytes {
			if string(cur[i:i+OwnerIDBytes]) == owner {
				return nil
			}
		}
		if len(cur) >= MaxWakers*OwnerIDBytes {
			cur = cur[OwnerIDBytes:]
		}
		next := make([]byte, 0, len(cur)+OwnerIDBytes)
		next = append(append(next, cur...), owner...)
		if !found {
			cas = createCas
		}
		err = c.store.Set(c.wKey, next, cas)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrCasMismatch) {
			return err
		}
	}
	return ErrContended
}

// Wakers appends to dst the owner ids in the waker list.
func (c *Cache) Wakers(dst []string) []string {
	v, _, err := c.store.Get(c.wKey)
	if err != nil || !validWakers(v) {
		return dst
	}
	for i := 0; i+OwnerIDBytes <= len(v); i += OwnerIDBytes {
		dst = append(dst, string(v[i:i+OwnerIDBytes]))
	}
	return dst
}

func validWakers(v []byte) bool {
	return len(v)%OwnerIDBytes == 0 && len(v) <= MaxWakers*OwnerIDBytes
}
