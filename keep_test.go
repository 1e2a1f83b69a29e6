package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// keepLoop is a loop state with batches of 40 messages (keep: 20) and pending full to the
// brim: 60 messages, p000000 oldest.
func keepLoop(t *testing.T, ordered bool) (*loopState[string], *Chan[string]) {
	t.Helper()
	c := &Chan[string]{opts: defaults(), returnCh: make(chan *refill[string], refillPool),
		freeCh: make(chan []string, batchPool)}
	c.opts.ordered = ordered
	c.avgSize.Store(int64(c.opts.batchBytes / 40))
	l := &loopState[string]{c: c, tab: newTable[string](), tick: time.NewTicker(time.Hour),
		linger: time.NewTimer(time.Hour), shadowDone: map[uint64]bool{}}
	t.Cleanup(func() { l.tick.Stop(); l.linger.Stop() })
	l.pending = make([]string, 0, 64)
	now := time.Now().UnixNano()
	for i := 0; l.accepting(); i++ {
		l.pending = append(l.pending, fmt.Sprintf("p%06d", i))
		l.pendAt = append(l.pendAt, now+int64(i))
	}
	c.backlog.Store(true)
	return l, c
}

// A full pending batch is written without its newest half batch, which stays for the
// consumer ahead of the refill batch; with no free batch slice nothing is written and src
// is not read until one comes.
func TestFlushFullKeepsReserve(t *testing.T) {
	l, c := keepLoop(t, false)
	if got, want := l.queued(), c.batchCount()+c.batchCount()/2; got != want {
		t.Fatalf("pending took %d messages, want a batch and half (%d)", got, want)
	}
	if !l.full() {
		t.Fatal("full: false for a batch and a half")
	}
	// A refill batch waits too.
	l.cur = &refill[string]{msgs: []string{"r0", "r1"}, ids: []MsgID{{Seg: 1, Msg: 0}, {Seg: 1, Msg: 1}}}

	// No free slice: it waits for one.
	l.flushFull()
	if len(l.outq) != 0 || !l.needFree || l.accepting() {
		t.Fatalf("without a free slice: outq %d, needFree %v, accepting %v", len(l.outq), l.needFree, l.accepting())
	}
	// One is handed out meanwhile: the oldest.
	if v, _, ok := l.next(); !ok || v != "p000000" || !l.fromPending {
		t.Fatalf("next = %q, %v (fromPending %v), want p000000 from pending", v, ok, l.fromPending)
	}
	l.handed()

	c.freeCh <- make([]string, 0, 4)
	l.flushFull()
	if len(l.outq) != 1 || l.needFree {
		t.Fatalf("with a free slice: outq %d, needFree %v", len(l.outq), l.needFree)
	}
	b := l.outq[0]
	if len(b.msgs) != c.batchCount() || b.msgs[0] != "p000001" || b.msgs[len(b.msgs)-1] != fmt.Sprintf("p%06d", c.batchCount()) {
		t.Fatalf("written: %d messages %q..%q, want the %d oldest not handed out", len(b.msgs), b.msgs[0], b.msgs[len(b.msgs)-1], c.batchCount())
	}
	keep := c.batchCount()/2 - 1 // one of the reserve's place went to the one handed out
	if l.queued() != keep || l.ph != 0 || len(l.pendAt) != len(l.pending) {
		t.Fatalf("left: queued %d (ph %d, pendAt %d, pending %d), want %d", l.queued(), l.ph, len(l.pendAt), len(l.pending), keep)
	}
	if want := fmt.Sprintf("p%06d", c.batchCount()+1); l.pending[0] != want {
		t.Fatalf("left first %q, want %q", l.pending[0], want)
	}
	if v, _, ok := l.next(); !ok || !l.fromPending || v != l.pending[0] {
		t.Fatalf("next after the write = %q (fromPending %v), want the reserve first", v, l.fromPending)
	}
	if !l.accepting() {
		t.Fatal("not accepting after the write")
	}
	// The rest of the cleared slice holds nothing for the GC to keep.
	if full := l.pending[:cap(l.pending)]; full[len(l.pending)] != "" {
		t.Fatalf("stale message %q past the reserve", full[len(l.pending)])
	}
}

// The linger time, a Sync, src closed and ordered mode write everything pending.
func TestFlushFullAllWhenDue(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ordered bool
		set     func(l *loopState[string])
	}{
		{"linger", false, func(l *loopState[string]) { l.flushNow = true }},
		{"src closed", false, func(l *loopState[string]) { l.srcClosed = true }},
		{"ordered", true, func(l *loopState[string]) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, c := keepLoop(t, tc.ordered)
			n := l.queued()
			tc.set(l)
			c.freeCh <- make([]string, 0, 64)
			l.flushFull()
			if len(l.outq) != 1 || len(l.outq[0].msgs) != n || l.queued() != 0 {
				t.Fatalf("outq %d, queued %d after the write, want all %d written", len(l.outq), l.queued(), n)
			}
		})
	}
	// Sync: request flushes all of it, reserve included.
	l, c := keepLoop(t, false)
	n := l.queued()
	c.freeCh <- make([]string, 0, 64)
	l.request(request[string]{reply: make(chan error, 1)})
	if len(l.outq) != 1 || len(l.outq[0].msgs) != n || l.queued() != 0 {
		t.Fatalf("Sync: outq %d, queued %d, want all %d written", len(l.outq), l.queued(), n)
	}
}

// Ordered mode: deliveries only in memory (waiting in Out) are older than everything
// pending, so a flush writes them first; else a crash leaves them behind newer messages.
func TestOrderedFlushShadowsFirst(t *testing.T) {
	l, c := keepLoop(t, true)
	c.backlog.Store(false)
	// Three direct passes wait in Out: handed out from memory before anything pending.
	for i := 0; i < 3; i++ {
		l.sentMem(fmt.Sprintf("d%d", i))
	}
	n := l.queued()
	l.flush()
	if len(l.outq) != 2 {
		t.Fatalf("outq %d batches, want the shadow then the pending batch", len(l.outq))
	}
	sh, sp := l.outq[0], l.outq[1]
	if sh.kind != bShadow || len(sh.msgs) != 3 || sh.msgs[0] != "d0" || sh.no > sp.no {
		t.Fatalf("first batch: kind %v, %q (no %d), want the 3 direct passes before batch %d", sh.kind, sh.msgs, sh.no, sp.no)
	}
	if sp.kind != bSpill || len(sp.msgs) != n || l.memOnly != 0 {
		t.Fatalf("second batch: kind %v, %d messages, memOnly %d; want the %d pending", sp.kind, len(sp.msgs), l.memOnly, n)
	}

	// Unordered: nothing to keep in order, the direct passes stay where they are.
	l, _ = keepLoop(t, false)
	l.sentMem("d0")
	l.flush()
	if len(l.outq) != 1 || l.outq[0].kind != bSpill || l.memOnly != 1 {
		t.Fatalf("unordered: outq %d (first kind %v), memOnly %d; want the pending batch alone", len(l.outq), l.outq[0].kind, l.memOnly)
	}
}
