package pelichan

import (
	"fmt"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// SyncPolicy says when spilled data is made durable with fsync.
type SyncPolicy struct {
	every  time.Duration
	always bool
	never  bool
}

var (
	// SyncAlways makes every written batch durable before its messages count as stored:
	// one fsync per batch (group commit), not per message.
	SyncAlways = SyncPolicy{always: true}
	// SyncNever leaves durability to the operating system. A graceful Close still
	// survives a process restart; a power cut may lose what the OS had not written back.
	SyncNever = SyncPolicy{never: true}
)

// SyncEvery fsyncs the spool at most d after a batch is written. d <= 0 means SyncAlways.
func SyncEvery(d time.Duration) SyncPolicy {
	if d <= 0 {
		return SyncAlways
	}
	return SyncPolicy{every: d}
}

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

// Option configures a Chan.
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

// defaults holds every default in one place.
func defaults() options {
	return options{
		buffer:       1024,
		batchBytes:   64 << 10,
		linger:       100 * time.Millisecond,
		segmentSize:  spool.DefaultSegmentSize,
		sync:         SyncEvery(time.Second),
		checkpoint:   time.Second,
		errorHandler: func(error) {},
	}
}

// WithBuffer sets the capacity of the Out channel (default 1024). Messages in it count as
// handed out; Close takes back the ones not yet received and stores them.
func WithBuffer(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.buffer = n
		}
	}
}

// WithBatchBytes sets the raw size of a spilled batch, one disk record (default 64 KiB).
// Larger batches compress better and cost more memory.
func WithBatchBytes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.batchBytes = n
		}
	}
}

// WithLinger sets how long a spilled message may wait in memory for its batch to fill
// before the batch is written anyway (default 100ms).
func WithLinger(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.linger = d
		}
	}
}

// WithSegmentSize sets the size at which a spool segment is sealed and a new one begun
// (default 2 MiB). Memory use grows with it: the segment being written and the one being
// read are held in memory.
func WithSegmentSize(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.segmentSize = n
		}
	}
}

// WithSync sets the sync policy (default SyncEvery(time.Second)).
func WithSync(p SyncPolicy) Option {
	return func(o *options) { o.sync = p }
}

// WithErrorHandler receives every error that does not stop the Chan: damaged records,
// messages the codec cannot encode or decode, write errors that are retried. It is
// called from the Chan's goroutines and must not block for long.
func WithErrorHandler(f func(error)) Option {
	return func(o *options) {
		if f != nil {
			o.errorHandler = f
		}
	}
}

// WithMaxDiskBytes caps the spool's segment files at n bytes (0: no cap). The spool never
// grows past n by more than one batch; what happens at the cap is WithWhenFull's policy. A
// full disk (ENOSPC) is treated the same way. Give room for at least three segments
// (WithSegmentSize): the segment being read and the one being written are never dropped.
// Under Block, Close stores what it holds in memory even past the cap, rather than lose it.
func WithMaxDiskBytes(n int64) Option {
	return func(o *options) {
		if n >= 0 {
			o.maxDisk = n
		}
	}
}

// WithWhenFull sets the policy at the disk cap or on a full disk (default Block).
func WithWhenFull(p FullPolicy) Option {
	return func(o *options) { o.whenFull = p }
}

// WithMaxMessageBytes refuses to spill messages whose encoding is longer than n bytes:
// they go to the error handler as ErrTooLarge and are counted in Stats.Dropped, never
// written. It guards the disk: a message that passes straight to a waiting consumer is not
// encoded and not checked.
func WithMaxMessageBytes(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxMessage = n
		}
	}
}

// WithMaxAge drops whole stored segments whose newest message is older than d (checked
// every second), counting them in Stats.Dropped: for those who would rather lose week-old
// logs than today's. 0 keeps everything.
func WithMaxAge(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.maxAge = d
		}
	}
}

// WithOrdered makes Out yield messages in src order across spill, refill and graceful
// restarts: once anything is on disk, new messages go behind it, and at Close the messages
// taken back from Out are stored in front of the backlog. It costs throughput: one
// compressor instead of two, no direct pass while a backlog exists, and a copy of up to
// one segment at Close.
func WithOrdered() Option {
	return func(o *options) { o.ordered = true }
}
