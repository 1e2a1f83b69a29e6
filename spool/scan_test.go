package spool

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pelichan/pelichan/segment"
)

// craftedCandidates returns n bytes holding a plausible record header every 26 to 27
// bytes: a uvarint length that fits in the rest of the buffer (up to 2 MiB), then a
// header that ParseHeader accepts, with a wrong CRC. Trying every candidate's CRC costs
// about n/27 times the claimed length.
func craftedCandidates(n int) []byte {
	buf := make([]byte, 0, n)
	for {
		rest := n - len(buf) - 3
		size := min(rest, 1<<21-1)
		if size < segment.HeaderSize+binary.MaxVarintLen64 {
			break
		}
		buf = binary.AppendUvarint(buf, uint64(size))
		var h [segment.HeaderSize]byte
		h[0], h[1], h[2], h[3] = segment.Magic0, segment.Magic1, segment.Version, 0
		binary.LittleEndian.PutUint32(h[4:], 1) // count
		binary.LittleEndian.PutUint32(h[8:], 4) // raw length
		binary.LittleEndian.PutUint32(h[20:], 0xdeadbeef)
		buf = append(buf, h[:]...)
	}
	for len(buf) < n {
		buf = append(buf, 0xee)
	}
	return buf
}

// A newest segment crafted to make resynchronisation expensive (16 MiB, a plausible
// record header every 27 bytes, each claiming up to 2 MiB) opens and reads in bounded
// time: the records before it are delivered, the rest reported as damage and kept.
func TestOpenCraftedSegment(t *testing.T) {
	dir := t.TempDir()
	bs := batches("crafted", 5, 3)
	writeSpool(t, dir, Options{SegmentSize: 1 << 20, NoSync: true}, bs)
	segs := segNames(t, dir)
	if len(segs) != 1 {
		t.Fatalf("segments %v, want one", segs)
	}
	appendBytes(t, walPath(dir, segs[0]), craftedCandidates(16<<20))

	var c corruptions
	opts := Options{SegmentSize: 1 << 20, NoSync: true, OnCorrupt: c.add}
	type opened struct {
		s   *Spool
		err error
		d   time.Duration
	}
	done := make(chan opened, 1)
	go func() {
		start := time.Now()
		s, err := Open(dir, opts)
		done <- opened{s, err, time.Since(start)}
	}()
	var o opened
	select {
	case o = <-done:
	case <-time.After(5 * time.Second): // a hang guard, not a timing assertion
		t.Fatalf("Open of a crafted 16 MiB segment has not returned after 5 s")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	t.Logf("Open of a segment with a crafted 16 MiB tail: %v", o.d)
	s := o.s
	start := time.Now()
	got := drain(t, s)
	t.Logf("reading it: %v", time.Since(start))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, got, flatten(bs))
	reports := c.list()
	checkReported(t, reports, segs[0], 0, -1)
	gaveUp := false
	for _, err := range reports {
		gaveUp = gaveUp || errors.Is(err, errGaveUp)
	}
	if !gaveUp {
		t.Errorf("no report says the search for records stopped: %v", reports)
	}
	// Kept as evidence, not cut as a torn tail.
	if b := brokenFiles(t, dir); len(b) != 0 {
		t.Errorf("crafted bytes cut as a torn tail: %v", b)
	}
	if _, err := os.Stat(walPath(dir, segs[0]+".bad")); err != nil {
		t.Errorf("the crafted segment was not set aside once consumed: %v", err)
	}
}

// The scan of the crafted bytes alone stays within its budget of CRC work.
func TestScanCraftedBounded(t *testing.T) {
	buf := craftedCandidates(16 << 20)
	start := time.Now()
	ents, bad, good := scanFile(buf)
	t.Logf("scanFile of 16 MiB of crafted candidates: %v", time.Since(start))
	if len(ents) != 0 || len(bad) != 1 || good != 0 || !bad[0].gaveUp || bad[0].length != int64(len(buf)) {
		t.Errorf("entries %d, damage %+v, good %d; want one stretch over everything, marked gaveUp", len(ents), bad, good)
	}
	if tornTail(buf, bad, good) {
		t.Errorf("taken for a torn tail")
	}
}

// A segment file larger than a segment can grow is never read whole: Open (or the
// background counting, for a segment in the middle) sets it aside as damage, and the
// other segments are delivered.
func TestOversizedSegmentSetAside(t *testing.T) {
	dir := t.TempDir()
	opts := testOpts()
	bs := batches("big", 40, 3)
	writeSpool(t, dir, opts, bs)
	recs := layout(t, dir)
	segs := segNames(t, dir)
	if len(segs) < 4 {
		t.Fatalf("segments %v, want at least 4", segs)
	}
	limit := opts.withDefaults().maxSegmentFile()
	big := []string{segs[1], segs[len(segs)-1]} // one counted in the background, the newest
	for _, name := range big {
		// Sparse: no disk space, and Open must not read it.
		if err := os.Truncate(walPath(dir, name), limit+1); err != nil {
			t.Fatal(err)
		}
	}
	got, reports := readAll(t, dir, opts)
	checkExactlyOnce(t, got, msgsOf(recs, func(r recInfo) bool { return r.seg != big[0] && r.seg != big[1] }))
	for _, name := range big {
		checkReported(t, reports, name, 0, -1)
		if _, err := os.Stat(filepath.Join(dir, name+".bad")); err != nil {
			t.Errorf("segment %s not set aside: %v", name, err)
		}
	}
	tooLarge := 0
	for _, err := range reports {
		var e *errFileTooLarge
		if errors.As(err, &e) {
			tooLarge++
		}
	}
	if tooLarge != 2 {
		t.Errorf("%d reports of a file too large, want 2: %v", tooLarge, reports)
	}
	// Append never writes a record larger than a writer produces.
	s := mustOpen(t, dir, opts)
	defer s.Close()
	rec := makeRecord(t, "x")
	// Anonymous memory: only the pages touched are ever made (no 80 MiB to clear).
	huge, err := syscall.Mmap(-1, 0, maxRecordBytes+1, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skip(err)
	}
	defer syscall.Munmap(huge)
	copy(huge, rec)
	if _, err := s.Append(huge); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Append of a %d-byte record: %v", len(huge), err)
	}
}
