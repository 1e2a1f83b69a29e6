package pelichan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Review 11: ctlCh has a buffer of 1. A ctl (done IDs, a Sync barrier, Store calls) the
// loop sent may wait in the buffer while the disk goroutine is in a write, and finish
// takes it first. These tests race Store and Sync with Close and with src closing, under
// write-ahead + SyncAlways (the disk goroutine mostly in fsync: the buffer is often full),
// and check that no call hangs, no stored message is lost or doubled, Out does not close
// before a stored message is delivered, and the Stats balance.

type r11Mode struct {
	name string
	opts []Option
}

func r11Modes() []r11Mode {
	return []r11Mode{
		{"wa-always", []Option{WithWriteAhead(), WithSync(SyncAlways), WithBatchBytes(512), WithBuffer(16)}},
		{"spill-always", []Option{WithSync(SyncAlways), WithBatchBytes(512), WithBuffer(4), WithLinger(time.Millisecond)}},
		{"wa-always-ordered", []Option{WithWriteAhead(), WithSync(SyncAlways), WithBatchBytes(512), WithBuffer(16), WithOrdered()}},
	}
}

// r11Balance fails unless the Stats identity holds.
func r11Balance(t *testing.T, what string, s Stats) {
	t.Helper()
	if s.Received != s.Direct+s.Refilled+s.OnDisk+s.Dropped+s.InMemory {
		t.Errorf("%s: Stats do not balance: %+v", what, s)
	}
	if s.Dropped != 0 {
		t.Errorf("%s: Dropped %d: %+v", what, s.Dropped, s)
	}
}

// r11Reopen opens dir with a closed src, drains Out until it closes, and returns what came.
func r11Reopen(t *testing.T, dir string, opts []Option) []string {
	t.Helper()
	src := make(chan string)
	close(src)
	c := open(t, dir, src, opts...)
	var got []string
	var closed bool
	akWithin(t, 20*time.Second, "drain after reopen", func() { got, closed = drain(c.Out(), 10*time.Second) })
	if !closed {
		t.Fatalf("reopen: Out not closed after %d messages", len(got))
	}
	akMustClose(t, c)
	return got
}

