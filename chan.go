// Package pelichan is a persistent, disk-buffered channel. A Chan reads a source channel and
// hands the messages out on its Out channel (or, with WithAcks, its Deliveries channel);
// while the consumer keeps up they stay in memory, and when it falls behind the overflow is
// spilled to disk (compressed batches in rotating WAL segments) and fed back when the
// consumer has room again. A consumer that is only a moment behind (it takes more than
// about 16k messages a second, and would take what waits in src and in the pending batch
// within the linger time) has the full pending batch held for it a millisecond at a time
// while src still has room, instead of spending its CPU on compressing and reading back
// what it takes a moment later; the producer waits on it for one millisecond at most. In
// unordered mode, new messages go to the consumer before the backlog read back from disk
// (at least one in eight from the backlog while both wait), and a full pending batch is
// written without its newest half batch, which stays for the consumer: so a consumer
// draining a backlog while new messages arrive takes many of them straight from memory,
// and fewer go through the compressors.
//
// A message is done when the consumer received it from Out or, with WithAcks, acknowledged
// it. On the graceful path (Close, then New on the same directory) every message taken from
// src is done exactly once; with acknowledgements a delivered message that was not
// acknowledged before Close is delivered again. No message that is not done stays only in
// memory for longer than the linger time plus one batch write: what waits for a stalled
// consumer is written to the spool too. After a crash, what reached the spool and is not
// done survives; messages done since the last checkpoint (100 ms) may come again. Order is
// not guaranteed unless WithOrdered.
//
// Data flow: one goroutine (the loop) owns src, Out or Deliveries, the pending batch and
// the table of deliveries not yet done. Batches to store go to compressor goroutines,
// which encode and compress them into records. One goroutine (the disk goroutine) owns the
// spool and the read position: it appends records, reads records back ahead of need (two
// decoder goroutines decompress them), records which messages are done and deletes
// consumed segments. An error handler runs on a goroutine of its own. They talk only over
// channels; shutdown is owned by the disk goroutine, which never waits on the others.
package pelichan

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// Delivery is a message handed out on Deliveries (with WithAcks).
type Delivery[T any] struct {
	Seq uint64 // numbers this Chan's deliveries 1, 2, 3, ...; a redelivery gets a new Seq
	ID  MsgID  // the message's place in the spool; zero if it was never stored
	Msg T
}

// Chan is a disk-buffered channel. Create it with New.
type Chan[T any] struct {
	src   <-chan T
	out   chan T
	dels  chan Delivery[T]
	codec Codec[T]
	opts  options
	dir   string

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	done      chan struct{} // closed when the loop and the disk goroutine have finished
	closeErr  error
	counted   chan struct{} // closed once the backlog found at open is counted

	st    counters
	rep   *reporter
	acks  *ackBox // nil without WithAcks
	reqCh chan request[T]
	// statsReq asks the loop to bring the counters up to date (it closes the reply).
	statsReq chan chan struct{}

	// loop -> compressors -> disk goroutine -> loop
	writeCh  chan *batch[T]
	freeCh   chan []T
	recCh    chan encoded[T]
	readyCh  chan *refill[T] // stored messages to hand out, in order
	returnCh chan *refill[T] // refill items handed out, back to the disk goroutine
	shadowCh chan *batch[T]  // deliveries written while they waited, with their IDs
	ctlCh    chan ctl[T]     // done messages, Sync barriers and Store
	doneFree chan []MsgID    // ctl's done slices, back from the disk goroutine for reuse
	recFree  chan []byte     // record buffers, back from the disk goroutine for the compressors
	idleCh   chan struct{}   // the disk goroutine has nothing more to hand out
	shrinkCh chan struct{}   // the disk goroutine's idle sweep: the loop lets go of what its pending batch grew to
	srcDone  chan struct{}   // closed by the loop: src is closed
	finishCh chan finishReq[T]

	avgSize  atomic.Int64 // average encoded message size seen by the compressors
	inflight atomic.Int64 // batches sent to the compressors, and Store messages, not yet through the disk goroutine
	auto     autoPace     // WithCompression(Auto): how busy the compressors are
	backlog  atomic.Bool  // the disk goroutine holds stored messages not yet handed to the loop
}

// request is a Store or Sync call, for the loop.
type request[T any] struct {
	store bool
	enc   []byte // a Store's message, encoded by the caller (the disk goroutine never runs the codec for it)
	reply chan error
}

// batch is messages on their way to the spool.
type batch[T any] struct {
	kind   batchKind
	no     uint64 // numbers the batches the loop sends, for Sync
	msgs   []T
	seqs   []uint64    // bShadow: the deliveries they are
	reply  chan error  // bSynced: the Sync's answer
	upTo   uint64      // bSynced: the last delivery the Sync covers (those handed out before it)
	pooled bool        // msgs came from freeCh
	front  bool        // at Close in ordered mode: in front of the backlog
	onDisk int         // front: how many of msgs are stored and not done on disk but for Front
	ids    []MsgID     // filled by the disk goroutine: where each message went (zero: refused or lost)
	refuse []bool      // filled by the compressor: messages refused
	refErr error       // the first refusal's error
	err    error       // why the batch could not be stored
	recs   []storedRec // records written, in order
	mem    *refill[T]  // bAhead: the refill item it is handed out from, if it fits in memory
	decide bool        // bAhead: whether to hand it out from memory is decided
}

type batchKind uint8

const (
	bSpill  batchKind = iota // overflow: the consumer is behind
	bAhead                   // write-ahead: stored, then handed out
	bShadow                  // deliveries that waited too long in Out or unacknowledged
	bClose                   // what Close takes back
	bSynced                  // not a batch: a Sync's answer, on its way back through the loop
)

type storedRec struct {
	key recKey
	n   int
}

// refill is stored messages for the loop to hand out: read back and decoded, or written
// ahead and kept in memory.
type refill[T any] struct {
	seq    uint64 // order in which the disk goroutine dispatched it
	key    recKey
	msgs   []T
	ids    []MsgID
	before int // an earlier Chan handed out the record's messages before this index
	rec    *recState
	wa     bool // written ahead and kept in memory (not a refill item of the pool)
}

