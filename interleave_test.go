package pelichan

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
)

// ---- white box: next / handed under random interleavings of the other select cases ----

// A model of the loop's rounds: between a next() and its handed(), nothing may change
// (one select case fires); between rounds anything may (a refill batch arrives, src
// delivers, a flush or Sync takes the pending batch, a send fails). Every hand-out must
// record exactly the message next returned, every message is handed out once, and in
// ordered mode in FIFO order.
func TestInterleaveNextHandedModel(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		for seed := int64(1); seed <= 300; seed++ {
			interleaveModelRun(t, seed, ordered)
			if t.Failed() {
				return
			}
		}
	}
}

func interleaveModelRun(t *testing.T, seed int64, ordered bool) {
	rng := rand.New(rand.NewSource(seed))
	c := &Chan[string]{opts: defaults(), returnCh: make(chan *refill[string], refillPool),
		freeCh: make(chan []string, 4)}
	c.opts.ordered = ordered
	c.avgSize.Store(int64(c.opts.batchBytes / 40)) // batches of 40
	l := &loopState[string]{c: c, tab: newTable[string](), tick: time.NewTicker(time.Hour),
		linger: time.NewTimer(time.Hour), shadowDone: map[uint64]bool{}}
	defer l.tick.Stop()
	defer l.linger.Stop()
	l.pending = make([]string, 0, 64)
	handedOut := map[string]int{}
	var order []string
	n := 0
	var disk []string // written (flushed) and not yet read back: the next refill batches
	recID := uint32(0)
	for step := 0; step < 2000; step++ {
		switch op := rng.Intn(10); {
		case op < 3: // src delivers (take without a direct send: Out full)
			if l.accepting() { // take would try a direct send first: Out is "full"
				v := fmt.Sprintf("m%06d", n)
				n++
				if l.queued() == 0 {
					l.linger.Reset(time.Hour)
				}
				l.pending = append(l.pending, v)
				l.pendAt = append(l.pendAt, 0)
			}
		case op < 4: // a refill batch arrives (getReady fires only while cur == nil)
			if l.cur == nil && len(disk) > 0 {
				k := min(len(disk), 1+rng.Intn(30))
				recID++
				b := &refill[string]{msgs: append([]string(nil), disk[:k]...), ids: make([]MsgID, k)}
				for i := range b.ids {
					b.ids[i] = MsgID{Seg: 1, Index: recID, Msg: uint32(i)}
				}
				disk = disk[k:]
				l.cur, l.ci = b, 0
				if len(disk) == 0 {
					c.backlog.Store(false)
				}
			}
		case op < 5: // flush (full batch, linger, Sync); a full one may leave a reserve
			if l.pending != nil && l.queued() > 0 {
				c.backlog.Store(true)
				if rng.Intn(2) == 0 && l.full() {
					if rng.Intn(2) == 0 {
						c.freeCh <- make([]string, 0, 64) // else flushFull waits for one
					}
					l.flushFull()
				} else {
					l.flush()
				}
				// the batch is written at once: what flush queued goes to disk
				for _, b := range l.outq {
					disk = append(disk, b.msgs...)
				}
				l.outq = l.outq[:0]
				c.inflight.Store(0)
				if l.pending == nil {
					l.pending = make([]string, 0, 64)
				}
			}
		case op < 6: // next computed, but the send does not happen (Out full) this round
			l.next()
		default: // next and a successful send
			v, id, ok := l.next()
			if !ok {
				continue
			}
			from := l.fromPending
			var want string
			if from {
				want = l.pending[l.ph]
			} else {
				want = l.cur.msgs[l.ci]
			}
			if want != v {
				t.Fatalf("seed %d ordered %v: next returned %q but fromPending=%v points at %q", seed, ordered, v, from, want)
			}
			l.handed()
			f := l.tab.at(l.tab.sent)
			if from && f.v != v {
				t.Fatalf("seed %d: handed recorded %q for %q", seed, f.v, v)
			}
			if !from && f.id != id {
				t.Fatalf("seed %d: handed recorded id %v for %v", seed, f.id, id)
			}
			handedOut[v]++
			order = append(order, v)
			// the consumer takes it at once
			l.tab.floor = l.tab.sent
			l.memOnly = 0
			l.tab.settle()
		}
		for {
			select {
			case <-c.returnCh:
				continue
			case <-c.freeCh:
				continue
			default:
			}
			break
		}
	}
	// Every message taken is accounted for once: handed out, or still pending, in the
	// refill batch being handed out, or on disk.
	where := map[string]int{}
	for v, k := range handedOut {
		where[v] += k
	}
	rest := append(append([]string(nil), l.pending[l.ph:]...), disk...)
	if l.cur != nil {
		rest = append(rest, l.cur.msgs[l.ci:]...)
	}
	for _, v := range rest {
		where[v]++
	}
	for i := range n {
		if v := fmt.Sprintf("m%06d", i); where[v] != 1 {
			t.Fatalf("seed %d ordered %v: %q is in %d places (handed out %d times), want exactly one", seed, ordered, v, where[v], handedOut[v])
		}
	}
	if ordered {
		for i := 1; i < len(order); i++ {
			if order[i] < order[i-1] {
				t.Fatalf("seed %d ordered: %q after %q", seed, order[i], order[i-1])
			}
		}
	}
}

