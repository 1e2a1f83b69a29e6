package spool

// Open's recovery rules: the format check, loading and repairing segments, counting the
// backlog (some of it in the background), and setting aside what cannot be read.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

func (s *Spool) load() error {
	names, err := readDirNames(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := checkFormat(s.dir, names, true, !s.opts.NoSync); err != nil {
		return err
	}
	for _, name := range names {
		if seq, ok := seqPrefix(name); ok {
			// Every number a segment had (live, set aside, being deleted, or named by the
			// evidence of a torn tail) stays used.
			s.useSeq(seq)
		}
		switch {
		case strings.HasSuffix(name, ".tmp"):
			// An interrupted atomic write: the old file (if any) is still in place.
			if err := os.RemoveAll(s.path(name)); err != nil {
				return fmt.Errorf("spool: remove leftover: %w", err)
			}
		case isSegName(name):
			seq, _ := strconv.ParseUint(name, 10, 64)
			s.segs = append(s.segs, &seg{seq: seq, sealed: true})
		}
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].seq < s.segs[j].seq })
	// A segment whose creation was cut short (the directory is made before its
	// file) never held a record. Only the last segment created can be one, numbered above
	// (or, a front segment, below) all others, and Open removes it before creating any:
	// only the first and the last need looking at, whatever the backlog.
	for _, i := range []int{len(s.segs) - 1, 0} {
		if i < 0 || i >= len(s.segs) {
			continue
		}
		name := s.segs[i].name()
		if emptyDir(s.path(name)) {
			if err := os.Remove(s.path(name)); err != nil {
				return fmt.Errorf("spool: remove leftover: %w", err)
			}
			s.segs = slices.Delete(s.segs, i, i+1)
		}
	}

	cf, version, cerr := s.readCursor()
	c, delivered := cf.pos, cf.delivered
	if cerr == nil {
		s.extra = cf.extra
		if cf.high != 0 {
			s.useSeq(cf.high)
		}
		if cf.low != 0 {
			s.useSeq(cf.low)
		}
		if version >= cursorVersion {
			s.saved = savedCursor{ok: true, pos: cf.pos, high: cf.high, low: cf.low}
		}
	}
	switch {
	case cerr != nil:
		// A missing or damaged cursor: read from the first segment. Duplicates, never loss.
		if !errors.Is(cerr, fs.ErrNotExist) {
			s.report(fmt.Errorf("spool: %s: %w; reading from the first segment", s.path(cursorName), cerr))
		}
		c = Cursor{}
		if len(s.segs) > 0 {
			c = Cursor{Seg: s.segs[0].seq}
		}
	case len(s.segs) > 0 && c.Seg > s.segs[len(s.segs)-1].seq:
		var only uint64
		var meta []byte
		if len(s.segs) == 1 {
			only, meta = s.segs[0].seq, s.readMeta(s.segs[0])
		}
		if at, fine := pastLast(c, version, s.segs[len(s.segs)-1].seq, only, meta, s.indexToOffset); fine {
			c = at
			break
		}
		s.report(fmt.Errorf("%w: spool: cursor points to segment %020d past the last one; reading from the first segment", ErrCorrupt, c.Seg))
		c = Cursor{Seg: s.segs[0].seq}
	case version < 3:
		// An entry index: the record's offset from a scan of its segment.
		c = s.indexToOffset(c)
	}
	if cerr != nil || c != cf.pos {
		delivered = unknownDelivered // a position other than the file's
	}
	s.acked = c
	// Load what reading needs now: the segment the cursor is in (or the first after it), the
	// one a front segment resumes in, and the newest (unsealed after a crash, its tail may
	// need repair). The counts
	// of the others are read in the background (see pump), so that Open costs the same
	// whatever the backlog. Segments before the cursor are consumed and need no counts.
	// The messages delivered before the cursor in its segment, and before a front segment's
	// resume cursor in the segment it resumes in, are counted (countBacklog); that scan
	// also finds where the segment's last record is, for collect.
	first, resume := true, Cursor{}
	tail := tailFrom(len(s.segs), func(i int) string { return s.path(s.segs[i].name()) })
	for i := 0; i < len(s.segs); i++ {
		sg := s.segs[i]
		newest := i >= tail
		if sg.seq < c.Seg {
			continue
		}
		if !(newest || first || sg.seq == resume.Seg) {
			sg.lazy = true
			s.st.Counting++
			continue
		}
		err := s.loadSeg(sg, newest)
		if err == nil && sg.seq == c.Seg && delivered != unknownDelivered && sg.metaCount {
			// Counted when the cursor file was written: no need to read the segment. (A
			// segment without meta was just counted by reading it, which leaves damaged
			// records out: the messages before the cursor are counted from that reading.)
			sg.delivered = min(delivered, sg.meta.messages)
			if c.Index == 0 && c.Offset == 0 {
				sg.delivered = 0
			}
		} else if err == nil && sg.seq == c.Seg {
			err = s.deliveredBefore(sg, c)
		} else if err == nil && sg.seq == resume.Seg {
			err = s.deliveredBefore(sg, resume)
		}
		if err != nil {
			s.setAside(sg, err)
			s.segs = slices.Delete(s.segs, i, i+1)
			i--
			continue
		}
		s.st.DiskBytes += sg.size
		if first {
			first = false
			if r := sg.meta.resume; r.Seg > sg.seq && sg.seq == c.Seg {
				resume = r
			} else if r.Seg > sg.seq {
				resume = Cursor{Seg: r.Seg} // loaded, nothing counted
			}
		}
	}
	s.lastScan = segScan{}
	// Segments wholly before the cursor were consumed; their deletion had not reached the disk.
	if err := s.collect(); err != nil {
		return err
	}
	if err := s.finishFront(); err != nil {
		return err
	}
	for _, sg := range s.segs {
		sg.deliveredOpen = sg.delivered
	}
	s.resetReader()
	if err := s.countBacklog(); err != nil {
		return err
	}
	if cerr != nil || s.acked.Seg == 0 {
		// No cursor file (a new spool, or one whose first checkpoint never came), a damaged
		// one, or one naming no segment (what Close wrote on an empty spool before this
		// rule): one is written now, naming where reading starts (or where the first
		// segment will begin), so that a front segment written later lies behind the
		// cursor file until its own checkpoint, as Front's rule needs. Without it, a kill
		// before that checkpoint left a spool Open read from its first segment, the front
		// segment, and delivered its messages twice (again from the copies written while
		// they waited in Out). Best effort: a full disk must not make Open fail (without
		// the file, such a kill may repeat, never lose).
		if s.acked.Seg == 0 {
			if len(s.segs) > 0 {
				s.acked = Cursor{Seg: s.segs[0].seq}
			} else {
				s.acked = Cursor{Seg: s.nextSeq()}
			}
		}
		_ = s.checkpoint()
	}
	s.countInBackground()
	return nil
}