// ctl is a message from the loop to the disk goroutine.
type ctl[T any] struct {
	stores []request[T] // Store calls: written by the disk goroutine itself, past the cap
	done   []MsgID
	sent   MsgID // the last message handed out from a stored record (for Redelivered after a restart)
	sync   *syncReq
}

type syncReq struct {
	after uint64 // every batch up to this number must be stored first
	upTo  uint64 // the last delivery handed out before the call: those after it are not its
	reply chan error
}

// finishReq asks the disk goroutine to store what the loop holds, everything still in the
// pipeline, and close the spool.
type finishReq[T any] struct {
	batches    []*batch[T]
	stores     []request[T]
	done       []MsgID
	sentUpTo   []MsgID         // of the item handed out in part: the last message handed out of each record
	shadowDone map[uint64]bool // deliveries done while being written: their copies are done too
	syncs      []*syncReq      // Sync calls not passed on yet: answered with the result
	reply      chan error
}

const batchPool = 4 // pending batch slices in circulation

// compressors is how many goroutines encode and compress batches: two, or one in ordered
// mode, where records must reach the disk in order.
func (c *Chan[T]) compressors() int {
	if c.opts.ordered {
		return 1
	}
	return 2
}

// New opens (or creates) the spool in dir and starts moving messages from src to Out (or
// Deliveries). A backlog left in dir by an earlier Chan is delivered too. dir is locked
// until Close: a second New on it fails with ErrLocked. An invalid option makes New fail
// with an error wrapping ErrInvalidOption.
func New[T any](dir string, src <-chan T, codec Codec[T], opts ...Option) (*Chan[T], error) {
	if src == nil {
		return nil, fmt.Errorf("pelichan: New: nil source channel")
	}
	if codec == nil {
		return nil, fmt.Errorf("pelichan: New: nil codec")
	}
	o := defaults()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.segmentSize == 0 {
		o.volume = volumeSize(dir)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	c := &Chan[T]{
		src: src, codec: codec, opts: o, dir: dir,
		closing:  make(chan struct{}),
		counted:  make(chan struct{}),
		done:     make(chan struct{}),
		reqCh:    make(chan request[T]),
		statsReq: make(chan chan struct{}),
		writeCh:  make(chan *batch[T], 1),
		freeCh:   make(chan []T, batchPool),
		readyCh:  make(chan *refill[T], readyBuffer),
		returnCh: make(chan *refill[T], refillPool+readyBuffer),
		shadowCh: make(chan *batch[T]),
		ctlCh:    make(chan ctl[T], 1), // the disk goroutine may be in a write (an fsync): the loop need not wait for it
		doneFree: make(chan []MsgID, 2),
		recFree:  make(chan []byte, 4),
		idleCh:   make(chan struct{}, 1),
		shrinkCh: make(chan struct{}, 1),
		srcDone:  make(chan struct{}),
		finishCh: make(chan finishReq[T]),
	}
	// A record each compressor has finished may wait for the disk goroutine, so that the
	// compressor goes on with its next batch rather than wait for the disk goroutine to be
	// scheduled: spill with Zstd in bench/, 5 interleaved runs, 1.02M -> 1.14M lines/s.
	c.recCh = make(chan encoded[T], c.compressors())
	if o.acks > 0 {
		c.acks = newAckBox(o.acks, func() int { return len(c.dels) })
		c.dels = make(chan Delivery[T], o.buffer)
		c.out = make(chan T)
		close(c.out)
	} else {
		c.out = make(chan T, o.buffer)
		c.dels = make(chan Delivery[T])
		close(c.dels)
	}
	c.avgSize.Store(256)
	c.rep = newReporter(o.errorHandler, &c.st)
	var tr *tracker
	sp, err := spool.Open(dir, spool.Options{
		SegmentSize: o.segmentSize,
		NoSync:      o.sync.never,
		// The counting starts once the first record is read (runDisk).
		DeferCounting: true,
		// Records handed out from memory are never dropped by the full-disk and age
		// policies: they are out, and their copies count once done.
		Pinned: func(seq uint64) bool { return tr != nil && tr.pins(seq) },
		OnCorrupt: func(err error) {
			c.st.update(func(s *Stats) { s.Corrupt++ })
			c.rep.report(err)
		},
	})
	if err != nil {
		c.rep.close()
		return nil, fmt.Errorf("pelichan: open %s: %w", dir, err)
	}
	var terr error
	tr, terr = newTracker(sp.Extra(), sp.Cursor(), sp.Holds, sp.Scanned)
	if terr != nil {
		c.st.update(func(s *Stats) { s.Corrupt++ })
		c.rep.report(fmt.Errorf("pelichan: %s: %w; messages done after the cursor may be delivered again", dir, terr))
	}
	ss := sp.Peek()
	// Segments counted late (in the background) are added as they are (see lateCounts).
	// What the cursor file marks done is not to be delivered. Its done messages may lie in
	// segments not counted yet: what exceeds the messages counted now is owed, and taken
	// off the late counts as they come (see diskState.owed).
	counted := ss.Undelivered - ss.Late
	pre := tr.preDone()
	owed := pre - min(pre, counted)
	c.st.disk(ss, func(s *Stats) { s.OnDisk = counted - min(pre, counted) })
	c.backlog.Store(!sp.Empty())
	for range batchPool {
		c.freeCh <- make([]T, 0, 64)
	}
	var wg, cwg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); c.runDisk(sp, tr, owed) }()
	go func() { defer wg.Done(); c.loop() }()
	for range c.compressors() {
		cwg.Add(1)
		go func() { defer cwg.Done(); c.compress() }()
	}
	go func() { defer wg.Done(); cwg.Wait(); close(c.recCh) }()
	go func() { wg.Wait(); close(c.done); c.rep.stopSoon() }()
	return c, nil
}

