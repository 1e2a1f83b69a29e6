package pelichan

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A full disk (a 1 MiB tmpfs) under Block with a stalled consumer, then the consumer
// drains: with the spare made ahead (SyncEvery: not NoSync) and consumed segments retired
// in the background, the producer blocks and goes on, every message arrives once, Close
// returns, and the Stats identity holds throughout.
func TestReviewFullDiskSpareRetire(t *testing.T) {
	for _, inodes := range []int{10000, 12} {
		t.Run(fmt.Sprintf("inodes=%d", inodes), func(t *testing.T) {
			mnt := mountTmpfs(t, fmt.Sprintf("size=%d,nr_inodes=%d", 1<<20, inodes))
			dir := filepath.Join(mnt, "spool")
			src := make(chan string)
			var errs errorLog
			c, err := New(dir, src, String, WithSegmentSize(32<<10), WithBuffer(10), WithErrorHandler(errs.handle))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rng := rand.New(rand.NewSource(1))
			const n = 12000
			msgs := make([]string, n)
			for i := range msgs {
				b := make([]byte, 120)
				for j := range b {
					b[j] = byte('a' + rng.Intn(26))
				}
				msgs[i] = fmt.Sprintf("%06d %s", i, b)
			}
			sent := make(chan int, 1)
			go func() {
				i := 0
				defer func() { sent <- i }()
				for ; i < n; i++ {
					select {
					case src <- msgs[i]:
					case <-time.After(30 * time.Second):
						return
					}
				}
				close(src)
			}()
			// Stalled until the disk is full (the producer blocks).
			deadline := time.Now().Add(20 * time.Second)
			for {
				s, ok := statsWithin(c, 5*time.Second)
				if !ok {
					t.Fatal("Stats did not return within 5 s")
				}
				checkBalance(t, s)
				if s.Errors > 0 {
					t.Logf("full: %+v", s)
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the disk never filled: %+v", s)
				}
				time.Sleep(10 * time.Millisecond)
			}
			got := map[string]int{}
			timer := time.NewTimer(30 * time.Second)
			defer timer.Stop()
		recv:
			for {
				select {
				case v, ok := <-c.Out():
					if !ok {
						break recv
					}
					got[v]++
				case <-timer.C:
					s, _ := statsWithin(c, 5*time.Second)
					t.Fatalf("Out not closed within 30 s: %d received; stats %+v; errors %v", len(got), s, errs.all()[:min(3, len(errs.all()))])
				}
			}
			if k := <-sent; k != n {
				t.Fatalf("the producer sent %d of %d", k, n)
			}
			var cerr error
			akWithin(t, 10*time.Second, "Close", func() { cerr = c.Close() })
			if cerr != nil {
				t.Errorf("Close: %v", cerr)
			}
			s := c.Stats()
			checkBalance(t, s)
			missing, dup := 0, 0
			for _, m := range msgs {
				switch got[m] {
				case 0:
					missing++
				case 1:
				default:
					dup++
				}
			}
			t.Logf("stats %+v", s)
			if missing > 0 || dup > 0 || s.Dropped != 0 {
				t.Errorf("%d missing, %d duplicated, Dropped %d", missing, dup, s.Dropped)
			}
			names, _ := os.ReadDir(dir)
			for _, e := range names {
				t.Logf("left: %s", e.Name())
			}
		})
	}
}
