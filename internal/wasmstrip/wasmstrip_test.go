package wasmstrip

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// module builds a Wasm header, a custom section and an export section with names.
func module(names ...string) []byte {
	m := append([]byte(nil), magic...)
	custom := append(binary.AppendUvarint(nil, 4), "note"...)
	m = append(m, 0)
	m = binary.AppendUvarint(m, uint64(len(custom)))
	m = append(m, custom...)
	body := binary.AppendUvarint(nil, uint64(len(names)))
	for _, n := range names {
		body = binary.AppendUvarint(body, uint64(len(n)))
		body = append(body, n...)
		body = append(body, 0)                                // a function
		body = binary.AppendUvarint(body, uint64(len(n)+200)) // an index of its own
	}
	m = append(m, exportSection)
	m = binary.AppendUvarint(m, uint64(len(body)))
	return append(m, body...)
}

func TestStrip(t *testing.T) {
	in := module("proxy_on_request_headers", "proxy_on_request_body", "proxy_on_response_trailers", "proxy_on_tick")
	out, err := Strip(in, BodyAndTrailerCallbacks)
	if err != nil {
		t.Fatal(err)
	}
	if want := module("proxy_on_request_headers", "proxy_on_tick"); !bytes.Equal(out, want) {
		t.Errorf("stripped:\n%x\nwant\n%x", out, want)
	}
	if again, _ := Strip(out, BodyAndTrailerCallbacks); !bytes.Equal(again, out) {
		t.Error("stripping twice changed the module")
	}
	for _, bad := range [][]byte{nil, []byte("not wasm"), in[:len(in)-1]} {
		if _, err := Strip(bad, BodyAndTrailerCallbacks); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
}
