package pelichan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// noisyLine is a message that compresses poorly, so a cap fills quickly.
func noisyLine(r *rand.Rand, id int) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 220)
	b = fmt.Appendf(b, "id=%d ", id)
	for len(b) < 200 {
		b = append(b, hex[r.IntN(16)])
	}
	return string(b)
}

// segmentBytes sums the sizes of the segment files under dir, measured on disk.
func segmentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil // a segment deleted while walking
		}
		if !fi.IsDir() && filepath.Base(path) == "00000000000000000001" {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) handle(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }
func (l *errLog) count(target error) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.errs {
		if errors.Is(e, target) {
			n++
		}
	}
	return n
}

// fillCapped pushes n noisy messages into a Chan capped at maxDisk with a stalled consumer,
// and returns how many the producer got in before it stopped (blocked) or finished.
func fillCapped(t *testing.T, policy FullPolicy, n int, maxDisk int64) (c *Chan[string], src chan string, sent *atomic.Int64, done chan struct{}, log *errLog, dir string) {
	t.Helper()
	dir = t.TempDir()
	src = make(chan string)
	log = &errLog{}
	c, err := New(dir, src, String, WithBuffer(10), WithSegmentSize(64<<10), WithBatchBytes(16<<10),
		WithMaxDiskBytes(maxDisk), WithWhenFull(policy), WithErrorHandler(log.handle), WithSync(SyncNever))
	if err != nil {
		t.Fatal(err)
	}
	sent = &atomic.Int64{}
	done = make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < n; i++ {
			src <- noisyLine(r, i)
			sent.Add(1)
		}
		close(src)
	}()
	return c, src, sent, done, log, dir
}

// waitQuiet waits until Stats stop changing, i.e. the Chan is blocked or idle.
func waitQuiet(c *Chan[string]) Stats {
	prev := c.Stats()
	for {
		time.Sleep(150 * time.Millisecond)
		st := c.Stats()
		if st.Received == prev.Received && st.Spilled == prev.Spilled && st.Dropped == prev.Dropped {
			return st
		}
		prev = st
	}
}

