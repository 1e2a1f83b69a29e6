package spool

// Review of cdaccb9 and 7638260 (Front returns nil once its segment is written,
// KeepConsumed's snapshot and rollback, resetReader clearing readDone, nextSeq's rule,
// loneFront).

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Front's checkpoint fails (Front returns nil), Close's succeeds and finishSaved deletes
// the kept segments. A kill at each point (before Close's checkpoint; after it, with 0, 1,
// ... of the kept segments deleted) must deliver, once and in order, the records taken back
// and then the rest, with no damage reported. (Holds: kept as a regression test.)
func TestReview6FinishSavedCrashPoints(t *testing.T) {
	for _, noSync := range []bool{true, false} {
		dir := t.TempDir()
		opts := Options{SegmentSize: 400, NoSync: noSync}
		s, recs, taken, past, rest := review5Taken(t, dir, opts)
		s.KeepConsumed(true)
		if err := s.Ack(past); err != nil {
			t.Fatal(err)
		}
		pre := filepath.Join(t.TempDir(), "pre")
		copyDir(t, dir, pre)
		block := filepath.Join(dir, cursorName+".tmp")
		if err := os.MkdirAll(filepath.Join(block, "x"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := s.Front(recs); err != nil {
			t.Fatalf("Front: %v", err)
		}
		s.KeepConsumed(false)
		noCkpt := filepath.Join(t.TempDir(), "nockpt")
		copyDir(t, dir, noCkpt)
		os.RemoveAll(filepath.Join(noCkpt, cursorName+".tmp"))
		os.RemoveAll(block)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		var gone []string
		for _, n := range segNamesOf(t, pre) {
			if _, err := os.Stat(filepath.Join(dir, n)); os.IsNotExist(err) {
				gone = append(gone, n)
			}
		}
		if len(gone) == 0 {
			t.Fatal("finishSaved deleted nothing")
		}
		want := append(slices.Clone(taken), rest...)
		imgs := map[string]string{"before Close's checkpoint": noCkpt}
		for j := 0; j <= len(gone); j++ {
			img := filepath.Join(t.TempDir(), "del")
			copyDir(t, dir, img)
			for _, n := range gone[j:] {
				copyDir(t, filepath.Join(pre, n), filepath.Join(img, n))
			}
			imgs[filepath.Base(img)+"-"+string(rune('0'+j))] = img
		}
		for name, img := range imgs {
			var c corruptions
			o := opts
			o.OnCorrupt = c.add
			s2 := mustOpen(t, img, o)
			und := s2.Stats().Undelivered
			got := drain(t, s2)
			s2.Close()
			if len(c.list()) > 0 {
				t.Errorf("nosync=%v %s: damage reported: %v", noSync, name, c.list())
			}
			if !slices.Equal(got, want) {
				t.Errorf("nosync=%v %s: read back %d messages, want %d", noSync, name, len(got), len(want))
			}
			if und != int64(len(got)) {
				t.Errorf("nosync=%v %s: Undelivered %d, read %d", noSync, name, und, len(got))
			}
		}
	}
}