// r11Stress runs producer, consumer and storers on a Chan, ends it (Close, or src closed),
// reopens and checks every message taken from src and every Store that returned nil was
// delivered exactly once, and no Store that failed was.
func r11Stress(t *testing.T, mode r11Mode, iter int, bySrcClose bool) {
	dir := t.TempDir()
	src := make(chan string, 32)
	c := open(t, dir, src, mode.opts...)
	rnd := rand.New(rand.NewPCG(uint64(iter), 11))

	var mu sync.Mutex
	got := map[string]int{}
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		n := 0
		for v := range c.Out() {
			mu.Lock()
			got[v]++
			mu.Unlock()
			if n++; n%64 == 0 {
				time.Sleep(200 * time.Microsecond) // a bit behind now and then
			}
		}
	}()

	const nProd = 3000
	sent := make(chan int, 1)
	stopProd := make(chan struct{})
	go func() {
		i := 0
		defer func() { sent <- i }()
		for ; i < nProd; i++ {
			select {
			case src <- msg(fmt.Sprintf("p%d-", iter), i):
			case <-stopProd:
				return
			}
		}
		if bySrcClose {
			close(src)
		}
	}()

	storeOK := map[string]bool{}
	storeFail := map[string]bool{}
	var smu sync.Mutex
	var swg sync.WaitGroup
	for g := range 3 {
		swg.Add(1)
		go func() {
			defer swg.Done()
			rnd := rand.New(rand.NewPCG(uint64(iter), uint64(g)))
			for i := 0; i < 300; i++ {
				v := fmt.Sprintf("s%d-%d-%d", iter, g, i)
				errc := make(chan error, 1)
				go func() { errc <- c.Store(v) }()
				var err error
				select {
				case err = <-errc:
				case <-time.After(10 * time.Second):
					t.Errorf("Store(%s) hung", v)
					return
				}
				smu.Lock()
				if err == nil {
					storeOK[v] = true
				} else {
					storeFail[v] = true
				}
				smu.Unlock()
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Store(%s): %v", v, err)
					}
					return
				}
				if i%4 == 0 {
					time.Sleep(time.Duration(rnd.IntN(300)) * time.Microsecond)
				}
			}
		}()
	}
	// A Sync now and then, racing the end too.
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		for {
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				errc <- c.Sync(ctx)
			}()
			select {
			case err := <-errc:
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Sync: %v", err)
					}
					return
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Sync hung")
				return
			}
			select {
			case <-c.done:
				return
			default:
			}
		}
	}()

	var producedN int
	if bySrcClose {
		akWithin(t, 20*time.Second, "Out closing after src closed", func() { <-consDone })
		producedN = <-sent
		if producedN != nProd {
			t.Fatalf("producer sent %d of %d", producedN, nProd)
		}
	} else {
		time.Sleep(time.Duration(5+rnd.IntN(40)) * time.Millisecond)
		akMustClose(t, c)
		close(stopProd)
		producedN = <-sent
		akWithin(t, 10*time.Second, "consumer ending", func() { <-consDone })
	}
	akWithin(t, 20*time.Second, "storers ending", swg.Wait)
	akWithin(t, 20*time.Second, "syncer ending", func() { <-syncDone })
	if bySrcClose {
		akMustClose(t, c)
	}
	st := c.Stats()
	r11Balance(t, "after the first Chan", st)
	if st.InMemory != 0 {
		t.Errorf("InMemory %d after Close: %+v", st.InMemory, st)
	}
	// What is left in src was not taken.
	notTaken := map[string]bool{}
	if !bySrcClose {
		for {
			select {
			case v := <-src:
				notTaken[v] = true
				continue
			default:
			}
			break
		}
	}
	mu.Lock()
	first := len(got)
	firstStore := 0
	for v := range got {
		if storeOK[v] {
			firstStore++
		}
	}
	mu.Unlock()
	if bySrcClose {
		// src closed: everything is delivered before Out closes, Stores included.
		for v := range storeOK {
			if got[v] != 1 {
				t.Errorf("src closed: Store(%s) returned nil but the first Chan delivered it %d times before Out closed", v, got[v])
			}
		}
	}
	for _, v := range r11Reopen(t, dir, mode.opts) {
		got[v]++
	}
	for i := range producedN {
		v := msg(fmt.Sprintf("p%d-", iter), i)
		want := 1
		if notTaken[v] {
			want = 0
		}
		if got[v] != want {
			t.Errorf("src message %s delivered %d times, want %d", v, got[v], want)
		}
	}
	for v := range storeOK {
		if got[v] != 1 {
			t.Errorf("Store(%s) returned nil; delivered %d times", v, got[v])
		}
	}
	for v := range storeFail {
		if got[v] != 0 {
			t.Errorf("Store(%s) failed; delivered %d times", v, got[v])
		}
	}
	if t.Failed() {
		t.Logf("iter %d: %d produced, %d left in src, %d stores ok (%d delivered by the first Chan), %d delivered first; %+v",
			iter, producedN, len(notTaken), len(storeOK), firstStore, first, st)
	}
}

func TestReview11StoreSyncCloseRace(t *testing.T) {
	for _, mode := range r11Modes() {
		t.Run(mode.name, func(t *testing.T) {
			for iter := range 15 {
				r11Stress(t, mode, iter, false)
				if t.Failed() {
					return
				}
			}
		})
	}
}

func TestReview11StoreSyncSrcClosedRace(t *testing.T) {
	for _, mode := range r11Modes() {
		t.Run(mode.name, func(t *testing.T) {
			for iter := range 4 { // about 0.3 s each (the suite's time)
				r11Stress(t, mode, iter, true)
				if t.Failed() {
					return
				}
			}
		})
	}
}
