package spool

// Writing: appending records to the active segment, starting and sealing segments, Sync.

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"

	"github.com/pelichan/pelichan/segment"
	"github.com/tidwall/wal"
)

// Append adds one record (as built by segment.Writer; one whose header or CRC does not
// check is refused with an error wrapping ErrCorrupt) at the tail and returns its
// position: Cursor{Seg: its segment, Index: the byte offset of its framing in the
// segment's WAL file, Offset: 0}, as Next returns it. Positions increase with every Append, and no two records of a spool directory ever get the same
// one (segment numbers are never used twice; see Open). The record is durable once Sync
// returns (with NoSync false).
//
// An error with a zero Cursor means the record was not stored. After a failed write the
// segment being written is sealed at its last whole record and the next Append starts a
// new one, so a failed write never leaves a log with a shifted index in use. An error with
// a non-zero Cursor means the record was stored but something after it failed (deleting
// a consumed segment).
func (s *Spool) Append(rec []byte) (Cursor, error) {
	if s.closed {
		return Cursor{}, ErrClosed
	}
	// The whole record is checked, CRC included, as the reader checks it: a record that
	// would not read back is refused here rather than lost later.
	h, err := segment.Verify(rec)
	if err != nil {
		return Cursor{}, fmt.Errorf("spool: append: %w", err)
	}
	if len(rec) > maxRecordBytes {
		return Cursor{}, fmt.Errorf("spool: append: %w: record of %d bytes, more than the %d a writer produces", ErrCorrupt, len(rec), maxRecordBytes)
	}
	if err := s.sealErr(); err != nil {
		return Cursor{}, err
	}
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return Cursor{}, err
		}
	}
	sg := s.active
	if err := s.wlog.append(rec); err != nil {
		s.abandon(false)
		return Cursor{}, fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
	}
	sg.meta.add(h)
	pos := Cursor{Seg: sg.seq, Index: uint64(sg.size)}
	sg.offs = append(sg.offs, pos.Index)
	sg.end, sg.endKnown = pos.Index+1, true
	s.st.Undelivered += int64(h.Count)
	n := int64(uvarintLen(uint64(len(rec))) + len(rec))
	sg.size += n
	s.st.DiskBytes += n
	s.st.BytesWritten += int64(len(rec))
	s.st.RawWritten += int64(h.RawLen)
	if sg.size >= s.opts.SegmentSize {
		return pos, s.seal()
	}
	return pos, nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func (s *Spool) walOptions() *wal.Options {
	// A fresh copy each time: wal.Open writes its defaults into the struct it is given.
	return &wal.Options{
		NoSync:           true, // we fsync ourselves, per the sync policy
		SegmentSize:      math.MaxInt,
		LogFormat:        wal.Binary,
		SegmentCacheSize: 1,
		NoCopy:           true,
		DirPerms:         0o750,
		FilePerms:        0o640,
	}
}

// nextSeq returns the number of the next segment.
func (s *Spool) nextSeq() uint64 {
	seq := uint64(firstSeq)
	if n := len(s.segs); n > 0 {
		seq = s.segs[n-1].seq + 1
	}
	if s.acked.Seg >= seq {
		seq = s.acked.Seg + 1
		if s.acked.Index == 0 && s.acked.Offset == 0 {
			// The cursor is at the very start of a segment not made yet (what collect
			// leaves when the reader finished the one before): a segment with its number
			// begins exactly there, and the spare made for it is used.
			seq = s.acked.Seg
		}
	}
	if s.high >= seq {
		seq = s.high + 1 // never a number used before, even by a segment long deleted
	}
	for _, sg := range s.segs {
		// Never reuse the number of a segment a front segment replaced: Open would delete it.
		if sg.meta.replaces >= seq {
			seq = sg.meta.replaces + 1
		}
		// Nor number one between a front segment and its resume cursor's: the reader skips
		// from the front segment to the resume cursor, and finishFront deletes what lies
		// between (a cursor file that lost its marks, a damaged one, leaves nothing else
		// on disk that says those numbers were used).
		if r := sg.meta.resume; r.Seg > sg.seq {
			need := r.Seg
			if r.Index != 0 || r.Offset != 0 {
				need++ // a segment of that number would be read from the resume offset on
			}
			seq = max(seq, need)
		}
	}
	return seq
}

