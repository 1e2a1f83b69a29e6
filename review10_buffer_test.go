package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// r10WaitBuffered waits until readyCh's buffer holds want items (white-box), failing the
// test after d.
func r10WaitBuffered[T any](t *testing.T, c *Chan[T], want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for len(c.readyCh) < want {
		if time.Now().After(deadline) {
			t.Fatalf("readyCh's buffer holds %d items, want %d; stats %+v", len(c.readyCh), want, c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// r10Drain opens dir with a closed src and an ack-everything consumer (acks) or a plain
// one, and returns what came before Out or Deliveries closed, with the Stats after Close.
func r10Drain(t *testing.T, dir string, acks bool, opts ...Option) ([]string, []Delivery[string], Stats) {
	t.Helper()
	src := make(chan string)
	close(src)
	if acks {
		opts = append(opts, WithAcks(64))
	}
	c := open(t, dir, src, opts...)
	var got []string
	var dels []Delivery[string]
	if acks {
		dels = akDrainAcked(t, c, 10*time.Second)
		for _, d := range dels {
			got = append(got, d.Msg)
		}
	} else {
		var closed bool
		got, closed = drain(c.Out(), 10*time.Second)
		if !closed {
			t.Fatalf("Out not closed after %d messages (src closed); stats %+v", len(got), c.Stats())
		}
	}
	akMustClose(t, c)
	return got, dels, c.Stats()
}

// Close while refill items wait in readyCh's buffer (popped from readyQ, not taken by the
// loop): their messages stay stored and not done, counted OnDisk, and come once after
// New, not counted as redelivered. Items of one message each (Store writes one record per
// message), Out's buffer small, the consumer stalled after a few.
func TestReview10CloseWithItemsInReadyBuffer(t *testing.T) {
	const n = 300
	const took = 10
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{WithBuffer(2)}
			if ordered {
				opts = append(opts, WithOrdered())
			}
			dmStore(t, dir, []Option{WithBuffer(0)}, "r", n)
			c := open(t, dir, make(chan string), opts...)
			var first []string
			for i := range took {
				v, ok, _ := recvString(c.Out(), 5*time.Second)
				if !ok {
					t.Fatalf("message %d did not come", i)
				}
				first = append(first, v)
			}
			r10WaitBuffered(t, c, readyBuffer, 5*time.Second)
			time.Sleep(20 * time.Millisecond) // let the loop settle (Out full, cur held)
			if len(c.readyCh) != readyBuffer {
				t.Fatalf("buffer changed: %d", len(c.readyCh))
			}
			akMustClose(t, c)
			s := c.Stats()
			akIdentity(t, "after Close", s, n)
			if s.OnDisk != n-took {
				t.Errorf("after Close: OnDisk %d, want %d; %+v", s.OnDisk, n-took, s)
			}
			got, _, s2 := r10Drain(t, dir, false, opts...)
			all := append(append([]string(nil), first...), got...)
			var sent []string
			for i := range n {
				sent = append(sent, akMsg("r", i))
			}
			checkSame(t, "both sessions", sent, all)
			if ordered {
				checkOrder(t, "ordered", sent, all)
			}
			akIdentity(t, "second session", s2, n-took)
			if s2.OnDisk != 0 {
				t.Errorf("second session: OnDisk %d after draining", s2.OnDisk)
			}
			// At most Out's buffer was handed out and taken back.
			if s2.Redelivered > 2 {
				t.Errorf("second session: Redelivered %d, want at most 2 (Out's buffer)", s2.Redelivered)
			}
			t.Logf("first %+v\nsecond %+v", s, s2)
		})
	}
}

// The same with acknowledgements: 5 in the window, 3 acknowledged, the loop holds the
// next item and two wait in the buffer. After New: exactly the unacknowledged 2 count as
// redelivered, everything not acknowledged comes once, with the same IDs.
func TestReview10CloseWithItemsInReadyBufferAcks(t *testing.T) {
	const n = 300
	for _, wa := range []bool{false, true} {
		t.Run(fmt.Sprintf("writeahead=%v", wa), func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{WithBuffer(1), WithAcks(5)}
			var c *Chan[string]
			var sent []string
			for i := range n {
				sent = append(sent, akMsg("a", i))
			}
			if wa {
				// Written ahead and kept in memory: the items in the buffer are refill.wa ones.
				src := make(chan string)
				c = open(t, dir, src, append(opts, WithWriteAhead(), WithBatchBytes(256))...)
				go func() {
					for _, m := range sent {
						select {
						case src <- m:
						case <-time.After(10 * time.Second):
							return
						}
					}
				}()
				waitStats(t, c, 10*time.Second, "all received", func(s Stats) bool { return s.Received == n && s.InMemory == 0 })
			} else {
				dmStore(t, dir, []Option{WithBuffer(0)}, "a", n)
				c = open(t, dir, make(chan string), opts...)
			}
			var dels []Delivery[string]
			for i := range 5 {
				d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
				if !ok {
					t.Fatalf("delivery %d did not come", i)
				}
				dels = append(dels, d)
			}
			for _, d := range dels[:3] {
				if err := c.Ack(d.Seq); err != nil {
					t.Fatal(err)
				}
			}
			// The window refills by 3: take those too and leave them unacknowledged.
			for i := range 3 {
				d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
				if !ok {
					t.Fatalf("delivery %d did not come", 5+i)
				}
				dels = append(dels, d)
			}
			r10WaitBuffered(t, c, readyBuffer, 5*time.Second)
			time.Sleep(20 * time.Millisecond)
			st := c.Stats()
			t.Logf("before Close: buffered %d, %+v", len(c.readyCh), st)
			akMustClose(t, c)
			s := c.Stats()
			backlog := int64(n)
			if wa {
				backlog = 0
			}
			akIdentity(t, "after Close", s, backlog)
			if s.OnDisk != n-3 {
				t.Errorf("after Close: OnDisk %d, want %d; %+v", s.OnDisk, n-3, s)
			}
			got, gd, s2 := r10Drain(t, dir, true)
			acked := map[string]bool{}
			for _, d := range dels[:3] {
				acked[d.Msg] = true
			}
			var want []string
			for _, m := range sent {
				if !acked[m] {
					want = append(want, m)
				}
			}
			checkSame(t, "second session", want, got)
			if s2.Redelivered != 5 {
				t.Errorf("second session: Redelivered %d, want 5 (the unacknowledged deliveries)", s2.Redelivered)
			}
			ids := map[string]MsgID{}
			for _, d := range gd {
				ids[d.Msg] = d.ID
			}
			for _, d := range dels[3:] {
				if wa && ids[d.Msg] != d.ID {
					t.Errorf("%q: ID %v, was %v", d.Msg, ids[d.Msg], d.ID)
				}
			}
			akIdentity(t, "second session", s2, n-3)
			t.Logf("first %+v\nsecond %+v", s, s2)
		})
	}
}

