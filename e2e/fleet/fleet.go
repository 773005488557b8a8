// Package fleet is a small load balancer in front of several proxies (each one Envoy with its
// own shared data), for measuring what a gateway fleet costs the IdP: round robin, or
// consistent hashing on a request header the way Envoy's ring-hash load balancer does it (and
// Istio's DestinationRule consistentHash.httpHeaderName asks for): every backend owns points on
// a hash ring, and a request goes to the owner of the first point at or after its key's hash.
// When a backend leaves, only the keys it owned move.
package fleet

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// PointsPerBackend is how many points each backend has on the ring (Envoy's ring_hash makes a
// ring of minimum_ring_size 1024 by default, i.e. hundreds per backend for small fleets).
const PointsPerBackend = 256

// Balancer picks a backend per request and forwards it.
type Balancer struct {
	backends []*httputil.ReverseProxy
	header   string // "" = round robin
	ring     []point
	next     atomic.Uint64
}

type point struct {
	hash    uint64
	backend int
}

// RoundRobin sends request i to backend i mod len(backends).
func RoundRobin(backends []string) *Balancer { return newBalancer(backends, "") }

// ConsistentHash sends every request with the same value of header to the same backend (a
// request without it goes round robin, as Envoy falls back to a random host).
func ConsistentHash(backends []string, header string) *Balancer {
	b := newBalancer(backends, header)
	b.ring = Ring(len(backends))
	return b
}

func newBalancer(backends []string, header string) *Balancer {
	b := &Balancer{header: header}
	for _, raw := range backends {
		u, err := url.Parse(raw)
		if err != nil {
			panic(err) // test input
		}
		b.backends = append(b.backends, httputil.NewSingleHostReverseProxy(u))
	}
	return b
}

// Ring is the hash ring of n backends, named by their index.
func Ring(n int) []point {
	var ring []point
	for i := 0; i < n; i++ {
		for j := 0; j < PointsPerBackend; j++ {
			ring = append(ring, point{hash: hash64("backend-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)), backend: i})
		}
	}
	slices.SortFunc(ring, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return ring
}

// Owner is the backend of key on ring.
func Owner(ring []point, key string) int {
	h := hash64(key)
	i, _ := slices.BinarySearchFunc(ring, h, func(p point, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	if i == len(ring) {
		i = 0
	}
	return ring[i].backend
}

// hash64 is xxHash64, Envoy's ring-hash default (RingHashLbConfig.hash_function XX_HASH).
func hash64(s string) uint64 { return xxhash.Sum64String(s) }

// Pick is the backend a request goes to.
func (b *Balancer) Pick(r *http.Request) int {
	if b.header != "" {
		if v := r.Header.Get(b.header); v != "" {
			return Owner(b.ring, v)
		}
	}
	return int(b.next.Add(1)-1) % len(b.backends)
}

func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.backends[b.Pick(r)].ServeHTTP(w, r)
}

// Remapped is, for keys spread over n backends by consistent hashing, the share that moves when
// backend leaving leaves (the rest keep their backend), and whether every key that moved was
// on the leaving backend.
func Remapped(n, leaving int, keys []string) (share float64, onlyFromLeaving bool) {
	before := Ring(n)
	var after []point
	for _, p := range before {
		if p.backend != leaving {
			after = append(after, p)
		}
	}
	moved := 0
	onlyFromLeaving = true
	for _, k := range keys {
		was, now := Owner(before, k), Owner(after, k)
		if was != now {
			moved++
			if was != leaving {
				onlyFromLeaving = false
			}
		}
	}
	return float64(moved) / float64(len(keys)), onlyFromLeaving
}