func (s *Spool) startSegment() error {
	sg := &seg{seq: s.nextSeq(), endKnown: true, written: true}
	var l *segFile
	if p := s.takeSpare(); p != nil && p.err == nil {
		if p.seq == sg.seq {
			l, _ = openSegFile(s.path(sg.name())) // failing that, made again below
		}
		if l == nil {
			s.removeSeg(segName(p.seq)) // never held a record
		}
	}
	if l == nil {
		var err error
		if l, err = s.makeSegment(sg.name()); err != nil {
			return fmt.Errorf("spool: create segment %s: %w", sg.name(), err)
		}
	}
	s.useSeq(sg.seq)
	s.wlog, s.active = l, sg
	s.segs = append(s.segs, sg)
	if s.rseg == nil {
		// The reader has read every older segment: this one is where it goes on.
		s.rseg, s.rfrom, s.rskip = sg, 0, 0
		s.resetStream()
	}
	s.prepareSpare()
	return nil
}

// makeSegment creates the segment directory name and its empty WAL file. With NoSync false,
// the WAL file's name in the segment directory and the segment directory's name in the
// spool directory are fsynced: both durable before any record in it counts as stored. It
// touches only the file system, so a spare is made with it in the background.
func (s *Spool) makeSegment(name string) (*segFile, error) {
	l, err := createSegFile(s.path(name))
	if err != nil {
		if !errors.Is(err, fs.ErrExist) { // never remove what this Spool did not make
			s.removeSeg(name)
		}
		return nil, err
	}
	if !s.opts.NoSync {
		err := syncDir(s.path(name))
		if err == nil {
			err = syncDir(s.dir)
		}
		if err != nil {
			l.close()
			s.removeSeg(name)
			return nil, err
		}
	}
	return l, nil
}

// spare is the next segment, made (and its names fsynced) in the background as soon as a
// segment becomes active, so that the writer does not wait for the two directory fsyncs
// at every rotation: a journal commit each on ext4, about 2 ms, which held up the whole
// spill pipeline (Auto spill ran about 15% faster without them). It is used only once
// made, so a record in it is as durable as in a segment made on the spot. It holds no
// record: Close removes it. One a crash left stays, as an empty segment (see tailFrom).
type spare struct {
	seq  uint64
	err  error // set before done is closed
	done chan struct{}
}

// prepareSpare starts making the spare after the active segment. With NoSync, making a
// segment costs no fsync, and there is no spare.
func (s *Spool) prepareSpare() {
	if s.opts.NoSync || s.spare != nil {
		return
	}
	p := &spare{seq: s.nextSeq(), done: make(chan struct{})}
	s.spare = p
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer close(p.done)
		l, err := s.makeSegment(segName(p.seq))
		if err == nil {
			err = l.f.Close() // reopened when used: an idle spool holds no extra descriptor
		}
		p.err = err
	}()
}

// takeSpare returns the spare, once made, and forgets it; nil if there is none.
func (s *Spool) takeSpare() *spare {
	p := s.spare
	if p != nil {
		s.spare = nil
		<-p.done
	}
	return p
}

// Sync makes everything appended so far durable: it fsyncs the segment being written and
// waits for the fsync of the segments sealed since the last Sync (the record that fills a
// segment seals it, in the background). An error from such a seal is returned here.
func (s *Spool) Sync() error {
	for _, sg := range s.sealing {
		<-sg.synced
	}
	clear(s.sealing)
	s.sealing = s.sealing[:0]
	if err := s.syncFailed(); err != nil {
		return err
	}
	if s.wlog == nil {
		return nil
	}
	if err := s.wlog.sync(); err != nil {
		return fmt.Errorf("spool: sync segment %s: %w", s.active.name(), err)
	}
	return nil
}

