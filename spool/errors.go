package spool

import (
	"errors"
	"fmt"

	"github.com/pelichan/pelichan/segment"
)

var (
	// ErrLocked is returned by Open when another Spool, in this process or another, holds
	// the directory. Open's error says which process, where /proc/locks tells.
	ErrLocked = errors.New("spool: directory is locked by another opener")
	// ErrCorrupt is wrapped by every report of damaged data. It is the segment package's
	// ErrCorrupt, so one errors.Is matches both.
	ErrCorrupt = segment.ErrCorrupt
	// ErrVersion is matched by Open's error for a directory written in another format
	// version, or one that is not a spool (a non-empty directory without a FORMAT file, a
	// file); the error says what was found. Nothing in the directory is changed.
	ErrVersion = errors.New("spool: not a spool of this format version")
	// ErrClosed is returned by operations on a closed Spool.
	ErrClosed = errors.New("spool: closed")
	// ErrExtraTooLarge is returned by Checkpoint and Close while the bytes last given to
	// SetExtra exceed MaxExtra.
	ErrExtraTooLarge = errors.New("spool: extra bytes too large")

	errTornTail  = fmt.Errorf("%w: torn or garbage tail", ErrCorrupt)
	errBadRecord = fmt.Errorf("%w: bad record", ErrCorrupt)
	errGaveUp    = fmt.Errorf("%w: too many damaged record candidates: the rest of the file is not searched for records", ErrCorrupt)
)

// CorruptionError says where damaged data was found. It wraps ErrCorrupt.
type CorruptionError struct {
	Segment string // segment directory name
	Index   uint64 // entry index within the segment (1-based, as the scanner counts entries) where known
	Offset  int64  // byte offset in the segment file (for a record, its position: Cursor.Index)
	Length  int64  // damaged bytes skipped, where known
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("spool: segment %s entry %d offset %d (%d bytes): %v",
		e.Segment, e.Index, e.Offset, e.Length, e.Err)
}

func (e *CorruptionError) Unwrap() error { return e.Err }
