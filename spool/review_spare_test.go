package spool

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Review of 6111589: the spare is numbered nextSeq() when a segment becomes active, but a
// reader that catches up and acknowledges the sealed segment moves the cursor to
// {Seg: N+1} (collect), and nextSeq then skips N+1 (acked.Seg >= seq): the spare no
// longer matches, is removed in the writer's path, and the segment is made there after
// all (two directory fsyncs), which the spare was to avoid.
func TestReviewSpareWastedWhenReaderCaughtUp(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	defer s.Close()
	bs := batches("caught", 40, 3)
	wasted, used := 0, 0
	for _, b := range bs {
		p := s.spare
		if p != nil {
			<-p.done
		}
		prev := s.active
		appendAll(t, s, [][]string{b})
		if s.active != nil && s.active != prev && p != nil {
			if s.active.seq == p.seq {
				used++
			} else {
				wasted++
				t.Logf("rotation to segment %d; the spare %d was removed (cursor %+v)", s.active.seq, p.seq, s.acked)
			}
		}
		drain(t, s) // the consumer keeps up: reads and acknowledges everything
	}
	t.Logf("spares used %d, wasted %d", used, wasted)
	if wasted > 0 {
		t.Errorf("%d of %d rotations made their segment in the writer's path (spare wasted)", wasted, used+wasted)
	}
}

// mountTmpfs mounts a tmpfs of at most inodes inodes at a new directory (skips the test
// if it cannot) and returns it; it is unmounted at the end of the test.
func mountTmpfs(t *testing.T, inodes int) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=64m,nr_inodes=%d", inodes), "tmpfs", mnt).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v %s", err, out)
		}
	})
	return mnt
}

// fillInodes creates files in dir until the file system has no inode left, and returns
// them.
func fillInodes(t *testing.T, dir string) []string {
	t.Helper()
	var made []string
	for i := 0; i < 100000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("filler%d", i))
		f, err := os.Create(p)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filler: %v", err)
			}
			return made
		}
		f.Close()
		made = append(made, p)
	}
	t.Fatal("the file system never ran out of inodes")
	return nil
}

// withinT runs f and fails the test if it does not return within d.
func withinT(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// A full file system (no inode left) while segments rotate: the spare cannot be made, nor
// the segment in the writer's path; Append fails with ENOSPC and never blocks; once space
// returns, appends go on; what was appended is read back once; no position is used
// twice; no goroutine is left behind.
func TestReviewSpareENOSPC(t *testing.T) {
	mnt := mountTmpfs(t, 48) // the cursor file Open writes, and Close's temp file, need two
	base := runtime.NumGoroutine()
	dir := filepath.Join(mnt, "spool")
	s := mustOpen(t, dir, Options{SegmentSize: 400})
	bs := batches("nospc", 120, 3)
	seen := map[Cursor]bool{}
	var want []string
	lastSeg := uint64(0)
	app := func(b []string) error {
		var pos Cursor
		var err error
		withinT(t, 10*time.Second, "Append", func() { pos, err = s.Append(makeRecord(t, b...)) })
		if err != nil {
			return err
		}
		if seen[pos] || pos.Seg < lastSeg {
			t.Fatalf("position %+v used again, or below segment %d", pos, lastSeg)
		}
		seen[pos], lastSeg = true, pos.Seg
		want = append(want, b...)
		return nil
	}
	for _, b := range bs[:20] {
		if err := app(b); err != nil {
			t.Fatalf("Append before the disk is full: %v", err)
		}
	}
	if p := s.spare; p != nil {
		<-p.done
	}
	fillers := fillInodes(t, mnt)
	t.Logf("disk full after %d filler files", len(fillers))
	failed := 0
	for _, b := range bs[20:80] {
		if err := app(b); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("Append on a full disk: %v, want ENOSPC", err)
			}
			failed++
		}
	}
	t.Logf("%d of 60 appends failed on the full disk", failed)
	if failed == 0 {
		t.Error("no append failed: the test did not fill the disk")
	}
	for _, p := range fillers {
		os.Remove(p)
	}
	for _, b := range bs[80:] {
		if err := app(b); err != nil {
			t.Fatalf("Append once space is back: %v", err)
		}
	}
	withinT(t, 10*time.Second, "Close", func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after Close, %d before Open", n, base)
	}
	names, _ := os.ReadDir(dir)
	for _, e := range names {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("left after Close: %s", e.Name())
		}
	}
	got, reports := readAll(t, dir, Options{SegmentSize: 400})
	checkClean(t, reports)
	checkExactlyOnce(t, got, want)
}
