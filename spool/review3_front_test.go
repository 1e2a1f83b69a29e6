package spool

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Review of 0a40fff (a cursor at the very start of a segment past the last means every
// segment is consumed), with the sequence pelichan's Close runs in ordered mode
// (disk.go finish): the messages taken back from Out that came from the spool are marked
// done and the cursor moves over them (advance -> Ack -> collect, which deletes their
// segment N once it is finished, checkpointing {N+1} first when the cursor file's high
// mark does not cover N yet); only then does Front write the front segment F holding
// them, and checkpoint {F}. A kill between the two leaves the messages only in F, behind
// a cursor file naming N+1, and N gone.
//
//   - With NoSync (pelichan's SyncNever) there is no spare N+1: the cursor lay past the
//     last segment (F), and after 0a40fff that meant "all consumed": the messages were lost.
//   - Without NoSync the spare N+1 (an empty WAL file, kept by Open) is the last segment:
//     F lay behind the cursor and was deleted, before and after 0a40fff.
//
// Since then the Chan acknowledges them with KeepConsumed on: nothing is deleted or
// checkpointed before Front's own checkpoint, so a kill there leaves them in N. The test
// runs that sequence (front_keep_test.go covers more kill points).
func TestReview3FrontAfterAckPastNewest(t *testing.T) {
	for _, noSync := range []bool{true, false} {
		name := "sync"
		if noSync {
			name = "nosync"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 400, NoSync: noSync}
			s := mustOpen(t, dir, opts)
			for _, b := range batches("fr", 40, 3) {
				if _, err := s.Append(makeRecord(t, b...)); err != nil {
					t.Fatal(err)
				}
				if s.active == nil {
					break // the first segment N is sealed; nothing written after it
				}
			}
			// The reader hands every record out (into Out's buffer); none is acknowledged.
			var recs [][]byte
			var want []string
			var last Cursor
			for {
				r, err := s.Next()
				if err != nil {
					break
				}
				recs = append(recs, slices.Clone(r.Data))
				want = append(want, decodeRecord(t, r.Data)...)
				last = r.Pos
			}
			if len(recs) == 0 {
				t.Fatal("nothing read")
			}
			// Close in ordered mode: what was taken back from Out is marked done and the
			// cursor moves over it (advance), with the consumed segments kept (as the
			// Chan's finish does since this review), then Front stores it in front of the
			// backlog.
			s.KeepConsumed(true)
			if err := s.Ack(Cursor{Seg: last.Seg, Index: last.Index + 1}); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(filepath.Join(dir, cursorName))
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if err := s.Front(recs); err != nil {
				t.Fatal(err)
			}
			// A kill after Front wrote F and before its checkpoint: F is there, the cursor
			// file is the one before Front.
			img := filepath.Join(t.TempDir(), "img")
			copyDir(t, dir, img)
			if before == nil {
				if err := os.Remove(filepath.Join(img, cursorName)); err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(filepath.Join(img, cursorName), before, 0o640); err != nil {
				t.Fatal(err)
			}
			s.KeepConsumed(false)
			s.Close()
			names, _ := readDirNames(img)
			slices.Sort(names)
			rep, err := Inspect(img)
			if err != nil {
				t.Fatal(err)
			}
			var c corruptions
			s2 := mustOpen(t, img, Options{SegmentSize: 400, NoSync: noSync, OnCorrupt: c.add})
			got := drain(t, s2)
			s2.Close()
			t.Logf("image %v, cursor file %+v: read back %d of the %d messages taken back; reports %v; spoolinspect: cursor %q, %d undelivered",
				names, decodeCursorPos(t, before), len(got), len(want), c.list(), rep.Cursor.State, rep.Undelivered)
			if rep.Undelivered != int64(len(got)) {
				t.Errorf("spoolinspect says %d undelivered, Open delivered %d", rep.Undelivered, len(got))
			}
			if len(got) < len(want) {
				t.Errorf("a kill between Front's segment and its checkpoint: %d of %d messages taken back (stored on disk before Close) lost",
					len(want)-len(got), len(want))
			}
		})
	}
}

func decodeCursorPos(t *testing.T, b []byte) Cursor {
	if b == nil {
		return Cursor{} // no cursor file
	}
	cf, _, err := decodeCursor(b)
	if err != nil {
		t.Fatal(err)
	}
	return cf.pos
}
