package main

// A test-only re-implementation of the extraction rules of Istio's Wasm image fetcher
// (istio/istio pkg/wasm/imagefetcher.go, PrepareFetch and the extract* functions), used to
// check that our images are pulled and unpacked exactly as istio-agent would.
//
//   - Docker manifest (application/vnd.docker.distribution.manifest.v2+json): the LAST layer
//     must be application/vnd.docker.image.rootfs.diff.tar.gzip; gunzip+untar, take the
//     first entry whose base name is plugin.wasm.
//   - otherwise, "compat" variant first: the LAST layer must be
//     application/vnd.oci.image.layer.v1.tar+gzip; same extraction;
//   - then the "oci" variant: exactly 2 layers, one of media type
//     application/vnd.module.wasm.content.layer.v1+wasm, whose blob is the raw module
//     (read with Compressed(), not Uncompressed()).
//
// Istio then only checks that the result starts with "\0asm" and has at least 8 bytes.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	istioWasmLayerMediaType = "application/vnd.module.wasm.content.layer.v1+wasm"
	variantDocker           = "docker"
	variantCompat           = "compat"
	variantOCI              = "oci"
)

// istioFetch pulls ref like PrepareFetch (anonymous auth) and extracts the module. It
// returns the module, the manifest digest hex (what Istio compares with spec.sha256) and
// the variant that matched.
func istioFetch(ref string) (module []byte, digestHex, variant string, err error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, "", "", err
	}
	desc, err := remote.Get(r, remote.WithAuth(authn.Anonymous))
	if err != nil {
		return nil, "", "", fmt.Errorf("could not fetch manifest: %w", err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, "", "", fmt.Errorf("could not fetch image: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return nil, "", "", err
	}
	module, variant, err = istioExtract(img)
	return module, d.Hex, variant, err
}

// istioExtract applies the binaryFetcher logic of PrepareFetch to an image.
func istioExtract(img v1.Image) ([]byte, string, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, "", fmt.Errorf("could not retrieve manifest: %w", err)
	}
	var b []byte
	var variant string
	if m.MediaType == types.DockerManifestSchema2 {
		b, err = istioExtractLastTarGz(img, types.DockerLayer)
		variant = variantDocker
	} else {
		var errCompat, errOCI error
		b, errCompat = istioExtractLastTarGz(img, types.OCILayer)
		variant = variantCompat
		if errCompat != nil {
			b, errOCI = istioExtractArtifact(img)
			variant = variantOCI
			if errOCI != nil {
				err = fmt.Errorf("invalid format: compat variant: %v; oci variant: %v", errCompat, errOCI)
			}
		}
	}
	if err != nil {
		return nil, "", err
	}
	if len(b) < 8 || !bytes.Equal(b[:4], []byte("\x00asm")) {
		return nil, "", errors.New("fetched Wasm binary is invalid")
	}
	return b, variant, nil
}

func istioExtractLastTarGz(img v1.Image, want types.MediaType) ([]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) == 0 {
		return nil, errors.New("number of layers must be greater than zero")
	}
	last := layers[len(layers)-1]
	mt, err := last.MediaType()
	if err != nil {
		return nil, err
	}
	if mt != want {
		return nil, fmt.Errorf("invalid media type %s (expect %s)", mt, want)
	}
	rc, err := last.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		return nil, fmt.Errorf("failed to parse layer as tar.gz: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("plugin.wasm not found in the archive")
		}
		if err != nil {
			return nil, err
		}
		if filepath.Base(h.Name) == "plugin.wasm" {
			b := make([]byte, h.Size)
			if _, err := io.ReadFull(tr, b); err != nil {
				return nil, err
			}
			return b, nil
		}
	}
}

func istioExtractArtifact(img v1.Image) ([]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != 2 {
		return nil, fmt.Errorf("number of layers must be 2 but got %d", len(layers))
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		if mt != istioWasmLayerMediaType {
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	return nil, fmt.Errorf("could not find the layer of type %s", istioWasmLayerMediaType)
}
