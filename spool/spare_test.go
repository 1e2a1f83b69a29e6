package spool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// waitSpare waits (at most 10 s) for s's spare to be made and returns it.
func waitSpare(t *testing.T, s *Spool) *spare {
	t.Helper()
	p := s.spare
	if p == nil {
		t.Fatal("no spare")
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the spare was not made within 10 s")
	}
	if p.err != nil {
		t.Fatalf("making the spare: %v", p.err)
	}
	return p
}

// The next segment is made ahead, with its names fsynced, and the next rotation writes
// into it; Close removes the last one, which never held a record. With NoSync there is
// none (making a segment costs no fsync).
func TestSpareMadeAheadAndUsed(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	bs := batches("spare", 24, 3)
	appendAll(t, s, bs[:1])
	first := s.active.seq
	p := waitSpare(t, s)
	if p.seq != first+1 {
		t.Fatalf("spare %d after segment %d", p.seq, first)
	}
	if sz := fileSize(t, walPath(dir, segName(p.seq))); sz != 0 {
		t.Fatalf("the spare's WAL file holds %d bytes", sz)
	}
	rotations := 0
	for _, b := range bs[1:] {
		prev, spareSeq := s.active, waitSpare(t, s).seq
		appendAll(t, s, [][]string{b})
		if s.active != nil && s.active != prev {
			rotations++
			if s.active.seq != spareSeq {
				t.Fatalf("rotation to segment %d, not the spare %d", s.active.seq, spareSeq)
			}
		}
	}
	if rotations == 0 {
		t.Fatal("no rotation: the test needs smaller segments")
	}
	last := waitSpare(t, s).seq
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(segNames(t, dir), segName(last)) {
		t.Errorf("the spare %d is left after Close: %v", last, segNames(t, dir))
	}
	got, reports := readAll(t, dir, Options{SegmentSize: 400})
	checkClean(t, reports)
	checkExactlyOnce(t, got, flatten(bs))

	nosync := mustOpen(t, t.TempDir(), testOpts())
	appendAll(t, nosync, bs[:1])
	if nosync.spare != nil {
		t.Error("a spare with NoSync")
	}
	if err := nosync.Close(); err != nil {
		t.Fatal(err)
	}
}

// A crash leaves the spare (an empty WAL file in the newest segment directory) beside the
// segment being written, whose tail may be torn: Open cuts that tail back (kept as
// evidence), as it would without a spare, and keeps the spare, whose number is never used
// again (records written to it and lost in a power loss may have had their IDs handed
// out). spoolinspect sees the same.
func TestSpareLeftByCrash(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 1 << 20})
	bs := batches("crash", 6, 3)
	appendAll(t, s, bs)
	active := segName(s.active.seq)
	p := waitSpare(t, s)
	img := filepath.Join(t.TempDir(), "img")
	copyDir(t, dir, img) // what a SIGKILL would leave, the lock aside
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wal := walPath(img, active)
	whole := fileSize(t, wal)
	f, err := os.OpenFile(wal, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := append(binary.AppendUvarint(nil, 500), "half a record"...)
	if _, err := f.Write(torn); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(segNames(t, img), segName(p.seq)) {
		t.Fatalf("the image has no spare: %v", segNames(t, img))
	}
	// spoolinspect sees the torn tail as Open does: cut off, not a damaged record.
	vr, err := Verify(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(vr.Problems) != 1 || vr.Problems[0].Segment != active || !strings.Contains(vr.Problems[0].Err, "Open cuts them off") {
		t.Errorf("Verify finds %+v, want the torn tail of %s, which Open cuts off", vr.Problems, active)
	}

	var c corruptions
	s = mustOpen(t, img, Options{SegmentSize: 1 << 20, OnCorrupt: c.add})
	if sz := fileSize(t, wal); sz != whole {
		t.Errorf("after Open the segment written at the crash is %d bytes, want %d (its torn tail cut)", sz, whole)
	}
	checkReported(t, c.list(), active, whole, whole)
	if broken := brokenFiles(t, img); len(broken) != 1 {
		t.Errorf("evidence files %v, want one (the torn tail)", broken)
	}
	got := drain(t, s)
	checkExactlyOnce(t, got, flatten(bs))
	appendAll(t, s, [][]string{{"after"}})
	if s.active.seq <= p.seq {
		t.Errorf("a segment numbered %d after the spare %d left by the crash: its number is used again", s.active.seq, p.seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
