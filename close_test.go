package pelichan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of Close (it always returns, and stores what it holds), Store and Sync. Every
// Close runs under a deadline: a hang fails the test.

// clProducer sends noisy messages on src until n are sent or stop is closed, and counts
// them.
type clProducer struct {
	src  chan string
	stop chan struct{}
	done chan struct{}
	sent atomic.Int64
}

func clProduce(n int, seed uint64) *clProducer {
	p := &clProducer{src: make(chan string), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		r := rand.New(rand.NewPCG(seed, 9))
		for i := 0; i < n; i++ {
			select {
			case p.src <- noisyLine(r, i):
				p.sent.Add(1)
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// halt stops the producer and waits for it.
func (p *clProducer) halt(t *testing.T) {
	t.Helper()
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the producer did not stop")
	}
}

// clQuiet waits until Received, Spilled and Dropped stop changing (the Chan is blocked or
// idle), at most 5 s.
func clQuiet[T any](c *Chan[T]) Stats {
	prev := c.Stats()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		s := c.Stats()
		if s.Received == prev.Received && s.Spilled == prev.Spilled && s.Dropped == prev.Dropped {
			return s
		}
		prev = s
	}
	return prev
}

// clReopen opens dir with src closed and delivers everything (acknowledging, with acks).
func clReopen(t *testing.T, dir string, acks bool, opts ...Option) ([]string, Stats) {
	t.Helper()
	src := make(chan string)
	close(src)
	var got []string
	if acks {
		c := open(t, dir, src, append(opts, WithAcks(1000))...)
		for _, d := range akDrainAcked(t, c, 5*time.Second) {
			got = append(got, d.Msg)
		}
		akMustClose(t, c)
		return got, c.Stats()
	}
	c := open(t, dir, src, opts...)
	got, closed := drain(c.Out(), 5*time.Second)
	if !closed {
		t.Errorf("reopened %s: Out not closed 5s after the last of %d messages", dir, len(got))
	}
	akMustClose(t, c)
	return got, c.Stats()
}

// clNoDup fails on a message delivered twice and returns the set.
func clNoDup(t *testing.T, what string, got []string) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	dup := 0
	for _, v := range got {
		if seen[v] {
			dup++
		}
		seen[v] = true
	}
	if dup > 0 {
		t.Errorf("%s: %d messages delivered twice", what, dup)
	}
	return seen
}

// clLost sums the counts in Close's error of messages it says it could not store.
var clLostRE = regexp.MustCompile(`(\d+) messages (?:taken back from Out )?could not be stored`)

func clLost(err error) int64 {
	if err == nil {
		return 0
	}
	var n int64
	for _, m := range clLostRE.FindAllStringSubmatch(err.Error(), -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n
}

// At the disk cap with a stalled consumer, Close returns under every policy (the cap is
// lifted at Close), stores everything it holds, and the next Chan delivers it: delivered +
// dropped == received.
func TestCloseAtCapReturns(t *testing.T) {
	for _, policy := range []FullPolicy{Block, DropNewest, DropOldest} {
		for _, acks := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/acks=%v", policy, acks), func(t *testing.T) {
				dir := t.TempDir()
				log := &errLog{}
				p := clProduce(1500, 1)
				opts := []Option{WithBuffer(10), WithSegmentSize(32 << 10), WithBatchBytes(8 << 10),
					WithMaxDiskBytes(96 << 10), WithWhenFull(policy), WithSync(SyncNever), WithLinger(5 * time.Millisecond)}
				if acks {
					opts = append(opts, WithAcks(50))
				}
				c, err := New(dir, p.src, String, append(opts, WithErrorHandler(log.handle))...)
				if err != nil {
					t.Fatal(err)
				}
				if acks {
					// The consumer takes a few and holds them unacknowledged, then stalls.
					for range 5 {
						if _, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok {
							t.Fatal("no delivery")
						}
					}
				}
				s := clQuiet(c)
				if log.count(ErrFull) == 0 {
					t.Errorf("the cap was never reached: %+v", s)
				}
				start := time.Now()
				err = akClose(t, c)
				t.Logf("Close at the cap took %v (err %v); stats before %+v", time.Since(start), err, s)
				p.halt(t)
				after := c.Stats()
				akIdentity(t, "after Close", after, 0)
				if err != nil {
					t.Errorf("Close at the cap (space on the disk): %v", err)
				}
				if after.InMemory != 0 {
					t.Errorf("after Close: InMemory %d; %+v", after.InMemory, after)
				}
				if policy == Block && after.Dropped != 0 {
					t.Errorf("Block dropped %d", after.Dropped)
				}
				got, _ := clReopen(t, dir, acks, WithMaxDiskBytes(96<<10), WithSegmentSize(32<<10))
				clNoDup(t, "after the restart", got)
				if after.Received != p.sent.Load() {
					t.Errorf("received %d, the producer sent %d", after.Received, p.sent.Load())
				}
				if int64(len(got))+after.Dropped != after.Received {
					t.Errorf("after the restart: delivered %d + dropped %d != received %d", len(got), after.Dropped, after.Received)
				}
			})
		}
	}
}

