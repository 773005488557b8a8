package host

import (
	"sort"
	"sync"
)

// Status codes of the proxy-wasm ABI (proxy-wasm-cpp-host WasmResult).
const (
	statusOK                  = 0
	statusNotFound            = 1
	statusBadArgument         = 2
	statusInvalidMemoryAccess = 6
	statusEmpty               = 7
	statusCasMismatch         = 8
	statusInternalFailure     = 10
	statusBrokenConnection    = 11
	statusUnimplemented       = 12
)

// sharedData is src/shared_data.cc: one store per vm_id, one global CAS counter that never hands
// out 0, no deletion, no TTL, no size limit.
type sharedData struct {
	mu   sync.Mutex
	cas  uint32
	data map[string]map[string]sharedEntry
}

type sharedEntry struct {
	value []byte
	cas   uint32
}

func newSharedData() *sharedData {
	return &sharedData{cas: 1, data: map[string]map[string]sharedEntry{}}
}

func (s *sharedData) nextCas() uint32 {
	c := s.cas
	s.cas++
	if s.cas == 0 {
		s.cas++
	}
	return c
}

func (s *sharedData) get(vmID, key string) ([]byte, uint32, uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[vmID][key]
	if !ok {
		return nil, 0, statusNotFound
	}
	return append([]byte(nil), e.value...), e.cas, statusOK
}

// set stores value. cas 0 is unconditional; on an existing key any other cas must match; on a
// key that does not exist yet the cas is ignored (Envoy's rule, unlike the SDK's emulator).
func (s *sharedData) set(vmID, key string, value []byte, cas uint32) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.data[vmID]
	if m == nil {
		m = map[string]sharedEntry{}
		s.data[vmID] = m
	}
	if e, ok := m[key]; ok && cas != 0 && cas != e.cas {
		return statusCasMismatch
	}
	m[key] = sharedEntry{value: append([]byte(nil), value...), cas: s.nextCas()}
	return statusOK
}

func (s *sharedData) size() (bytes, keys int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.data {
		for k, e := range m {
			bytes += len(k) + len(e.value)
			keys++
		}
	}
	return bytes, keys
}

// sharedQueues is src/shared_queue.cc: queues keyed by (vm_id, name), tokens from a global
// counter that skips 0. Registering a name again keeps its data and token but moves the wake-ups
// to the new registrant. An enqueue posts on_queue_ready to the registrant's event loop; it
// never runs inside the enqueue.
type sharedQueues struct {
	mu     sync.Mutex
	next   uint32
	tokens map[[2]string]uint32
	queues map[uint32]*queue
}

type queue struct {
	items     [][]byte
	thread    func() *vm // the registrant's thread's current VM
	owner     *vm        // the registrant
	contextID uint32
}

func newSharedQueues() *sharedQueues {
	return &sharedQueues{next: 1, tokens: map[[2]string]uint32{}, queues: map[uint32]*queue{}}
}

func (q *sharedQueues) register(vmID, name string, v *vm, contextID uint32) uint32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	key := [2]string{vmID, name}
	tok, ok := q.tokens[key]
	if !ok {
		for {
			tok = q.next
			q.next++
			if _, used := q.queues[tok]; tok != 0 && !used {
				break
			}
		}
		q.tokens[key] = tok
		q.queues[tok] = &queue{}
	}
	q.queues[tok].thread, q.queues[tok].owner, q.queues[tok].contextID = v.thread, v, contextID
	return tok
}

// size is what waits in every queue: Envoy holds it in its heap until a dequeue, or until the
// last VM of the vm_id dies (deleteByVmId); a queue whose VM died is never drained by Envoy.
func (q *sharedQueues) size() (items, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.queues {
		items += len(e.items)
		for _, it := range e.items {
			bytes += len(it)
		}
	}
	return items, bytes
}

// dead counts the queues whose registrant is gone (its VM stopped or failed, or its root context
// was replaced by a reconfiguration): nobody will dequeue from them unless another VM does it on
// purpose.
func (q *sharedQueues) dead() (queues, items int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.queues {
		if e.owner == nil {
			continue
		}
		if _, gone := e.owner.removedRoots.Load(e.contextID); gone || e.owner.closed.Load() || e.owner.failed.Load() {
			queues++
			items += len(e.items)
		}
	}
	return queues, items
}

func (q *sharedQueues) resolve(vmID, name string) uint32 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.tokens[[2]string{vmID, name}]
}

func (q *sharedQueues) dequeue(tok uint32) ([]byte, uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.queues[tok]
	if e == nil {
		return nil, statusNotFound
	}
	if len(e.items) == 0 {
		return nil, statusEmpty
	}
	item := e.items[0]
	e.items = e.items[1:]
	return item, statusOK
}

func (q *sharedQueues) enqueue(tok uint32, value []byte) uint32 {
	q.mu.Lock()
	e := q.queues[tok]
	if e == nil {
		q.mu.Unlock()
		return statusNotFound
	}
	e.items = append(e.items, append([]byte(nil), value...))
	thread, ctxID := e.thread, e.contextID
	q.mu.Unlock()
	// call_on_thread: on_queue_ready runs later on the registrant's thread, in whatever VM runs
	// there now (getThreadLocalWasm), on whatever context has the registrant's id.
	if target := thread(); target != nil {
		target.post(func() { target.onQueueReady(ctxID, tok) })
	}
	return statusOK
}

// Metric types of the ABI and Envoy's id scheme (source/extensions/common/wasm/wasm.h): the low
// two bits of an id carry the type, ids step by 4 per VM.
const (
	metricCounter   = 0
	metricGauge     = 1
	metricHistogram = 2
)

type metric struct {
	kind    uint32
	value   int64
	samples []uint64
}

// metrics are process-wide by name, like Envoy's stats scope.
type metrics struct {
	mu     sync.Mutex
	byName map[string]*metric
}

func (m *metrics) define(kind uint32, name string) *metric {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.byName[name]; e != nil {
		return e
	}
	e := &metric{kind: kind}
	m.byName[name] = e
	return e
}

func (m *metrics) names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.byName))
	for n := range m.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
