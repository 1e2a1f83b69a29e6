package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pelichan/pelichan/segment"
	"github.com/tidwall/wal"
)

const (
	lockName   = "LOCK"
	formatName = "FORMAT"
	cursorName = "cursor"
	metaName   = "meta"
	// walFile is the one file tidwall/wal keeps in a segment directory: its first index.
	walFile = "00000000000000000001"
	// formatLine is the content of FORMAT. Changing it makes older spools unreadable.
	formatLine = "pelichan-spool 1\n"
	// firstSeq numbers the first segment of a new spool, leaving room below it should a
	// later version put segments in front of the backlog.
	firstSeq = 1 << 32
	// DefaultSegmentSize is where a segment is sealed and a new one started.
	DefaultSegmentSize = 2 << 20
	maxBroken          = 8       // *.broken evidence files kept
	maxBrokenBytes     = 1 << 20 // bytes kept of one cut tail
)

// Options configure a Spool. The zero value is valid.
type Options struct {
	// SegmentSize is the file size at which the segment being written is sealed and a new
	// one begun. Default DefaultSegmentSize.
	SegmentSize int64
	// NoSync skips every fsync (files, cursor, directory). Data then reaches the disk
	// when the OS writes it back.
	NoSync bool
	// OnCorrupt receives every *CorruptionError found while opening and reading.
	OnCorrupt func(error)
}

func (o Options) withDefaults() Options {
	if o.SegmentSize <= 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.OnCorrupt == nil {
		o.OnCorrupt = func(error) {}
	}
	return o
}

// seg is one segment directory.
type seg struct {
	seq     uint64
	meta    segMeta // counts; for the active segment, what has been written so far
	size    int64   // bytes of the WAL file
	sealed  bool
	damaged bool // damage was found: set aside as .bad, not deleted, when consumed
	// sealedCount is the number of entries recorded in the segment's meta at sealing, 0 when
	// it has no valid meta (a crash before sealing): the only way to tell how many entries
	// a damaged stretch swallowed.
	sealedCount uint64
	// delivered counts this segment's messages acknowledged so far (from its meta count).
	delivered uint64
	readDone  bool          // the reader read the whole (sealed) segment
	lazy      bool          // counts not loaded yet (see countInBackground)
	sealDone  chan struct{} // closed when a background seal finished; nil if none ran
}

// readRec is a record returned by Next and not yet acknowledged.
type readRec struct {
	sg    *seg
	index uint64
	count uint32
	skip  uint32 // messages counted as delivered already
}

func (sg *seg) name() string { return fmt.Sprintf("%020d", sg.seq) }

// Record is one record returned by Next.
type Record struct {
	Pos  Cursor // Pos.Offset: messages of this record already delivered; skip them
	Data []byte // valid until the next call on the Spool
	segment.Header
}

// Stats describe the spool's disk state.
type Stats struct {
	Segments     int
	Undelivered  int64 // messages stored and not yet acknowledged (of the counted segments)
	Counting     int   // segments whose counts are still being read after Open
	DiskBytes    int64 // bytes of segment files (kept up to date as they change)
	BytesWritten int64 // record bytes appended since Open
	BytesRead    int64 // record bytes read since Open
	RawWritten   int64 // uncompressed payload bytes appended since Open
	Corrupt      int64 // damaged records or stretches skipped since Open
	SetAside     int64 // segments renamed to .bad since Open
	Oldest       int64 // unix nanos of the oldest stored batch, 0 if none
}

// Spool is a directory of segments: one writer appends records at the tail, one reader
// reads them from the cursor on. A Spool is not safe for concurrent use: one goroutine
// owns it.
type Spool struct {
	dir  string
	opts Options
	lock *os.File

	segs   []*seg // by seq; the last one is the active segment when active != nil
	active *seg
	wlog   *wal.Log

	acked Cursor // every message before it has been delivered
	// reader
	rseg  *seg
	rnext uint64  // next entry index to read in rseg
	rskip uint32  // messages to skip in the first record read
	rents []entry // entries of rseg when it is sealed
	rpos  int     // next element of rents
	rbuf  []byte
	unack []readRec // records returned by Next, in order, not yet acknowledged

	st     Stats
	closed bool

	bg        sync.WaitGroup        // background seals and counting
	counted   chan lazyMeta         // background counts for pump
	countDone chan struct{}         // closed when the background counting has sent everything
	bgErr     atomic.Pointer[error] // an error from a background seal
}

