//go:build linux || darwin || freebsd || dragonfly

package pelichan

import (
	"path/filepath"
	"syscall"
)

// volumeSize returns the size of the filesystem dir is (or would be) on, 0 if unknown.
func volumeSize(dir string) int64 {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(p, &st); err == nil {
			return int64(uint64(st.Blocks) * uint64(st.Bsize))
		}
		if q := filepath.Dir(p); q == p {
			return 0
		}
	}
}
