package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// Ordered, graceful: a consumer a little slower than the producer (so flushes happen while
// Out holds direct passes, which d1402a3 now shadows first), stopped before Close; the next
// Chan continues in src order, nothing twice, nothing lost; Stats balance throughout. With
// and without acks (with acks, every delivery received is acknowledged before Close).
func TestReview9OrderedShadowFirstGraceful(t *testing.T) {
	for _, acks := range []bool{false, true} {
		for _, buf := range []int{10, 1024} {
			t.Run(fmt.Sprintf("acks=%v/buffer=%d", acks, buf), func(t *testing.T) {
				review9OrderedRun(t, acks, buf)
			})
		}
	}
}

func review9OrderedRun(t *testing.T, acks bool, buf int) {
	dir := t.TempDir()
	const n = 20000
	opts := []Option{WithOrdered(), WithBuffer(buf), WithBatchBytes(4 << 10), WithLinger(20 * time.Millisecond), WithSync(SyncNever)}
	if acks {
		opts = append(opts, WithAcks(64))
	}
	var got []string
	next := 0
	var backlog int64 // OnDisk at the last Close: what the next Chan finds
	for round := 0; ; round++ {
		if round > 8 {
			t.Fatalf("not done after %d rounds: %d of %d", round, len(got), n)
		}
		src := make(chan string)
		c, err := New(dir, src, String, opts...)
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		prodDone := make(chan struct{})
		go func() {
			defer close(prodDone)
			for ; next < n; next++ {
				select {
				case src <- fmt.Sprintf("m%05d", next):
				case <-stop:
					return
				}
			}
			close(src)
		}()
		deadline := time.Now().Add(300 * time.Millisecond)
		closed := false
		for time.Now().Before(deadline) && !closed {
			if acks {
				select {
				case d, ok := <-c.Deliveries():
					if !ok {
						closed = true
						break
					}
					got = append(got, d.Msg)
					if err := c.Ack(d.Seq); err != nil {
						t.Fatal(err)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("round %d: nothing for 2 s; %+v", round, c.Stats())
				}
			} else {
				select {
				case v, ok := <-c.Out():
					if !ok {
						closed = true
						break
					}
					got = append(got, v)
				case <-time.After(2 * time.Second):
					t.Fatalf("round %d: nothing for 2 s; %+v", round, c.Stats())
				}
			}
			if len(got)%20 == 0 {
				time.Sleep(time.Millisecond) // slower than the producer
				if s, ok := statsWithin(c, 5*time.Second); ok {
					checkBalance(t, s, backlog)
				}
			}
		}
		close(stop)
		<-prodDone
		if err := akClose(t, c); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		s := c.Stats()
		checkBalance(t, s, backlog)
		backlog = s.OnDisk
		if s.InMemory != 0 {
			t.Errorf("round %d: after Close InMemory %d: %+v", round, s.InMemory, s)
		}
		t.Logf("round %d: %d received so far, %d sent; %+v", round, len(got), next, s)
		if closed && next >= n {
			break
		}
	}
	// Drain what is left.
	src := make(chan string)
	close(src)
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if acks {
		for {
			d, ok := <-c.Deliveries()
			if !ok {
				break
			}
			got = append(got, d.Msg)
			c.Ack(d.Seq)
		}
	} else {
		rest, ok := drain(c.Out(), 10*time.Second)
		if !ok {
			t.Fatal("final drain: Out not closed")
		}
		got = append(got, rest...)
	}
	akMustClose(t, c)
	if len(got) != n {
		t.Errorf("received %d, want %d", len(got), n)
	}
	for i, v := range got {
		if want := fmt.Sprintf("m%05d", i); v != want {
			t.Fatalf("position %d: %s, want %s (ordered, graceful); around: %v", i, v, want, got[max(0, i-3):min(len(got), i+4)])
		}
	}
}

// Ordered Close while the shadow that a flush now writes first (d1402a3) is still queued
// or being encoded: Close takes Out's messages back and stores them in front; their
// copies in the shadow (written at Close, behind) must not come out again. The next Chan
// delivers everything in src order, once.
func TestReview9OrderedCloseWithShadowInFlight(t *testing.T) {
	for _, stuckAt := range []string{"compressor", "queued"} {
		t.Run(stuckAt, func(t *testing.T) {
			dir := t.TempDir()
			g := review9GateCodec{make(chan struct{})}
			src := make(chan string)
			c, err := New(dir, src, Codec[string](g), WithOrdered(), WithBuffer(10), WithBatchBytes(1<<10),
				WithLinger(10*time.Second), WithSync(SyncNever))
			if err != nil {
				t.Fatal(err)
			}
			limit := 26 // Out's 10, one batch of 16: the shadow is in the compressor
			if stuckAt == "queued" {
				limit = 1000 // until the producer blocks
			}
			sent := 0
			for ; sent < limit; sent++ {
				select {
				case src <- fmt.Sprintf("m%05d", sent):
					continue
				case <-time.After(300 * time.Millisecond):
				}
				break
			}
			s, _ := statsWithin(c, 5*time.Second)
			checkBalance(t, s)
			t.Logf("sent %d; Out %d; %+v", sent, len(c.Out()), s)
			go func() { time.Sleep(100 * time.Millisecond); close(g.gate) }()
			if err := akClose(t, c); err != nil {
				t.Fatalf("Close: %v", err)
			}
			s = c.Stats()
			checkBalance(t, s)
			if s.OnDisk != int64(sent) || s.InMemory != 0 {
				t.Errorf("after Close: %+v, want all %d on disk", s, sent)
			}
			src2 := make(chan string)
			close(src2)
			c2, err := New(dir, src2, String, WithOrdered())
			if err != nil {
				t.Fatal(err)
			}
			got, closed := drain(c2.Out(), 10*time.Second)
			if !closed {
				t.Fatalf("Out not closed; %d received", len(got))
			}
			akMustClose(t, c2)
			if len(got) != sent {
				t.Errorf("received %d, want %d: %v", len(got), sent, got[:min(len(got), 30)])
			}
			for i, v := range got {
				if want := fmt.Sprintf("m%05d", i); v != want {
					t.Fatalf("position %d: %s, want %s; first: %v", i, v, want, got[:min(len(got), 30)])
				}
			}
		})
	}
}