// The error handler may call Stats and Close, also while Close runs: Close returns.
func TestCloseErrorHandlerCallsStatsOrClose(t *testing.T) {
	for _, mode := range []string{"stats", "close"} {
		for _, acks := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/acks=%v", mode, acks), func(t *testing.T) {
				dir := t.TempDir()
				var cp atomic.Pointer[Chan[string]]
				var calls atomic.Int64
				handlerClosed := make(chan error, 1)
				var once sync.Once
				handler := func(err error) {
					c := cp.Load()
					if c == nil {
						return
					}
					calls.Add(1)
					switch mode {
					case "stats":
						c.Stats()
						time.Sleep(2 * time.Millisecond) // so that Close finds it running
						c.Stats()
					case "close":
						if errors.Is(err, ErrFull) || errors.Is(err, ErrTooLarge) {
							once.Do(func() { handlerClosed <- c.Close() })
						}
					}
				}
				p := clProduce(4000, 2)
				// Half of the noisy lines are longer than the limit: refused when they are
				// stored, also by Close (what waits in Out is encoded then), so the handler
				// runs while Close does.
				opts := []Option{WithBuffer(20), WithSegmentSize(32 << 10), WithBatchBytes(8 << 10),
					WithMaxDiskBytes(96 << 10), WithWhenFull(Block), WithSync(SyncNever), WithLinger(5 * time.Millisecond),
					WithMaxMessageBytes(204), WithErrorHandler(handler)}
				if acks {
					opts = append(opts, WithAcks(50))
				}
				c, err := New(dir, p.src, String, opts...)
				if err != nil {
					t.Fatal(err)
				}
				cp.Store(c)
				if mode == "close" {
					select {
					case err := <-handlerClosed:
						if err != nil {
							t.Errorf("Close from the error handler: %v", err)
						}
					case <-time.After(10 * time.Second):
						t.Fatalf("Close called from the error handler did not return within 10s; calls %d; stats %+v", calls.Load(), c.Stats())
					}
				} else {
					clQuiet(c)
				}
				err = akClose(t, c)
				p.halt(t)
				if err != nil {
					t.Errorf("Close: %v", err)
				}
				s := c.Stats()
				akIdentity(t, "after Close", s, 0)
				if calls.Load() == 0 {
					t.Errorf("the handler was never called")
				}
				got, _ := clReopen(t, dir, acks)
				clNoDup(t, "after the restart", got)
				if s.Received != p.sent.Load() {
					t.Errorf("received %d, the producer sent %d", s.Received, p.sent.Load())
				}
				if int64(len(got))+s.Dropped != s.Received {
					t.Errorf("after the restart: delivered %d + dropped %d != received %d", len(got), s.Dropped, s.Received)
				}
			})
		}
	}
}

