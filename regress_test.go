package pelichan

// Regression tests for what the review of the second phase found (a hostile cursor file,
// a quadratic reopen, Store at the disk cap, the write-ahead memory budget).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A 4 KiB cursor file whose done sets claim 240 records of 16M messages, each all done.
func TestRegressionHostileDoneSets(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String)
	if err != nil {
		t.Fatal(err)
	}
	close(src)
	c.Close()
	extra := []byte{'p', 'd', doneVersion}
	nrec := 240
	extra = binary.AppendUvarint(extra, uint64(nrec))
	for i := 0; i < nrec; i++ {
		extra = binary.AppendUvarint(extra, 1<<40) // seg far ahead of the cursor
		extra = binary.AppendUvarint(extra, uint64(i+1))
		extra = binary.AppendUvarint(extra, 1<<24)
		extra = binary.LittleEndian.AppendUint32(extra, 0)
		extra = binary.AppendUvarint(extra, 0)
		extra = binary.AppendUvarint(extra, 1)
		extra = binary.AppendUvarint(extra, 0)
		extra = binary.AppendUvarint(extra, 1<<24)
	}
	b := make([]byte, 52+len(extra))
	copy(b, "pcur")
	b[4] = 2
	binary.LittleEndian.PutUint64(b[28:], 1)
	binary.LittleEndian.PutUint64(b[36:], 1)
	binary.LittleEndian.PutUint32(b[44:], uint32(len(extra)))
	copy(b[48:], extra)
	binary.LittleEndian.PutUint32(b[48+len(extra):], crc32.Checksum(b[:48+len(extra)], crc32.MakeTable(crc32.Castagnoli)))
	if err := os.WriteFile(filepath.Join(dir, "cursor"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("cursor file: %d bytes", len(b))
	var before, ms runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	src2 := make(chan string)
	c2, err := New(dir, src2, String)
	runtime.ReadMemStats(&ms)
	ms.TotalAlloc -= before.TotalAlloc
	t.Logf("New took %v, err=%v, TotalAlloc=%d MiB", time.Since(start), err, ms.TotalAlloc>>20)
	if err != nil {
		t.Fatalf("New with hostile done sets: %v", err)
	}
	if ms.TotalAlloc > 64<<20 {
		t.Errorf("New with hostile done sets allocated %d MiB", ms.TotalAlloc>>20)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("New with hostile done sets took %v", took)
	}
	if s := c2.Stats(); s.OnDisk < 0 {
		t.Errorf("OnDisk %d after hostile done sets", s.OnDisk)
	}
	close(src2)
	akMustClose(t, c2)
}

// Write-ahead with acks at a low rate: every message is its own record. Nothing acked
// before Close; the next Chan's reader scanned the whole pre map for every record it
// reached (20k: 6.1 s; now about 0.15 s).
func TestRegressionPreQuadratic(t *testing.T) {
	for _, n := range []int{5000, 20000} {
		dir := t.TempDir()
		src := make(chan string)
		c, err := New(dir, src, String, WithWriteAhead(), WithAcks(n+10), WithSync(SyncNever), WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			akSend(t, src, fmt.Sprint(i), 5*time.Second)
			if _, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok {
				t.Fatalf("no delivery %d", i)
			}
		}
		akMustClose(t, c)
		start := time.Now()
		src2 := make(chan string)
		close(src2)
		c2, err := New(dir, src2, String, WithAcks(n+10), WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			d, ok, _ := akRecv(c2.Deliveries(), 5*time.Second)
			if !ok {
				t.Fatalf("n=%d: redelivery %d missing", n, i)
			}
			if err := c2.Ack(d.Seq); err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		t.Logf("n=%d: reopen and drain %v", n, took)
		if took > 5*time.Second {
			t.Errorf("n=%d: reopening and draining the unacknowledged deliveries took %v (quadratic?)", n, took)
		}
		akMustClose(t, c2)
	}
}

// The consumer gives a message back with Store while the spool is at its cap under Block:
// only the consumer can free space, and it was stuck in Store.
func TestRegressionStoreAtCapDeadlock(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithMaxDiskBytes(3<<20), WithSegmentSize(1<<20),
		WithWhenFull(Block), WithBuffer(10), WithErrorHandler(func(error) {}), WithCompression(S2))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case src <- fmt.Sprintf("%08d %s", i, strings.Repeat(fmt.Sprint(i*7919), 30)):
			case <-stop:
				return
			}
		}
	}()
	waitStats(t, c, 30*time.Second, "the cap to be reached", func(s Stats) bool { return s.Errors > 0 })
	// The consumer takes one, fails to send it, gives it back.
	var m string
	var ok bool
	select {
	case m, ok = <-c.Out():
	case <-time.After(5 * time.Second):
		ok = false
	}
	if !ok {
		t.Fatal("nothing on Out at the cap")
	}
	res := make(chan error, 1)
	go func() { res <- c.Store(m) }()
	select {
	case err := <-res:
		if err != nil && !errors.Is(err, ErrFull) {
			t.Errorf("Store at the cap: %v, want nil or ErrFull", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Store still blocked after 5 s at the cap; consumer deadlocked (DiskBytes %d)", c.Stats().DiskBytes)
	}
	if err := akClose(t, c); err != nil {
		t.Logf("Close at the cap: %v", err) // may name what could not be stored
	}
}

// Write-ahead, consumer keeps up; one message in two is too large. The memory budget
// leaked by the refused count: past it (8k messages) the Chan read every record back from
// disk. With the consumer paced to at most 100 behind, nothing is ever read back.
func TestRegressionWriteAheadMemLeak(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithWriteAhead(), WithMaxMessageBytes(100), WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range c.Out() {
			got.Add(1)
		}
	}()
	big := strings.Repeat("x", 200)
	const n = 40000
	for i := 0; i < n; i++ {
		akSend(t, src, "small message", 5*time.Second)
		akSend(t, src, big, 5*time.Second) // refused: too large
		deadline := time.Now().Add(5 * time.Second)
		for int64(i+1)-got.Load() > 100 {
			if time.Now().After(deadline) {
				t.Fatalf("consumer stuck at %d of %d", got.Load(), i+1)
			}
			runtime.Gosched()
		}
	}
	close(src)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Out not closed 10 s after src")
	}
	s := c.Stats()
	if got.Load() != n || s.Dropped != n {
		t.Errorf("received %d of %d, dropped %d of %d refused; stats %+v", got.Load(), n, s.Dropped, n, s)
	}
	if s.BytesRead != 0 {
		t.Errorf("write-ahead with a consumer at most 100 behind read %d bytes back from disk: the memory budget leaked", s.BytesRead)
	}
	akMustClose(t, c)
}

