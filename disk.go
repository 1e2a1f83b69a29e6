package pelichan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

// diskStats is what the disk goroutine publishes for Stats, under a mutex, once per
// batch or event.
type diskStats struct {
	mu          sync.Mutex
	s           Stats // disk-side fields
	undelivered int64 // messages in records not yet acknowledged
	ackedHanded int64 // messages of acknowledged refill batches that were handed out
	spilledSrc  int64 // messages written that came from src this session (before Close)
	dropSrc     int64 // messages from src refused (codec, too large)
	// stored mirrors undelivered for the loop's lock-free "is anything queued on disk?"
	stored atomic.Int64
}

// publish copies the spool's figures. also, if given, updates counters in the same
// critical section, so that no snapshot sees one change without the other.
func (d *diskStats) publish(sp *spool.Spool, undelivered int64, also ...func(*diskStats)) {
	ss := sp.Peek()
	d.mu.Lock()
	for _, f := range also {
		f(d)
	}
	d.s.Segments = ss.Segments
	d.s.DiskBytes = ss.DiskBytes
	d.s.BytesWritten = ss.BytesWritten
	d.s.BytesRead = ss.BytesRead
	d.s.RawBytesWritten = ss.RawWritten
	if ss.BytesWritten > 0 {
		d.s.CompressionRatio = float64(ss.RawWritten) / float64(ss.BytesWritten)
	}
	d.s.OldestAge = 0
	if ss.Oldest > 0 {
		d.s.OldestAge = time.Since(time.Unix(0, ss.Oldest))
	}
	if undelivered >= 0 {
		d.undelivered = undelivered
		// Segments still being counted after Open are not empty, as far as order goes.
		d.stored.Store(undelivered + int64(ss.Counting))
	}
	d.mu.Unlock()
}

func (d *diskStats) update(f func(*diskStats)) {
	d.mu.Lock()
	f(d)
	d.mu.Unlock()
}

// report counts err and passes it to the handler.
func (d *diskStats) report(handler func(error), err error) {
	d.mu.Lock()
	d.s.Errors++
	d.s.LastError = err.Error()
	d.mu.Unlock()
	handler(err)
}

func (d *diskStats) reportCorrupt(handler func(error)) func(error) {
	return func(err error) {
		d.mu.Lock()
		d.s.Corrupt++
		d.mu.Unlock()
		d.report(handler, err)
	}
}

// get returns the disk-side Stats, and the counts the loop needs for InMemory.
func (d *diskStats) get() (s Stats, spilledSrc, dropSrc int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s = d.s
	// The loop subtracts what it handed out beyond the acknowledged batches.
	s.OnDisk = d.undelivered + d.ackedHanded
	return s, d.spilledSrc, d.dropSrc
}

// encoded is a compressed record on its way from a compressor to the disk goroutine.
type encoded struct {
	rec   []byte     // nil for a batch that produced no record (every message refused)
	n     int        // messages in rec
	last  bool       // the last record of its batch
	reply chan error // the compressor waits on it before reusing rec's buffer
}

// compress turns batches into records until writeCh is closed. Each compressor owns one
// segment.Writer (and so one zstd encoder).
func (c *Chan[T]) compress() {
	w := segment.NewWriter(c.opts.batchBytes)
	w.SetMaxMessage(c.opts.maxMessage)
	defer w.Close()
	reply := make(chan error, 1)
	emit := func(last bool) {
		if w.Len() == 0 {
			if last {
				c.recCh <- encoded{last: true}
			}
			return
		}
		n := w.Len()
		c.avgSize.Store(int64(w.Size()/n) - 4)
		c.recCh <- encoded{rec: w.Record(), n: n, last: last, reply: reply}
		<-reply
		w.Reset()
	}
	for b := range c.writeCh {
		w.SetTime(time.Now().UnixNano())
		for _, v := range b {
			c.encodeInto(w, v, func() { emit(false) }, true)
		}
		c.recycle(b)
		emit(true)
	}
}

// encodeInto adds v to w. If v does not fit beside what w holds, flush writes w's record
// out (and resets w) and v is tried again. A message the codec cannot encode, or one too
// large, is counted as dropped (fromSrc: against src's accounting too) and reported.
func (c *Chan[T]) encodeInto(w *segment.Writer, v T, flush func(), fromSrc bool) {
	encode := func(dst []byte) ([]byte, error) { return c.codec.Encode(dst, v) }
	_, err := w.Add(encode)
	if errors.Is(err, segment.ErrTooLarge) && w.Len() > 0 {
		flush()
		_, err = w.Add(encode)
	}
	if err == nil {
		return
	}
	if !errors.Is(err, segment.ErrTooLarge) {
		err = fmt.Errorf("%w: encode: %w", ErrCodec, err)
	}
	c.disk.update(func(s *diskStats) {
		s.s.Dropped++
		if fromSrc {
			s.dropSrc++
		}
	})
	c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: message refused: %w", err))
}

