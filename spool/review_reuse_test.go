package spool

import (
	"os"
	"path/filepath"
	"testing"
)

// Review of 6111589 (Open removes a newest segment that "never held a record": an empty
// WAL file alone). An empty WAL file is also what a power loss leaves of the segment
// being written when none of its records reached the disk (SyncEvery or SyncNever: the
// directory entries were fsynced when it was made, the data not yet); pelichan's
// write-ahead mode has by then handed its records' IDs (segment, offset) out. Open now
// deletes that segment without first recording its number in the cursor file (the rule
// checkpointBeforeDelete applies to every other deletion of the highest segment), so a
// crash right after Open (an idle Chan writes no checkpoint) leaves no trace of the
// number, and the next segment gets it again: the same positions, so the same IDs, for
// other records. Before the change the segment was kept, and deleted later through
// collect, which checkpoints first.
func TestReviewEmptyNewestNumberReused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	var lostSeg uint64
	var handedOut []Cursor
	for _, b := range batches("pl", 40, 3) {
		pos, err := s.Append(makeRecord(t, b...))
		if err != nil {
			t.Fatal(err)
		}
		if pos.Seg == FirstSeq {
			// A checkpoint while the first segment is the newest: the cursor file's high
			// mark is FirstSeq (as a Chan's periodic checkpoint leaves it).
			if err := s.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		if lostSeg == 0 && pos.Seg > FirstSeq {
			lostSeg = pos.Seg // the second segment: its records are the ones lost
		}
		if pos.Seg == lostSeg {
			handedOut = append(handedOut, pos)
		}
		if lostSeg != 0 && pos.Seg > lostSeg {
			break
		}
	}
	if lostSeg == 0 {
		t.Fatal("no rotation")
	}
	// The image a power loss leaves: the first segment written and sealed, the cursor file
	// of the last checkpoint (high mark: the first segment), segment lostSeg made (its name fsynced) but none
	// of its data on disk, nothing after it (the next one was not made yet).
	img := filepath.Join(t.TempDir(), "img")
	copyDir(t, dir, img)
	s.Close()
	ents, _ := os.ReadDir(img)
	for _, e := range ents {
		if seq, ok := seqPrefix(e.Name()); ok && seq > lostSeg {
			os.RemoveAll(filepath.Join(img, e.Name()))
		}
	}
	if _, err := os.Stat(filepath.Join(img, cursorName)); err != nil {
		t.Fatalf("no cursor file: %v", err)
	}
	os.Remove(filepath.Join(img, segName(lostSeg), metaName))
	if err := os.Truncate(walPath(img, segName(lostSeg)), 0); err != nil {
		t.Fatal(err)
	}
	// The restart after the power loss: Open, then a crash before anything is written.
	s1 := mustOpen(t, img, Options{SegmentSize: 400})
	crash := filepath.Join(t.TempDir(), "crash")
	copyDir(t, img, crash)
	s1.Close()
	s2 := mustOpen(t, crash, Options{SegmentSize: 400})
	defer s2.Close()
	pos, err := s2.Append(makeRecord(t, "a different message"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("handed out before the power loss: %v; the next Append after the restarts: %+v", handedOut, pos)
	for _, h := range handedOut {
		if h == pos {
			t.Errorf("position %+v handed out twice: once before the power loss, and now to another record", pos)
		}
	}
	if pos.Seg <= lostSeg {
		t.Errorf("segment number %d used again (it held records before the power loss)", pos.Seg)
	}
}

// Not new with these commits, noted while reviewing retire: collect moves the cursor to
// {Seg: N+1} and checkpointBeforeDelete writes it (when the cursor file's high mark does
// not cover N yet) before N is renamed away. A kill between the two leaves a cursor file
// naming N+1 beside a consumed N and no N+1 (or, now, only the spare N+1, which Open
// removes). Open reported damage ("cursor points to segment past the last one") and read
// N again from its start; now a cursor at the very start of a segment past the last means
// every segment is consumed.
func TestReviewCursorPastConsumedNewest(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	var first uint64
	for _, b := range batches("cp", 40, 3) {
		pos, err := s.Append(makeRecord(t, b...))
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = pos.Seg
		}
		if s.active == nil {
			break // the first segment is sealed
		}
	}
	img := filepath.Join(t.TempDir(), "img")
	copyDir(t, dir, img) // the segments before the kill
	drain(t, s)          // consumed: the cursor moves to {first+1}, written before the rename
	s.Close()
	if err := os.Remove(filepath.Join(img, cursorName)); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(img, cursorName), b, 0o640); err != nil {
		t.Fatal(err)
	}
	var c corruptions
	s2 := mustOpen(t, img, Options{SegmentSize: 400, OnCorrupt: c.add})
	again := drain(t, s2)
	s2.Close()
	t.Logf("cursor file after the drain: %+v; read again after the kill: %d messages; reports %v", s.acked, len(again), c.list())
	if len(c.list()) > 0 || len(again) > 0 {
		t.Errorf("a kill between the checkpoint and the rename: %d messages read again, %d damage reports", len(again), len(c.list()))
	}
}
