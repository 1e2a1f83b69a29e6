package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// segmentFiles returns the WAL files of a freshly written spool: real scanner input.
func segmentFiles(tb testing.TB, dir string) [][]byte {
	tb.Helper()
	writeSpool(tb, dir, Options{SegmentSize: 250, NoSync: true}, batches("seed", 8, 2))
	var out [][]byte
	for _, name := range segNames(tb, dir) {
		b, err := os.ReadFile(walPath(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzScan checks scanFile on arbitrary bytes: no panic, every entry a verified record
// framed exactly where it says, entries and damage tiling the buffer in order, and good
// marking the clean prefix.
func FuzzScan(f *testing.F) {
	files := segmentFiles(f, filepath.Join(f.TempDir(), "seed"))
	for _, b := range files {
		f.Add(b)
		f.Add(b[:len(b)-1])                     // torn tail
		f.Add(b[:len(b)/2])                     // torn mid-record
		f.Add(append(bytes.Clone(b), 0, 0, 0))  // zeros appended
		f.Add(append(bytes.Clone(b), b[:7]...)) // a record's start appended
		f.Add(append(bytes.Clone(b[5:]), b...)) // junk in front
		f.Add(append(bytes.Clone(b), 0x80, 1))  // a length alone
		f.Add(append([]byte{0xff, 0xff}, b...)) // bad framing in front
		f.Add(append(append([]byte{}, b...), b...))
		d := bytes.Clone(b)
		d[len(d)/3] ^= 0x10 // a bit flip inside
		f.Add(d)
		d = bytes.Clone(b)
		d[0] ^= 0x01 // the first length prefix
		f.Add(d)
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{24, 'p', 'c', 1, 0})
	f.Add(bytes.Repeat([]byte{0x80}, 20))

	f.Add(craftedCandidates(4 << 10))

	f.Fuzz(func(t *testing.T, buf []byte) {
		ents, bad, good := scanFile(buf)
		// Within its budget, scanFile finds exactly what trying every offset finds.
		if n := len(bad); n == 0 || !bad[n-1].gaveUp {
			rents, rbad, rgood := scanFileRef(buf)
			if len(rents) != len(ents) || len(rbad) != len(bad) || rgood != good {
				t.Fatalf("scanFile: %d entries, %d damaged, good %d; the reference: %d, %d, %d",
					len(ents), len(bad), good, len(rents), len(rbad), rgood)
			}
			for i := range ents {
				if ents[i].offset != rents[i].offset || ents[i].index != rents[i].index {
					t.Fatalf("entry %d at %d (index %d), the reference's at %d (%d)", i, ents[i].offset, ents[i].index, rents[i].offset, rents[i].index)
				}
			}
			for i := range bad {
				if bad[i].offset != rbad[i].offset || bad[i].length != rbad[i].length || bad[i].index != rbad[i].index || bad[i].err != rbad[i].err {
					t.Fatalf("damage %d %+v, the reference's %+v", i, bad[i], rbad[i])
				}
			}
		}
		if good < 0 || good > int64(len(buf)) {
			t.Fatalf("good %d outside [0, %d]", good, len(buf))
		}
		// Walk entries and damage together in offset order: they must tile buf.
		type span struct {
			off, end int64
			index    uint64
			ent      *entry
		}
		var spans []span
		for i := range ents {
			e := &ents[i]
			size, k := binary.Uvarint(buf[e.offset:])
			if k <= 0 || size != uint64(len(e.data)) {
				t.Fatalf("entry at %d: framing says %d bytes (k=%d), entry holds %d", e.offset, size, k, len(e.data))
			}
			end := e.offset + int64(k) + int64(size)
			if !bytes.Equal(buf[e.offset+int64(k):end], e.data) {
				t.Fatalf("entry at %d does not alias its framed bytes", e.offset)
			}
			h, err := segment.Verify(e.data)
			if err != nil {
				t.Fatalf("entry at %d fails Verify: %v", e.offset, err)
			}
			if h != e.hdr {
				t.Fatalf("entry at %d: header %+v, Verify says %+v", e.offset, e.hdr, h)
			}
			spans = append(spans, span{e.offset, end, e.index, e})
		}
		for _, d := range bad {
			if d.length <= 0 {
				t.Fatalf("damage at %d of length %d", d.offset, d.length)
			}
			if !errors.Is(d.err, ErrCorrupt) {
				t.Fatalf("damage at %d: error %v does not wrap ErrCorrupt", d.offset, d.err)
			}
			spans = append(spans, span{d.offset, d.offset + d.length, d.index, nil})
		}
		for i := 1; i < len(ents); i++ {
			if ents[i].offset <= ents[i-1].offset {
				t.Fatalf("entries out of order: %d after %d", ents[i].offset, ents[i-1].offset)
			}
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].off < spans[j].off })
		pos := int64(0)
		for i, s := range spans {
			if s.off != pos {
				t.Fatalf("span %d starts at %d, previous ended at %d (gap or overlap)", i, s.off, pos)
			}
			if s.index != uint64(i+1) {
				t.Fatalf("span %d at %d has index %d", i, s.off, s.index)
			}
			pos = s.end
		}
		if pos != int64(len(buf)) {
			t.Fatalf("spans end at %d, buffer at %d", pos, len(buf))
		}
		wantGood := int64(len(buf))
		if len(bad) > 0 {
			wantGood = bad[0].offset
		}
		if good != wantGood {
			t.Fatalf("good %d, want %d (the clean prefix)", good, wantGood)
		}
		// Cutting at good leaves a clean file with the same leading entries.
		ents2, bad2, good2 := scanFile(buf[:good])
		if len(bad2) != 0 || good2 != good {
			t.Fatalf("the clean prefix scans with damage %+v, good %d", bad2, good2)
		}
		for i, e := range ents2 {
			if e.offset != ents[i].offset {
				t.Fatalf("prefix entry %d at %d, was at %d", i, e.offset, ents[i].offset)
			}
		}
	})
}

// scanFileRef is scanFile as it was before its work was bounded: after damage, every
// offset is tried in turn, its CRC checked whatever the cost. The oracle for scanFile.
func scanFileRef(buf []byte) (entries []entry, bad []damage, good int64) {
	pos := 0
	index := uint64(1)
	clean := true
	for pos < len(buf) {
		if rec, n, ok := frameAt(buf, pos); ok {
			h, err := segment.Verify(rec)
			if err == nil {
				entries = append(entries, entry{index: index, offset: int64(pos), data: rec, hdr: h})
				index++
				pos += n
				if clean {
					good = int64(pos)
				}
				continue
			}
		}
		clean = false
		start := pos
		next := len(buf)
		for p := pos + 1; p < len(buf); p++ {
			if rec, _, ok := frameAt(buf, p); ok {
				if _, err := segment.Verify(rec); err == nil {
					next = p
					break
				}
			}
		}
		_, _, framed := frameAt(buf, start)
		err := errTornTail
		if next < len(buf) || framed {
			err = errBadRecord
		}
		bad = append(bad, damage{index: index, offset: int64(start), length: int64(next - start), err: err})
		index++
		pos = next
	}
	return entries, bad, good
}

// fuzzTemplate is a closed spool that fuzz iterations copy and damage.
type fuzzTemplate struct {
	dir     string
	written []string
	recs    []recInfo
	pending []string // messages not yet delivered by the template's cursor
	cursor  Cursor
	files   []string // regular files, relative to dir, sorted
	segs    []string
}

func newFuzzTemplate(tb testing.TB, dir string, partial bool) *fuzzTemplate {
	tb.Helper()
	opts := Options{SegmentSize: 250, NoSync: true}
	bs := batches("fz", 18, 3)
	writeSpool(tb, dir, opts, bs)
	tp := &fuzzTemplate{dir: dir, written: flatten(bs)}
	var done []string
	if partial {
		// Leave the cursor inside the second segment, mid-record.
		s := mustOpen(tb, dir, opts)
		first := segRecs(layout(tb, dir), segNames(tb, dir)[0])
		done = readN(tb, s, len(first)+1)
		r, err := s.Next()
		if err != nil {
			tb.Fatal(err)
		}
		done = append(done, decodeRecord(tb, r.Data)[:1]...)
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 1}); err != nil {
			tb.Fatal(err)
		}
		if err := s.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	tp.cursor = readCursorFile(tb, dir)
	tp.recs = layout(tb, dir)
	tp.segs = segNames(tb, dir)
	isDone := map[string]bool{}
	for _, m := range done {
		isDone[m] = true
	}
	for _, m := range tp.written {
		if !isDone[m] {
			tp.pending = append(tp.pending, m)
		}
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			tp.files = append(tp.files, rel)
		}
		return nil
	})
	sort.Strings(tp.files)
	if len(tp.segs) < 4 {
		tb.Fatalf("fuzz template has %d segments", len(tp.segs))
	}
	return tp
}