// Close racing src being closed (and a consumer still receiving): both return, and every
// message is done exactly once, before Close or after the restart.
func TestCloseRacesSrcClose(t *testing.T) {
	seed := akSeed(t)
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	dir := t.TempDir()
	var sent, got, carry []string
	next := 0
	for iter := 0; iter < 20 && !t.Failed(); iter++ {
		acks := rng.IntN(2) == 0
		src := make(chan string, rng.IntN(4))
		opts := []Option{WithBuffer(rng.IntN(20)), WithLinger(time.Duration(1+rng.IntN(5)) * time.Millisecond),
			WithBatchBytes(512 + rng.IntN(4<<10))}
		if acks {
			opts = append(opts, WithAcks(1+rng.IntN(50)))
		}
		c := open(t, dir, src, opts...)
		base := c.Stats().OnDisk
		for _, v := range carry {
			akSend(t, src, v, 5*time.Second)
		}
		carry = nil
		n := rng.IntN(300)
		for range n {
			v := akMsg("race", next)
			next++
			sent = append(sent, v)
			akSend(t, src, v, 5*time.Second)
		}
		// A consumer receiving (and acknowledging) until the channel closes.
		var mine []string
		consumed := make(chan struct{})
		go func() {
			defer close(consumed)
			if acks {
				for d := range c.Deliveries() {
					if d.Seq%3 == 0 {
						continue // not acknowledged: comes again
					}
					if err := c.Ack(d.Seq); err == nil {
						mine = append(mine, d.Msg)
					} else if !errors.Is(err, ErrClosed) {
						t.Errorf("Ack(%d): %v", d.Seq, err)
					}
				}
				return
			}
			for v := range c.Out() {
				mine = append(mine, v)
			}
		}()
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); close(src) }()
		var cerr error
		go func() { defer wg.Done(); cerr = c.Close() }()
		akWithin(t, 10*time.Second, fmt.Sprintf("iteration %d: Close racing close(src)", iter), wg.Wait)
		if cerr != nil {
			t.Errorf("iteration %d: Close: %v", iter, cerr)
		}
		for v := range src { // what Close did not take from src is still ours
			carry = append(carry, v)
		}
		select {
		case <-consumed:
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: Out/Deliveries not closed after Close", iter)
		}
		akIdentity(t, fmt.Sprintf("iteration %d after Close", iter), c.Stats(), base)
		got = append(got, mine...)
	}
	rest, _ := clReopen(t, dir, true)
	got = append(got, rest...)
	got = append(got, carry...)
	checkSame(t, fmt.Sprintf("seed %d", seed), sent, got)
}

// On a real full disk (a 512 KiB tmpfs) with a stalled consumer, Close returns; everything it
// could not store is reported in its error (and counted as dropped); everything else is
// delivered after the restart.
func TestCloseOnFullTmpfs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy FullPolicy
		acks   bool
	}{
		{"block", Block, false},
		{"block-acks", Block, true},
		{"drop-oldest", DropOldest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := mountTmpfs(t, "size=512k")
			dir := filepath.Join(mnt, "spool")
			log := &errLog{}
			p := clProduce(7000, 4)
			opts := []Option{WithBuffer(200), WithSegmentSize(64 << 10), WithBatchBytes(16 << 10),
				WithWhenFull(tc.policy), WithSync(SyncNever), WithLinger(time.Hour)}
			if tc.acks {
				opts = append(opts, WithAcks(300))
			}
			c, err := New(dir, p.src, String, append(opts, WithErrorHandler(log.handle))...)
			if err != nil {
				t.Fatal(err)
			}
			if tc.acks {
				for range 50 {
					if _, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok {
						t.Fatal("no delivery")
					}
				}
			}
			before := clQuiet(c)
			if log.count(ErrFull) == 0 {
				t.Fatalf("the tmpfs never filled: %+v; errors %v", before, log.errs)
			}
			err = akClose(t, c)
			p.halt(t)
			s := c.Stats()
			lost := clLost(err)
			t.Logf("Close on a full disk: %v; %d reported lost; stats before %+v; after %+v", err, lost, before, s)
			akIdentity(t, "after Close on a full disk", s, 0)
			if s.InMemory != 0 {
				t.Errorf("after Close: InMemory %d; %+v", s.InMemory, s)
			}
			if tc.policy == Block && lost != s.Dropped {
				t.Errorf("Close's error reports %d messages lost, Stats.Dropped is %d: every loss must be in the error", lost, s.Dropped)
			}
			got, s2 := clReopen(t, dir, tc.acks)
			t.Logf("after the restart: %d delivered; %+v", len(got), s2)
			clNoDup(t, "after the restart", got)
			if s.Received != p.sent.Load() {
				t.Errorf("received %d, the producer sent %d", s.Received, p.sent.Load())
			}
			if int64(len(got))+s.Dropped != s.Received {
				t.Errorf("after the restart: delivered %d + dropped %d (of them %d reported by Close) != received %d: %d lost silently",
					len(got), s.Dropped, lost, s.Received, s.Received-s.Dropped-int64(len(got)))
			}
		})
	}
}

