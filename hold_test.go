package pelichan

import (
	"testing"
	"time"
)

// paced is a consumer that takes one message every per (busy-waiting, so the pace is
// steady at the sub-millisecond scale the hold judges), until stop is closed.
func paced(out <-chan string, per time.Duration, stop <-chan struct{}, got *[]string, done chan<- struct{}) {
	defer close(done)
	next := time.Now()
	for {
		select {
		case <-stop:
			return
		case v, ok := <-out:
			if !ok {
				return
			}
			*got = append(*got, v)
		}
		next = next.Add(per)
		for time.Now().Before(next) {
		}
	}
}

// A consumer that takes ~65k messages/s (above holdTake per holdWindow) but far less than
// the producer, with src buffered for every message: the hold must not keep the
// producer's lead unread in src (in memory only, not in Stats) beyond the linger time;
// it is read and spilled. (Found by review: the first version of the hold held as long as
// the consumer kept its pace.)
func TestHoldLeavesProducerLeadInMemory(t *testing.T) {
	const n = 60000
	for trial := 0; trial < 3; trial++ {
		dir := t.TempDir()
		src := make(chan string, n)
		c, err := New(dir, src, String, WithBuffer(100)) // default linger 100ms
		if err != nil {
			t.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		var got []string
		go paced(c.Out(), 15*time.Microsecond, stop, &got, done) // the consumer is there first
		for _, m := range msgs("p", n) {
			src <- m // buffered: never blocks
		}
		time.Sleep(500 * time.Millisecond) // 5x the linger time
		left, s := len(src), c.Stats()
		close(stop)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("consumer did not stop")
		}
		c.Close()
		t.Logf("trial %d: after 500ms %d of %d messages still unread in src; Received %d Direct %d Spilled %d OnDisk %d InMemory %d",
			trial, left, n, s.Received, s.Direct, s.Spilled, s.OnDisk, s.InMemory)
		if left > 1000 && s.OnDisk == 0 {
			t.Errorf("after 5x linger, %d messages the producer handed over are still only in src's buffer (not read, not spilled: Spilled %d, OnDisk %d); a SIGKILL loses them",
				left, s.Spilled, s.OnDisk)
			return
		}
	}
}

// The same with a small src: the producer must not be throttled to the consumer's pace
// (backpressure with an empty disk); its lead is spilled.
func TestHoldThrottlesProducer(t *testing.T) {
	const n = 15000
	for trial := 0; trial < 3; trial++ {
		dir := t.TempDir()
		src := make(chan string, 64)
		c, err := New(dir, src, String, WithBuffer(100))
		if err != nil {
			t.Fatal(err)
		}
		stop, done := make(chan struct{}), make(chan struct{})
		var got []string
		go paced(c.Out(), 33*time.Microsecond, stop, &got, done)
		t0 := time.Now()
		for _, m := range msgs("q", n) {
			select {
			case src <- m:
			case <-time.After(5 * time.Second):
				t.Fatal("src blocked 5s")
			}
		}
		el := time.Since(t0)
		s := c.Stats()
		close(stop)
		<-done
		c.Close()
		t.Logf("trial %d: producer needed %v for %d messages (%.0f/s); Spilled %d", trial, el, n, float64(n)/el.Seconds(), s.Spilled)
		if el > 250*time.Millisecond && s.Spilled < n/2 {
			t.Errorf("producer throttled to the consumer's pace (%v for %d messages) while the disk had room; Spilled %d", el, n, s.Spilled)
			return
		}
	}
}
