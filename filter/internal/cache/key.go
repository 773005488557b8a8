package cache

import (
	"crypto/sha256"
	"encoding/binary"
)

// keyForStackBytes covers the framed input of typical tokens (a Keycloak access token is
// 1–2 KB) without a heap allocation; longer inputs cost one.
const keyForStackBytes = 4096

// KeyFor returns the cache key of a user token exchanged for audience and scope: SHA-256 over
// the three, each prefixed by its length as uint32 big-endian, so that ("ab","c") and ("a","bc")
// differ. The input is framed into one buffer and hashed once: crypto/sha256's streaming digest
// is behind an interface, which would make every Write copy its argument to the heap.
func KeyFor(userToken, audience, scope string) Key {
	n := 12 + len(userToken) + len(audience) + len(scope)
	var stack [keyForStackBytes]byte
	buf := stack[:0]
	if n > len(stack) {
		buf = make([]byte, 0, n)
	}
	buf = appendField(buf, userToken)
	buf = appendField(buf, audience)
	buf = appendField(buf, scope)
	return Key(sha256.Sum256(buf))
}

func appendField(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// RefreshKey is where the refresh of k is coordinated between workers: the lease of the worker
// refreshing it and the back-off after a failed refresh. It is an entry of its own (another id,
// and usually another slot), so that a refresh marker never stands where k's token does: the
// token stays in use while it is refreshed, and after a failed refresh until it expires. A
// marker never evicts a live token either (modifyPut).
func RefreshKey(k Key) Key {
	r := k
	r[0] ^= 0xA5 // the slot
	r[8] ^= 0xA5 // the id
	return r
}
