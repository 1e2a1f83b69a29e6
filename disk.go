package pelichan

import (
	"errors"
	"fmt"
	"io"
	"sync"
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
}

func (d *diskStats) publish(sp *spool.Spool, undelivered int64) {
	ss := sp.Stats()
	d.mu.Lock()
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

// diskState is what the disk goroutine owns.
type diskState[T any] struct {
	sp       *spool.Spool
	w        *segment.Writer
	r        *segment.Reader
	free     []*refill[T] // refill batches not in use
	ready    *refill[T]   // read and decoded, waiting to be sent to the loop
	dirty    bool         // written since the last fsync
	ckptSeg  uint64       // segment of the last checkpoint
	moved    bool         // acknowledged since the last checkpoint
	retry    []T          // a batch whose write failed, to be tried again
	retryIn  time.Duration
	srcDone  bool
	refilled bool // refillCh is closed
}

func (c *Chan[T]) runDisk(sp *spool.Spool) {
	d := &diskState[T]{
		sp: sp,
		w:  segment.NewWriter(c.opts.batchBytes),
		r:  segment.NewReader(),
	}
	defer d.w.Close()
	defer d.r.Close()
	for range 2 {
		d.free = append(d.free, &refill[T]{})
	}
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

	for {
		if d.ready == nil && len(d.free) > 0 {
			d.ready = c.readNext(d)
		}
		if d.srcDone && !d.refilled && d.ready == nil && d.retry == nil && len(c.writeCh) == 0 && sp.Empty() {
			close(c.refillCh)
			d.refilled = true
		}
		var (
			sendC  chan<- *refill[T]
			writeC <-chan []T
		)
		if d.ready != nil {
			sendC = c.refillCh
		}
		if d.retry == nil {
			writeC = c.writeCh
		}
		select {
		case b := <-writeC:
			if err := c.store(d, b); err != nil {
				d.retry = b
				d.retryIn = 10 * time.Millisecond
				retry.Reset(d.retryIn)
				continue
			}
			c.recycle(b)
		case <-retry.C:
			if err := c.store(d, d.retry); err != nil {
				d.retryIn = min(2*d.retryIn, time.Second)
				retry.Reset(d.retryIn)
				continue
			}
			c.recycle(d.retry)
			d.retry = nil
		case sendC <- d.ready:
			d.ready = nil
		case b := <-c.doneCh:
			c.ack(d, b, spool.Cursor{Seg: b.pos.Seg, Index: b.pos.Index + 1})
		case <-srcDone:
			d.srcDone, srcDone = true, nil
		case <-syncC:
			c.sync(d)
		case <-ckpt.C:
			c.checkpoint(d)
		case req := <-c.finishCh:
			req.reply <- c.finish(d, req)
			return
		}
	}
}

func (c *Chan[T]) recycle(b []T) {
	clear(b) // let the GC have the messages
	c.freeCh <- b[:0]
}

// store encodes, compresses and appends one batch. On a write error the batch's record
// stays in the writer, so a retry appends the very same bytes.
func (c *Chan[T]) store(d *diskState[T], b []T) error {
	if d.w.Len() == 0 {
		d.w.SetTime(time.Now().UnixNano())
		for _, v := range b {
			c.add(d, v)
		}
	}
	return c.flush(d)
}

// add appends one message to the writer, writing the record first if the message would
// make it too large.
func (c *Chan[T]) add(d *diskState[T], v T) {
	encode := func(dst []byte) ([]byte, error) { return c.codec.Encode(dst, v) }
	_, err := d.w.Add(encode)
	if errors.Is(err, segment.ErrTooLarge) && d.w.Len() > 0 {
		if ferr := c.flush(d); ferr == nil {
			_, err = d.w.Add(encode)
		}
	}
	if err != nil {
		if !errors.Is(err, segment.ErrTooLarge) {
			err = fmt.Errorf("%w: encode: %w", ErrCodec, err)
		}
		c.disk.update(func(s *diskStats) { s.s.Dropped++; s.dropSrc++ })
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: message refused: %w", err))
	}
}

// flush appends the writer's record to the spool and, with SyncAlways, makes it durable.
func (c *Chan[T]) flush(d *diskState[T]) error {
	n := d.w.Len()
	if n == 0 {
		return nil
	}
	if err := d.sp.Append(d.w.Record()); err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w (will retry)", err))
		return err
	}
	d.dirty = true
	if c.opts.sync.always {
		c.sync(d)
	}
	c.avgSize.Store(int64(d.w.Size()/n) - 4)
	d.w.Reset()
	c.disk.update(func(s *diskStats) {
		s.s.Spilled += int64(n)
		s.spilledSrc += int64(n)
	})
	c.disk.publish(d.sp, d.sp.Stats().Undelivered)
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

// readNext reads and decodes the next record, skipping what cannot be read. It returns nil
// when there is nothing to read now.
func (c *Chan[T]) readNext(d *diskState[T]) *refill[T] {
	rec, err := d.sp.Next()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		c.disk.report(c.opts.errorHandler, fmt.Errorf("pelichan: %w", err))
		return nil
	}
	b := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	b.pos, b.msgs, b.idx = rec.Pos, b.msgs[:0], b.idx[:0]
	batch, err := d.r.Decode(rec.Data)
	if err != nil {
		// The spool checked the CRC, so this is a bug or memory damage: report and skip.
		c.disk.reportCorrupt(c.opts.errorHandler)(&CorruptionError{
			Segment: fmt.Sprintf("%020d", rec.Pos.Seg), Index: rec.Pos.Index, Err: err})
		return b // empty: the loop hands it straight back and it is acknowledged in order
	}
	for i := int(rec.Pos.Offset); i < batch.Count; i++ {
		v, err := c.codec.Decode(batch.Message(i))
		if err != nil {
			c.disk.update(func(s *diskStats) { s.s.Dropped++ })
			c.disk.report(c.opts.errorHandler, &DecodeError{
				Segment: fmt.Sprintf("%020d", rec.Pos.Seg), Index: rec.Pos.Index, Message: i,
				Raw: append([]byte(nil), batch.Message(i)...), Err: err})
			continue
		}
		b.msgs = append(b.msgs, v)
		b.idx = append(b.idx, uint32(i))
	}
	c.disk.publish(d.sp, -1)
	return b
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
	c.disk.update(func(s *diskStats) { s.ackedHanded += handed })
	c.disk.publish(d.sp, d.sp.Stats().Undelivered)
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

// finish stores the loop's leftovers and closes the spool.
func (c *Chan[T]) finish(d *diskState[T], req finishReq[T]) error {
	var errs []error
	if d.retry != nil {
		req.batches = append([][]T{d.retry}, req.batches...)
	}
	for {
		select {
		case b := <-c.writeCh:
			req.batches = append(req.batches, b)
			continue
		case b := <-c.doneCh:
			c.ack(d, b, spool.Cursor{Seg: b.pos.Seg, Index: b.pos.Index + 1})
			continue
		default:
		}
		break
	}
	for _, b := range req.batches {
		if err := c.store(d, b); err != nil {
			errs = append(errs, fmt.Errorf("pelichan: close: %d messages could not be stored: %w", len(b), err))
			d.w.Reset()
		}
	}
	if req.cursor != nil {
		if err := d.sp.Ack(*req.cursor); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.sp.Close(); err != nil {
		errs = append(errs, fmt.Errorf("pelichan: close: %w", err))
	}
	c.disk.publish(d.sp, d.sp.Stats().Undelivered)
	return errors.Join(errs...)
}

func (d *diskStats) undeliveredNow() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.undelivered
}
