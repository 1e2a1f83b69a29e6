package spool

// The acknowledged position: Ack, checkpoints of the cursor file (with the extra bytes and the
// segment number marks), and the cursor file's format.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
)

// Cursor is a read position in segment Seg: every record of Seg whose offset is less
// than Index is delivered, and so are the first Offset messages of the record at offset
// Index, if one starts there. Index is the byte offset of a record's framing (its
// uvarint length) in the segment's WAL file: damage elsewhere in the file never changes
// it. Append returns, and Next returns in Record.Pos, Index = the record's offset.
type Cursor struct {
	Seg    uint64
	Index  uint64 // byte offset of the record's framing (its uvarint length) in the segment's WAL file
	Offset uint32 // messages of the record at Index delivered
}

// MaxExtra is the most extra bytes (see Spool.SetExtra) a cursor file holds.
const MaxExtra = 64 << 20

// cursorFile is what the cursor file holds.
type cursorFile struct {
	pos Cursor // the acknowledged position
	// high and low are the highest and lowest segment numbers ever created in the
	// directory, as far as known (0: unknown, as in a version 1 file): new segments are
	// numbered above high, front segments below low, so that no number is used twice.
	high, low uint64
	extra     []byte // the owner's bytes (Spool.SetExtra); nil if none
	// delivered is how many messages of segment pos.Seg lie before pos, so that Open
	// need not read the segment to count them; unknownDelivered if not known (versions 1
	// to 3, or a position in no segment present).
	delivered uint64
}

// unknownDelivered is cursorFile.delivered when the file does not say.
const unknownDelivered = ^uint64(0)

// Cursor file, version 4 (written since), little endian:
//
//	0   "pcur"
//	4   version 4, then 3 zero bytes
//	8   seg u64 | 16 index u64 | 24 offset u32   the acknowledged position (see Cursor; index is a byte offset)
//	28  high u64 | 36 low u64                    highest and lowest segment numbers ever used
//	44  delivered u64                            messages of segment seg before the position; 2^64-1: not known
//	52  n u32 (at most MaxExtra)                 length of the extra bytes
//	56  extra [n]byte
//	56+n crc32c of bytes 0..56+n
//
// Version 3 (read, never written again): the same without delivered (n at 44, extra at
// 48, 52 bytes besides the extra bytes). Version 2: the layout of version 3, with index
// an entry index. Version 1: "pcur" | 1 | 3 zero | seg u64 | index u64 | offset u32 |
// crc32c of bytes 0..28; 32 bytes. It has no high, low or extra.
const (
	cursorVersion = 4 // the version Checkpoint writes
	cursorV1Size  = 32
	cursorV2Fixed = 52 // bytes of a version 2 or 3 file besides the extra bytes
	cursorV4Fixed = 60 // bytes of a version 4 file besides the extra bytes
)

func encodeCursor(cf cursorFile) []byte {
	n := len(cf.extra)
	b := make([]byte, cursorV4Fixed+n)
	copy(b, "pcur")
	b[4] = cursorVersion
	binary.LittleEndian.PutUint64(b[8:], cf.pos.Seg)
	binary.LittleEndian.PutUint64(b[16:], cf.pos.Index)
	binary.LittleEndian.PutUint32(b[24:], cf.pos.Offset)
	binary.LittleEndian.PutUint64(b[28:], cf.high)
	binary.LittleEndian.PutUint64(b[36:], cf.low)
	binary.LittleEndian.PutUint64(b[44:], cf.delivered)
	binary.LittleEndian.PutUint32(b[52:], uint32(n))
	copy(b[56:], cf.extra)
	binary.LittleEndian.PutUint32(b[56+n:], crc32.Checksum(b[:56+n], castagnoli))
	return b
}

