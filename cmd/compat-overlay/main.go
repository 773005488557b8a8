// Command compat-overlay writes the runtime patch of internal/compat for the Go toolchain that
// runs it (go env GOROOT) into a directory, and prints the overlay file's path: make build passes
// it to go build -overlay.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/kagenti/token-exchange-filter/internal/compat"
)

func main() {
	out := flag.String("out", "build/compat", "directory for the patched files and overlay.json")
	flag.Parse()
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err == nil {
		var path string
		if path, err = compat.Overlay(strings.TrimSpace(string(goroot)), *out); err == nil {
			fmt.Println(path)
			return
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
