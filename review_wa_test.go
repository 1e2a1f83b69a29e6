package pelichan

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Review of 43020ae (c): write-ahead records registered with sent=0 and marked sent as
// items come back (returned) or at Close (req.sentUpTo). The common case: batches of
// log-sized messages are one record each, and the count is right (this passes). See
// TestReviewWriteAheadRedeliveredSpanningRecords for a batch of several records.
func TestReviewWriteAheadRedeliveredMultiRecordBatch(t *testing.T) {
	const n, k = 1000, 300
	dir := t.TempDir()
	pad := strings.Repeat("x", 400)
	src := make(chan string, n)
	for i := range n {
		src <- fmt.Sprintf("%s-%s", akMsg("m", i), pad)
	}
	opts := []Option{WithWriteAhead(), WithAcks(5000), WithBuffer(10)}
	c := open(t, dir, src, opts...)
	ids := map[string]bool{}
	for i := range k { // received, never acknowledged
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("delivery %d did not come", i+1)
		}
		key := fmt.Sprintf("%d.%d", d.ID.Seg, d.ID.Index)
		if !ids[key] {
			t.Logf("delivery %d: first of record %s (msg %d)", i+1, key, d.ID.Msg)
		}
		ids[key] = true
	}
	s1 := waitStats(t, c, 5*time.Second, "Unacked = the received and the buffered", func(s Stats) bool { return s.Unacked == k+10 })
	t.Logf("session 1: the %d deliveries received came from %d records", k, len(ids))
	akMustClose(t, c)
	checkRedelivered(t, dir, opts, n, s1.Unacked, 5*time.Second)
}

// The same with a batch that really spans two records: a record holds at most
// segment.MaxRawSize (64 MiB) of messages, so four messages of 22 MiB taken in one
// write-ahead batch make two records of two. The consumer receives three (the whole first
// record and one of the second) and Close comes: only the record of the last message
// handed out is marked sent (req.sentUpTo); the first record, handed out whole from the same
// item, keeps sent=0 (no ctl message carries lastSent while nothing is acknowledged), and
// after the restart its messages are delivered again without counting in Redelivered.
func TestReviewWriteAheadRedeliveredSpanningRecords(t *testing.T) {
	const n, k = 4, 3
	dir := t.TempDir()
	big := strings.Repeat("x", 22<<20)
	src := make(chan string, n)
	for i := range n {
		src <- fmt.Sprintf("%d-%s", i, big)
	}
	opts := []Option{WithWriteAhead(), WithAcks(100), WithBuffer(0)}
	c := open(t, dir, src, opts...)
	recs := map[string]bool{}
	for i := range k { // received, never acknowledged
		d, ok, _ := akRecv(c.Deliveries(), 20*time.Second)
		if !ok {
			t.Fatalf("delivery %d did not come", i+1)
		}
		recs[fmt.Sprintf("%d.%d", d.ID.Seg, d.ID.Index)] = true
		t.Logf("delivery %d: ID %v", d.Seq, d.ID)
	}
	if len(recs) != 2 {
		t.Skipf("the %d deliveries came from %d records, want 2", k, len(recs))
	}
	s1, _ := statsWithin(c, 5*time.Second)
	t.Logf("session 1 before Close: Unacked %d", s1.Unacked)
	akMustClose(t, c)
	checkRedelivered(t, dir, opts, n, k, 20*time.Second) // the first Chan handed out k, none acknowledged
}

// Review of 6111589 at the Chan's level: when the reader catches up with the writer (a
// consumer that falls behind now and then, so messages are spilled and read back), the
// segment read to its end is deleted before the next is needed, the cursor moves to
// {Seg: N+1}, and the next segment is numbered N+2: the spare made for N+1 is thrown away
// (removed) and N+2 made in the disk goroutine's path. Segment numbers in the IDs then go
// up by 2. (In write-ahead mode the spare is used: the record that fills a segment is not
// done before the next one is written.)
func TestReviewSpareWastedOnRefill(t *testing.T) {
	for _, wa := range []bool{false, true} {
		t.Run(fmt.Sprintf("writeAhead=%v", wa), func(t *testing.T) {
			src := make(chan string)
			opts := []Option{WithAcks(100), WithSegmentSize(1 << 10), WithBuffer(1), WithLinger(time.Millisecond)}
			if wa {
				opts = append(opts, WithWriteAhead())
			}
			c := open(t, t.TempDir(), src, opts...)
			got := make(chan []uint64, 1)
			go func() {
				var ss []uint64
				n := 0
				for d := range c.Deliveries() {
					if d.ID.Seg != 0 {
						if k := len(ss); k == 0 || ss[k-1] != d.ID.Seg {
							ss = append(ss, d.ID.Seg)
						}
					}
					c.Ack(d.Seq)
					if n++; n%100 == 0 {
						time.Sleep(5 * time.Millisecond) // falls behind now and then
					}
				}
				got <- ss
			}()
			for i := range 4000 {
				akSend(t, src, akMsg("w", i), 5*time.Second)
			}
			close(src)
			var segs []uint64
			select {
			case segs = <-got:
			case <-time.After(30 * time.Second):
				t.Fatal("Deliveries not closed within 30 s")
			}
			akMustClose(t, c)
			skips := 0
			for i := 1; i < len(segs); i++ {
				if segs[i]-segs[i-1] > 1 {
					skips++
				}
			}
			t.Logf("%d segments seen in IDs; %d steps skipped a number: %v", len(segs), skips, segs[:min(len(segs), 10)])
			if skips > 0 {
				t.Errorf("%d of %d rotations skipped a number (the spare thrown away)", skips, len(segs)-1)
			}
		})
	}
}

// The same after an idle pause: the idle Chan seals its segment (SealIdle), which is
// deleted once done, the cursor moves to {Seg: N+1}, and the first write after the pause
// makes segment N+2 in the disk goroutine's path after removing the spare N+1 there.
func TestReviewSpareWastedAfterIdle(t *testing.T) {
	src := make(chan string)
	c := open(t, t.TempDir(), src, WithWriteAhead(), WithAcks(100))
	seg := func(prefix string) uint64 {
		akSend(t, src, prefix, 5*time.Second)
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatal("no delivery within 5 s")
		}
		if err := c.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
		return d.ID.Seg
	}
	first := seg("before the pause")
	time.Sleep(2500 * time.Millisecond) // idleRelease (1 s) and a checkpoint tick: sealed idle
	second := seg("after the pause")
	akMustClose(t, c)
	t.Logf("segment before the pause %d, after %d", first, second)
	if second != first+1 {
		t.Errorf("the segment after the pause is %d, not %d: the spare made for it was thrown away", second, first+1)
	}
}
