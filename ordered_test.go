package pelichan

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestOrderedFIFOAcrossRestarts: with WithOrdered, a consumer reading in bursts, and
// graceful restarts in the middle of spills and refills, Out yields src's order exactly.
func TestOrderedFIFOAcrossRestarts(t *testing.T) {
	const n = 200_000
	seed := uint64(akSeed(t))
	r := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	src := make(chan string, 64)
	go func() {
		for i := 0; i < n; i++ {
			src <- strconv.Itoa(i)
		}
		close(src)
	}()
	open := func() *Chan[string] {
		c, err := New(dir, src, String, WithOrdered(), WithBuffer(100), WithSegmentSize(32<<10),
			WithBatchBytes(4<<10), WithLinger(5*time.Millisecond), WithSync(SyncNever))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := open()
	want, restarts := 0, 0
	check := func(m string) {
		if got, _ := strconv.Atoi(m); got != want {
			t.Fatalf("got %s, want %d (after %d restarts)", m, want, restarts)
		}
		want++
	}
	for want < n {
		// A burst: read some, or stall a while, or restart.
		switch r.IntN(10) {
		case 0:
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			c = open()
			restarts++
		case 1, 2:
			time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond) // stalled: things spill
		default:
			k := r.IntN(5000)
			for i := 0; i < k && want < n; i++ {
				m, ok := <-c.Out()
				if !ok {
					t.Fatalf("Out closed after %d of %d", want, n)
				}
				check(m)
			}
		}
	}
	if _, ok := <-c.Out(); ok {
		t.Fatal("a message after the last one")
	}
	st := c.Stats()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if restarts < 3 {
		t.Logf("only %d restarts with this seed", restarts)
	}
	t.Logf("%d restarts; last Chan: %+v", restarts, st)
}