// pastLast decides a cursor c, from a cursor file of the given version, that lies past the
// last segment present, last (Open and spoolinspect's plan both use it). only is that
// segment's number if it is the only one (else 0), meta its meta file, translate what turns
// a version 1 meta's resume entry index into a byte offset. fine says it is no damage (see
// nextStart, loneFront); at is then where reading starts.
func pastLast(c Cursor, version int, last, only uint64, meta []byte, translate func(Cursor) Cursor) (at Cursor, fine bool) {
	if nextStart(c, version, last) {
		return c, true
	}
	if only == 0 {
		return c, false
	}
	m, ok := decodeMeta(meta)
	if ok && m.resumeIndex {
		m.resume, m.resumeIndex = translate(m.resume), false
	}
	read, fine := loneFront(c, version, only, m, ok)
	if fine && read {
		c = Cursor{Seg: only}
	}
	return c, fine
}

// loneFront decides a cursor c, from a cursor file of the given version, that lies past
// the only segment present, front segment seq (m its meta, ok whether that was valid, its
// resume cursor translated into a byte offset). fine says it is no damage:
//   - c is exactly the resume cursor: what the reader writes when it has read the front
//     segment; a kill after that checkpoint and before the front segment was deleted
//     leaves it. The front segment is consumed (read false).
//   - c lies before the resume cursor: an ordered shutdown was killed after writing the
//     front segment and before its checkpoint, the cursor file older than it (the
//     messages taken back from the spool are in the segments that cursor names, kept
//     until that checkpoint: see KeepConsumed; those gone were consumed). The front
//     segment holds only messages that were in memory: it is read (read true), which
//     delivers them, none twice.
//
// Nothing else writes such a cursor while the front segment holds messages that reached
// the disk. Any other cursor past it (further past the resume cursor, an older version) is
// damage.
func loneFront(c Cursor, version int, seq uint64, m segMeta, ok bool) (read, fine bool) {
	if !ok || version < 3 || m.resume.Seg <= seq {
		return false, false
	}
	switch {
	case c == m.resume:
		return false, true
	case c.before(m.resume):
		return true, true
	}
	return false, false
}

