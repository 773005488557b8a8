package wasmimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types and names used by the two image formats (see README "Istio image formats").
const (
	// MediaTypeWasmContent is the layer holding the raw module in the "oci" variant
	// (solo-io Wasm Artifact Image Specification, the only wasm layer type Istio looks for).
	MediaTypeWasmContent types.MediaType = "application/vnd.module.wasm.content.layer.v1+wasm"
	// MediaTypeWasmConfig is the runtime-config media type of the "oci" variant, used both
	// for the manifest's config and for the second layer.
	MediaTypeWasmConfig types.MediaType = "application/vnd.module.wasm.config.v1+json"
	// MediaTypeCNCFWasmContent is the CNCF/wasm-to-oci layer type. Istio does NOT accept it;
	// it is never produced, only named so tests can assert its absence.
	MediaTypeCNCFWasmContent types.MediaType = "application/vnd.wasm.content.layer.v1+wasm"

	// PluginFileName is the file Istio extracts from the last layer of a "compat" image.
	PluginFileName = "plugin.wasm"
	// RuntimeConfigFileName titles the runtime-config layer of the "oci" variant.
	RuntimeConfigFileName = "runtime-config.json"

	// AnnotationVariant is required by the compat spec on images with OCI layer media types.
	AnnotationVariant = "module.wasm.image/variant"
	// AnnotationTitle names a layer's file (OCI pre-defined annotation).
	AnnotationTitle = "org.opencontainers.image.title"
)

// Format selects one of the two image formats Istio accepts.
type Format string

const (
	// FormatCompat is an ordinary OCI image whose single (hence last) layer is a tar+gzip
	// holding plugin.wasm at its root.
	FormatCompat Format = "compat"
	// FormatOCI is the Wasm artifact: config application/vnd.module.wasm.config.v1+json and
	// exactly two layers, the runtime config and the raw module.
	FormatOCI Format = "oci"
)

// Formats lists every format, in a fixed order.
var Formats = []Format{FormatCompat, FormatOCI}

// epoch is the fixed timestamp of every file and config in the images.
var epoch = time.Unix(0, 0).UTC()

// Build builds the image of the given format for a module. The module is validated first.
func Build(f Format, module []byte) (v1.Image, error) {
	if err := ValidateModule(module); err != nil {
		return nil, err
	}
	switch f {
	case FormatCompat:
		return compatImage(module)
	case FormatOCI:
		return ociImage(module)
	default:
		return nil, fmt.Errorf("unknown image format %q (want %q or %q)", f, FormatCompat, FormatOCI)
	}
}

// CompatLayer returns the reproducible tar+gzip of a single regular file plugin.wasm
// (mode 0644, uid/gid 0, no user/group names, mtime 0, USTAR format), and the uncompressed
// tar itself (whose sha256 is the layer's diff ID).
func CompatLayer(module []byte) (gz []byte, tarball []byte, err error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     PluginFileName,
		Size:     int64(len(module)),
		Mode:     0o644,
		Uid:      0,
		Gid:      0,
		ModTime:  epoch,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, nil, fmt.Errorf("tar header: %w", err)
	}
	if _, err := tw.Write(module); err != nil {
		return nil, nil, fmt.Errorf("tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, nil, fmt.Errorf("tar: %w", err)
	}

	var gb bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gb, gzip.BestCompression)
	if err != nil {
		return nil, nil, err
	}
	// Deterministic gzip header: no name, no comment, mtime 0, OS "unknown" (255).
	zw.Header = gzip.Header{OS: 255}
	if _, err := zw.Write(tb.Bytes()); err != nil {
		return nil, nil, fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, nil, fmt.Errorf("gzip: %w", err)
	}
	return gb.Bytes(), tb.Bytes(), nil
}

// imageConfig is the standard OCI image config of the compat image, with a fixed field order.
type imageConfig struct {
	Created      string        `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Config       struct{}      `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []historyItem `json:"history"`
}

type rootFS struct {
	Type    string    `json:"type"`
	DiffIDs []v1.Hash `json:"diff_ids"`
}

type historyItem struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

