package spool

import (
	"errors"
	"fmt"

	"github.com/pelichan/pelichan/segment"
)

var (
	// ErrLocked is returned by Open when another Spool, in this process or another, holds
	// the directory.
	ErrLocked = errors.New("spool: directory is locked by another opener")
	// ErrCorrupt is wrapped by every report of damaged data. It is the segment package's
	// ErrCorrupt, so one errors.Is matches both.
	ErrCorrupt = segment.ErrCorrupt
	// ErrVersion is returned by Open for a directory written in another format, or a
	// non-empty directory that is not a spool. Nothing in it is changed.
	ErrVersion = errors.New("spool: not a spool of this format version")
	// ErrClosed is returned by operations on a closed Spool.
	ErrClosed = errors.New("spool: closed")

	errTornTail  = fmt.Errorf("%w: torn or garbage tail", ErrCorrupt)
	errBadRecord = fmt.Errorf("%w: bad record", ErrCorrupt)
)

// CorruptionError says where damaged data was found. It wraps ErrCorrupt.
type CorruptionError struct {
	Segment string // segment directory name
	Index   uint64 // entry index within the segment (1-based) where known
	Offset  int64  // byte offset in the segment file
	Length  int64  // damaged bytes skipped, where known
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("spool: segment %s entry %d offset %d (%d bytes): %v",
		e.Segment, e.Index, e.Offset, e.Length, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }
