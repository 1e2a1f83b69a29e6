package pelichan

import (
	"errors"
	"fmt"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

// Errors, matched with errors.Is. Errors returned or reported by a Chan wrap one of these
// with the path, segment, option or message they concern.
var (
	// ErrLocked: another Chan, in this process or another, has the directory open.
	ErrLocked = spool.ErrLocked
	// ErrCorrupt: stored data is damaged. The damaged part is skipped and counted; the
	// rest is delivered. Reports are *spool.CorruptionError values saying where.
	ErrCorrupt = spool.ErrCorrupt
	// ErrVersion: the directory holds something other than a spool of this format.
	ErrVersion = spool.ErrVersion
	// ErrClosed: the Chan is closed.
	ErrClosed = errors.New("pelichan: closed")
	// ErrTooLarge: a message is larger than a record may hold; it is refused and counted.
	ErrTooLarge = segment.ErrTooLarge
	// ErrCodec: the codec could not encode or decode a message.
	ErrCodec = errors.New("pelichan: codec")
	// ErrFull: the spool reached WithMaxDiskBytes, or the disk is full. Reported with what
	// the policy did (blocked, dropped the newest batch, dropped the oldest segment).
	ErrFull = errors.New("pelichan: spool full")
	// ErrInvalidOption: an option was given a value outside its range; the error names
	// the option and the value.
	ErrInvalidOption = errors.New("pelichan: invalid option")
	// ErrAck: Ack or AckThrough was given a sequence number that was never delivered or
	// was already acknowledged.
	ErrAck = errors.New("pelichan: bad acknowledgement")
	// ErrMode: a call that does not fit the Chan's mode (Out with WithAcks, Deliveries or
	// Ack without it).
	ErrMode = errors.New("pelichan: wrong mode")
	// ErrNotSynced: Store wrote the message, but under SyncAlways its fsync failed. It is
	// stored (and counted): storing it again would deliver it twice.
	ErrNotSynced = errors.New("pelichan: written, not fsynced")
)

// CorruptionError says where damaged data was found; it wraps ErrCorrupt.
type CorruptionError = spool.CorruptionError

// DecodeError reports a stored message the codec could not decode. Raw holds its bytes, so
// nothing is lost: the handler may keep or re-queue them. It wraps ErrCodec and the codec's
// error.
type DecodeError struct {
	Segment string // the segment the message was read from
	Index   uint64 // its record's byte offset in the segment (as MsgID.Index)
	Message int    // position of the message in its record
	Raw     []byte
	Err     error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("pelichan: decode message %d of segment %s offset %d (%d bytes): %v",
		e.Message, e.Segment, e.Index, len(e.Raw), e.Err)
}

func (e *DecodeError) Unwrap() []error { return []error{ErrCodec, e.Err} }
