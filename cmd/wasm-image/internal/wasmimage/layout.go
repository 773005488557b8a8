package wasmimage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// LayoutDir maps a format to its subdirectory of the layout output directory.
func LayoutDir(f Format) string {
	if f == FormatOCI {
		return "wasm"
	}
	return string(f)
}

// RefName is the org.opencontainers.image.ref.name given to the image in index.json, so
// that tools addressing "dir:ref" (skopeo, oras) find it.
const RefName = "latest"

// WriteLayout writes img as an OCI image layout at dir, replacing a previous layout there so
// that writing the same image twice gives identical files. It refuses to delete a
// non-empty directory that is not an OCI image layout.
func WriteLayout(dir string, img v1.Image) error {
	if err := clearLayout(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": RefName,
	})); err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	// go-containerregistry writes layer blobs 0600 (via a temporary file) and the rest 0644
	// (less the umask); make every file world-readable so the layout can be copied by other
	// users/containers (skopeo, oras, a registry sidecar), and the tree is uniform.
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o644)
	})
}

func clearLayout(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("layout output %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		return fmt.Errorf("layout output %s exists, is not empty and is not an OCI image layout: not overwriting it", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove old layout %s: %w", dir, err)
	}
	return nil
}
