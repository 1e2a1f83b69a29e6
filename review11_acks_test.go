package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// Review 11 (acks): with write-ahead, SyncAlways and WithAcks, done IDs (acknowledged
// deliveries) reach the disk goroutine through ctlCh; one may sit in its buffer at Close.
// An acknowledged message is never delivered again after a graceful restart, and every
// message comes back until acknowledged.
func TestReview11AckedNotRedelivered(t *testing.T) {
	opts := []Option{WithWriteAhead(), WithSync(SyncAlways), WithBatchBytes(512), WithBuffer(16), WithAcks(64)}
	for iter := range 15 {
		dir := t.TempDir()
		src := make(chan string, 32)
		c := open(t, dir, src, opts...)
		acked := map[string]int{}
		consDone := make(chan struct{})
		go func() {
			defer close(consDone)
			for d := range c.Deliveries() {
				if c.Ack(d.Seq) == nil {
					acked[d.Msg]++
				}
			}
		}()
		stop := make(chan struct{})
		sent := make(chan int, 1)
		go func() {
			i := 0
			defer func() { sent <- i }()
			for ; i < 5000; i++ {
				select {
				case src <- msg(fmt.Sprintf("a%d-", iter), i):
				case <-stop:
					return
				}
			}
		}()
		time.Sleep(time.Duration(10+iter*3) * time.Millisecond)
		akMustClose(t, c)
		close(stop)
		n := <-sent
		akWithin(t, 10*time.Second, "consumer ending", func() { <-consDone })
		notTaken := map[string]bool{}
		for len(src) > 0 {
			notTaken[<-src] = true
		}
		st := c.Stats()
		r11Balance(t, "after Close", st)
		// Reopen: acknowledge everything.
		src2 := make(chan string)
		close(src2)
		c2 := open(t, dir, src2, opts...)
		again := map[string]int{}
		akWithin(t, 20*time.Second, "drain after reopen", func() {
			for d := range c2.Deliveries() {
				again[d.Msg]++
				if err := c2.Ack(d.Seq); err != nil {
					t.Errorf("Ack: %v", err)
				}
			}
		})
		akMustClose(t, c2)
		for i := range n {
			v := msg(fmt.Sprintf("a%d-", iter), i)
			if notTaken[v] {
				continue
			}
			if acked[v]+again[v] != 1 {
				t.Errorf("iter %d: %s acknowledged %d times before Close, delivered %d times after", iter, v, acked[v], again[v])
			}
		}
		if t.Failed() {
			t.Logf("iter %d: %d sent, %d acked, %d after reopen; %+v", iter, n, len(acked), len(again), st)
			return
		}
	}
}
