package coord

// Removing the user-token header, and telling whether it came once.
//
// BEHAVIOUR.md 14: a user-token header that appears more than once counts as an invalid token,
// and every copy is removed. The slow path counts the values (RequestHeaders.Count reads every
// header); a memo hit must not, so it learns the count from what the removal took out of the
// header map's byte size. Envoy's proxy_get_header_map_size answers HeaderMap::byteSize(), the
// sum of every name's and value's length (source/extensions/common/wasm/context.cc,
// getHeaderMapSize; source/common/http/header_map_impl.cc, addSize/subtractSize), and its
// proxy_get_header_map_value answers the first value (entry[0]). So when the removal takes
// exactly len(name)+len(first value), the header came once — provided the host's remove takes
// every value, as Envoy's does (removeHeaderMapValue → HeaderMap::remove). A host whose remove
// takes one value at a time (the SDK's emulator) leaves a second one behind, which a read after
// the removal finds (RequestHeaders.RemoveTakesAll says which kind of host it is).

// removeOnceSent removes the user-token header of a memo hit whose first value is first, and
// reports whether the request carried it exactly once. With removal switched off the header
// stays, and the values are counted.
func (req *Request) removeOnceSent(hdr RequestHeaders, name, first string, remove bool) bool {
	if !remove {
		return hdr.Count(name) == 1
	}
	before, sized := hdr.Size()
	if !sized {
		several := hdr.Count(name) > 1
		req.removeAll(hdr, name)
		return !several
	}
	hdr.Remove(name)
	after, _ := hdr.Size()
	once := before-after == len(name)+len(first)
	if !hdr.RemoveTakesAll() {
		if _, still := hdr.Get(name); still {
			once = false
			req.removeAll(hdr, name)
		}
	}
	return once
}

// removeAll removes every value of name, on any host: Envoy's remove takes them all at once, a
// host that takes one at a time is covered by removing until none is left, a bounded few times.
func (req *Request) removeAll(hdr RequestHeaders, name string) {
	for range maxHeaderRemovals {
		hdr.Remove(name)
		if _, still := hdr.Get(name); !still {
			return
		}
	}
}
