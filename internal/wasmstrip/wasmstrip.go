// Package wasmstrip removes exports from a compiled Wasm module. The filter uses it to drop the
// Go SDK's body and trailer callbacks: Envoy enters a module for every request and response
// body chunk (server-sent events stream thousands) only when it exports proxy_on_request_body
// and friends; with the export absent the host continues at once without entering the VM
// (proxy-wasm-cpp-host src/context.cc, ContextBase::onRequestBody: "if
// (!wasm_->on_request_body_) return FilterDataStatus::Continue", and the same for the response
// body and both trailers). The functions stay in the module, unexported.
package wasmstrip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// BodyAndTrailerCallbacks are the exports the filter never needs: it looks at headers only.
var BodyAndTrailerCallbacks = []string{
	"proxy_on_request_body", "proxy_on_response_body",
	"proxy_on_request_trailers", "proxy_on_response_trailers",
}

const exportSection = 7

var magic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// Strip returns mod without the exports named in names (absent names are ignored).
func Strip(mod []byte, names []string) ([]byte, error) {
	if !bytes.HasPrefix(mod, magic) {
		return nil, errors.New("wasmstrip: not a Wasm 1 module")
	}
	drop := map[string]bool{}
	for _, n := range names {
		drop[n] = true
	}
	out := append([]byte(nil), mod[:len(magic)]...)
	p := mod[len(magic):]
	for len(p) > 0 {
		id := p[0]
		size, n := binary.Uvarint(p[1:])
		if n <= 0 || uint64(len(p)-1-n) < size {
			return nil, errors.New("wasmstrip: truncated section")
		}
		body := p[1+n : 1+n+int(size)]
		p = p[1+n+int(size):]
		if id == exportSection {
			var err error
			if body, err = stripExports(body, drop); err != nil {
				return nil, err
			}
		}
		out = append(out, id)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

func stripExports(body []byte, drop map[string]bool) ([]byte, error) {
	count, n := binary.Uvarint(body)
	if n <= 0 {
		return nil, errors.New("wasmstrip: bad export count")
	}
	p := body[n:]
	var kept [][]byte
	for i := uint64(0); i < count; i++ {
		start := p
		l, n := binary.Uvarint(p)
		if n <= 0 || uint64(len(p)-n) < l+1 {
			return nil, fmt.Errorf("wasmstrip: bad export %d", i)
		}
		name := string(p[n : n+int(l)])
		p = p[n+int(l):]
		p = p[1:] // kind
		_, m := binary.Uvarint(p)
		if m <= 0 {
			return nil, fmt.Errorf("wasmstrip: bad export index %d", i)
		}
		p = p[m:]
		if !drop[name] {
			kept = append(kept, start[:len(start)-len(p)])
		}
	}
	if len(p) != 0 {
		return nil, errors.New("wasmstrip: trailing bytes in the export section")
	}
	out := binary.AppendUvarint(nil, uint64(len(kept)))
	for _, e := range kept {
		out = append(out, e...)
	}
	return out, nil
}