// Store and Sync after Close return ErrClosed, without waiting.
func TestStoreSyncAfterClose(t *testing.T) {
	for _, acks := range []bool{false, true} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			src := make(chan string)
			var opts []Option
			if acks {
				opts = append(opts, WithAcks(10))
			}
			c := open(t, t.TempDir(), src, opts...)
			if err := c.Store("before"); err != nil {
				t.Fatalf("Store: %v", err)
			}
			akMustClose(t, c)
			var serr, yerr error
			akWithin(t, 5*time.Second, "Store after Close", func() { serr = c.Store("after") })
			akWithin(t, 5*time.Second, "Sync after Close", func() { yerr = c.Sync(context.Background()) })
			if !errors.Is(serr, ErrClosed) {
				t.Errorf("Store after Close: %v, want ErrClosed", serr)
			}
			if !errors.Is(yerr, ErrClosed) {
				t.Errorf("Sync after Close: %v, want ErrClosed", yerr)
			}
		})
	}
}

// Store racing Close from several goroutines: every call returns nil or ErrClosed, and
// every message whose Store returned nil is delivered after the restart.
func TestStoreRacesClose(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(0))
	var mu sync.Mutex
	var stored []string
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				v := akMsg(fmt.Sprintf("st%d-", g), i)
				err := c.Store(v)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Store: %v", err)
					return
				}
				mu.Lock()
				stored = append(stored, v)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	akMustClose(t, c)
	akWithin(t, 10*time.Second, "Store calls racing Close", wg.Wait)
	if len(stored) == 0 {
		t.Fatalf("no Store succeeded")
	}
	s := c.Stats()
	akIdentity(t, "after Close", s, 0)
	got, _ := clReopen(t, dir, false)
	checkSame(t, "stored while closing", stored, got)
}

