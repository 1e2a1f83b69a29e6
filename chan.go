// Package pelichan is a persistent, disk-buffered channel. A Chan reads a source channel and
// hands the messages out on its Out channel; while the consumer keeps up they stay in
// memory, and when Out is full the overflow is spilled to disk (zstd-compressed batches in
// rotating WAL segments) and fed back when Out has room again.
//
// Delivery: on the graceful path (Close, then New on the same directory) every message
// taken from src is delivered exactly once. After a crash, what was only in memory is lost,
// what reached the spool survives, and messages refilled since the last cursor checkpoint
// (taken at every segment boundary and every second) may be delivered again. Order is not
// guaranteed.
//
// Data flow: one goroutine (the loop) owns src, Out and the in-memory batch. Full batches go
// to two compressor goroutines, which encode and compress them into records. One goroutine
// (the disk goroutine) owns the spool: it appends the records, reads records back ahead of
// need, acknowledges delivered records and deletes consumed segments. They talk only over
// channels.
package pelichan

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// Chan is a disk-buffered channel. Create it with New.
type Chan[T any] struct {
	src   <-chan T
	out   chan T
	codec Codec[T]
	opts  options
	dir   string

	closing   chan struct{} // closed by Close
	counted   chan struct{} // closed by the disk goroutine once the backlog is counted
	closeOnce sync.Once
	done      chan struct{} // closed when both goroutines have finished
	closeErr  error
	statsReq  chan chan Stats
	final     Stats // the last snapshot, set before done is closed

	// loop <-> disk goroutine
	writeCh  chan []T          // batches to store, taken by the compressors; closed at shutdown
	freeCh   chan []T          // empty batch slices coming back
	recCh    chan encoded      // compressed records, from the compressors to the disk goroutine
	refillCh chan *refill[T]   // batches read back from disk; closed when src is done and disk is empty
	doneCh   chan *refill[T]   // refill batches fully handed out
	srcDone  chan struct{}     // closed by the loop: src is closed and nothing more will be written
	finishCh chan finishReq[T] // shutdown

	avgSize  atomic.Int64 // average encoded message size seen by the compressors
	inflight atomic.Int64 // batches sent to writeCh and not yet stored
	disk     diskStats
}

// refill is one record read back from disk and decoded.
type refill[T any] struct {
	seq  uint64       // order in which the disk goroutine read it
	pos  spool.Cursor // the record; pos.Offset: messages of it delivered before
	msgs []T
	idx  []uint32 // idx[i]: position of msgs[i] in its record
}

// finishReq asks the disk goroutine to store the records still coming from the
// compressors (recCh is closed when they are done) and close the spool.
type finishReq[T any] struct {
	cursor *spool.Cursor // exact position of the refill batch being handed out, if any
	front  []T           // ordered mode: messages taken back from Out, older than the backlog
	reply  chan error
}

const batchPool = 4 // pending batch slices in circulation

// compressors is how many goroutines encode and compress batches (zstd is the costliest
// step): two, or one in ordered mode, where records must reach the disk in order.
func (c *Chan[T]) compressors() int {
	if c.opts.ordered {
		return 1
	}
	return 2
}

// New opens (or creates) the spool in dir and starts moving messages from src to Out.
// A backlog left in dir by an earlier Chan is delivered too. dir is locked until Close:
// a second New on it fails with ErrLocked.
func New[T any](dir string, src <-chan T, codec Codec[T], opts ...Option) (*Chan[T], error) {
	if src == nil {
		return nil, fmt.Errorf("pelichan: New: nil source channel")
	}
	if codec == nil {
		return nil, fmt.Errorf("pelichan: New: nil codec")
	}
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	c := &Chan[T]{
		src: src, out: make(chan T, o.buffer), codec: codec, opts: o, dir: dir,
		closing:  make(chan struct{}),
		counted:  make(chan struct{}),
		done:     make(chan struct{}),
		statsReq: make(chan chan Stats),
		writeCh:  make(chan []T, 1),
		recCh:    make(chan encoded),
		freeCh:   make(chan []T, batchPool),
		refillCh: make(chan *refill[T], 1),
		doneCh:   make(chan *refill[T], refillPool),
		srcDone:  make(chan struct{}),
		finishCh: make(chan finishReq[T]),
	}
	c.avgSize.Store(256)
	sp, err := spool.Open(dir, spool.Options{
		SegmentSize: o.segmentSize,
		NoSync:      o.sync.never,
		OnCorrupt:   c.disk.reportCorrupt(o.errorHandler),
	})
	if err != nil {
		return nil, fmt.Errorf("pelichan: open %s: %w", dir, err)
	}
	c.disk.publish(sp, sp.Peek().Undelivered)
	for range batchPool {
		c.freeCh <- make([]T, 0, 64)
	}
	var wg, cwg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); c.runDisk(sp) }()
	go func() { defer wg.Done(); c.loop() }()
	for range c.compressors() {
		cwg.Add(1)
		go func() { defer cwg.Done(); c.compress() }()
	}
	go func() { defer wg.Done(); cwg.Wait(); close(c.recCh) }()
	go func() { wg.Wait(); close(c.done) }()
	return c, nil
}