// seal closes the active segment and records its counts in its meta file.
//
// Closing fsyncs the file, which can take long on a busy disk, so closing and
// writing the meta file (after the fsync: Open relies on a meta never being newer than its
// data) happen in the background. Nothing touches a sealed segment's segFile again: the
// reader reads its file, and deleting it waits for the seal (see collect). Close waits for
// every seal; an error from one is returned by the next Append or by Close.
func (s *Spool) seal() error {
	sg, l := s.active, s.wlog
	s.wlog, s.active = nil, nil
	sg.sealed, sg.offs = true, nil
	done, synced := make(chan struct{}), make(chan struct{})
	sg.sealDone, sg.synced = done, synced
	s.sealing = slices.DeleteFunc(s.sealing, func(sg *seg) bool {
		select {
		case <-sg.synced:
			return true // fsynced already: nothing for Sync to wait for
		default:
			return false
		}
	})
	s.sealing = append(s.sealing, sg)
	meta, metaPath := encodeMeta(sg.meta), s.path(sg.name(), metaName)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer close(done)
		err := l.close() // fsyncs the file
		if err != nil {
			s.failSync(fmt.Errorf("spool: seal segment %s: %w", sg.name(), err))
		}
		close(synced)
		if err != nil {
			return
		}
		if err := writeFileAtomic(metaPath, meta, !s.opts.NoSync); err != nil {
			os.Remove(metaPath) // the counts can be rebuilt by scanning the segment
		}
	}()
	return s.collect()
}

// failSync records a failed fsync of a segment no longer written (a seal, or abandon):
// records appended before it may not be durable. The next Append returns it, and so does
// the next Sync (or Close), even if an Append returned it first: a Sync must not report
// durable what is not.
func (s *Spool) failSync(err error) {
	s.bgErr.Store(&err)
	s.syncErr.Store(&err)
}

// sealErr returns (once) a failed fsync recorded by failSync, for Append.
func (s *Spool) sealErr() error {
	if p := s.bgErr.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// syncFailed returns (once) a failed fsync recorded by failSync, for Sync and Close.
func (s *Spool) syncFailed() error {
	s.bgErr.Swap(nil)
	if p := s.syncErr.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// abandon seals the active segment after a failed write or read: the file is fsynced
// (what was written before stays durable, as a seal makes it), closed and never written
// again, and cut back to the last record known to be whole. A failed fsync is returned,
// once, by the next Sync, Append or Close, as a background seal's is. With keepMeta (the
// file holds every record appended, some damaged since), the segment's meta is written
// too, as a seal writes it, so that a later Open counts it from there instead of
// scanning it (and reporting its damage a second time).
func (s *Spool) abandon(keepMeta bool) {
	sg := s.active
	err := s.wlog.close()
	s.wlog, s.active = nil, nil
	sg.sealed, sg.offs = true, nil
	if err != nil {
		s.failSync(fmt.Errorf("spool: seal segment %s: %w", sg.name(), err))
	}
	s.truncateAfterError(sg, nil)
	if keepMeta && err == nil && sg.meta.records > 0 {
		metaPath := s.path(sg.name(), metaName)
		if err := writeFileAtomic(metaPath, encodeMeta(sg.meta), !s.opts.NoSync); err != nil {
			os.Remove(metaPath) // the counts can be rebuilt by scanning the segment
		}
	}
}

func (s *Spool) truncateAfterError(sg *seg, cause error) error {
	if sg.meta.records == 0 {
		s.removeSeg(sg.name())
		s.dropSeg(sg)
		if s.rseg == sg {
			s.nextSeg(sg.seq)
		}
		return cause
	}
	if err := os.Truncate(s.path(sg.name(), walFile), sg.size); err != nil {
		// The scanner will find the torn bytes and skip them.
		sg.damaged = true
	}
	return cause
}

// SealIdle seals the segment being written if the reader has read all of it, so that a
// spool whose consumer caught up holds no segment in memory: once its records are
// acknowledged it is deleted, and the next Append starts a new segment. The owner calls it
// when no record was appended for a while.
func (s *Spool) SealIdle() error {
	if s.closed || s.active == nil || s.rseg != s.active || !s.Empty() {
		return nil
	}
	return s.seal()
}
