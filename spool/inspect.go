package spool

// Read-only inspection of a spool directory: Inspect, Verify and Dump.
//
// These functions never write, rename, truncate or delete anything, never create a file
// (not even LOCK) and never take the directory's lock, so they are safe while a live
// Spool or Chan holds the directory. What they report is a snapshot that may already be
// stale: the cursor file is the last checkpoint, a live reader may delete consumed
// segments while they are being read (reported as a note, not as damage), and a live
// writer may be appending to the newest segment (an incomplete record at its end is a
// write in progress, not damage, while the lock is held).
//
// They interpret the directory exactly as Open would: the same scanner finds records and
// damage (scanFile), segments are counted from their meta files as load counts them, a
// missing or damaged cursor means "from the first segment", the segments Open deletes
// (those the cursor has passed, and the earlier front segment an interrupted Front
// replaced) are counted out, and the undelivered messages are those of whole records that
// the reader reaches from the cursor on, going on at a front segment's resume cursor once
// it has read it (the library's own resetReader and nextSeg work that out; see plan).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pelichan/pelichan/segment"
)

// Report describes a spool directory as Inspect found it.
type Report struct {
	Dir      string        `json:"dir"`
	Version  int           `json:"version"` // format version, from the FORMAT file
	Lock     LockInfo      `json:"lock"`
	Cursor   CursorInfo    `json:"cursor"`
	Segments []SegmentInfo `json:"segments"` // by sequence number

	// Totals over the segments, counting whole records only.
	Records     int64   `json:"records"`
	Messages    int64   `json:"messages"`
	RawBytes    int64   `json:"raw_bytes"`    // uncompressed payload bytes
	RecordBytes int64   `json:"record_bytes"` // compressed record bytes (header and zstd frame)
	FileBytes   int64   `json:"file_bytes"`   // bytes of the segments' WAL files
	Ratio       float64 `json:"ratio"`        // RawBytes / RecordBytes; 0 when empty

	// Undelivered counts the messages, in whole records, that the next Open would deliver:
	// from the cursor on, and after a front segment from its resume cursor on.
	Undelivered        int64     `json:"undelivered"`
	UndeliveredRecords int64     `json:"undelivered_records"`
	Oldest             time.Time `json:"oldest,omitzero"`             // time of the oldest record
	Newest             time.Time `json:"newest,omitzero"`             // time of the newest record
	OldestUndelivered  time.Time `json:"oldest_undelivered,omitzero"` // time of the first undelivered record

	Files []FileInfo `json:"files"` // set-aside evidence and leftovers
	Notes []string   `json:"notes"` // what changed while reading, and other remarks
}

// LockInfo says whether a process holds the directory's lock.
type LockInfo struct {
	Held   bool   `json:"held"`
	PID    int    `json:"pid,omitempty"` // the holder, as /proc/locks shows it
	Method string `json:"method"`        // how it was found out: "/proc/locks", "flock probe", "no LOCK file"
	Error  string `json:"error,omitempty"`
}

// CursorInfo is the read position as the next Open would use it.
type CursorInfo struct {
	// State is "ok", "missing" (never checkpointed: a crash before the first checkpoint, or
	// a new spool), "damaged" or "past-end" (it names a segment after the last one). In
	// every state but "ok", Open reads from the first segment, and so do Segment, Index
	// and Offset below.
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
	Seq     uint64 `json:"seq"`     // segment sequence number (0 when there is none)
	Segment string `json:"segment"` // the segment directory's name
	Index   uint64 `json:"index"`   // byte offset of the record's framing in the segment's WAL file (see Cursor)
	Offset  uint32 `json:"offset"`  // messages of that record already delivered
	// What the cursor file holds besides the position, when State is "ok": its format
	// version (1 to 4; the position of versions 1 and 2 is an entry index, shown here as
	// the offset Open translates it into); from version 2, the highest and lowest segment numbers ever used
	// (new segments are numbered above High, front segments below Low) and the length of
	// the owner's extra bytes (Spool.SetExtra).
	Version    int    `json:"version,omitempty"`
	High       uint64 `json:"high,omitempty"`
	Low        uint64 `json:"low,omitempty"`
	ExtraBytes int    `json:"extra_bytes,omitempty"`
}

