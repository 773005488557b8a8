package host

import (
	"encoding/binary"
	"net/http"
	"sort"
	"strings"
)

// pairs is an ordered header map as Envoy keeps it: lower-case names, repeated names allowed,
// pseudo-headers (":method", ":status", ...) included as ordinary entries.
type pairs [][2]string

// get returns the first value of key (Envoy returns only the first of repeated headers).
func (p pairs) get(key string) (string, bool) {
	key = strings.ToLower(key)
	for _, kv := range p {
		if kv[0] == key {
			return kv[1], true
		}
	}
	return "", false
}

func (p pairs) clone() pairs { return append(pairs(nil), p...) }

// add appends an entry (Envoy's addCopy).
func (p *pairs) add(key, value string) { *p = append(*p, [2]string{strings.ToLower(key), value}) }

// remove deletes every entry named key.
func (p *pairs) remove(key string) {
	key = strings.ToLower(key)
	out := (*p)[:0]
	for _, kv := range *p {
		if kv[0] != key {
			out = append(out, kv)
		}
	}
	*p = out
}

// replace is Envoy's setCopy with envoy.reloadable_features.http_set_copy_replace_all_headers
// (the default): every entry named key is removed, then one is appended.
func (p *pairs) replace(key, value string) {
	p.remove(key)
	p.add(key, value)
}

// byteSize is Envoy's HeaderMap::byteSize: the sum of name and value lengths.
func (p pairs) byteSize() int {
	n := 0
	for _, kv := range p {
		n += len(kv[0]) + len(kv[1])
	}
	return n
}

// marshal encodes pairs in the proxy-wasm wire format (PairsUtil::marshalPairs): a count, the
// (name size, value size) table, then every name and value NUL-terminated.
func (p pairs) marshal() []byte {
	size := 4
	for _, kv := range p {
		size += 8 + len(kv[0]) + len(kv[1]) + 2
	}
	b := make([]byte, size)
	binary.LittleEndian.PutUint32(b, uint32(len(p)))
	pos := 4
	for _, kv := range p {
		binary.LittleEndian.PutUint32(b[pos:], uint32(len(kv[0])))
		binary.LittleEndian.PutUint32(b[pos+4:], uint32(len(kv[1])))
		pos += 8
	}
	for _, kv := range p {
		pos += copy(b[pos:], kv[0]) + 1
		pos += copy(b[pos:], kv[1]) + 1
	}
	return b
}

// Limits of PairsUtil::toPairs (include/proxy-wasm/limits.h).
const (
	maxPairsBytes = 1 << 20
	maxPairsCount = 1024
)

// parsePairs decodes the wire format like PairsUtil::toPairs: anything malformed or over the
// limits yields an empty map, never an error. Names are lower-cased as Envoy's LowerCaseString
// does where the pairs become headers.
func parsePairs(b []byte) pairs {
	if len(b) < 4 || len(b) > maxPairsBytes {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > maxPairsCount || 4+8*n > len(b) {
		return nil
	}
	pos := 4 + 8*n
	out := make(pairs, 0, n)
	for i := 0; i < n; i++ {
		ks := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vs := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if pos+ks+1 > len(b) || b[pos+ks] != 0 {
			return nil
		}
		k := string(b[pos : pos+ks])
		pos += ks + 1
		if pos+vs+1 > len(b) || b[pos+vs] != 0 {
			return nil
		}
		v := string(b[pos : pos+vs])
		pos += vs + 1
		out = append(out, [2]string{k, v})
	}
	if pos != len(b) {
		return nil
	}
	return out
}

// lower returns pairs with lower-case names (Envoy builds header maps from pairs that way).
func (p pairs) lower() pairs {
	out := make(pairs, len(p))
	for i, kv := range p {
		out[i] = [2]string{strings.ToLower(kv[0]), kv[1]}
	}
	return out
}

// addHeader appends every value of h, names in sorted order: Go's net/http does not keep the
// wire order, and a stable order keeps what the module sees reproducible.
func (p *pairs) addHeader(h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, val := range h[k] {
			p.add(k, val)
		}
	}
}