// readMeta returns the first bytes of sg's meta file, nil if there is none.
func (s *Spool) readMeta(sg *seg) []byte {
	b, _ := readHead(s.path(sg.name(), metaName), metaSize+1)
	return b
}

// nextStart reports whether a cursor file of the given version names the very start of
// the segment numbered right after last, the last segment present. That is what the
// reader writes when it has finished last; a kill after that checkpoint and before last
// was deleted leaves it, and then every segment is consumed. Any other cursor past the
// last segment (further past it, or inside a segment) is damage: a cursor file from
// elsewhere, or segments lost.
func nextStart(c Cursor, version int, last uint64) bool {
	return version >= 3 && c.Index == 0 && c.Offset == 0 && c.Seg == last+1
}

// lazyMeta is a background reading of one segment's counts.
type lazyMeta struct {
	sg   *seg
	meta segMeta
	size int64
	ok   bool // false: no valid meta file; the owner scans the segment when it needs it
}

// countInBackground reads the meta files of the segments Open left uncounted (with
// DeferCounting, once StartCounting lets it begin). The results are applied by the owning
// goroutine in pump.
func (s *Spool) countInBackground() {
	var lazy []*seg
	for _, sg := range s.segs {
		if sg.lazy {
			lazy = append(lazy, sg)
		}
	}
	if len(lazy) == 0 {
		return
	}
	s.counted = make(chan lazyMeta, len(lazy))
	done := make(chan struct{})
	s.countDone = done
	begin := make(chan struct{})
	s.countGo = begin
	if !s.opts.DeferCounting {
		s.StartCounting()
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer close(done)
		<-begin
		for _, sg := range lazy {
			r := lazyMeta{sg: sg}
			if fi, err := os.Stat(s.path(sg.name(), walFile)); err == nil {
				r.size = fi.Size()
				if b, err := readHead(s.path(sg.name(), metaName), metaSize+1); err == nil {
					r.meta, r.ok = decodeMeta(b)
				}
			}
			s.counted <- r
		}
	}()
}

// StartCounting lets the background counting of the segments Open left uncounted begin
// (see Counted), with DeferCounting: the owner calls it once the first record is read.
// Stats and Close call it too. Only the spool's owner may call it (as every method but
// Counted's channel), any number of times.
func (s *Spool) StartCounting() {
	if s.countGo != nil {
		close(s.countGo)
		s.countGo = nil
	}
}

// pump applies the background counts that have arrived.
func (s *Spool) pump() {
	for s.st.Counting > 0 {
		select {
		case r := <-s.counted:
			if !r.sg.lazy {
				continue // loaded on demand meanwhile, or gone
			}
			if !r.ok || r.size > s.opts.maxSegmentFile() {
				s.ensureMeta(r.sg) // scanned, or set aside as too large
				continue
			}
			r.sg.lazy = false
			s.st.Counting--
			r.sg.meta, r.sg.size, r.sg.metaCount = r.meta, r.size, true
			s.fixResume(r.sg)
			s.st.DiskBytes += r.size
			s.st.Undelivered += int64(r.meta.messages)
			s.st.Late += int64(r.meta.messages)
		default:
			return
		}
	}
}

