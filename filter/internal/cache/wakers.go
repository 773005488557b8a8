package cache

import (
	"encoding/binary"
	"errors"
)

// The waker list: the VMs of this plugin that want to be told when a token or failure lands in
// shared data, so that requests waiting on another worker's exchange resume at once rather than
// at their next tick. One key per namespace, holding at most MaxWakers records of an owner id
// (OwnerIDBytes) and the time that VM last said it was alive (8 bytes, big-endian Unix ms).
//
// Why the heartbeat: in Envoy a shared queue outlives the VM that registered it
// (proxy-wasm-cpp-host src/shared_queue.cc: queues are erased only by deleteByVmId, when the
// last VM of the vm_id dies, and enqueue appends to any queue it finds). A VM that died — the
// canary, a VM of an earlier configuration — would collect one item per finished exchange in
// Envoy's heap, forever. So a VM joins only once it really serves (its first tick), renews its
// record every WakerHeartbeatMs, and a record older than WakerStaleMs is dropped by whoever
// renews next; that VM also drains the dead VM's queue (dequeue works on any queue token).
const (
	MaxWakers    = 64
	OwnerIDBytes = 16
	wakerBytes   = OwnerIDBytes + 8

	// WakerHeartbeatMs is how often a live VM renews its record.
	WakerHeartbeatMs = 1_000
	// WakerStaleMs is how long after its last renewal a record counts as a dead VM's.
	WakerStaleMs = 5_000
)

var errBadOwner = errors.New("cache: owner id must be OwnerIDBytes long")

// RegisterWaker adds owner to the waker list as alive at time 0 (tests and tools; VMs use
// Heartbeat).
func (c *Cache) RegisterWaker(owner string) error {
	_, err := c.Heartbeat(owner, 0, nil)
	return err
}

// Heartbeat records owner as alive at nowMs (joining the list if needed) and removes the
// records that went stale, appending their owners to dead so that the caller can drain their
// queues. A full list drops its least recently renewed record.
func (c *Cache) Heartbeat(owner string, nowMs int64, dead []string) ([]string, error) {
	return c.updateWakers(owner, nowMs, dead, false)
}

// LeaveWakers removes owner's record (a VM whose plugin is being torn down), pruning stale
// records on the way like Heartbeat; it appends their owners to dead.
func (c *Cache) LeaveWakers(owner string, nowMs int64, dead []string) ([]string, error) {
	return c.updateWakers(owner, nowMs, dead, true)
}

func (c *Cache) updateWakers(owner string, nowMs int64, dead []string, leave bool) ([]string, error) {
	if len(owner) != OwnerIDBytes {
		return dead, errBadOwner
	}
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		cur, cas, err := c.store.Get(c.wKey)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return dead, err
		}
		if !validWakers(cur) {
			cur = nil
		}
		next := make([]byte, 0, len(cur)+wakerBytes)
		removed := dead
		oldest, oldestAt, renewed := -1, int64(0), false
		for i := 0; i+wakerBytes <= len(cur); i += wakerBytes {
			rec := cur[i : i+wakerBytes]
			id := string(rec[:OwnerIDBytes])
			if id == owner { // renewed in place: the list keeps its order
				if !leave {
					next = binary.BigEndian.AppendUint64(append(next, owner...), uint64(nowMs))
				}
				renewed = true
				continue
			}
			at := int64(binary.BigEndian.Uint64(rec[OwnerIDBytes:]))
			if !wakerLive(at, nowMs) {
				removed = append(removed, id)
				continue
			}
			if oldest < 0 || at < oldestAt {
				oldest, oldestAt = len(next), at
			}
			next = append(next, rec...)
		}
		if !renewed && !leave {
			if len(next) >= MaxWakers*wakerBytes && oldest >= 0 {
				removed = append(removed, string(next[oldest:oldest+OwnerIDBytes]))
				next = append(next[:oldest], next[oldest+wakerBytes:]...)
			}
			next = append(next, owner...)
			next = binary.BigEndian.AppendUint64(next, uint64(nowMs))
		}
		if !found {
			cas = createCas
		}
		err = c.store.Set(c.wKey, next, cas)
		if err == nil {
			return removed, nil
		}
		if !errors.Is(err, ErrCasMismatch) {
			return dead, err
		}
	}
	return dead, ErrContended
}

// Wakers appends to dst the owner ids in the waker list whose VMs were alive lately.
func (c *Cache) Wakers(dst []string, nowMs int64) []string {
	v, _, err := c.store.Get(c.wKey)
	if err != nil || !validWakers(v) {
		return dst
	}
	for i := 0; i+wakerBytes <= len(v); i += wakerBytes {
		if wakerLive(int64(binary.BigEndian.Uint64(v[i+OwnerIDBytes:])), nowMs) {
			dst = append(dst, string(v[i:i+OwnerIDBytes]))
		}
	}
	return dst
}

// wakerLive: renewed within WakerStaleMs. A renewal far in the future was not written by a
// clock like ours (or the clock stepped back a lot): it counts as stale, so nothing in shared
// data can keep a record alive for good; a live VM renews within a second anyway.
func wakerLive(atMs, nowMs int64) bool {
	return nowMs-atMs < WakerStaleMs && atMs-nowMs < WakerStaleMs
}

func validWakers(v []byte) bool {
	return len(v)%wakerBytes == 0 && len(v) <= MaxWakers*wakerBytes
}
