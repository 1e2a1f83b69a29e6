package spool

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// A damaged length prefix claiming a record of ~70 MiB (anything up to maxRecordBytes
// passes as a length) must not make the streaming reader allocate its claim: reads are
// capped at what the file holds (found by review: one Next allocated 74 MB).
func TestStreamHugeLengthPrefixBounded(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 256 << 10, NoSync: true}
	writeSpool(t, dir, opts, batches("big", 8000, 4))
	segs := segNames(t, dir)
	first := len(segRecs(layout(t, dir), segs[0]))
	p := walPath(dir, segs[1])
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var pre [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(pre[:], 70<<20)
	if _, err := f.WriteAt(pre[:n], 0); err != nil { // the first record of segment 2
		t.Fatal(err)
	}
	f.Close()
	size := fileSize(t, p)

	s := mustOpen(t, dir, opts)
	defer s.Close()
	readN(t, s, first) // segment 1, normally
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	r, err := s.Next() // segment 2: streamed from offset 0
	runtime.ReadMemStats(&m1)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_ = r
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("segment file %d bytes; one Next allocated %d bytes (%d segments)", size, alloc, len(segs))
	if alloc > 8<<20 {
		t.Errorf("one Next on a %d-byte segment file allocated %d MiB", size, alloc>>20)
	}
}

// The segment file changes under the streaming reader (truncated mid-record,
// extended with garbage, removed): no panic, no record twice, damage reported.
func TestStreamFileChangesUnderReader(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p string)
	}{
		{"truncate", func(t *testing.T, p string) { os.Truncate(p, fileSize(t, p)/2+3) }},
		{"extend", func(t *testing.T, p string) { appendBytes(t, p, []byte{0x80, 0x80, 0x80, 0x20, 1, 2, 3}) }},
		{"zero", func(t *testing.T, p string) { os.Truncate(p, 0) }},
		{"remove", func(t *testing.T, p string) { os.Remove(p) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var rep corruptions
			opts := Options{SegmentSize: 1 << 20, NoSync: true, OnCorrupt: rep.add}
			bs := batches("chg", 3000, 4) // one segment of ~200 KiB: more than the first chunk
			writeSpool(t, dir, opts, bs)
			segs := segNames(t, dir)
			s := mustOpen(t, dir, opts)
			defer s.Close()
			got := readN(t, s, 2)
			if fileSize(t, walPath(dir, segs[0])) <= firstChunk {
				t.Fatal("segment fits in the first chunk")
			}
			tc.change(t, walPath(dir, segs[0]))
			deadline := time.Now().Add(5 * time.Second)
			seen := map[string]bool{}
			for _, m := range got {
				seen[m] = true
			}
			for time.Now().Before(deadline) {
				more := readN(t, s, 1)
				if len(more) == 0 {
					if s.Empty() {
						break
					}
					continue
				}
				for _, m := range more {
					if seen[m] {
						t.Fatalf("%q delivered twice", m)
					}
					seen[m] = true
				}
			}
			t.Logf("%s: delivered %d of %d, %d reports", tc.name, len(seen), len(flatten(bs)), len(rep.list()))
			if len(seen) < len(flatten(bs)) && len(rep.list()) == 0 {
				t.Errorf("%d messages not delivered and nothing reported", len(flatten(bs))-len(seen))
			}
		})
	}
}

// Hostile version 4 cursor files (positions near 2^63/2^64, huge offsets and
// delivered counts): Open and a full read must neither panic nor hang, and Undelivered
// must never go negative.
func TestHostileCursorV4(t *testing.T) {
	bs := batches("hc", 24, 3)
	base := t.TempDir()
	writeSpool(t, base, testOpts(), bs)
	segs := segNames(t, base)
	seq := segNum(t, segs[1])
	for _, c := range []cursorFile{
		{pos: Cursor{Seg: seq, Index: 1 << 63}, delivered: 5},
		{pos: Cursor{Seg: seq, Index: 1<<63 - 1}, delivered: 0},
		{pos: Cursor{Seg: seq, Index: ^uint64(0), Offset: ^uint32(0)}, delivered: ^uint64(0) - 1},
		{pos: Cursor{Seg: seq, Index: 1, Offset: ^uint32(0)}, delivered: 1 << 62},
		{pos: Cursor{Seg: seq, Index: 0, Offset: ^uint32(0)}, delivered: 0},
		{pos: Cursor{Seg: seq, Index: 10_000}, delivered: 3},
		{pos: Cursor{Seg: ^uint64(0), Index: 1}, delivered: 1},
	} {
		dir := t.TempDir()
		copyDir(t, base, dir)
		if err := os.WriteFile(filepath.Join(dir, cursorName), encodeCursor(c), 0o640); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			s, err := Open(dir, testOpts())
			if err != nil {
				t.Errorf("Open with cursor %+v: %v", c, err)
				return
			}
			if u := s.Stats().Undelivered; u < 0 {
				t.Errorf("cursor %+v: Undelivered %d", c, u)
			}
			var got []string
			for {
				r, err := s.Next()
				if err != nil {
					break
				}
				got = append(got, "x")
				s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1})
			}
			if u := s.Stats().Undelivered; u != 0 {
				t.Errorf("cursor %+v (delivered %d): Undelivered %d after reading %d records", c.pos, c.delivered, u, len(got))
			}
			s.Close()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("cursor %+v: Open/read did not finish in 10s", c)
		}
	}
}