// src closed: Out closes only once everything is delivered, also while the loop takes
// items from readyCh's buffer without the disk goroutine selecting (it learns of it only
// when the item comes back). Many one-message items, consumer paces varied.
func TestReview10SrcClosedDrainsBuffer(t *testing.T) {
	const n = 400
	dir := t.TempDir()
	dmStore(t, dir, nil, "s", n)
	var sent []string
	for i := range n {
		sent = append(sent, akMsg("s", i))
	}
	for round := range 6 {
		src := make(chan string)
		close(src)
		c := open(t, dir, src, WithBuffer(round%3))
		var got []string
		for {
			v, ok, closed := recvString(c.Out(), 10*time.Second)
			if closed {
				break
			}
			if !ok {
				t.Fatalf("round %d: Out not closed after %d messages; stats %+v; buffered %d", round, len(got), c.Stats(), len(c.readyCh))
			}
			got = append(got, v)
			if round >= 3 && len(got)%7 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		s := c.Stats()
		akMustClose(t, c)
		checkSame(t, fmt.Sprintf("round %d", round), sent, got)
		akIdentity(t, "after drain", s, n)
		if s.OnDisk != 0 {
			t.Errorf("round %d: OnDisk %d", round, s.OnDisk)
		}
		// Store them again for the next round.
		dmStore(t, dir, nil, "s", n)
	}
}
