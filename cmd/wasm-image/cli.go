package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kagenti/token-exchange-filter/cmd/wasm-image/internal/wasmimage"
)

const usage = `Usage: wasm-image <command> [flags]

Packages a proxy-wasm module as OCI images for Istio's WasmPlugin (url: oci://...),
in both formats Istio's image fetcher accepts:
  compat  standard OCI image; its single (last) layer is a tar+gzip holding plugin.wasm
  oci     Wasm artifact: config application/vnd.module.wasm.config.v1+json and exactly two
          layers: the runtime config (same media type) and the raw module
          (application/vnd.module.wasm.content.layer.v1+wasm)
Images are reproducible: the same module always gives the same digests.

Commands:
  layout -wasm FILE -out DIR
        write both images as OCI image layouts: DIR/compat and DIR/wasm (oci format);
        a previous layout there is replaced
  push -wasm FILE -image REGISTRY/REPO:TAG [-format compat|oci|both] [-insecure]
        push to a registry (credentials: docker config / credential helpers, as docker
        login and crane do). -format both (default): the compat image gets TAG and the
        oci image gets TAG-oci; compat or oci alone: that image gets TAG.
        -insecure: the registry speaks plain http.
        Prints each digest and the WasmPlugin url: oci://REGISTRY/REPO@sha256:...
  digest -wasm FILE
        print the digests the images would have, writing nothing

Note: for an oci:// url Istio compares the WasmPlugin's sha256 field with the image's
manifest digest, not with the module's sha256 (which is what file:// and https:// urls use).
`

// errUsage marks command-line mistakes (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "layout":
		err = cmdLayout(rest, stdout, stderr)
	case "push":
		err = cmdPush(rest, stdout, stderr)
	case "digest":
		err = cmdDigest(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "wasm-image: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "wasm-image: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "wasm-image: %v\n", err)
		return 1
	}
}

func newFlagSet(cmd string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("wasm-image "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of wasm-image %s:\n", cmd)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; a parse error has already been printed by the flag package.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

type built struct {
	format wasmimage.Format
	img    v1.Image
	digest v1.Hash
}

// buildAll reads and validates the module and builds the requested formats.
func buildAll(path string, formats []wasmimage.Format) ([]byte, []built, error) {
	module, err := wasmimage.ReadModule(path)
	if err != nil {
		return nil, nil, err
	}
	var out []built
	for _, f := range formats {
		img, err := wasmimage.Build(f, module)
		if err != nil {
			return nil, nil, fmt.Errorf("build %s image: %w", f, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, nil, fmt.Errorf("build %s image: %w", f, err)
		}
		out = append(out, built{format: f, img: img, digest: d})
	}
	return module, out, nil
}

func printModule(w io.Writer, path string, module []byte) {
	sum := sha256.Sum256(module)
	fmt.Fprintf(w, "module %s: %d bytes, sha256:%s\n", path, len(module), hex.EncodeToString(sum[:]))
}

func cmdDigest(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("digest", stderr)
	wasm := fs.String("wasm", "build/plugin.wasm", "compiled proxy-wasm module")
	if err := parse(fs, args); err != nil {
		return err
	}
	module, imgs, err := buildAll(*wasm, wasmimage.Formats)
	if err != nil {
		return err
	}
	for _, b := range imgs {
		fmt.Fprintf(stdout, "%s image digest: %s\n", b.format, b.digest)
	}
	printModule(stdout, *wasm, module)
	return nil
}

func cmdLayout(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("layout", stderr)
	wasm := fs.String("wasm", "build/plugin.wasm", "compiled proxy-wasm module")
	out := fs.String("out", "build/oci", "output directory; layouts go to OUT/compat and OUT/wasm")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: layout: -out must not be empty", errUsage)
	}
	module, imgs, err := buildAll(*wasm, wasmimage.Formats)
	if err != nil {
		return err
	}
	for _, b := range imgs {
		dir := filepath.Join(*out, wasmimage.LayoutDir(b.format))
		if err := wasmimage.WriteLayout(dir, b.img); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s image: OCI layout %s, digest %s\n", b.format, dir, b.digest)
	}
	printModule(stdout, *wasm, module)
	return nil
}

// ociSuffix is appended to the tag of the oci-format image when both formats are pushed.
const ociSuffix = "-oci"

func cmdPush(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("push", stderr)
	wasm := fs.String("wasm", "build/plugin.wasm", "compiled proxy-wasm module")
	image := fs.String("image", "", "target REGISTRY/REPO:TAG (required)")
	format := fs.String("format", "both", "compat, oci, or both (compat gets TAG, oci gets TAG"+ociSuffix+")")
	insecure := fs.Bool("insecure", false, "the registry speaks plain http")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *image == "" {
		return fmt.Errorf("%w: push: -image REGISTRY/REPO:TAG is required", errUsage)
	}
	var nameOpts []name.Option
	if *insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	tag, err := name.NewTag(*image, nameOpts...)
	if err != nil {
		return fmt.Errorf("%w: push: -image %q: %v (want REGISTRY/REPO:TAG, not a digest)", errUsage, *image, err)
	}

	targets := map[wasmimage.Format]name.Tag{}
	var formats []wasmimage.Format
	switch *format {
	case string(wasmimage.FormatCompat), string(wasmimage.FormatOCI):
		f := wasmimage.Format(*format)
		formats = []wasmimage.Format{f}
		targets[f] = tag
	case "both":
		formats = wasmimage.Formats
		targets[wasmimage.FormatCompat] = tag
		ociTag, err := name.NewTag(tag.Context().Name()+":"+tag.TagStr()+ociSuffix, nameOpts...)
		if err != nil {
			return fmt.Errorf("%w: push: tag for the oci image: %v", errUsage, err)
		}
		targets[wasmimage.FormatOCI] = ociTag
	default:
		return fmt.Errorf("%w: push: -format %q: want compat, oci or both", errUsage, *format)
	}

	module, imgs, err := buildAll(*wasm, formats)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("wasm-image"),
	}
	for _, b := range imgs {
		t := targets[b.format]
		if err := remote.Write(t, b.img, opts...); err != nil {
			return fmt.Errorf("push %s image to %s: %w", b.format, t, err)
		}
		repo := t.Context().Name()
		fmt.Fprintf(stdout, "%s image pushed to %s\n", b.format, t.Name())
		fmt.Fprintf(stdout, "  digest: %s\n", b.digest)
		fmt.Fprintf(stdout, "  WasmPlugin spec:\n")
		fmt.Fprintf(stdout, "    url: oci://%s@%s\n", repo, b.digest)
		fmt.Fprintf(stdout, "    sha256: %s  # for oci:// Istio checks the image manifest digest\n", b.digest.Hex)
	}
	printModule(stdout, *wasm, module)
	return nil
}
