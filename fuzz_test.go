package pelichan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pelichan/pelichan/segment"
)

// FuzzRecovery damages a spool written by a Chan in fuzzer-chosen ways, then opens it with
// New and drains it (src closed): never a panic or a hang, never a message that was not
// written, and every record the damage did not touch delivered; the damage to a record that
// is read is reported, and the recovered spool opens again empty.
//
// The fuzz input is a list of operations (see fzApply): truncate a file, flip a byte,
// append garbage or zeros, overwrite a range with zeros, delete a file or a segment
// directory, copy a segment directory under another 20-digit name, write a valid cursor
// pointing anywhere, or write garbage as the cursor.
func FuzzRecovery(f *testing.F) {
	pr := fzPristineSpool(f)
	f.Logf("pristine spool: %d messages written, %d records in %d segments on disk, cursor %+v",
		len(pr.written), len(pr.recs), len(pr.segs), pr.cursor)

	// Seeds: op byte, then its arguments (selectors, little-endian offsets, data). Files are
	// selected in sorted order: segment files first (WAL, meta, per segment), then FORMAT,
	// LOCK, cursor; the pristine cursor lies in the first segment on disk.
	f.Add([]byte{})                                                 // no damage
	f.Add([]byte{0, 4, 40, 0})                                      // truncate a WAL file
	f.Add([]byte{1, 0, 0x2c, 0x01, 0x10})                           // flip a byte in the cursor's segment
	f.Add([]byte{2, 12, 8, 'g', 'a', 'r', 'b', 'a', 'g', 'e', '!'}) // garbage appended
	f.Add([]byte{3, 12, 0x10, 0})                                   // zeros appended
	f.Add([]byte{4, 2})                                             // a WAL file deleted
	f.Add([]byte{4, 16})                                            // the cursor deleted
	f.Add([]byte{5, 1})                                             // a segment directory deleted
	f.Add([]byte{6, 2, 3})                                          // a segment copied behind
	f.Add([]byte{6, 0, 0xfd})                                       // a segment copied in front
	f.Add([]byte{7, 1, 0, 3, 2})                                    // a valid cursor elsewhere
	f.Add([]byte{7, 0, 0x7f, 1, 0})                                 // a cursor past the end
	f.Add([]byte{8, 4, 0x00, 0x02, 0x00, 0x05})                     // zeros over records
	f.Add([]byte{9, 5, 'x', 'y', 'z', 'w', 'v'})                    // garbage cursor
	f.Add([]byte{1, 14, 0, 0, 1})                                   // FORMAT damaged: refused
	f.Add([]byte{5, 0, 1, 0, 0, 10, 0x01, 2, 3, 3, 'a', 'b', 'c'})
	// A stretch of zeros over two records in front of the cursor.
	f.Add([]byte{7, 0, 0, 4, 0, 8, 0, 100, 0, 0x58, 0x02})
	f.Add([]byte{7, 0, 0, 4, 0, 4, 1, 8, 0, 100, 0, 0x58, 0x02})                   // ... and the segment's meta deleted
	f.Add([]byte{7, 0, 0, 4, 0, 5, 1, 5, 1, 5, 1, 5, 1, 8, 0, 100, 0, 0x58, 0x02}) // ... in the newest segment
	// Found by fuzzing: the record at the cursor (which skips 48 messages of it) damaged:
	// the skip was applied to the next record instead.
	f.Add([]byte("92\x00\x0000"))
	f.Add([]byte{7, 0, 0, 20, 12, 1, 0, 0x10, 0x0e, 0x01}) // the same with cursor {first, 20, 12}
	// Found by fuzzing: zeros over the two records in front of a cursor with a message
	// offset, in a segment without meta: the offset was applied to the wrong record.
	f.Add([]byte("92\x00\x040\"B0002X"))
	// Found by fuzzing: the same zeros in a sealed segment whose count from sealing is
	// fooled by garbage appended behind its last record.
	f.Add([]byte{2, 0, 1, '0', '0', 8, 0, 0xd6, 0x00, 0x30, 0x01})
	// Found by fuzzing: zeros over two records past the cursor (entries 2 and 3 of the
	// segment after the cursor's) make one damaged stretch, so the scan numbers every later
	// entry of the segment one lower; the done sets, keyed by (segment, index), then apply
	// to the wrong records (entries 4, 6 and 7 got those of entries 3, 5 and 6): 24
	// messages that were never done were never delivered. Fixed: a done set names its
	// record's CRC too (and since cursor file version 3, its byte offset, not its index).
	f.Add([]byte{8, 2, 0xe2, 0x00, 0x30, 0x01})

	f.Fuzz(func(t *testing.T, ops []byte) {
		dir := filepath.Join(t.TempDir(), "spool")
		fzCopyDir(t, pr.dir, dir)
		st := fzApply(t, pr, dir, ops)
		fzCheck(t, pr, dir, st)
	})
}

