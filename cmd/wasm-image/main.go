// Command wasm-image packages the compiled proxy-wasm module (build/plugin.wasm) as OCI
// images that Istio's WasmPlugin can pull (url: oci://...), in both formats Istio accepts,
// and writes them as OCI image layouts or pushes them to a registry. Run it without
// arguments for usage.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
