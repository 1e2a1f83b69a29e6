package spool

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pelichan/pelichan/segment"
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
	firstSeq = FirstSeq
	// DefaultSegmentSize is where a segment is sealed and a new one started.
	DefaultSegmentSize = 2 << 20
	maxBroken          = 8       // *.broken evidence files kept
	maxBrokenBytes     = 1 << 20 // bytes kept of one cut tail
)

// FirstSeq numbers the first segment of a new spool. Front segments (see Front) are
// numbered below it, every other segment at or above it.
const FirstSeq = 1 << 32

// Options configure a Spool. The zero value is valid.
type Options struct {
	// SegmentSize is the file size at which the segment being written is sealed and a new
	// one begun. Default DefaultSegmentSize.
	SegmentSize int64
	// NoSync skips every fsync (files, cursor, directory). Data then reaches the disk
	// when the OS writes it back.
	NoSync bool
	// Pinned, if set, names segments the owner holds records of in memory (handed out
	// and not read back): DropOldest and DropOlderThan never drop them.
	Pinned func(seq uint64) bool
	// OnCorrupt receives every *CorruptionError found while opening and reading.
	OnCorrupt func(error)
	// DeferCounting makes the background counting of the segments Open leaves uncounted
	// wait for StartCounting (or Stats, or Close), so that it does not compete with
	// reading the first record.
	DeferCounting bool
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
	// end is one past the offset of the segment's last valid record (0 if it has none),
	// when endKnown: from writing it, or from scanning it. No record starts at or after end.
	// short: the scan found fewer entries than the segment's meta recorded at sealing
	// (whole entries lost): then only the reader decides when it is consumed.
	end      uint64
	endKnown bool
	short    bool
	// offs holds the offset of each entry of the active segment, by entry index - 1: the
	// reader reads the active segment's records back at these offsets.
	offs []uint64
	// delivered counts this segment's messages acknowledged so far (from its meta count).
	delivered    uint64
	readDone     bool // the reader read the whole (sealed) segment
	lazy         bool // counts not loaded yet (see countInBackground)
	metaCount    bool // counts from the meta file (not from reading the WAL file)
	missingNoted bool // noteMissing ran
	written      bool // created since Open: its counts are those of what was appended
	// deliveredOpen is delivered as Open left it; found counts the messages of the
	// records Next returned since, less those delivered before (see noteMissing).
	deliveredOpen, found uint64
	sealDone             chan struct{} // closed when a background seal finished; nil if none ran
	synced               chan struct{} // closed when a background seal has fsynced the file (or failed)
}

// readRec is a record returned by Next and not yet acknowledged.
type readRec struct {
	sg    *seg
	off   uint64 // the record's offset (Cursor.Index)
	count uint32
	skip  uint32 // messages counted as delivered already
}

func (sg *seg) name() string { return fmt.Sprintf("%020d", sg.seq) }

// Record is one record returned by Next.
type Record struct {
	Pos  Cursor // Pos.Index: the record's byte offset; Pos.Offset: messages of it already delivered; skip them
	Data []byte // valid until the record is released (Release), or as long as it is referenced if it never is
	segment.Header

	ck *chunk // the buffer Data is in, when it may be reused
}

type segScan struct {
	seq  uint64
	ents []entry
	bad  []damage
	ok   bool
}

// Missing is what the reader did not find of a segment counted from its meta file, or
// written since Open: Messages counted (in Undelivered, and by the owner at Open or as it
// appended them) but in records lost (a file cut short) or damaged, or in a segment set
// aside unread. They stay in Undelivered until the
// segment is deleted. Messages is 0 for a segment set aside before it was counted (Open
// left it to be counted later, and its files could not be read): none of its records will
// be found, and none was counted. Every segment counted from its meta file appears once
// the reader is done with it, most with 0; a negative count says that more were found
// than counted (a cursor file claimed too many delivered before it).
type Missing struct {
	Seg      uint64
	Messages int64
}