// Open opens or creates the spool in dir, taking its lock. It removes leftovers of
// interrupted operations, cuts a torn tail of the newest segment back to its last whole
// record (keeping the cut bytes as evidence), and positions the reader at the cursor.
func Open(dir string, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("spool: %s: not a directory", dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Refuse a foreign directory before creating anything in it (LOCK included).
	names, err := readDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := checkFormat(dir, names, false, false); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Spool{dir: dir, opts: opts, lock: lock}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

func (s *Spool) path(name ...string) string {
	return filepath.Join(append([]string{s.dir}, name...)...)
}

func (s *Spool) report(err error) {
	s.st.Corrupt++
	s.opts.OnCorrupt(err)
}

// removeSeg deletes a segment directory. It is renamed NAME.del.tmp first, so that a
// crash in the middle of the deletion leaves either the whole segment or a leftover that
// Open removes, never a segment directory missing some of its files (which Open would
// have to take for damage).
func (s *Spool) removeSeg(name string) error {
	tmp := s.path(name + ".del.tmp")
	if err := os.Rename(s.path(name), tmp); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(tmp)
}

func (s *Spool) load() error {
	names, err := readDirNames(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := checkFormat(s.dir, names, true, !s.opts.NoSync); err != nil {
		return err
	}
	for _, name := range names {
		switch {
		case strings.HasSuffix(name, ".tmp"):
			// An interrupted atomic write: the old file (if any) is still in place.
			if err := os.RemoveAll(s.path(name)); err != nil {
				return fmt.Errorf("spool: remove leftover: %w", err)
			}
		case isSegName(name):
			if sub, err := readDirNames(s.path(name)); err == nil && len(sub) == 0 {
				// A segment whose creation was cut short (tidwall/wal makes the directory
				// before its file): it never held a record.
				if err := os.Remove(s.path(name)); err != nil {
					return fmt.Errorf("spool: remove leftover: %w", err)
				}
				continue
			}
			seq, _ := strconv.ParseUint(name, 10, 64)
			s.segs = append(s.segs, &seg{seq: seq, sealed: true})
		}
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i].seq < s.segs[j].seq })

	c, cerr := s.readCursor()
	switch {
	case cerr != nil:
		// A missing or damaged cursor: read from the first segment. Duplicates, never loss.
		if !errors.Is(cerr, fs.ErrNotExist) {
			s.report(fmt.Errorf("spool: %s: %w; reading from the first segment", s.path(cursorName), cerr))
		}
		c = Cursor{}
		if len(s.segs) > 0 {
			c = Cursor{Seg: s.segs[0].seq, Index: 1}
		}
	case len(s.segs) > 0 && c.Seg > s.segs[len(s.segs)-1].seq:
		s.report(fmt.Errorf("%w: spool: cursor points to segment %020d past the last one; reading from the first segment", ErrCorrupt, c.Seg))
		c = Cursor{Seg: s.segs[0].seq, Index: 1}
	}
	if c.Index == 0 {
		c.Index = 1
	}
	s.acked = c
	// Load what reading needs now: the segment the cursor is in (or the first after it), the
	// one a front segment resumes in, and the newest (its tail may need repair). The counts
	// of the others are read in the background (see pump), so that Open costs the same
	// whatever the backlog. Segments before the cursor are consumed and need no counts.
	first, resume := true, uint64(0)
	for i := 0; i < len(s.segs); i++ {
		sg := s.segs[i]
		newest := i == len(s.segs)-1
		if sg.seq < c.Seg {
			continue
		}
		if !(newest || first || sg.seq == resume) {
			sg.lazy = true
			s.st.Counting++
			continue
		}
		if err := s.loadSeg(sg, newest); err != nil {
			s.setAside(sg, err)
			s.segs = slices.Delete(s.segs, i, i+1)
			i--
			continue
		}
		s.st.DiskBytes += sg.size
		if first {
			first = false
			if r := sg.meta.resume; r.Seg > sg.seq {
				resume = r.Seg
			}
		}
	}
	// Segments wholly before the cursor were consumed; their deletion had not reached the disk.
	if err := s.collect(); err != nil {
		return err
	}
	if err := s.finishFront(); err != nil {
		return err
	}
	s.resetReader()
	if err := s.countBacklog(); err != nil {
		return err
	}
	s.countInBackground()
	return nil
}

// lazyMeta is a background reading of one segment's counts.
type lazyMeta struct {
	sg   *seg
	meta segMeta
	size int64
	ok   bool // false: no valid meta file; the owner scans the segment when it needs it
}

// countInBackground reads the meta files of the segments Open left uncounted. The results
// are applied by the owning goroutine in pump.
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
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer close(done)
		for _, sg := range lazy {
			r := lazyMeta{sg: sg}
			if fi, err := os.Stat(s.path(sg.name(), walFile)); err == nil {
				r.size = fi.Size()
				if b, err := os.ReadFile(s.path(sg.name(), metaName)); err == nil {
					r.meta, r.ok = decodeMeta(b)
				}
			}
			s.counted <- r
		}
	}()
}

