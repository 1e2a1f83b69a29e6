package pelichan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

// encoded is a compressed record on its way from a compressor to the disk goroutine.
type encoded[T any] struct {
	rec  []byte // nil for the end of a batch that produced no more records
	n    int    // messages in rec
	b    *batch[T]
	last bool // the last record of its batch
}

// compress turns batches into records until writeCh is closed. Each compressor owns one
// segment.Writer (and so one zstd encoder).
func (c *Chan[T]) compress() {
	serveIdle(c.writeCh, c.newWriter, c.compressBatch)
}

// serveIdle calls work for every item from in until in is closed, with state made by
// open on demand and closed once no item came for idleRelease (an idle Chan stays small)
// and at the end.
func serveIdle[J any, S interface{ Close() }](in <-chan J, open func() S, work func(S, J)) {
	var st S
	have := false
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	for {
		select {
		case j, ok := <-in:
			if !ok {
				if have {
					st.Close()
				}
				return
			}
			if !have {
				st, have = open(), true
			}
			idle.Reset(idleRelease)
			// A job takes 50-200 µs. The loop readied this goroutine into its P's next
			// slot, ahead of the consumer it had just readied with a message: yielding
			// lets the consumer run first, and the job go to whichever P is free. Without
			// it, the consumer of a refill waited behind both decoders for 50-200 µs about
			// once per record (WithBuffer(100), a consumer doing 0.5 µs of work a message:
			// a third of the refill's time), and behind the compressors while it drained
			// a backlog beside a producer.
			yieldP()
			work(st, j)
		case <-idle.C:
			if have {
				st.Close()
				var zero S
				st, have = zero, false
			}
		}
	}
}

// idleRelease is how long a compressor or decoder keeps its state without work.
const idleRelease = time.Second

// yieldP lets the goroutines waiting for this P run first (runtime.Gosched), if there is
// another P for the caller to go on on. With one P (GOMAXPROCS=1, which Go sets by itself
// in a container limited to one CPU), a goroutine that yields waits on the global run
// queue until the local one runs dry, and a loop and a consumer handing the P to each
// other never let it: the compressors starved, and messages stayed only in memory for
// several linger times (TestReview12OneProcSpillKeepsUp); a caller of Sync in a loop kept
// the decoders from running (TestReview12OneProcSyncPollStarvesRefill). GOMAXPROCS is
// read each time: the runtime may change it while the program runs.
func yieldP() {
	if runtime.GOMAXPROCS(0) > 1 {
		runtime.Gosched()
	}
}

// compressBatch encodes b into records and hands them to the disk goroutine.
func (c *Chan[T]) compressBatch(w *segment.Writer, b *batch[T]) {
	auto := c.opts.compression == Auto
	behind := auto && c.auto.behind(time.Now(), c.compressors())
	var start time.Time
	var sending time.Duration // waiting for the disk goroutine: not the compressor's work
	if auto {
		start = time.Now()
		defer func() { c.auto.add(time.Since(start)-sending, behind) }()
	}
	c.encodeBatch(w, b, behind, func(e encoded[T]) {
		if e.rec != nil {
			// A copy, so the compressor goes on with w while the disk goroutine appends
			// (it would otherwise wait for every append: a record is a few KiB), in a
			// buffer the disk goroutine gave back if there is one.
			var buf []byte
			select {
			case buf = <-c.recFree:
			default:
			}
			e.rec = append(buf[:0], e.rec...)
		}
		if auto {
			t := time.Now()
			defer func() { sending += time.Since(t) }()
		}
		c.recCh <- e
	})
}

// autoPace decides Auto's compression from how busy the compressors were in the last
// window: S2 while compressing every batch with zstd would keep them busy more than
// autoBusy of the time (they fall behind a producer, who then waits for them), zstd
// otherwise. Time spent on S2 batches counts s2Cheaper times, as what zstd would have
// taken, so that Auto goes back to zstd once zstd would keep up, not as soon as S2 does.
//
// Busy time, not queue length: a queue of two batches also comes from group commit
// (write-ahead) or from a compressor descheduled on a busy machine, at rates zstd keeps up
// with easily. Generated log lines, consumer stalled, a quiet 2-core machine: ratio
// 4.09-4.14 from 20k to 600k lines a second, as Zstd; with the producer at full speed,
// S2's speed (BenchmarkSpillCompression; TestAutoPace, TestAutoZstdWhenCompressorsKeepUp,
// TestAutoWriteAheadKeepsZstd).
type autoPace struct {
	mu    sync.Mutex
	start time.Time // the window's start (with the monotonic clock: a step of the wall clock does not move it); zero: none yet
	busy  int64     // compressing time in the window, in zstd nanoseconds
	s2    bool      // the last window's decision
}

const (
	autoWindow = 20 * time.Millisecond
	autoBusy   = 0.5
	s2Cheaper  = 3
)

// behind reports whether the next batch is to be compressed with S2, closing the window
// if it is over.
func (p *autoPace) behind(now time.Time, compressors int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.start.IsZero() {
		p.start = now
	}
	if el := now.Sub(p.start); el >= autoWindow {
		p.s2 = float64(p.busy) > autoBusy*float64(el)*float64(compressors)
		p.start, p.busy = now, 0
	}
	return p.s2
}

// add counts d of compressing, with S2 if s2.
func (p *autoPace) add(d time.Duration, s2 bool) {
	n := int64(d)
	if s2 {
		n *= s2Cheaper
	}
	p.mu.Lock()
	p.busy += n
	p.mu.Unlock()
}

// recycleRec gives the buffer of a record the spool has taken (it copies what it
// appends) back to the compressors, or to the GC if they have enough or it is larger than
// records usually are (a message larger than a batch makes one).
func (c *Chan[T]) recycleRec(rec []byte) {
	if rec == nil || cap(rec) > 2*c.opts.batchBytes {
		return
	}
	select {
	case c.recFree <- rec:
	default:
	}
}

// maxDoneReuse is the largest done slice (in IDs) given back to the loop for reuse.
const maxDoneReuse = 4096

// drainChan empties a channel's buffer.
func drainChan[E any](ch chan E) {
	takeWaiting(ch, func(E) {})
}

// takeWaiting hands f what waits in ch's buffer, without blocking.
func takeWaiting[E any](ch chan E, f func(E)) {
	for {
		select {
		case e := <-ch:
			f(e)
		default:
			return
		}
	}
}

