package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// An ordered Close whose Out holds messages refilled from several spool segments followed
// by messages handed out from memory (so drainOut takes them all back and finish puts them
// in a front segment after advancing the cursor over the refilled ones), then New on the
// same directory: the graceful path must deliver each message exactly once, in order. One
// or two such Closes in a row, with and without acks. (Written in review of a change,
// since reverted, that kept the passed segments until Front's checkpoint: they were read
// again after the front segment.)
func TestReview4OrderedCloseFrontOverSegments(t *testing.T) {
	for _, acks := range []bool{false, true} {
		for _, closes := range []int{1, 2} {
			t.Run(fmt.Sprintf("acks=%v/closes=%d", acks, closes), func(t *testing.T) {
				review4OrderedClose(t, acks, closes)
			})
		}
	}
}

func review4OrderedClose(t *testing.T, acks bool, closes int) {
	const perRound = 1000
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(400), WithSegmentSize(1 << 10), WithBatchBytes(256),
		WithLinger(2 * time.Millisecond), WithSync(SyncNever)}
	if acks {
		opts = append(opts, WithAcks(1000))
	}
	var sent, got []string
	recv := func(c *Chan[string], k int) {
		t.Helper()
		for i := 0; i < k; i++ {
			if acks {
				d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
				if !ok {
					t.Fatalf("no delivery within 5s after %d", len(got))
				}
				got = append(got, d.Msg)
				if err := c.Ack(d.Seq); err != nil {
					t.Fatal(err)
				}
				continue
			}
			select {
			case m := <-c.Out():
				got = append(got, m)
			case <-time.After(5 * time.Second):
				t.Fatalf("no message within 5s after %d", len(got))
			}
		}
	}
	for round := 0; round < closes; round++ {
		src := make(chan string)
		c := open(t, dir, src, opts...)
		recv(c, len(sent)-len(got)-350) // what earlier rounds left, but about 350
		for i := 0; i < perRound; i++ {
			m := msg(fmt.Sprintf("r%d-", round), i)
			sent = append(sent, m)
			akSend(t, src, m, 5*time.Second) // consumer stalled: spilled
		}
		time.Sleep(100 * time.Millisecond)
		recv(c, len(sent)-len(got)-300) // Out refilled from disk: 300 refilled messages left
		time.Sleep(100 * time.Millisecond)
		for i := perRound; i < perRound+10; i++ { // handed out from memory behind them
			m := msg(fmt.Sprintf("r%d-", round), i)
			sent = append(sent, m)
			akSend(t, src, m, 5*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
		if err := akClose(t, c); err != nil {
			t.Fatalf("close %d: %v", round+1, err)
		}
	}
	rest, st := clReopen(t, dir, false, opts[:len(opts)-review4BoolInt(acks)]...)
	got = append(got, rest...)
	t.Logf("delivered %d of %d; last Chan %+v", len(got), len(sent), st)
	checkSame(t, "after ordered Closes", sent, got)
	for i := range got {
		if i < len(sent) && got[i] != sent[i] {
			t.Errorf("order: message %d is %q, want %q", i, got[i], sent[i])
			break
		}
	}
}

func review4BoolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
