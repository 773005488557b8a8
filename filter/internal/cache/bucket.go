package cache

import (
	"encoding/binary"
	"errors"
)

// The new-key bucket: one token bucket per namespace, shared by every worker of the Envoy, that
// exchanges of user tokens with nothing in the cache draw from. It bounds what made-up user
// tokens (any string that passes the local checks costs a callout otherwise) can cost the IdP.
// Value: version, milli-tokens int64, last refill ms int64.
const (
	bucketVersion = 1
	bucketBytes   = 1 + 8 + 8
)

// TakeNewKey takes one token from the bucket that refills at ratePerSec up to burst, and reports
// whether there was one. rate 0 means no limit. A value that does not decode, claims more than
// burst or a refill time ahead of nowMs (another writer, or a clock that stepped back) is
// treated as a full bucket at nowMs: nothing in shared data can empty it for good. Contention
// means a flood of new keys: no token. Any other store failure lets the exchange through.
func (c *Cache) TakeNewKey(ratePerSec, burst uint32, nowMs int64) bool {
	if ratePerSec == 0 {
		return true
	}
	full := int64(burst) * 1000
	var ok bool
	err := c.update(c.bKey, func(cur []byte) []byte {
		milli, last := full, nowMs
		if len(cur) == bucketBytes && cur[0] == bucketVersion {
			m := int64(binary.BigEndian.Uint64(cur[1:9]))
			l := int64(binary.BigEndian.Uint64(cur[9:17]))
			if m >= 0 && m <= full && l <= nowMs {
				milli = min(full, m+(nowMs-l)*int64(ratePerSec)) // ms × tokens/s = milli-tokens
				last = nowMs
			}
		}
		if ok = milli >= 1000; ok {
			milli -= 1000
		}
		next := make([]byte, 0, bucketBytes)
		next = append(next, bucketVersion)
		next = binary.BigEndian.AppendUint64(next, uint64(milli))
		return binary.BigEndian.AppendUint64(next, uint64(last))
	})
	switch {
	case err == nil:
		return ok
	case errors.Is(err, ErrContended):
		return false // a flood of new keys
	default:
		return true // shared data refused: exchanging is still correct
	}
}