// encodeBatch encodes b into records with w and hands each, and the end of the batch, to
// send. Messages the codec refuses are counted and reported. A pooled spill batch goes
// back to the pool before its last send: nobody needs its messages after encoding.
func (c *Chan[T]) encodeBatch(w *segment.Writer, b *batch[T], behind bool, send func(encoded[T])) {
	c.startRecord(w, behind)
	emit := func(last bool) {
		n := w.Len()
		if n == 0 && !last {
			return
		}
		e := encoded[T]{n: n, b: b, last: last}
		if n > 0 {
			c.avgSize.Store(int64(w.Size()/n) - 4)
			e.rec = w.Record()
		}
		send(e)
		w.Reset()
	}
	for i, v := range b.msgs {
		if err := c.encodeInto(w, v, func() { emit(false) }); err != nil {
			c.refused(b, i, err)
		}
	}
	if b.pooled && b.kind == bSpill {
		c.recycle(b.msgs)
		b.msgs = nil
	}
	emit(true)
}

// startRecord empties w for new records, compressed as compression(behind) says and
// stamped now.
func (c *Chan[T]) startRecord(w *segment.Writer, behind bool) {
	w.Reset()
	w.SetCompression(c.compression(behind))
	w.SetTime(time.Now().UnixNano())
}

func (c *Chan[T]) newWriter() *segment.Writer {
	w := segment.NewWriter(c.opts.batchBytes)
	w.SetMaxMessage(c.opts.maxMessage)
	return w
}

// compression picks the compression of the next batch: with Auto, S2 when batches queue
// behind the compressors, else zstd.
func (c *Chan[T]) compression(behind bool) segment.Compression {
	switch c.opts.compression {
	case S2:
		return segment.S2
	case Auto:
		if behind {
			return segment.S2
		}
	}
	return segment.Zstd
}

// encodeInto adds v to w. If v does not fit beside what w holds, flush writes w's record
// out (and resets w) and v is tried again.
func (c *Chan[T]) encodeInto(w *segment.Writer, v T, flush func()) error {
	encode := func(dst []byte) ([]byte, error) { return c.codec.Encode(dst, v) }
	_, err := w.Add(encode)
	if errors.Is(err, segment.ErrTooLarge) && w.Len() > 0 {
		flush()
		_, err = w.Add(encode)
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, segment.ErrTooLarge) {
		return encodeRefused(err)
	}
	return fmt.Errorf("pelichan: message refused: %w", err)
}

// encodeRefused is the error for a message the codec could not encode.
func encodeRefused(err error) error {
	return fmt.Errorf("pelichan: message refused: %w: encode: %w", ErrCodec, err)
}

// refused counts and reports message i of b, which could not be encoded. A delivery being
// written while it waits stays in memory (it is still out); anything else is dropped.
func (c *Chan[T]) refused(b *batch[T], i int, err error) {
	if b.refuse == nil {
		b.refuse = make([]bool, len(b.msgs))
	}
	b.refuse[i] = true
	if b.refErr == nil {
		b.refErr = err
	}
	if b.kind != bShadow {
		c.st.update(func(s *Stats) { s.InMemory--; s.Dropped++ })
	}
	c.rep.report(err)
}

// recycle clears a batch slice (so the GC can have its messages) and returns it to the pool.
func (c *Chan[T]) recycle(b []T) {
	clear(b)
	select {
	case c.freeCh <- b[:0]:
	default:
	}
}

// shrinkPools lets go of what the free refill items and the pending batch slices grew to
// (a few KiB each for a batch of small messages, up to about 1.5 MiB for the smallest),
// for an idle Chan: they grow again when used. A free slice is swapped for an empty one, so
// that as many stay in circulation; the loop swaps its own when told (shrinkCh).
func (c *Chan[T]) shrinkPools(d *diskState[T]) {
	for _, b := range d.free {
		b.msgs, b.ids = nil, nil
	}
	took := 0
drain:
	for took < batchPool {
		select {
		case <-c.freeCh:
			took++
		default:
			break drain
		}
	}
	for range took {
		// Never blocks: the channel holds at most batchPool slices, and took of those
		// in circulation are out of it.
		c.freeCh <- make([]T, 0)
	}
	select {
	case c.shrinkCh <- struct{}{}: // and the loop its own
	default:
	}
}

// Refill: the disk goroutine reads records (cheap) and hands them, numbered, to the
// decoders (zstd and the codec: the costly part); decoded batches go to the loop strictly
// in number order.
const (
	refillPool = 4 // refill items in circulation: decoding, waiting, with the loop
	decoders   = 2
	// readyBuffer is readyCh's buffer: the disk goroutine puts the next items there
	// without waiting for the loop to be in its select at the same moment. Unbuffered,
	// a disk goroutine busy with fsyncs (write-ahead with SyncAlways and a producer) met
	// the loop there a few times a second, and a backlog drained at a few hundred
	// messages a second.
	readyBuffer = 2
)

// decodeJob is one record for a decoder to turn into b.
type decodeJob[T any] struct {
	b      *refill[T]
	rec    spool.Record // its Data valid until the disk goroutine releases it (decodedJob)
	done   []uint64     // messages done already, as a bitmap (nil: none)
	result *decoded
}

// decoded is what a decoder could not deliver of a record, with the errors to report once
// the disk goroutine has counted them (a Close in between leaves them to the next session,
// which decodes the record again: each is reported once).
type decoded struct {
	dropped []int   // messages the codec refused
	errs    []error // their *DecodeError, by the index in dropped
	failed  error   // the record could not be decoded at all
}

