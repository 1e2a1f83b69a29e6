package pelichan

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// Review 12: with one P, a goroutine calling Sync back to back (a producer checkpointing
// its input offset in a loop) starves the refill. The loop, the disk goroutine and the
// caller hand the P to each other through runnext; the decoders, which yield with
// runtime.Gosched (after each job in decodeJob since before f745ca0, and before each job
// in serveIdle since f745ca0), wait in the global run queue. A backlog of 3300 messages
// then drains in seconds, not milliseconds, and Out stays open after src is closed
// ("src closed: everything is delivered, then Out/Deliveries close"). The same starvation
// makes TestReview11StoreSyncSrcClosedRace time out under `go test -cpu 1`, on f745ca0 and
// on its parent.
//
// Fails on f745ca0 and on 94fde2b (Out still open after 2 s, it closes ~150 ms after the
// Syncs stop); passes (Out closed after ~1.0-1.2 s) with both Gosched calls removed, and
// since the decoders and compressors yield only with more than one P (yieldP). A longer
// variant, 3 runs each, time from src closed to Out closed: 94fde2b 3.9/4.4/4.7 s,
// f745ca0 7.5/7.0/7.8 s.
func TestReview12OneProcSyncPollStarvesRefill(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	dir := t.TempDir()
	src := make(chan string, 32)
	c := open(t, dir, src, WithWriteAhead(), WithSync(SyncAlways), WithBatchBytes(512), WithBuffer(16))
	var got, syncs atomic.Int64
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		for range c.Out() {
			if got.Add(1)%64 == 0 {
				time.Sleep(200 * time.Microsecond) // a bit behind now and then: a backlog forms
			}
		}
	}()
	storeDone := make(chan error, 1)
	go func() { // a consumer giving messages back while the producer runs
		for i := 0; i < 300; i++ {
			if err := c.Store(fmt.Sprint("st", i)); err != nil {
				storeDone <- err
				return
			}
		}
		storeDone <- nil
	}()
	stop, syncDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(syncDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := c.Sync(ctx)
			cancel()
			syncs.Add(1)
			if err != nil {
				return
			}
		}
	}()
	for i := range 3000 {
		select {
		case src <- msg("p", i):
		case <-time.After(5 * time.Second):
			t.Fatal("src blocked 5 s")
		}
	}
	// The Stores end before src closes: once src is closed and everything is delivered,
	// the Chan is done and a later Store says ErrClosed.
	select {
	case err := <-storeDone:
		if err != nil {
			t.Fatalf("Store: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Store hung 5 s")
	}
	close(src)
	t0 := time.Now()
	select {
	case <-outDone:
		t.Logf("Out closed %v after src closed (%d Syncs)", time.Since(t0), syncs.Load())
	case <-time.After(2 * time.Second):
		s := c.Stats()
		close(stop)
		t.Errorf("GOMAXPROCS=1, Sync called back to back: Out still open 2 s after src closed; %d of 3300 delivered, %d Syncs; %+v", got.Load(), syncs.Load(), s)
		select {
		case <-outDone:
			t.Logf("Out closed %v after src closed, once the Syncs stopped", time.Since(t0))
		case <-time.After(5 * time.Second):
			t.Errorf("Out still open 5 s after the Syncs stopped")
		}
	}
	select {
	case <-stop:
	default:
		close(stop)
	}
	select {
	case <-syncDone:
	case <-time.After(5 * time.Second):
		t.Fatal("syncer did not end")
	}
	akMustClose(t, c)
}
