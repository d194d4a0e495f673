package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/fastpath-net/fastpath/internal/statefile"
)

// install copies this executable into the node's CNI bin directory (the
// DaemonSet's init container: `fastpath-cni install /host/opt/cni/bin`).
// The copy is renamed into place, so a runtime executing the plugin during
// an upgrade runs the old file or the new one, never half of one; the
// image needs no shell or cp.
func install(binDir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	if st, err := os.Stat(binDir); err != nil || !st.IsDir() {
		return fmt.Errorf("CNI bin directory %s: not a directory (mount the node's /opt/cni/bin there): %v", binDir, err)
	}
	dst := filepath.Join(binDir, "fastpath-cni")
	if err := statefile.Replace(dst, data, 0o755); err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	fmt.Printf("installed %s (%d bytes)\n", dst, len(data))
	return nil
}
