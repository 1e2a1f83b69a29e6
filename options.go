package pelichan

import (
	"fmt"
	"time"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

// SyncPolicy says when stored data is made durable with fsync.
type SyncPolicy struct {
	every  time.Duration
	always bool
	never  bool
}

var (
	// SyncAlways makes every written batch durable before its messages count as stored:
	// one fsync per write (group commit), not per message.
	SyncAlways = SyncPolicy{always: true}
	// SyncNever leaves durability to the operating system. A graceful Close still
	// survives a process restart; a power cut may lose what the OS had not written back.
	SyncNever = SyncPolicy{never: true}
)

// SyncEvery fsyncs the spool at most d after a batch is written. d must be positive
// (WithSync refuses anything else).
func SyncEvery(d time.Duration) SyncPolicy { return SyncPolicy{every: d} }

func (p SyncPolicy) valid() bool { return p.always || p.never || p.every > 0 }

func (p SyncPolicy) String() string {
	switch {
	case p.always:
		return "always"
	case p.never:
		return "never"
	default:
		return "every " + p.every.String()
	}
}

// Compression names how spilled batches are compressed. Every compression stays readable:
// a spool may hold records of several.
type Compression int

const (
	// Zstd (the default): the best ratio (about 0.25 of the size on log lines).
	Zstd Compression = iota
	// S2: about three times faster than Zstd, a larger spool (about 0.4 of the size).
	S2
	// Auto: Zstd while the compressors keep up, S2 while compressing with zstd would keep
	// them busy more than half the time (judged every 20 ms), so a producer at full speed
	// is not throttled to Zstd's speed. At ordinary log rates it keeps Zstd's ratio
	// (generated log lines, consumer stalled, a quiet 2-core machine: 4.09-4.14 from 20k to
	// 600k lines a second, as Zstd; 2.7, S2's, with the producer at full speed). On a
	// machine short of CPU, S2 comes sooner. A good choice for producers with bursts.
	Auto
)

func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case S2:
		return "s2"
	case Auto:
		return "auto"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// Option configures a Chan. An Option given an invalid value makes New fail with an error
// wrapping ErrInvalidOption.
type Option func(*options)

type options struct {
	buffer       int
	batchBytes   int
	linger       time.Duration
	segmentSize  int64
	sync         SyncPolicy
	checkpoint   time.Duration
	errorHandler func(error)
	maxDisk      int64
	whenFull     FullPolicy
	maxMessage   int
	maxAge       time.Duration
	ordered      bool
	acks         int // 0: no acknowledgements (done = received from Out)
	writeAhead   bool
	compression  Compression
	volume       int64 // the spool's filesystem size, for the default segment size (0: unknown)

	err error // the first invalid value
}

// FullPolicy says what happens when the spool reaches WithMaxDiskBytes or the disk is full.
type FullPolicy int

const (
	// Block stops reading src until space frees: backpressure to the producer.
	Block FullPolicy = iota
	// DropNewest drops the overflow that does not fit, counting it in Stats.Dropped.
	DropNewest
	// DropOldest deletes the oldest whole segment(s) not yet being read to make room,
	// counting their messages in Stats.Dropped.
	DropOldest
)

func (p FullPolicy) String() string {
	switch p {
	case Block:
		return "block"
	case DropNewest:
		return "drop-newest"
	case DropOldest:
		return "drop-oldest"
	}
	return fmt.Sprintf("FullPolicy(%d)", int(p))
}

// Limits of the option values.
const (
	maxBuffer      = 1 << 24
	minBatchBytes  = 64
	maxBatchBytes  = 16 << 20
	minSegmentSize = 1 << 10
	maxSegmentSize = 1 << 30
	maxUnackedMax  = 1 << 24
)

// defaults holds every default in one place.
func defaults() options {
	return options{
		buffer:       1024,
		batchBytes:   64 << 10,
		linger:       100 * time.Millisecond,
		sync:         SyncEvery(time.Second),
		checkpoint:   100 * time.Millisecond,
		errorHandler: func(error) {},
		compression:  Zstd,
	}
}

// Segment sizes without WithSegmentSize: bigSegment, or smallSegment under a disk cap below
// bigSegmentCap (so that a cap of three small segments stays valid, and DropOldest and the
// cap keep a fine grain) or on a volume smaller than bigSegmentVolume (DropOldest on a full
// volume can drop only sealed segments other than the ones being read and written, so a
// small volume needs several of them). Bigger segments cost fewer fsyncs, directory
// entries and unlinks per byte: spill with Auto ran 13% faster with 8 MiB segments than
// with 2 MiB (bench/, interleaved), with the same peak RSS, since segments are read in
// chunks.
const (
	bigSegment       = 8 << 20
	smallSegment     = spool.DefaultSegmentSize // 2 MiB
	bigSegmentCap    = 64 << 20
	bigSegmentVolume = 1 << 30
)

// defaultSegmentSize is the segment size when WithSegmentSize is not given; volume is the
// size of the filesystem the spool is on (0: unknown).
func defaultSegmentSize(maxDisk, volume int64) int64 {
	if maxDisk > 0 && maxDisk < bigSegmentCap || volume > 0 && volume < bigSegmentVolume {
		return smallSegment
	}
	return bigSegment
}

func (o *options) invalid(name string, v any, want string) {
	if o.err == nil {
		o.err = fmt.Errorf("%w: %s(%v): %s", ErrInvalidOption, name, v, want)
	}
}

// check fills in the defaults that depend on other options (the segment size) and
// validates what depends on several options, after all were applied.
func (o *options) check() error {
	if o.err != nil {
		return o.err
	}
	if o.segmentSize == 0 {
		o.segmentSize = defaultSegmentSize(o.maxDisk, o.volume)
	}
	if o.maxDisk > 0 && o.maxDisk < 3*o.segmentSize {
		return fmt.Errorf("%w: WithMaxDiskBytes(%d): below three segments of %d bytes (WithSegmentSize)",
			ErrInvalidOption, o.maxDisk, o.segmentSize)
	}
	if o.maxMessage > 0 && o.maxMessage > segment.MaxRawSize {
		return fmt.Errorf("%w: WithMaxMessageBytes(%d): above the record limit of %d bytes",
			ErrInvalidOption, o.maxMessage, segment.MaxRawSize)
	}
	return nil
}

// WithBuffer sets the capacity of the Out (or Deliveries) channel, 0 to 16M (default
// 1024). Messages in it are not done: Close takes back the ones not yet received and
// stores them, and a consumer that stalls has them written to the spool after the linger
// time.
func WithBuffer(n int) Option {
	return func(o *options) {
		if n < 0 || n > maxBuffer {
			o.invalid("WithBuffer", n, fmt.Sprintf("want 0 to %d", maxBuffer))
			return
		}
		o.buffer = n
	}
}

// WithBatchBytes sets the raw size of a spilled batch, one disk record, 64 bytes to
// 16 MiB (default 64 KiB). Larger batches compress better and cost more memory.
func WithBatchBytes(n int) Option {
	return func(o *options) {
		if n < minBatchBytes || n > maxBatchBytes {
			o.invalid("WithBatchBytes", n, fmt.Sprintf("want %d to %d", minBatchBytes, maxBatchBytes))
			return
		}
		o.batchBytes = n
	}
}

// WithLinger sets how long a message may wait only in memory before it is written
// anyway, however small its batch (default 100ms; positive, at most an hour). It bounds
// what a crash can lose: a message not yet done stays only in memory for at most the
// linger time plus one batch write.
func WithLinger(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 || d > time.Hour {
			o.invalid("WithLinger", d, "want more than 0 and at most 1h")
			return
		}
		o.linger = d
	}
}

