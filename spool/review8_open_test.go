package spool

// Review of ddcbe1f (Open writes a cursor file when there is none).

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A spool with segments and no cursor file (deleted, or a kill before the first
// checkpoint) on a disk with no inode left: Open must open it and everything must be read
// (DESIGN.md: nothing makes a spool unopenable; a full disk resumes when space returns).
// ddcbe1f as committed returned the failed checkpoint from Open; the work tree makes it
// best effort.
func TestReview8OpenENOSPCNoCursor(t *testing.T) {
	mnt := mountTmpfs(t, 64)
	dir := filepath.Join(mnt, "spool")
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	bs := batches("e", 12, 3)
	appendAll(t, s, bs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, cursorName)); err != nil {
		t.Fatal(err)
	}
	fill := fillInodes(t, mnt)
	defer func() {
		for _, p := range fill {
			os.Remove(p)
		}
	}()
	withinT(t, 10*time.Second, "Open and drain", func() {
		s2, err := Open(dir, Options{SegmentSize: 400})
		if err != nil {
			t.Errorf("Open on a full disk of a spool with no cursor file: %v", err)
			return
		}
		got := drain(t, s2)
		s2.Close() // its checkpoint fails: no inode
		if want := flatten(bs); len(got) != len(want) {
			t.Errorf("read %d messages, want %d", len(got), len(want))
		}
	})
}

// A spool whose cursor file names segment 0: what Close wrote on an empty spool before
// ddcbe1f (and what Close still writes after a damaged cursor file on an empty spool).
// ddcbe1f's promise, "a front segment is never the first thing read for want of a cursor
// file", does not hold there: Open writes nothing (the file exists), so a front segment
// whose checkpoint was lost lies after the cursor and is read first, exactly as when the
// file was missing. On a fresh directory the same sequence leaves it behind the cursor.
func TestReview8CursorSeg0FrontReadFirst(t *testing.T) {
	for _, pre := range []string{"fresh", "cursor-seg-0", "damaged-then-closed-empty"} {
		t.Run(pre, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 400, NoSync: true}
			switch pre {
			case "cursor-seg-0":
				s := mustOpen(t, dir, opts)
				s.Close()
				if err := os.WriteFile(filepath.Join(dir, cursorName), encodeCursor(cursorFile{delivered: unknownDelivered}), 0o640); err != nil {
					t.Fatal(err)
				}
			case "damaged-then-closed-empty":
				s := mustOpen(t, dir, opts)
				s.Close()
				if err := os.WriteFile(filepath.Join(dir, cursorName), []byte("pcur\x04garbage"), 0o640); err != nil {
					t.Fatal(err)
				}
				o := opts
				o.OnCorrupt = func(error) {}
				s = mustOpen(t, dir, o)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			s := mustOpen(t, dir, opts)
			appendAll(t, s, batches("b", 4, 2)) // a backlog, never read
			// Front's and Close's checkpoints fail: the disk holds what a kill right after
			// Front wrote its segment leaves.
			block := filepath.Join(dir, cursorName+".tmp")
			if err := os.MkdirAll(filepath.Join(block, "x"), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := s.Front([][]byte{makeRecord(t, "front")}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			os.RemoveAll(block)
			s2 := mustOpen(t, dir, opts)
			c0 := s2.Cursor()
			got := readN(t, s2, 1)
			s2.Close()
			if len(got) == 1 && got[0] == "front" {
				t.Errorf("%s: the front segment whose checkpoint never came is read first (cursor at Open %v)", pre, c0)
			}
		})
	}
}
