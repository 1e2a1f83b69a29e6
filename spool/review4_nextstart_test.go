package spool

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Review of 31bc38f (nextStart): a front segment F written when every stored segment was
// consumed (cursor {N+1}, no segment left) is numbered below the low mark, far below N,
// with resume cursor {N+1}. Reading F, collect checkpoints {N+1} before deleting F
// (checkpointBeforeDelete). A kill between that checkpoint and F's rename leaves F alone
// with a cursor file naming N+1 > F+1: a legitimate state, which Open reports as damage
// and answers by reading F again. Here the rename is made to fail (a non-empty
// F.del.tmp), which leaves the directory as the kill would.
//
// Open now takes a cursor file holding exactly the resume cursor of a lone front segment
// as "the front segment is consumed" (loneFront): since ordered shutdowns acknowledge what
// they take back with KeepConsumed on, no other sequence writes such a cursor file while
// the front segment holds messages that reached the disk.
func TestReview4CursorPastLoneFrontSegment(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 400, NoSync: true}
	s := mustOpen(t, dir, opts)
	appendAll(t, s, batches("ns", 20, 3))
	for {
		r, err := s.Next()
		if err != nil {
			break
		}
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// An ordered Close with an empty backlog: what was taken back goes in front.
	s = mustOpen(t, dir, opts)
	if len(s.segs) != 0 {
		t.Fatalf("segments left: %d", len(s.segs))
	}
	front := batches("fr", 2, 3)
	if err := s.Front([][]byte{makeRecord(t, front[0]...), makeRecord(t, front[1]...)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// New: the reader reads F and acknowledges it; F's rename fails after the checkpoint.
	var c1 corruptions
	o1 := opts
	o1.OnCorrupt = c1.add
	s = mustOpen(t, dir, o1)
	f := s.segs[0]
	if err := os.MkdirAll(filepath.Join(dir, f.name()+".del.tmp", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := s.Next()
		if err != nil {
			break
		}
		got = append(got, decodeRecord(t, r.Data)...)
		ackErr := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1})
		t.Logf("Ack past %+v: %v", r.Pos, ackErr)
	}
	img := filepath.Join(t.TempDir(), "img")
	copyDir(t, dir, img) // a kill here
	s.Close()
	os.RemoveAll(filepath.Join(img, f.name()+".del.tmp"))
	names, _ := readDirNames(img)
	slices.Sort(names)
	cf, v, _ := readCursorPath(filepath.Join(img, cursorName))
	var c corruptions
	o2 := opts
	o2.OnCorrupt = c.add
	s2 := mustOpen(t, img, o2)
	again := drain(t, s2)
	s2.Close()
	t.Logf("image %v, cursor %+v (version %d), F %s; first reading %d; after the kill %d; reports %v", names, cf.pos, v, f.name(), len(got), len(again), c.list())
	if len(c.list()) > 0 {
		t.Errorf("a legitimate state (checkpoint written, F not yet deleted) reported as damage: %v", c.list())
	}
	if len(again) > 0 {
		t.Errorf("%d messages of F, acknowledged and checkpointed, delivered again", len(again))
	}
}
