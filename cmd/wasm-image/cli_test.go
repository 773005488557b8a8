package main

import (
	"bytes"
	"io"
	"io/fs"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kagenti/token-exchange-filter/cmd/wasm-image/internal/wasmimage"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

// newRegistry starts an in-process registry and isolates the docker credential config.
func newRegistry(t *testing.T) string {
	t.Helper()
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(s.Close)
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

type pushed struct {
	format, image, digest, url, sha256 string
}

var (
	rePushed = regexp.MustCompile(`(?m)^(compat|oci) image pushed to (\S+)\n  digest: (sha256:[0-9a-f]{64})\n  WasmPlugin spec:\n    url: (oci://\S+)\n    sha256: ([0-9a-f]{64})  #`)
	reModule = regexp.MustCompile(`(?m)^module \S+: (\d+) bytes, sha256:([0-9a-f]{64})$`)
)

func parsePushed(t *testing.T, out string) map[string]pushed {
	t.Helper()
	res := map[string]pushed{}
	for _, m := range rePushed.FindAllStringSubmatch(out, -1) {
		res[m[1]] = pushed{format: m[1], image: m[2], digest: m[3], url: m[4], sha256: m[5]}
	}
	return res
}

func TestPushBothFetchLikeIstio(t *testing.T) {
	host := newRegistry(t)
	module := fakeModule(50000)
	wasm := writeFile(t, "plugin.wasm", module)
	img := host + "/kagenti/token-exchange:v1"

	code, out, errOut := runCLI(t, "push", "-wasm", wasm, "-image", img, "-insecure")
	if code != 0 {
		t.Fatalf("push: exit %d, stderr:\n%s", code, errOut)
	}
	t.Logf("push output:\n%s", out)
	got := parsePushed(t, out)
	if len(got) != 2 {
		t.Fatalf("want 2 pushed images in output, got %v:\n%s", got, out)
	}
	if got["compat"].image != img || got["oci"].image != img+"-oci" {
		t.Fatalf("tags: compat %q oci %q; want %q and %q", got["compat"].image, got["oci"].image, img, img+"-oci")
	}
	if got["compat"].digest == got["oci"].digest {
		t.Fatal("both formats have the same digest")
	}
	mm := reModule.FindStringSubmatch(out)
	if mm == nil || mm[2] != sha256Hex(module) {
		t.Fatalf("module sha256 line missing or wrong:\n%s", out)
	}

	for _, p := range got {
		wantVariant := map[string]string{"compat": variantCompat, "oci": variantOCI}[p.format]
		// Fetch by tag and by the printed WasmPlugin url, as istio-agent does (it strips oci://).
		for _, ref := range []string{p.image, strings.TrimPrefix(p.url, "oci://")} {
			b, dHex, variant, err := istioFetch(ref)
			if err != nil {
				t.Fatalf("%s: Istio-style fetch of %s: %v", p.format, ref, err)
			}
			if !bytes.Equal(b, module) {
				t.Fatalf("%s: module fetched from %s differs from input (%d vs %d bytes)", p.format, ref, len(b), len(module))
			}
			if variant != wantVariant {
				t.Fatalf("%s: Istio would read %s as the %q variant, want %q", p.format, ref, variant, wantVariant)
			}
			// For oci:// urls Istio compares spec.sha256 with the manifest digest.
			if dHex != p.sha256 || "sha256:"+dHex != p.digest {
				t.Fatalf("%s: registry digest %s, printed digest %s / sha256 %s", p.format, dHex, p.digest, p.sha256)
			}
		}
		if want := "oci://" + host + "/kagenti/token-exchange@" + p.digest; p.url != want {
			t.Fatalf("url %q, want %q", p.url, want)
		}
	}

	// Pushing the same module again yields the same digests (and the same url lines).
	code, out2, errOut := runCLI(t, "push", "-wasm", wasm, "-image", host+"/other/repo:v2", "-insecure")
	if code != 0 {
		t.Fatalf("second push: exit %d: %s", code, errOut)
	}
	got2 := parsePushed(t, out2)
	for f, p := range got {
		if got2[f].digest != p.digest {
			t.Fatalf("%s: second push digest %s, first %s", f, got2[f].digest, p.digest)
		}
	}
}

func TestPushSingleFormat(t *testing.T) {
	host := newRegistry(t)
	module := fakeModule(3000)
	wasm := writeFile(t, "plugin.wasm", module)
	for _, f := range []string{"compat", "oci"} {
		t.Run(f, func(t *testing.T) {
			ref := host + "/single/" + f + ":1.0"
			code, out, errOut := runCLI(t, "push", "-wasm", wasm, "-image", ref, "-format", f)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			got := parsePushed(t, out)
			if len(got) != 1 || got[f].image != ref {
				t.Fatalf("want only %s pushed to %s, got %v", f, ref, got)
			}
			b, _, variant, err := istioFetch(ref)
			if err != nil || !bytes.Equal(b, module) || variant != f {
				t.Fatalf("fetch %s: variant %q err %v equal %v", ref, variant, err, bytes.Equal(b, module))
			}
			if _, _, _, err := istioFetch(ref + "-oci"); err == nil {
				t.Fatalf("%s-oci exists but only -format %s was pushed", ref, f)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	module := fakeModule(20000)
	wasm := writeFile(t, "plugin.wasm", module)
	out1 := filepath.Join(t.TempDir(), "oci")
	out2 := filepath.Join(t.TempDir(), "oci")

	code, stdout, errOut := runCLI(t, "layout", "-wasm", wasm, "-out", out1)
	if code != 0 {
		t.Fatalf("layout: exit %d: %s", code, errOut)
	}
	t.Logf("layout output:\n%s", stdout)
	first := readTree(t, out1)

	// Written again into the same directory: identical files (the old layout is replaced,
	// not appended to).
	if code, _, errOut := runCLI(t, "layout", "-wasm", wasm, "-out", out1); code != 0 {
		t.Fatalf("layout again: exit %d: %s", code, errOut)
	}
	if again := readTree(t, out1); !equalTrees(first, again) {
		t.Fatalf("layout written twice differs:\n%v\n%v", keys(first), keys(again))
	}
	// And into another directory: identical files.
	if code, _, errOut := runCLI(t, "layout", "-wasm", wasm, "-out", out2); code != 0 {
		t.Fatalf("layout other dir: exit %d: %s", code, errOut)
	}
	if other := readTree(t, out2); !equalTrees(first, other) {
		t.Fatal("layouts of the same module in two directories differ")
	}

	for _, c := range []struct{ dir, variant string }{{"compat", variantCompat}, {"wasm", variantOCI}} {
		ii, err := layout.ImageIndexFromPath(filepath.Join(out1, c.dir))
		if err != nil {
			t.Fatalf("%s: ImageIndexFromPath: %v", c.dir, err)
		}
		im, err := ii.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 {
			t.Fatalf("%s: index.json has %d manifests, want 1", c.dir, len(im.Manifests))
		}
		d := im.Manifests[0]
		if d.MediaType != types.OCIManifestSchema1 || d.Annotations["org.opencontainers.image.ref.name"] != wasmimage.RefName {
			t.Fatalf("%s: index descriptor %+v", c.dir, d)
		}
		if !strings.Contains(stdout, "OCI layout "+filepath.Join(out1, c.dir)+", digest "+d.Digest.String()) {
			t.Fatalf("%s: digest %s not printed:\n%s", c.dir, d.Digest, stdout)
		}
		img, err := ii.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		b, variant, err := istioExtract(img)
		if err != nil || variant != c.variant || !bytes.Equal(b, module) {
			t.Fatalf("%s: Istio-style extraction: variant %q err %v equal %v", c.dir, variant, err, bytes.Equal(b, module))
		}
	}
}

func TestLayoutRefusesToClobber(t *testing.T) {
	wasm := writeFile(t, "plugin.wasm", fakeModule(100))
	out := t.TempDir()
	keep := filepath.Join(out, "compat", "precious.txt")
	if err := os.MkdirAll(filepath.Dir(keep), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "layout", "-wasm", wasm, "-out", out)
	if code != 1 || !strings.Contains(errOut, "not an OCI image layout") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("non-layout file was removed: %v", err)
	}
}

func TestDigestCommandIsDeterministic(t *testing.T) {
	wasm := writeFile(t, "plugin.wasm", fakeModule(10000))
	_, a, _ := runCLI(t, "digest", "-wasm", wasm)
	code, b, errOut := runCLI(t, "digest", "-wasm", wasm)
	if code != 0 || a != b || !strings.Contains(a, "compat image digest: sha256:") || !strings.Contains(a, "oci image digest: sha256:") {
		t.Fatalf("exit %d (%s):\n%s\n%s", code, errOut, a, b)
	}
	// A different module gives different digests.
	_, c, _ := runCLI(t, "digest", "-wasm", writeFile(t, "other.wasm", fakeModule(10001)))
	if c == a {
		t.Fatal("different modules gave identical digests")
	}
}

func TestRejectsBadModules(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.wasm")
	cases := []struct {
		name, path, want string
	}{
		{"missing", missing, "does not exist"},
		{"directory", dir, "not a regular file"},
		{"empty", writeFile(t, "empty.wasm", nil), "not a WebAssembly binary module"},
		{"text", writeFile(t, "text.wasm", []byte("#!/bin/sh\necho not wasm\n")), "not a WebAssembly binary module"},
		{"elf", writeFile(t, "elf.wasm", []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00")), "want 00 61 73 6d"},
		{"short", writeFile(t, "short.wasm", []byte("\x00asm\x01")), "shorter than the 8-byte header"},
		{"version2", writeFile(t, "v2.wasm", []byte("\x00asm\x02\x00\x00\x00")), "binary format version 2, want 1"},
		{"component", writeFile(t, "component.wasm", []byte("\x00asm\x0d\x00\x01\x00")), "binary format version 65549, want 1"},
	}
	host := newRegistry(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, args := range [][]string{
				{"layout", "-wasm", c.path, "-out", filepath.Join(t.TempDir(), "oci")},
				{"push", "-wasm", c.path, "-image", host + "/bad/" + strings.ToLower(c.name) + ":v1"},
				{"digest", "-wasm", c.path},
			} {
				code, out, errOut := runCLI(t, args...)
				if code != 1 || !strings.Contains(errOut, c.want) {
					t.Fatalf("%s: exit %d, stderr %q, want exit 1 and %q", args[0], code, errOut, c.want)
				}
				if out != "" {
					t.Fatalf("%s: unexpected stdout %q", args[0], out)
				}
			}
			if _, _, _, err := istioFetch(host + "/bad/" + strings.ToLower(c.name) + ":v1"); err == nil {
				t.Fatal("an image was pushed for a bad module")
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	wasm := writeFile(t, "plugin.wasm", fakeModule(10))
	cases := []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "Usage: wasm-image"},
		{[]string{"help"}, 0, "Usage: wasm-image"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"push", "-wasm", wasm}, 2, "-image REGISTRY/REPO:TAG is required"},
		{[]string{"push", "-wasm", wasm, "-image", "localhost:5000/r:t", "-format", "zip"}, 2, `-format "zip"`},
		{[]string{"push", "-wasm", wasm, "-image", "localhost:5000/r@sha256:" + strings.Repeat("a", 64)}, 2, "not a digest"},
		{[]string{"push", "-wasm", wasm, "-image", "UPPER/Case:t"}, 2, "-image"},
		{[]string{"layout", "-wasm", wasm, "-out", ""}, 2, "-out must not be empty"},
		{[]string{"layout", "-nope"}, 2, "flag provided but not defined"},
		{[]string{"layout", "-wasm", wasm, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"push", "-h"}, 0, "-insecure"},
	}
	for _, c := range cases {
		code, out, errOut := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%q: exit %d (want %d), output %q, want %q", c.args, code, c.code, out+errOut, c.want)
		}
	}
}

func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			files[rel+"/"] = info.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files[rel] = info.Mode().String() + " " + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