// TestRegressionPreDoneInLateSegments: the cursor file marks done many messages in
// segments that Open leaves to be counted in the background (all but the cursor's and the
// newest). New took them off the messages counted at open, at most all of those; the
// excess was lost, and OnDisk, once the late counts came in, held messages that were done
// and never delivered (seen in TestAcksModel as OnDisk > 0 after the final drain).
func TestRegressionPreDoneInLateSegments(t *testing.T) {
	dir := t.TempDir()
	const n = 3000
	opts := []Option{WithAcks(n), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	// Stored in many small segments; all delivered and all but the first acknowledged, so
	// the cursor stays at the first record and the done sets cover all the others.
	ltSetup(t, dir, n, opts)
	// Only the first message is left: OnDisk 1 at open and 0 once it is acknowledged.
	ltSession3(t, dir, opts, 1)
}

// Store right before src closes: the stored message is delivered before Out closes (the
// loop could see src closed and nothing in flight before the disk goroutine had written
// it, and close Out with it on disk until the next New).
func TestRegressionStoreRacesSrcClose(t *testing.T) {
	for trial := range 50 {
		dir := t.TempDir()
		src := make(chan string)
		c := open(t, dir, src)
		akSend(t, src, "first", 5*time.Second)
		v, ok, _ := recvString(c.Out(), 5*time.Second)
		if !ok || v != "first" {
			t.Fatalf("trial %d: got %q, %v", trial, v, ok)
		}
		if err := c.Store("given back"); err != nil {
			t.Fatal(err)
		}
		close(src)
		got, closed := drain(c.Out(), 5*time.Second)
		if !closed {
			t.Fatalf("trial %d: Out not closed", trial)
		}
		if len(got) != 1 || got[0] != "given back" {
			t.Fatalf("trial %d: after src closed, Out gave %q before closing, want the stored message", trial, got)
		}
		akMustClose(t, c)
	}
}

// A crash can lose the tail of the segment being written (SyncNever: the OS had not
// written it back) after the cursor file, checkpointed meanwhile, marked messages of those
// records done. They are neither stored nor to be taken off what is: OnDisk counts what
// is left, from Open on, and reaches zero once it is delivered. (It was one too low at
// Open, and the lost records' done messages were owed by every message stored later.)
// See losttail_test.go for the other places done sets can point at records not on disk.
func TestRegressionPreDoneInLostTail(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(60), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	segs := ltSetup(t, dir, 60, opts)
	// The crash image: the newest segment loses every record after its first (its file cut
	// back, no meta: it was being written).
	newest := segs[len(segs)-1]
	lost := ltCut(t, newest, 1)
	if err := os.Remove(filepath.Join(newest, "meta")); err != nil {
		t.Fatal(err)
	}

	// Session 3: only the first message is left; the lost ones are not counted anywhere.
	src := make(chan string)
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := c.Stats(); s.OnDisk != 1 {
		t.Errorf("session 3: OnDisk %d at open, want 1 (one message not acknowledged; %d records lost); %+v", s.OnDisk, lost, s)
	}
	ltTakeFirst(t, c)
	// What is stored from now on counts in full.
	for i := range 5 {
		if err := c.Store(akMsg("u", i)); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
	// Stored and not acknowledged, delivered or not: on disk.
	if s := c.Stats(); s.OnDisk != 5 {
		t.Errorf("session 3: OnDisk %d after 5 more stored, want 5; %+v", s.OnDisk, s)
	}
}