// Pos returns the cursor as a Cursor.
func (c CursorInfo) Pos() Cursor { return Cursor{Seg: c.Seq, Index: c.Index, Offset: c.Offset} }

// SegmentInfo describes one segment directory.
type SegmentInfo struct {
	Name        string    `json:"name"`
	Seq         uint64    `json:"seq"`
	Sealed      bool      `json:"sealed"`     // it has a meta file: no longer written
	FileBytes   int64     `json:"file_bytes"` // size of the WAL file
	Records     int64     `json:"records"`    // whole records
	Messages    int64     `json:"messages"`
	RawBytes    int64     `json:"raw_bytes"`
	RecordBytes int64     `json:"record_bytes"`
	Ratio       float64   `json:"ratio"` // RawBytes / RecordBytes
	First       time.Time `json:"first,omitzero"`
	Last        time.Time `json:"last,omitzero"`
	Undelivered int64     `json:"undelivered"`
	Damage      []Problem `json:"damage,omitempty"`
	// Resume is set for a front segment (see Spool.Front), as Open reads its meta file:
	// where reading goes on once the front segment has been read. Messages of the resume
	// segment before it were delivered before the front segment was written.
	Resume *Position `json:"resume,omitempty"`
}

// Position is a read position: message Offset of the record at byte offset Index of the
// segment Seq (see Cursor).
type Position struct {
	Seq     uint64 `json:"seq"`
	Segment string `json:"segment"` // the segment directory's name
	Index   uint64 `json:"index"`
	Offset  uint32 `json:"offset"`
}