// Out is the channel messages are delivered on. It is closed after Close, or once src is
// closed and every message has been received. Messages in its buffer are not done: Close
// takes them back and stores them. With WithAcks, use Deliveries: Out is then closed from
// the start and the misuse is reported to the error handler.
func (c *Chan[T]) Out() <-chan T {
	if c.acks != nil {
		c.rep.report(fmt.Errorf("%w: Out on a Chan with WithAcks: receive from Deliveries", ErrMode))
	}
	return c.out
}

// Deliveries is the channel messages are delivered on with WithAcks. A delivery is done
// once acknowledged (Ack, AckThrough). It is closed after Close, or once src is closed and
// every delivery is acknowledged. Without WithAcks it is closed from the start and the
// misuse is reported to the error handler.
func (c *Chan[T]) Deliveries() <-chan Delivery[T] {
	if c.acks == nil {
		c.rep.report(fmt.Errorf("%w: Deliveries on a Chan without WithAcks: receive from Out", ErrMode))
	}
	return c.dels
}

// Close stops reading src, stores everything not yet done (the pending batch, what waits
// in Out or Deliveries, deliveries not yet acknowledged), makes it durable per the sync
// policy, closes Out and Deliveries and releases the directory. It always returns: at the
// disk cap (which Close may exceed) and on a full disk (where what cannot be written is
// reported in the error). It returns the errors met while storing, messages the codec
// refuses (counted as dropped) included. Close is
// idempotent and safe to call from any goroutine, the error handler included.
func (c *Chan[T]) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	<-c.done
	c.rep.close()
	return c.closeErr
}

// Stats returns a consistent snapshot of the Chan's counters. It asks the loop goroutine to
// bring them up to date (a round trip that never waits for the disk, the codec or the
// consumer) and, once, right after New with a large backlog, waits for the backlog's
// segments to be counted (their meta files read).
func (c *Chan[T]) Stats() Stats {
	select {
	case <-c.counted:
	case <-c.done:
		return c.st.get()
	}
	// Ask the loop first, so that what the consumer took from Out counts at once; while the
	// Chan is closing, the counters as they are.
	reply := make(chan struct{})
	select {
	case c.statsReq <- reply:
		<-reply
	case <-c.closing:
	case <-c.done:
	}
	return c.st.get()
}

// Store writes v to the spool, to be delivered later like any stored message (a consumer
// giving back a message it could not send). It returns once v is written (and fsynced
// under SyncAlways), an error if it could not be (then v is not stored and not counted:
// the caller still has it), and ErrClosed after Close. The one exception: an error
// wrapping ErrNotSynced says v was written but its fsync failed (SyncAlways): v is stored
// and counted, and storing it again would deliver it twice. Store is not held back by the disk
// cap (WithMaxDiskBytes) or queued behind spilled batches: at the cap, only the consumer
// frees space, so a consumer giving a message back must not wait for it. On a full disk it
// fails with an error wrapping ErrFull. v counts in Stats.Received.
func (c *Chan[T]) Store(v T) error {
	select {
	case <-c.closing:
		return ErrClosed // whatever the codec would say
	case <-c.done:
		return ErrClosed
	default:
	}
	// Encoded here, not in the disk goroutine: a codec that waits (for a lock its caller
	// holds while it calls Stats, say) must not hold up what Stats waits for.
	enc, err := c.codec.Encode(nil, v)
	if err != nil {
		return fmt.Errorf("pelichan: store: %w", encodeRefused(err))
	}
	return c.call(context.Background(), request[T]{store: true, enc: enc, reply: make(chan error, 1)})
}

// Sync returns once every message received from src before the call that is not yet done
// is written to the spool and fsynced (the pending batch goes out now, not at the linger
// time), or when ctx ends. A producer that reads from a file into an unbuffered src uses it
// to checkpoint its input offset. If some of those messages cannot be written at all (the
// codec refuses them; they wait in memory for the consumer), it says so with an error
// wrapping ErrCodec. A Sync waiting when the Chan ends (Close, or src closed and every
// message done), or called after it ended by itself, returns what storing everything came
// to (nil: all written); called after Close, it returns ErrClosed.
func (c *Chan[T]) Sync(ctx context.Context) error {
	err := c.call(ctx, request[T]{reply: make(chan error, 1)})
	if err == ErrClosed {
		select {
		case <-c.closing:
			return err
		default:
		}
		<-c.done // call saw it closed: the Chan ended by itself, nothing was left to write
		return c.closeErr
	}
	return err
}

func (c *Chan[T]) call(ctx context.Context, r request[T]) error {
	select {
	case c.reqCh <- r:
	case <-c.closing:
		return ErrClosed
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		// Close stored what was pending; a Store's answer is there by now.
		select {
		case err := <-r.reply:
			return err
		default:
			return ErrClosed
		}
	}
}

// loopState is what the loop goroutine owns.
type loopState[T any] struct {
	c       *Chan[T]
	pending []T // messages waiting in memory to be written or handed out; nil while waiting for a free slice
	ph      int // pending[:ph] were handed out
	outq    []*batch[T]
	cur     *refill[T]
	ci      int
	tab     *table[T]
	memOnly int // deliveries in fMem
	now     int64
	batchNo uint64
	delta   Stats   // counter changes not yet published
	doneIDs []MsgID // done stored messages, for the disk goroutine (see doneBatch)
	doneT   *time.Timer
	doneC   <-chan time.Time // fires doneWait after the first of doneIDs
	doneDue bool             // doneIDs waited doneWait: send them
	syncs   []*syncReq
	// shadowDone: deliveries done while being written; their copies are done too.
	shadowDone map[uint64]bool
	ackBuf     []ackRange
	lastSent   MsgID // the last message handed out from a stored record
	stores     []request[T]

	linger    *time.Timer
	lingerC   <-chan time.Time
	flushNow  bool
	tick      *time.Ticker
	tickOn    bool
	srcClosed bool
	toldDisk  bool
	pendAt    []int64 // when each pending message was taken from src (l.now), by index in pending
	// fromPending: the message next returned is from the pending batch (else the refill
	// batch); directRun counts pending ones handed out in a row while a refill batch waited.
	fromPending bool
	directRun   int
	// spare: a free batch slice for the next flush that keeps a reserve (see keep);
	// needFree: such a flush waits for one.
	spare    []T
	needFree bool

	// Holding a full pending batch for a consumer that keeps up (see hold).
	holdSince int64  // when the current hold window began (l.now); 0: not holding
	holdFloor uint64 // tab.floor then
	holdT     *time.Timer
	holdC     <-chan time.Time // fires at the end of the hold window
	// slow: a hold window ended with the consumer behind; no batch is held again until
	// it has taken half a batch more than slowFloor.
	slow      bool
	slowFloor uint64
}