// TakeMissing returns, since the last call, the segments counted from their meta files or
// written since Open that the reader is done with (see Missing), and those set aside
// before they were counted. A segment counted at Open by reading its file counts only the
// records found, and never appears.
func (s *Spool) TakeMissing() []Missing {
	m := s.missing
	s.missing = nil
	return m
}

// noteMissing records, once, how many messages of sg counted in Undelivered (at Open, or
// as they were appended) Next did not return, when the reader is done with sg: it returned every record of sg it will
// (read to its end, or the cursor passed its last valid record, or set aside). Not during
// Open: the owner counts what Open leaves in Undelivered. The count is negative when a
// cursor file claimed more messages delivered before it than there were.
func (s *Spool) noteMissing(sg *seg) {
	if !(sg.metaCount || sg.written) || sg.missingNoted || !s.opened {
		return
	}
	sg.missingNoted = true
	n := int64(sg.meta.messages) - int64(sg.deliveredOpen) - int64(sg.found)
	s.missing = append(s.missing, Missing{Seg: sg.seq, Messages: n})
}

// Stats describe the spool's disk state.
type Stats struct {
	Segments     int
	Undelivered  int64 // messages stored and not yet acknowledged (of the counted segments)
	Counting     int   // segments whose counts are still being read after Open
	Late         int64 // messages of segments counted after Open (in the background or on demand)
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
	wlog   *segFile // the active segment's WAL file

	acked Cursor // every message before it has been delivered
	// reader
	rseg  *seg
	rfrom uint64  // the reader reads the records of rseg at offsets from rfrom on
	rskip uint32  // messages to skip of the record at offset rfrom, if one starts there
	rents []entry // entries of rseg when it is sealed
	rpos  int     // next element of rents
	rbuf  []byte
	rs    stream    // rseg read record by record (before, or instead of, rents)
	free  []*chunk  // chunk buffers to reuse (see Release)
	unack []readRec // records returned by Next, in order, not yet acknowledged

	// The cursor file: what the next Checkpoint writes besides acked, and what the file
	// holds now (saved), so that an unchanged checkpoint is skipped.
	extra    []byte // the owner's bytes (SetExtra)
	extraGen uint64 // bumped when extra changes
	extraErr error  // SetExtra was given more than MaxExtra bytes: checkpoints fail
	high     uint64 // highest segment number ever created here, as far as known
	low      uint64 // lowest, 0 if none known
	saved    savedCursor

	sealing []*seg    // segments whose background seal Sync must wait for
	spare   *spare    // the next segment, made ahead in the background
	missing []Missing // for TakeMissing
	// lastScan is what Open's loadSeg last found reading a segment file (one without
	// meta), so that deliveredBefore does not read it again.
	lastScan segScan
	opened   bool // Open has returned
	keep     bool // KeepConsumed: collect deletes nothing

	st     Stats
	closed bool

	bg        sync.WaitGroup        // background seals, counting and spares
	counted   chan lazyMeta         // background counts for pump
	countDone chan struct{}         // closed when the background counting has sent everything
	countGo   chan struct{}         // closed to let the background counting begin (StartCounting)
	bgErr     atomic.Pointer[error] // a failed seal's fsync, for the next Append, Sync or Close
	syncErr   atomic.Pointer[error] // the same, for the next Sync or Close even if an Append took it
}

// Open opens or creates the spool in dir, taking its lock. It removes leftovers of
// interrupted operations, cuts a torn tail of the newest segment back to its last whole
// record (keeping the cut bytes as evidence), and positions the reader at the cursor.
//
// Open's own errors do not repeat dir: the caller names it ("pelichan: open DIR: ...").
// They wrap ErrLocked (saying which process holds the lock, where that can be found out)
// or ErrVersion (saying what was found instead of a spool), or report an I/O error.
func Open(dir string, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, &formatError{"spool: not a spool: not a directory"}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Refuse a foreign directory before creating anything in it (LOCK included). The
	// listing matters only without a FORMAT file (load lists the directory again under the
	// lock): a spool with a large backlog is not listed twice.
	var names []string
	if _, err := os.Stat(filepath.Join(dir, formatName)); err != nil {
		if names, err = readDirNames(dir); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
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
		s.StartCounting() // (load starts it last; should that change, bg.Wait must not hang)
		s.bg.Wait()       // segments load retired, before another Open may look at them
		lock.Close()
		return nil, err
	}
	s.opened = true
	return s, nil
}

