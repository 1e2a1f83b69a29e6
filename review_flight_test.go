package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// Review of 705dbde (leaveFlight): src is closed while batches and Store messages are on
// their way through the disk goroutine, in write-ahead and spill modes, with and without
// acknowledgements. Out (Deliveries) must close only once every message taken from src
// and every message given to Store (before src was closed and accepted) has been
// delivered, and must close (no hang). Many short rounds, to vary the interleavings.
func TestReviewSrcCloseWithFlights(t *testing.T) {
	for _, wa := range []bool{false, true} {
		for _, acks := range []bool{false, true} {
			t.Run(fmt.Sprintf("wa=%v,acks=%v", wa, acks), func(t *testing.T) {
				rounds := 60
				for round := range rounds {
					reviewFlightRound(t, wa, acks, round)
					if t.Failed() {
						return
					}
				}
			})
		}
	}
}

func reviewFlightRound(t *testing.T, wa, acks bool, round int) {
	t.Helper()
	src := make(chan string, 64)
	opts := []Option{WithBuffer(4), WithLinger(2 * time.Millisecond)}
	if wa {
		opts = append(opts, WithWriteAhead())
	}
	if acks {
		opts = append(opts, WithAcks(50))
	}
	c := open(t, t.TempDir(), src, opts...)
	n := 200 + round*7
	stores := make(chan int, 1)
	go func() {
		k := 0
		for i := range n {
			src <- fmt.Sprintf("m%05d", i)
			if i%37 == 5 {
				if err := c.Store(fmt.Sprintf("s%05d", i)); err == nil {
					k++
				}
			}
		}
		close(src)
		stores <- k
	}()
	got := 0
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	if acks {
	loopA:
		for {
			select {
			case d, ok := <-c.Deliveries():
				if !ok {
					break loopA
				}
				got++
				c.Ack(d.Seq)
				if got%50 == 0 {
					time.Sleep(time.Millisecond) // the consumer falls behind: spill
				}
			case <-timer.C:
				t.Fatalf("round %d: Deliveries not closed within 20 s after %d; stats %+v", round, got, c.Stats())
			}
		}
	} else {
	loop:
		for {
			select {
			case _, ok := <-c.Out():
				if !ok {
					break loop
				}
				got++
				if got%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			case <-timer.C:
				t.Fatalf("round %d: Out not closed within 20 s after %d; stats %+v", round, got, c.Stats())
			}
		}
	}
	k := <-stores
	if got != n+k {
		t.Errorf("round %d: Out closed after %d messages, want %d taken from src + %d stored", round, got, n, k)
	}
	akMustClose(t, c)
	s := c.Stats()
	checkBalance(t, s)
	if s.OnDisk != 0 || s.InMemory != 0 {
		t.Errorf("round %d: after the drain %+v", round, s)
	}
}
