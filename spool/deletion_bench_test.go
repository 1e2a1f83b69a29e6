package spool

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tidwall/wal"
)

// The two ways of deleting a consumed segment that tidwall/wal allows without rewriting
// it whole, measured per deleted segment of 4 MiB (64 entries of 64 KiB). See the package
// doc for the choice.

const (
	benchSegSize = 4 << 20
	benchEntry   = 64 << 10
	benchEntries = benchSegSize / benchEntry
)

// BenchmarkDeleteOneLogPerSegment: each segment is its own wal.Log; a consumed one is
// removed whole.
func BenchmarkDeleteOneLogPerSegment(b *testing.B) {
	data := make([]byte, benchEntry)
	dir := b.TempDir()
	b.SetBytes(benchSegSize)
	b.ReportAllocs()
	var deleteNanos int64
	for i := 0; i < b.N; i++ {
		path := filepath.Join(dir, "seg")
		opts := &wal.Options{NoSync: true, SegmentSize: 1 << 40, NoCopy: true}
		l, err := wal.Open(path, opts)
		if err != nil {
			b.Fatal(err)
		}
		for j := 1; j <= benchEntries; j++ {
			if err := l.Write(uint64(j), data); err != nil {
				b.Fatal(err)
			}
		}
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
		t := nanotime()
		if err := os.RemoveAll(path); err != nil {
			b.Fatal(err)
		}
		deleteNanos += nanotime() - t
	}
	b.ReportMetric(float64(deleteNanos)/float64(b.N), "delete-ns/seg")
	b.ReportMetric(0, "rewritten-B/seg")
}

// BenchmarkDeleteTruncateFront: one wal.Log for the whole spool; a consumed segment is
// dropped with TruncateFront(firstIndexOfNextSegment-1), which rewrites one entry.
func BenchmarkDeleteTruncateFront(b *testing.B) {
	data := make([]byte, benchEntry)
	dir := b.TempDir()
	opts := &wal.Options{NoSync: true, SegmentSize: benchSegSize, NoCopy: true}
	l, err := wal.Open(filepath.Join(dir, "log"), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.SetBytes(benchSegSize)
	b.ReportAllocs()
	next := uint64(1)
	var deleteNanos int64
	for i := 0; i < b.N; i++ {
		// Fill one segment and start the next, so there is a whole segment to drop.
		for j := 0; j < benchEntries+1; j++ {
			if err := l.Write(next, data); err != nil {
				b.Fatal(err)
			}
			next++
		}
		t := nanotime()
		// Everything before the last written entry is consumed.
		if err := l.TruncateFront(next - 2); err != nil {
			b.Fatal(err)
		}
		deleteNanos += nanotime() - t
	}
	b.ReportMetric(float64(deleteNanos)/float64(b.N), "delete-ns/seg")
	b.ReportMetric(benchEntry, "rewritten-B/seg")
}

func nanotime() int64 { return timeNow().UnixNano() }

var timeNow = time.Now