// recycle clears a batch slice (so the GC can have its messages) and returns it to the pool.
func (c *Chan[T]) recycle(b []T) {
	clear(b)
	select {
	case c.freeCh <- b[:0]:
	default: // a slice made at shutdown, not one of the pool's
	}
}

// Refill: the disk goroutine reads records (cheap) and hands them, numbered, to the
// decoders (zstd and the codec: the costly part); decoded batches go to the loop strictly
// in number order, so the loop sees records in spool order and its cursor stays exact.
const (
	refillPool = 4 // refill batches in circulation: decoding, waiting, with the loop
	decoders   = 2
)

// decodeJob is one record for a decoder to turn into b.
type decodeJob[T any] struct {
	b    *refill[T]
	data []byte // the record: the spool's buffers stay valid while referenced
}

// diskState is what the disk goroutine owns.
type diskState[T any] struct {
	sp       *spool.Spool
	free     []*refill[T] // refill batches not in use
	jobs     chan decodeJob[T]
	decoded  chan *refill[T]
	decoding int                   // jobs out with the decoders
	nextSeq  uint64                // number of the next record dispatched
	orderSeq uint64                // number of the next batch to go to the loop
	waiting  map[uint64]*refill[T] // decoded out of order
	readyQ   []*refill[T]          // decoded, in order, waiting to be sent to the loop
	dirty    bool                  // written since the last fsync
	ckptSeg  uint64                // segment of the last checkpoint
	moved    bool                  // acknowledged since the last checkpoint
	retry    *encoded              // a record whose write failed, to be tried again
	blocked  bool                  // the last write failed; reported once until one succeeds
	closing  bool                  // in finish
	retryIn  time.Duration
	srcDone  bool
	refilled bool // refillCh is closed
}

func (c *Chan[T]) runDisk(sp *spool.Spool) {
	d := &diskState[T]{
		sp:      sp,
		jobs:    make(chan decodeJob[T], refillPool),
		decoded: make(chan *refill[T], refillPool),
		waiting: make(map[uint64]*refill[T]),
	}
	for range refillPool {
		d.free = append(d.free, &refill[T]{})
	}
	var dwg sync.WaitGroup
	for range decoders {
		dwg.Add(1)
		go func() { defer dwg.Done(); c.decode(d.jobs, d.decoded) }()
	}
	defer dwg.Wait()
	defer close(d.jobs)
	var syncC <-chan time.Time
	if c.opts.sync.every > 0 {
		t := time.NewTicker(c.opts.sync.every)
		defer t.Stop()
		syncC = t.C
	}
	ckpt := time.NewTicker(c.opts.checkpoint)
	defer ckpt.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	srcDone := c.srcDone
	recC := c.recCh
	countedC := sp.Counted()

	for {
		c.dispatch(d)
		if d.srcDone && !d.refilled && len(d.readyQ) == 0 && d.decoding == 0 && d.retry == nil && c.inflight.Load() == 0 && sp.Empty() {
			close(c.refillCh)
			d.refilled = true
		}
		var (
			sendC chan<- *refill[T]
			recvC <-chan encoded
		)
		var ready *refill[T]
		if len(d.readyQ) > 0 {
			sendC, ready = c.refillCh, d.readyQ[0]
		}
		if d.retry == nil {
			recvC = recC
		}
		select {
		case e, ok := <-recvC:
			if !ok {
				recC = nil // the compressors are done: only at shutdown
				continue
			}
			if err := c.store(d, e); err != nil {
				d.retry = &e
				d.retryIn = 10 * time.Millisecond
				retry.Reset(d.retryIn)
			}
		case <-retry.C:
			if err := c.store(d, *d.retry); err != nil {
				d.retryIn = min(2*d.retryIn, 100*time.Millisecond)
				retry.Reset(d.retryIn)
				continue
			}
			d.retry = nil
		case sendC <- ready:
			d.readyQ = d.readyQ[1:]
		case b := <-d.decoded:
			d.decoding--
			d.waiting[b.seq] = b
			for {
				w, ok := d.waiting[d.orderSeq]
				if !ok {
					break
				}
				delete(d.waiting, d.orderSeq)
				d.readyQ = append(d.readyQ, w)
				d.orderSeq++
			}
		case b := <-c.doneCh:
			c.ack(d, b, spool.Cursor{Seg: b.pos.Seg, Index: b.pos.Index + 1})
		case <-srcDone:
			d.srcDone, srcDone = true, nil
		case <-countedC:
			countedC = nil
			c.disk.publish(sp, sp.Stats().Undelivered)
			close(c.counted)
		case <-syncC:
			c.sync(d)
		case <-ckpt.C:
			c.checkpoint(d)
			c.expire(d)
		case req := <-c.finishCh:
			req.reply <- c.finish(d, req, recC)
			return
		}
	}
}

