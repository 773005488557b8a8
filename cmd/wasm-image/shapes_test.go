package main

import (
	"bytes"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/kagenti/token-exchange-filter/cmd/wasm-image/internal/wasmimage"
)

// Negative controls: shapes Istio rejects must be rejected by the test fetcher too (so that
// its acceptance of our images means something), and our images must not have them.
func TestIstioRejectedShapes(t *testing.T) {
	host := newRegistry(t)
	module := fakeModule(500)
	compatGz, compatTar, err := wasmimage.CompatLayer(module)
	if err != nil {
		t.Fatal(err)
	}
	cncf := static.NewLayer(module, wasmimage.MediaTypeCNCFWasmContent)
	solo := static.NewLayer(module, wasmimage.MediaTypeWasmContent)
	cfg := static.NewLayer([]byte(`{}`), wasmimage.MediaTypeWasmConfig)

	mk := func(mt types.MediaType, layers ...v1.Layer) v1.Image {
		img := mutate.MediaType(empty.Image, mt)
		for _, l := range layers {
			var err error
			if img, err = mutate.Append(img, mutate.Addendum{Layer: l}); err != nil {
				t.Fatal(err)
			}
		}
		return img
	}
	cases := map[string]v1.Image{
		"cncf single layer":               mk(types.OCIManifestSchema1, cncf),
		"cncf two layers":                 mk(types.OCIManifestSchema1, cfg, cncf),
		"solo wasm single layer":          mk(types.OCIManifestSchema1, solo),
		"solo wasm three layers":          mk(types.OCIManifestSchema1, cfg, solo, cfg),
		"docker manifest, oci tar layer":  mk(types.DockerManifestSchema2, static.NewLayer(compatGz, types.OCILayer)),
		"oci manifest, docker tar layer":  mk(types.OCIManifestSchema1, static.NewLayer(compatGz, types.DockerLayer)),
		"compat tar layer not last":       mk(types.OCIManifestSchema1, static.NewLayer(compatGz, types.OCILayer), cfg),
		"uncompressed tar (compat)":       mk(types.OCIManifestSchema1, static.NewLayer(compatTar, types.OCIUncompressedLayer)),
		"raw module as tar+gzip (compat)": mk(types.OCIManifestSchema1, static.NewLayer(module, types.OCILayer)),
	}
	for nm, img := range cases {
		ref := host + "/rejected/img:" + sanitizeTag(nm)
		r, err := name.ParseReference(ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img); err != nil {
			t.Fatalf("%s: push: %v", nm, err)
		}
		if b, _, variant, err := istioFetch(ref); err == nil {
			t.Errorf("%s: accepted as %q variant (%d bytes), Istio rejects it", nm, variant, len(b))
		}
	}

	// Positive controls from Istio's own tests: a Docker image and the two-layer artifact
	// in the other layer order are accepted.
	ok := map[string]v1.Image{
		"docker compat":                mk(types.DockerManifestSchema2, static.NewLayer(compatGz, types.DockerLayer)),
		"artifact, wasm layer first":   mk(types.OCIManifestSchema1, solo, cfg),
		"compat after another layer":   mk(types.OCIManifestSchema1, cfg, static.NewLayer(compatGz, types.OCILayer)),
		"artifact, config layer first": mk(types.OCIManifestSchema1, cfg, solo),
	}
	for nm, img := range ok {
		b, variant, err := istioExtract(img)
		if err != nil || !bytes.Equal(b, module) {
			t.Errorf("%s: rejected (%v) or wrong content (variant %q)", nm, err, variant)
		}
	}

	// Our images are not of a rejected shape.
	for _, f := range wasmimage.Formats {
		img, err := wasmimage.Build(f, module)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		for _, l := range m.Layers {
			if l.MediaType == wasmimage.MediaTypeCNCFWasmContent {
				t.Errorf("%s: has a CNCF wasm layer", f)
			}
		}
		switch f {
		case wasmimage.FormatOCI:
			if len(m.Layers) != 2 {
				t.Errorf("oci: %d layers, want exactly 2", len(m.Layers))
			}
		case wasmimage.FormatCompat:
			if last := m.Layers[len(m.Layers)-1]; last.MediaType != types.OCILayer || m.MediaType != types.OCIManifestSchema1 {
				t.Errorf("compat: manifest %s, last layer %s", m.MediaType, last.MediaType)
			}
		}
	}
}

func sanitizeTag(s string) string {
	var b []byte
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b = append(b, c)
		default:
			b = append(b, '-')
		}
	}
	return string(b)
}
