package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// Ordered mode with a backlog and a live producer: the messages of items waiting in
// readyCh's buffer are older than anything pending, so nothing pending may go out (or be
// sent straight from src) while the buffer holds an item. A Close in the middle, then New:
// the order holds across both sessions.
func TestReview10OrderedLiveProducerWithBufferedItems(t *testing.T) {
	const old, fresh = 200, 3000
	for run := range 3 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			dir := t.TempDir()
			dmStore(t, dir, []Option{WithBuffer(0)}, "o", old)
			var sent []string
			for i := range old {
				sent = append(sent, akMsg("o", i))
			}
			for i := range fresh {
				sent = append(sent, msg("n", i))
			}
			src := make(chan string)
			opts := []Option{WithOrdered(), WithBuffer(2), WithBatchBytes(512)}
			c := open(t, dir, src, opts...)
			prodDone := make(chan int)
			stop := make(chan struct{})
			go func() {
				i := 0
				defer func() { prodDone <- i }()
				for ; i < fresh; i++ {
					select {
					case src <- msg("n", i):
					case <-stop:
						return
					}
					if i%50 == 0 {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
			var got []string
			take := func(k int) {
				for range k {
					v, ok, _ := recvString(c.Out(), 5*time.Second)
					if !ok {
						t.Fatalf("after %d: nothing came; %+v", len(got), c.Stats())
					}
					got = append(got, v)
				}
			}
			take(3)
			r10WaitBuffered(t, c, readyBuffer, 5*time.Second)
			time.Sleep(5 * time.Millisecond)
			take(150 + run*40) // into the middle of the transition
			close(stop)
			produced := <-prodDone
			akMustClose(t, c)
			s1 := c.Stats()
			akIdentity(t, "first", s1, old)
			rest, _, _ := r10Drain(t, dir, false, opts...)
			got = append(got, rest...)
			checkOrder(t, "both sessions", sent[:old+produced], got)
		})
	}
}
