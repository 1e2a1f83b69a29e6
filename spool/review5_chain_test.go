package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
)

// Regression test: two ordered shutdowns in a row, at spool level, the second one
// while the cursor is in the first front segment F1, taking back records of F1 only (F2
// replaces F1) or of F1 and of several segments after F1's resume cursor (F1 passed and
// kept, with the segments after it). Every crash point of the second one is imaged: before
// Front, after F2 is written and before its checkpoint, and after the checkpoint with 0, 1,
// ... of the segments finishFront deletes already gone (it deletes them in ascending
// order). Each image must deliver, once and in order, what was not done, with no damage
// reported, and Stats and spoolinspect must count what Open delivers.
func TestReview5FrontChainCrashPoints(t *testing.T) {
	for _, noSync := range []bool{true, false} {
		for _, takeBack := range []int{5, 15} {
			t.Run(fmt.Sprintf("nosync=%v/take=%d", noSync, takeBack), func(t *testing.T) {
				review5Chain(t, noSync, takeBack)
			})
		}
	}
}

func review5Chain(t *testing.T, noSync bool, takeBack int) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 400, NoSync: noSync}
	all := batches("c", 40, 3)
	// Session 1: 4 records delivered, 6 taken back, one record from memory: F1.
	s := mustOpen(t, dir, opts)
	appendAll(t, s, all)
	readN(t, s, 4)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	var recs [][]byte
	var last Cursor
	for range 6 {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, slices.Clone(r.Data))
		last = r.Pos
	}
	mem1 := batches("m1", 1, 2)
	recs = append(recs, makeRecord(t, mem1[0]...))
	s.KeepConsumed(true)
	if err := s.Ack(Cursor{Seg: last.Seg, Index: last.Index + 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Front(recs); err != nil {
		t.Fatal(err)
	}
	s.KeepConsumed(false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Session 2: one record of F1 delivered and checkpointed, takeBack more read and taken back.
	s = mustOpen(t, dir, opts)
	f1 := s.segs[0].seq
	readN(t, s, 1)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	recs = nil
	var taken []string
	for range takeBack {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, slices.Clone(r.Data))
		taken = append(taken, decodeRecord(t, r.Data)[r.Pos.Offset:]...)
		last = r.Pos
	}
	// The rest, never read: everything after the last record taken back.
	var rest []string
	mem2 := batches("m2", 1, 2)
	recs = append(recs, makeRecord(t, mem2[0]...))
	s.KeepConsumed(true)
	if err := s.Ack(Cursor{Seg: last.Seg, Index: last.Index + 1}); err != nil {
		t.Fatal(err)
	}
	pre := filepath.Join(t.TempDir(), "pre")
	copyDir(t, dir, pre)
	cursorPre, _ := os.ReadFile(filepath.Join(dir, cursorName))
	if err := s.Front(recs); err != nil {
		t.Fatal(err)
	}
	s.KeepConsumed(false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What the graceful path delivers: the reference.
	final := filepath.Join(t.TempDir(), "final")
	copyDir(t, dir, final)
	graceful, reps := readAll(t, final, opts)
	if len(reps) > 0 {
		t.Fatalf("graceful: reports %v", reps)
	}
	want := append(slices.Clone(taken), mem2[0]...)
	if !slices.Equal(graceful[:min(len(want), len(graceful))], want) {
		t.Fatalf("graceful: starts with %q, want %q", graceful[:min(len(want), len(graceful))], want)
	}
	rest = graceful[len(want):]
	if len(rest) == 0 {
		t.Fatal("nothing left after what was taken back")
	}

	// The segments finishFront deleted, in the order it deletes them.
	var gone []string
	for _, n := range segNamesOf(t, pre) {
		if _, err := os.Stat(filepath.Join(dir, n)); os.IsNotExist(err) {
			gone = append(gone, n)
		}
	}
	sort.Strings(gone)
	t.Logf("F1 %d; taken back up to %+v; pre %v; finishFront deleted %v", f1, last, segNamesOf(t, pre), gone)

	type image struct {
		name string
		dir  string
		want []string
	}
	var imgs []image
	imgs = append(imgs, image{"before Front", pre, append(slices.Clone(taken), rest...)})
	{
		img := filepath.Join(t.TempDir(), "nockpt")
		copyDir(t, dir, img)
		restoreMissingSegs(t, pre, img)
		os.Remove(filepath.Join(img, cursorName))
		if cursorPre != nil {
			if err := os.WriteFile(filepath.Join(img, cursorName), cursorPre, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		imgs = append(imgs, image{"before Front's checkpoint", img, append(slices.Clone(taken), rest...)})
	}
	for j := 0; j <= len(gone); j++ {
		img := filepath.Join(t.TempDir(), fmt.Sprintf("del%d", j))
		copyDir(t, dir, img)
		for _, n := range gone[j:] {
			copyDir(t, filepath.Join(pre, n), filepath.Join(img, n))
		}
		if j < len(gone) {
			// The one being deleted may be caught renamed away.
			_ = os.MkdirAll(filepath.Join(img, gone[j]+".del.tmp"), 0o750)
		}
		imgs = append(imgs, image{fmt.Sprintf("after checkpoint, %d deleted", j), img, graceful})
	}
	for _, im := range imgs {
		rep, err := Inspect(im.dir)
		if err != nil {
			t.Fatal(err)
		}
		var c corruptions
		o := opts
		o.OnCorrupt = c.add
		s2 := mustOpen(t, im.dir, o)
		und := s2.Stats().Undelivered
		got := drain(t, s2)
		s2.Close()
		if errs := c.list(); len(errs) > 0 {
			t.Errorf("%s: damage reported: %v", im.name, errs)
		}
		if !slices.Equal(got, im.want) {
			t.Errorf("%s: read back %d messages, want %d:\ngot  %q\nwant %q", im.name, len(got), len(im.want), got, im.want)
		}
		if und != int64(len(got)) || rep.Undelivered != int64(len(got)) {
			t.Errorf("%s: Stats.Undelivered %d, spoolinspect %d, Open delivered %d", im.name, und, rep.Undelivered, len(got))
		}
	}
}

func segNamesOf(t *testing.T, dir string) []string {
	t.Helper()
	names, err := readDirNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if isSegName(n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Fixed since: was a BUG (false report + duplicates; narrow). frontRead (now loneFront) refused a front segment whose meta
// file is of version 1 (resumeIndex), even when its resume cursor names the start of a
// segment (index 0: the translation into a byte offset is the identity). A spool from
// before meta version 2, upgraded: the reader reads the lone front segment F, checkpoints
// its (translated) resume cursor, and is killed before F is deleted. Open reports the cursor
// as damage and delivers F again.
func TestReview5LoneFrontMetaV1Read(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 400, NoSync: true}
	review5LoneFront(t, dir, opts)
	s := mustOpen(t, dir, opts)
	f := s.segs[0]
	resume := f.meta.resume
	s.Close()
	// Rewrite F's meta as version 1 (same fields; the resume index 0 reads the same).
	mp := filepath.Join(dir, f.name(), metaName)
	b, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	b[4] = 1
	binary.LittleEndian.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli))
	if err := os.WriteFile(mp, b, 0o640); err != nil {
		t.Fatal(err)
	}
	// The reader reads F and acknowledges it: the checkpoint before its deletion names the
	// resume cursor; the rename is made to fail, which leaves what a kill there leaves.
	s = mustOpen(t, dir, opts)
	if s.segs[0].meta.resume != resume {
		t.Fatalf("meta v1 resume read as %+v, want %+v", s.segs[0].meta.resume, resume)
	}
	if err := os.MkdirAll(filepath.Join(dir, f.name()+".del.tmp", "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	var first []string
	for {
		r, err := s.Next()
		if err != nil {
			break
		}
		first = append(first, decodeRecord(t, r.Data)...)
		s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}) // the rename fails: an error
	}
	img := filepath.Join(t.TempDir(), "img")
	copyDir(t, dir, img)
	s.Close()
	os.RemoveAll(filepath.Join(img, f.name()+".del.tmp"))
	cf, _, _ := readCursorPath(filepath.Join(img, cursorName))
	var c corruptions
	o := opts
	o.OnCorrupt = c.add
	s2 := mustOpen(t, img, o)
	again := drain(t, s2)
	s2.Close()
	t.Logf("cursor %+v, F resume %+v; first reading %d, after the kill %d", cf.pos, resume, len(first), len(again))
	if len(c.list()) > 0 {
		t.Errorf("legitimate state reported as damage: %v", c.list())
	}
	if len(again) > 0 {
		t.Errorf("%d messages of F, acknowledged and checkpointed, delivered again", len(again))
	}
}
