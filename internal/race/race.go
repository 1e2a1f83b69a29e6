//go:build race

// Package race tells tests whether the binary was built with the race detector, under
// which some work (zstd, large buffers) is many times slower.
package race

// Enabled is true when built with -race.
const Enabled = true