// Out is the channel messages are delivered on. It is closed after Close, or once src is
// closed and every message has been handed out.
func (c *Chan[T]) Out() <-chan T { return c.out }

// Close stops reading src, stores everything the Chan holds in memory (including messages
// in Out's buffer that nobody has received yet), makes it durable per the sync policy,
// closes Out and releases the directory. It returns the first error met while storing.
// Close is idempotent and safe to call from any goroutine.
func (c *Chan[T]) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	<-c.done
	return c.closeErr
}

// Stats returns a snapshot of the Chan's counters.
//
// Right after New with a large backlog, the backlog's segments are counted in the
// background (the first message does not wait for it); Stats waits for that once.
func (c *Chan[T]) Stats() Stats {
	select {
	case <-c.counted:
	case <-c.done:
		return c.final
	}
	reply := make(chan Stats, 1)
	select {
	case c.statsReq <- reply:
		return <-reply
	case <-c.done:
		return c.final
	}
}

// loopState is what the loop goroutine owns.
type loopState[T any] struct {
	c        *Chan[T]
	pending  []T // spilled messages not yet written; nil while waiting for a free slice
	ph       int // pending[:ph] were handed out from memory
	cur      *refill[T]
	ci       int // next message of cur to hand out
	received int64
	direct   int64
	refilled int64

	linger    *time.Timer
	lingerC   <-chan time.Time
	flushNow  bool // the linger time passed: write the batch however small
	srcClosed bool
	toldDisk  bool              // srcDone is closed
	refillC   <-chan *refill[T] // nil once the disk goroutine closed it
}

func (l *loopState[T]) queued() int { return len(l.pending) - l.ph }

// full reports whether the pending batch is to be written now.
func (l *loopState[T]) full() bool {
	q := l.queued()
	return l.pending != nil && (q >= l.c.batchCount() || (l.flushNow && q > 0))
}

// accepting reports whether the loop may take a message from src.
func (l *loopState[T]) accepting() bool {
	return !l.srcClosed && l.pending != nil && !l.full()
}

// queueEmpty reports whether no message is queued ahead of a new one: always in unordered
// mode; in ordered mode when nothing is pending, in flight to disk, on disk or being
// handed out from a refill batch.
func (l *loopState[T]) queueEmpty() bool {
	return !l.c.opts.ordered ||
		(l.queued() == 0 && l.cur == nil && l.c.inflight.Load() == 0 && l.c.disk.stored.Load() == 0)
}

// take handles a message received from src: straight to Out if it has room (and, in
// ordered mode, nothing is queued ahead of it), else into the pending batch.
func (l *loopState[T]) take(v T) {
	l.received++
	if l.queueEmpty() {
		select {
		case l.c.out <- v:
			l.direct++
			return
		default:
		}
	}
	if l.queued() == 0 {
		l.linger.Reset(l.c.opts.linger)
		l.lingerC = l.linger.C
	}
	l.pending = append(l.pending, v)
}

// next returns the message to hand out next, if any: from the refill batch, else from
// the pending batch (memory first: it never went to disk).
func (l *loopState[T]) next() (v T, ok bool) {
	switch {
	case l.cur != nil:
		return l.cur.msgs[l.ci], true
	case l.queued() > 0 && (!l.c.opts.ordered || (l.c.inflight.Load() == 0 && l.c.disk.stored.Load() == 0)):
		return l.pending[l.ph], true
	}
	return v, false
}

// handed records that the message from next went into Out.
func (l *loopState[T]) handed() {
	if l.cur != nil {
		l.refilled++
		l.ci++
		if l.ci == len(l.cur.msgs) {
			l.c.doneCh <- l.cur // never blocks: capacity refillPool
			l.cur = nil
		}
		return
	}
	var zero T
	l.pending[l.ph] = zero
	l.ph++
	l.direct++
	if l.ph == len(l.pending) {
		l.pending, l.ph = l.pending[:0], 0
		l.lingerC, l.flushNow = nil, false
	}
}

