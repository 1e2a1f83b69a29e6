package spool

// Reading: the reader's position in the segments and Next.

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/pelichan/pelichan/segment"
)

// Next returns the next unread record, skipping damaged ones (reported through
// OnCorrupt). It returns io.EOF when every record written so far has been read. The
// record's Pos names it by its segment and byte offset; Pos.Offset messages of it were
// delivered already.
func (s *Spool) Next() (Record, error) {
	if s.closed {
		return Record{}, ErrClosed
	}
	for s.rseg != nil {
		sg := s.rseg
		if sg.sealed && !sg.readDone && !s.Has(sg.seq) {
			// collect deleted it before the reader started it (the cursor passed its end).
			s.nextSeg(sg.seq)
			continue
		}
		if !sg.sealed {
			i := s.activeEntry()
			if i == 0 {
				return Record{}, io.EOF
			}
			off, end := sg.offs[i-1], uint64(sg.size)
			if int(i) < len(sg.offs) {
				end = sg.offs[i]
			}
			data, err := s.wlog.readAt(int64(off), int64(end))
			var h segment.Header
			if err == nil {
				h, err = segment.Verify(data)
			}
			if err != nil {
				// The file does not hold what was written (damage, or a failed read): the
				// segment is sealed where it is and read on as a sealed one, whose reader
				// skips, counts and reports what is damaged.
				s.abandon(true)
				continue
			}
			return s.deliver(sg, off, data, h), nil
		}
		if s.rents == nil {
			if !s.ensureMeta(sg) {
				continue
			}
			rec, step := s.streamNext(sg)
			if step == streamRecord {
				return rec, nil
			}
			if step == streamFallback {
				if err := s.loadReader(sg); err != nil {
					s.setAside(sg, err)
					s.noteMissing(sg) // none of the rest will be read
					s.dropSeg(sg)
					s.nextSeg(sg.seq)
					continue
				}
			}
		}
		for s.rpos < len(s.rents) {
			e := s.rents[s.rpos]
			s.rpos++
			if uint64(e.offset) < s.rfrom {
				continue
			}
			return s.deliver(sg, uint64(e.offset), e.data, e.hdr), nil
		}
		sg.readDone = true
		s.noteMissing(sg)
		s.nextSeg(sg.seq)
		if err := s.collect(); err != nil { // a segment whose last entries were damaged
			return Record{}, err
		}
	}
	return Record{}, io.EOF
}

// deliver returns the record at offset off of sg, the next one from the reader's
// position, and moves the position past it. The message offset applies only to the
// record at the position itself: if that one is damaged, the next is delivered whole.
func (s *Spool) deliver(sg *seg, off uint64, data []byte, h segment.Header) Record {
	var skip uint32
	if off == s.rfrom {
		skip = s.rskip
	}
	s.rfrom, s.rskip = off+1, 0
	s.unack = append(s.unack, readRec{sg: sg, off: off, count: uint32(h.Count), skip: skip})
	sg.found += uint64(h.Count) - uint64(min(skip, uint32(h.Count)))
	s.st.BytesRead += int64(len(data))
	return Record{Pos: Cursor{Seg: sg.seq, Index: off, Offset: skip}, Data: data, Header: h}
}

// activeEntry returns the entry index (1-based, as tidwall/wal numbers them) of the first
// record of the active segment at or after the reader's position, 0 if
// there is none.
func (s *Spool) activeEntry() uint64 {
	offs := s.rseg.offs
	i := sort.Search(len(offs), func(i int) bool { return offs[i] >= s.rfrom })
	if i == len(offs) {
		return 0
	}
	return uint64(i + 1)
}

// loadReader reads a sealed segment's file and scans it, reporting damage once.
func (s *Spool) loadReader(sg *seg) error {
	buf, err := readSegFile(s.path(sg.name(), walFile), s.opts.maxSegmentFile())
	if err != nil {
		return err
	}
	ents, bad, _ := scanFile(buf)
	found := uint64(len(ents) + len(bad))
	if found < sg.meta.records {
		// Whole entries are missing (a truncated or emptied file): no scan can see that,
		// only the count the segment was sealed with.
		sg.damaged = true
		s.report(&CorruptionError{Segment: sg.name(), Index: found + 1, Offset: int64(len(buf)),
			Err: fmt.Errorf("%w: %d of the %d entries recorded at sealing are missing", ErrCorrupt, sg.meta.records-found, sg.meta.records)})
	}
	for _, d := range bad {
		if uint64(d.offset+d.length) <= s.rfrom {
			continue // wholly before where reading starts: reported when it was read
		}
		sg.damaged = true
		s.report(&CorruptionError{Segment: sg.name(), Index: d.index, Offset: d.offset, Length: d.length, Err: d.err})
	}
	s.rbuf, s.rents, s.rpos = buf, ents, 0
	s.resetStream()
	if ents == nil {
		s.rents = []entry{}
	}
	sg.setEnd(ents, bad)
	sg.meta.records = found
	return nil
}

