package pelichan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fillVolume writes a filler file into mnt until the volume is full.
func fillVolume(t *testing.T, mnt string) {
	t.Helper()
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	// And byte by byte, for the last partial block.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
}

// openFullDropNewest opens a Chan under DropNewest (Out's buffer 10, 4 KiB batches, linger
// as given) on a 1 MiB tmpfs, then fills the volume. Close is checked at the test's end.
func openFullDropNewest(t *testing.T, linger time.Duration, ordered bool) (*Chan[string], chan string, *errorLog) {
	t.Helper()
	mnt := mountTmpfs(t, "size=1m")
	src := make(chan string)
	errs := &errorLog{}
	opts := []Option{WithBuffer(10), WithSegmentSize(128 << 10), WithBatchBytes(4 << 10),
		WithWhenFull(DropNewest), WithLinger(linger), WithSync(SyncNever),
		WithErrorHandler(errs.handle)}
	if ordered {
		opts = append(opts, WithOrdered())
	}
	c, err := New(filepath.Join(mnt, "spool"), src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { akWithin(t, 10*time.Second, "Close", func() { c.Close() }) })
	fillVolume(t, mnt)
	return c, src, errs
}

// shadowReports counts the reports of a shadow refused on a full disk.
func shadowReports(errs *errorLog) int {
	n := 0
	for _, e := range errs.all() {
		if errors.Is(e, ErrFull) && strings.Contains(e.Error(), "waiting for the consumer not written") {
			n++
		}
	}
	return n
}

// Fixed since: was a BUG (blocking; store gives up on a shadow record on a full disk under
// DropNewest: its messages stay in memory and the loop tries again later).
//
// A full volume under DropNewest: the newest messages are to be dropped, never the
// producer blocked. In ordered mode, since d1402a3, every flush first writes the
// deliveries waiting in Out from memory (a shadow batch); a shadow is never dropped under
// DropNewest (store: b.kind != bShadow), so on a full disk it is retried forever, the
// disk goroutine reads nothing behind it, and the loop, its batch slices all queued
// behind the shadow, stops reading src: the producer blocks and the consumer, once Out is
// empty, gets nothing, until space comes back from elsewhere.
//
// The consumer here only lags: it leaves Out's 10 messages there while the producer sends
// a burst, then takes everything. linger is 5 s, so the time bound (stale) does not
// shadow anything during the test: only the flush does.
func TestReview9DropNewestFullDiskShadowBlocks(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			c, src, errs := openFullDropNewest(t, 5*time.Second, ordered)
			// Out's buffer fills from memory (direct passes), the consumer lagging.
			const n = 3000
			for i := 0; i < n; i++ {
				select {
				case src <- fmt.Sprintf("m%05d %0180d", i, i):
				case <-time.After(3 * time.Second):
					s, _ := statsWithin(c, 2*time.Second)
					out := len(c.Out())
					// The consumer comes back: it gets Out's messages and then nothing.
					got := recvN(c.Out(), n, 2*time.Second)
					t.Fatalf("DropNewest on a full disk: the producer blocked after %d of %d messages; Out holds %d; a ready consumer then got %d in 2 s; stats %+v; errors %d (first %v)",
						i, n, out, len(got), s, len(errs.all()), firstErr(errs.all()))
				}
			}
			s, _ := statsWithin(c, 2*time.Second)
			checkBalance(t, s)
			if s.Dropped == 0 {
				t.Fatalf("nothing dropped on a full disk: %+v", s)
			}
			got := recvN(c.Out(), n, time.Second)
			t.Logf("sent %d, received %d, stats %+v", n, len(got), s)
		})
	}
}

func firstErr(errs []error) error {
	for _, e := range errs {
		if errors.Is(e, ErrFull) {
			return e
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Fixed since: was a BUG (blocking, pre-existing; the same fix).
//
// The same blockage without d1402a3, in either mode: the consumer leaves Out's messages
// there for longer than the linger time, so the time bound (stale) writes them (a shadow),
// which a full disk refuses and DropNewest does not drop: the producer blocks. Pre-existing
// (36f2d09 fails it too); d1402a3 makes the ordered case happen at every flush instead.
func TestReview9DropNewestFullDiskStaleShadowBlocks(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			c, src, errs := openFullDropNewest(t, 20*time.Millisecond, ordered)
			for i := 0; i < 10; i++ {
				akSend(t, src, fmt.Sprintf("m%05d %0180d", i, i), 3*time.Second)
			}
			time.Sleep(300 * time.Millisecond) // Out's 10 waited past the linger time
			// The loop tried their shadow at every tick (5 ms) since the linger time ran
			// out; the error handler hears of it once, not at every try.
			if n := shadowReports(errs); n != 1 {
				t.Errorf("the refused shadow was reported %d times in 300 ms, want once until a write succeeds", n)
			}
			const n = 3000
			for i := 10; i < n; i++ {
				select {
				case src <- fmt.Sprintf("m%05d %0180d", i, i):
				case <-time.After(3 * time.Second):
					s, _ := statsWithin(c, 2*time.Second)
					t.Fatalf("DropNewest on a full disk: the producer blocked after %d of %d messages; Out holds %d; stats %+v",
						i, n, len(c.Out()), s)
				}
			}
		})
	}
}

// Sync under DropNewest on a full disk while Out holds messages from memory (the consumer
// stalled): their shadow is given up (store), so Sync must not say they are written
// (DESIGN.md: Sync returns once every message received before it that is not done is
// written and fsynced). It answers an error wrapping ErrFull, and returns.
func TestReview9DropNewestFullDiskSyncSaysUnwritten(t *testing.T) {
	c, src, _ := openFullDropNewest(t, 5*time.Second, false)
	for i := 0; i < 10; i++ { // direct passes, waiting in Out
		akSend(t, src, fmt.Sprintf("m%05d %0180d", i, i), 3*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var serr error
	akWithin(t, 10*time.Second, "Sync", func() { serr = c.Sync(ctx) })
	if serr == nil {
		t.Fatalf("Sync returned nil with Out's 10 messages not written (full disk); %+v", c.Stats())
	}
	if !errors.Is(serr, ErrFull) && !errors.Is(serr, context.DeadlineExceeded) {
		t.Errorf("Sync: %v, want ErrFull", serr)
	}
	t.Logf("Sync: %v", serr)
}
