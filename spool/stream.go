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
	ck    *chunk // the buffer chunk is in, when it may be reused (see Release)
	at    uint64
	eof   bool
}

// chunk is a buffer the stream reads a segment file into, reused once nothing refers to
// it: refs counts the records returned from it and not yet released, and one more while
// it is the stream's current chunk. Without Release a chunk is simply left to the GC.
// (Fresh 256 KiB buffers, zeroed and faulted in page by page, cost refill about a fifth
// of its speed: BenchmarkRefillWorkingConsumer.)
type chunk struct {
	b    []byte
	refs int
}

// freeChunks is how many unused chunk buffers a Spool keeps.
const freeChunks = 4

// Release tells the spool that r, a record returned by Next, is no longer used: the buffer
// its Data is in may be reused for a later record. Call it at most once per record, and
// use neither r.Data nor a slice of it afterwards. Records that are never released are
// collected by the GC as usual.
func (s *Spool) Release(r Record) {
	s.unref(r.ck)
}

// unref drops one reference to ck and keeps its buffer for reuse once none is left.
func (s *Spool) unref(ck *chunk) {
	if ck == nil {
		return
	}
	ck.refs--
	if ck.refs == 0 && cap(ck.b) == streamChunk && len(s.free) < freeChunks {
		s.free = append(s.free, ck)
	}
}

// DropBuffers lets go of the read and write buffers kept for reuse (an idle owner stays
// small).
func (s *Spool) DropBuffers() {
	clear(s.free)
	s.free = s.free[:0]
	if s.wlog != nil {
		s.wlog.buf = nil // the framing buffer of the segment being written
	}
}

// resetStream ends record-by-record reading of the current segment.
func (s *Spool) resetStream() {
	s.unref(s.rs.ck)
	s.rs = stream{}
}

// dropChunk lets go of the stream's current chunk.
func (st *stream) dropChunk(s *Spool) {
	s.unref(st.ck)
	st.chunk, st.ck = nil, nil
}

// newChunk returns a buffer of n bytes for the stream to read into: a reused one if there
// is one and n is no more than streamChunk, else a fresh one (reused later only if it is
// streamChunk bytes: a short first read stays short).
func (s *Spool) newChunk(n int64) *chunk {
	if k := len(s.free); k > 0 && n <= streamChunk {
		ck := s.free[k-1]
		s.free[k-1] = nil
		s.free = s.free[:k-1]
		ck.b, ck.refs = ck.b[:n], 1
		return ck
	}
	return &chunk{b: make([]byte, n), refs: 1}
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
// reads the whole file and reports what is wrong. A Record's Data stays valid until it is
// released (Release), or as long as it is referenced if it never is.
func (s *Spool) streamNext(sg *seg) (Record, streamStep) {
	st := &s.rs
	if !st.on {
		st.dropChunk(s)
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
		r := s.deliver(sg, off, rec, h)
		if st.ck != nil {
			st.ck.refs++
			r.ck = st.ck
		}
		return r, streamRecord
	case streamEnd:
		switch {
		case sg.endKnown && !sg.short && st.last == sg.end:
		case st.count >= 0 && uint64(st.count) == sg.meta.records && !sg.short:
			sg.end, sg.endKnown = st.last, true
		default:
			return Record{}, streamFallback
		}
		st.dropChunk(s)
		return Record{}, streamEnd
	}
	st.dropChunk(s)
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
		st.dropChunk(s)
		st.chunk, st.at, st.eof = []byte{}, off, true
		return st.chunk, nil
	}
	size := streamChunk
	if st.chunk == nil {
		size = firstChunk // the first record at once, without reading far ahead of it
	}
	// Never more than the file holds from off: a damaged length prefix claiming a huge
	// record costs a short read, not an allocation of its claim.
	ck := s.newChunk(min(int64(max(size, want)), fi.Size()-int64(off)))
	n, err := f.ReadAt(ck.b, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		s.unref(ck)
		return nil, err
	}
	st.dropChunk(s)
	st.chunk, st.ck, st.at, st.eof = ck.b[:n:n], ck, off, int64(off)+int64(n) >= fi.Size()
	return st.chunk, nil
}