// pump applies the background counts that have arrived.
func (s *Spool) pump() {
	for s.st.Counting > 0 {
		select {
		case r := <-s.counted:
			if !r.sg.lazy {
				continue // loaded on demand meanwhile, or gone
			}
			if !r.ok {
				s.ensureMeta(r.sg)
				continue
			}
			r.sg.lazy = false
			s.st.Counting--
			r.sg.meta, r.sg.size = r.meta, r.size
			s.st.DiskBytes += r.size
			s.st.Undelivered += int64(r.meta.messages)
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
		s.setAside(sg, err)
		s.dropSeg(sg)
		if s.rseg == sg {
			s.nextSeg(sg.seq)
		}
		return false
	}
	s.st.DiskBytes += sg.size
	s.st.Undelivered += int64(sg.meta.messages)
	return true
}

// finishFront completes a Front interrupted after the cursor moved to the front segment:
// the segment it replaces is deleted, so its rest is not delivered twice.
func (s *Spool) finishFront() error {
	if len(s.segs) == 0 || s.segs[0].seq != s.acked.Seg || s.segs[0].meta.replaces == 0 {
		return nil
	}
	old := s.segs[0].meta.replaces
	for _, sg := range s.segs[1:] {
		if sg.seq == old {
			s.dropSeg(sg)
			if err := s.removeSeg(sg.name()); err != nil {
				return fmt.Errorf("spool: remove segment %s replaced by %s: %w", sg.name(), s.segs[0].name(), err)
			}
			break // dropSeg changed s.segs under this loop
		}
	}
	return nil
}

// checkFormat makes sure dir is a spool of this version, writing FORMAT into a new one
// when create is set.
func checkFormat(dir string, names []string, create, sync bool) error {
	b, err := os.ReadFile(filepath.Join(dir, formatName))
	if err == nil {
		if string(b) != formatLine {
			return fmt.Errorf("%w: %s holds %q", ErrVersion, filepath.Join(dir, formatName), strings.TrimSpace(string(b)))
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	for _, n := range names {
		if n != lockName && n != formatName+".tmp" { // leftovers of an interrupted creation
			return fmt.Errorf("%w: %s has no %s file but is not empty (found %q)", ErrVersion, dir, formatName, n)
		}
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

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

func (s *Spool) readCursor() (Cursor, error) {
	b, err := os.ReadFile(s.path(cursorName))
	if err != nil {
		return Cursor{}, err
	}
	return decodeCursor(b)
}

// loadSeg fills sg's counts from its meta file, or by scanning its WAL file when the
// meta is missing (a crash before sealing) or the segment is the newest, whose tail is
// repaired here.
func (s *Spool) loadSeg(sg *seg, newest bool) error {
	file := s.path(sg.name(), walFile)
	fi, err := os.Stat(file)
	if err != nil {
		return err
	}
	sg.size = fi.Size()
	var sealed segMeta
	haveMeta := false
	if b, err := os.ReadFile(s.path(sg.name(), metaName)); err == nil {
		sealed, haveMeta = decodeMeta(b)
	}
	if haveMeta {
		sg.sealedCount = sealed.records
	}
	if haveMeta && !newest {
		sg.meta = sealed
		return nil
	}
	buf, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	ents, bad, good := scanFile(buf)
	sg.meta = segMeta{}
	for _, e := range ents {
		sg.meta.add(e.hdr)
	}
	sg.meta.records = uint64(len(ents) + len(bad))
	if len(bad) > 0 {
		sg.damaged = true
	}
	if newest && good < int64(len(buf)) && len(bad) == 1 && bad[0].offset == good && bad[0].offset+bad[0].length == int64(len(buf)) {
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
	} else {
		for _, d := range bad {
			s.report(&CorruptionError{Segment: sg.name(), Index: d.index, Offset: d.offset, Length: d.length, Err: d.err})
		}
	}
	sg.meta.replaces = sealed.replaces
	if haveMeta && sg.meta.records < sealed.records {
		// Sealed segments were fsynced before their meta was written: no crash takes
		// whole records off them.
		sg.damaged = true
		s.report(&CorruptionError{Segment: sg.name(), Index: sg.meta.records + 1, Offset: sg.size,
			Err: fmt.Errorf("%w: %d of the %d entries recorded at sealing are missing", ErrCorrupt, sealed.records-sg.meta.records, sealed.records)})
	}
	return nil
}

func (m *segMeta) add(h segment.Header) {
	if m.messages == 0 {
		m.first = h.Time
	}
	m.records++
	m.messages += uint64(h.Count)
	m.raw += uint64(h.RawLen)
	m.last = h.Time
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

// Append adds one record (as built by segment.Writer) at the tail. After an error the
// segment being written is sealed at its last whole record and the next Append starts a
// new one, so a failed write never leaves a log with a shifted index in use.
func (s *Spool) Append(rec []byte) error {
	if s.closed {
		return ErrClosed
	}
	h, err := segment.ParseHeader(rec)
	if err != nil {
		return fmt.Errorf("spool: append: %w", err)
	}
	if err := s.sealErr(); err != nil {
		return err
	}
	if s.active == nil {
		if err := s.startSegment(); err != nil {
			return err
		}
	}
	sg := s.active
	if err := s.wlog.Write(sg.meta.records+1, rec); err != nil {
		s.abandon()
		return fmt.Errorf("spool: write segment %s: %w", sg.name(), err)
	}
	sg.meta.add(h)
	s.st.Undelivered += int64(h.Count)
	n := int64(uvarintLen(uint64(len(rec))) + len(rec))
	sg.size += n
	s.st.DiskBytes += n
	s.st.BytesWritten += int64(len(rec))
	s.st.RawWritten += int64(h.RawLen)
	if sg.size >= s.opts.SegmentSize {
		return s.seal()
	}
	return nil
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

func (s *Spool) startSegment() error {
	seq := uint64(firstSeq)
	if n := len(s.segs); n > 0 {
		seq = s.segs[n-1].seq + 1
	}
	if s.acked.Seg >= seq {
		seq = s.acked.Seg + 1
	}
	for _, sg := range s.segs {
		// Never reuse the number of a segment a front segment replaced: Open would delete it.
		if sg.meta.replaces >= seq {
			seq = sg.meta.replaces + 1
		}
	}
	sg := &seg{seq: seq}
	l, err := wal.Open(s.path(sg.name()), s.walOptions())
	if err != nil {
		s.removeSeg(sg.name())
		return fmt.Errorf("spool: create segment %s: %w", sg.name(), err)
	}
	if !s.opts.NoSync {
		if err := syncDir(s.dir); err != nil {
			l.Close()
			s.removeSeg(sg.name())
			return fmt.Errorf("spool: create segment %s: %w", sg.name(), err)
		}
	}
	s.wlog, s.active = l, sg
	s.segs = append(s.segs, sg)
	if s.rseg == nil {
		// The reader has read every older segment: this one is where it goes on.
		s.rseg, s.rnext, s.rskip = sg, 1, 0
	}
	return nil
}

// Sync makes everything appended so far durable.
func (s *Spool) Sync() error {
	if s.wlog == nil {
		return nil
	}
	if err := s.wlog.Sync(); err != nil {
		return fmt.Errorf("spool: sync segment %s: %w", s.active.name(), err)
	}
	return nil
}

// seal closes the active segment and records its counts in its meta file.
//
// tidwall/wal's Close always fsyncs, which can take long on a busy disk, so closing and
// writing the meta file (after the fsync: Open relies on a meta never being newer than its
// data) happen in the background. Nothing touches a sealed segment's wal.Log again: the
// reader reads its file, and deleting it waits for the seal (see collect). Close waits for
// every seal; an error from one is returned by the next Append or by Close.
func (s *Spool) seal() error {
	sg, l := s.active, s.wlog
	s.wlog, s.active = nil, nil
	sg.sealed = true
	done := make(chan struct{})
	sg.sealDone = done
	meta, metaPath := encodeMeta(sg.meta), s.path(sg.name(), metaName)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer close(done)
		if err := l.Close(); err != nil {
			err = fmt.Errorf("spool: seal segment %s: %w", sg.name(), err)
			s.bgErr.Store(&err)
			return
		}
		if err := writeFileAtomic(metaPath, meta, !s.opts.NoSync); err != nil {
			os.Remove(metaPath) // the counts can be rebuilt by scanning the segment
		}
	}()
	return s.collect()
}

// sealErr returns (once) an error from a background seal.
func (s *Spool) sealErr() error {
	if p := s.bgErr.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// abandon seals the active segment after a failed write: the tidwall Log is closed and
// never written again, and the file is cut back to the last record known to be whole.
func (s *Spool) abandon() {
	sg := s.active
	s.wlog.Close()
	s.wlog, s.active = nil, nil
	sg.sealed = true
	s.truncateAfterError(sg, nil)
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

func (s *Spool) dropSeg(sg *seg) {
	if sg.lazy { // never counted: its background count will be ignored
		sg.lazy = false
		s.st.Counting--
	}
	if i := slices.Index(s.segs, sg); i >= 0 {
		s.segs = slices.Delete(s.segs, i, i+1)
		s.st.DiskBytes -= sg.size
		s.st.Undelivered -= int64(sg.meta.messages - sg.delivered)
	}
}

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
	buf, err := os.ReadFile(s.path(sg.name(), walFile))
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

// Ack records that every message before c has been delivered. Segments wholly before c
// are deleted (or, if damage was found in them, set aside as evidence).
func (s *Spool) Ack(c Cursor) error {
	if s.closed {
		return ErrClosed
	}
	s.acked = c
	for len(s.unack) > 0 {
		r := &s.unack[0]
		if r.sg.seq > c.Seg || (r.sg.seq == c.Seg && r.index > c.Index) {
			break
		}
		done := r.count
		if r.sg.seq == c.Seg && r.index == c.Index {
			done = min(c.Offset, r.count) // a record partly delivered (at shutdown)
		}
		if done > r.skip {
			r.sg.delivered += uint64(done - r.skip)
			s.st.Undelivered -= int64(done - r.skip)
			r.skip = done
		}
		if done < r.count {
			break
		}
		s.unack = s.unack[1:]
	}
	return s.collect()
}

// collect deletes the sealed segments that the acknowledged cursor has passed.
func (s *Spool) collect() error {
	for len(s.segs) > 0 {
		sg := s.segs[0]
		if sg.seq >= s.acked.Seg && !s.ensureMeta(sg) {
			continue
		}
		done := sg.seq < s.acked.Seg ||
			(sg.seq == s.acked.Seg && sg.sealed && (s.pastEnd(sg) || s.readPast(sg)))
		if !done || !sg.sealed {
			return nil
		}
		if sg.seq == s.acked.Seg {
			// Moving past this segment: the cursor now means the start of the next one, or,
			// past a front segment, its resume cursor.
			s.acked = Cursor{Seg: sg.seq + 1, Index: 1}
			if r := sg.meta.resume; r.Seg > sg.seq {
				s.acked = r
			}
		}
		if sg.sealDone != nil {
			<-sg.sealDone // never delete a directory a seal is still writing to
		}
		var err error
		if sg.damaged {
			err = os.Rename(s.path(sg.name()), s.badPath(sg))
			s.st.SetAside++
		} else {
			err = s.removeSeg(sg.name())
		}
		if err != nil {
			return fmt.Errorf("spool: delete consumed segment %s: %w", sg.name(), err)
		}
		s.segs = s.segs[1:]
		s.st.DiskBytes -= sg.size
		if sg.meta.messages > sg.delivered {
			// Messages of damaged records, which can never be delivered.
			s.st.Undelivered -= int64(sg.meta.messages - sg.delivered)
		}
	}
	return nil
}

// pastEnd reports whether the acknowledged cursor lies past sg's last entry. When
// damage in sg may have swallowed entries that no count records, the indexes after it
// cannot be trusted: the reader decides, by reading.
func (s *Spool) pastEnd(sg *seg) bool {
	if sg.damaged && sg.sealedCount == 0 && !sg.readDone {
		return false
	}
	return s.acked.Index > max(sg.meta.records, sg.sealedCount)
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

// Checkpoint persists the acknowledged cursor (atomically; fsynced unless NoSync).
func (s *Spool) Checkpoint() error {
	if s.closed {
		return ErrClosed
	}
	if err := writeFileAtomic(s.path(cursorName), encodeCursor(s.acked), !s.opts.NoSync); err != nil {
		return fmt.Errorf("spool: checkpoint: %w", err)
	}
	return nil
}

// countBacklog sets Undelivered at open from the segments' counts. It reads the cursor's
// segment to count the records before the cursor.
func (s *Spool) countBacklog() error {
	var n int64
	for _, sg := range s.segs {
		n += int64(sg.meta.messages)
	}
	s.st.Undelivered = n
	if len(s.segs) == 0 || s.segs[0].seq != s.acked.Seg {
		return nil
	}
	if err := s.deliveredBefore(s.segs[0], s.acked); err != nil {
		return err
	}
	// Reading a front segment: the segment it resumes in was delivered up to its resume cursor.
	if r := s.segs[0].meta.resume; r.Seg > s.segs[0].seq {
		for _, sg := range s.segs[1:] {
			if sg.seq == r.Seg {
				return s.deliveredBefore(sg, r)
			}
		}
	}
	return nil
}

// deliveredBefore counts the messages of sg before cursor c as delivered.
func (s *Spool) deliveredBefore(sg *seg, c Cursor) error {
	if c.Index <= 1 && c.Offset == 0 {
		return nil
	}
	buf, err := os.ReadFile(s.path(sg.name(), walFile))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	ents, _, _ := scanFile(buf)
	for _, e := range ents {
		var d uint64
		if e.index < c.Index {
			d = uint64(e.hdr.Count)
		} else if e.index == c.Index {
			d = uint64(min(int(c.Offset), e.hdr.Count))
		}
		sg.delivered += d
		s.st.Undelivered -= int64(d)
	}
	return nil
}

// Cursor returns the acknowledged position.
func (s *Spool) Cursor() Cursor { return s.acked }

// Stats returns the spool's disk statistics.
//
// Right after Open with many segments, the counts of most are still being read in the
// background; Stats waits for them (once), so it is exact. Peek does not wait.
func (s *Spool) Stats() Stats {
	if s.st.Counting > 0 {
		<-s.countDone // everything has been sent
		s.pump()
		for _, sg := range slices.Clone(s.segs) {
			s.ensureMeta(sg) // none should be left; never wait for one
		}
	}
	return s.Peek()
}

// Counted returns a channel that is closed once the counts left to the background at Open
// have all been read (Peek is exact from then on, after one more call).
func (s *Spool) Counted() <-chan struct{} {
	if s.countDone == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.countDone
}

// Peek returns the spool's statistics without waiting for background counting:
// Counting says how many segments Undelivered and DiskBytes do not include yet.
func (s *Spool) Peek() Stats {
	s.pump()
	st := s.st
	st.Segments = len(s.segs)
	if len(s.segs) > 0 {
		st.Oldest = s.segs[0].meta.first
	}
	return st
}

// Empty reports whether every record written has been read.
func (s *Spool) Empty() bool {
	if s.rseg == nil {
		return true
	}
	if !s.rseg.sealed && s.rnext > s.rseg.meta.records {
		return true
	}
	return false
}

// Close seals the segment being written, persists the cursor and releases the lock.
// It syncs per the NoSync option.
func (s *Spool) Close() error {
	if s.closed {
		return nil
	}
	var errs []error
	if s.active != nil {
		if s.active.meta.records == 0 {
			s.wlog.Close()
			s.removeSeg(s.active.name())
			s.dropSeg(s.active)
			s.wlog, s.active = nil, nil
		} else {
			errs = append(errs, s.seal())
		}
	}
	s.bg.Wait()
	errs = append(errs, s.sealErr(), s.collect(), s.Checkpoint())
	s.closed = true
	s.rbuf, s.rents = nil, nil
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
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
	for _, r := range s.unack {
		if r.sg == sg {
			return false
		}
	}
	return true
}

func (s *Spool) drop(sg *seg) (int64, error) {
	n := int64(sg.meta.messages - sg.delivered)
	s.dropSeg(sg)
	if err := s.removeSeg(sg.name()); err != nil {
		return n, fmt.Errorf("spool: drop segment %s: %w", sg.name(), err)
	}
	return n, nil
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
func (s *Spool) Front(recs [][]byte) error {
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
	if base <= 1 {
		return fmt.Errorf("spool: front: no segment number left in front")
	}
	sg := &seg{seq: base - 1, sealed: true}
	sg.meta.resume = s.acked
	if sg.meta.resume.Seg == 0 {
		sg.meta.resume = Cursor{Seg: base, Index: 1}
	}
	var old *seg
	if len(s.segs) > 0 && s.segs[0].seq == s.acked.Seg && s.segs[0].meta.resume.Seg > s.segs[0].seq {
		old = s.segs[0]
		rest, err := s.restOf(old)
		if err != nil {
			return err
		}
		recs = append(recs, rest...)
		sg.meta.replaces, sg.meta.resume = old.seq, old.meta.resume
	}
	if err := s.writeSealed(sg, recs); err != nil {
		return err
	}
	s.segs = append([]*seg{sg}, s.segs...)
	s.st.DiskBytes += sg.size
	s.st.Undelivered += int64(sg.meta.messages)
	s.acked = Cursor{Seg: sg.seq, Index: 1}
	if err := s.Checkpoint(); err != nil {
		return err
	}
	if old != nil {
		s.dropSeg(old) // its undelivered rest is counted in the front segment now
		if err := s.removeSeg(old.name()); err != nil {
			return fmt.Errorf("spool: front: remove %s: %w", old.name(), err)
		}
	}
	s.resetReader()
	return nil
}

// restOf returns the undelivered records of sg, the cursor's (front) segment.
func (s *Spool) restOf(sg *seg) ([][]byte, error) {
	buf, err := os.ReadFile(s.path(sg.name(), walFile))
	if err != nil {
		return nil, fmt.Errorf("spool: front: %w", err)
	}
	ents, _, _ := scanFile(buf)
	var rest [][]byte
	for _, e := range ents {
		switch {
		case e.index > s.acked.Index || (e.index == s.acked.Index && s.acked.Offset == 0):
			rest = append(rest, e.data)
		case e.index == s.acked.Index && int(s.acked.Offset) < e.hdr.Count:
			r := segment.NewReader()
			b, err := r.Decode(e.data)
			if err != nil {
				r.Close()
				continue // reported when it was read
			}
			w := segment.NewWriter(e.hdr.RawLen)
			w.SetTime(e.hdr.Time)
			for i := int(s.acked.Offset); i < b.Count; i++ {
				w.AddBytes(b.Message(i))
			}
			rest = append(rest, append([]byte(nil), w.Record()...))
			w.Close()
			r.Close()
		}
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