// ensureMeta loads a segment's counts now if Open left them for the background. A segment
// that cannot be loaded is set aside and dropped; false says so.
func (s *Spool) ensureMeta(sg *seg) bool {
	if !sg.lazy {
		return true
	}
	sg.lazy = false
	s.st.Counting--
	if err := s.loadSeg(sg, false); err != nil {
		sg.size, sg.meta = 0, segMeta{} // never counted: nothing to subtract
		if s.opened {
			s.missing = append(s.missing, Missing{Seg: sg.seq}) // nothing of it was counted
		}
		s.setAside(sg, err)
		s.dropSeg(sg)
		if s.rseg == sg {
			s.nextSeg(sg.seq)
		}
		return false
	}
	s.st.DiskBytes += sg.size
	s.st.Undelivered += int64(sg.meta.messages)
	s.st.Late += int64(sg.meta.messages)
	return true
}

// formatError is an error that matches ErrVersion and says what was found instead of a
// spool of this format version.
type formatError struct{ msg string }

func (e *formatError) Error() string        { return e.msg }
func (e *formatError) Is(target error) bool { return target == ErrVersion }

// formatMismatch reports a FORMAT file that does not hold this version's format line.
// where prefixes the message ("" or "DIR: ").
func formatMismatch(where string, b []byte) error {
	got := strings.TrimSpace(string(b))
	if strings.HasPrefix(got, "pelichan-spool ") {
		return &formatError{fmt.Sprintf("spool: %sa spool of format %q, this build reads %q", where, got, strings.TrimSpace(formatLine))}
	}
	return &formatError{fmt.Sprintf("spool: %snot a spool: its %s file holds %q, not a spool format line such as %q", where, formatName, got, strings.TrimSpace(formatLine))}
}

// notASpool reports a directory with no FORMAT file that holds other files (names).
// where prefixes the message ("" or "DIR: ").
func notASpool(where string, names []string) error {
	if len(names) == 0 {
		return &formatError{fmt.Sprintf("spool: %snot a spool: an empty directory (no %s file)", where, formatName)}
	}
	slices.Sort(names)
	list := make([]string, 0, 5)
	for _, n := range names[:min(len(names), 4)] {
		list = append(list, strconv.Quote(n))
	}
	if len(names) > 4 {
		list = append(list, fmt.Sprintf("and %d more", len(names)-4))
	}
	return &formatError{fmt.Sprintf("spool: %snot a spool: no %s file, and the directory holds other files (%s); use an empty or new directory",
		where, formatName, strings.Join(list, ", "))}
}

