//go:build race

package main

// Under go test -race, the shipper is built with the race detector too.
func init() { buildFlags = append(buildFlags, "-race") }
