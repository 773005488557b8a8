// Package wasmimage packages a proxy-wasm module as the two OCI image
// formats that Istio's WasmPlugin image fetcher (istio/istio pkg/wasm/imagefetcher.go)
// accepts, reproducibly: the same module always yields the same digests.
package wasmimage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

var wasmMagic = []byte{0x00, 'a', 's', 'm'}

// wasmVersion is the only WebAssembly binary format version in use (MVP and later).
const wasmVersion = 1

// ErrNotWasm is returned (wrapped) for input that is not a WebAssembly binary module.
var ErrNotWasm = errors.New("not a WebAssembly binary module")

// ValidateModule checks the 8-byte WebAssembly header: the magic "\0asm" followed by
// binary format version 1 (little-endian uint32).
func ValidateModule(b []byte) error {
	if len(b) < 8 {
		return fmt.Errorf("%w: %d bytes, shorter than the 8-byte header", ErrNotWasm, len(b))
	}
	if !bytes.Equal(b[:4], wasmMagic) {
		return fmt.Errorf("%w: first bytes are % x, want 00 61 73 6d (\"\\0asm\")", ErrNotWasm, b[:4])
	}
	if v := binary.LittleEndian.Uint32(b[4:8]); v != wasmVersion {
		return fmt.Errorf("%w: binary format version %d, want %d", ErrNotWasm, v, wasmVersion)
	}
	return nil
}

// ReadModule reads and validates a WebAssembly module file.
func ReadModule(path string) ([]byte, error) {
	if path == "" {
		return nil, errors.New("no wasm module given (-wasm)")
	}
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("wasm module %s does not exist (build it first: make build)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("wasm module: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("wasm module %s is not a regular file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wasm module: %w", err)
	}
	if err := ValidateModule(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