// setEnd records where sg's last entry is, from a scan of its file that found the valid
// records ents and the damaged stretches bad. A damaged stretch counts: a cursor in front
// of it leaves the segment to the reader, which reports the damage (one in the cursor's
// own record, say) before the segment goes.
func (sg *seg) setEnd(ents []entry, bad []damage) {
	sg.end, sg.endKnown = 0, true
	sg.short = sg.short || uint64(len(ents)+len(bad)) < sg.meta.records
	if n := len(ents); n > 0 {
		sg.end = uint64(ents[n-1].offset) + 1
	}
	if n := len(bad); n > 0 {
		sg.end = max(sg.end, uint64(bad[n-1].offset)+1)
	}
}

// indexToOffset translates a position of an older format (cursor file version 1 or 2, a
// front segment's resume cursor in meta version 1), which names a record by its 1-based
// entry index in the segment as scanFile counts entries (a damaged stretch counting as
// one), into the record's byte offset, by scanning the segment file buf. sealed is the
// entry count the segment's meta recorded (0 if none).
//
// The older format resumed reading right after the first damaged stretch in front of the
// position, without the message offset, when a stretch there was not exactly one framed
// entry or entries were missing against the sealed count (damage that may have shifted
// the indexes): the translation keeps that rule, so such a position becomes the offset
// of that stretch (duplicates, never loss). An index past the last entry becomes the
// offset past the end of the file.
func indexToOffset(buf []byte, c Cursor, sealed uint64) Cursor {
	if c.Index == 0 {
		return c // the start of the segment (a version 1 file could hold 0 for 1)
	}
	ents, bad, _ := scanFile(buf)
	missing := sealed > uint64(len(ents)+len(bad))
	for _, d := range bad {
		if d.index >= c.Index {
			break
		}
		if missing || !oneEntry(buf, d) {
			return Cursor{Seg: c.Seg, Index: uint64(d.offset)}
		}
	}
	for _, e := range ents {
		if e.index == c.Index {
			return Cursor{Seg: c.Seg, Index: uint64(e.offset), Offset: c.Offset}
		}
	}
	for _, d := range bad {
		if d.index == c.Index {
			return Cursor{Seg: c.Seg, Index: uint64(d.offset), Offset: c.Offset}
		}
	}
	return Cursor{Seg: c.Seg, Index: uint64(len(buf))}
}

// oneEntry reports whether the damaged stretch d of buf is exactly one framed entry whose
// record is bad but whose length prefix is intact, so that it cannot hide more entries.
func oneEntry(buf []byte, d damage) bool {
	size, k := binary.Uvarint(buf[d.offset:])
	return k > 0 && uint64(d.length) == uint64(k)+size
}

// nextSeg moves the reader to the first segment after seq.
// Leaving a front segment, reading goes on at its resume cursor.
func (s *Spool) nextSeg(seq uint64) {
	var resume Cursor
	if s.rseg != nil && s.rseg.seq == seq {
		resume = s.rseg.meta.resume // collect may have removed it from segs already
	}
	for _, sg := range s.segs {
		if sg.seq == seq {
			resume = sg.meta.resume
		}
	}
	s.rseg, s.rents, s.rbuf, s.rpos, s.rfrom, s.rskip = nil, nil, nil, 0, 0, 0
	s.resetStream()
	for _, sg := range s.segs {
		// Past a front segment, a segment before its resume cursor's is consumed (finishFront
		// deletes it).
		if sg.seq > seq && (resume.Seg <= seq || sg.seq >= resume.Seg) {
			s.rseg = sg
			if sg.seq == resume.Seg {
				s.rfrom, s.rskip = resume.Index, resume.Offset
			}
			return
		}
	}
}

// resetReader positions the reader at the acknowledged cursor.
func (s *Spool) resetReader() {
	s.unack = s.unack[:0]
	for _, sg := range s.segs {
		// Records returned and not acknowledged are returned again.
		sg.found = sg.delivered - min(sg.deliveredOpen, sg.delivered)
		if sg.seq >= s.acked.Seg {
			sg.readDone = false // read again from the cursor on
		}
	}
	s.nextSeg(0)
	for s.rseg != nil && s.rseg.seq < s.acked.Seg {
		s.nextSeg(s.rseg.seq)
	}
	if s.rseg != nil && s.rseg.seq == s.acked.Seg {
		s.rfrom, s.rskip = s.acked.Index, s.acked.Offset
	}
}
