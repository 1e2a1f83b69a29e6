//go:build !(linux || darwin || freebsd || dragonfly)

package pelichan

// volumeSize returns 0 (unknown) where statfs's fields differ: the default segment size
// then depends on WithMaxDiskBytes alone.
func volumeSize(string) int64 { return 0 }
