package pelichan

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// review9GateCodec is String with an Encode that waits (at most 20 s) until gate is
// closed: compressors stuck in it hold their batch slices, so the loop runs out of free
// ones and flushFull sets needFree.
type review9GateCodec struct{ gate chan struct{} }

func (g review9GateCodec) Encode(dst []byte, v string) ([]byte, error) {
	select {
	case <-g.gate:
	case <-time.After(20 * time.Second):
	}
	return append(dst, v...), nil
}

func (review9GateCodec) Decode(data []byte) (string, error) { return string(data), nil }

// review9FillToNeedFree opens an unordered Chan (batches of 16, reserve 8, Out 1, linger
// 10 s) whose compressors wait in Encode, and sends until the producer blocks: Out's one,
// three batches of 16 (two compressors, writeCh) and a pending batch of 24 waiting for a
// free slice (needFree). It returns what was sent.
func review9FillToNeedFree(t *testing.T, dir string, g review9GateCodec) (*Chan[string], chan string, []string) {
	t.Helper()
	src := make(chan string)
	c, err := New(dir, src, Codec[string](g), WithBuffer(1), WithBatchBytes(1<<10),
		WithLinger(10*time.Second), WithSync(SyncNever))
	if err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := 0; ; i++ {
		m := fmt.Sprintf("m%05d", i)
		select {
		case src <- m:
			sent = append(sent, m)
			continue
		case <-time.After(300 * time.Millisecond):
		}
		break
	}
	if len(sent) > 200 {
		t.Fatalf("the producer was not stopped: %d sent", len(sent))
	}
	s, ok := statsWithin(c, 5*time.Second)
	if !ok {
		t.Fatal("Stats hung")
	}
	checkBalance(t, s)
	t.Logf("producer stopped after %d (want 1 + 3*16 + 24 = 73): %+v", len(sent), s)
	return c, src, sent
}

// Sync while the loop waits for a free slice for its reserve-keeping write: it writes
// everything (the reserve too) once the compressors go on, answers nil, and leaves
// nothing only in memory; then everything arrives once.
func TestReview9NeedFreeSync(t *testing.T) {
	dir := t.TempDir()
	g := review9GateCodec{make(chan struct{})}
	c, src, sent := review9FillToNeedFree(t, dir, g)
	defer func() { akWithin(t, 10*time.Second, "Close", func() { c.Close() }) }()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		errc <- c.Sync(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	close(g.gate)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Sync did not return")
	}
	s, _ := statsWithin(c, 5*time.Second)
	checkBalance(t, s)
	if s.InMemory != 0 || s.OnDisk != int64(len(sent)) {
		t.Fatalf("after Sync: InMemory %d, OnDisk %d, want 0 and all %d: %+v", s.InMemory, s.OnDisk, len(sent), s)
	}
	// The rest goes through, then src closes.
	go func() {
		for i := len(sent); i < len(sent)+2000; i++ {
			select {
			case src <- fmt.Sprintf("m%05d", i):
			case <-time.After(10 * time.Second):
				return
			}
		}
		close(src)
	}()
	got, closed := drain(c.Out(), 10*time.Second)
	if !closed {
		t.Fatalf("Out not closed; %d received", len(got))
	}
	review9Once(t, got, len(sent)+2000)
	s, _ = statsWithin(c, 5*time.Second)
	checkBalance(t, s)
}