// checkFormat makes sure dir is a spool of this version, writing FORMAT into a new one
// when create is set.
func checkFormat(dir string, names []string, create, sync bool) error {
	b, err := readHead(filepath.Join(dir, formatName), 256)
	if err == nil {
		if string(b) != formatLine {
			return formatMismatch("", b)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	var foreign []string
	for _, n := range names {
		if n != lockName && n != formatName+".tmp" { // leftovers of an interrupted creation
			foreign = append(foreign, n)
		}
	}
	if len(foreign) > 0 {
		return notASpool("", foreign)
	}
	if !create {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(dir, formatName), []byte(formatLine), sync); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func isSegName(name string) bool {
	if len(name) != 20 {
		return false
	}
	for _, r := range name {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// tailFrom returns the index of the first of n segments (dir(i) the directory of the
// i-th) that a crash may have left being written, so whose tail Open repairs: the newest,
// and the one before it when the newest holds an empty WAL file alone (a spare made ahead,
// see spare, perhaps never written to) and it has no meta file (not sealed). The empty one
// stays (Open does not remove it): records written to it may have been lost with their
// fsync (a power loss), and its number, which their IDs carry, must never be used again.
func tailFrom(n int, dir func(i int) string) int {
	if n == 0 {
		return 0
	}
	if n > 1 && emptyWAL(dir(n-1)) {
		if _, err := os.Stat(filepath.Join(dir(n-2), metaName)); errors.Is(err, fs.ErrNotExist) {
			return n - 2
		}
	}
	return n - 1
}

// emptyDir reports whether dir is a directory with nothing in it (a segment whose
// creation was cut short: the directory is made before its file).
func emptyDir(dir string) bool {
	sub, err := readDirNames(dir)
	return err == nil && len(sub) == 0
}

// emptyWAL reports whether the segment directory dir holds an empty WAL file alone.
func emptyWAL(dir string) bool {
	names, err := readDirNames(dir)
	if err != nil || len(names) != 1 || names[0] != walFile {
		return false
	}
	fi, err := os.Stat(filepath.Join(dir, walFile))
	return err == nil && fi.Size() == 0
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// loadSeg fills sg's counts from its meta file, or by scanning its WAL file when the
// meta is missing (a crash before sealing); the newest segment's torn tail is repaired
// then.
func (s *Spool) loadSeg(sg *seg, newest bool) error {
	file := s.path(sg.name(), walFile)
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	sg.size = fi.Size()
	if limit := s.opts.maxSegmentFile(); sg.size > limit {
		// Neither Open nor the reader would hold it: damage, whatever its meta says.
		sg.size = 0
		return &errFileTooLarge{fi.Size(), limit}
	}
	var sealed segMeta
	haveMeta := false
	if b, err := readHead(s.path(sg.name(), metaName), metaSize+1); err == nil {
		sealed, haveMeta = decodeMeta(b)
	}
	if haveMeta {
		// Sealed: fsynced before its meta was written, and never appended to since, so
		// even the newest has no torn tail. Damage in it is found, and reported, when it is
		// read.
		sg.meta, sg.metaCount = sealed, true
		s.fixResume(sg)
		return nil
	}
	buf, err := readSegFile(file, s.opts.maxSegmentFile())
	if err != nil {
		return err
	}
	ents, bad, good := scanFile(buf)
	sg.meta = segMeta{}
	for _, e := range ents {
		sg.meta.add(e.hdr)
	}
	sg.setEnd(ents, bad)
	sg.meta.records = uint64(len(ents) + len(bad))
	if len(bad) > 0 {
		sg.damaged = true
	}
	if newest && tornTail(buf, bad, good) {
		// A torn tail: cut it back, keeping the cut bytes as evidence. The torn entry is
		// not counted, so cutTail reports it as entry len(ents)+1.
		sg.meta.records = uint64(len(ents))
		if err := s.cutTail(sg, file, buf, good); err != nil {
			// No room for the evidence (a full disk): leave the file as it is. The records
			// before the tail are still read; the segment is kept as .bad once consumed.
			sg.meta.records++
			s.report(&CorruptionError{Segment: sg.name(), Index: sg.meta.records, Offset: good,
				Length: int64(len(buf)) - good, Err: fmt.Errorf("%w; not cut: %w", errTornTail, err)})
			return nil
		}
		sg.damaged = false
		sg.setEnd(ents, nil)
		bad = nil // the file now ends where they begin
	} else {
		for _, d := range bad {
			s.report(&CorruptionError{Segment: sg.name(), Index: d.index, Offset: d.offset, Length: d.length, Err: d.err})
		}
	}
	if !s.opened {
		s.lastScan = segScan{seq: sg.seq, ents: ents, bad: bad, ok: true} // for deliveredBefore
	}
	sg.meta.replaces = sealed.replaces
	if haveMeta && sg.meta.records < sealed.records {
		// Sealed segments were fsynced before their meta was written: no crash takes
		// whole records off them.
		sg.damaged, sg.short = true, true
		s.report(&CorruptionError{Segment: sg.name(), Index: sg.meta.records + 1, Offset: sg.size,
			Err: fmt.Errorf("%w: %d of the %d entries recorded at sealing are missing", ErrCorrupt, sealed.records-sg.meta.records, sealed.records)})
	}
	return nil
}

func (s *Spool) cutTail(sg *seg, file string, buf []byte, good int64) error {
	tail := buf[good:]
	if len(tail) > maxBrokenBytes {
		tail = tail[:maxBrokenBytes]
	}
	evidence := s.path(fmt.Sprintf("%s.%d.broken", sg.name(), time.Now().UnixNano()))
	if err := writeFileAtomic(evidence, tail, !s.opts.NoSync); err != nil {
		return fmt.Errorf("spool: keep torn tail of %s: %w", file, err)
	}
	s.pruneBroken()
	if err := os.Truncate(file, good); err != nil {
		return fmt.Errorf("spool: cut torn tail of %s: %w", file, err)
	}
	sg.size = good
	s.opts.OnCorrupt(&CorruptionError{Segment: sg.name(), Index: sg.meta.records + 1, Offset: good,
		Length: int64(len(buf)) - good, Err: fmt.Errorf("%w; cut, kept in %s", errTornTail, filepath.Base(evidence))})
	s.st.Corrupt++
	return nil
}

// pruneBroken keeps only the newest maxBroken evidence files.
func (s *Spool) pruneBroken() {
	names, err := readDirNames(s.dir)
	if err != nil {
		return
	}
	var broken []string
	for _, n := range names {
		if strings.HasSuffix(n, ".broken") {
			broken = append(broken, n)
		}
	}
	if len(broken) <= maxBroken {
		return
	}
	// Names sort by segment, then by time: drop the oldest.
	sort.Strings(broken)
	for _, n := range broken[:len(broken)-maxBroken] {
		os.Remove(s.path(n))
	}
}

// setAside renames a segment that cannot be read at all to NAME.bad and reports it.
func (s *Spool) setAside(sg *seg, cause error) {
	from := s.path(sg.name())
	to := s.badPath(sg)
	err := os.Rename(from, to)
	if err == nil && !s.opts.NoSync {
		err = syncDir(s.dir)
	}
	s.st.SetAside++
	if err != nil {
		cause = fmt.Errorf("%v; set aside failed: %w", cause, err)
	}
	s.report(&CorruptionError{Segment: sg.name(), Err: fmt.Errorf("%w: segment set aside as %s: %w", ErrCorrupt, filepath.Base(to), cause)})
}

// countBacklog sets Undelivered at open from the segments' counts, less the messages
// counted delivered before the cursor (see deliveredBefore, called by load).
func (s *Spool) countBacklog() error {
	var n int64
	for _, sg := range s.segs {
		n += int64(sg.meta.messages) - int64(sg.delivered)
	}
	s.st.Undelivered = n
	return nil
}

// deliveredBefore counts the messages of sg before cursor c as delivered, and records
// where sg's last valid record is.
func (s *Spool) deliveredBefore(sg *seg, c Cursor) error {
	if c.Index == 0 && c.Offset == 0 {
		return nil
	}
	ents, bad := s.lastScan.ents, s.lastScan.bad
	if !s.lastScan.ok || s.lastScan.seq != sg.seq {
		// Counted from its meta file: read now.
		buf, err := readSegFile(s.path(sg.name(), walFile), s.opts.maxSegmentFile())
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		ents, bad, _ = scanFile(buf)
	}
	for _, e := range ents {
		switch off := uint64(e.offset); {
		case off < c.Index:
			sg.delivered += uint64(e.hdr.Count)
		case off == c.Index:
			sg.delivered += uint64(min(int(c.Offset), e.hdr.Count))
		}
	}
	sg.setEnd(ents, bad)
	return nil
}

// indexToOffset translates c, a position of an older format naming a record by its entry
// index (cursor file version 1 or 2, meta version 1), by scanning its segment. A
// segment that cannot be read gives its start (it is set aside when loaded).
func (s *Spool) indexToOffset(c Cursor) Cursor {
	return indexToOffsetIn(s.dir, c, s.opts.maxSegmentFile())
}

// indexToOffsetIn is indexToOffset for the spool in dir, reading segment files of at
// most limit bytes.
func indexToOffsetIn(dir string, c Cursor, limit int64) Cursor {
	segDir := filepath.Join(dir, segName(c.Seg))
	buf, err := readSegFile(filepath.Join(segDir, walFile), limit)
	if err != nil {
		return Cursor{Seg: c.Seg}
	}
	var sealed uint64
	if b, err := readHead(filepath.Join(segDir, metaName), metaSize+1); err == nil {
		if m, ok := decodeMeta(b); ok {
			sealed = m.records
		}
	}
	return indexToOffset(buf, c, sealed)
}

// fixResume translates the resume cursor of a meta file of version 1 (an entry index).
func (s *Spool) fixResume(sg *seg) {
	if sg.meta.resumeIndex {
		sg.meta.resume = s.indexToOffset(sg.meta.resume)
		sg.meta.resumeIndex = false
	}
}
