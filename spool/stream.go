package spool

// Streaming: the reader reads a sealed segment record by record, in chunks, so that the
// first record costs one small read whatever the segment's size; the whole file is read
// and scanned (loadReader) only when something is not as written.

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"

	"github.com/pelichan/pelichan/segment"
)

// streamChunk is how much of a segment file one read takes; firstChunk the first read
// in a segment, which should cost little more than its first record.
const (
	streamChunk = 256 << 10
	firstChunk  = 32 << 10
)

// stream is the reader's state in a sealed segment it reads record by record.
type stream struct {
	on    bool
	next  uint64 // offset of the next record
	last  uint64 // offset of the last record returned + 1 (0: none yet)
	count int64  // records returned from the segment's start on; -1 if it began elsewhere
	// The last chunk read: the file's bytes from offset at on; eof: the file ends there.
	chunk []byte
	at    uint64
	eof   bool
}

// streamStep is what streamNext found.
type streamStep int

const (
	streamRecord   streamStep = iota // a record
	streamEnd                        // the segment is read, every record as written
	streamFallback                   // something else: read the whole file (loadReader)
)

// streamNext returns the next record of sealed segment sg at or after the reader's
// position, read on its own. At the file's end it checks that no record is missing
// (against the end the writer recorded, or the count the segment was sealed with); when
// it cannot tell, or a record is not valid, it leaves the segment to loadReader, which
// reads the whole file and reports what is wrong. Records come from fresh buffers, as
// from loadReader: a Record's Data stays valid as long as it is referenced.
func (s *Spool) streamNext(sg *seg) (Record, streamStep) {
	st := &s.rs
	if !st.on {
		*st = stream{on: true, next: s.rfrom, count: -1}
		if s.rfrom == 0 {
			st.count = 0
		} else if _, _, _, r := s.recordAt(sg, s.rfrom); r != streamRecord {
			// Ack's form off+1 (the record at off delivered whole): go on after that record.
			if _, n, _, r := s.recordAt(sg, s.rfrom-1); r == streamRecord {
				// That record was the last one read (before sealing, or before a restart): the
				// end check below compares with it.
				st.next, st.last = s.rfrom-1+uint64(n), s.rfrom
			}
		}
	}
	rec, n, h, r := s.recordAt(sg, st.next)
	switch r {
	case streamRecord:
		off := st.next
		st.next += uint64(n)
		st.last = off + 1
		if st.count >= 0 {
			st.count++
		}
		if st.count >= 0 && uint64(st.count) == sg.meta.records && !sg.short && st.eof && st.next == st.at+uint64(len(st.chunk)) {
			// The last record: the file ends with it, and the count is the sealed one. Knowing
			// the end now lets collect delete the segment as soon as the record is
			// acknowledged.
			sg.end, sg.endKnown = st.last, true
		}
		return s.deliver(sg, off, rec, h), streamRecord
	case streamEnd:
		switch {
		case sg.endKnown && !sg.short && st.last == sg.end:
		case st.count >= 0 && uint64(st.count) == sg.meta.records && !sg.short:
			sg.end, sg.endKnown = st.last, true
		default:
			return Record{}, streamFallback
		}
		st.chunk = nil
		return Record{}, streamEnd
	}
	st.chunk = nil
	return Record{}, streamFallback
}

// recordAt returns the verified framed record at offset off of sealed segment sg's file
// (streamRecord), or says the file ends at off (streamEnd) or holds no valid record there
// (streamFallback).
func (s *Spool) recordAt(sg *seg, off uint64) ([]byte, int, segment.Header, streamStep) {
	b, err := s.chunkFrom(sg, off, maxFrameLen+segment.HeaderSize)
	if err != nil {
		return nil, 0, segment.Header{}, streamFallback
	}
	if len(b) == 0 {
		return nil, 0, segment.Header{}, streamEnd
	}
	size, k := binary.Uvarint(b)
	if k <= 0 || size < segment.HeaderSize || size > maxRecordBytes {
		return nil, 0, segment.Header{}, streamFallback
	}
	need := k + int(size)
	if len(b) < need {
		if b, err = s.chunkFrom(sg, off, need); err != nil || len(b) < need {
			return nil, 0, segment.Header{}, streamFallback
		}
	}
	rec, n, ok := frameAt(b[:need], 0)
	if !ok {
		return nil, 0, segment.Header{}, streamFallback
	}
	h, err := segment.Verify(rec)
	if err != nil {
		return nil, 0, segment.Header{}, streamFallback
	}
	return rec, n, h, streamRecord
}

// chunkFrom returns bytes of sg's file from offset off on, at least want of them unless
// the file ends first: from the last chunk read if it holds them, else from a new read.
func (s *Spool) chunkFrom(sg *seg, off uint64, want int) ([]byte, error) {
	st := &s.rs
	if st.chunk != nil && off >= st.at && off-st.at <= uint64(len(st.chunk)) {
		if b := st.chunk[off-st.at:]; len(b) >= want || st.eof {
			return b, nil
		}
	}
	f, err := os.Open(s.path(sg.name(), walFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if off > math.MaxInt64 || int64(off) >= fi.Size() {
		st.chunk, st.at, st.eof = []byte{}, off, true
		return st.chunk, nil
	}
	size := streamChunk
	if st.chunk == nil {
		size = firstChunk // the first record at once, without reading far ahead of it
	}
	// Never more than the file holds from off: a damaged length prefix claiming a huge
	// record costs a short read, not an allocation of its claim.
	buf := make([]byte, min(int64(max(size, want)), fi.Size()-int64(off)))
	n, err := f.ReadAt(buf, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	st.chunk, st.at, st.eof = buf[:n:n], off, int64(off)+int64(n) >= fi.Size()
	return st.chunk, nil
}