// Close while the loop waits for a free slice: it returns, stores everything (pending
// batch with its reserve, the batches queued, Out's one), and the next Chan delivers each
// once.
func TestReview9NeedFreeClose(t *testing.T) {
	dir := t.TempDir()
	g := review9GateCodec{make(chan struct{})}
	c, _, sent := review9FillToNeedFree(t, dir, g)
	go func() { time.Sleep(100 * time.Millisecond); close(g.gate) }()
	if err := akClose(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s := c.Stats()
	checkBalance(t, s)
	if s.OnDisk != int64(len(sent)) || s.InMemory != 0 || s.Dropped != 0 {
		t.Fatalf("after Close: %+v, want all %d on disk", s, len(sent))
	}
	src := make(chan string)
	close(src)
	c2, err := New(dir, src, String, WithSync(SyncNever))
	if err != nil {
		t.Fatal(err)
	}
	got, closed := drain(c2.Out(), 10*time.Second)
	if !closed {
		t.Fatalf("Out not closed; %d received", len(got))
	}
	review9Once(t, got, len(sent))
	akMustClose(t, c2)
}

func review9Once(t *testing.T, got []string, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
	}
	var missing, dup []string
	for i := 0; i < n; i++ {
		m := fmt.Sprintf("m%05d", i)
		switch seen[m] {
		case 0:
			missing = append(missing, m)
		case 1:
		default:
			dup = append(dup, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 || len(dup) > 0 || len(got) != n {
		t.Fatalf("%d received of %d: missing %d %v, duplicated %d %v", len(got), n,
			len(missing), missing[:min(5, len(missing))], len(dup), dup[:min(5, len(dup))])
	}
}

// The time bound with the reserve: the consumer stalls, the producer sends a burst that
// leaves a reserve in pending after the last partial write (and Out's buffer full), then
// stops. Within the linger time plus a write, nothing is only in memory: the reserve is
// written (the linger timer flushFull reset) and Out's buffer shadowed.
func TestReview9ReserveWrittenWithinLinger(t *testing.T) {
	for _, n := range []int{37, 300, 1013} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			dir := t.TempDir()
			src := make(chan string)
			const linger = 100 * time.Millisecond
			c, err := New(dir, src, String, WithBuffer(10), WithBatchBytes(2<<10),
				WithLinger(linger), WithSync(SyncNever))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { akWithin(t, 10*time.Second, "Close", func() { c.Close() }) }()
			for i := 0; i < n; i++ {
				akSend(t, src, fmt.Sprintf("m%05d %0100d", i, i), 5*time.Second)
			}
			last := time.Now()
			var s Stats
			for {
				s, _ = statsWithin(c, 5*time.Second)
				checkBalance(t, s)
				if s.InMemory == 0 {
					break
				}
				if time.Since(last) > linger+time.Second {
					t.Fatalf("%v after the last message, %d still only in memory: %+v", time.Since(last), s.InMemory, s)
				}
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("all written %v after the last message: %+v", time.Since(last), s)
		})
	}
}

// Fixed since: was a BUG (efficiency; flush takes the spare as its new pending batch).
//
// A spare slice the loop took for a reserve-keeping write (getFree while needFree) is not
// used when the pending batch is written whole instead (linger, Sync, src closed): flush
// leaves the pending batch nil, waiting on freeCh for a slice, while the spare sits idle
// in the loop until the next flushFull. One of the four batch slices is then out of the
// pipeline: less overlap between the loop and the compressors, and (with every other
// slice in the compressors) no pending batch for the consumer to take from meanwhile.
func TestReview9FlushIgnoresSpare(t *testing.T) {
	l, c := keepLoop(t, false)
	// needFree was set, and a slice arrived (the getFree case) once the consumer had
	// taken from the reserve: pending is no longer full. The consumer takes the rest, and
	// a few new messages come.
	l.spare = make([]string, 0, 64)
	c.backlog.Store(false)
	for l.queued() > 0 {
		if _, _, ok := l.next(); !ok || !l.fromPending {
			t.Fatal("next: nothing from pending")
		}
		l.handed()
	}
	for i := 0; i < 5; i++ {
		l.pending = append(l.pending, fmt.Sprintf("n%d", i))
		l.pendAt = append(l.pendAt, time.Now().UnixNano())
	}
	// The linger time runs out: everything pending is written.
	l.flushNow = true
	l.flushFull()
	if len(l.outq) != 1 {
		t.Fatalf("outq %d", len(l.outq))
	}
	if l.pending == nil && l.spare != nil {
		t.Fatalf("pending batch nil (waiting on freeCh, %d free) while the loop holds a spare slice (cap %d)", len(c.freeCh), cap(l.spare))
	}
}
