package spool

// Reading: the reader's position in the segments and Next.

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pelichan/pelichan/segment"
)

// Next returns the next unread record, skipping damaged ones (reported through
// OnCorrupt). It returns io.EOF when every record written so far has been read.
func (s *Spool) Next() (Record, error) {
	if s.closed {
		return Record{}, ErrClosed
	}
	for s.rseg != nil {
		sg := s.rseg
		skip := s.rskip
		if !sg.sealed {
			if s.rnext > sg.meta.records {
				return Record{}, io.EOF
			}
			data, err := s.wlog.Read(s.rnext)
			if err != nil {
				return Record{}, fmt.Errorf("spool: read segment %s entry %d: %w", sg.name(), s.rnext, err)
			}
			h, err := segment.ParseHeader(data)
			if err != nil {
				return Record{}, fmt.Errorf("spool: read segment %s entry %d: %w", sg.name(), s.rnext, err)
			}
			r := Record{Pos: Cursor{Seg: sg.seq, Index: s.rnext, Offset: skip}, Data: data, Header: h}
			s.unack = append(s.unack, readRec{sg: sg, index: s.rnext, count: uint32(h.Count), skip: skip})
			s.rnext++
			s.rskip = 0
			s.st.BytesRead += int64(len(data))
			return r, nil
		}
		if s.rents == nil {
			if !s.ensureMeta(sg) {
				continue
			}
			if err := s.loadReader(sg); err != nil {
				s.setAside(sg, err)
				s.dropSeg(sg)
				s.nextSeg(sg.seq)
				continue
			}
			skip = s.rskip // loadReader may move the start back
		}
		for s.rpos < len(s.rents) {
			e := s.rents[s.rpos]
			s.rpos++
			if e.index < s.rnext {
				continue
			}
			if e.index != s.rnext {
				// The cursor's own entry is damaged: its message offset says nothing about
				// the next entry, which is delivered whole.
				skip = 0
			}
			s.rnext = e.index + 1
			s.rskip = 0
			s.unack = append(s.unack, readRec{sg: sg, index: e.index, count: uint32(e.hdr.Count), skip: skip})
			s.st.BytesRead += int64(len(e.data))
			return Record{Pos: Cursor{Seg: sg.seq, Index: e.index, Offset: skip}, Data: e.data, Header: e.hdr}, nil
		}
		sg.readDone = true
		s.nextSeg(sg.seq)
		if err := s.collect(); err != nil { // a segment whose last entries were damaged
			return Record{}, err
		}
	}
	return Record{}, io.EOF
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
	// A damaged stretch in front of the cursor that swallowed several entries (a page of
	// zeros over a record boundary, say) is counted as one, which shifts the indexes after
	// it: the entry found at the cursor's index is then a later one, and reading from there
	// would skip records behind the cursor. Unless each stretch in front of the cursor is
	// exactly one framed entry (a record with a bad CRC whose length prefix is intact), and
	// the count recorded at sealing (if any) finds no entry missing, resume right after the
	// first stretch, from its first message: duplicates, never loss.
	if len(bad) > 0 && bad[0].index < s.rnext {
		missing := max(sg.meta.records, sg.sealedCount) > found
		for _, d := range bad {
			if d.index >= s.rnext {
				break
			}
			if missing || !oneEntry(buf, d) {
				s.rnext, s.rskip = d.index+1, 0
				break
			}
		}
	}
	for _, d := range bad {
		if d.index < s.rnext {
			continue // reported before the position we resumed at
		}
		sg.damaged = true
		s.report(&CorruptionError{Segment: sg.name(), Index: d.index, Offset: d.offset, Length: d.length, Err: d.err})
	}
	s.rbuf, s.rents, s.rpos = buf, ents, 0
	if ents == nil {
		s.rents = []entry{}
	}
	sg.meta.records = uint64(len(ents) + len(bad))
	return nil
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
	s.rseg, s.rents, s.rbuf, s.rpos, s.rnext, s.rskip = nil, nil, nil, 0, 1, 0
	for _, sg := range s.segs {
		if sg.seq > seq {
			s.rseg = sg
			if sg.seq == resume.Seg {
				s.rnext, s.rskip = max(resume.Index, 1), resume.Offset
			}
			return
		}
	}
}

// resetReader positions the reader at the acknowledged cursor.
func (s *Spool) resetReader() {
	s.unack = s.unack[:0]
	s.nextSeg(0)
	for s.rseg != nil && s.rseg.seq < s.acked.Seg {
		s.nextSeg(s.rseg.seq)
	}
	if s.rseg != nil && s.rseg.seq == s.acked.Seg {
		s.rnext, s.rskip = s.acked.Index, s.acked.Offset
	}
}