func (l *loopState[T]) queued() int { return len(l.pending) - l.ph }

// full reports whether the pending batch is to be written now.
func (l *loopState[T]) full() bool {
	q := l.queued()
	if l.pending == nil || q == 0 {
		return false
	}
	if l.c.opts.writeAhead && len(l.outq) == 0 && len(l.c.writeCh) == 0 {
		return true // group commit: as soon as the previous write is taken
	}
	return q >= l.c.batchCount()+l.keep() && !l.hold() || l.flushNow
}

// keep is how many of the newest pending messages a full batch leaves behind when it is
// written (unordered mode): they stay for the consumer, which takes them before the refill
// (see next), and the pending batch grows to a batch and a reserve before it is written.
// Without the reserve, the pending batch is empty after each write, and while the
// compressors hold every free batch slice the loop takes nothing from src, so the
// consumer is fed from the refill alone and every new message goes through the disk,
// costing the compressors the CPU the consumer needs. Ordered mode hands nothing out from
// the pending batch while the disk is busy, and write-ahead mode writes everything first.
func (l *loopState[T]) keep() int {
	if l.c.opts.ordered || l.c.opts.writeAhead {
		return 0
	}
	return l.c.batchCount() / 2
}

// holdWindow is how long a full pending batch waits for the consumer (see hold) before
// the consumer's pace is judged again; holdTake is the least it must have taken in a
// window for the hold to go on (half a batch, if that is less).
const (
	holdWindow = time.Millisecond
	holdTake   = 16
)

// hold reports whether a full pending batch is to wait for the consumer a moment instead
// of being written: the consumer takes messages fast enough that writing them and reading
// them back would only cost it CPU. A hold slows the producer by at most one window and
// never keeps messages from the disk for long:
//   - it holds only while src has room (src unbuffered: never; a producer that fills src
//     during a window waits until the consumer's next take or the window's end, and ends
//     the hold until the consumer has taken holdTake more), nothing is on disk or on its
//     way there (a refill would go first), and not in write-ahead mode;
//   - it lasts one hold window at a time, and goes on only if the consumer took at least
//     holdTake messages in the last one and, at that pace, would take everything waiting
//     in src and in the batch within the linger time;
//   - a window that fails ends it: the batch is written, as is every full batch until the
//     consumer has taken holdTake more (a stalled consumer costs one window, not one per
//     batch).
//
// The linger time still bounds how long a message waits in the pending batch (full
// reports flushNow).
func (l *loopState[T]) hold() bool {
	c := l.c
	half := uint64(min(c.batchCount()/2, holdTake))
	if len(c.src) >= cap(c.src) && l.holdSince != 0 {
		// The producer caught up with the hold: no holding again until the consumer has
		// taken holdTake more.
		l.slow, l.slowFloor = true, l.tab.floor
	}
	if c.opts.writeAhead || l.cur != nil || !l.diskIdle() ||
		l.slow && l.tab.floor-l.slowFloor < half || len(c.src) >= cap(c.src) {
		l.holdSince, l.holdC = 0, nil
		return false
	}
	took := l.tab.floor - l.holdFloor
	waiting := uint64(len(c.src) + l.queued())
	keptUp := took >= half && waiting <= took*uint64(c.opts.linger/holdWindow)
	switch {
	case l.holdSince == 0, l.now-l.holdSince >= int64(holdWindow) && keptUp:
		// Not holding, or kept up over the last window: a window begins.
		l.slow = false
		l.holdSince, l.holdFloor = l.now, l.tab.floor
		if l.holdT == nil {
			l.holdT = time.NewTimer(holdWindow)
		} else {
			l.holdT.Reset(holdWindow)
		}
		l.holdC = l.holdT.C
		return true
	case l.now-l.holdSince < int64(holdWindow):
		return true
	}
	l.slow, l.slowFloor = true, l.tab.floor
	l.holdSince, l.holdC = 0, nil
	return false
}

// accepting reports whether the loop may take a message from src.
func (l *loopState[T]) accepting() bool {
	return !l.srcClosed && l.pending != nil && l.queued() < l.c.batchCount()+l.keep()
}

// queueEmpty reports whether no message is queued ahead of a new one: always in unordered
// mode; in ordered mode when nothing is pending, on its way to disk, on disk or being
// handed out from a refill batch.
func (l *loopState[T]) queueEmpty() bool {
	return !l.c.opts.ordered || l.queued() == 0 && l.cur == nil && l.diskIdle()
}

// diskIdle reports whether nothing is on its way to or from the disk: no batch queued for
// the compressors or in their hands, no backlog on disk. (inflight is read before
// backlog: the disk goroutine sets backlog before a batch stops counting in flight.)
func (l *loopState[T]) diskIdle() bool {
	return len(l.outq) == 0 && l.c.inflight.Load() == 0 && !l.c.backlog.Load()
}

// canSend reports whether another delivery may go out (WithAcks: the window).
func (l *loopState[T]) canSend() bool {
	return l.c.acks == nil || l.tab.out() < uint64(l.c.opts.acks)
}

// send hands v out without blocking; false if Out or Deliveries has no room.
func (l *loopState[T]) send(v T, id MsgID) bool {
	c := l.c
	if c.acks == nil {
		select {
		case c.out <- v:
			return true
		default:
			return false
		}
	}
	c.acks.offered.Store(l.tab.sent + 1)
	select {
	case c.dels <- Delivery[T]{Seq: l.tab.sent + 1, ID: id, Msg: v}:
		return true
	default:
		c.acks.offered.Store(l.tab.sent)
		return false
	}
}

