package cache

// Largest encoded values.
const (
	// MaxSlotValueBytes is the largest slot value: header and EntriesPerSlot maximal entries.
	MaxSlotValueBytes = SlotHeaderBytes + EntriesPerSlot*(EntryHeaderBytes+MaxTokenBytes)
	// MaxServiceValueBytes is the largest service-token record.
	MaxServiceValueBytes = serviceHeaderBytes + MaxTokenBytes
	// MaxServiceLeaseValueBytes is the largest service-account lease value: one marker entry.
	MaxServiceLeaseValueBytes = SlotHeaderBytes + EntryHeaderBytes + MaxMarkerBytes
)

// SharedBytesBound is the most shared data (values plus keys) a Cache with these slots and a
// namespace of namespaceLen bytes can ever hold: every slot full of maximal entries, plus the
// service-token record:
//
//	slots*(MaxSlotValueBytes + namespaceLen + 3) + (digits of 0..slots-1)
//	  + MaxServiceValueBytes + namespaceLen + 3 + MaxServiceLeaseValueBytes + namespaceLen + 3
//	  + MaxWakers*(OwnerIDBytes+8) + namespaceLen + 2 + 17 + namespaceLen + 2 + 8 + namespaceLen + 2
//
// Shared data never deletes a key, so this is also the worst case for the lifetime of the Envoy
// process, per namespace. The host's own per-key overhead is not counted. slots 0 counts as 1,
// as in New.
func SharedBytesBound(slots uint32, namespaceLen int) int {
	if slots == 0 {
		slots = 1
	}
	n := int(slots)
	total := n * (MaxSlotValueBytes + namespaceLen + len(":s:"))
	total += decimalDigitsBelow(n)
	total += MaxServiceValueBytes + namespaceLen + len(":sa")
	total += MaxServiceLeaseValueBytes + namespaceLen + len(":sl")
	total += MaxWakers*wakerBytes + namespaceLen + len(":w")
	total += bucketBytes + namespaceLen + len(":b")
	total += generationBytes + namespaceLen + len(":g")
	return total
}

// decimalDigitsBelow is the total number of decimal digits of 0, 1, ..., n-1.
func decimalDigitsBelow(n int) int {
	total := 0
	for digits, lo, hi := 1, 0, 10; lo < n; digits, lo, hi = digits+1, hi, hi*10 {
		total += digits * (min(n, hi) - lo)
	}
	return total
}