// ---- black box --------------------------------------------------------------------------

// spillBacklog sends n messages with no consumer and waits until nearly all are on disk.
func spillBacklog(t *testing.T, c *Chan[string], src chan<- string, prefix string, n int) []string {
	t.Helper()
	old := msgs(prefix, n)
	for _, m := range old {
		select {
		case src <- m:
		case <-time.After(3 * time.Second):
			t.Fatal("src blocked")
		}
	}
	waitStats(t, c, 5*time.Second, "backlog spilled", func(s Stats) bool { return s.Received == int64(n) && s.OnDisk >= int64(n)-300 })
	return old
}

// Close while the refill batch and the pending batch are both partly handed out
// (unordered, no acks): everything sent is received exactly once across Close and a New
// on the same directory, and Stats balance before Close.
func TestInterleaveCloseMidInterleave(t *testing.T) {
	for trial := 0; trial < 12; trial++ {
		dir := t.TempDir()
		src := make(chan string, 256)
		opts := []Option{WithBuffer(1 + trial*7%64), WithLinger(20 * time.Millisecond)}
		c := open(t, dir, src, opts...)
		old := spillBacklog(t, c, src, fmt.Sprintf("o%d-", trial), 3000)
		sent := append([]string(nil), old...)
		prod := ilProduce(src, fmt.Sprintf("n%d-", trial), 200000)
		var got []string
		want := 500 + trial*137
		deadline := time.After(5 * time.Second)
	recv:
		for len(got) < want {
			select {
			case v := <-c.Out():
				got = append(got, v)
			case <-deadline:
				t.Fatalf("trial %d: only %d received in 5s; %+v", trial, len(got), c.Stats())
				break recv
			}
		}
		s := c.Stats()
		sent = append(sent, prod.halt(t)...)
		checkBalance(t, s) // the backlog was received in this session
		nOld := 0
		isOld := map[string]bool{}
		for _, m := range old {
			isOld[m] = true
		}
		for _, g := range got {
			if isOld[g] {
				nOld++
			}
		}
		akWithin(t, 5*time.Second, "Close", func() {
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		sent = leftInSrc(sent, src)
		// a consumer may still read what Close left in Out? No: Close drains Out.
		got = append(got, drainClosed(t, c.Out())...)
		sc := c.Stats()
		checkBalance(t, sc)
		rest, rs := reopenAndDrain(t, dir)
		all := append([]string(nil), sent...)
		got = append(got, rest...)
		checkSame(t, fmt.Sprintf("trial %d (old %d of first %d)", trial, nOld, want), all, got)
		t.Logf("trial %d: first session %d (old %d), after Close %+v; reopen %d, %+v", trial, want, nOld, sc, len(rest), rs)
		if t.Failed() {
			return
		}
	}
}

// The same with acks: acknowledged deliveries are never delivered again; unacknowledged
// ones are (at least once); nothing is lost.
func TestInterleaveAcksCloseMidInterleave(t *testing.T) {
	for trial := 0; trial < 10; trial++ {
		dir := t.TempDir()
		src := make(chan string, 256)
		c := open(t, dir, src, WithBuffer(1+trial*13%50), WithAcks(8+trial*5), WithLinger(20*time.Millisecond))
		old := spillBacklog(t, c, src, fmt.Sprintf("o%d-", trial), 2000)
		sent := append([]string(nil), old...)
		prod := ilProduce(src, fmt.Sprintf("n%d-", trial), 200000)
		rng := rand.New(rand.NewSource(int64(trial)))
		acked := map[string]bool{}
		var unacked []Delivery[string]
		seen := map[string]int{}
		deadline := time.Now().Add(5 * time.Second)
		for k := 0; k < 400+trial*97; k++ {
			d, ok, closed := akRecv(c.Deliveries(), time.Until(deadline))
			if closed || !ok {
				t.Fatalf("trial %d: no delivery; %+v", trial, c.Stats())
			}
			if rng.Intn(4) != 0 {
				if err := c.Ack(d.Seq); err != nil {
					t.Fatalf("Ack: %v", err)
				}
				acked[d.Msg] = true
			} else {
				unacked = append(unacked, d)
			}
			// the window is a span from the oldest unacknowledged: keep it short
			for len(unacked) > 0 && d.Seq-unacked[0].Seq >= uint64(8+trial*5)/2 {
				d := unacked[0]
				unacked = unacked[1:]
				if err := c.Ack(d.Seq); err != nil {
					t.Fatalf("Ack: %v", err)
				}
				acked[d.Msg] = true
			}
		}
		s := c.Stats()
		akIdentity(t, "before Close", s, 0)
		sent = append(sent, prod.halt(t)...)
		akMustClose(t, c)
		sent = leftInSrc(sent, src)
		drainClosed(t, c.Deliveries())
		akIdentity(t, "after Close", c.Stats(), 0)
		src2 := make(chan string)
		close(src2)
		c2, err := New(dir, src2, String, WithAcks(64))
		if err != nil {
			t.Fatal(err)
		}
		var got2 []Delivery[string]
		akWithin(t, 10*time.Second, "drain after reopen", func() { got2 = akDrainAcked(t, c2, 5*time.Second) })
		akMustClose(t, c2)
		for _, d := range got2 {
			if acked[d.Msg] {
				t.Errorf("trial %d: %q acknowledged before Close, delivered again", trial, d.Msg[:12])
				break
			}
			if seen[d.Msg]++; seen[d.Msg] > 1 {
				t.Errorf("trial %d: %q delivered twice after reopen", trial, d.Msg[:12])
				break
			}
		}
		for _, m := range sent { // acknowledged before Close, or delivered after it
			if !acked[m] && seen[m] == 0 {
				t.Errorf("trial %d: %q lost", trial, m[:12])
				break
			}
		}
		if t.Failed() {
			return
		}
	}
}

// Ordered: a backlog plus a live producer, a Close in the middle, reopen: src order.
func TestInterleaveOrderedCloseMidStream(t *testing.T) {
	for trial := 0; trial < 6; trial++ {
		dir := t.TempDir()
		src := make(chan string, 256)
		c := open(t, dir, src, WithOrdered(), WithBuffer(1+trial*11), WithLinger(10*time.Millisecond))
		old := spillBacklog(t, c, src, "a", 3000)
		sent := append([]string(nil), old...)
		prod := ilProduce(src, "b", -1)
		got := recvN(c.Out(), 3500+trial*200, 3*time.Second)
		sent = append(sent, prod.halt(t)...)
		akWithin(t, 5*time.Second, "Close", func() { c.Close() })
		sent = leftInSrc(sent, src)
		got = append(got, drainClosed(t, c.Out())...)
		rest, _ := reopenAndDrain(t, dir, WithOrdered())
		got = append(got, rest...)
		checkSame(t, "ordered", sent, got)
		checkOrder(t, "ordered", sent, got)
		if t.Failed() {
			return
		}
	}
}

// Time bound: with a backlog refilling and new messages handed out first, the consumer
// stalls (Out full of a mix of refilled and pending messages, more pending): within the
// linger time plus a write, nothing not done is only in memory (InMemory 0).
func TestInterleaveTimeBoundStalledMix(t *testing.T) {
	for _, acks := range []bool{false, true} {
		dir := t.TempDir()
		src := make(chan string, 64)
		opts := []Option{WithBuffer(50), WithLinger(30 * time.Millisecond)}
		if acks {
			opts = append(opts, WithAcks(200))
		}
		c := open(t, dir, src, opts...)
		spillBacklog(t, c, src, "old", 2000)
		// a trickle of new messages while the consumer takes a few
		for i := 0; i < 300; i++ {
			akSend(t, src, msg("new", i), time.Second)
			if i%3 == 0 {
				if acks {
					d, ok, _ := akRecv(c.Deliveries(), time.Second)
					if ok && i%2 == 0 {
						c.Ack(d.Seq)
					}
				} else {
					recvN(c.Out(), 1, time.Second)
				}
			}
		}
		// the consumer stalls now
		time.Sleep(30*time.Millisecond + 150*time.Millisecond)
		s := c.Stats()
		t.Logf("acks %v: %+v", acks, s)
		if s.InMemory != 0 {
			t.Errorf("acks %v: %d messages only in memory 5x the linger time after the consumer stalled: %+v", acks, s.InMemory, s)
		}
		checkBalance(t, s)
		akWithin(t, 5*time.Second, "Close", func() { c.Close() })
	}
}

// src closed while a backlog refills and new messages are pending: Out closes only after
// everything, exactly once; with acks too.
func TestInterleaveSrcClosedMix(t *testing.T) {
	for _, acks := range []bool{false, true} {
		dir := t.TempDir()
		src := make(chan string, 1024)
		opts := []Option{WithBuffer(10)}
		if acks {
			opts = append(opts, WithAcks(32))
		}
		c := open(t, dir, src, opts...)
		old := spillBacklog(t, c, src, "old", 3000)
		fresh := msgs("new", 3000)
		go func() {
			for _, m := range fresh {
				src <- m
			}
			close(src)
		}()
		var got []string
		if acks {
			akWithin(t, 10*time.Second, "drain", func() {
				for _, d := range akDrainAcked(t, c, 3*time.Second) {
					got = append(got, d.Msg)
				}
			})
		} else {
			var closed bool
			got, closed = drain(c.Out(), 3*time.Second)
			if !closed {
				t.Errorf("acks %v: Out not closed; %+v", acks, c.Stats())
			}
		}
		checkSame(t, fmt.Sprintf("src closed, acks %v", acks), append(old, fresh...), got)
		akWithin(t, 5*time.Second, "Close", func() { c.Close() })
		checkBalance(t, c.Stats())
	}
}

// How fast the backlog drains beside a producer that is faster than the consumer: the
// share of refilled messages among what the consumer takes.
func TestInterleaveBacklogShare(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string, 1024)
	c := open(t, dir, src, WithBuffer(16))
	spillBacklog(t, c, src, "old", 40000) // more than is taken below: the share is the rule's
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case src <- msg("new", i):
			case <-stop:
				return
			}
		}
	}()
	const take = 20000
	got := recvN(c.Out(), take, 5*time.Second)
	close(stop)
	<-done
	if len(got) != take {
		t.Fatalf("took %d of %d within the deadline", len(got), take)
	}
	nOld := 0
	for _, g := range got {
		if strings.HasPrefix(g, "old") {
			nOld++
		}
	}
	t.Logf("of the first %d taken, %d from the backlog (%.1f%%); %+v", len(got), nOld, 100*float64(nOld)/float64(len(got)), c.Stats())
	if nOld*refillEvery < len(got)/2 {
		t.Errorf("backlog share %d of %d, far below 1/%d", nOld, len(got), refillEvery)
	}

	akWithin(t, 5*time.Second, "Close", func() { c.Close() })
}

