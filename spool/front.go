package spool

// Front segments: messages put in front of the backlog at an ordered shutdown.

import (
	"fmt"
	"slices"

	"github.com/pelichan/pelichan/segment"
	"github.com/tidwall/wal"
)

// finishFront completes a Front: it deletes the segments that lie between the front
// segment the cursor is on and the segment its resume cursor names. They are the earlier
// front segment it replaced (its undelivered rest is in the new one, so it must not be
// delivered twice) and segments whose deletion KeepConsumed held back (consumed: they lie
// before the resume cursor). Front calls it right after its checkpoint; Open calls it to
// finish a Front interrupted after that checkpoint.
func (s *Spool) finishFront() error {
	if len(s.segs) == 0 || s.segs[0].seq != s.acked.Seg {
		return nil
	}
	front := s.segs[0]
	if front.meta.resume.Seg <= front.seq {
		return nil // not a front segment
	}
	for len(s.segs) > 1 && s.segs[1].seq < front.meta.resume.Seg {
		// The replaced front segment: nothing of it is missing, its rest was copied.
		sg := s.segs[1]
		if err := s.deleteConsumed(sg, sg.seq != front.meta.replaces); err != nil {
			return err
		}
	}
	return nil
}

// KeepConsumed, while on, keeps the spool from deleting consumed segments: Ack moves the
// cursor, but the segments it passes stay on disk, and no checkpoint is written for their
// deletion. An owner that acknowledges messages which only a Front is about to hold (an
// ordered shutdown: the messages taken back from the reader's consumer) turns it on before
// that Ack: a kill before Front's checkpoint then leaves them where they were, not
// acknowledged on disk. Front deletes the segments it held back, after its checkpoint;
// otherwise (Front failed) the first Ack or Close after KeepConsumed(false) does.
func (s *Spool) KeepConsumed(on bool) {
	s.keep = on
}

// Front puts recs in front of everything stored, for shutdown in ordered mode: they are
// older than every undelivered message. It writes them into a new segment numbered below
// all others, whose meta holds a resume cursor (the current cursor), moves the cursor to
// it, and leaves every other segment untouched: once the front segment is read, reading
// goes on at the resume cursor. If the cursor is inside an earlier front segment, that
// segment's undelivered rest (at most one Out buffer of messages) is copied behind recs,
// the resume cursor carried over, and the earlier one deleted; its number is recorded so
// that Open finishes the deletion after a crash. Until the cursor moves, the new segment
// lies behind it and Open discards it (recs were in memory only). Call Close next.
//
// Once the segment is written, Front returns nil: a failed checkpoint, or a failed
// deletion of what the segment makes obsolete (see finishFront), is tried again by Close,
// which reports it, and by Open.
func (s *Spool) Front(recs [][]byte) error {
	return s.FrontExcept(recs, nil)
}

// FrontExcept is Front, leaving out of the earlier front segment's rest that it copies
// the messages done reports done (acknowledged out of order, which the cursor's offset
// does not cover): done(off, i) for message i of the record at byte offset off. done may
// be nil.
func (s *Spool) FrontExcept(recs [][]byte, done func(off uint64, i int) bool) error {
	if s.closed {
		return ErrClosed
	}
	if len(recs) == 0 {
		return nil
	}
	if s.active != nil {
		if err := s.seal(); err != nil {
			return err
		}
	}
	base := s.acked.Seg
	if len(s.segs) > 0 && (base == 0 || s.segs[0].seq < base) {
		base = s.segs[0].seq
	}
	if base == 0 {
		base = firstSeq
	}
	top := base // numbered below every segment ever created: no number is used twice
	if s.low != 0 && s.low < top {
		top = s.low
	}
	if top <= 1 {
		return fmt.Errorf("spool: front: no segment number left in front")
	}
	sg := &seg{seq: top - 1, sealed: true, endKnown: true}
	sg.meta.resume = s.acked
	if sg.meta.resume.Seg == 0 {
		sg.meta.resume = Cursor{Seg: base}
	}
	var old *seg
	if i := slices.IndexFunc(s.segs, func(sg *seg) bool { return sg.seq == s.acked.Seg }); i >= 0 && s.segs[i].meta.resume.Seg > s.segs[i].seq {
		old = s.segs[i]
		rest, err := s.restOf(old, done)
		if err != nil {
			return err
		}
		recs = append(recs, rest...)
		sg.meta.replaces, sg.meta.resume = old.seq, old.meta.resume
	}
	s.useSeq(sg.seq)
	if err := s.writeSealed(sg, recs); err != nil {
		return err
	}
	s.segs = append([]*seg{sg}, s.segs...)
	s.st.DiskBytes += sg.size
	s.st.Undelivered += int64(sg.meta.messages)
	s.acked = Cursor{Seg: sg.seq}
	s.keep = false
	if err := s.Checkpoint(); err == nil {
		// The earlier front segment, whose undelivered rest the new one holds, and what
		// KeepConsumed held back (all before the resume cursor) go now. Failing that,
		// Close tries again (finishSaved), and Open after it: recs are stored either way.
		_ = s.finishFront()
	}
	// A failed checkpoint loses nothing either: the cursor names the front segment in
	// memory, so collect deletes nothing behind it, and Close checkpoints again. If that
	// fails too, the cursor file is the one from before Front: it still names the
	// segments recs came from (KeepConsumed kept them), and Open discards the front
	// segment. Close reports the failure.
	s.resetReader()
	return nil
}

