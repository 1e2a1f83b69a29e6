package pelichan

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// r10LoopBlockedOnReturn samples every goroutine's stack and reports whether the loop is
// blocked sending on returnCh (handed: "never blocks").
func r10LoopBlockedOnReturn(buf []byte) bool {
	n := runtime.Stack(buf, true)
	for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
		s := string(g)
		if strings.Contains(s, "[chan send") && strings.Contains(s, ").handed(") {
			return true
		}
	}
	return false
}

// Fixed since: was a BUG (stall; the disk goroutine now empties returnCh at the top of
// each round, and returnCh holds refillPool+readyBuffer).
//
// Write-ahead items are not from the refill pool, so returnCh's capacity (refillPool) does
// not bound what the loop gives back between two selects of the disk goroutine; with
// readyCh buffered the loop takes two items without the disk goroutine selecting at all.
// A producer at full speed, write-ahead with SyncAlways (the disk goroutine mostly in
// fsync), small batches (many items), a consumer that keeps up.
func TestReview10ReturnChBlocks(t *testing.T) {
	for _, sync := range []struct {
		name string
		opt  Option
	}{{"always", WithSync(SyncAlways)}, {"never", WithSync(SyncNever)}} {
		t.Run(sync.name, func(t *testing.T) {
			dir := t.TempDir()
			src := make(chan string, 64)
			c := open(t, dir, src, WithWriteAhead(), sync.opt, WithBatchBytes(256), WithBuffer(64))
			stop := make(chan struct{})
			prod := make(chan struct{})
			go func() {
				defer close(prod)
				for i := 0; ; i++ {
					select {
					case src <- msg("w", i):
					case <-stop:
						return
					}
				}
			}()
			cons := make(chan int)
			go func() {
				n := 0
				for range c.Out() {
					n++
				}
				cons <- n
			}()
			buf := make([]byte, 1<<20)
			samples, blocked := 0, 0
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				samples++
				if r10LoopBlockedOnReturn(buf) {
					blocked++
				}
				time.Sleep(200 * time.Microsecond)
			}
			close(stop)
			<-prod
			akMustClose(t, c)
			n := <-cons
			t.Logf("%d delivered; loop blocked on returnCh in %d of %d samples; %+v", n, blocked, samples, c.Stats())
			if blocked > 0 {
				t.Errorf("the loop was seen blocked on returnCh <- b (\"never blocks\") in %d of %d samples", blocked, samples)
			}
		})
	}
}
