package wasmimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// module is a minimal valid WebAssembly module (header + one custom section "t" with 3 bytes).
var module = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00, 0x00, 0x05, 0x01, 't', 1, 2, 3}

func build(t *testing.T, f Format, m []byte) v1.Image {
	t.Helper()
	img, err := Build(f, m)
	if err != nil {
		t.Fatalf("Build(%s): %v", f, err)
	}
	return img
}

func compressed(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValidateModule(t *testing.T) {
	if err := ValidateModule(module); err != nil {
		t.Fatalf("valid module rejected: %v", err)
	}
	for _, bad := range [][]byte{nil, []byte("\x00asm"), []byte("\x00ASM\x01\x00\x00\x00"), []byte("\x00asm\x00\x00\x00\x00"), []byte("\x00asm\x0d\x00\x01\x00")} {
		if err := ValidateModule(bad); !errors.Is(err, ErrNotWasm) {
			t.Errorf("ValidateModule(%q) = %v, want ErrNotWasm", bad, err)
		}
		if _, err := Build(FormatCompat, bad); !errors.Is(err, ErrNotWasm) {
			t.Errorf("Build(%q) = %v, want ErrNotWasm", bad, err)
		}
	}
	if _, err := Build("docker", module); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestCompatImage(t *testing.T) {
	img := build(t, FormatCompat, module)
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate.Image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Fatalf("manifest %+v", m)
	}
	if m.Annotations[AnnotationVariant] != "compat" {
		t.Fatalf("annotations %v", m.Annotations)
	}
	// Istio takes the LAST layer; it must be OCI tar+gzip (the manifest is OCI, so a Docker
	// layer type would be rejected).
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("layers %+v", m.Layers)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config is not a standard image config: %v", err)
	}
	if cf.OS != "wasip1" || cf.Architecture != "wasm" || !cf.Created.Time.Equal(time.Unix(0, 0)) || cf.RootFS.Type != "layers" || len(cf.History) != 1 {
		t.Fatalf("config %+v", cf)
	}

	layers, _ := img.Layers()
	gz := compressed(t, layers[0])
	// gzip header: magic, CM=8, FLG=0 (no name/comment/extra), MTIME=0, XFL, OS=255.
	if !bytes.Equal(gz[:8], []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0}) || gz[9] != 255 {
		t.Fatalf("gzip header % x", gz[:10])
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || zr.Comment != "" || !zr.ModTime.IsZero() || zr.OS != 255 {
		t.Fatalf("gzip header %+v", zr.Header)
	}
	tarball, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if d, _, _ := v1.SHA256(bytes.NewReader(tarball)); cf.RootFS.DiffIDs[0] != d {
		t.Fatalf("diff_id %s, sha256 of the tar %s", cf.RootFS.DiffIDs[0], d)
	}
	tr := tar.NewReader(bytes.NewReader(tarball))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h.Name != PluginFileName || h.Typeflag != tar.TypeReg || h.Mode != 0o644 || h.Uid != 0 || h.Gid != 0 ||
		h.Uname != "" || h.Gname != "" || h.ModTime.Unix() != 0 || h.Format != tar.FormatUSTAR || len(h.PAXRecords) != 0 {
		t.Fatalf("tar header %+v", h)
	}
	if b, _ := io.ReadAll(tr); !bytes.Equal(b, module) {
		t.Fatal("plugin.wasm content differs")
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("more than one tar entry: %v", err)
	}
}

func TestOCIImage(t *testing.T) {
	img := build(t, FormatOCI, module)
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatalf("validate.Image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != MediaTypeWasmConfig {
		t.Fatalf("manifest %+v", m)
	}
	// Exactly two layers (Istio rejects any other count for this variant): the runtime
	// config and the raw module with the solo-io media type, never the CNCF one.
	if len(m.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(m.Layers))
	}
	if m.Layers[0].MediaType != MediaTypeWasmConfig || m.Layers[0].Digest != m.Config.Digest {
		t.Fatalf("layer 0 %+v", m.Layers[0])
	}
	if m.Layers[1].MediaType != MediaTypeWasmContent || m.Layers[1].Annotations[AnnotationTitle] != PluginFileName {
		t.Fatalf("layer 1 %+v", m.Layers[1])
	}
	raw, _ := img.RawManifest()
	if bytes.Contains(raw, []byte(MediaTypeCNCFWasmContent)) || bytes.Contains(raw, []byte("application/vnd.wasm.config")) {
		t.Fatalf("manifest mentions a CNCF wasm media type: %s", raw)
	}
	layers, _ := img.Layers()
	if b := compressed(t, layers[1]); !bytes.Equal(b, module) {
		t.Fatal("wasm layer is not the raw module")
	}
	cfg, _ := img.RawConfigFile()
	var rc RuntimeConfig
	if err := json.Unmarshal(cfg, &rc); err != nil || rc.Type != "envoy_proxy" {
		t.Fatalf("runtime config %s: %v", cfg, err)
	}
	if b := compressed(t, layers[0]); !bytes.Equal(b, cfg) {
		t.Fatal("config layer differs from the config blob")
	}
}

// Golden digests for the fixed test module: a change means the images of every module
// changed too (format change, or a toolchain/library change that breaks reproducibility).
func TestGoldenDigests(t *testing.T) {
	want := map[Format]string{
		FormatCompat: "sha256:a1e54c2a233acf22cfa0cc1e5996f687b81c14fd885a0fb0565bd75d6d9bf958",
		FormatOCI:    "sha256:4848fb65ec35630adaea92edf76b2aa9621a785744c22c3fc14e5b401f4c05d1",
	}
	for _, f := range Formats {
		a, b := build(t, f, module), build(t, f, append([]byte(nil), module...))
		da, _ := a.Digest()
		db, _ := b.Digest()
		if da != db {
			t.Fatalf("%s: two builds differ: %s %s", f, da, db)
		}
		ma, _ := a.RawManifest()
		mb, _ := b.RawManifest()
		ca, _ := a.RawConfigFile()
		cb, _ := b.RawConfigFile()
		if !bytes.Equal(ma, mb) || !bytes.Equal(ca, cb) {
			t.Fatalf("%s: two builds differ", f)
		}
		if da.String() != want[f] {
			t.Errorf("%s digest %s, golden %s\nmanifest %s\nconfig %s", f, da, want[f], ma, ca)
		}
	}
}

func TestWriteLayoutReplacesOnlyLayouts(t *testing.T) {
	img := build(t, FormatOCI, module)
	dir := filepath.Join(t.TempDir(), "wasm")
	for i := 0; i < 2; i++ {
		if err := WriteLayout(dir, img); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil || strings.Count(string(idx), `"digest"`) != 1 {
		t.Fatalf("index.json after two writes: %s %v", idx, err)
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
				t.Errorf("%s mode %v, want 0644", p, st.Mode())
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(other, img); err == nil {
		t.Fatal("overwrote a non-layout directory")
	}
}
