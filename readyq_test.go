package pelichan

import (
	"strings"
	"testing"
	"time"
)

// Write-ahead with SyncAlways and a producer, over a backlog: the disk goroutine spends
// most of its time in fsync, one per group commit. With an unbuffered readyCh it met the
// loop in a select only a few times a second, and the backlog came out at a few hundred
// to a few thousand messages a second (TestCrashWriteAhead's lives with sync "always"
// delivered 10-260 messages in a second, and acknowledgements waited beyond the
// checkpoint window). The backlog must drain while the producer goes on.
func TestWriteAheadSyncAlwaysBacklogDrains(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := t.TempDir()
	const backlog = 20000
	src := make(chan string)
	// Small records: many items to hand over, as with log lines that compress less well.
	c := open(t, dir, src, WithSegmentSize(64<<10), WithBatchBytes(2<<10))
	for i := 0; i < backlog; i++ {
		akSend(t, src, msg("old-", i), 5*time.Second)
	}
	akWithin(t, 10*time.Second, "Close", func() { c.Close() })

	src = make(chan string)
	c = open(t, dir, src, WithWriteAhead(), WithSync(SyncAlways), WithAcks(1000), WithBuffer(256),
		WithSegmentSize(64<<10))
	stop := make(chan struct{})
	prodDone := make(chan struct{})
	go func() { // about 10k messages a second, as long as the backlog drains
		defer close(prodDone)
		tk := time.NewTicker(100 * time.Microsecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			select {
			case src <- msg("new-", i):
			case <-stop:
				return
			}
		}
	}()
	t0 := time.Now()
	old := 0
	deadline := time.After(10 * time.Second)
	for old < backlog {
		select {
		case d := <-c.Deliveries():
			if strings.HasPrefix(d.Msg, "old-") {
				old++
			}
			if err := c.Ack(d.Seq); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			close(stop)
			<-prodDone
			t.Fatalf("%d of the backlog of %d delivered in 10 s; %+v", old, backlog, c.Stats())
		}
	}
	close(stop)
	<-prodDone
	s := c.Stats()
	t.Logf("backlog of %d delivered in %v beside the producer; %+v", backlog, time.Since(t0), s)
	// Not a speed bar: the producer's pace is the fsync's, so this compares the reader's
	// progress with the writer's. With the backlog read back at the consumer's pace, it
	// is out long before the producer stored a quarter as many.
	if s.Received >= backlog/4 {
		t.Errorf("the producer stored %d messages while the backlog of %d came out", s.Received, backlog)
	}
	akWithin(t, 10*time.Second, "Close", func() { c.Close() })
}