func (s *Spool) path(name ...string) string {
	return filepath.Join(append([]string{s.dir}, name...)...)
}

func (s *Spool) report(err error) {
	s.st.Corrupt++
	s.opts.OnCorrupt(err)
}

// Cursor returns the acknowledged position.
func (s *Spool) Cursor() Cursor { return s.acked }

// Stats returns the spool's disk statistics.
//
// Right after Open with many segments, the counts of most are still being read in the
// background; Stats waits for them (once), so it is exact. Peek does not wait.
func (s *Spool) Stats() Stats {
	if s.st.Counting > 0 {
		s.StartCounting()
		<-s.countDone // everything has been sent
		s.pump()
		for _, sg := range slices.Clone(s.segs) {
			s.ensureMeta(sg) // none should be left; never wait for one
		}
	}
	return s.Peek()
}

// Counted returns a channel that is closed once the counts left to the background at Open
// have all been read (Peek is exact from then on, after one more call). With
// DeferCounting, the counting begins at StartCounting, Stats or Close.
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
	if !s.rseg.sealed && s.activeEntry() == 0 {
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
			s.wlog.close()
			s.removeSeg(s.active.name())
			s.dropSeg(s.active)
			s.wlog, s.active = nil, nil
		} else {
			errs = append(errs, s.seal())
		}
	}
	s.StartCounting() // the counting goroutine must end
	if p := s.takeSpare(); p != nil && p.err == nil {
		s.removeSeg(segName(p.seq)) // never held a record
	}
	s.bg.Wait()
	errs = append(errs, s.syncFailed(), s.collect(), s.Checkpoint())
	errs = append(errs, s.finishSaved())
	s.bg.Wait() // what collect and finishSaved retired
	s.closed = true
	s.rbuf, s.rents = nil, nil
	s.resetStream()
	s.free = nil
	errs = append(errs, s.lock.Close())
	return errors.Join(errs...)
}

// Has reports whether segment seq is in the spool.
func (s *Spool) Has(seq uint64) bool { return s.segAt(seq) != nil }

// Holds reports whether segment seq may hold a record at byte offset off: false if it is
// not in the spool, or if its counts come from reading its file (the newest segment at
// Open, unsealed at a crash and cut back if its tail was torn; a segment without a meta
// file, when the reader gets to it; the segment being written) and no record starts at
// or after off: a record past that end was lost (a crash before the OS wrote it back) and
// is not counted. Segments counted from their meta file, and those whose counts are not
// loaded yet, say true.
func (s *Spool) Holds(seq, off uint64) bool {
	sg := s.segAt(seq)
	if sg == nil {
		return false
	}
	return !sg.scanned() || !sg.endKnown || off < sg.end
}

// Scanned reports whether segment seq is in the spool and its counts come from reading
// its file (not from its meta file, nor still to be loaded), so that a record not found
// in it is not counted.
func (s *Spool) Scanned(seq uint64) bool {
	sg := s.segAt(seq)
	return sg != nil && sg.scanned()
}

// scanned reports whether sg's counts come from reading its file.
func (sg *seg) scanned() bool { return !sg.lazy && !sg.metaCount }

// segAt returns segment seq, nil if it is not in the spool.
func (s *Spool) segAt(seq uint64) *seg {
	i, ok := slices.BinarySearchFunc(s.segs, seq, func(sg *seg, seq uint64) int { return cmp.Compare(sg.seq, seq) })
	if !ok {
		return nil
	}
	return s.segs[i]
}
