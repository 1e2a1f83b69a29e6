package pelichan

import (
	"expvar"
	"time"
)

// Stats is a snapshot of a Chan's counters. Message counts are messages, not batches, and
// count from New (a backlog found on disk at open is in OnDisk, not in Spilled).
type Stats struct {
	Received int64 // messages taken from src
	Direct   int64 // handed to Out without touching the disk
	Spilled  int64 // written to the spool (including, at Close, the ones taken back from Out)
	Refilled int64 // read back from the spool and handed to Out
	OnDisk   int64 // stored and not yet handed out
	InMemory int64 // taken from src, waiting in memory to be handed out or written
	Dropped  int64 // refused or dropped: encode errors, too large, undecodable
	Corrupt  int64 // damaged records or stretches skipped on disk

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
