package pelichan

// Regression tests for what the review of the second phase found (a hostile cursor file,
// a quadratic reopen, Store at the disk cap, the write-ahead memory budget).

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
	if c2 != nil {
		if s := c2.Stats(); s.OnDisk < 0 {
			t.Errorf("OnDisk %d after hostile done sets", s.OnDisk)
		}
		close(src2)
		c2.Close()
	}
}

// Write-ahead with acks at a low rate: every message is its own record. Nothing acked
// before Close; the next Chan's reader scans the whole pre map for every record it reaches.
func TestRegressionPreQuadratic(t *testing.T) {
	for _, n := range []int{5000, 20000} {
		dir := t.TempDir()
		src := make(chan string)
		c, err := New(dir, src, String, WithWriteAhead(), WithAcks(n+10), WithSync(SyncNever), WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			src <- fmt.Sprint(i)
			<-c.Deliveries()
		}
		c.Close()
		fi, _ := os.Stat(filepath.Join(dir, "cursor"))
		start := time.Now()
		src2 := make(chan string)
		c2, err := New(dir, src2, String, WithAcks(n+10), WithErrorHandler(func(error) {}))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			d := <-c2.Deliveries()
			c2.Ack(d.Seq)
		}
		t.Logf("n=%d: cursor file %d bytes; reopen and drain %v", n, fi.Size(), time.Since(start))
		close(src2)
		c2.Close()
	}
}

// The consumer gives a message back with Store while the spool is at its cap under Block:
// only the consumer can free space, and it is stuck in Store.
func TestRegressionStoreAtCapDeadlock(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithMaxDiskBytes(3<<20), WithSegmentSize(1<<20),
		WithWhenFull(Block), WithBuffer(10), WithErrorHandler(func(error) {}), WithCompression(S2))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case src <- fmt.Sprintf("%08d %s", i, strings.Repeat(fmt.Sprint(i*7919), 30)):
			case <-stop:
				return
			}
		}
	}()
	for {
		time.Sleep(500 * time.Millisecond)
		s := c.Stats()
		if s.Errors > 0 {
			t.Logf("at cap: %+v", s.DiskBytes)
			break
		}
	}
	m := <-c.Out() // the consumer takes one, fails to send it, gives it back
	res := make(chan error, 1)
	go func() { res <- c.Store(m) }()
	select {
	case err := <-res:
		t.Logf("Store returned %v", err)
	case <-time.After(5 * time.Second):
		t.Errorf("Store still blocked after 5 s at the cap; consumer deadlocked (Stats %+v)", c.Stats().DiskBytes)
	}
	close(stop)
	start := time.Now()
	c.Close()
	t.Logf("Close took %v", time.Since(start))
}

// Write-ahead, consumer keeps up; one message in 4 is too large. memMsgs leaks by the
// refused count; past 64k the Chan reads every record back from disk.
func TestRegressionWriteAheadMemLeak(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithWriteAhead(), WithMaxMessageBytes(100), WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int)
	go func() {
		n := 0
		for range c.Out() {
			n++
		}
		got <- n
	}()
	big := strings.Repeat("x", 200)
	phase := func(k int) {
		for i := 0; i < k; i++ {
			src <- "small message"
			src <- big
		}
		time.Sleep(300 * time.Millisecond)
		s := c.Stats()
		t.Logf("after %d: BytesRead=%d BytesWritten=%d Dropped=%d", k, s.BytesRead, s.BytesWritten, s.Dropped)
	}
	phase(20000)
	phase(50000)
	phase(20000)
	close(src)
	if n := <-got; n != 90000 {
		t.Errorf("received %d of 90000", n)
	}
	c.Close()
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

	// Session 1: n messages stored, in many small segments.
	src := make(chan string)
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := c.Store(akMsg("r", i)); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
	akMustClose(t, c)

	// Session 2: every message delivered; all but the first acknowledged, so the cursor
	// stays at the first record and the done sets cover all the others.
	src = make(chan string)
	c, err = New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.OnDisk != n {
		t.Fatalf("session 2: OnDisk %d at open, want %d", s.OnDisk, n)
	}
	for i := range n {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("session 2: delivery %d of %d did not come; stats %+v", i+1, n, c.Stats())
		}
		if i > 0 {
			if err := c.Ack(d.Seq); err != nil {
				t.Fatalf("Ack(%d): %v", d.Seq, err)
			}
		}
	}
	akMustClose(t, c)

	// Session 3: only the first message is left.
	src = make(chan string)
	c, err = New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := c.Stats(); s.OnDisk != 1 {
		t.Errorf("session 3: OnDisk %d at open, want 1 (one message not acknowledged); %+v", s.OnDisk, s)
	}
	close(src)
	got := akDrainAcked(t, c, 5*time.Second)
	if len(got) != 1 || got[0].Msg != akMsg("r", 0) {
		t.Errorf("session 3: %d deliveries, want the first message alone", len(got))
	}
	if s := c.Stats(); s.OnDisk != 0 {
		t.Errorf("session 3: OnDisk %d after the drain, want 0; %+v", s.OnDisk, s)
	}
}
