// Command demo is `make run`: the token-exchange filter working end to end on this machine, on
// embedded defaults. It starts a local OIDC provider (Keycloak's URL layout, realm "demo"), an
// echo upstream that shows the token it received, and a proxy running build/plugin.wasm — a
// real Envoy when one is installed, else the Envoy-faithful host of e2e/host — then walks
// through a self-check and keeps running with copy-paste curl lines until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	o := defaultOptions()
	flag.StringVar(&o.proxyAddr, "proxy", o.proxyAddr, "proxy listen address")
	flag.StringVar(&o.idpAddr, "idp", o.idpAddr, "OIDC provider listen address")
	flag.StringVar(&o.upstreamAddr, "upstream", o.upstreamAddr, "echo upstream listen address")
	flag.IntVar(&o.workers, "workers", o.workers, "worker VMs of the built-in host")
	flag.StringVar(&o.wasm, "wasm", o.wasm, "the compiled filter")
	flag.StringVar(&o.envoyConfig, "envoy-config", o.envoyConfig, "the Envoy bootstrap whose plugin configuration the demo uses")
	flag.StringVar(&o.proxyKind, "with", o.proxyKind, `proxy to run: "auto" (Envoy if installed, else the built-in host), "envoy" or "host"`)
	flag.BoolVar(&o.checkOnly, "check-only", false, "run the self-check and exit")
	flag.Parse()

	// The OIDC library logs every route it registers and every error it answers; the demo prints
	// its own account of what happens instead.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run starts everything, checks it, and waits for ctx unless o.checkOnly.
func run(ctx context.Context, o options, out io.Writer) error {
	d, err := start(ctx, o, out)
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.selfCheck(ctx); err != nil {
		return fmt.Errorf("self-check failed: %w", err)
	}
	if o.checkOnly {
		return nil
	}
	d.printTryIt()
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping…")
	return nil
}