// diskState is what the disk goroutine owns.
type diskState[T any] struct {
	sp       *spool.Spool
	tr       *tracker
	free     []*refill[T]
	jobs     chan decodeJob[T]
	decoded  chan decodeJob[T]
	decoding int
	nextSeq  uint64
	orderSeq uint64
	waiting  map[uint64]*refill[T]
	readyQ   []*refill[T]
	shadowQ  []*batch[T]
	dirty    bool // written since the last fsync
	retry    *encoded[T]
	retryIn  time.Duration
	blocked  bool // the last write failed; reported once until one succeeds
	// shadowFull: a shadow was refused on a full disk under DropNewest; reported once
	// until a write succeeds (the loop tries again at every tick or flush)
	shadowFull bool
	closing    bool // in finish: the cap is lifted, failures are final
	lag        bool // records on disk not reached by the reader and not handed out from memory
	srcDone    bool
	through    uint64          // every batch up to this number is through
	beyond     map[uint64]bool // batches through past it
	syncs      []*syncReq
	ticks      int
	busyAt     int64           // when the last record was written or read, until the buffers are let go
	late       int64           // spool.Stats.Late already in OnDisk
	owed       int64           // messages the cursor file marks done not taken off OnDisk yet (see addStored)
	memMsgs    int             // messages written ahead and kept in memory for the loop
	closeErr   []error         // what could not be stored at Close
	skipped    int64           // record bytes the reader passed over (handed out from memory)
	w          *segment.Writer // for Store, made on demand
	dirtyAt    int64           // when the last record was written, until the segment is sealed idle
	syncFail   error           // a failed fsync of the sync policy's, for the next Sync (see syncErr)
	// Until the first record read comes back from the decoders, one record is read and
	// decoded at a time, so that the first message after New is not held up by the
	// read-ahead (and the spool's background counting waits for the first read).
	warm    bool
	yielded bool // the first refill item went to the loop, and the goroutine let it run
}