// store appends one record and, with SyncAlways, makes it durable before its messages
// count as stored. On success the compressor is told to go on; on error it waits while the
// record is retried.
func (c *Chan[T]) store(d *diskState[T], e encoded) error {
	if e.rec != nil {
		err := c.append(d, e.rec)
		if errors.Is(err, ErrFull) && c.opts.whenFull == DropNewest {
			c.disk.update(func(s *diskStats) { s.s.Dropped += int64(e.n); s.dropSrc += int64(e.n) })
			c.disk.report(c.opts.errorHandler, fmt.Errorf("%w: %d messages dropped (drop-newest)", err, e.n))
			e.reply <- nil
			err, e.rec = nil, nil
		}
		if err != nil {
			if !d.blocked {
				c.disk.report(c.opts.errorHandler, fmt.Errorf("%w (blocking; will retry)", err))
			}
			d.blocked = true
			return err
		}
		d.blocked = false
	}
	if e.rec != nil {
		d.dirty = true
		if c.opts.sync.always {
			c.sync(d)
		}
		c.disk.publish(d.sp, d.sp.Peek().Undelivered, func(s *diskStats) {
			s.s.Spilled += int64(e.n)
			s.spilledSrc += int64(e.n)
		})
		e.reply <- nil
	}
	if e.last {
		c.inflight.Add(-1)
	}
	return nil
}

func (c *Chan[T]) sync(d *diskState[T]) {
	if !d.dirty {
		return
	}
	if err := d.sp.Sync(); err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
		return
	}
	d.dirty = false
}

// dispatch reads records while there are refill batches free and hands them to the
// decoders, numbered.
func (c *Chan[T]) dispatch(d *diskState[T]) {
	read := false
	for len(d.free) > 0 {
		rec, err := d.sp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
			break
		}
		b := d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
		b.pos, b.seq = rec.Pos, d.nextSeq
		d.nextSeq++
		d.decoding++
		d.jobs <- decodeJob[T]{b: b, data: rec.Data} // never blocks: capacity refillPool
		read = true
	}
	if read {
		c.disk.publish(d.sp, -1)
	}
}

// decode turns records into refill batches until jobs is closed. Damaged records and
// messages the codec refuses are reported and skipped; the batch still goes back, so that
// it is acknowledged in order.
func (c *Chan[T]) decode(jobs <-chan decodeJob[T], out chan<- *refill[T]) {
	r := segment.NewReader()
	defer r.Close()
	for j := range jobs {
		b := j.b
		b.msgs, b.idx = b.msgs[:0], b.idx[:0]
		batch, err := r.Decode(j.data)
		if err != nil {
			// The spool checked the CRC, so this is a bug or memory damage: report and skip.
			c.disk.reportCorrupt(c.opts.errorHandler)(&CorruptionError{
				Segment: fmt.Sprintf("%020d", b.pos.Seg), Index: b.pos.Index, Err: err})
			out <- b
			continue
		}
		for i := int(b.pos.Offset); i < batch.Count; i++ {
			v, err := c.codec.Decode(batch.Message(i))
			if err != nil {
				c.disk.update(func(s *diskStats) { s.s.Dropped++ })
				c.disk.report(c.opts.errorHandler, &DecodeError{
					Segment: fmt.Sprintf("%020d", b.pos.Seg), Index: b.pos.Index, Message: i,
					Raw: append([]byte(nil), batch.Message(i)...), Err: err})
				continue
			}
			b.msgs = append(b.msgs, v)
			b.idx = append(b.idx, uint32(i))
		}
		out <- b // never blocks: capacity refillPool
	}
}

// ack records that every message before pos was handed out.
func (c *Chan[T]) ack(d *diskState[T], b *refill[T], pos spool.Cursor) {
	handed := int64(len(b.msgs))
	clear(b.msgs)
	d.free = append(d.free, b)
	if err := d.sp.Ack(pos); err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
	}
	d.moved = true
	c.disk.publish(d.sp, d.sp.Peek().Undelivered, func(s *diskStats) { s.ackedHanded += handed })
	if pos.Seg != d.ckptSeg {
		c.checkpoint(d) // at least at every segment boundary
	}
}

func (c *Chan[T]) checkpoint(d *diskState[T]) {
	if !d.moved {
		return
	}
	if err := d.sp.Checkpoint(); err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
		return
	}
	d.moved = false
	d.ckptSeg = d.sp.Cursor().Seg
}