func TestMaxDiskBytesBlockStopsReadingAndResumes(t *testing.T) {
	const n, maxDisk = 20000, 512 << 10
	c, _, sent, done, log, dir := fillCapped(t, Block, n, maxDisk)
	st := waitQuiet(c)
	if sent.Load() >= n {
		t.Fatalf("the producer was never blocked: sent all %d", n)
	}
	if used := segmentBytes(t, dir); used > maxDisk+64<<10 {
		t.Fatalf("%d bytes of segments on disk, cap %d (+ one batch)", used, maxDisk)
	}
	if log.count(ErrFull) == 0 {
		t.Errorf("the error handler never heard of ErrFull")
	}
	t.Logf("blocked after %d messages: %+v", sent.Load(), st)
	// The consumer comes back: everything arrives, once.
	seen := map[string]bool{}
	for m := range c.Out() {
		if seen[m] {
			t.Fatalf("duplicate %q", m[:12])
		}
		seen[m] = true
	}
	<-done
	if len(seen) != n {
		t.Fatalf("delivered %d of %d", len(seen), n)
	}
	if st := c.Stats(); st.Dropped != 0 {
		t.Errorf("Block dropped %d messages", st.Dropped)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxDiskBytesDropNewestAccountsForEveryMessage(t *testing.T) {
	const n, maxDisk = 20000, 512 << 10
	c, _, _, done, log, dir := fillCapped(t, DropNewest, n, maxDisk)
	<-done
	st := waitQuiet(c)
	if used := segmentBytes(t, dir); used > maxDisk+64<<10 {
		t.Fatalf("%d bytes of segments on disk, cap %d (+ one batch)", used, maxDisk)
	}
	if st.Dropped == 0 || log.count(ErrFull) == 0 {
		t.Fatalf("nothing dropped at the cap: %+v", st)
	}
	if got := st.Direct + st.OnDisk + st.Dropped + st.InMemory; got != n {
		t.Fatalf("Direct+OnDisk+Dropped+InMemory = %d, want %d: %+v", got, n, st)
	}
	delivered := 0
	for range c.Out() {
		delivered++
	}
	if int64(delivered)+st.Dropped != n {
		t.Fatalf("delivered %d + dropped %d != %d", delivered, st.Dropped, n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxDiskBytesDropOldestKeepsTheNewest(t *testing.T) {
	const n, maxDisk = 20000, 512 << 10
	c, _, _, done, log, dir := fillCapped(t, DropOldest, n, maxDisk)
	<-done
	st := waitQuiet(c)
	if used := segmentBytes(t, dir); used > maxDisk+64<<10 {
		t.Fatalf("%d bytes of segments on disk, cap %d (+ one batch)", used, maxDisk)
	}
	if st.Dropped == 0 || log.count(ErrFull) == 0 {
		t.Fatalf("nothing dropped at the cap: %+v", st)
	}
	delivered, last := 0, false
	for m := range c.Out() {
		delivered++
		if strings.HasPrefix(m, fmt.Sprintf("id=%d ", n-1)) {
			last = true
		}
	}
	if int64(delivered)+st.Dropped != n {
		t.Fatalf("delivered %d + dropped %d != %d", delivered, st.Dropped, n)
	}
	if !last {
		t.Errorf("the newest message was dropped under DropOldest")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMaxMessageBytesRefusesAndCounts(t *testing.T) {
	src := make(chan string)
	log := &errLog{}
	c, err := New(t.TempDir(), src, String, WithBuffer(0), WithMaxMessageBytes(100), WithErrorHandler(log.handle))
	if err != nil {
		t.Fatal(err)
	}
	// No consumer yet: the messages spill, which is where the limit applies.
	src <- strings.Repeat("x", 100)
	src <- strings.Repeat("y", 101)
	src <- "small"
	for c.Stats().InMemory > 0 { // the linger time writes the batch
		time.Sleep(10 * time.Millisecond)
	}
	close(src)
	var got []string
	for m := range c.Out() {
		got = append(got, m)
	}
	if len(got) != 2 || log.count(ErrTooLarge) != 1 || c.Stats().Dropped != 1 {
		t.Fatalf("got %d messages, %d ErrTooLarge reports, Dropped %d; want 2, 1, 1", len(got), log.count(ErrTooLarge), c.Stats().Dropped)
	}
	c.Close()
}

func TestMaxAgeDropsOldSegments(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithBuffer(0), WithSegmentSize(4<<10), WithBatchBytes(2<<10))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 2000; i++ {
		src <- noisyLine(r, i)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	log := &errLog{}
	fast := func(o *options) { o.checkpoint = 20 * time.Millisecond }
	c, err = New(dir, src, String, WithBuffer(0), WithMaxAge(200*time.Millisecond), WithErrorHandler(log.handle), fast)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	st := c.Stats()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped for age: %+v", st)
	}
	close(src)
	delivered := 0
	for range c.Out() {
		delivered++
	}
	if int64(delivered)+c.Stats().Dropped != 2000 {
		t.Fatalf("delivered %d + dropped %d != 2000", delivered, c.Stats().Dropped)
	}
	c.Close()
}

// mountTmpfs mounts a tmpfs with the mount options opts ("size=1m", "size=1m,nr_inodes=12")
// on a temporary directory for the test, or skips the test when that is not possible (not
// root, no mount permission).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return mnt
}

// TestENOSPCOnTmpfs fills a tiny tmpfs: the Chan blocks, nothing is corrupt, and it
// resumes by itself when the consumer frees space.
func TestENOSPCOnTmpfs(t *testing.T) {
	mnt := mountTmpfs(t, "size=1m")
	dir := filepath.Join(mnt, "spool")
	const n = 30000
	src := make(chan string)
	log := &errLog{}
	c, err := New(dir, src, String, WithBuffer(10), WithSegmentSize(128<<10), WithBatchBytes(16<<10),
		WithErrorHandler(log.handle), WithSync(SyncNever))
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < n; i++ {
			src <- noisyLine(r, i)
			sent.Add(1)
		}
		close(src)
	}()
	waitQuiet(c)
	if sent.Load() >= n {
		t.Fatalf("a 1 MiB tmpfs took all %d messages without blocking", n)
	}
	if log.count(ErrFull) == 0 {
		t.Fatalf("no ErrFull reported; errors: %v", log.errs)
	}
	seen := map[string]bool{}
	for m := range c.Out() {
		if seen[m] {
			t.Fatalf("duplicate %q", m[:12])
		}
		seen[m] = true
	}
	<-done
	if len(seen) != n {
		t.Fatalf("delivered %d of %d", len(seen), n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