// decodeCursor reads a cursor file of version 1 to 4 and returns its version. The
// position of a version 1 or 2 file is an entry index (see indexToOffset).
func decodeCursor(b []byte) (cursorFile, int, error) {
	if len(b) < 8 || string(b[:4]) != "pcur" {
		return cursorFile{}, 0, fmt.Errorf("%w: cursor file does not start with \"pcur\"", ErrCorrupt)
	}
	switch v := b[4]; v {
	case 1:
		if len(b) != cursorV1Size {
			return cursorFile{}, 1, fmt.Errorf("%w: version 1 cursor file of %d bytes, want %d", ErrCorrupt, len(b), cursorV1Size)
		}
		if crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
			return cursorFile{}, 1, fmt.Errorf("%w: cursor file crc mismatch", ErrCorrupt)
		}
		return cursorFile{pos: Cursor{
			Seg:    binary.LittleEndian.Uint64(b[8:]),
			Index:  binary.LittleEndian.Uint64(b[16:]),
			Offset: binary.LittleEndian.Uint32(b[24:]),
		}, delivered: unknownDelivered}, 1, nil
	case 2, 3, 4:
		v := int(v)
		fixed, at := uint64(cursorV2Fixed), 44 // the extra bytes' length at b[at:], the bytes at at+4
		if v == 4 {
			fixed, at = cursorV4Fixed, 52
		}
		if uint64(len(b)) < fixed {
			return cursorFile{}, v, fmt.Errorf("%w: version %d cursor file of %d bytes, want at least %d", ErrCorrupt, v, len(b), fixed)
		}
		n := binary.LittleEndian.Uint32(b[at:])
		if n > MaxExtra || uint64(len(b)) != fixed+uint64(n) {
			return cursorFile{}, v, fmt.Errorf("%w: version %d cursor file of %d bytes claims %d extra bytes", ErrCorrupt, v, len(b), n)
		}
		end := at + 4 + int(n)
		if crc32.Checksum(b[:end], castagnoli) != binary.LittleEndian.Uint32(b[end:]) {
			return cursorFile{}, v, fmt.Errorf("%w: cursor file crc mismatch", ErrCorrupt)
		}
		cf := cursorFile{
			pos: Cursor{
				Seg:    binary.LittleEndian.Uint64(b[8:]),
				Index:  binary.LittleEndian.Uint64(b[16:]),
				Offset: binary.LittleEndian.Uint32(b[24:]),
			},
			high:      binary.LittleEndian.Uint64(b[28:]),
			low:       binary.LittleEndian.Uint64(b[36:]),
			delivered: unknownDelivered,
		}
		if v == 4 {
			cf.delivered = binary.LittleEndian.Uint64(b[44:])
		}
		if n > 0 {
			cf.extra = bytes.Clone(b[at+4 : end])
		}
		return cf, v, nil
	default:
		return cursorFile{}, int(v), fmt.Errorf("%w: cursor file version %d, this build reads 1 to 4", ErrCorrupt, v)
	}
}

// readCursorPath reads and decodes the cursor file at path, never reading more than a
// valid one can hold.
func readCursorPath(path string) (cursorFile, int, error) {
	b, err := readHead(path, cursorV4Fixed+MaxExtra+1)
	if err != nil {
		return cursorFile{}, 0, err
	}
	return decodeCursor(b)
}

// savedCursor is what the cursor file holds, as last written or read (ok false: unknown,
// or a version 1 or 2 file, which the next Checkpoint replaces).
type savedCursor struct {
	ok        bool
	pos       Cursor
	high, low uint64
	gen       uint64 // Spool.extraGen when written
}

func (s *Spool) readCursor() (cursorFile, int, error) {
	return readCursorPath(s.path(cursorName))
}

// before reports whether c names a position before d.
func (c Cursor) before(d Cursor) bool {
	if c.Seg != d.Seg {
		return c.Seg < d.Seg
	}
	if c.Index != d.Index {
		return c.Index < d.Index
	}
	return c.Offset < d.Offset
}

// useSeq records that segment number seq has been used in the directory.
func (s *Spool) useSeq(seq uint64) {
	s.high = max(s.high, seq)
	if s.low == 0 || seq < s.low {
		s.low = seq
	}
}

// seqPrefix returns the segment number a name in the spool directory starts with: a
// segment directory's, or that of a file named after one (NAME.bad, NAME.N.bad,
// NAME.<nanos>.broken, NAME.del.tmp).
func seqPrefix(name string) (uint64, bool) {
	if len(name) < 20 || !isSegName(name[:20]) || (len(name) > 20 && name[20] != '.') {
		return 0, false
	}
	seq, err := strconv.ParseUint(name[:20], 10, 64)
	return seq, err == nil && seq != 0
}

// Ack records that every message before c has been delivered: every record of the
// segments before c.Seg, every record of c.Seg at an offset less than c.Index, and the
// first c.Offset messages of the record at offset c.Index. So Ack(Cursor{Seg, Index: off
// + 1}) acknowledges the record at off whole (no record starts at off + 1), and
// Ack(Cursor{Seg, Index: off, Offset: k}) its first k messages. Segments wholly before c
// are deleted (or, if damage was found in them, set aside as evidence).
func (s *Spool) Ack(c Cursor) error {
	if s.closed {
		return ErrClosed
	}
	s.acked = c
	for len(s.unack) > 0 {
		r := &s.unack[0]
		if r.sg.seq > c.Seg || (r.sg.seq == c.Seg && r.off > c.Index) {
			break
		}
		done := r.count
		if r.sg.seq == c.Seg && r.off == c.Index {
			done = min(c.Offset, r.count) // a record partly delivered (at shutdown)
		}
		if done > r.skip {
			// Never more than the segment holds: a cursor file's count (version 4) that
			// claimed too many must not take Undelivered below zero.
			n := min(uint64(done-r.skip), r.sg.meta.messages-min(r.sg.delivered, r.sg.meta.messages))
			r.sg.delivered += n
			s.st.Undelivered -= int64(n)
			r.skip = done
		}
		if done < r.count {
			break
		}
		s.unack = s.unack[1:]
	}
	return s.collect()
}