// WithSegmentSize sets the size at which a spool segment is sealed and a new one begun,
// 1 KiB to 1 GiB (default 8 MiB; 2 MiB with a WithMaxDiskBytes cap under 64 MiB or on a
// filesystem smaller than 1 GiB). Whole segments are the unit of deletion, of WithMaxAge
// and of DropOldest. Segments are written and read in chunks, but one is read whole where
// it must be scanned: the newest at Open after a crash (to cut a torn tail), and one with
// damage when the reader reaches it.
func WithSegmentSize(n int64) Option {
	return func(o *options) {
		if n < minSegmentSize || n > maxSegmentSize {
			o.invalid("WithSegmentSize", n, fmt.Sprintf("want %d to %d", minSegmentSize, maxSegmentSize))
			return
		}
		o.segmentSize = n
	}
}

// WithSync sets the sync policy (default SyncEvery(time.Second)).
func WithSync(p SyncPolicy) Option {
	return func(o *options) {
		if !p.valid() {
			o.invalid("WithSync", p, "SyncEvery needs a positive interval")
			return
		}
		o.sync = p
	}
}

// WithErrorHandler receives every error that does not stop the Chan: damaged records,
// messages the codec cannot encode or decode, write errors that are retried. It is called
// from a goroutine of its own, one error at a time, and may call Stats or Close; a handler
// that falls more than 1024 errors behind misses the excess (they are still counted in
// Stats.Errors). nil means no handler.
func WithErrorHandler(f func(error)) Option {
	return func(o *options) {
		if f == nil {
			f = func(error) {}
		}
		o.errorHandler = f
	}
}

