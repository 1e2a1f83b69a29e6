package pelichan

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// review6BlockFront makes the next front segment's creation fail (its number taken by a
// plain file, as frontfail_test.go does) and returns a func that removes the block.
func review6BlockFront(t *testing.T, dir string) func() {
	t.Helper()
	block := filepath.Join(dir, fmt.Sprintf("%020d", uint64(spool.FirstSeq-1)))
	if err := os.WriteFile(block, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	return func() { os.Remove(block) }
}

// The same with a backlog spilled after the messages went to Out: the record the shadow
// batch wrote lies behind the backlog, the reader has not reached it.
func TestReview6FrontFailsShadowAheadLost(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(100), WithLinger(100 * time.Millisecond), WithBatchBytes(256),
		WithSegmentSize(4 << 10), WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	var sent []string
	for i := 0; i < 2000; i++ {
		m := msg("a-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	// The first 100 wait in Out; after the linger time they are written too.
	waitStats(t, c, 5*time.Second, "everything stored", func(s Stats) bool { return s.OnDisk == 2000 })
	unblock := review6BlockFront(t, dir)
	cerr := akClose(t, c)
	st := c.Stats()
	unblock()
	got, st2 := clReopen(t, dir, false, opts...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkBalance(t, st)
	if st.Dropped == 0 {
		checkSame(t, "after an ordered Close whose Front failed (first Chan counts none Dropped)", sent, got)
	} else if int64(len(sent)-len(got)) != st.Dropped {
		t.Errorf("%d lost, first Chan counts %d Dropped", len(sent)-len(got), st.Dropped)
	}
}

// review6BlockCheckpoint makes every cursor file write fail (cursor.tmp a non-empty
// directory: writeFileAtomic cannot create it) and returns a func that removes the block.
func review6BlockCheckpoint(t *testing.T, dir string) func() {
	t.Helper()
	p := filepath.Join(dir, "cursor.tmp")
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o750); err != nil {
		t.Fatal(err)
	}
	return func() { os.RemoveAll(p) }
}

// An ordered Close takes back from Out messages that were only in memory (direct, not
// written while they waited: a long linger). Front writes the front segment and returns nil
// although its checkpoint failed; Close's checkpoint fails too (the cursor file cannot be
// replaced: a full disk, a read-only remount). storeFront counted them OnDisk (stored) and
// Close's error does not say any message is lost. The cursor file still holds the position
// from before Front, which equals the front segment's resume cursor: the next Open takes
// the front segment as consumed (loneFront) and deletes it. The messages are lost,
// counted OnDisk, never Dropped.
func TestReview6FrontCheckpointFailsMemLost(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(100), WithLinger(time.Minute), WithBatchBytes(256),
		WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	var sent, got []string
	for i := 0; i < 300; i++ { // 100 wait in Out, 200 spilled
		m := msg("c-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	for len(got) < 300 {
		select {
		case m := <-c.Out():
			got = append(got, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("no message within 5s after %d", len(got))
		}
	}
	time.Sleep(300 * time.Millisecond) // a checkpoint of where the cursor ends
	for i := 300; i < 310; i++ {       // straight to Out, only in memory
		m := msg("c-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	unblock := review6BlockCheckpoint(t, dir)
	cerr := akClose(t, c)
	st := c.Stats()
	unblock()
	rest, st2 := clReopen(t, dir, false, opts...)
	got = append(got, rest...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkBalance(t, st)
	lost := 0
	seen := map[string]bool{}
	for _, m := range got {
		seen[m] = true
	}
	for _, m := range sent {
		if !seen[m] {
			lost++
		}
	}
	if int64(lost) != st.Dropped {
		t.Errorf("%d messages lost, the first Chan counts %d Dropped (Close: %v)", lost, st.Dropped, cerr)
	}
	if lost > 0 && (cerr == nil || !clLostRE.MatchString(cerr.Error())) {
		t.Errorf("%d messages lost, Close's error does not say so: %v", lost, cerr)
	}
}

// An ordered Close whose Front fails (no room for the front segment) right after the
// consumer took messages: their done marks reach the disk goroutine with Close (req.done),
// finish marks them done and advance moves the cursor over them with KeepConsumed on, and
// the done sets saved in the cursor file are encoded after that advance (so no longer name
// them). KeepConsumed(false) then puts the cursor back to before them: after New they are
// delivered a second time, on a Close that was graceful for them (they were done).
func TestReview6FrontFailsDoneDelivered(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(400), WithSegmentSize(1 << 10), WithBatchBytes(256),
		WithLinger(time.Minute), WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	_, _, recv := outFromDisk(t, c, src, "d-")
	unblock := review6BlockFront(t, dir)
	got := recv(750) // taken by the consumer just before Close: done
	cerr := akClose(t, c)
	st := c.Stats()
	unblock()
	rest, st2 := clReopen(t, dir, false, opts...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkBalance(t, st)
	seen := map[string]bool{}
	for _, m := range got {
		seen[m] = true
	}
	twice := 0
	for _, m := range rest {
		if seen[m] {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d messages the consumer took before Close delivered again after New", twice)
	}
}

// TestReview6FrontFailsShadowAheadLost on a real full disk (a tmpfs filled to a few pages):
// the front segment (about 100 KiB of incompressible messages) does not fit, the cursor
// file (one page) does. Default options but the segment size; the messages waiting in Out
// were written to the spool while they waited (default linger), behind the backlog.
func TestReview6FrontFailsShadowAheadLostFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "size=8m")
	dir := filepath.Join(mnt, "spool")
	opts := []Option{WithOrdered(), WithSegmentSize(64 << 10), WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	rnd := func(i int) string {
		b := make([]byte, 100)
		x := uint64(i)*0x9e3779b97f4a7c15 + 1
		for j := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[j] = 'a' + byte(x%26)
		}
		return fmt.Sprintf("r-%06d-%s", i, b)
	}
	var sent []string
	for i := 0; i < 3000; i++ { // 1024 wait in Out (written after the linger time), the rest spilled
		m := rnd(i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	waitStats(t, c, 10*time.Second, "everything stored", func(s Stats) bool { return s.OnDisk == 3000 })
	time.Sleep(300 * time.Millisecond) // checkpoints settle
	// Fill the disk, leaving 16 KiB.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	if free < 64<<10 {
		t.Fatalf("only %d bytes free", free)
	}
	if err := os.WriteFile(filepath.Join(mnt, "filler"), make([]byte, free-16<<10), 0o640); err != nil {
		t.Fatal(err)
	}
	cerr := akClose(t, c)
	st := c.Stats()
	os.Remove(filepath.Join(mnt, "filler"))
	got, st2 := clReopen(t, dir, false, opts...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkBalance(t, st)
	if int64(len(sent)-len(got)) != st.Dropped {
		t.Errorf("sent %d, delivered %d after New: %d lost; the first Chan counts %d Dropped (Close: %v)",
			len(sent), len(got), len(sent)-len(got), st.Dropped, cerr)
	}
}