// ---- the pristine spool ----------------------------------------------------------------------

// fzRec is one record of a segment file, as the Chan wrote it.
type fzRec struct {
	seg      uint64
	index    uint64 // 1-based entry index in its segment (how cursor files v1 and v2 name it)
	off, end int64  // byte range of the framed entry (uvarint length and record); off names it in v3
	crc      uint32 // the record's CRC-32C, header bytes 20..24 (segment package doc)
	msgs     []string
}

const fzWAL = "00000000000000000001"

// fzCursor is a read position as the spool's cursor file holds it: the Offset first
// messages of the record at Index, and every record before it, are delivered. Index is
// the byte offset of the record's framing (its uvarint length) in the segment's WAL file
// if ByOffset (cursor file version 3 or 4), else its 1-based entry index (versions 1 and 2).
type fzCursor struct {
	Seg, Index uint64
	Offset     uint32
	ByOffset   bool
}

// fzCursorFile mirrors the spool's cursor file (documented in the spool package), read
// here independently of the spool's decoder. Version 1: "pcur", 1, three zero bytes, seg
// u64, index u64 (an entry index), offset u32, CRC-32C of bytes 0..28 (32 bytes).
// Version 2: "pcur", 2, three zero bytes, seg u64, index u64 (an entry index), offset
// u32, high u64, low u64, n u32, n extra bytes, CRC-32C of every byte before it (52+n
// bytes). Version 3: the layout of version 2, with index the record's byte offset.
// Version 4 (what the spool writes): version 3 with delivered u64 (messages of segment seg
// before the position) at 44, then n u32, the extra bytes, the CRC (60+n bytes). The extra
// bytes are the Chan's done sets (see fzDecodeDone).
type fzCursorFile struct {
	pos       fzCursor
	version   int
	high, low uint64
	extra     []byte
}

var fzCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// fzEncodeCursor writes a version 1 cursor file (still read by the spool, which translates
// its entry index to an offset at open): it carries no done sets, so after it every record
// at or after the cursor is read again whole. c.ByOffset is ignored.
func fzEncodeCursor(c fzCursor) []byte {
	b := make([]byte, 32)
	copy(b, "pcur")
	b[4] = 1
	binary.LittleEndian.PutUint64(b[8:], c.Seg)
	binary.LittleEndian.PutUint64(b[16:], c.Index)
	binary.LittleEndian.PutUint32(b[24:], c.Offset)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], fzCastagnoli))
	return b
}

// fzMaxExtra is the most extra bytes a version 2 to 4 cursor file may claim (spool.MaxExtra,
// restated: the oracle does not use the spool's code).
const fzMaxExtra = 64 << 20

func fzDecodeCursor(b []byte) (fzCursorFile, bool) {
	if len(b) < 8 || string(b[:4]) != "pcur" {
		return fzCursorFile{}, false
	}
	pos := func() fzCursor {
		return fzCursor{Seg: binary.LittleEndian.Uint64(b[8:]), Index: binary.LittleEndian.Uint64(b[16:]),
			Offset: binary.LittleEndian.Uint32(b[24:]), ByOffset: b[4] >= 3}
	}
	switch b[4] {
	case 1:
		if len(b) != 32 || crc32.Checksum(b[:28], fzCastagnoli) != binary.LittleEndian.Uint32(b[28:]) {
			return fzCursorFile{}, false
		}
		return fzCursorFile{pos: pos(), version: 1}, true
	case 2, 3, 4:
		at := uint64(44) // where n is
		if b[4] == 4 {
			at = 52
		}
		if uint64(len(b)) < at+8 {
			return fzCursorFile{}, false
		}
		n := uint64(binary.LittleEndian.Uint32(b[at:]))
		if n > fzMaxExtra || uint64(len(b)) != at+8+n ||
			crc32.Checksum(b[:at+4+n], fzCastagnoli) != binary.LittleEndian.Uint32(b[at+4+n:]) {
			return fzCursorFile{}, false
		}
		cf := fzCursorFile{pos: pos(), version: int(b[4]),
			high: binary.LittleEndian.Uint64(b[28:]), low: binary.LittleEndian.Uint64(b[36:])}
		if n > 0 {
			cf.extra = slices.Clone(b[at+4 : at+4+n])
		}
		return cf, true
	}
	return fzCursorFile{}, false
}

