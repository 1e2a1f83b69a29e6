package pelichan

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ackBox takes acknowledgements from the consumer's goroutines. It checks each against the
// deliveries made (an unknown or repeated sequence number is an error) and queues them for
// the loop, which owns the deliveries themselves. One mutex, held for a few bit operations.
type ackBox struct {
	mu      sync.Mutex
	closed  bool
	floor   uint64   // every delivery up to floor is acknowledged
	bits    []uint64 // acknowledged deliveries after floor, by seq modulo the ring size
	mask    uint64
	queue   []ackRange    // acknowledged since the loop last looked
	queued  atomic.Bool   // queue is not empty: the loop looks without the mutex first
	hi      atomic.Uint64 // the last delivery handed to Deliveries
	offered atomic.Uint64 // the delivery being offered on Deliveries (hi+1), or hi
	inBuf   func() int    // deliveries waiting in Deliveries' buffer, not yet received
	notify  chan struct{}
}

// ackRange is the deliveries lo..hi, acknowledged.
type ackRange struct{ lo, hi uint64 }

func newAckBox(window int, inBuf func() int) *ackBox {
	size := uint64(64)
	for size < uint64(window)+2 {
		size <<= 1
	}
	return &ackBox{bits: make([]uint64, size/64), mask: size - 1, inBuf: inBuf, notify: make(chan struct{}, 1)}
}

func (a *ackBox) isSet(seq uint64) bool {
	i := seq & a.mask
	return a.bits[i/64]&(1<<(i%64)) != 0
}

func (a *ackBox) flip(seq uint64) {
	i := seq & a.mask
	a.bits[i/64] ^= 1 << (i % 64)
}

// ack acknowledges lo..hi (through: every one not yet acknowledged; else lo == hi and it
// must not be).
func (a *ackBox) ack(lo, hi uint64, through bool) error {
	// Deliveries is FIFO: the ones in its buffer are the newest, so a received delivery is
	// at most the last one offered less those in the buffer. The one being offered may have
	// been taken a moment before the loop records it as sent: give the loop that moment,
	// else it was not received (a guess).
	// inTransit: hi is the delivery being offered: taken or not, only the loop can say.
	inTransit := func() bool {
		h, o := a.hi.Load(), a.offered.Load()
		return hi == o && o > h
	}
	if inTransit() {
		for i, deadline := 0, time.Now().Add(100*time.Millisecond); inTransit() && time.Now().Before(deadline); i++ {
			if i < 100 {
				runtime.Gosched()
			} else {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	received := func() bool {
		n := uint64(a.inBuf())
		h, o := a.hi.Load(), a.offered.Load()
		return !(hi == o && o > h) && hi+n <= max(h, o)
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("pelichan: ack %d: %w", hi, ErrClosed)
	}
	if hi == 0 || hi > a.hi.Load() {
		a.mu.Unlock()
		return fmt.Errorf("%w: %d was never delivered", ErrAck, hi)
	}
	if !received() {
		a.mu.Unlock()
		return fmt.Errorf("%w: %d was not received from Deliveries yet (%d delivered, %d waiting in Deliveries)", ErrAck, hi, a.hi.Load(), a.inBuf())
	}
	if through {
		lo = a.floor + 1
		if hi < lo {
			a.mu.Unlock()
			return fmt.Errorf("%w: every delivery up to %d is already acknowledged", ErrAck, hi)
		}
		for s := lo; s <= hi; s++ {
			if a.isSet(s) {
				a.flip(s)
			}
		}
		a.floor = hi
	} else {
		if lo <= a.floor || a.isSet(lo) {
			a.mu.Unlock()
			return fmt.Errorf("%w: %d is already acknowledged", ErrAck, lo)
		}
		if lo == a.floor+1 {
			a.floor = lo
		} else {
			a.flip(lo)
		}
	}
	for a.floor < a.hi.Load() && a.isSet(a.floor+1) {
		a.flip(a.floor + 1)
		a.floor++
	}
	a.queue = append(a.queue, ackRange{lo, hi})
	a.queued.Store(true)
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
	return nil
}

// take returns the acknowledgements queued since the last call.
func (a *ackBox) take(buf []ackRange) []ackRange {
	if !a.queued.Load() {
		return buf[:0] // the loop calls this every round: no mutex when nothing came
	}
	a.mu.Lock()
	a.queued.Store(false)
	buf = append(buf[:0], a.queue...)
	a.queue = a.queue[:0]
	a.mu.Unlock()
	return buf
}

func (a *ackBox) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
}

// Ack acknowledges one delivery: the message is done and is never delivered again after
// a graceful restart. Acknowledgements may come in any order and from any goroutine. It
// returns an error wrapping ErrAck for a sequence number never delivered or already
// acknowledged, ErrClosed after Close, and ErrMode without WithAcks.
func (c *Chan[T]) Ack(seq uint64) error {
	if c.acks == nil {
		return fmt.Errorf("%w: Ack needs WithAcks", ErrMode)
	}
	return c.acks.ack(seq, seq, false)
}

// AckThrough acknowledges every delivery up to seq not acknowledged yet (a cumulative
// acknowledgement, as a consumer that sends in batches gives). It returns an error wrapping
// ErrAck if seq was never delivered or every delivery up to it is acknowledged already.
func (c *Chan[T]) AckThrough(seq uint64) error {
	if c.acks == nil {
		return fmt.Errorf("%w: AckThrough needs WithAcks", ErrMode)
	}
	return c.acks.ack(0, seq, true)
}
