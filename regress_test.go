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