// leftInSrc removes from sent what Close left unread in src (Close stops reading src).
func leftInSrc(sent []string, src chan string) []string {
	left := map[string]bool{}
	for {
		select {
		case v := <-src:
			left[v] = true
			continue
		default:
		}
		break
	}
	out := sent[:0:0]
	for _, m := range sent {
		if !left[m] {
			out = append(out, m)
		}
	}
	return out
}

// Sync and Store while the refill batch and the pending batch are both partly handed out
// (unordered): exactly once across Close and New, Stats balance.
func TestInterleaveSyncStoreMidInterleave(t *testing.T) {
	for trial := 0; trial < 6; trial++ {
		dir := t.TempDir()
		src := make(chan string, 128)
		c := open(t, dir, src, WithBuffer(1+trial*9), WithLinger(15*time.Millisecond))
		old := spillBacklog(t, c, src, "o", 2000)
		sent := append([]string(nil), old...)
		prod := ilProduce(src, "n", 100000)
		var got []string
		for k := 0; k < 1500; k++ {
			select {
			case v := <-c.Out():
				got = append(got, v)
			case <-time.After(3 * time.Second):
				t.Fatalf("no message for 3s; %+v", c.Stats())
			}
			switch k % 200 {
			case 50:
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				if err := c.Sync(ctx); err != nil {
					t.Fatalf("Sync: %v", err)
				}
				cancel()
			case 120:
				// give one back
				v := got[len(got)-1]
				akWithin(t, 3*time.Second, "Store", func() {
					if err := c.Store(v); err != nil {
						t.Errorf("Store: %v", err)
					}
				})
				got = got[:len(got)-1]
			}
		}
		sent = append(sent, prod.halt(t)...)
		checkBalance(t, c.Stats())
		akWithin(t, 5*time.Second, "Close", func() { c.Close() })
		sent = leftInSrc(sent, src)
		got = append(got, drainClosed(t, c.Out())...)
		checkBalance(t, c.Stats())
		rest, _ := reopenAndDrain(t, dir)
		got = append(got, rest...)
		checkSame(t, fmt.Sprintf("trial %d", trial), sent, got)
		if t.Failed() {
			return
		}
	}
}