// take handles a message received from src (or given to Store... no: Store goes to disk).
func (l *loopState[T]) take(v T) {
	l.delta.Received++
	l.delta.InMemory++
	if !l.c.opts.writeAhead && l.queueEmpty() && l.canSend() && l.send(v, MsgID{}) {
		l.sentMem(v)
		return
	}
	if l.queued() == 0 {
		l.linger.Reset(l.c.opts.linger)
		l.lingerC = l.linger.C
	}
	l.pending = append(l.pending, v)
	l.pendAt = append(l.pendAt, l.now)
}

// sentMem records a delivery from memory.
func (l *loopState[T]) sentMem(v T) {
	l.tab.push(flight[T]{v: v, at: l.now, st: fMem, direct: true})
	l.memOnly++
	if l.c.acks != nil {
		l.delta.Unacked++
		l.c.acks.hi.Store(l.tab.sent)
	}
	l.startTick()
}

// refillEvery: when both the refill batch and the pending batch have messages to hand
// out (unordered mode), the pending ones go first, since they cost no disk round trip, but
// at least one in refillEvery of the hand-outs next chooses comes from the refill batch, so
// that the backlog drains while new messages arrive (messages take sends straight from src
// when Out has room are not counted; once pending empties, the refill goes out back to
// back).
const refillEvery = 8

// next returns the message to hand out next, if any, and notes where it comes from for
// handed: in ordered mode the refill batch first (the backlog is older), else the pending
// batch first (see refillEvery).
func (l *loopState[T]) next() (v T, id MsgID, ok bool) {
	if !l.canSend() {
		return v, id, false
	}
	pend := !l.c.opts.writeAhead && l.queued() > 0 &&
		(!l.c.opts.ordered || l.diskIdle())
	switch {
	case pend && (l.cur == nil || !l.c.opts.ordered && l.directRun < refillEvery-1):
		l.fromPending = true
		return l.pending[l.ph], MsgID{}, true
	case l.cur != nil:
		l.fromPending = false
		return l.cur.msgs[l.ci], l.cur.ids[l.ci], true
	}
	return v, id, false
}

// handed records that the message from next went out.
func (l *loopState[T]) handed() {
	if !l.fromPending {
		l.directRun = 0
		b := l.cur
		l.tab.push(flight[T]{id: b.ids[l.ci], st: fDisk})
		l.lastSent = b.ids[l.ci]
		if l.c.acks != nil {
			l.delta.Unacked++
			l.c.acks.hi.Store(l.tab.sent)
		}
		if b.ids[l.ci].Msg < uint32(b.before) {
			l.delta.Redelivered++
		}
		l.ci++
		if l.ci == len(b.msgs) {
			clear(b.msgs)
			// Never blocks: the disk goroutine empties returnCh at the top of each round,
			// and between two rounds the loop gives back at most its item, the two in
			// readyCh's buffer and two put there in that round.
			l.c.returnCh <- b
			l.cur = nil
		}
		l.startTick()
		return
	}
	if l.cur != nil {
		l.directRun++
	}
	v := l.pending[l.ph]
	var zero T
	l.pending[l.ph] = zero
	l.ph++
	if l.ph == len(l.pending) {
		l.pending, l.ph, l.pendAt = l.pending[:0], 0, l.pendAt[:0]
		l.lingerC, l.flushNow = nil, false
	}
	l.sentMem(v)
}

// startTick runs the loop's ticker while deliveries are out: it notices what the consumer
// took from Out and what waited too long only in memory.
func (l *loopState[T]) startTick() {
	if !l.tickOn {
		l.tick.Reset(l.tickEvery())
		l.tickOn = true
	}
}

func (l *loopState[T]) tickEvery() time.Duration {
	return min(max(l.c.opts.linger/4, time.Millisecond), 25*time.Millisecond)
}

