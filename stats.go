package pelichan

import (
	"expvar"
	"sync"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// Stats is a snapshot of a Chan's counters. Message counts are messages, not batches, and
// count from New.
//
// Every message the Chan was given (taken from src, or handed to Store) is in exactly one
// of five states, so on a spool that starts empty this identity holds at every snapshot,
// while running, after a drain, after Close, under every full policy:
//
//	Received == Direct + Refilled + OnDisk + Dropped + InMemory
//
// (With a backlog found at open, OnDisk also holds the backlog, once Stats has counted it.)
// A message is done when the consumer received it from Out or, with WithAcks,
// acknowledged it; it counts in Direct or Refilled from then on, not when it was put into
// Out or Deliveries.
type Stats struct {
	Received int64 // messages taken from src or given to Store
	Direct   int64 // done without having been stored
	Spilled  int64 // written to the spool (a message written again, at Close or after a stall, counts again)
	Refilled int64 // done after having been stored
	OnDisk   int64 // stored and not yet done
	InMemory int64 // taken and not yet stored or done: the pending batch, Out's buffer, unacknowledged deliveries from memory
	Dropped  int64 // refused or dropped: encode errors, too large, undecodable, full-disk and age policies
	Corrupt  int64 // damaged records or stretches skipped on disk (records, not messages)

	Unacked     int64 // with WithAcks: handed out (put into Deliveries, whose buffer counts too) and not yet acknowledged
	Redelivered int64 // delivered again: handed out by an earlier Chan on the directory and not done then (after a crash, as of its last checkpoint)

	Segments         int           // segment directories in the spool
	DiskBytes        int64         // bytes of segment files
	BytesWritten     int64         // compressed record bytes written since New
	BytesRead        int64         // compressed record bytes read since New
	RawBytesWritten  int64         // uncompressed payload bytes written since New
	CompressionRatio float64       // RawBytesWritten / BytesWritten; 0 before the first write
	OldestAge        time.Duration // age of the oldest batch on disk; 0 if none
	Errors           int64         // errors passed to the error handler
	LastError        string        // the latest of them
}

// Var returns an expvar.Var that shows the Chan's Stats as JSON:
//
//	expvar.Publish("pelichan", c.Var())
func (c *Chan[T]) Var() expvar.Var {
	return expvar.Func(func() any { return c.Stats() })
}

// counters holds the Stats, changed by the Chan's goroutines under one mutex: every
// change that moves messages from one state to another happens in one critical section,
// so a snapshot always balances. The mutex is never held across I/O or a channel
// operation, nor while the error handler runs.
type counters struct {
	mu sync.Mutex
	s  Stats
}

func (k *counters) update(f func(s *Stats)) {
	k.mu.Lock()
	f(&k.s)
	k.mu.Unlock()
}

func (k *counters) get() Stats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.s
}

// disk copies the spool's health figures; f, if given, changes counters in the same
// critical section.
func (k *counters) disk(ss spool.Stats, f func(s *Stats)) {
	k.mu.Lock()
	s := &k.s
	if f != nil {
		f(s)
	}
	s.Segments = ss.Segments
	s.DiskBytes = ss.DiskBytes
	s.BytesWritten = ss.BytesWritten
	s.BytesRead = ss.BytesRead
	s.RawBytesWritten = ss.RawWritten
	if ss.BytesWritten > 0 {
		s.CompressionRatio = float64(ss.RawWritten) / float64(ss.BytesWritten)
	}
	s.OldestAge = 0
	if ss.Oldest > 0 {
		s.OldestAge = time.Since(time.Unix(0, ss.Oldest))
	}
	k.mu.Unlock()
}
