// Command wasm-strip removes the Go SDK's body and trailer callback exports from a compiled
// filter in place (see internal/wasmstrip): `make build` runs it after go build.
package main

import (
	"fmt"
	"os"

	"github.com/kagenti/token-exchange-filter/internal/wasmstrip"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wasm-strip MODULE.wasm")
		os.Exit(2)
	}
	mod, err := os.ReadFile(os.Args[1])
	if err == nil {
		mod, err = wasmstrip.Strip(mod, wasmstrip.BodyAndTrailerCallbacks)
	}
	if err == nil {
		err = os.WriteFile(os.Args[1], mod, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wasm-strip:", err)
		os.Exit(1)
	}
}