// burst moves messages with non-blocking channel operations, which cost far less than
// the loop's full select, for as long as there is something to move.
func (l *loopState[T]) burst() {
	for range 512 {
		moved := false
		if v, id, ok := l.next(); ok && l.send(v, id) {
			l.handed()
			moved = true
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
	l := &loopState[T]{c: c, tab: newTable[T](), shadowDone: map[uint64]bool{},
		linger: time.NewTimer(time.Hour), tick: time.NewTicker(time.Hour), doneT: time.NewTimer(time.Hour)}
	l.linger.Stop()
	l.tick.Stop()
	l.doneT.Stop()
	defer l.doneT.Stop()
	defer l.linger.Stop()
	defer l.tick.Stop()
	defer func() {
		if l.holdT != nil {
			l.holdT.Stop()
		}
	}()
	l.pending = <-c.freeCh
	var ackC <-chan struct{}
	if c.acks != nil {
		ackC = c.acks.notify
	}
	for {
		l.now = time.Now().UnixNano()
		l.reap()
		l.burst()
		l.reap()
		if l.full() {
			l.flushFull()
		}
		// Choose what each case may do this round (nil channels never fire).
		var (
			recvSrc  <-chan T
			sendOut  chan<- T
			sendDel  chan<- Delivery[T]
			sendDisk chan<- *batch[T]
			getFree  <-chan []T
			getReady <-chan *refill[T]
			sendCtl  chan<- ctl[T]
			idleC    <-chan struct{}
			head     *batch[T]
			ctlMsg   ctl[T]
			del      Delivery[T]
		)
		if l.accepting() {
			recvSrc = c.src
		}
		next, id, ok := l.next()
		if ok {
			if c.acks == nil {
				sendOut = c.out
			} else {
				del = Delivery[T]{Seq: l.tab.sent + 1, ID: id, Msg: next}
				sendDel = c.dels
				c.acks.offered.Store(del.Seq)
			}
		}
		if l.cur == nil {
			getReady = c.readyCh
		}
		if len(l.outq) > 0 {
			sendDisk, head = c.writeCh, l.outq[0]
		}
		if l.pending == nil || l.needFree {
			getFree = c.freeCh
		}
		if len(l.doneIDs) >= doneBatch || l.doneDue || l.srcClosed && len(l.doneIDs) > 0 ||
			len(l.syncs) > 0 || len(l.stores) > 0 {
			sendCtl = c.ctlCh
			ctlMsg.done = l.doneIDs
			ctlMsg.stores = l.stores
			ctlMsg.sent = l.lastSent
			if len(l.syncs) > 0 {
				ctlMsg.sync = l.syncs[0]
			}
		}
		if l.srcClosed && !l.toldDisk && l.queued() == 0 && l.pending != nil {
			close(c.srcDone)
			l.toldDisk = true
		}
		if l.srcClosed {
			if l.finished() {
				l.publish()
				c.shutdown(l, false)
				return
			}
			idleC = c.idleCh
		}
		l.publish()

		select {
		case v, ok := <-recvSrc:
			if !ok {
				l.srcClosed = true
				continue
			}
			l.take(v)
		case sendOut <- next:
			l.handed()
		case sendDel <- del:
			l.handed()
		case b := <-getReady:
			l.cur, l.ci = b, 0
		case sendDisk <- head:
			l.outq[0] = nil
			l.outq = l.outq[1:]
		case p := <-getFree:
			if l.pending == nil {
				l.pending = p[:0]
			} else {
				l.spare = p[:0]
			}
			l.needFree = false
		case sendCtl <- ctlMsg:
			l.doneIDs, l.stores = nil, nil
			l.doneDue, l.doneC = false, nil
			l.doneT.Stop()
			if ctlMsg.sync != nil {
				l.syncs = l.syncs[1:]
			}
		case b := <-c.shadowCh:
			l.shadowed(b)
		case r := <-c.reqCh:
			l.request(r)
		case r := <-c.statsReq:
			l.reap()
			l.publish()
			close(r)
		case <-ackC:
		case <-l.lingerC:
			l.lingerC, l.flushNow = nil, true
			if l.queued() > 0 && l.ph < len(l.pendAt) {
				// The time runs from the oldest message still pending: those there when it
				// began may have gone out meanwhile (a batch held for the consumer).
				if wait := l.pendAt[l.ph] + int64(c.opts.linger) - time.Now().UnixNano(); wait > 0 {
					l.linger.Reset(time.Duration(wait))
					l.lingerC, l.flushNow = l.linger.C, false
				}
			}
		case <-l.doneC:
			l.doneC, l.doneDue = nil, true
		case <-c.shrinkCh:
			if l.queued() == 0 && l.pending != nil && cap(l.pending) > 0 {
				// Idle: an empty batch slice swapped for the one a spill grew (the same
				// number stay in circulation).
				l.pending, l.ph, l.pendAt = make([]T, 0), 0, nil
				if l.spare != nil {
					l.spare = make([]T, 0)
				}
			}
		case <-l.holdC:
			l.holdC = nil // full looks at the window again
		case <-l.tick.C:
			l.stale()
		case <-idleC:
		case <-c.closing:
			l.publish()
			c.shutdown(l, true)
			return
		}
		if sendDel != nil && l.tab.sent < del.Seq {
			c.acks.offered.Store(l.tab.sent) // offered, not taken
		}
	}
}

// finished reports, once src is closed, whether everything is done: nothing pending,
// nothing on its way to or from the disk, every delivery done.
func (l *loopState[T]) finished() bool {
	return l.queued() == 0 && l.cur == nil && l.diskIdle() && l.pending != nil && len(l.stores) == 0 &&
		l.tab.out() == 0 && len(l.doneIDs) == 0
}

// publish adds the loop's counter changes to the Stats.
func (l *loopState[T]) publish() {
	d := l.delta
	if d == (Stats{}) {
		return
	}
	l.delta = Stats{}
	l.c.st.update(func(s *Stats) {
		s.Received += d.Received
		s.Direct += d.Direct
		s.Refilled += d.Refilled
		s.OnDisk += d.OnDisk
		s.InMemory += d.InMemory
		s.Unacked += d.Unacked
		s.Redelivered += d.Redelivered
		s.Dropped += d.Dropped
	})
}

// reap marks done what the consumer took from Out, or what it acknowledged.
func (l *loopState[T]) reap() {
	t := l.tab
	if l.c.acks == nil {
		took := t.sent - uint64(len(l.c.out))
		for s := t.floor + 1; s <= took; s++ {
			l.markDone(s)
		}
		if took > t.floor {
			t.floor = took
			t.settle()
		}
	} else {
		l.ackBuf = l.c.acks.take(l.ackBuf)
		for _, r := range l.ackBuf {
			for s := max(r.lo, t.floor+1); s <= r.hi && s <= t.sent; s++ {
				if t.at(s).st != fDone {
					l.markDone(s)
				}
			}
		}
		t.settle()
	}
	if t.out() == 0 && l.tickOn && l.memOnly == 0 {
		l.tick.Stop()
		l.tickOn = false
	}
}

// Done stored messages go to the disk goroutine doneBatch at a time, or doneWait after
// the first of them (sooner with a Sync, a Store, or once src is closed): one wake-up of
// the disk goroutine per message handed out would cost more than handing it out. The
// wait adds little to the checkpoint interval, which bounds what a crash delivers again.
const (
	doneBatch = 1024
	doneWait  = 2 * time.Millisecond
)

// addDone notes that the stored message id is done, for the disk goroutine. The slice
// comes from those it gave back, if it has one.
func (l *loopState[T]) addDone(id MsgID) {
	if l.doneIDs == nil {
		select {
		case l.doneIDs = <-l.c.doneFree:
		default:
		}
	}
	if len(l.doneIDs) == 0 && l.doneC == nil && !l.doneDue {
		l.doneT.Reset(doneWait)
		l.doneC = l.doneT.C
	}
	l.doneIDs = append(l.doneIDs, id)
}

// markDone records that delivery seq is done.
func (l *loopState[T]) markDone(seq uint64) {
	f := l.tab.at(seq)
	switch f.st {
	case fMem:
		l.delta.InMemory--
		l.delta.Direct++
		l.memOnly--
	case fStoring:
		l.delta.InMemory--
		l.delta.Direct++
		l.shadowDone[seq] = true
	case fDisk:
		l.delta.OnDisk--
		if f.direct {
			l.delta.Direct++
		} else {
			l.delta.Refilled++
		}
		l.addDone(f.id)
	default:
		return
	}
	if l.c.acks != nil {
		l.delta.Unacked--
	}
	var zero T
	f.v, f.st = zero, fDone
}

// stale writes the deliveries that waited only in memory for the linger time (the
// consumer stalls, or holds them unacknowledged) to the spool.
func (l *loopState[T]) stale() {
	if l.memOnly == 0 {
		return
	}
	limit := l.now - int64(l.c.opts.linger)
	for s := l.tab.floor + 1; s <= l.tab.sent; s++ {
		if f := l.tab.at(s); f.st == fMem && !f.stuck {
			if f.at <= limit {
				l.shadow()
			}
			return
		}
	}
}

// shadow writes every delivery that is only in memory to the spool. They stay where they
// are (in Out's buffer or the consumer's hands); the copies count once they are done.
func (l *loopState[T]) shadow() {
	b := &batch[T]{kind: bShadow}
	for s := l.tab.floor + 1; s <= l.tab.sent; s++ {
		if f := l.tab.at(s); f.st == fMem && !f.stuck {
			b.msgs = append(b.msgs, f.v)
			b.seqs = append(b.seqs, s)
			f.st = fStoring
			l.memOnly--
		}
	}
	if len(b.msgs) > 0 {
		l.enqueue(b)
	}
}

// shadowed takes the IDs of deliveries written while they waited.
func (l *loopState[T]) shadowed(b *batch[T]) {
	if b.kind == bSynced {
		l.publish() // what Sync wrote counts as stored before Sync returns
		err := b.err
		if err == nil {
			// Counted now, not at the call: the Sync's own writes (the shadow batch it
			// sent, back before this answer) may have found more the codec refuses, or
			// been given up on a full disk under DropNewest (in memory again, or in a
			// later shadow not written yet).
			stuck, unwritten := 0, 0
			for s := l.tab.floor + 1; s <= min(b.upTo, l.tab.sent); s++ {
				switch f := l.tab.at(s); {
				case f.st == fMem && f.stuck:
					stuck++
				case f.st == fMem || f.st == fStoring:
					unwritten++
				}
			}
			var errs []error
			if stuck > 0 {
				errs = append(errs, fmt.Errorf("pelichan: sync: %d messages waiting for the consumer cannot be written: %w", stuck, ErrCodec))
			}
			if unwritten > 0 {
				errs = append(errs, fmt.Errorf("pelichan: sync: %d messages waiting for the consumer not written: %w", unwritten, ErrFull))
			}
			err = errors.Join(errs...)
		}
		b.reply <- err
		return
	}
	for i, seq := range b.seqs {
		id := b.ids[i]
		if l.shadowDone[seq] {
			delete(l.shadowDone, seq)
			if !id.IsZero() {
				l.addDone(id)
			}
			continue
		}
		if seq <= l.tab.floor {
			continue
		}
		f := l.tab.at(seq)
		if f.st != fStoring {
			continue
		}
		if id.IsZero() {
			f.st = fMem // not written: keep it in memory, try again later unless refused
			f.stuck = b.refuse != nil && b.refuse[i]
			l.memOnly++
			continue
		}
		var zero T
		f.st, f.id, f.v = fDisk, id, zero
		l.delta.InMemory--
		l.delta.OnDisk++
	}
}

// enqueue numbers b and queues it for the compressors.
func (l *loopState[T]) enqueue(b *batch[T]) {
	l.batchNo++
	b.no = l.batchNo
	l.c.inflight.Add(1)
	l.outq = append(l.outq, b)
}

// flushFull queues the pending batch for the disk when full reports it is to be written:
// all of it (flush), or, when keep leaves a reserve and the linger time has not run out,
// its oldest batchCount messages, copied into a free batch slice. With none free, it waits
// for one (needFree) while the consumer takes from the pending batch, which takes nothing
// more from src meanwhile (accepting).
func (l *loopState[T]) flushFull() {
	n := l.c.batchCount()
	if l.keep() == 0 || l.flushNow || l.srcClosed || l.queued() <= n {
		l.flush()
		return
	}
	if l.spare == nil {
		select {
		case p := <-l.c.freeCh:
			l.spare = p[:0]
		default:
			l.needFree = true
			return
		}
	}
	b := &batch[T]{kind: bSpill, msgs: append(l.spare, l.pending[l.ph:l.ph+n]...), pooled: true}
	l.spare, l.needFree = nil, false
	rest := copy(l.pending, l.pending[l.ph+n:])
	clear(l.pending[rest:])
	copy(l.pendAt, l.pendAt[l.ph+n:])
	l.pending, l.pendAt, l.ph = l.pending[:rest], l.pendAt[:rest], 0
	l.enqueue(b)
	// The linger time runs from the oldest message left.
	wait := max(time.Duration(l.pendAt[0]+int64(l.c.opts.linger)-time.Now().UnixNano()), 0)
	l.linger.Reset(wait)
	l.lingerC = l.linger.C
}

// flush queues all of the pending batch for the disk. In ordered mode, deliveries only in
// memory (direct passes waiting in Out or in the consumer's hands) are older than every
// pending message, so they are written first (shadow): else, after a crash, they would
// come out after the newer messages written before them.
func (l *loopState[T]) flush() {
	if l.queued() == 0 || l.pending == nil {
		return
	}
	if l.c.opts.ordered && l.memOnly > 0 {
		l.shadow()
	}
	l.needFree = false
	kind := bSpill
	if l.c.opts.writeAhead {
		kind = bAhead
	}
	b := &batch[T]{kind: kind, msgs: l.pending[l.ph:], pooled: l.ph == 0}
	if l.ph > 0 {
		b.msgs = append([]T(nil), l.pending[l.ph:]...)
		clear(l.pending)
		select {
		case l.c.freeCh <- l.pending[:0]:
		default:
		}
	}
	l.enqueue(b)
	l.pending, l.ph, l.pendAt = nil, 0, l.pendAt[:0]
	l.lingerC, l.flushNow = nil, false
	select {
	case p := <-l.c.freeCh:
		l.pending = p[:0]
	default:
		if l.spare != nil { // one taken for flushFull
			l.pending, l.spare = l.spare[:0], nil
		}
	}
}

// request handles Store and Sync.
func (l *loopState[T]) request(r request[T]) {
	if r.store {
		// A consumer giving a message back: written by the disk goroutine at once, ahead of
		// queued batches and past the disk cap, or it would wait for space only the
		// consumer frees.
		l.delta.Received++
		l.delta.InMemory++
		l.stores = append(l.stores, r)
		l.c.inflight.Add(1) // on its way to disk: finished waits for it (storeOne)
		return
	}
	l.flush()
	l.shadow()
	l.syncs = append(l.syncs, &syncReq{after: l.batchNo, upTo: l.tab.sent, reply: r.reply})
}

// batchCount is how many messages make a batch of about batchBytes.
func (c *Chan[T]) batchCount() int {
	n := c.opts.batchBytes / int(max(c.avgSize.Load(), 1))
	return min(max(n, 16), 1<<16)
}

// shutdown hands what the loop holds to the disk goroutine, which stores it and closes the
// spool, then closes Out or Deliveries. graceful is true for Close, false when src was
// closed and everything is done.
func (c *Chan[T]) shutdown(l *loopState[T], graceful bool) {
	req := finishReq[T]{reply: make(chan error, 1), shadowDone: l.shadowDone}
	if graceful {
		if c.acks != nil {
			c.acks.close()
			l.reap() // acknowledgements taken before Close count
		}
		var back []T // taken back from Out or Deliveries, and deliveries only in memory
		onDisk := 0  // how many of back are stored and done only once Front holds them
		if c.acks == nil {
			back, onDisk = c.drainOut(l)
		} else {
			// What the consumer did not receive is not acknowledged: handled as any
			// unacknowledged delivery.
			drainChan(c.dels)
			for s := l.tab.floor + 1; s <= l.tab.sent; s++ {
				if f := l.tab.at(s); f.st == fMem {
					back = append(back, f.v)
				}
			}
		}
		if len(back) > 0 {
			// Ordered mode: they are older than everything stored; elsewhere anywhere will do.
			req.batches = append(req.batches, &batch[T]{kind: bClose, msgs: back, front: c.opts.ordered, onDisk: onDisk})
		}
		req.batches = append(req.batches, l.outq...)
		if q := l.pending[min(l.ph, len(l.pending)):]; len(q) > 0 {
			req.batches = append(req.batches, &batch[T]{kind: bSpill, msgs: q})
		}
	}
	// Sync calls the loop still holds are answered by the disk goroutine with what
	// storing everything came to, as those it holds itself (nil: all written).
	req.syncs = l.syncs
	req.done, req.stores = l.doneIDs, l.stores
	if l.cur != nil && l.ci > 0 {
		lastOfEachRecord(l.cur.ids[:l.ci], func(id MsgID) { req.sentUpTo = append(req.sentUpTo, id) })
	}
	l.publish()
	close(c.writeCh)
	c.finishCh <- req // the disk goroutine always takes it
	c.closeErr = <-req.reply
	if c.acks != nil {
		c.acks.close()
		close(c.dels)
	} else {
		close(c.out)
	}
	// A Store or Sync that raced with Close.
	for {
		select {
		case r := <-c.reqCh:
			r.reply <- ErrClosed
			continue
		default:
		}
		break
	}
}

// drainOut takes back what waits in Out and returns the messages among them that exist
// only in memory, to be stored, and how many of those are stored already (ordered mode,
// below: they go in front again, and are done where they are only once Front holds them).
//
// If the consumer took nothing meanwhile (the loop took as many as Out held), the
// messages taken back are exactly the last ones handed out: those from the spool are
// simply not done (they stay where they are), and those from memory are returned. Else the
// consumer took some from among them and nobody can tell which: then every delivery is
// done, by the consumer or by being stored again from what was taken back (the counters
// assume the consumer took the oldest). In ordered mode, messages that came from memory
// (even if written since: at the tail) are stored again in front of the backlog, with
// everything else taken back, to keep the order.
func (c *Chan[T]) drainOut(l *loopState[T]) (back []T, onDisk int) {
	held := len(c.out)
	for {
		select {
		case v := <-c.out:
			back = append(back, v)
			continue
		default:
		}
		break
	}
	t := l.tab
	took := t.sent - uint64(len(back))
	if len(back) == held {
		var mem []T
		fromMem := false // handed out from memory, maybe written since (at the tail)
		for s := took + 1; s <= t.sent; s++ {
			f := t.at(s)
			if f.st == fMem {
				mem = append(mem, f.v)
			}
			fromMem = fromMem || f.direct
		}
		if !c.opts.ordered || !fromMem {
			for s := t.floor + 1; s <= took; s++ {
				l.markDone(s)
			}
			return mem, 0 // the rest stay as they are: not done
		}
	}
	for s := t.floor + 1; s <= t.sent; s++ {
		if s <= took {
			l.markDone(s)
			continue
		}
		// Taken back: the message is in back, in memory, until stored again.
		f := t.at(s)
		switch f.st {
		case fMem:
			l.memOnly--
		case fStoring:
			l.shadowDone[s] = true // its copy is not to be delivered: back holds it
		case fDisk:
			l.delta.OnDisk--
			l.delta.InMemory++
			l.addDone(f.id)
			onDisk++
		}
		var zero T
		f.v, f.st = zero, fDone
	}
	t.floor = t.sent
	t.settle()
	return back, onDisk
}