// Sync honours its context: cancelled before the call, or ending while Sync waits for a
// disk that is blocked at the cap.
func TestSyncContext(t *testing.T) {
	t.Run("cancelled", func(t *testing.T) {
		src := make(chan string)
		c := open(t, t.TempDir(), src, WithLinger(time.Hour))
		akSend(t, src, "pending", 5*time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		bad := 0
		for range 50 {
			var err error
			akWithin(t, 5*time.Second, "Sync with a cancelled context", func() { err = c.Sync(ctx) })
			if !errors.Is(err, context.Canceled) {
				bad++
				if bad == 1 {
					t.Errorf("Sync with a cancelled context: %v, want context.Canceled", err)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%d of 50 Syncs with a cancelled context did not return its error", bad)
		}
		if err := c.Sync(context.Background()); err != nil {
			t.Errorf("Sync: %v", err)
		}
		akMustClose(t, c)
	})
	t.Run("blocked at the cap", func(t *testing.T) {
		p := clProduce(4000, 5)
		c, err := New(t.TempDir(), p.src, String, WithBuffer(10), WithSegmentSize(32<<10), WithBatchBytes(8<<10),
			WithMaxDiskBytes(96<<10), WithSync(SyncNever), WithLinger(5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		clQuiet(c)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		var serr error
		start := time.Now()
		akWithin(t, 5*time.Second, "Sync while the disk is blocked", func() { serr = c.Sync(ctx) })
		if !errors.Is(serr, context.DeadlineExceeded) {
			t.Errorf("Sync while blocked at the cap: %v after %v, want context.DeadlineExceeded", serr, time.Since(start))
		}
		akMustClose(t, c)
		p.halt(t)
	})
}

// Store'd messages are delivered, in the same session and after a restart, and counted in
// Received.
func TestStoreDelivered(t *testing.T) {
	for _, acks := range []bool{false, true} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			dir := t.TempDir()
			src := make(chan string)
			var opts []Option
			if acks {
				opts = append(opts, WithAcks(1000))
			}
			c := open(t, dir, src, opts...)
			var first, second []string
			for i := range 100 {
				v := akMsg("sd", i)
				first = append(first, v)
				if err := c.Store(v); err != nil {
					t.Fatalf("Store: %v", err)
				}
			}
			s := c.Stats()
			if s.Received != 100 || s.Spilled != 100 {
				t.Errorf("after 100 Stores: Received %d, Spilled %d, want 100, 100; %+v", s.Received, s.Spilled, s)
			}
			var got []string
			if acks {
				for len(got) < 100 {
					d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
					if !ok {
						break
					}
					if d.ID.IsZero() {
						t.Errorf("a stored message delivered with the zero ID")
					}
					got = append(got, d.Msg)
					if err := c.Ack(d.Seq); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				got = recvN(c.Out(), 100, 5*time.Second)
			}
			checkSame(t, "stored, same session", first, got)
			// Stored, then Close before anyone receives: delivered after the restart.
			for i := range 100 {
				v := akMsg("sd2-", i)
				second = append(second, v)
				if err := c.Store(v); err != nil {
					t.Fatalf("Store: %v", err)
				}
			}
			s = waitStatsOr(c, 2*time.Second, func(s Stats) bool { return s.Direct+s.Refilled == 100 })
			akIdentity(t, "after Stores", s, 0)
			akMustClose(t, c)
			rest, _ := clReopen(t, dir, acks)
			checkSame(t, "stored, after a restart", second, rest)
		})
	}
}

// A Sync waiting when Close comes (the cap blocks writing its batch) is answered with
// what storing everything came to: nil, Close lifts the cap and writes it, and the
// messages are all delivered after a reopen. Not ErrClosed: the caller's messages are
// stored. And once src is closed and every message is done, Sync returns nil.
func TestSyncAnsweredByClose(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	opts := []Option{WithMaxDiskBytes(3 << 20), WithSegmentSize(1 << 20), WithWhenFull(Block),
		WithBuffer(10), WithErrorHandler(func(error) {}), WithCompression(S2)}
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	stop, prodDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; ; i++ {
			select {
			case src <- fmt.Sprintf("%08d %s", i, strings.Repeat(fmt.Sprint(i*7919), 30)):
				sent++
			case <-stop:
				return
			}
		}
	}()
	waitStats(t, c, 30*time.Second, "the cap to be reached", func(s Stats) bool { return s.Errors > 0 })
	close(stop)
	<-prodDone
	syncErr := make(chan error, 1)
	go func() { syncErr <- c.Sync(context.Background()) }()
	select {
	case err := <-syncErr:
		t.Fatalf("Sync returned %v at the cap, before Close", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := akClose(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-syncErr:
		if err != nil {
			t.Errorf("Sync answered %v at Close, want nil (everything was stored)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync not answered 5s after Close")
	}
	got, _ := reopenAndDrain(t, dir, opts...)
	if len(got) != sent {
		t.Errorf("%d delivered after reopen, want the %d sent (none was taken before Close)", len(got), sent)
	}

	// src closed and every message done: Sync has nothing to wait for.
	src = make(chan string)
	c, err = New(t.TempDir(), src, String)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { src <- "one"; close(src) }()
	if got, closed := drain(c.Out(), 5*time.Second); !closed || len(got) != 1 {
		t.Fatalf("%d taken, Out closed %v; want one and closed", len(got), closed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Errorf("Sync after src closed and everything done: %v, want nil", err)
	}
}
