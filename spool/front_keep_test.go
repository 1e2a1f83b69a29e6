package spool

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestFrontKeepConsumed runs the sequence of an ordered shutdown (pelichan's disk.go
// finish): the records the reader handed out and the owner took back are acknowledged
// with KeepConsumed on, then Front puts them in front of the backlog. A kill at any point
// of it must leave a spool that delivers, in order and once, what was taken back followed
// by what was never read, with no damage reported, and spoolinspect must count the same.
// The records taken back span several segments, so that several are kept.
func TestFrontKeepConsumed(t *testing.T) {
	const (
		delivered = 4 // records read and acknowledged (checkpointed) before the shutdown
		taken     = 9 // records read and then taken back
	)
	kills := []string{
		"none",                      // graceful
		"before Front",              // the Ack done in memory, nothing of Front on disk
		"before Front's checkpoint", // the front segment written, the cursor file older
		"after Front's checkpoint",  // the kept segments not yet deleted
	}
	for _, noSync := range []bool{false, true} {
		for _, kill := range kills {
			name := kill
			if noSync {
				name += "/nosync"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				opts := Options{SegmentSize: 400, NoSync: noSync}
				s := mustOpen(t, dir, opts)
				appendAll(t, s, batches("k", 30, 3))
				if n := len(s.segs); n < 5 {
					t.Fatalf("only %d segments: the test needs the records taken back to span several", n)
				}
				readN(t, s, delivered)
				if err := s.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				var recs [][]byte
				var want []string
				var last Cursor
				for range taken {
					r, err := s.Next()
					if err != nil {
						t.Fatal(err)
					}
					recs = append(recs, slices.Clone(r.Data))
					want = append(want, decodeRecord(t, r.Data)...)
					last = r.Pos
				}
				if last.Seg == recs2seg(t, s, recs) {
					t.Fatal("the records taken back lie in one segment")
				}
				cursorBefore, _ := os.ReadFile(filepath.Join(dir, cursorName))

				s.KeepConsumed(true)
				if err := s.Ack(Cursor{Seg: last.Seg, Index: last.Index + 1}); err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(filepath.Join(dir, cursorName)); string(b) != string(cursorBefore) {
					t.Fatal("the Ack with KeepConsumed on wrote the cursor file")
				}
				// The image before Front: what a kill there leaves.
				preFront := filepath.Join(t.TempDir(), "pre")
				copyDir(t, dir, preFront)
				if err := s.Front(recs); err != nil {
					t.Fatal(err)
				}
				s.KeepConsumed(false)
				img := filepath.Join(t.TempDir(), "img")
				copyDir(t, dir, img)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				switch kill {
				case "none":
					img = dir
				case "before Front":
					img = preFront
				case "before Front's checkpoint", "after Front's checkpoint":
					// Put back the segments Front deleted after its checkpoint.
					restoreMissingSegs(t, preFront, img)
					if kill == "before Front's checkpoint" {
						p := filepath.Join(img, cursorName)
						os.Remove(p)
						if cursorBefore != nil {
							if err := os.WriteFile(p, cursorBefore, 0o640); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
				rest := flatten(batches("k", 30, 3)[delivered+taken:])
				rep, err := Inspect(img)
				if err != nil {
					t.Fatal(err)
				}
				var c corruptions
				o := opts
				o.OnCorrupt = c.add
				s2 := mustOpen(t, img, o)
				got := drain(t, s2)
				if err := s2.Close(); err != nil {
					t.Fatal(err)
				}
				if errs := c.list(); len(errs) > 0 {
					t.Errorf("damage reported: %v", errs)
				}
				if w := append(slices.Clone(want), rest...); !slices.Equal(got, w) {
					t.Errorf("read back %d messages, want %d (%d taken back, %d never read):\ngot  %q\nwant %q", len(got), len(w), len(want), len(rest), got, w)
				}
				if rep.Undelivered != int64(len(got)) {
					t.Errorf("spoolinspect: %d undelivered, Open delivered %d", rep.Undelivered, len(got))
				}
			})
		}
	}
}

// recs2seg returns the segment of the first record taken back: the reader's unacknowledged
// records, oldest first.
func recs2seg(t *testing.T, s *Spool, recs [][]byte) uint64 {
	t.Helper()
	if len(s.unack) < len(recs) {
		t.Fatalf("%d records unacknowledged, %d taken back", len(s.unack), len(recs))
	}
	return s.unack[len(s.unack)-len(recs)].sg.seq
}

// restoreMissingSegs copies into img the segment directories of pre that img lacks.
func restoreMissingSegs(t *testing.T, pre, img string) {
	t.Helper()
	ents, err := os.ReadDir(pre)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !isSegName(e.Name()) || !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(img, e.Name())); err == nil {
			continue
		}
		copyDir(t, filepath.Join(pre, e.Name()), filepath.Join(img, e.Name()))
	}
}