// fzDone is what the done sets say of one record: how many messages it holds, its CRC,
// and which of its messages are done.
type fzDone struct {
	count int
	crc   uint32
	done  []bool
}

// fzDoneVersion is the done sets' version byte. recovery.go documents the layout below as
// "version 2" but writes 3 (doneVersion); the byte the Chan writes is the one that counts.
const fzDoneVersion = 3

// fzDecodeDone reads the Chan's done sets (documented in recovery.go), independently of
// the Chan's decoder:
//
//	"pd" | version | uvarint records | per record:
//	    uvarint seg | uvarint index (the record's byte offset since cursor file version 3) |
//	    uvarint count | crc u32 (the record's CRC-32C, little endian, as in its header) |
//	    uvarint sent (its messages before this index were handed out) |
//	    uvarint runs | per run: uvarint start (from the previous run's end) | uvarint length
//
// The map is keyed by segment and byte offset. A record's set applies only to the record
// at that segment and offset with that count and CRC. false: not a valid encoding (the
// Chan then applies none of it).
func fzDecodeDone(b []byte) (map[[2]uint64]fzDone, bool) {
	if len(b) < 3 || string(b[:2]) != "pd" || b[2] != fzDoneVersion {
		return nil, false
	}
	p := b[3:]
	bad := false
	next := func() uint64 {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			bad = true
			return 0
		}
		p = p[k:]
		return v
	}
	out := map[[2]uint64]fzDone{}
	n := next()
	for i := uint64(0); i < n && !bad; i++ {
		seg, index, count := next(), next(), next()
		if bad || len(p) < 4 || count == 0 || count > 1<<24 {
			return nil, false
		}
		d := fzDone{count: int(count), crc: binary.LittleEndian.Uint32(p), done: make([]bool, count)}
		p = p[4:]
		if sent := next(); bad || sent > count { // what was handed out: nothing to the oracle
			return nil, false
		}
		runs := next()
		end := uint64(0)
		for j := uint64(0); j < runs && !bad; j++ {
			start, length := next(), next()
			if bad || length == 0 || start > count || length > count || end+start+length > count {
				return nil, false
			}
			for m := end + start; m < end+start+length; m++ {
				d.done[m] = true
			}
			end += start + length
		}
		out[[2]uint64{seg, index}] = d
	}
	if bad || len(p) != 0 {
		return nil, false
	}
	return out, true
}

// fzParseWAL reads a segment file written by the library: tidwall/wal's binary framing
// (uvarint length, then the record) around segment records.
func fzParseWAL(tb testing.TB, path string, seq uint64) []fzRec {
	tb.Helper()
	buf, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	r := segment.NewReader()
	defer r.Close()
	var out []fzRec
	for pos, index := 0, uint64(1); pos < len(buf); index++ {
		size, k := binary.Uvarint(buf[pos:])
		if k <= 0 || size > uint64(len(buf)-pos-k) {
			tb.Fatalf("%s: bad framing at %d", path, pos)
		}
		rec := buf[pos+k : pos+k+int(size)]
		b, err := r.Decode(rec)
		if err != nil {
			tb.Fatalf("%s: record %d at %d: %v", path, index, pos, err)
		}
		fr := fzRec{seg: seq, index: index, off: int64(pos), end: int64(pos + k + int(size)),
			crc: binary.LittleEndian.Uint32(rec[20:24])}
		for i := 0; i < b.Count; i++ {
			fr.msgs = append(fr.msgs, string(b.Message(i)))
		}
		out = append(out, fr)
		pos = int(fr.end)
	}
	return out
}

type fzPristine struct {
	dir     string
	written map[string]bool // every message the Chan wrote
	recs    []fzRec         // the records on disk, by segment and index
	segs    []uint64
	cursor  fzCursor             // the cursor file's position (version 3: a byte offset)
	done    map[[2]uint64]fzDone // the cursor file's done sets (records past the cursor), by (seg, offset)
	format  []byte
}

const (
	fzMessages = 2000
	fzConsumed = 700 // acknowledged in order before Close: the cursor sits inside a middle segment
	fzAhead    = 100 // delivered after them, some acknowledged: done sets past the cursor
)

func fzMsg(i int) string {
	return fmt.Sprintf("fz-%05d-%08x", i, uint32(i)*2654435761)
}