func compatImage(module []byte) (v1.Image, error) {
	gz, tarball, err := CompatLayer(module)
	if err != nil {
		return nil, err
	}
	diffID, _, err := v1.SHA256(bytes.NewReader(tarball))
	if err != nil {
		return nil, err
	}
	layer := newBlob(gz, types.OCILayer, tarball, diffID)

	created := epoch.Format(time.RFC3339)
	cfg, err := json.Marshal(imageConfig{
		Created: created,
		// GOOS=wasip1 GOARCH=wasm: the OCI spec takes its os/architecture values from Go.
		Architecture: "wasm",
		OS:           "wasip1",
		RootFS:       rootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}},
		History:      []historyItem{{Created: created, CreatedBy: "wasm-image: COPY " + PluginFileName + " /"}},
	})
	if err != nil {
		return nil, err
	}
	return newImage(newBlob(cfg, types.OCIConfigJSON, nil, v1.Hash{}), []*blob{layer},
		map[string]string{AnnotationVariant: string(FormatCompat)})
}

// RuntimeConfig is the runtime config of the "oci" variant (solo-io Wasm Artifact Image
// Specification). Istio does not read it; empty lists mean "no constraint".
type RuntimeConfig struct {
	Type        string            `json:"type"`
	AbiVersions []string          `json:"abiVersions"`
	Config      RuntimeEnvoyRoots `json:"config"`
}

// RuntimeEnvoyRoots is the Envoy-specific part of RuntimeConfig.
type RuntimeEnvoyRoots struct {
	RootIDs []string `json:"rootIds"`
}

func ociImage(module []byte) (v1.Image, error) {
	cfg, err := json.Marshal(RuntimeConfig{Type: "envoy_proxy", AbiVersions: []string{}, Config: RuntimeEnvoyRoots{RootIDs: []string{}}})
	if err != nil {
		return nil, err
	}
	cfgBlob := newBlob(cfg, MediaTypeWasmConfig, nil, v1.Hash{})
	cfgLayer := newBlob(cfg, MediaTypeWasmConfig, nil, v1.Hash{})
	cfgLayer.annotations = map[string]string{AnnotationTitle: RuntimeConfigFileName}
	wasm := newBlob(module, MediaTypeWasmContent, nil, v1.Hash{})
	wasm.annotations = map[string]string{AnnotationTitle: PluginFileName}
	// Exactly two layers, as Istio requires for this variant; order as in the spec's example.
	return newImage(cfgBlob, []*blob{cfgLayer, wasm}, nil)
}

// blob is an in-memory layer or config. For the compat layer, raw is the tar (uncompressed);
// for everything else the content is stored as is and Uncompressed == Compressed.
type blob struct {
	data        []byte
	mediaType   types.MediaType
	digest      v1.Hash
	raw         []byte
	diffID      v1.Hash
	annotations map[string]string
}

func newBlob(data []byte, mt types.MediaType, raw []byte, diffID v1.Hash) *blob {
	d, _, _ := v1.SHA256(bytes.NewReader(data)) // reading a bytes.Reader cannot fail
	if raw == nil {
		raw, diffID = data, d
	}
	return &blob{data: data, mediaType: mt, digest: d, raw: raw, diffID: diffID}
}

func (b *blob) Digest() (v1.Hash, error)            { return b.digest, nil }
func (b *blob) DiffID() (v1.Hash, error)            { return b.diffID, nil }
func (b *blob) Size() (int64, error)                { return int64(len(b.data)), nil }
func (b *blob) MediaType() (types.MediaType, error) { return b.mediaType, nil }
func (b *blob) Compressed() (io.ReadCloser, error)  { return io.NopCloser(bytes.NewReader(b.data)), nil }
func (b *blob) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b.raw)), nil
}

func (b *blob) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: b.mediaType, Size: int64(len(b.data)), Digest: b.digest, Annotations: b.annotations}
}

var _ v1.Layer = (*blob)(nil)

// image is a fully in-memory image with a fixed manifest.
type image struct {
	manifest []byte
	config   *blob
	blobs    map[v1.Hash]*blob
}

var _ partial.CompressedImageCore = (*image)(nil)

func newImage(config *blob, layers []*blob, annotations map[string]string) (v1.Image, error) {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        config.descriptor(),
		Annotations:   annotations,
	}
	img := &image{config: config, blobs: map[v1.Hash]*blob{config.digest: config}}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.descriptor())
		img.blobs[l.digest] = l
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.manifest = raw
	return partial.CompressedToImage(img)
}

func (i *image) RawConfigFile() ([]byte, error)      { return i.config.data, nil }
func (i *image) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.manifest, nil }

func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if b, ok := i.blobs[h]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("blob %s not found in image", h)
}