// WithMaxDiskBytes caps the spool's segment files at n bytes (0: no cap). The spool never
// grows past n by more than one batch; what happens at the cap is WithWhenFull's policy. A
// full disk (ENOSPC) is treated the same way. n must leave room for at least three
// segments (WithSegmentSize): the segment being read and the one being written are never
// dropped. Close stores what it holds in memory even past the cap, under every policy,
// rather than lose it.
func WithMaxDiskBytes(n int64) Option {
	return func(o *options) {
		if n < 0 {
			o.invalid("WithMaxDiskBytes", n, "want 0 (no cap) or more")
			return
		}
		o.maxDisk = n
	}
}

// WithWhenFull sets the policy at the disk cap or on a full disk (default Block).
func WithWhenFull(p FullPolicy) Option {
	return func(o *options) {
		if p != Block && p != DropNewest && p != DropOldest {
			o.invalid("WithWhenFull", p, "want Block, DropNewest or DropOldest")
			return
		}
		o.whenFull = p
	}
}

// WithMaxMessageBytes refuses to store messages whose encoding is longer than n bytes
// (0: no limit but the record format's): they go to the error handler as ErrTooLarge and
// are counted in Stats.Dropped, never written. It guards the disk: a message that passes
// straight to a waiting consumer is not encoded and not checked.
func WithMaxMessageBytes(n int) Option {
	return func(o *options) {
		if n < 0 {
			o.invalid("WithMaxMessageBytes", n, "want 0 (no limit) or more")
			return
		}
		o.maxMessage = n
	}
}

// WithMaxAge drops whole stored segments whose newest message is older than d (checked
// every second), counting them in Stats.Dropped: for those who would rather lose week-old
// logs than today's. 0 (the default) keeps everything. The segment being written and the
// one being read are kept whatever their age (a spool of one segment is never dropped):
// their messages may be on their way to the consumer.
func WithMaxAge(d time.Duration) Option {
	return func(o *options) {
		if d < 0 {
			o.invalid("WithMaxAge", d, "want 0 (keep everything) or more")
			return
		}
		o.maxAge = d
	}
}

// WithOrdered makes Out yield messages in src order across spill, refill and restarts,
// crashes included: once anything is on disk, new messages go behind it, messages waiting
// in Out from memory are written before the first batch spilled behind them, and at Close
// the messages taken back from Out are stored in front of the backlog. (After a crash,
// messages done within the last checkpoint interval may come again, before the rest.) It
// costs throughput: one compressor instead of two and no direct pass while a backlog
// exists. A consumer still receiving from Out while Close takes Out's buffer back may get
// the messages around that moment out of order (nobody can tell which of them it took);
// stop receiving before Close for strict order.
func WithOrdered() Option {
	return func(o *options) { o.ordered = true }
}

// WithAcks turns on acknowledgements: messages are delivered on Deliveries (not Out) and
// are done once acknowledged with Ack or AckThrough, not when received. At most
// maxUnacked deliveries (1 to 16M) are out beyond the oldest unacknowledged one:
// Deliveries waits while they are. Unacknowledged deliveries survive Close (and, once
// older than the linger time, a crash) and are delivered again after New.
func WithAcks(maxUnacked int) Option {
	return func(o *options) {
		if maxUnacked < 1 || maxUnacked > maxUnackedMax {
			o.invalid("WithAcks", maxUnacked, fmt.Sprintf("want 1 to %d", maxUnackedMax))
			return
		}
		o.acks = maxUnacked
	}
}

// WithWriteAhead stores every message before it is delivered (group commit: a write
// starts as soon as the previous one ends and takes whatever arrived meanwhile), and
// delivers it from memory afterwards. Every Delivery then has an ID that stays the same
// each time the message is delivered, across crashes, so a sink that deduplicates by it
// gets each message exactly once. Under SyncAlways a message is fsynced before delivery.
func WithWriteAhead() Option {
	return func(o *options) { o.writeAhead = true }
}

// WithCompression sets how batches are compressed (default Zstd).
func WithCompression(c Compression) Option {
	return func(o *options) {
		if c != Zstd && c != S2 && c != Auto {
			o.invalid("WithCompression", c, "want Zstd, S2 or Auto")
			return
		}
		o.compression = c
	}
}