// fzPristineSpool builds, once per process (the fuzz function body runs once in each
// worker), a spool with a Chan: fzMessages unique short messages spilled with a stalled
// consumer into tiny segments, then fzConsumed of them received and acknowledged, then
// fzAhead more received and some of them acknowledged (out of order: whole records, half
// records, none), then Close. The cursor file then holds done sets for records past the
// cursor, some wholly done in front of records that are not.
func fzPristineSpool(f *testing.F) *fzPristine {
	return fzBuild(f, filepath.Join(f.TempDir(), "pristine"))
}

func fzBuild(f *testing.F, dir string) *fzPristine {
	// Deterministic, so that every fuzz worker builds the same files and an input means the
	// same damage everywhere: batches of exactly 16 messages (the least a batch holds;
	// WithBatchBytes is too small to ask for more), one batch stored before the next is sent
	// (two compressors could store them in either order), the last one flushed by linger.
	src := make(chan string)
	c, err := New(dir, src, String, WithBuffer(0), WithSegmentSize(4<<10), WithBatchBytes(64),
		WithSync(SyncNever), WithLinger(5*time.Millisecond), WithAcks(1<<16))
	if err != nil {
		f.Fatal(err)
	}
	pr := &fzPristine{dir: dir, written: map[string]bool{}}
	for i := range fzMessages {
		m := fzMsg(i)
		src <- m
		pr.written[m] = true
		if (i+1)%16 != 0 && i+1 != fzMessages {
			continue
		}
		for deadline := time.Now().Add(20 * time.Second); c.Stats().InMemory != 0; {
			if time.Now().After(deadline) {
				f.Fatalf("spill did not finish: %+v", c.Stats())
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	acked := map[string]bool{}
	var first MsgID // the first delivery after the fzConsumed
	// The records' entry indexes in their segments, counted as they are delivered (an ID
	// names a record by its byte offset); valid past first.Seg, delivered from their start.
	ordinal := map[MsgID]uint64{}
	perSeg := map[uint64]uint64{}
	for i := range fzConsumed + fzAhead {
		var d Delivery[string]
		select {
		case d = <-c.Deliveries():
		case <-time.After(10 * time.Second):
			f.Fatalf("refill stalled: %+v", c.Stats())
		}
		if i == fzConsumed {
			first = d.ID
		}
		rec := MsgID{Seg: d.ID.Seg, Index: d.ID.Index}
		if _, ok := ordinal[rec]; !ok {
			perSeg[rec.Seg]++
			ordinal[rec] = perSeg[rec.Seg]
		}
		// After the first fzConsumed: nothing more of the cursor's segment (the cursor stays
		// where it is), then per record index: all, none, or the even messages.
		switch id, index := d.ID, ordinal[rec]; {
		case i < fzConsumed:
		case id.Seg == first.Seg:
			continue
		case index%3 == 2:
		case index%3 == 0 && id.Msg%2 == 0:
		default:
			continue
		}
		if err := c.Ack(d.Seq); err != nil {
			f.Fatal(err)
		}
		acked[d.Msg] = true
	}
	if err := c.Close(); err != nil {
		f.Fatal(err)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range names {
		if isSegDir(e.Name()) {
			seq, _ := strconv.ParseUint(e.Name(), 10, 64)
			pr.segs = append(pr.segs, seq)
			pr.recs = append(pr.recs, fzParseWAL(f, filepath.Join(dir, e.Name(), fzWAL), seq)...)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cursor"))
	if err != nil {
		f.Fatal(err)
	}
	cf, ok := fzDecodeCursor(b)
	if !ok || cf.version != 4 {
		f.Fatalf("cursor file %x does not decode as version 4", b)
	}
	pr.cursor = cf.pos
	if pr.done, ok = fzDecodeDone(cf.extra); !ok {
		f.Fatalf("cursor file's extra bytes %x do not decode as done sets", cf.extra)
	}
	if pr.format, err = os.ReadFile(filepath.Join(dir, "FORMAT")); err != nil {
		f.Fatal(err)
	}
	if len(pr.segs) < 4 || pr.cursor.Seg == pr.segs[0] && pr.cursor.Index == 0 {
		f.Fatalf("pristine spool too simple: segments %v, cursor %+v", pr.segs, pr.cursor)
	}
	// Every message not yet delivered is owed exactly once, and nothing else: the oracle
	// reads the undamaged spool as the Chan left it.
	owed, _, _, _ := fzOwed(pr, dir, &fzState{})
	count := map[string]int{}
	for _, m := range owed {
		count[m]++
	}
	for m := range pr.written {
		want := 1
		if acked[m] {
			want = 0
		}
		if count[m] != want {
			f.Fatalf("pristine spool: %q owed %d times, want %d", m, count[m], want)
		}
	}
	if len(owed) != fzMessages-len(acked) {
		f.Fatalf("pristine spool: %d messages owed, want %d", len(owed), fzMessages-len(acked))
	}
	// The done sets hold a record wholly done past the cursor, followed in its segment by
	// records that are not: damage in front of them must not make the done set of one
	// apply to another.
	interesting := false
	for i, r := range pr.recs {
		d, ok := pr.done[[2]uint64{r.seg, uint64(r.off)}]
		if ok && !slices.Contains(d.done, false) && r.seg > pr.cursor.Seg &&
			i+1 < len(pr.recs) && pr.recs[i+1].seg == r.seg {
			next, ok := pr.done[[2]uint64{r.seg, uint64(pr.recs[i+1].off)}]
			interesting = interesting || !ok || slices.Contains(next.done, false)
		}
	}
	if !interesting {
		f.Fatalf("pristine spool: no record wholly done past the cursor in front of one that is not: %v", pr.done)
	}
	return pr
}

func fzCopyDir(tb testing.TB, from, to string) {
	tb.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o640)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// fzFiles lists the regular files under dir, relative, sorted.
func fzFiles(dir string) []string {
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// fzSegs lists the segment directories under dir, by number.
func fzSegs(dir string) []uint64 {
	var out []uint64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && isSegDir(e.Name()) {
			seq, _ := strconv.ParseUint(e.Name(), 10, 64)
			out = append(out, seq)
		}
	}
	slices.Sort(out)
	return out
}

// ---- damage ------------------------------------------------------------------------------

type fzInput struct{ b []byte }

func (in *fzInput) byte() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *fzInput) u16() int { return int(in.byte()) | int(in.byte())<<8 }

func (in *fzInput) bytes(n int) []byte {
	n = min(n, len(in.b))
	v := in.b[:n]
	in.b = in.b[n:]
	return v
}

// fzState is what the damage did.
type fzState struct {
	log        []string
	touched    map[[2]uint64]bool // records (seg, index) whose bytes were changed or removed
	flipped    map[[2]uint64]bool // records changed in place (still there, damaged)
	gone       map[uint64]bool    // original segments deleted (directory or file)
	duplicated bool
	format     bool // FORMAT changed
}

// fzApply applies the operations encoded in ops to the spool in dir.
func fzApply(t *testing.T, pr *fzPristine, dir string, ops []byte) *fzState {
	st := &fzState{touched: map[[2]uint64]bool{}, flipped: map[[2]uint64]bool{}, gone: map[uint64]bool{}}
	// The value each flipped byte had before its first flip: two flips with one mask cancel,
	// and a record whose flipped bytes are all back to their values is not damaged.
	type place struct {
		rel string
		at  int64
	}
	before := map[place]byte{}
	orig := map[uint64]bool{}
	for _, s := range pr.segs {
		orig[s] = true
	}
	// recsOf returns the original records of the file rel (nil for any other file).
	recsOf := func(rel string) []fzRec {
		segName, base := filepath.Split(rel)
		segName = strings.TrimSuffix(segName, "/")
		seq, err := strconv.ParseUint(segName, 10, 64)
		if base != fzWAL || !isSegDir(segName) || err != nil || !orig[seq] || st.gone[seq] {
			return nil
		}
		var out []fzRec
		for _, r := range pr.recs {
			if r.seg == seq {
				out = append(out, r)
			}
		}
		return out
	}
	touch := func(r fzRec) { st.touched[[2]uint64{r.seg, r.index}] = true }
	in := &fzInput{ops}
	for n := 0; len(in.b) > 0 && n < 12; n++ {
		op := in.byte() % 10
		files := fzFiles(dir)
		segs := fzSegs(dir)
		var rel string
		if op <= 4 || op == 8 {
			if len(files) == 0 {
				continue
			}
			rel = files[int(in.byte())%len(files)]
		}
		p := filepath.Join(dir, rel)
		var size int64
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size()
		}
		switch op {
		case 0: // truncate
			at := int64(in.u16()) % (size + 1)
			if err := os.Truncate(p, at); err != nil {
				t.Fatal(err)
			}
			for _, r := range recsOf(rel) {
				if r.end > at {
					touch(r)
					delete(st.flipped, [2]uint64{r.seg, r.index}) // gone now, not damaged
				}
			}
			st.log = append(st.log, fmt.Sprintf("truncate %s at %d of %d", rel, at, size))
		case 1: // flip bits of one byte
			if size == 0 {
				continue
			}
			at := int64(in.u16()) % size
			mask := in.byte() | 0x01
			b, _ := os.ReadFile(p)
			if _, ok := before[place{rel, at}]; !ok {
				before[place{rel, at}] = b[at]
			}
			b[at] ^= mask
			fzWrite(t, p, b)
			for _, r := range recsOf(rel) {
				if r.off <= at && at < r.end {
					touch(r)
					changed := false
					for pl, v := range before {
						if pl.rel == rel && r.off <= pl.at && pl.at < r.end && int64(len(b)) > pl.at && b[pl.at] != v {
							changed = true
						}
					}
					st.flipped[[2]uint64{r.seg, r.index}] = changed
				}
			}
			st.log = append(st.log, fmt.Sprintf("flip %s[%d] ^= %#x", rel, at, mask))
		case 2: // append garbage
			data := in.bytes(int(in.byte())%64 + 1)
			fzAppend(t, p, data)
			st.log = append(st.log, fmt.Sprintf("append %q to %s", data, rel))
		case 3: // append zeros
			k := in.u16()%8192 + 1
			fzAppend(t, p, make([]byte, k))
			st.log = append(st.log, fmt.Sprintf("append %d zeros to %s", k, rel))
		case 4: // delete a file
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if rs := recsOf(rel); len(rs) > 0 {
				st.gone[rs[0].seg] = true
			}
			st.log = append(st.log, "delete "+rel)
		case 5: // delete a segment directory
			if len(segs) == 0 {
				continue
			}
			seq := segs[int(in.byte())%len(segs)]
			if err := os.RemoveAll(filepath.Join(dir, fmt.Sprintf("%020d", seq))); err != nil {
				t.Fatal(err)
			}
			if orig[seq] {
				st.gone[seq] = true
			}
			st.log = append(st.log, fmt.Sprintf("delete segment %d", seq))
		case 6: // copy a segment directory under another number
			if len(segs) == 0 {
				continue
			}
			from := segs[int(in.byte())%len(segs)]
			to := from + uint64(int64(int8(in.byte())))
			if to == from || orig[to] || slices.Contains(segs, to) {
				continue
			}
			fzCopyDir(t, filepath.Join(dir, fmt.Sprintf("%020d", from)), filepath.Join(dir, fmt.Sprintf("%020d", to)))
			st.duplicated = true
			st.log = append(st.log, fmt.Sprintf("copy segment %d to %d", from, to))
		case 7: // a valid cursor pointing anywhere
			var base uint64
			if len(segs) > 0 {
				base = segs[int(in.byte())%len(segs)]
			}
			c := fzCursor{Seg: base + uint64(int64(int8(in.byte()))), Index: uint64(in.byte()), Offset: uint32(in.byte())}
			fzWrite(t, filepath.Join(dir, "cursor"), fzEncodeCursor(c))
			st.log = append(st.log, fmt.Sprintf("cursor := %+v", c))
		case 8: // overwrite a range with zeros (a lost page)
			if size == 0 {
				continue
			}
			at := int64(in.u16()) % size
			k := int64(in.u16()%4096 + 1)
			b, _ := os.ReadFile(p)
			end := min(at+k, size)
			for _, r := range recsOf(rel) {
				lo, hi := max(r.off, at), min(r.end, end)
				if lo < hi && slices.ContainsFunc(b[lo:hi], func(c byte) bool { return c != 0 }) {
					touch(r)
					st.flipped[[2]uint64{r.seg, r.index}] = true
				}
			}
			clear(b[at:end])
			fzWrite(t, p, b)
			st.log = append(st.log, fmt.Sprintf("zero %s[%d:%d]", rel, at, end))
		case 9: // garbage as the cursor
			data := in.bytes(int(in.byte()) % 40)
			fzWrite(t, filepath.Join(dir, "cursor"), data)
			st.log = append(st.log, fmt.Sprintf("cursor := %q", data))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "FORMAT")); err != nil || !bytes.Equal(b, pr.format) {
		// Refused (ErrVersion), unless FORMAT is gone with everything but the lock file:
		// then the directory is what an interrupted creation leaves, and a new spool.
		st.format = true
		if errors.Is(err, fs.ErrNotExist) {
			ents, _ := os.ReadDir(dir)
			st.format = slices.ContainsFunc(ents, func(e fs.DirEntry) bool { return e.Name() != "LOCK" })
		}
	}
	// A record flipped in place and later cut off or deleted is gone, not damaged.
	for k := range st.flipped {
		if st.gone[k[0]] {
			delete(st.flipped, k)
		}
	}
	return st
}

func fzWrite(tb testing.TB, p string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(p, b, 0o640); err != nil {
		tb.Fatal(err)
	}
}

func fzAppend(tb testing.TB, p string, data []byte) {
	tb.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// ---- the oracle -------------------------------------------------------------------------------

// fzOwed returns the messages that must come out: those of every untouched record at or
// after the cursor the spool will use, less those the done sets mark done. The spool's
// documented rules: a missing or damaged cursor, or one past the last segment, means the
// first segment, unless a version 3 or 4 cursor names the very start of the segment
// right after the last (all consumed); a cursor into a missing segment means the start of the next one. A
// version 3 cursor names its record by byte offset; a version 1 cursor (what the damage
// writes) by entry index, which the spool translates at open (to an earlier record if
// damage in front may have shifted the indexes: duplicates, never loss). The done sets
// (the extra bytes of a version 3 cursor file that decodes) name records by segment and
// byte offset, and apply to a record only if they give it its own message count and CRC;
// a version 1 cursor file, or a damaged one, has none: every record at or after the
// cursor is read whole again.
//
// bound is how many times each message may come out at most (without copied segments):
// its copies in the records the spool may read (those of the cursor's segment and after,
// since damage in front of a version 1 cursor makes it resume earlier), less the copies
// marked done: damage cannot move a record's offset, so the done sets always find the
// records they name.
func fzOwed(pr *fzPristine, dir string, st *fzState) (owed []string, cur fzCursor, read map[[2]uint64]bool, bound map[string]int) {
	// The segments Open finds (segment directories holding anything: an empty one is a
	// creation cut short), and those it can read (holding their WAL file; the others are
	// set aside, and a cursor into one means the start of the next segment).
	var found, segs []uint64
	for _, s := range fzSegs(dir) {
		p := filepath.Join(dir, fmt.Sprintf("%020d", s))
		if ents, err := os.ReadDir(p); err == nil && len(ents) > 0 {
			found = append(found, s)
		}
		if fi, err := os.Stat(filepath.Join(p, fzWAL)); err == nil && fi.Mode().IsRegular() {
			segs = append(segs, s)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cursor"))
	cf, ok := fzDecodeCursor(b)
	cur = cf.pos
	var done map[[2]uint64]fzDone
	// A version 3 or 4 cursor at the very start of the segment right after the last one
	// means every segment is consumed (what the reader writes after the newest; a kill
	// before its deletion).
	nextStart := len(found) > 0 && cur.ByOffset && cur.Index == 0 && cur.Offset == 0 && cur.Seg == found[len(found)-1]+1
	if err != nil || !ok || (len(found) > 0 && cur.Seg > found[len(found)-1] && !nextStart) {
		cur = fzCursor{ByOffset: true} // the start of the first segment: offset 0
		if len(found) > 0 {
			cur.Seg = found[0]
		}
	} else if len(cf.extra) > 0 && cf.version >= 3 {
		// nil if damaged: the Chan applies none of it. The done sets of a version 2 file
		// are keyed by entry index and match no record (duplicates, never loss).
		done, _ = fzDecodeDone(cf.extra)
	}
	if !cur.ByOffset {
		cur.Index = max(cur.Index, 1) // index 0 in a version 1 file means the first entry
	}
	read = map[[2]uint64]bool{}
	bound = map[string]int{}
	for _, r := range pr.recs {
		k := [2]uint64{r.seg, r.index}
		if !slices.Contains(segs, r.seg) || st.gone[r.seg] || r.seg < cur.Seg {
			continue
		}
		// Done sets name records by byte offset, which damage elsewhere cannot change: a
		// copy marked done never comes out again.
		d, hasDone := done[[2]uint64{r.seg, uint64(r.off)}]
		isDone := func(i int) bool { return hasDone && d.count == len(r.msgs) && d.crc == r.crc && d.done[i] }
		for i, m := range r.msgs {
			if !isDone(i) {
				bound[m]++
			}
		}
		at := r.index // where the record is, as the cursor names records
		if cur.ByOffset {
			at = uint64(r.off)
		}
		var from int
		switch {
		case r.seg > cur.Seg, at > cur.Index:
			from = 0
		case at == cur.Index:
			from = min(int(cur.Offset), len(r.msgs))
		default:
			continue
		}
		read[k] = true
		if st.touched[k] {
			continue
		}
		for i := from; i < len(r.msgs); i++ {
			if !isDone(i) {
				owed = append(owed, r.msgs[i])
			}
		}
	}
	return owed, cur, read, bound
}

func fzCheck(t *testing.T, pr *fzPristine, dir string, st *fzState) {
	before := fzSnapshot(dir)
	owed, cur, read, bound := fzOwed(pr, dir, st)
	t.Logf("damage: %q; effective cursor %+v (pristine %+v); %d messages owed", st.log, cur, pr.cursor, len(owed))

	var mu sync.Mutex
	var reports []error
	handler := func(err error) { mu.Lock(); reports = append(reports, err); mu.Unlock() }
	src := make(chan string)
	close(src)
	c, err := New(dir, src, String, WithBuffer(16), WithErrorHandler(handler), WithSync(SyncNever))
	if st.format {
		// FORMAT damaged: a directory that is not a spool of this version. Refused, untouched.
		if !errors.Is(err, ErrVersion) {
			if err == nil {
				c.Close()
			}
			t.Fatalf("New with a damaged FORMAT file: %v, want ErrVersion", err)
		}
		if after := fzSnapshot(dir); !maps.Equal(before, after) {
			t.Fatalf("a refused directory was changed")
		}
		return
	}
	if err != nil {
		t.Fatalf("New after damage: %v", err)
	}
	got, ok := fzDrain(c.Out(), 20*time.Second)
	if !ok {
		t.Fatalf("drain hung after %d messages; stats %+v", len(got), c.Stats())
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	stats := c.Stats()

	// Nothing false; nothing twice unless a segment was copied, or the message is on disk
	// twice and the done sets do not mark one copy done (see fzOwed).
	count := map[string]int{}
	for _, m := range got {
		if !pr.written[m] {
			t.Fatalf("delivered %q, which was never written", m)
		}
		count[m]++
		if count[m] == max(bound[m], 1)+1 && !st.duplicated {
			t.Errorf("delivered %q %d times, at most %d copies of it may be read", m, count[m], max(bound[m], 1))
		}
	}
	// Everything owed.
	var missing []string
	for _, m := range owed {
		if count[m] == 0 {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d owed messages not delivered, e.g. %q", len(missing), len(owed), missing[:min(4, len(missing))])
	}
	// Damage to a record that is read is reported, as ErrCorrupt.
	mu.Lock()
	reported := slices.Clone(reports)
	mu.Unlock()
	damagedRead := false
	for k, damaged := range st.flipped {
		if damaged && read[k] {
			damagedRead = true
		}
	}
	if damagedRead && stats.Corrupt == 0 {
		t.Errorf("a record that was read was damaged, but nothing was reported: stats %+v", stats)
	}
	for _, err := range reported {
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("report %v does not wrap ErrCorrupt", err)
		}
	}
	// Everything read, nothing left counted: what damage cost is in Dropped (or was never
	// counted), not in OnDisk for good.
	if stats.OnDisk != 0 || stats.InMemory != 0 {
		t.Errorf("after the drain: OnDisk %d InMemory %d, want 0; stats %+v", stats.OnDisk, stats.InMemory, stats)
	}
	if t.Failed() {
		t.Logf("reports: %v", reported)
		return
	}

	// Recovered: the next open has nothing left to deliver.
	src2 := make(chan string)
	close(src2)
	c, err = New(dir, src2, String, WithErrorHandler(handler))
	if err != nil {
		t.Fatalf("second New: %v", err)
	}
	again, ok := fzDrain(c.Out(), 20*time.Second)
	if !ok {
		t.Fatalf("second drain hung")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if len(again) > 0 {
		t.Errorf("a second open after a full drain delivered %d messages again, e.g. %q", len(again), again[0])
	}
}

// fzDrain receives until Out closes, failing (false) after timeout.
func fzDrain(out <-chan string, timeout time.Duration) ([]string, bool) {
	var got []string
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-out:
			if !ok {
				return got, true
			}
			got = append(got, m)
		case <-deadline.C:
			return got, false
		}
	}
}

// fzSnapshot maps every file under dir to its content.
func fzSnapshot(dir string) map[string]string {
	out := map[string]string{}
	for _, rel := range fzFiles(dir) {
		b, _ := os.ReadFile(filepath.Join(dir, rel))
		out[rel] = string(b)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			out[e.Name()+"/"] = ""
		}
	}
	return out
}