// Write-ahead with acks, a backlog and a live producer: no pending message is ever handed
// out (every Delivery.ID is set), and Close in the middle loses nothing.
func TestInterleaveWriteAheadNeverPending(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string, 128)
	c := open(t, dir, src, WithWriteAhead(), WithAcks(64), WithBuffer(8), WithLinger(10*time.Millisecond))
	old := msgs("o", 1500)
	for _, m := range old {
		akSend(t, src, m, 3*time.Second)
	}
	sent := append([]string(nil), old...)
	prod := ilProduce(src, "n", 50000)
	seen := map[string]int{}
	acked := map[string]bool{}
	var out []string // delivered and not acknowledged
	for k := 0; k < 3000; k++ {
		d, ok, _ := akRecv(c.Deliveries(), 3*time.Second)
		if !ok {
			t.Fatalf("no delivery; %+v", c.Stats())
		}
		if d.ID.IsZero() {
			t.Fatalf("write-ahead delivery %d without an ID: handed out from the pending batch", d.Seq)
		}
		switch k % 5 {
		case 0:
			out = append(out, d.Msg)
		case 4: // everything so far
			if err := c.AckThrough(d.Seq); err != nil {
				t.Fatalf("AckThrough(%d): %v", d.Seq, err)
			}
			for _, m := range append(out, d.Msg) {
				acked[m] = true
			}
			out = out[:0]
		default:
			if err := c.Ack(d.Seq); err != nil {
				t.Fatalf("Ack(%d): %v", d.Seq, err)
			}
			acked[d.Msg] = true
		}
	}
	sent = append(sent, prod.halt(t)...)
	akMustClose(t, c)
	sent = leftInSrc(sent, src)
	drainClosed(t, c.Deliveries())
	src2 := make(chan string)
	close(src2)
	c2, err := New(dir, src2, String, WithWriteAhead(), WithAcks(64))
	if err != nil {
		t.Fatal(err)
	}
	var got2 []Delivery[string]
	akWithin(t, 10*time.Second, "drain", func() { got2 = akDrainAcked(t, c2, 5*time.Second) })
	akMustClose(t, c2)
	for _, d := range got2 {
		if acked[d.Msg] {
			t.Fatalf("%q acknowledged before Close, delivered again", d.Msg[:10])
		}
		if seen[d.Msg]++; seen[d.Msg] > 1 {
			t.Fatalf("%q delivered twice after reopen", d.Msg[:10])
		}
	}
	for _, m := range sent { // acknowledged before Close, or delivered after it
		if !acked[m] && seen[m] == 0 {
			t.Fatalf("%q lost", m[:10])
		}
	}
}

// drainClosed takes what is left in ch after Close, which must have closed it.
func drainClosed[T any](t *testing.T, ch <-chan T) []T {
	t.Helper()
	got, closed := drain(ch, 5*time.Second)
	if !closed {
		t.Fatalf("not closed 5s after Close (%d taken)", len(got))
	}
	return got
}

// ilProducer sends messages numbered from 0 under a prefix on src, n of them (n < 0:
// without end), until halted, and keeps those src took.
type ilProducer struct {
	mu         sync.Mutex
	sent       []string
	stop, done chan struct{}
}

func ilProduce(src chan<- string, prefix string, n int) *ilProducer {
	p := &ilProducer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; n < 0 || i < n; i++ {
			m := msg(prefix, i)
			select {
			case src <- m:
				p.mu.Lock()
				p.sent = append(p.sent, m)
				p.mu.Unlock()
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// halt stops the producer (within 5 s) and returns what src took.
func (p *ilProducer) halt(t *testing.T) []string {
	t.Helper()
	close(p.stop)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the producer did not stop")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}
