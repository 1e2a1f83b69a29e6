package pelichan

import (
	"testing"
	"time"
)

// Ordered mode with acknowledgements (pre-existing, not from cdaccb9; in the code it builds
// on). Session 1 closes with messages in memory: a front segment F1. Session 2 delivers
// F1's messages and the consumer acknowledges all but the first (any order is allowed);
// a new message from src is delivered from memory and not acknowledged. Close puts it in
// front (F2): the cursor is in F1 (its first message is not done), finish forgets F1's done
// sets (tr.dropSeg) and Front copies F1's rest from the cursor's offset (restOf), the
// acknowledged messages included. Session 3 delivers them again: acknowledged messages
// delivered twice on the graceful path ("an acknowledged one never is").
func TestReview6AcksOrderedFrontChainRedeliversAcked(t *testing.T) {
	dir := t.TempDir()
	base := []Option{WithOrdered(), WithBuffer(100), WithLinger(time.Minute), WithSync(SyncNever),
		WithErrorHandler(func(error) {})}
	// Session 1: 10 messages wait in Out at Close: F1.
	src := make(chan string)
	c := open(t, dir, src, base...)
	for i := 0; i < 10; i++ {
		akSend(t, src, msg("f1-", i), 5*time.Second)
	}
	time.Sleep(20 * time.Millisecond)
	if err := akClose(t, c); err != nil {
		t.Fatal(err)
	}
	// Session 2, with acks.
	opts := append(base[:len(base):len(base)], WithAcks(100))
	src2 := make(chan string)
	c2 := open(t, dir, src2, opts...)
	var got []Delivery[string]
	for len(got) < 10 {
		d, ok, closed := akRecv(c2.Deliveries(), 5*time.Second)
		if !ok || closed {
			t.Fatalf("session 2: %d deliveries of F1, want 10", len(got))
		}
		got = append(got, d)
	}
	acked := map[string]bool{}
	for _, d := range got[1:] {
		if err := c2.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
		acked[d.Msg] = true
	}
	mem := msg("mem-", 0)
	akSend(t, src2, mem, 5*time.Second)
	if d, ok, _ := akRecv(c2.Deliveries(), 5*time.Second); !ok || d.Msg != mem {
		t.Fatalf("session 2: want %q delivered from memory, got %q (%v)", mem, d.Msg, ok)
	}
	time.Sleep(150 * time.Millisecond) // the acknowledgements reach the disk goroutine and a checkpoint
	if err := akClose(t, c2); err != nil {
		t.Fatal(err)
	}
	st2 := c2.Stats()
	rest, st3 := clReopen(t, dir, true, opts...)
	t.Logf("session 2 %+v\nsession 3 delivered %q\n%+v", st2, rest, st3)
	twice := 0
	for _, m := range rest {
		if acked[m] {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d acknowledged messages delivered again after New", twice)
	}
	want := map[string]bool{got[0].Msg: true, mem: true}
	for _, m := range rest {
		delete(want, m)
	}
	if len(want) > 0 {
		t.Errorf("not acknowledged, not delivered after New: %v", want)
	}
}
