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
// Data flow: one goroutine (the loop) owns src, Out and the in-memory batch; a second one
// (the disk goroutine) owns the spool: it encodes, compresses and appends batches, reads
// records back ahead of need, acknowledges delivered records and deletes consumed segments.
// They talk only over channels.
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
	closeOnce sync.Once
	done      chan struct{} // closed when both goroutines have finished
	closeErr  error
	statsReq  chan chan Stats
	final     Stats // the last snapshot, set before done is closed

	// loop <-> disk goroutine
	writeCh  chan []T          // batches to store
	freeCh   chan []T          // empty batch slices coming back
	refillCh chan *refill[T]   // batches read back from disk; closed when src is done and disk is empty
	doneCh   chan *refill[T]   // refill batches fully handed out
	srcDone  chan struct{}     // closed by the loop: src is closed and nothing more will be written
	finishCh chan finishReq[T] // shutdown

	avgSize atomic.Int64 // average encoded message size seen by the disk goroutine
	disk    diskStats
}

// refill is one record read back from disk and decoded.
type refill[T any] struct {
	pos  spool.Cursor // the record; pos.Offset is unused
	msgs []T
	idx  []uint32 // idx[i]: position of msgs[i] in its record
}

// finishReq asks the disk goroutine to store what the loop still holds and close the spool.
type finishReq[T any] struct {
	batches [][]T
	cursor  *spool.Cursor // exact position of the refill batch being handed out, if any
	reply   chan error
}

const batchPool = 4

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
		done:     make(chan struct{}),
		statsReq: make(chan chan Stats),
		writeCh:  make(chan []T, 1),
		freeCh:   make(chan []T, batchPool),
		refillCh: make(chan *refill[T], 1),
		doneCh:   make(chan *refill[T], 2),
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
	c.disk.publish(sp, sp.Stats().Undelivered)
	for range batchPool {
		c.freeCh <- make([]T, 0, 64)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.runDisk(sp) }()
	go func() { defer wg.Done(); c.loop() }()
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
func (c *Chan[T]) Stats() Stats {
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
	pending  []T // spilled messages not yet written; nil while waiting for a free slice
	ph       int // pending[:ph] were handed out from memory
	cur      *refill[T]
	ci       int // next message of cur to hand out
	received int64
	direct   int64
	refilled int64
}

func (c *Chan[T]) loop() {
	var (
		st        loopState[T]
		srcC      = c.src
		refillC   = c.refillCh
		linger    = time.NewTimer(time.Hour)
		lingerC   <-chan time.Time
		flushNow  bool
		srcClosed bool
	)
	linger.Stop()
	defer linger.Stop()
	st.pending = <-c.freeCh
	for {
		queued := len(st.pending) - st.ph
		full := st.pending != nil && (queued >= c.batchCount() || (flushNow && queued > 0))
		// Choose what each case may do this round (nil channels never fire).
		var (
			recvSrc  <-chan T
			sendOut  chan<- T
			next     T
			sendDisk chan<- []T
			getFree  <-chan []T
			getBatch <-chan *refill[T]
		)
		if !srcClosed && st.pending != nil && !full {
			recvSrc = srcC
		}
		switch {
		case st.cur != nil:
			sendOut, next = c.out, st.cur.msgs[st.ci]
		case queued > 0:
			sendOut, next = c.out, st.pending[st.ph]
		}
		if st.cur == nil {
			getBatch = refillC
		}
		if full {
			sendDisk = c.writeCh
		}
		if st.pending == nil {
			getFree = c.freeCh
		}
		if srcClosed && queued == 0 && st.pending != nil && c.srcDone != nil {
			close(c.srcDone) // nothing more will be written
			c.srcDone = nil
		}
		if srcClosed && refillC == nil && st.cur == nil && queued == 0 {
			c.shutdown(&st, false)
			return
		}

		select {
		case v, ok := <-recvSrc:
			if !ok {
				srcClosed = true
				continue
			}
			st.received++
			select {
			case c.out <- v:
				st.direct++
			default:
				if queued == 0 {
					linger.Reset(c.opts.linger)
					lingerC = linger.C
				}
				st.pending = append(st.pending, v)
			}
		case sendOut <- next:
			if st.cur != nil {
				st.refilled++
				st.ci++
				if st.ci == len(st.cur.msgs) {
					c.doneCh <- st.cur // never blocks: there are only two refill batches
					st.cur = nil
				}
			} else {
				var zero T
				st.pending[st.ph] = zero
				st.ph++
				st.direct++
				if st.ph == len(st.pending) {
					st.pending, st.ph = st.pending[:0], 0
					lingerC, flushNow = nil, false
				}
			}
		case b, ok := <-getBatch:
			if !ok {
				refillC = nil
				continue
			}
			if len(b.msgs) == 0 {
				c.doneCh <- b
				continue
			}
			st.cur, st.ci = b, 0
		case sendDisk <- st.pending[st.ph:]:
			st.pending, st.ph = nil, 0
			lingerC, flushNow = nil, false
		case p := <-getFree:
			st.pending = p[:0]
		case <-lingerC:
			lingerC, flushNow = nil, true
		case r := <-c.statsReq:
			r <- c.snapshot(&st)
		case <-c.closing:
			c.shutdown(&st, true)
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
func (c *Chan[T]) shutdown(st *loopState[T], graceful bool) {
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
		if len(drained) > 0 {
			req.batches = append(req.batches, drained)
		}
		if st.pending != nil && len(st.pending) > st.ph {
			req.batches = append(req.batches, st.pending[st.ph:])
		}
		if st.cur != nil {
			pos := st.cur.pos
			pos.Offset = st.cur.idx[st.ci]
			req.cursor = &pos
		}
	}
	c.finishCh <- req
	c.closeErr = <-req.reply
	close(c.out)
	c.final = c.snapshot(st)
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