// finish stores the records still coming from the compressors (the loop has sent its
// leftovers and closed writeCh), applies the loop's exact cursor and closes the spool.
func (c *Chan[T]) finish(d *diskState[T], req finishReq[T], recC <-chan encoded) error {
	var errs []error
	d.closing = true
	for {
		select {
		case b := <-c.doneCh:
			c.ack(d, b, spool.Cursor{Seg: b.pos.Seg, Index: b.pos.Index + 1})
			continue
		default:
		}
		break
	}
	put := func(e encoded) {
		var err error
		for try := 0; try < 3; try++ {
			if err = c.store(d, e); err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		errs = append(errs, fmt.Errorf("pelichan: close: %d messages could not be stored: %w", e.n, err))
		e.reply <- err
		if e.last {
			c.inflight.Add(-1)
		}
	}
	if d.retry != nil {
		put(*d.retry)
		d.retry = nil
	}
	for recC != nil {
		e, ok := <-recC
		if !ok {
			break
		}
		put(e)
	}
	if req.cursor != nil {
		if err := d.sp.Ack(*req.cursor); err != nil {
			errs = append(errs, err)
		}
	}
	if len(req.front) > 0 {
		if err := c.storeFront(d, req.front); err != nil {
			errs = append(errs, fmt.Errorf("pelichan: close: %d messages taken back from Out could not be stored: %w", len(req.front), err))
		}
	}
	final := d.sp.Stats() // exact: waits for any background counting
	if err := d.sp.Close(); err != nil {
		errs = append(errs, fmt.Errorf("pelichan: close: %w", err))
	}
	c.disk.publish(d.sp, final.Undelivered)
	return errors.Join(errs...)
}

func (d *diskStats) undeliveredNow() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.undelivered
}

// append writes one record within the disk cap. At the cap, or on a full disk, the
// drop-oldest policy deletes old segments and tries again; otherwise the error wraps
// ErrFull and the caller applies the policy.
func (c *Chan[T]) append(d *diskState[T], rec []byte) error {
	for {
		var err error
		// At Close, Block lets the cap be exceeded rather than lose what was in memory.
		if c.opts.maxDisk > 0 && !(d.closing && c.opts.whenFull == Block) {
			if used := d.sp.Peek().DiskBytes; used > 0 && used+int64(len(rec))+binary.MaxVarintLen64 > c.opts.maxDisk {
				err = fmt.Errorf("%w: %d bytes on disk, the cap is %d", ErrFull, used, c.opts.maxDisk)
			}
		}
		if err == nil {
			err = d.sp.Append(rec)
			if isNoSpace(err) {
				err = fmt.Errorf("%w: %w", ErrFull, err)
			}
		}
		if err != nil && !errors.Is(err, ErrFull) {
			return fmt.Errorf("pelichan: %w", err)
		}
		if err == nil || c.opts.whenFull != DropOldest {
			return err
		}
		n, ok, derr := d.sp.DropOldest()
		if !ok {
			return err // nothing may be dropped: block until the reader frees space
		}
		c.disk.update(func(s *diskStats) { s.s.Dropped += n })
		c.disk.report(c.opts.errorHandler, errors.Join(
			fmt.Errorf("pelichan: oldest segment dropped with %d messages (drop-oldest): %w", n, err), derr))
	}
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}

// expire applies WithMaxAge.
func (c *Chan[T]) expire(d *diskState[T]) {
	if c.opts.maxAge <= 0 {
		return
	}
	n, err := d.sp.DropOlderThan(time.Now().Add(-c.opts.maxAge).UnixNano())
	if n > 0 {
		c.disk.update(func(s *diskStats) { s.s.Dropped += n })
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %d messages older than %v dropped", n, c.opts.maxAge))
	}
	if err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
	}
	c.disk.publish(d.sp, d.sp.Peek().Undelivered)
}

// storeFront encodes the messages taken back from Out (ordered mode) and puts them in front
// of the backlog.
func (c *Chan[T]) storeFront(d *diskState[T], msgs []T) error {
	w := segment.NewWriter(c.opts.batchBytes)
	defer w.Close()
	w.SetTime(time.Now().UnixNano())
	var recs [][]byte
	stored := 0
	flush := func() {
		stored += w.Len()
		recs = append(recs, append([]byte(nil), w.Record()...))
		w.Reset()
	}
	for _, v := range msgs {
		c.encodeInto(w, v, flush, false)
	}
	n := w.Len()
	if n > 0 {
		stored += n
		recs = append(recs, w.Record())
	}
	if err := d.sp.Front(recs); err != nil {
		return err
	}
	c.disk.update(func(s *diskStats) { s.s.Spilled += int64(stored) })
	return nil
}
