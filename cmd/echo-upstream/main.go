// Command echo-upstream serves the end-to-end tests' echo upstream (e2e/upstream) on its own, for
// the compose stack (envoy-config/compose.yaml): it answers every request with what it received,
// the bearer token's claims decoded (not verified), so that the tests see what Envoy sent.
//
//	echo-upstream [-listen 127.0.0.1:18080]
//	echo-upstream -check http://127.0.0.1:18080/   # exit 0 when it answers (a health check)
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kagenti/token-exchange-filter/e2e/upstream"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "listen address (the upstream cluster of envoy-config/envoy.yaml)")
	check := flag.String("check", "", "instead of serving, GET this URL and exit 0 if it answers 200")
	flag.Parse()
	if *check != "" {
		os.Exit(healthCheck(*check))
	}
	u, err := upstream.Start(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo-upstream:", err)
		os.Exit(1)
	}
	fmt.Println("echo-upstream: serving on", u.URL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	_ = u.Close()
}

func healthCheck(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo-upstream:", err)
		return 1
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "echo-upstream: status", resp.StatusCode)
		return 1
	}
	return 0
}
