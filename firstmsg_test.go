package pelichan

import (
	"testing"
	"time"
)

// After New on a backlog of many segments, the reader decodes one record before the rest
// and the spool's background counting waits for it (so that the first message is not
// held up). Neither may stall: with a consumer that takes nothing, Stats (which waits for
// the counts once) returns the whole backlog, and the first message then comes, followed
// by every other, once each.
func TestFirstMessageAndLateCountsAfterOpen(t *testing.T) {
	dir := t.TempDir()
	const n = 600
	opts := []Option{WithSegmentSize(1 << 10), WithBatchBytes(256), WithBuffer(0)}
	dmStore(t, dir, opts, "f", n)

	c := open(t, dir, make(chan string), opts...)
	stats := make(chan Stats, 1)
	go func() { stats <- c.Stats() }()
	var s Stats
	select {
	case s = <-stats:
	case <-time.After(10 * time.Second):
		t.Fatal("Stats did not return within 10s of New with a stalled consumer: the background counts never came")
	}
	if s.Segments < 10 {
		t.Fatalf("%d segments: the test wants a backlog Open leaves mostly to the background", s.Segments)
	}
	if s.OnDisk+s.InMemory != n {
		t.Errorf("at open with a stalled consumer: OnDisk %d + InMemory %d, want %d", s.OnDisk, s.InMemory, n)
	}
	checkBalance(t, s, n)

	seen := map[string]bool{}
	for i := range n {
		v, ok, _ := recvString(c.Out(), 5*time.Second)
		if !ok {
			t.Fatalf("message %d of %d did not come within 5s; stats %+v", i+1, n, c.Stats())
		}
		if seen[v] {
			t.Fatalf("%q delivered twice", v)
		}
		seen[v] = true
	}
	for i := range n {
		if m := akMsg("f", i); !seen[m] {
			t.Errorf("%q not delivered", m)
		}
	}
	s = waitStats(t, c, 5*time.Second, "OnDisk 0", func(s Stats) bool { return s.OnDisk == 0 })
	checkBalance(t, s, n)
	mustClose(t, c)
}