// finishSaved is finishFront at Close, once the cursor file names the front segment the
// cursor is on (never before: the segments it deletes are what a cursor file from before
// the front segment still names).
func (s *Spool) finishSaved() error {
	if !s.Saved() {
		return nil
	}
	if err := s.finishFront(); err != nil {
		return fmt.Errorf("spool: front: %w", err)
	}
	return nil
}

// restOf returns the undelivered records of sg, the cursor's (front) segment: from the
// cursor on, less the messages done reports done (done may be nil).
func (s *Spool) restOf(sg *seg, done func(off uint64, i int) bool) ([][]byte, error) {
	buf, err := readSegFile(s.path(sg.name(), walFile), s.opts.maxSegmentFile())
	if err != nil {
		return nil, fmt.Errorf("spool: front: %w", err)
	}
	ents, _, _ := scanFile(buf)
	var rest [][]byte
	for _, e := range ents {
		off := uint64(e.offset)
		from := 0
		switch {
		case off > s.acked.Index || (off == s.acked.Index && s.acked.Offset == 0):
		case off == s.acked.Index && int(s.acked.Offset) < e.hdr.Count:
			from = int(s.acked.Offset)
		default:
			continue
		}
		keep := func(i int) bool { return done == nil || !done(off, i) }
		whole := from == 0
		for i := from; whole && i < e.hdr.Count; i++ {
			whole = keep(i)
		}
		if whole {
			rest = append(rest, e.data)
			continue
		}
		r := segment.NewReader()
		b, err := r.Decode(e.data)
		if err != nil {
			r.Close()
			continue // reported when it was read
		}
		w := segment.NewWriter(e.hdr.RawLen)
		w.SetTime(e.hdr.Time)
		for i := from; i < b.Count; i++ {
			if keep(i) {
				w.AddBytes(b.Message(i))
			}
		}
		if w.Len() > 0 {
			rest = append(rest, append([]byte(nil), w.Record()...))
		}
		w.Close()
		r.Close()
	}
	return rest, nil
}

// writeSealed writes recs as the complete, sealed segment sg.
func (s *Spool) writeSealed(sg *seg, recs [][]byte) error {
	l, err := wal.Open(s.path(sg.name()), s.walOptions())
	if err != nil {
		return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
	}
	for i, rec := range recs {
		h, err := segment.ParseHeader(rec)
		if err == nil {
			err = l.Write(uint64(i+1), rec)
		}
		if err != nil {
			l.Close()
			s.removeSeg(sg.name())
			return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
		}
		sg.meta.add(h)
		sg.end = uint64(sg.size) + 1
		sg.size += int64(uvarintLen(uint64(len(rec))) + len(rec))
		s.st.BytesWritten += int64(len(rec))
		s.st.RawWritten += int64(h.RawLen)
	}
	if err := l.Close(); err != nil {
		s.removeSeg(sg.name())
		return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
	}
	if err := writeFileAtomic(s.path(sg.name(), metaName), encodeMeta(sg.meta), !s.opts.NoSync); err != nil {
		s.removeSeg(sg.name())
		return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
	}
	if !s.opts.NoSync {
		if err := syncDir(s.dir); err != nil {
			return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
		}
	}
	return nil
}