// FuzzOpenDamaged damages a small spool in one fuzzer-chosen way, opens it and reads it
// all: no panic, no message that was never written, and every record the damage did not
// touch delivered. A second Open of the recovered spool must hold up as well.
func FuzzOpenDamaged(f *testing.F) {
	base := f.TempDir()
	tps := []*fuzzTemplate{
		newFuzzTemplate(f, filepath.Join(base, "fresh"), false),
		newFuzzTemplate(f, filepath.Join(base, "partial"), true),
	}
	for op := byte(0); op < 8; op++ {
		for _, target := range []uint16{0, 1, 3, 5, 7, 12} {
			f.Add(op, target, uint32(13), []byte{0x10})
			f.Add(op|0x80, target, uint32(101), []byte("\x00\x00\x00garbage"))
		}
	}
	f.Add(byte(5), uint16(0), uint32(0), encodeCursor(cursorFile{pos: Cursor{Seg: firstSeq + 2, Index: 2, Offset: 1}}))
	f.Add(byte(4), uint16(2), uint32(40), []byte{})
	f.Add(byte(4), uint16(2), uint32(3), []byte{})
	// Found by fuzzing: an old segment emptied loses its records without a report.
	f.Add(byte(0), uint16(0), uint32(0), []byte{})
	// Found by fuzzing: 13 bytes stomped across the boundary of two records in front of
	// the cursor shifted the entry indexes after them (when positions were entry
	// indexes): a record behind the cursor was skipped, and nothing was reported. Byte
	// offsets do not shift: every untouched record after the cursor is owed.
	f.Add(byte(0x86), uint16(0), uint32(62), []byte("0000000000000"))

	f.Fuzz(func(t *testing.T, op byte, target uint16, off uint32, data []byte) {
		tp := tps[int(op>>7)]
		dir := filepath.Join(t.TempDir(), "spool")
		copyDir(t, tp.dir, dir)

		// What the damage touched: a byte range of one file, a whole segment, or nothing.
		var (
			file          = tp.files[int(target)%len(tp.files)]
			seg           = tp.segs[int(target)%len(tp.segs)]
			lo, hi        = int64(-1), int64(-1) // damaged range of file
			lostSeg       string                 // a segment whose records may all be lost
			cursorTouched bool
			mayRefuse     bool // damage to FORMAT: ErrVersion is a right answer
			p             = filepath.Join(dir, file)
			size          int64
			dupName       string
		)
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size()
		}
		switch op & 7 {
		case 0: // truncate a file
			at := int64(off) % (size + 1)
			os.Truncate(p, at)
			lo, hi = at, 1<<62
		case 1: // flip bits of one byte
			if size == 0 {
				return
			}
			at := int64(off) % size
			mask := byte(0x01)
			if len(data) > 0 && data[0] != 0 {
				mask = data[0]
			}
			flipByte(t, p, at, mask)
			lo, hi = at, at+1
		case 2: // append bytes
			appendBytes(t, p, data)
			lo, hi = size, 1<<62
		case 3: // delete a segment directory
			os.RemoveAll(filepath.Join(dir, seg))
			file, lostSeg = "", seg
		case 4: // copy a segment directory under another name
			dupName = fmt.Sprintf("%020d", uint64(off)+uint64(firstSeq)-8)
			if len(data) >= 8 {
				dupName = fmt.Sprintf("%020d", binary.LittleEndian.Uint64(data))
			}
			if _, err := os.Stat(filepath.Join(dir, dupName)); err == nil {
				return
			}
			copyDir(t, filepath.Join(dir, seg), filepath.Join(dir, dupName))
			file = ""
		case 5: // overwrite the cursor
			file = cursorName
			p = filepath.Join(dir, file)
			os.WriteFile(p, data, 0o640)
			lo, hi = 0, 1<<62
		case 6: // overwrite bytes at an offset
			if size == 0 || len(data) == 0 {
				return
			}
			at := int64(off) % size
			b, _ := os.ReadFile(p)
			n := copy(b[at:], data)
			os.WriteFile(p, b, 0o640)
			lo, hi = at, at+int64(n)
		case 7: // remove a file
			os.Remove(p)
			lo, hi = 0, 1<<62
		}
		switch {
		case file == cursorName:
			cursorTouched = true
		case file == formatName:
			mayRefuse = true
		}

		// The records that must come out: every pending record the damage did not touch.
		// A changed cursor that still decodes may legitimately point anywhere: then
		// nothing is owed.
		owe := true
		if cursorTouched {
			b, err := os.ReadFile(filepath.Join(dir, cursorName))
			if cf, _, cerr := decodeCursor(b); err == nil && cerr == nil && cf.pos != tp.cursor {
				owe = false
			}
		}
		pend := map[string]bool{}
		for _, m := range tp.pending {
			pend[m] = true
		}
		var want []string
		for _, r := range tp.recs {
			walRel := filepath.Join(r.seg, walFile)
			switch {
			case !owe, r.seg == lostSeg:
				continue
			case file == walRel && r.off < hi && lo < r.end:
				continue // the damage overlaps this record
			}
			for _, m := range r.msgs {
				if pend[m] {
					want = append(want, m)
				}
			}
		}

		var c corruptions
		opts := Options{SegmentSize: 250, NoSync: true, OnCorrupt: c.add}
		s, err := Open(dir, opts)
		if err != nil {
			if mayRefuse && errors.Is(err, ErrVersion) {
				return
			}
			t.Fatalf("Open after damage (op %d, file %q, seg %s, dup %s): %v", op&7, file, seg, dupName, err)
		}
		got := fuzzDrain(t, s)
		st := s.Stats()
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		checkNoFalse(t, got, tp.written)
		checkHas(t, got, want)
		// Records lost to damage are reported: never a silent loss. (A deleted segment
		// directory cannot be told from a consumed one, and a rewritten cursor may
		// legitimately skip: those are exempt.)
		if owe && lostSeg == "" && len(c.list()) == 0 {
			delivered := map[string]bool{}
			for _, m := range got {
				delivered[m] = true
			}
			for _, m := range tp.pending {
				if !delivered[m] {
					t.Errorf("message %q lost without a corruption report", m)
					break
				}
			}
		}
		for _, err := range c.list() {
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("report %q does not wrap ErrCorrupt", err)
			}
		}
		if st.Undelivered < 0 {
			t.Errorf("Undelivered %d after reading everything", st.Undelivered)
		}
		if t.Failed() {
			t.Logf("op %d file %q seg %s dup %s range [%d,%d) reports %v", op&7, file, seg, dupName, lo, hi, c.list())
			return
		}

		// The recovered spool opens again, without panic and without inventing messages.
		s, err = Open(dir, Options{SegmentSize: 250, NoSync: true})
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		again := fuzzDrain(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		checkNoFalse(t, again, tp.written)
	})
}

// fuzzDrain reads everything like drain, with a bound against a reader that loops.
func fuzzDrain(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatalf("Next keeps returning records: %d so far", i)
		}
		r, err := s.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if int(r.Pos.Offset) > r.Count {
			t.Fatalf("record %+v: offset past its %d messages", r.Pos, r.Count)
		}
		msgs := decodeRecord(t, r.Data)
		out = append(out, msgs[r.Pos.Offset:]...)
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
}
