package spool

// Deleting segments: consumed ones (collect), dropped ones (DropOldest, DropOlderThan), and
// damaged ones set aside as evidence.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
)

// removeSeg deletes a segment directory. It is renamed NAME.del.tmp first, so that a
// crash in the middle of the deletion leaves either the whole segment or a leftover that
// Open removes, never a segment directory missing some of its files (which Open would
// have to take for damage).
func (s *Spool) removeSeg(name string) error {
	tmp, err := s.renameAway(name)
	if tmp == "" {
		return err
	}
	return os.RemoveAll(tmp)
}

// retire deletes a consumed segment directory as removeSeg does, but leaves removing its
// files to the background once it is renamed: unlinking a full segment file takes about
// 1 ms on ext4, which held up the reader's goroutine at every segment (refill ran about
// 15% faster without it). The segment is gone when retire returns; a crash before its
// files are removed leaves a NAME.del.tmp that Open removes. Close waits for it.
func (s *Spool) retire(name string) error {
	tmp, err := s.renameAway(name)
	if tmp == "" {
		return err
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		os.RemoveAll(tmp) // failing that, Open removes it
	}()
	return nil
}

// renameAway renames segment directory name to NAME.del.tmp and returns that path: the
// segment is gone from the spool. It returns "" with a nil error if there was no such
// directory, and "" with the error if the rename failed.
func (s *Spool) renameAway(name string) (string, error) {
	tmp := s.path(name + ".del.tmp")
	if err := os.Rename(s.path(name), tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return tmp, nil
}

// badPath returns where a damaged segment's evidence goes: NAME.bad, or NAME.N.bad when
// that is taken (segment numbers start over when an empty spool loses its cursor).
func (s *Spool) badPath(sg *seg) string {
	p := s.path(sg.name() + ".bad")
	for i := 1; ; i++ {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return p
		}
		p = s.path(fmt.Sprintf("%s.%d.bad", sg.name(), i))
	}
}

func (s *Spool) dropSeg(sg *seg) {
	if sg.lazy { // never counted: its background count will be ignored
		sg.lazy = false
		s.st.Counting--
	}
	if i := slices.Index(s.segs, sg); i >= 0 {
		s.segs = slices.Delete(s.segs, i, i+1)
		s.st.DiskBytes -= sg.size
		if sg.meta.messages > sg.delivered {
			s.st.Undelivered -= int64(sg.meta.messages - sg.delivered)
		}
	}
}

// collect deletes the sealed segments that the acknowledged cursor has passed.
func (s *Spool) collect() error {
	if s.keep {
		return nil // KeepConsumed: Front's checkpoint comes first
	}
	for len(s.segs) > 0 {
		sg := s.segs[0]
		if sg.seq >= s.acked.Seg && !s.ensureMeta(sg) {
			continue
		}
		done := sg.seq < s.acked.Seg ||
			(sg.seq == s.acked.Seg && sg.sealed && (s.pastEnd(sg) || s.readPast(sg))) ||
			// A segment without a record (a kill between creating it and writing to it)
			// past the cursor, which the reader has passed: nothing in it to acknowledge.
			(sg.seq > s.acked.Seg && sg.sealed && sg.meta.records == 0 && s.readPast(sg))
		if !done || !sg.sealed {
			return nil
		}
		if sg.seq == s.acked.Seg {
			// Moving past this segment: the cursor now means the start of the next one, or,
			// past a front segment, its resume cursor.
			s.acked = Cursor{Seg: sg.seq + 1}
			if r := sg.meta.resume; r.Seg > sg.seq {
				s.acked = r
			}
		}
		if err := s.deleteConsumed(sg, true); err != nil {
			return err
		}
	}
	return nil
}

// deleteConsumed deletes sg, a sealed segment the cursor has passed (a damaged one is set
// aside as evidence), checkpointing first where the cursor file needs it. missing says
// whether what the reader did not find in it is missing (see noteMissing); not for a front
// segment a new one replaced, whose rest that one holds.
func (s *Spool) deleteConsumed(sg *seg, missing bool) error {
	if sg.sealDone != nil {
		<-sg.sealDone // never delete a directory a seal is still writing to
	}
	if err := s.checkpointBeforeDelete(sg); err != nil {
		return err
	}
	var err error
	if sg.damaged {
		err = os.Rename(s.path(sg.name()), s.badPath(sg))
		s.st.SetAside++
	} else {
		err = s.retire(sg.name())
	}
	if err != nil {
		return fmt.Errorf("spool: delete consumed segment %s: %w", sg.name(), err)
	}
	if missing {
		s.noteMissing(sg)
	}
	s.dropSeg(sg) // what it still counts undelivered (damaged records) goes with it
	return nil
}

// pastEnd reports whether the acknowledged cursor lies past sg's last valid record, where
// the writer or a scan found where that is, and no whole entries are missing from it (the
// reader then reads it, and reports them).
func (s *Spool) pastEnd(sg *seg) bool {
	return sg.endKnown && !sg.short && s.acked.Index >= sg.end
}

// readPast reports whether the reader has finished sg and every record it read from sg
// is acknowledged: damaged entries at its end, never delivered, do not keep it alive.
func (s *Spool) readPast(sg *seg) bool {
	if !sg.readDone {
		return false
	}
	for _, r := range s.unack {
		if r.sg == sg {
			return false
		}
	}
	return true
}

// DropOldest deletes the oldest sealed segment that the reader has not started, and
// returns how many undelivered messages went with it (0, false if there is none). It is
// how a full spool makes room under a drop-oldest policy.
func (s *Spool) DropOldest() (int64, bool, error) {
	for _, sg := range s.segs {
		if s.droppable(sg) {
			n, err := s.drop(sg)
			return n, true, err
		}
	}
	return 0, false, nil
}

// DropOlderThan deletes the sealed segments, not yet being read, whose newest record is
// older than t (unix nanos), and returns how many undelivered messages went with them.
func (s *Spool) DropOlderThan(t int64) (int64, error) {
	var total int64
	for _, sg := range slices.Clone(s.segs) {
		if s.droppable(sg) && sg.meta.messages > 0 && sg.meta.last < t {
			n, err := s.drop(sg)
			total += n
			if err != nil {
				return total, err
			}
		}
	}
	return total, nil
}

// droppable: sealed, not the segment being read (its records may be in flight), and
// none of its records read and not yet acknowledged.
func (s *Spool) droppable(sg *seg) bool {
	if !sg.sealed || sg == s.rseg || !s.ensureMeta(sg) {
		return false
	}
	if s.opts.Pinned != nil && s.opts.Pinned(sg.seq) {
		return false
	}
	for _, r := range s.unack {
		if r.sg == sg {
			return false
		}
	}
	return true
}

func (s *Spool) drop(sg *seg) (int64, error) {
	n := int64(sg.meta.messages - sg.delivered)
	if sg.missingNoted {
		n = 0 // the reader is done with it: what it did not return was noted (TakeMissing)
	}
	if err := s.checkpointBeforeDelete(sg); err != nil {
		return 0, err
	}
	s.dropSeg(sg)
	if err := s.removeSeg(sg.name()); err != nil { // at once: a full disk waits for the space
		return n, fmt.Errorf("spool: drop segment %s: %w", sg.name(), err)
	}
	return n, nil
}