func (c *Chan[T]) runDisk(sp *spool.Spool, tr *tracker, owed int64) {
	d := &diskState[T]{
		sp:      sp,
		tr:      tr,
		owed:    owed,
		jobs:    make(chan decodeJob[T], 4*refillPool),
		decoded: make(chan decodeJob[T], 4*refillPool),
		waiting: make(map[uint64]*refill[T]),
		beyond:  make(map[uint64]bool),
		lag:     !sp.Empty(),
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
	countedC := sp.Counted()
	recC := c.recCh

	for {
		// With readyCh's buffer the loop can take several items while this goroutine is
		// in a write (an fsync), and returnCh must never fill up (see its capacity).
		takeWaiting(c.returnCh, func(b *refill[T]) { c.returned(d, b) })
		c.handFirst(d)
		c.dispatch(d)
		// The first record is read (or there is none): the background counting may begin.
		// Not later: Stats waits for the counts, and so does a write under the disk cap.
		sp.StartCounting()
		c.advance(d)
		c.serveSyncs(d)
		idle := c.idle(d)
		c.backlog.Store(!idle || countedC != nil && sp.Peek().Counting > 0)
		if d.srcDone && idle {
			select {
			case c.idleCh <- struct{}{}:
			default:
			}
		}
		var (
			recvC   <-chan encoded[T]
			readyC  chan<- *refill[T]
			shadowC chan<- *batch[T]
			ready   *refill[T]
			shadow  *batch[T]
		)
		if d.retry == nil {
			recvC = recC
		}
		if len(d.readyQ) > 0 {
			readyC, ready = c.readyCh, d.readyQ[0]
		}
		if len(d.shadowQ) > 0 {
			shadowC, shadow = c.shadowCh, d.shadowQ[0]
		}
		select {
		case e, ok := <-recvC:
			if !ok {
				recC = nil // only at shutdown: finish follows
				continue
			}
			if err := c.store(d, e); err != nil {
				d.retry = &e
				d.retryIn = 10 * time.Millisecond
				retry.Reset(d.retryIn)
			} else {
				c.recycleRec(e.rec)
			}
		case <-retry.C:
			if d.retry == nil {
				continue
			}
			if err := c.store(d, *d.retry); err != nil {
				d.retryIn = min(2*d.retryIn, 100*time.Millisecond)
				retry.Reset(d.retryIn)
				continue
			}
			c.recycleRec(d.retry.rec)
			d.retry = nil
		case readyC <- ready:
			d.popReady()
		case shadowC <- shadow:
			d.shadowQ[0] = nil
			d.shadowQ = d.shadowQ[1:]
		case j := <-d.decoded:
			d.decoding--
			d.warm = true
			c.decodedJob(d, j)
		case b := <-c.returnCh:
			c.returned(d, b)
		case m := <-c.ctlCh:
			c.takeCtl(d, m)
		case <-srcDone:
			d.srcDone, srcDone = true, nil
		case <-countedC:
			countedC = nil
			ss := d.sp.Stats() // every count is in
			ss.BytesRead -= d.skipped
			c.lateCounts(d, ss)
			close(c.counted)
		case <-syncC:
			c.sync(d)
		case <-ckpt.C:
			c.checkpoint(d)
			if d.dirtyAt != 0 && time.Since(time.Unix(0, d.dirtyAt)) > idleRelease && d.retry == nil {
				// Idle: a segment the reader finished is sealed (and deleted once done), so
				// an idle Chan holds no segment in memory.
				d.dirtyAt = 0
				if err := sp.SealIdle(); err != nil {
					c.rep.report(fmt.Errorf("pelichan: %w", err))
				}
				c.st.disk(c.peek(d), nil)
			}
			if d.busyAt != 0 && time.Since(time.Unix(0, d.busyAt)) > idleRelease {
				// Idle: the buffers kept for reuse go, so an idle Chan stays small.
				d.busyAt = 0
				sp.DropBuffers()
				drainChan(c.recFree)
				drainChan(c.doneFree)
				c.shrinkPools(d)
			}
			if d.ticks++; d.ticks%10 == 0 {
				c.expire(d)
			}
		case req := <-c.finishCh:
			if countedC != nil {
				close(c.counted)
			}
			req.reply <- c.finish(d, req)
			return
		}
	}
}

// peek is the spool's figures, less the records the reader passed over without reading
// them back (they were handed out from memory).
func (c *Chan[T]) peek(d *diskState[T]) spool.Stats {
	ss := d.sp.Peek()
	ss.BytesRead -= d.skipped
	return ss
}

// recCRC is a record's CRC-32C, from its header (segment's format: bytes 20..24).
func recCRC(rec []byte) uint32 {
	if len(rec) < segment.HeaderSize {
		return 0
	}
	return binary.LittleEndian.Uint32(rec[20:24])
}

// lateCounts adds to OnDisk the messages of segments the spool counted after Open, as
// ss (its Stats or Peek, less what was skipped) says.
func (c *Chan[T]) lateCounts(d *diskState[T], ss spool.Stats) {
	n := d.addStored(ss.Late - d.late)
	d.late = ss.Late
	c.st.disk(ss, func(s *Stats) { s.OnDisk += n })
}

// addStored returns how many of n messages stored at open and found since (counted late
// by the spool, or marked done by the cursor file in records the reader never found) are
// to be added to OnDisk. At open, New takes the messages the cursor file marks done past
// the cursor (tracker.preDone) off the messages counted then; but they may lie in segments
// counted late, so more of them may be marked done than are counted at open. What exceeds
// is owed: the messages added later pay it off first, so that OnDisk never goes below
// zero and no done message stays counted in it.
func (d *diskState[T]) addStored(n int64) int64 {
	pay := min(n, d.owed)
	d.owed -= pay
	return n - pay
}

// store appends one record and, with SyncAlways, makes it durable before its messages
// count as stored. On error the record is retried (until Close, when failures are final)
// and recCh is not read meanwhile: the compressors wait once its buffer is full.
func (c *Chan[T]) store(d *diskState[T], e encoded[T]) error {
	b := e.b
	if e.rec != nil {
		if b.kind == bAhead && !b.decide {
			b.decide = true
			if !d.lag && d.memMsgs+len(b.msgs) <= waMemory && !d.closing {
				b.mem = &refill[T]{wa: true}
				d.memMsgs += len(b.msgs)
			}
		}
		pos, err := c.append(d, e.rec)
		if errors.Is(err, ErrFull) && c.opts.whenFull == DropNewest && !d.closing {
			if b.kind == bShadow {
				// Copies of messages waiting in Out or in the consumer's hands: not
				// written, they stay in memory (the loop tries again later). Retrying here
				// would hold up every batch behind them, and DropNewest never blocks.
				if !d.shadowFull {
					c.rep.report(fmt.Errorf("%w: %d messages waiting for the consumer not written (drop-newest; reported once until a write succeeds)", err, e.n))
				}
				d.shadowFull = true
			} else {
				n := int64(e.n)
				c.st.update(func(s *Stats) { s.InMemory -= n; s.Dropped += n })
				c.rep.report(fmt.Errorf("%w: %d messages dropped (drop-newest)", err, e.n))
			}
			b.recs = append(b.recs, storedRec{n: e.n}) // no place: no IDs
			err, e.rec = nil, nil
		}
		if err != nil {
			if !d.blocked && !d.closing {
				c.rep.report(fmt.Errorf("%w (blocking; will retry)", err))
			}
			d.blocked = true
			return err
		}
		if e.rec != nil {
			d.blocked, d.shadowFull = false, false
			d.dirty = true
			d.dirtyAt = time.Now().UnixNano()
			d.busyAt = d.dirtyAt
			key := keyOf(pos)
			b.recs = append(b.recs, storedRec{key: key, n: e.n})
			if b.mem != nil || b.kind == bShadow || b.kind == bClose {
				// Handed out from memory (or, at Close, taken back from Out or not
				// acknowledged): the reader passes over it. After a restart its messages
				// not done count as redelivered, those written ahead only once handed out
				// (returned, or the loop's sent mark).
				sent := e.n
				if b.kind == bAhead {
					sent = 0
				}
				d.tr.register(key, e.n, recCRC(e.rec), sent)
			} else {
				d.lag = true // the backlog flag follows before the batch leaves the flight count (leaveFlight)
			}
			if c.opts.sync.always {
				c.sync(d)
			}
			n := int64(e.n)
			c.st.disk(c.peek(d), func(s *Stats) {
				s.Spilled += n
				if b.kind != bShadow {
					s.InMemory -= n
					s.OnDisk += n
				}
			})
		}
	}
	if e.last {
		c.complete(d, b)
	}
	return nil
}

// idle reports whether the disk goroutine holds nothing for the loop: no records unread,
// none being decoded, no messages waiting to be handed out (in readyQ or in readyCh's
// buffer, which the loop has not taken yet), no record waiting for a retry.
func (c *Chan[T]) idle(d *diskState[T]) bool {
	return !d.lag && len(d.readyQ) == 0 && len(c.readyCh) == 0 && d.decoding == 0 && len(d.waiting) == 0 && d.retry == nil
}

// leaveFlight takes a batch or a Store message, now through the disk goroutine, off the
// flight count. Whatever it left for the loop (records to read back, messages kept in
// memory) shows in the backlog flag first: the loop reads the count before the flag
// (diskIdle), and a count of zero with the flag clear lets it close Out. The flag is
// otherwise set at the top of the disk goroutine's next round, too late.
func (c *Chan[T]) leaveFlight(d *diskState[T]) {
	if !c.idle(d) {
		c.backlog.Store(true)
	}
	c.inflight.Add(-1)
}

// storeOne writes a message given to Store, past the disk cap (a consumer giving a message
// back must not wait for space only it frees). If it could not be written it is not
// counted: the caller still has it. Written but not fsynced (SyncAlways) it counts as
// stored, and the error says so: storing it again would deliver it twice.
func (c *Chan[T]) storeOne(d *diskState[T], r request[T]) {
	defer c.leaveFlight(d)
	fail := func(err error) {
		c.st.update(func(s *Stats) { s.Received--; s.InMemory-- })
		r.reply <- fmt.Errorf("pelichan: store: %w", err)
	}
	if d.w == nil {
		d.w = c.newWriter()
	}
	w := d.w
	c.startRecord(w, false)
	if _, err := w.Add(func(dst []byte) ([]byte, error) { return append(dst, r.enc...), nil }); err != nil {
		fail(fmt.Errorf("pelichan: message refused: %w", err))
		return
	}
	pos, err := c.appendAt(d, w.Record(), true)
	w.Reset()
	if err != nil {
		fail(err)
		return
	}
	d.dirty = true
	d.dirtyAt = time.Now().UnixNano()
	d.lag = true
	var syncErr error
	if c.opts.sync.always {
		syncErr = c.syncErr(d, false)
	}
	c.st.disk(c.peek(d), func(s *Stats) { s.Spilled++; s.InMemory--; s.OnDisk++ })
	if syncErr != nil {
		r.reply <- fmt.Errorf("pelichan: store: segment %020d offset %d: %w (do not store it again): %w", pos.Seg, pos.Index, ErrNotSynced, syncErr)
		return
	}
	r.reply <- nil
}

// giveUp ends a record that could not be stored at Close: its messages are lost (counted
// as dropped and reported), and the batch goes on.
func (c *Chan[T]) giveUp(d *diskState[T], e encoded[T], err error) {
	b := e.b
	if e.rec != nil {
		b.recs = append(b.recs, storedRec{n: e.n})
		err = fmt.Errorf("pelichan: close: %d messages could not be stored: %w", e.n, err)
		if b.err == nil {
			b.err = err
		}
		d.closeErr = append(d.closeErr, err)
		if b.kind != bShadow { // a shadow's are counted when it is settled
			n := int64(e.n)
			c.st.update(func(s *Stats) { s.InMemory -= n; s.Dropped += n })
		}
		c.rep.report(err)
	}
	if e.last {
		c.complete(d, b)
	}
}

// complete finishes a batch once its last record is through.
func (c *Chan[T]) complete(d *diskState[T], b *batch[T]) {
	if b.kind == bAhead || b.kind == bShadow {
		b.ids = make([]MsgID, len(b.msgs))
		r, k := 0, 0
		for i := range b.msgs {
			if b.refuse != nil && b.refuse[i] {
				continue
			}
			for r < len(b.recs) && k == b.recs[r].n {
				r, k = r+1, 0
			}
			if r < len(b.recs) {
				if key := b.recs[r].key; key != (recKey{}) {
					b.ids[i] = key.id(k)
				}
				k++
			}
		}
	}
	switch b.kind {
	case bAhead:
		if m := b.mem; m != nil {
			m.msgs, m.ids, m.before = m.msgs[:0], m.ids[:0], 0
			for i, v := range b.msgs {
				if !b.ids[i].IsZero() {
					m.msgs = append(m.msgs, v)
					m.ids = append(m.ids, b.ids[i])
				}
			}
			d.memMsgs -= len(b.msgs) - len(m.msgs) // refused or dropped: not kept
			m.seq = d.nextSeq
			d.nextSeq++
			d.waiting[m.seq] = m
			c.order(d)
		}
		if b.pooled {
			c.recycle(b.msgs)
		}
	case bShadow:
		d.shadowQ = append(d.shadowQ, b)
	}
	if b.no > 0 {
		c.leaveFlight(d)
		d.beyond[b.no] = true
		for d.beyond[d.through+1] {
			delete(d.beyond, d.through+1)
			d.through++
		}
	}
}

// waMemory is how many messages written ahead may wait in memory for the loop; past it,
// they are read back from the spool when their turn comes.
const waMemory = 1 << 13

// takeCtl handles what the loop sent on ctlCh: done messages, its mark of the last message
// handed out, a Sync barrier and Store calls.
func (c *Chan[T]) takeCtl(d *diskState[T], m ctl[T]) {
	for _, id := range m.done {
		d.tr.done(id)
	}
	if cap(m.done) > 0 && cap(m.done) <= maxDoneReuse {
		select {
		case c.doneFree <- m.done[:0]: // the loop appends to it next
			d.busyAt = time.Now().UnixNano() // let go of it once idle
		default:
		}
	}
	d.tr.sentUpTo(m.sent)
	if m.sync != nil {
		d.syncs = append(d.syncs, m.sync)
	}
	for _, r := range m.stores {
		c.storeOne(d, r)
	}
}

// returned takes back an item the loop handed out whole.
func (c *Chan[T]) returned(d *diskState[T], b *refill[T]) {
	if b.wa {
		d.memMsgs -= len(b.msgs)
		// Every message of it went out: the last of each of its records marks it.
		lastOfEachRecord(b.ids, d.tr.sentUpTo)
		return
	}
	if b.rec != nil {
		b.rec.sent = b.rec.count // every message of it not done went out
		d.tr.changed = true
		b.rec = nil
	}
	d.free = append(d.free, b)
}

// lastOfEachRecord calls f with the last of ids (in record order, as an item holds them)
// in each record they come from.
func lastOfEachRecord(ids []MsgID, f func(MsgID)) {
	for i, id := range ids {
		if i+1 == len(ids) || ids[i+1].key() != id.key() {
			f(id)
		}
	}
}

// serveSyncs answers the Sync calls whose batches are all through.
func (c *Chan[T]) serveSyncs(d *diskState[T]) {
	for len(d.syncs) > 0 && d.syncs[0].after <= d.through {
		// The answer goes through the loop, behind the IDs of what Sync wrote, so that
		// Stats count those messages as stored by the time Sync returns.
		err := c.syncErr(d, true)
		d.shadowQ = append(d.shadowQ, &batch[T]{kind: bSynced, reply: d.syncs[0].reply, err: err, upTo: d.syncs[0].upTo})
		d.syncs = d.syncs[1:]
	}
}

func (c *Chan[T]) sync(d *diskState[T]) { c.syncErr(d, false) }

// syncErr fsyncs what was written since the last fsync, per the sync policy or, for
// Sync (always), whatever it is. A failure met by an fsync of the policy's own (the
// SyncEvery tick, SyncAlways after a write) is also kept for the next Sync: what that Sync
// covers may not be durable, and the spool reports a failure only once.
func (c *Chan[T]) syncErr(d *diskState[T], always bool) error {
	var err error
	if d.dirty && (always || !c.opts.sync.never) {
		if err = d.sp.Sync(); err != nil {
			err = fmt.Errorf("pelichan: %w", err)
			c.rep.report(err)
		} else {
			d.dirty = false
		}
	}
	if !always {
		if err != nil {
			d.syncFail = err
		}
		return err
	}
	if err == nil {
		err = d.syncFail
	}
	d.syncFail = nil
	return err
}

// dispatch reads records while there are refill items free and hands them to the
// decoders, numbered. Records this Chan hands out from memory are passed over.
func (c *Chan[T]) dispatch(d *diskState[T]) {
	read := false
	// With no item free, records handed out from memory are still passed over, as long as
	// they are all that is unread, so the reader never has to come back for them (from a
	// sealed segment's file).
	for (len(d.free) > 0 || (!d.lag && len(d.tr.ahead) > 0)) && d.decoding < 3*refillPool && (d.warm || d.decoding == 0) {
		rec, err := d.sp.Next()
		c.takeMissing(d)
		if errors.Is(err, io.EOF) {
			d.lag = false
			if n := d.addStored(int64(d.tr.lost(d.sp.Has))); n > 0 {
				c.st.update(func(s *Stats) { s.OnDisk += n })
			}
			break
		}
		if err != nil {
			c.rep.report(fmt.Errorf("pelichan: %w", err))
			break
		}
		read = true
		rs, skip, gone := d.tr.reached(keyOf(rec.Pos), rec.Count, recCRC(rec.Data), int(rec.Pos.Offset))
		if n := d.addStored(int64(gone)); n > 0 {
			c.st.update(func(s *Stats) { s.OnDisk += n })
		}
		if skip {
			d.skipped += int64(len(rec.Data))
			d.sp.Release(rec)
			continue
		}
		if len(d.free) == 0 {
			// Not handed out from memory after all (lag was wrong; not expected): one
			// more item rather than lose the record to this session (the channels to and
			// from the decoders have room for a few more than the pool).
			d.free = append(d.free, &refill[T]{})
		}
		b := d.free[len(d.free)-1]
		d.free = d.free[:len(d.free)-1]
		b.key, b.seq, b.rec, b.before = rs.key, d.nextSeq, rs, rs.before
		d.nextSeq++
		d.decoding++
		var done []uint64
		if rs.bits != nil {
			done = append(done, rs.bits...)
		}
		d.jobs <- decodeJob[T]{b: b, rec: rec, done: done} // never blocks: capacity refillPool
	}
	if read {
		d.busyAt = time.Now().UnixNano()
		c.lateCounts(d, c.peek(d))
	}
}

// handFirst gives the loop the first item read after New (into readyCh's buffer, or to
// the loop waiting for it), before the disk goroutine reads further, and yields: the loop
// delivers the first message at once rather than after the read-ahead.
func (c *Chan[T]) handFirst(d *diskState[T]) {
	if d.yielded || len(d.readyQ) == 0 {
		return
	}
	select {
	case c.readyCh <- d.readyQ[0]:
		d.popReady()
		d.yielded = true
		runtime.Gosched()
	default:
	}
}

// popReady drops the first item of readyQ, which the loop has taken.
func (d *diskState[T]) popReady() {
	d.readyQ[0] = nil
	d.readyQ = d.readyQ[1:]
}

// takeMissing settles OnDisk for the messages the reader will not find (spool.Missing):
// those counted (at open, or late) are moved from OnDisk to Dropped, less those the cursor
// file marked done, which were taken off OnDisk at open; done messages beyond what was
// counted (a segment set aside before it was counted) are given back. It runs before the
// record Next returned with them is reached, so that the tracker still holds what the
// cursor file said of the segment's records not found.
func (c *Chan[T]) takeMissing(d *diskState[T]) {
	ms := d.sp.TakeMissing()
	if len(ms) == 0 {
		return
	}
	ss := c.peek(d)
	c.lateCounts(d, ss) // the segments' own counts first, if they came late
	var drop, back int64
	for _, m := range ms {
		if k := m.Messages - d.tr.unfound(m.Seg) - d.tr.aheadIn(m.Seg); k > 0 {
			drop += k
		} else {
			back -= k
		}
	}
	back = d.addStored(back) // what open still owes is paid first: it was not taken off
	if drop == 0 && back == 0 {
		return
	}
	var short int64
	c.st.update(func(s *Stats) {
		s.OnDisk += back
		k := min(drop, max(s.OnDisk, 0)) // OnDisk never below zero
		s.OnDisk -= k
		s.Dropped += k
		if short = drop - k; short > 0 && ss.Counting > 0 {
			// Open took done messages off OnDisk that segments still being counted
			// hold: their late counts pay the rest (owed), as they pay those.
			s.Dropped += short
		}
	})
	if short > 0 && ss.Counting > 0 {
		d.owed += short
	}
}

// decodedJob takes a decoded record: what could not be decoded is done (dropped); the rest
// goes to the loop in order.
func (c *Chan[T]) decodedJob(d *diskState[T], j decodeJob[T]) {
	d.sp.Release(j.rec) // the decoder is done with it; nothing else refers to it
	b := j.b
	var gone int64
	if j.result.failed != nil {
		for i := range b.rec.count {
			if d.tr.done(b.key.id(i)) {
				gone++
			}
		}
		c.st.update(func(s *Stats) { s.OnDisk -= gone; s.Dropped += gone; s.Corrupt++ })
		c.rep.report(j.result.failed)
	} else if len(j.result.dropped) > 0 {
		for k, i := range j.result.dropped {
			if d.tr.done(b.key.id(i)) {
				gone++
				c.rep.report(j.result.errs[k])
			}
		}
		c.st.update(func(s *Stats) { s.OnDisk -= gone; s.Dropped += gone })
	}
	d.waiting[b.seq] = b
	c.order(d)
}

// order moves the items whose turn it is to readyQ.
func (c *Chan[T]) order(d *diskState[T]) {
	for {
		w, ok := d.waiting[d.orderSeq]
		if !ok {
			return
		}
		delete(d.waiting, d.orderSeq)
		d.orderSeq++
		if len(w.msgs) == 0 {
			if !w.wa {
				w.rec = nil
				d.free = append(d.free, w)
			}
			continue
		}
		d.readyQ = append(d.readyQ, w)
	}
}

// decode turns records into refill items until jobs is closed. Damaged records and
// messages the codec refuses are reported and left out.
func (c *Chan[T]) decode(jobs <-chan decodeJob[T], out chan<- decodeJob[T]) {
	serveIdle(jobs, segment.NewReader, func(r *segment.Reader, j decodeJob[T]) { c.decodeJob(r, j, out) })
}

// decodeJob decodes one record and sends the result on.
func (c *Chan[T]) decodeJob(r *segment.Reader, j decodeJob[T], out chan<- decodeJob[T]) {
	b := j.b
	res := &decoded{}
	j.result = res
	b.msgs, b.ids = b.msgs[:0], b.ids[:0]
	// The built-in Bytes codec returns messages that refer to a buffer of the
	// record's own (DecodeOwned) instead of copying each one.
	shared, isShared := c.codec.(sharedDecoder[T])
	decode := r.Decode
	if isShared {
		decode = r.DecodeOwned
	}
	batch, err := decode(j.rec.Data)
	if err != nil {
		// The spool checked the CRC, so this is a bug or memory damage: report and skip.
		res.failed = &CorruptionError{Segment: fmt.Sprintf("%020d", b.key.seg), Offset: int64(b.key.index), Err: err}
		out <- j
		return
	}
	for i := 0; i < batch.Count; i++ {
		if j.done != nil && j.done[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		var v T
		var err error
		if isShared {
			v = shared.decodeShared(batch.Message(i))
		} else {
			v, err = c.codec.Decode(batch.Message(i))
		}
		if err != nil {
			res.dropped = append(res.dropped, i)
			res.errs = append(res.errs, &DecodeError{
				Segment: fmt.Sprintf("%020d", b.key.seg), Index: b.key.index, Message: i,
				Raw: append([]byte(nil), batch.Message(i)...), Err: err})
			continue
		}
		b.msgs = append(b.msgs, v)
		b.ids = append(b.ids, b.key.id(i))
	}
	out <- j // never blocks: capacity refillPool
	// The disk goroutine, woken by the send, waits for this P while more jobs are queued:
	// let it take the result now (the first message after Open comes sooner, and the
	// refill pipeline stays full), not after every queued record is decoded.
	yieldP()
}

// advance moves the spool's cursor over the records whose messages are all done.
func (c *Chan[T]) advance(d *diskState[T]) {
	pos, moved := d.tr.advance()
	if !moved {
		return
	}
	if err := d.sp.Ack(pos); err != nil {
		c.rep.report(fmt.Errorf("pelichan: %w", err))
	}
	c.takeMissing(d) // segments collect deleted (the cursor passed their last valid record)
	c.st.disk(c.peek(d), nil)
}

// checkpoint saves the read position if it changed: the cursor and the done sets.
func (c *Chan[T]) checkpoint(d *diskState[T]) {
	c.advance(d)
	if !d.tr.changed {
		return
	}
	d.sp.SetExtra(d.tr.encode())
	if err := d.sp.Checkpoint(); err != nil {
		c.rep.report(fmt.Errorf("pelichan: %w", err))
		return
	}
	d.tr.changed = false
}

// finish stores everything the loop and the pipeline hold and closes the spool. It never
// waits for the other goroutines beyond what they already hold, and gives up on a write
// after a few tries, so Close always returns.
func (c *Chan[T]) finish(d *diskState[T], req finishReq[T]) error {
	d.closing = true
	var errs []error
	// What the loop left in ctlCh's buffer before it stopped came before req (the loop
	// sends nothing on ctlCh after req).
	takeWaiting(c.ctlCh, func(m ctl[T]) { c.takeCtl(d, m) })
	for _, r := range req.stores {
		c.storeOne(d, r)
	}
	for _, id := range req.done {
		d.tr.done(id)
	}
	// Items the loop handed out whole before it stopped: what went out of them counts.
	takeWaiting(c.returnCh, func(b *refill[T]) { c.returned(d, b) })
	for _, id := range req.sentUpTo {
		d.tr.sentUpTo(id)
	}
	failed := false // once a write failed for good, later ones get one try each
	put := func(e encoded[T]) {
		var err error
		for try := 0; ; try++ {
			if err = c.store(d, e); err == nil {
				return
			}
			if failed || try == 2 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		failed = true
		c.giveUp(d, e, err)
	}
	if d.retry != nil {
		put(*d.retry)
		d.retry = nil
	}
	// The loop closed writeCh: the compressors finish what they hold and close recCh.
	for e := range c.recCh {
		put(e)
	}
	if d.w == nil {
		d.w = c.newWriter()
	}
	w := d.w
	defer w.Close()
	var front []*batch[T]
	for _, b := range req.batches {
		if b.front {
			front = append(front, b)
			continue
		}
		c.encodeBatch(w, b, false, put)           // on the disk goroutine itself
		if b.refErr != nil && b.kind != bShadow { // a shadow's are settled with it (settleShadow)
			errs = append(errs, closeRefused(count(b.refuse), b.refErr))
		}
	}
	// Deliveries written while they waited: their copies are done if they are.
	for _, b := range d.shadowQ {
		if b.kind == bSynced {
			b.reply <- b.err
			continue
		}
		c.settleShadow(d, b, req.shadowDone)
	}
	d.shadowQ = nil
	// The cursor moves over what is done before a front segment takes its place. Among
	// what it passes are the messages taken back from Out, which only the front segment
	// will hold: the segments it passes stay on disk, and unacknowledged there, until the
	// front segment's checkpoint (Front deletes them then).
	d.sp.KeepConsumed(len(front) > 0)
	c.advance(d)
	var frontDone func(off uint64, i int) bool
	earlier := uint64(0) // the earlier front segment the cursor is in, if it is
	if cur := d.sp.Cursor(); len(front) > 0 && cur.Seg < spool.FirstSeq {
		// The new front segment takes over its rest (what the cursor's offset does not
		// cover, less what was acknowledged out of order) and it is deleted. Its done
		// sets are forgotten only once that happened: if no front segment replaces it (a
		// Front that failed, or had nothing to write), they still say what of it is done.
		earlier = cur.Seg
		frontDone = d.tr.doneIn(cur.Seg)
	}
	d.sp.SetExtra(d.tr.encode())
	unsaved := int64(0) // in the front segment, from memory: lost if no checkpoint names it
	for _, b := range front {
		stored, refused, err := c.storeFront(d, w, b.msgs, frontDone)
		if err != nil {
			errs = append(errs, fmt.Errorf("pelichan: close: %d messages taken back from Out could not be stored: %w", len(b.msgs), err))
			continue
		} else if refused != nil {
			errs = append(errs, refused)
		}
		// Those the codec refused were never stored (counted Dropped already): they are
		// among those from memory.
		unsaved += int64(max(stored-b.onDisk, 0))
	}
	if earlier != 0 && d.sp.Cursor().Seg < earlier {
		d.tr.dropSeg(earlier) // replaced
		d.sp.SetExtra(d.tr.encode())
	}
	d.sp.KeepConsumed(false)
	if err := d.sp.Close(); err != nil {
		errs = append(errs, fmt.Errorf("pelichan: close: %w", err))
	}
	if unsaved > 0 && !d.sp.Saved() {
		// The front segment is written, but no cursor file names it (Front's checkpoint
		// and Close's failed): Open discards it (unless it is alone past the stale cursor:
		// then it is read, and these were counted Dropped too soon). What it holds that
		// was stored before is still where it was (the cursor file is the one from
		// before); what came from memory is lost.
		c.st.update(func(s *Stats) {
			k := min(unsaved, max(s.OnDisk, 0))
			s.OnDisk -= k
			s.Dropped += k
		})
		errs = append(errs, fmt.Errorf("pelichan: close: %d messages taken back from Out could not be stored: their front segment was written, but the cursor file naming it could not be", unsaved))
	}
	c.takeMissing(d) // segments the last collects deleted
	c.st.disk(c.peek(d), nil)
	err := errors.Join(append(d.closeErr, errs...)...)
	d.syncs = append(d.syncs, req.syncs...)
	if len(d.syncs) > 0 {
		// Everything is written, and fsynced by the spool's Close; an earlier fsync of the
		// sync policy's that failed is still owed to the next Sync (see syncErr).
		serr := errors.Join(err, d.syncFail)
		d.syncFail = nil
		for _, r := range d.syncs {
			r.reply <- serr
		}
	}
	d.syncs = nil
	return err
}

// settleShadow, at Close, does what the loop would have done with a shadow batch's IDs.
func (c *Chan[T]) settleShadow(d *diskState[T], b *batch[T], done map[uint64]bool) {
	if b.ids == nil {
		return
	}
	var stored, lost, refused int64
	for i, seq := range b.seqs {
		id := b.ids[i]
		switch {
		case done[seq]:
			if !id.IsZero() {
				d.tr.done(id)
			}
		case id.IsZero() && b.refuse != nil && b.refuse[i]:
			refused++ // the codec refused it (reported when it did)
		case id.IsZero():
			lost++
		default:
			stored++
		}
	}
	c.st.update(func(s *Stats) {
		s.InMemory -= stored + lost + refused
		s.OnDisk += stored
		s.Dropped += lost + refused
	})
	if lost > 0 {
		err := fmt.Errorf("pelichan: close: %d messages waiting for the consumer could not be stored", lost)
		if b.err != nil {
			err = fmt.Errorf("%w: %w", err, b.err)
		}
		d.closeErr = append(d.closeErr, err)
	}
	if refused > 0 {
		d.closeErr = append(d.closeErr, closeRefused(int(refused), b.refErr))
	}
}

// append writes one record within the disk cap. At the cap, or on a full disk, the
// drop-oldest policy deletes old segments and tries again; otherwise the error wraps
// ErrFull and the caller applies the policy.
func (c *Chan[T]) append(d *diskState[T], rec []byte) (spool.Cursor, error) {
	return c.appendAt(d, rec, d.closing)
}

// appendAt is append, past the cap if lift.
func (c *Chan[T]) appendAt(d *diskState[T], rec []byte, lift bool) (spool.Cursor, error) {
	for {
		var err error
		var pos spool.Cursor
		// At Close the cap is lifted: what was in memory is stored rather than lost.
		if c.opts.maxDisk > 0 && !lift {
			st := d.sp.Peek()
			if st.Counting > 0 {
				// Segments Open left to the background are not in DiskBytes yet: wait for
				// their meta files to be read rather than pass the cap (once, right after
				// New; about 120 ms for 2,700 segments with a warm cache, during which the
				// disk goroutine does nothing else).
				st = d.sp.Stats()
			}
			if used := st.DiskBytes; used > 0 && used+int64(len(rec))+binary.MaxVarintLen64 > c.opts.maxDisk {
				err = fmt.Errorf("%w: %d bytes on disk, the cap (WithMaxDiskBytes) is %d", ErrFull, used, c.opts.maxDisk)
			}
		}
		if err == nil {
			pos, err = d.sp.Append(rec)
			if isNoSpace(err) {
				err = fmt.Errorf("%w: %w", ErrFull, err)
			}
		}
		if err != nil && !errors.Is(err, ErrFull) {
			return pos, fmt.Errorf("pelichan: %w", err)
		}
		if err == nil || c.opts.whenFull != DropOldest || lift {
			return pos, err
		}
		n, ok, derr := d.sp.DropOldest()
		if !ok {
			return pos, err // nothing may be dropped: block until the reader frees space
		}
		back := int64(d.tr.prune(d.sp.Has)) // done, but counted in n
		c.st.update(func(s *Stats) { s.OnDisk -= n - back; s.Dropped += n - back })
		c.rep.report(errors.Join(
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
	n -= int64(d.tr.prune(d.sp.Has)) // done, but counted in n
	if n > 0 {
		c.st.update(func(s *Stats) { s.OnDisk -= n; s.Dropped += n })
		c.rep.report(fmt.Errorf("pelichan: %d messages older than %v dropped", n, c.opts.maxAge))
	}
	if err != nil {
		c.rep.report(fmt.Errorf("pelichan: %w", err))
	}
	c.st.disk(c.peek(d), nil)
}

// closeRefused is Close's error for n messages it could not store because the codec (or
// the size limit) refused them: they are dropped.
func closeRefused(n int, first error) error {
	return fmt.Errorf("pelichan: close: %d messages could not be encoded and are dropped: %w", n, first)
}

// count returns how many of bs are true.
func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// storeFront encodes the messages taken back from Out (ordered mode) and puts them in front
// of the backlog (with the rest of an earlier front segment the cursor is in, less what
// done says is done). stored is how many of msgs the front segment holds; refused, if not
// nil, says how many the codec refused (dropped).
func (c *Chan[T]) storeFront(d *diskState[T], w *segment.Writer, msgs []T, done func(off uint64, i int) bool) (stored int, refused, err error) {
	c.startRecord(w, false)
	var recs [][]byte
	flush := func() {
		stored += w.Len()
		recs = append(recs, append([]byte(nil), w.Record()...))
		w.Reset()
	}
	nRefused := 0
	var first error
	for _, v := range msgs {
		if err := c.encodeInto(w, v, flush); err != nil {
			if nRefused == 0 {
				first = err
			}
			nRefused++
			c.rep.report(err)
		}
	}
	if n := w.Len(); n > 0 {
		stored += n
		recs = append(recs, append([]byte(nil), w.Record()...))
	}
	if err := d.sp.FrontExcept(recs, done); err != nil {
		c.st.update(func(s *Stats) { s.InMemory -= int64(len(msgs)); s.Dropped += int64(len(msgs)) })
		return 0, nil, err
	}
	c.st.disk(c.peek(d), func(s *Stats) {
		s.Spilled += int64(stored)
		s.InMemory -= int64(len(msgs))
		s.OnDisk += int64(stored)
		s.Dropped += int64(nRefused)
	})
	if nRefused > 0 {
		return stored, closeRefused(nRefused, first), nil
	}
	return stored, nil, nil
}