// checkpointBeforeDelete makes sure the cursor file does not depend on segment sg before
// sg is deleted:
//   - a front segment: once it is read, the acknowledged position moves to its resume
//     cursor, which only its meta file records; a cursor file still naming the front
//     segment would, after a crash, mean "the start of the next segment" and deliver
//     again what was delivered before the resume cursor. Without a checkpoint it is not
//     deleted (it is small; a later collect or Close tries again).
//   - the segment with the highest (or lowest) number present, when the cursor file's
//     marks do not cover it: with it gone, a crash would leave nothing on disk recording
//     that its number was used. That checkpoint is best effort: deleting frees space, and
//     on a full disk it must not wait for a cursor file that cannot be written.
//
// Checkpoint skips the write when nothing changed, so this costs a write only when one
// is needed.
func (s *Spool) checkpointBeforeDelete(sg *seg) error {
	if sg.meta.resume.Seg > sg.seq {
		return s.checkpoint()
	}
	n := len(s.segs)
	lastAbove := n == 0 || s.segs[n-1].seq <= sg.seq // no other segment gives the high mark
	lastBelow := n == 0 || s.segs[0].seq >= sg.seq
	if lastAbove && (!s.saved.ok || sg.seq > s.saved.high) || lastBelow && (!s.saved.ok || sg.seq < s.saved.low) {
		_ = s.checkpoint() // best effort, see above
	}
	return nil
}

// Saved reports whether the cursor file holds the acknowledged cursor as it is now (the
// last checkpoint, or Close's, wrote it). It may be called after Close.
func (s *Spool) Saved() bool {
	return s.saved.ok && s.saved.pos == s.acked
}

// Checkpoint persists the acknowledged cursor and the extra bytes (see SetExtra):
// atomically, fsynced unless NoSync. It writes nothing when neither changed since the
// last checkpoint, so it is cheap to call often.
//
// The Spool checkpoints by itself before deleting a front segment it has read (see
// Front), and before deleting a segment whose number the cursor file does not cover yet;
// those checkpoints write the extra bytes last given to SetExtra too.
func (s *Spool) Checkpoint() error {
	if s.closed {
		return ErrClosed
	}
	return s.checkpoint()
}

func (s *Spool) checkpoint() error {
	if s.extraErr != nil {
		return fmt.Errorf("spool: checkpoint: %w", s.extraErr)
	}
	now := savedCursor{ok: true, pos: s.acked, high: s.high, low: s.low, gen: s.extraGen}
	if s.saved == now {
		return nil
	}
	cf := cursorFile{pos: s.acked, high: s.high, low: s.low, extra: s.extra, delivered: s.deliveredAt(s.acked)}
	if err := writeFileAtomic(s.path(cursorName), encodeCursor(cf), !s.opts.NoSync); err != nil {
		return fmt.Errorf("spool: checkpoint: %w", err)
	}
	s.saved = now
	return nil
}

// deliveredAt returns how many messages of segment c.Seg lie before c, as the reader
// counted them (unknownDelivered when c.Seg is not present).
func (s *Spool) deliveredAt(c Cursor) uint64 {
	if sg := s.segAt(c.Seg); sg != nil {
		return sg.delivered
	}
	return unknownDelivered
}

// SetExtra sets bytes to be persisted with the cursor by the next Checkpoint (and by
// Close); b is copied. The owner keeps there what the cursor alone cannot say (pelichan
// keeps the messages acknowledged out of order). Extra returns them after the next Open.
// More than MaxExtra bytes are not kept: Checkpoint and Close then fail with an error
// wrapping ErrExtraTooLarge and write nothing (the previous checkpoint stays in place),
// until SetExtra is called with fewer.
func (s *Spool) SetExtra(b []byte) {
	if len(b) > MaxExtra {
		s.extraErr = fmt.Errorf("%w: %d bytes, at most %d", ErrExtraTooLarge, len(b), MaxExtra)
		return
	}
	s.extraErr = nil
	if bytes.Equal(b, s.extra) {
		return
	}
	s.extra = append(s.extra[:0:0], b...)
	s.extraGen++
}

// Extra returns a copy of the extra bytes: those the cursor file held at Open (nil if
// none, or if the cursor file was missing, damaged or of version 1), or those given to
// SetExtra since.
func (s *Spool) Extra() []byte {
	if len(s.extra) == 0 {
		return nil
	}
	return bytes.Clone(s.extra)
}
