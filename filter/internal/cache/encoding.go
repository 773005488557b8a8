package cache

import "encoding/binary"

// Value formats. The first byte of every value is its format version; a reader accepts only the
// version it knows, so a value written by another version of the plugin (sharing the vm_id and,
// by mistake, the namespace) is never misread, only overwritten.
const (
	slotVersion    = 2 // slot: version, count, count × (id[16], expiresAtMs int64, storedAtMs int64, len uint16, token)
	serviceVersion = 3 // service token: version, expiresAtMs int64, refreshAtMs int64, obtainedAtMs int64, len uint16, token
)

// serviceHeaderBytes is the size of a service-token record without its token.
const serviceHeaderBytes = 1 + 8 + 8 + 8 + 2

// entry is one decoded slot entry. token aliases the decoded value: decoding allocates nothing.
type entry struct {
	id          [16]byte
	expiresAtMs int64
	storedAtMs  int64 // when the entry was written: an upstream 401 drops only a token in use a while
	token       []byte
}

// decodeSlot decodes a slot value into out. Decoding is strict: a wrong version, a count above
// EntriesPerSlot, truncated data, trailing bytes, a token length of 0 or above MaxTokenBytes, or
// two entries with the same id make the whole value invalid (ok=false), which callers treat as
// an empty slot. Then every valid value has exactly one encoding: appendSlot(decodeSlot(v)) == v.
func decodeSlot(v []byte, out *[EntriesPerSlot]entry) (n int, ok bool) {
	if len(v) < SlotHeaderBytes || v[0] != slotVersion || v[1] > EntriesPerSlot {
		return 0, false
	}
	count := int(v[1])
	p := v[SlotHeaderBytes:]
	for i := 0; i < count; i++ {
		if len(p) < EntryHeaderBytes {
			return 0, false
		}
		e := &out[i]
		copy(e.id[:], p[0:16])
		e.expiresAtMs = int64(binary.BigEndian.Uint64(p[16:24]))
		e.storedAtMs = int64(binary.BigEndian.Uint64(p[24:32]))
		l := int(binary.BigEndian.Uint16(p[32:34]))
		p = p[EntryHeaderBytes:]
		if l == 0 || l > MaxTokenBytes || l > len(p) {
			return 0, false
		}
		e.token = p[:l:l]
		p = p[l:]
		for j := 0; j < i; j++ {
			if out[j].id == e.id {
				return 0, false
			}
		}
	}
	if len(p) != 0 {
		return 0, false
	}
	return count, true
}

// slotSize is the encoded size of a slot holding es.
func slotSize(es []entry) int {
	n := SlotHeaderBytes
	for i := range es {
		n += EntryHeaderBytes + len(es[i].token)
	}
	return n
}

func appendSlotHeader(dst []byte, count int) []byte {
	return append(dst, slotVersion, byte(count))
}

// appendSlot encodes es (at most EntriesPerSlot entries with valid tokens: callers check).
func appendSlot(dst []byte, es []entry) []byte {
	dst = appendSlotHeader(dst, len(es))
	for i := range es {
		dst = appendEntry(dst, es[i].id, es[i].expiresAtMs, es[i].storedAtMs, es[i].token)
	}
	return dst
}

// appendEntry takes the token as string or []byte so that neither needs converting (copying).
func appendEntry[T ~string | ~[]byte](dst []byte, id [16]byte, expiresAtMs, storedAtMs int64, token T) []byte {
	dst = append(dst, id[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expiresAtMs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(storedAtMs))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(token)))
	return append(dst, token...)
}

// serviceRecord is a decoded service-token record; token aliases the decoded value.
type serviceRecord struct {
	expiresAtMs  int64
	refreshAtMs  int64
	obtainedAtMs int64
	token        []byte
}

// decodeService decodes a service-token record, as strictly as decodeSlot.
func decodeService(v []byte) (r serviceRecord, ok bool) {
	if len(v) < serviceHeaderBytes || v[0] != serviceVersion {
		return serviceRecord{}, false
	}
	l := int(binary.BigEndian.Uint16(v[25:27]))
	if l == 0 || l > MaxTokenBytes || len(v) != serviceHeaderBytes+l {
		return serviceRecord{}, false
	}
	return serviceRecord{
		expiresAtMs:  int64(binary.BigEndian.Uint64(v[1:9])),
		refreshAtMs:  int64(binary.BigEndian.Uint64(v[9:17])),
		obtainedAtMs: int64(binary.BigEndian.Uint64(v[17:25])),
		token:        v[serviceHeaderBytes:],
	}, true
}

// appendService encodes a service-token record (token length checked by the caller).
func appendService[T ~string | ~[]byte](dst []byte, expiresAtMs, refreshAtMs, obtainedAtMs int64, token T) []byte {
	dst = append(dst, serviceVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expiresAtMs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(refreshAtMs))
	dst = binary.BigEndian.AppendUint64(dst, uint64(obtainedAtMs))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(token)))
	return append(dst, token...)
}
