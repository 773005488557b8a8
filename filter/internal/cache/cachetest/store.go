// Package cachetest provides an in-memory cache.Store with the semantics of Envoy's shared data
// (or, switched, of the proxy-wasm Go SDK's emulator), counters, and hooks that interleave
// another writer at a chosen point so that races can be tested deterministically.
package cachetest

import (
	"sort"

	"github.com/kagenti/token-exchange-filter/filter/internal/cache"
)

// Store is a fake shared-data store. It is not safe for concurrent use; the races it stands for
// are played through the hooks.
type Store struct {
	// Proxytest switches to the semantics of the SDK's emulator (proxytest): each key keeps its
	// own cas, set to cas+1 on every write (creation included); a write on an existing key
	// succeeds only if cas equals it exactly (so cas 0 fails once the key exists); and a key
	// holding an empty value reads as not found. Envoy (the default): one process-wide cas
	// counter that starts at 1 and skips 0; cas 0 writes unconditionally; a write on a missing
	// key ignores cas.
	Proxytest bool

	// BeforeSet, if not nil, runs at the start of every Set, after the caller's Get: the place
	// where another worker's write lands in a lost race. AfterSet runs after every successful
	// Set. While a hook runs, hooks are off, so a hook may use the store (or a cache over it).
	BeforeSet func(key string)
	AfterSet  func(key string)

	data     map[string]*item
	nextCas  uint32
	bytes    int
	gets     int
	sets     int
	mismatch int
	inHook   bool
}

type item struct {
	value []byte
	cas   uint32
}

// NewEnvoyStore returns an empty store with Envoy's semantics.
func NewEnvoyStore() *Store {
	return &Store{data: map[string]*item{}, nextCas: 1}
}

// NewProxytestStore returns an empty store with the SDK emulator's semantics.
func NewProxytestStore() *Store {
	s := NewEnvoyStore()
	s.Proxytest = true
	return s
}

// Get implements cache.Store. As in the SDK, Envoy mode returns a copy; proxytest mode returns
// the stored slice itself, so a caller that modified it would corrupt the store (and tests
// would notice).
func (s *Store) Get(key string) ([]byte, uint32, error) {
	s.gets++
	it, ok := s.data[key]
	if !ok || (s.Proxytest && len(it.value) == 0) {
		return nil, 0, cache.ErrNotFound
	}
	if s.Proxytest {
		return it.value, it.cas, nil
	}
	return append([]byte(nil), it.value...), it.cas, nil
}

// Set implements cache.Store.
func (s *Store) Set(key string, value []byte, cas uint32) error {
	s.runHook(s.BeforeSet, key)
	s.sets++
	if err := s.set(key, value, cas); err != nil {
		s.mismatch++
		return err
	}
	s.runHook(s.AfterSet, key)
	return nil
}

func (s *Store) runHook(h func(string), key string) {
	if h == nil || s.inHook {
		return
	}
	s.inHook = true
	defer func() { s.inHook = false }()
	h(key)
}

func (s *Store) set(key string, value []byte, cas uint32) error {
	it, ok := s.data[key]
	if s.Proxytest {
		if ok && it.cas != cas {
			return cache.ErrCasMismatch
		}
		s.store(key, value, cas+1)
		return nil
	}
	if ok && cas != 0 && cas != it.cas {
		return cache.ErrCasMismatch
	}
	s.store(key, value, s.takeCas())
	return nil
}

// takeCas hands out Envoy's next cas: a process-wide counter that skips 0.
func (s *Store) takeCas() uint32 {
	c := s.nextCas
	s.nextCas++
	if s.nextCas == 0 {
		s.nextCas = 1
	}
	return c
}

func (s *Store) store(key string, value []byte, cas uint32) {
	if old, ok := s.data[key]; ok {
		s.bytes -= len(key) + len(old.value)
	}
	s.data[key] = &item{value: append([]byte(nil), value...), cas: cas}
	s.bytes += len(key) + len(value)
}

// Raw writes value under key unconditionally, bypassing hooks and counters (a new cas is still
// taken): for planting corrupt or foreign values.
func (s *Store) Raw(key string, value []byte) {
	c := uint32(1)
	if !s.Proxytest {
		c = s.takeCas()
	} else if it, ok := s.data[key]; ok {
		c = it.cas + 1
	}
	s.store(key, value, c)
}

// Value returns the stored value (a copy) and whether key exists, without counting.
func (s *Store) Value(key string) ([]byte, bool) {
	it, ok := s.data[key]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), it.value...), true
}

// Cas returns key's current cas (0 if missing), without counting.
func (s *Store) Cas(key string) uint32 {
	if it, ok := s.data[key]; ok {
		return it.cas
	}
	return 0
}

// SetNextCas sets Envoy's process-wide counter (0 is taken as 1).
func (s *Store) SetNextCas(c uint32) {
	if c == 0 {
		c = 1
	}
	s.nextCas = c
}

// Keys returns the stored keys, sorted.
func (s *Store) Keys() []string {
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Len is the number of stored keys.
func (s *Store) Len() int { return len(s.data) }

// Bytes is the total size of the stored keys and values.
func (s *Store) Bytes() int { return s.bytes }

// Gets and Sets count the calls made through the Store interface (hooks' calls included);
// Mismatches counts the Sets that failed with ErrCasMismatch.
func (s *Store) Gets() int       { return s.gets }
func (s *Store) Sets() int       { return s.sets }
func (s *Store) Mismatches() int { return s.mismatch }

// ResetCounters zeroes Gets, Sets and Mismatches.
func (s *Store) ResetCounters() { s.gets, s.sets, s.mismatch = 0, 0, 0 }