// burst moves messages with non-blocking channel operations, which cost far less than
// the loop's full select, for as long as there is something to move.
func (l *loopState[T]) burst() {
	for range 512 {
		moved := false
		if v, ok := l.next(); ok {
			select {
			case l.c.out <- v:
				l.handed()
				moved = true
			default:
			}
		}
		if l.accepting() {
			select {
			case v, ok := <-l.c.src:
				if !ok {
					l.srcClosed = true
				} else {
					l.take(v)
				}
				moved = true
			default:
			}
		}
		if !moved {
			return
		}
	}
}

func (c *Chan[T]) loop() {
	l := &loopState[T]{c: c, linger: time.NewTimer(time.Hour), refillC: c.refillCh}
	l.linger.Stop()
	defer l.linger.Stop()
	l.pending = <-c.freeCh
	for {
		l.burst()
		// Choose what each case may do this round (nil channels never fire).
		var (
			recvSrc  <-chan T
			sendOut  chan<- T
			sendDisk chan<- []T
			getFree  <-chan []T
			getBatch <-chan *refill[T]
		)
		if l.accepting() {
			recvSrc = c.src
		}
		next, ok := l.next()
		if ok {
			sendOut = c.out
		}
		if l.cur == nil {
			getBatch = l.refillC
		}
		if l.full() {
			sendDisk = c.writeCh
		}
		if l.pending == nil {
			getFree = c.freeCh
		}
		if l.srcClosed && l.queued() == 0 && l.pending != nil && !l.toldDisk {
			close(c.srcDone) // nothing more will be written
			l.toldDisk = true
		}
		if l.srcClosed && l.refillC == nil && l.cur == nil && l.queued() == 0 {
			c.shutdown(l, false)
			return
		}

		select {
		case v, ok := <-recvSrc:
			if !ok {
				l.srcClosed = true
				continue
			}
			l.take(v)
		case sendOut <- next:
			l.handed()
		case b, ok := <-getBatch:
			if !ok {
				l.refillC = nil
				continue
			}
			if len(b.msgs) == 0 {
				c.doneCh <- b
				continue
			}
			l.cur, l.ci = b, 0
		case sendDisk <- l.pending[l.ph:]:
			c.inflight.Add(1)
			l.pending, l.ph = nil, 0
			l.lingerC, l.flushNow = nil, false
		case p := <-getFree:
			l.pending = p[:0]
		case <-l.lingerC:
			l.lingerC, l.flushNow = nil, true
		case r := <-c.statsReq:
			r <- c.snapshot(l)
		case <-c.closing:
			c.shutdown(l, true)
			return
		}
	}
}

// batchCount is how many messages make a batch of about batchBytes.
func (c *Chan[T]) batchCount() int {
	n := c.opts.batchBytes / int(max(c.avgSize.Load(), 1))
	return min(max(n, 16), 1<<16)
}

// shutdown stores what the loop holds, closes the spool and Out, and records the final
// stats. graceful is true for Close, false when src was closed and everything delivered.
func (c *Chan[T]) shutdown(l *loopState[T], graceful bool) {
	req := finishReq[T]{reply: make(chan error, 1)}
	if graceful {
		var drained []T
	drain:
		for {
			select {
			case v := <-c.out:
				drained = append(drained, v)
			default:
				break drain
			}
		}
		tail := [][]T{drained, l.pending[min(l.ph, len(l.pending)):]}
		if c.opts.ordered {
			req.front, tail = drained, tail[1:] // older than the backlog: in front of it
		}
		for _, b := range tail {
			if len(b) > 0 {
				c.writeCh <- b // the compressors keep taking batches until writeCh is closed
				c.inflight.Add(1)
			}
		}
		if l.cur != nil {
			pos := l.cur.pos
			pos.Offset = l.cur.idx[l.ci]
			req.cursor = &pos
		}
	}
	close(c.writeCh)
	c.finishCh <- req
	c.closeErr = <-req.reply
	close(c.out)
	c.final = c.snapshot(l)
	// Everything is on disk or delivered now; messages taken back from Out were stored again.
	c.final.InMemory = 0
	c.final.OnDisk = c.disk.undeliveredNow()
}

// snapshot merges the loop's counters with the disk goroutine's.
func (c *Chan[T]) snapshot(st *loopState[T]) Stats {
	s, spilledSrc, dropSrc := c.disk.get()
	s.Received = st.received
	s.Direct = st.direct
	s.Refilled = st.refilled
	s.OnDisk -= st.refilled
	s.InMemory = st.received - st.direct - spilledSrc - dropSrc
	return s
}