// FileInfo is a file or directory in the spool directory that is not part of the live
// spool: evidence set aside by recovery, or a leftover of an interrupted operation.
type FileInfo struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`  // "bad" (a segment set aside), "broken" (a cut torn tail), "tmp", "unknown"
	Bytes int64  `json:"bytes"` // for a directory, the bytes of the files in it
}

// Problem is one piece of damage.
type Problem struct {
	// Kind is "record" (a damaged record or stretch of a segment file), "tail" (an
	// incomplete record at the end of the newest segment, which Open cuts back), "segment"
	// (a segment that cannot be read at all), "meta" (a damaged meta file, or one that
	// disagrees with its segment) or "cursor" (a damaged cursor file, or one past the end).
	Kind    string `json:"kind"`
	Segment string `json:"segment,omitempty"` // segment directory name
	Index   uint64 `json:"index,omitempty"`   // 1-based entry index, as scanFile counts them
	Offset  int64  `json:"offset"`            // byte offset in the WAL file
	Length  int64  `json:"length,omitempty"`  // bytes that hold no whole record, where known
	Err     string `json:"error"`
}

func (p Problem) String() string {
	switch {
	case p.Segment == "":
		return fmt.Sprintf("%s: %s", p.Kind, p.Err)
	case p.Index > 0 && p.Length > 0:
		return fmt.Sprintf("segment %s entry %d offset %d (%d bytes): %s", p.Segment, p.Index, p.Offset, p.Length, p.Err)
	case p.Index > 0:
		return fmt.Sprintf("segment %s entry %d offset %d: %s", p.Segment, p.Index, p.Offset, p.Err)
	default:
		return fmt.Sprintf("segment %s: %s", p.Segment, p.Err)
	}
}

// Problems returns every problem Inspect found: the cursor's, then each segment's.
func (r *Report) Problems() []Problem {
	var out []Problem
	if p, ok := cursorProblem(r.Cursor); ok {
		out = append(out, p)
	}
	for _, s := range r.Segments {
		out = append(out, s.Damage...)
	}
	return out
}

func cursorProblem(c CursorInfo) (Problem, bool) {
	if c.State == "damaged" || c.State == "past-end" {
		return Problem{Kind: "cursor", Err: c.Error}, true
	}
	return Problem{}, false
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	Dir      string    `json:"dir"`
	Segments int       `json:"segments"`
	Records  int64     `json:"records"`  // records that decoded completely
	Messages int64     `json:"messages"` // messages in them
	Problems []Problem `json:"problems"`
	Notes    []string  `json:"notes"`
}

// DumpOptions select the messages Dump yields.
type DumpOptions struct {
	All       bool          // every record still on disk, not only those from the cursor on
	From      int64         // skip this many messages of the selection first
	Limit     int64         // stop after this many messages; 0: no limit
	OnProblem func(Problem) // damage met in the selection (those records are skipped)
	OnNote    func(string)  // remarks, such as a segment deleted while being read
}

// Message is one message yielded by Dump.
type Message struct {
	Segment   string    // segment directory name
	Index     uint64    // byte offset of its record in the segment's WAL file (as Cursor.Index)
	N         int       // position within the record, from 0
	Time      time.Time // the record's time (zero if the writer set none)
	Delivered bool      // before the cursor (only with DumpOptions.All)
	Data      []byte    // valid only during the call to fn
}

// Inspect describes the spool in dir without changing anything. It reads every segment
// file (checking each record's header and CRC, as Open's scanner does), but decompresses
// nothing: Verify does. An error means dir could not be inspected at all: it wraps
// fs.ErrNotExist for a missing dir and ErrVersion for a path that is not a spool of this
// format version. Damage is reported in the Report, not as an error.
func Inspect(dir string) (*Report, error) {
	l, err := lookAt(dir)
	if err != nil {
		return nil, err
	}
	r := &Report{Dir: dir, Version: l.version, Lock: l.lock, Cursor: l.cursor,
		Segments: []SegmentInfo{}, Files: l.files, Notes: l.notes}
	for i, seq := range l.segs {
		sr := l.readSeg(seq, i >= l.tail)
		r.Notes = append(r.Notes, sr.notes...)
		if sr.gone {
			continue
		}
		si := SegmentInfo{Name: sr.name, Seq: seq, Sealed: sr.sealed, FileBytes: int64(len(sr.buf)), Damage: sr.problems}
		if c, ok := l.resume[seq]; ok {
			si.Resume = &Position{Seq: c.Seg, Segment: segName(c.Seg), Index: c.Index, Offset: c.Offset}
		}
		for _, e := range sr.ents {
			si.Records++
			si.Messages += int64(e.hdr.Count)
			si.RawBytes += int64(e.hdr.RawLen)
			si.RecordBytes += int64(len(e.data))
			t := nanoTime(e.hdr.Time)
			if si.First.IsZero() {
				si.First = t
			}
			if !t.IsZero() {
				si.Last = t
			}
			if n := l.undelivered(seq, e); n > 0 {
				si.Undelivered += n
				r.UndeliveredRecords++
				if r.OldestUndelivered.IsZero() {
					r.OldestUndelivered = t
				}
			}
		}
		si.Ratio = ratio(si.RawBytes, si.RecordBytes)
		r.Records += si.Records
		r.Messages += si.Messages
		r.RawBytes += si.RawBytes
		r.RecordBytes += si.RecordBytes
		r.FileBytes += si.FileBytes
		r.Undelivered += si.Undelivered
		if !si.First.IsZero() && (r.Oldest.IsZero() || si.First.Before(r.Oldest)) {
			r.Oldest = si.First
		}
		if si.Last.After(r.Newest) {
			r.Newest = si.Last
		}
		r.Segments = append(r.Segments, si)
	}
	r.Ratio = ratio(r.RawBytes, r.RecordBytes)
	return r, nil
}

// Verify reads every record of every segment and checks it completely: header, CRC,
// decompression and the framing of its messages (segment.Reader.Decode). It also checks
// the cursor and meta files. It changes nothing; errors are as for Inspect.
func Verify(dir string) (*VerifyReport, error) {
	l, err := lookAt(dir)
	if err != nil {
		return nil, err
	}
	vr := &VerifyReport{Dir: dir, Problems: []Problem{}, Notes: l.notes}
	if p, ok := cursorProblem(l.cursor); ok {
		vr.Problems = append(vr.Problems, p)
	}
	rd := segment.NewReader()
	defer rd.Close()
	for i, seq := range l.segs {
		sr := l.readSeg(seq, i >= l.tail)
		vr.Notes = append(vr.Notes, sr.notes...)
		if sr.gone {
			continue
		}
		vr.Segments++
		vr.Problems = append(vr.Problems, sr.problems...)
		for _, e := range sr.ents {
			b, err := rd.Decode(e.data)
			if err != nil {
				vr.Problems = append(vr.Problems, decodeProblem(sr.name, e, err))
				continue
			}
			vr.Records++
			vr.Messages += int64(b.Count)
		}
	}
	return vr, nil
}

// Dump calls fn for the messages on disk, in order: by default those the next Open would
// deliver (from the cursor on, skipping the messages of the cursor's record already
// delivered, and after a front segment going on at its resume cursor); with opts.All
// every message of every whole record still on disk. Damaged records are skipped and
// passed to opts.OnProblem. Dump stops at the first error fn returns and returns it. It
// changes nothing; errors are as for Inspect.
func Dump(dir string, opts DumpOptions, fn func(m Message) error) error {
	l, err := lookAt(dir)
	if err != nil {
		return err
	}
	problem, note := opts.OnProblem, opts.OnNote
	if problem == nil {
		problem = func(Problem) {}
	}
	if note == nil {
		note = func(string) {}
	}
	for _, n := range l.notes {
		note(n)
	}
	if p, ok := cursorProblem(l.cursor); ok {
		problem(p)
	}
	skip, left := max(opts.From, 0), opts.Limit
	rd := segment.NewReader()
	defer rd.Close()
	for i, seq := range l.segs {
		if !opts.All && l.passed[seq] {
			continue // consumed, or replaced by a front segment: Open deletes it
		}
		sr := l.readSeg(seq, i >= l.tail)
		for _, n := range sr.notes {
			note(n)
		}
		for _, p := range sr.problems {
			// Not the damage before where reading starts (a segment Open sets aside has
			// no start, and its problem is reported).
			if opts.All || p.Index == 0 || uint64(p.Offset+p.Length) > l.start[seq].Index {
				problem(p)
			}
		}
		for _, e := range sr.ents {
			count := int64(e.hdr.Count)
			done := count - l.undelivered(seq, e) // messages delivered already
			start := int64(0)
			if !opts.All {
				start = done
			}
			if start >= count {
				continue
			}
			if skip >= count-start {
				skip -= count - start // no need to decompress
				continue
			}
			b, err := rd.Decode(e.data)
			if err != nil {
				problem(decodeProblem(sr.name, e, err))
				continue
			}
			m := Message{Segment: sr.name, Index: uint64(e.offset), Time: nanoTime(e.hdr.Time)}
			for k := start + skip; k < count; k++ {
				m.N, m.Delivered, m.Data = int(k), k < done, b.Message(int(k))
				if err := fn(m); err != nil {
					return err
				}
				if left--; opts.Limit > 0 && left == 0 {
					return nil
				}
			}
			skip = 0
		}
	}
	return nil
}

// undelivered returns how many messages of entry e of segment seq Open would deliver:
// none in a segment it does not read, none before where reading starts in the segment,
// and not the messages of the starting entry already delivered (as countBacklog and
// deliveredBefore count them).
func (l *look) undelivered(seq uint64, e entry) int64 {
	start, ok := l.start[seq]
	switch {
	case !ok, uint64(e.offset) < start.Index:
		return 0
	case uint64(e.offset) == start.Index:
		return int64(e.hdr.Count) - int64(min(int(start.Offset), e.hdr.Count))
	}
	return int64(e.hdr.Count)
}

func decodeProblem(seg string, e entry, err error) Problem {
	return Problem{Kind: "record", Segment: seg, Index: e.index, Offset: e.offset,
		Length: int64(uvarintLen(uint64(len(e.data))) + len(e.data)), Err: err.Error()}
}

func ratio(raw, compressed int64) float64 {
	if compressed == 0 {
		return 0
	}
	return float64(raw) / float64(compressed)
}

func nanoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// look is the directory-level part of an inspection: format, lock, cursor, listing, meta
// files, and what the next Open would read.
type look struct {
	dir     string
	version int
	lock    LockInfo
	cursor  CursorInfo
	segs    []uint64            // segment directories, sorted
	metas   map[uint64]metaFile // their meta files, read once
	// start is where the next Open's reader starts in each segment it reads: the cursor in
	// the first, a front segment's resume cursor in the segment it names, offset 0 in the
	// others. A segment without one is not read.
	start map[uint64]Cursor
	// passed holds the segments that are not in the default selection of Dump because Open
	// deletes them before reading (those the cursor has passed, and the earlier front
	// segment replaced by the one the cursor is on: finishFront) or sets them aside
	// before the cursor.
	passed map[uint64]bool
	resume map[uint64]Cursor // front segments' resume cursors, as Open reads them
	files  []FileInfo
	notes  []string
	tail   int // the first segment whose tail Open repairs (see tailFrom)
}

// metaFile is a segment's meta file as read: its bytes, or why it could not be read.
type metaFile struct {
	b   []byte
	err error
}

func segName(seq uint64) string { return fmt.Sprintf("%020d", seq) }

func lookAt(dir string) (*look, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if !fi.IsDir() {
		return nil, &formatError{fmt.Sprintf("spool: %s: not a spool: not a directory", dir)}
	}
	l := &look{dir: dir, files: []FileInfo{}, notes: []string{}}
	b, err := readHead(filepath.Join(dir, formatName), 256)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		names, _ := readDirNames(dir)
		return nil, notASpool(dir+": ", slices.DeleteFunc(names, func(n string) bool { return n == lockName }))
	case err != nil:
		return nil, fmt.Errorf("spool: %w", err)
	case string(b) != formatLine:
		return nil, formatMismatch(dir+": ", b)
	}
	l.version = 1
	l.lock = lockState(dir)

	// The cursor before the listing: a live reader only moves it forward and deletes
	// segments behind it, so the listing never misses a segment the cursor points into.
	cf, cver, cerr := readCursorPath(filepath.Join(dir, cursorName))

	names, err := readDirNames(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case name == formatName || name == lockName || name == cursorName:
		case isSegName(name):
			seq, _ := strconv.ParseUint(name, 10, 64)
			l.segs = append(l.segs, seq)
		default:
			if f, ok := otherFile(dir, name); ok {
				l.files = append(l.files, f)
			}
		}
	}

	// As Open does, the newest and the oldest segment (a front segment) are left out if
	// their directory is empty: a creation cut short, or, under a live Spool, one being made.
	for _, i := range []int{len(l.segs) - 1, 0} {
		if i < 0 || i >= len(l.segs) {
			continue
		}
		name := segName(l.segs[i])
		if !emptyDir(filepath.Join(dir, name)) {
			continue
		}
		l.segs = slices.Delete(l.segs, i, i+1)
		if l.lock.Held {
			l.notes = append(l.notes, fmt.Sprintf("segment %s is empty: being made", name))
		} else {
			l.notes = append(l.notes, fmt.Sprintf("segment %s is an empty directory (its creation was cut short): Open removes it", name))
		}
	}
	l.tail = tailFrom(len(l.segs), func(i int) string { return filepath.Join(dir, segName(l.segs[i])) })
	l.metas = make(map[uint64]metaFile, len(l.segs))
	for _, seq := range l.segs {
		b, err := readHead(filepath.Join(dir, segName(seq), metaName), metaSize+1)
		l.metas[seq] = metaFile{b, err}
	}
	l.cursor = l.plan(cf.pos, cver, cerr)
	if cerr == nil {
		l.cursor.Version, l.cursor.High, l.cursor.Low, l.cursor.ExtraBytes = cver, cf.high, cf.low, len(cf.extra)
	}
	return l, nil
}

// plan works out what the next Open would read, by the library's rules, and returns the
// cursor as Open would use it. load sets aside a segment whose WAL file is missing, takes
// each other segment's counts and front fields from its meta file (the newest one, and one
// without a valid meta file, are scanned and keep only the meta's replaces), and reads from
// the first segment when the cursor is missing, damaged or past the last segment; collect
// deletes the segments the cursor has passed, going on at a finished front segment's resume
// cursor; finishFront deletes the earlier front segment that the one the cursor is on
// replaced. From there the reader's own code (resetReader, nextSeg), run on a Spool that
// holds only those segments' numbers and counts, says where reading starts in each.
func (l *look) plan(c Cursor, cver int, cerr error) CursorInfo {
	l.start, l.passed, l.resume = map[uint64]Cursor{}, map[uint64]bool{}, map[uint64]Cursor{}
	newest := func(sg *seg) bool {
		i, _ := slices.BinarySearch(l.segs, sg.seq)
		return i >= l.tail
	}
	var segs []*seg
	scan := map[*seg]bool{} // counted by scanning: records are worked out when needed
	for _, seq := range l.segs {
		// While a Spool holds the lock, a missing file is one being created or deleted, not
		// one Open would set aside.
		fi, err := os.Stat(filepath.Join(l.dir, segName(seq), walFile))
		if err != nil && !l.lock.Held || err == nil && fi.Size() > maxInspectFile {
			continue // Open sets it aside
		}
		sg := &seg{seq: seq, sealed: true}
		m, ok := decodeMeta(l.metas[seq].b)
		if ok && !newest(sg) {
			sg.meta = m
			if sg.meta.resumeIndex {
				sg.meta.resume = indexToOffsetIn(l.dir, sg.meta.resume, maxInspectFile)
				sg.meta.resumeIndex = false
			}
			if sg.meta.resume.Seg > seq {
				l.resume[seq] = sg.meta.resume
			}
		} else {
			sg.meta.replaces = m.replaces
			scan[sg] = true
		}
		segs = append(segs, sg)
	}

	var first Cursor
	if len(segs) > 0 {
		first = Cursor{Seg: segs[0].seq}
	}
	ci := CursorInfo{State: "ok"}
	switch {
	case errors.Is(cerr, fs.ErrNotExist):
		ci.State, c = "missing", first
	case cerr != nil:
		ci.State, ci.Error, c = "damaged", cerr.Error()+"; Open reads from the first segment", first
	case len(segs) > 0 && c.Seg > segs[len(segs)-1].seq && !l.pastLast(&c, cver, segs):
		ci.State = "past-end"
		ci.Error = fmt.Sprintf("cursor points to segment %020d past the last one; Open reads from the first segment", c.Seg)
		c = first
	case cver < 3:
		c = indexToOffsetIn(l.dir, c, maxInspectFile) // an entry index, as Open translates it
	}
	ci.Seq, ci.Index, ci.Offset = c.Seg, c.Index, c.Offset
	if c.Seg != 0 {
		ci.Segment = segName(c.Seg)
	}

	// collect, at Open: every segment is sealed and none is read yet.
	for len(segs) > 0 {
		sg := segs[0]
		if sg.seq > c.Seg || sg.seq == c.Seg && !l.pastEnd(sg, c, scan[sg] || c.Index > 0 || c.Offset > 0, newest(sg)) {
			break
		}
		if sg.seq == c.Seg {
			c = Cursor{Seg: sg.seq + 1}
			if r := sg.meta.resume; r.Seg > sg.seq {
				c = r
			}
		}
		l.passed[sg.seq] = true
		segs = segs[1:]
	}
	// finishFront: a shutdown interrupted after Front moved the cursor to a new front
	// segment, before it deleted the segments between it and its resume cursor's: the
	// earlier front segment whose rest the new one holds, and consumed segments kept until
	// that checkpoint.
	if len(segs) > 0 && segs[0].seq == c.Seg && segs[0].meta.resume.Seg > segs[0].seq {
		front := segs[0]
		for len(segs) > 1 && segs[1].seq < front.meta.resume.Seg {
			sg := segs[1]
			l.passed[sg.seq] = true
			if sg.seq == front.meta.replaces {
				l.notes = append(l.notes, fmt.Sprintf("front segment %s was replaced by the front segment %s, which holds its undelivered rest (a shutdown interrupted before it was deleted): Open deletes it", sg.name(), front.name()))
			} else {
				l.notes = append(l.notes, fmt.Sprintf("segment %s lies before the resume cursor of the front segment %s the cursor is on, so it is consumed (a shutdown interrupted before it was deleted): Open deletes it", sg.name(), front.name()))
			}
			segs = slices.Delete(segs, 1, 2)
		}
	}

	for _, seq := range l.segs {
		if seq < c.Seg {
			l.passed[seq] = true // collected above, or set aside by Open
		}
	}
	s := &Spool{dir: l.dir, segs: segs, acked: c}
	s.resetReader()
	for s.rseg != nil {
		l.start[s.rseg.seq] = Cursor{Seg: s.rseg.seq, Index: s.rfrom, Offset: s.rskip}
		s.nextSeg(s.rseg.seq)
	}
	return ci
}

// pastLast is Open's rule for a cursor c past the last segment (see pastLast): it reports
// whether that is no damage, and then moves c to where Open reads from.
func (l *look) pastLast(c *Cursor, cver int, segs []*seg) bool {
	var only uint64
	var meta []byte
	if len(segs) == 1 {
		only, meta = segs[0].seq, l.metas[segs[0].seq].b
	}
	translate := func(r Cursor) Cursor { return indexToOffsetIn(l.dir, r, maxInspectFile) }
	at, fine := pastLast(*c, cver, segs[len(segs)-1].seq, only, meta, translate)
	if fine {
		*c = at
	}
	return fine
}

// pastEnd reports whether Open's collect finds cursor c past the last record of sg, the
// cursor's segment (see Spool.pastEnd): where Open scanned the segment (scanned), at or
// past one after its last valid record, with no whole entries missing against its meta.
func (l *look) pastEnd(sg *seg, c Cursor, scanned, newest bool) bool {
	if !scanned {
		return false
	}
	buf, err := readSegFile(filepath.Join(l.dir, segName(sg.seq), walFile), maxInspectFile)
	if err != nil {
		return false
	}
	ents, bad, good := scanFile(buf)
	found := uint64(len(ents) + len(bad))
	if newest && tornTail(buf, bad, good) {
		found-- // cut off by Open
	}
	if m, ok := decodeMeta(l.metas[sg.seq].b); ok && found < m.records {
		return false // entries missing: the reader reads it
	}
	if newest && tornTail(buf, bad, good) {
		bad = nil
	}
	end := uint64(0)
	if n := len(ents); n > 0 {
		end = uint64(ents[n-1].offset) + 1
	}
	if n := len(bad); n > 0 {
		end = max(end, uint64(bad[n-1].offset)+1)
	}
	return c.Index >= end
}

// otherFile classifies a name in the spool directory that is not part of the live spool.
// ok is false if it vanished meanwhile.
func otherFile(dir, name string) (FileInfo, bool) {
	p := filepath.Join(dir, name)
	fi, err := os.Lstat(p)
	if err != nil {
		return FileInfo{}, false
	}
	f := FileInfo{Name: name, Kind: "unknown", Bytes: fi.Size()}
	switch {
	case strings.HasSuffix(name, ".tmp"):
		f.Kind = "tmp"
	case strings.HasSuffix(name, ".broken"):
		f.Kind = "broken"
	case strings.HasSuffix(name, ".bad"): // NAME.bad, or NAME.N.bad when that was taken
		f.Kind = "bad"
	}
	if fi.IsDir() {
		f.Bytes = 0
		if ents, err := os.ReadDir(p); err == nil {
			for _, e := range ents {
				if i, err := e.Info(); err == nil && i.Mode().IsRegular() {
					f.Bytes += i.Size()
				}
			}
		}
	}
	return f, true
}

// maxInspectFile is the largest segment file Inspect, Verify and Dump read (whole, into
// memory): what a writer with a SegmentSize of 1 GiB, pelichan's largest, produces. Open
// reads less (see Options.maxSegmentFile); a file between the two gets a note.
const maxInspectFile = 1<<30 + binary.MaxVarintLen64 + maxRecordBytes

// segRead is one segment as read: its file, its whole records and its damage.
type segRead struct {
	name     string
	sealed   bool
	buf      []byte
	ents     []entry
	problems []Problem
	notes    []string
	gone     bool // deleted (or set aside) while being read
}

// readSeg reads and scans segment seq. newest says it is one whose tail Open repairs (the
// last segment listed, or the one before an empty spare; see tailFrom): the
// one whose torn tail Open cuts back, and the one a live writer may be appending to.
func (l *look) readSeg(seq uint64, newest bool) *segRead {
	r := &segRead{name: segName(seq)}
	dir := filepath.Join(l.dir, r.name)
	mb, merr := l.metas[seq].b, l.metas[seq].err
	var meta segMeta
	metaOK := false
	switch {
	case merr == nil:
		r.sealed = true
		if meta, metaOK = decodeMeta(mb); !metaOK {
			r.problems = append(r.problems, Problem{Kind: "meta", Segment: r.name,
				Err: "meta file is damaged; Open recounts the segment by scanning it"})
		}
	case !errors.Is(merr, fs.ErrNotExist) && !errors.Is(merr, syscall.ENOTDIR):
		r.problems = append(r.problems, Problem{Kind: "meta", Segment: r.name, Err: merr.Error()})
	}
	buf, err := readSegFile(filepath.Join(dir, walFile), maxInspectFile)
	var tooLarge *errFileTooLarge
	if errors.As(err, &tooLarge) {
		r.problems = append(r.problems, Problem{Kind: "segment", Segment: r.name,
			Err: fmt.Sprintf("the WAL file holds %d bytes, more than any writer produces (%d); not read; Open sets the segment aside as %s.bad", tooLarge.size, maxInspectFile, r.name)})
		return r
	}
	if err != nil {
		// A live Spool deletes consumed segments (the file, then the directory), sets
		// damaged ones aside, and creates new ones (the directory, then the file).
		_, serr := os.Lstat(dir)
		switch {
		case errors.Is(serr, fs.ErrNotExist):
			r.gone = true
			r.notes = append(r.notes, fmt.Sprintf("segment %s was deleted or set aside while being read (consumed by a live reader?)", r.name))
			return r
		case errors.Is(err, fs.ErrNotExist) && l.lock.Held:
			r.gone = true
			r.notes = append(r.notes, fmt.Sprintf("segment %s has no WAL file: being created or deleted by the Spool holding the lock?", r.name))
			return r
		}
		r.problems = append(r.problems, Problem{Kind: "segment", Segment: r.name,
			Err: fmt.Sprintf("cannot read the WAL file (%v); Open sets the segment aside as %s.bad", err, r.name)})
		return r
	}
	r.buf = buf
	if open := (Options{}).withDefaults().maxSegmentFile(); int64(len(buf)) > open {
		r.notes = append(r.notes, fmt.Sprintf("segment %s: the WAL file holds %d bytes: Open sets it aside as too large unless the SegmentSize it opens with is at least %d",
			r.name, len(buf), (int64(len(buf))-open)/4+DefaultSegmentSize))
	}
	ents, bad, good := scanFile(buf)
	r.ents = ents
	tail := newest && tornTail(buf, bad, good)
	for _, d := range bad {
		p := Problem{Kind: "record", Segment: r.name, Index: d.index, Offset: d.offset, Length: d.length}
		switch {
		case tail && l.lock.Held && !r.sealed:
			r.notes = append(r.notes, fmt.Sprintf("segment %s: the last %d bytes are not a whole record yet (a write in progress?)", r.name, d.length))
			continue
		case tail:
			p.Kind = "tail"
			p.Err = fmt.Sprintf("%d bytes at the end are not a whole record (torn write?); Open cuts them off and keeps them as a .broken file", d.length)
		default:
			p.Err = damageText(buf, d)
		}
		r.problems = append(r.problems, p)
	}
	if metaOK {
		var got segMeta
		for _, e := range ents {
			got.add(e.hdr)
		}
		switch found := uint64(len(ents) + len(bad)); {
		case found < meta.records:
			// Whole entries are gone (the file was cut short): only the meta file can tell.
			r.problems = append(r.problems, Problem{Kind: "record", Segment: r.name, Index: found + 1, Offset: int64(len(buf)),
				Err: fmt.Sprintf("%d of the %d entries recorded at sealing are missing", meta.records-found, meta.records)})
		case len(bad) == 0 && (got.records != meta.records || got.messages != meta.messages ||
			got.raw != meta.raw || got.first != meta.first || got.last != meta.last):
			r.problems = append(r.problems, Problem{Kind: "meta", Segment: r.name,
				Err: fmt.Sprintf("meta file says %d records, %d messages, %d raw bytes, times %d..%d; the WAL file holds %d, %d, %d, %d..%d",
					meta.records, meta.messages, meta.raw, meta.first, meta.last, got.records, got.messages, got.raw, got.first, got.last)})
		}
	}
	return r
}

// damageText says why a damaged stretch found by scanFile holds no valid record.
func damageText(buf []byte, d damage) string {
	if rec, _, ok := frameAt(buf, int(d.offset)); ok {
		if _, err := segment.Verify(rec); err != nil {
			return err.Error()
		}
	}
	return fmt.Sprintf("%v: no valid record starts here (bad length or magic)", d.err)
}

// lockState says whether a process holds dir's lock, without taking it where /proc/locks
// can tell (see Locked). An inspection tool must never make the application it inspects
// fail, however unlikely: only where /proc/locks cannot be read (not Linux, no /proc) does
// it fall back to Locked's flock probe. Method says how the answer was found.
func lockState(dir string) LockInfo {
	held, pid, method, err := lockHolder(dir)
	li := LockInfo{Held: held, PID: pid, Method: method}
	if err != nil {
		li.Error = err.Error()
	}
	return li
}
