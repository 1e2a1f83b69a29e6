package spool

import (
	"io"
	"os"
	"slices"
	"testing"
)

// posOf reads every record left with Next (acknowledging none) and returns each one's
// position by its first message, and the messages in order (Pos.Offset skipped).
func posOf(tb testing.TB, s *Spool) (map[string]Cursor, []string) {
	tb.Helper()
	pos := map[string]Cursor{}
	var msgs []string
	for {
		r, err := s.Next()
		if err == io.EOF {
			return pos, msgs
		}
		if err != nil {
			tb.Fatalf("Next: %v", err)
		}
		m := decodeRecord(tb, r.Data)
		pos[m[0]] = r.Pos
		msgs = append(msgs, m[r.Pos.Offset:]...)
	}
}

// Damage in front of a record no longer changes its position: a lost page over the
// boundary of two earlier records (the scanner sees one damaged stretch where two entries
// were, which shifted every later entry index) leaves the later records where Next and
// Append said they were, before and after a reopen, with the cursor behind the damage.
func TestDamageDoesNotShiftPositions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		acked int // records of the damaged segment acknowledged before the damage
	}{{"cursor at the start", 0}, {"cursor after the damage", 4}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{SegmentSize: 1 << 20, NoSync: true})
			bs := batches("shift", 8, 3)
			appended := map[string]Cursor{}
			for _, b := range bs {
				c, err := s.Append(makeRecord(t, b...))
				if err != nil {
					t.Fatal(err)
				}
				appended[b[0]] = c
			}
			before, _ := posOf(t, s) // the active segment, read through its wal.Log
			for m, c := range appended {
				if before[m] != c {
					t.Errorf("record %q: Next says %+v, Append said %+v", m, before[m], c)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, testOpts())
			sealed, _ := posOf(t, s) // the sealed segment, read through the scanner
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if !mapsEqual(sealed, appended) {
				t.Fatalf("positions read from the sealed segment %v, appended %v", sealed, appended)
			}
			recs := layout(t, dir)
			if tc.acked > 0 {
				s = mustOpen(t, dir, testOpts())
				readN(t, s, tc.acked)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
			// Zero from the middle of record 2 to the middle of record 3.
			p := walPath(dir, recs[0].seg)
			b, _ := os.ReadFile(p)
			clear(b[(recs[1].off+recs[1].end)/2 : (recs[2].off+recs[2].end)/2])
			if err := os.WriteFile(p, b, 0o640); err != nil {
				t.Fatal(err)
			}
			var c corruptions
			opts := testOpts()
			opts.OnCorrupt = c.add
			s = mustOpen(t, dir, opts)
			after, msgs := posOf(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			var want []string
			for i, b := range bs {
				if i >= max(tc.acked, 3) {
					want = append(want, b...)
					if after[b[0]] != appended[b[0]] {
						t.Errorf("record %d: position %+v after the damage, %+v before", i, after[b[0]], appended[b[0]])
					}
				} else if i < 1 && tc.acked == 0 {
					want = append(want, b...)
				}
			}
			if !slices.Equal(msgs, want) {
				t.Errorf("delivered\n%q\nwant\n%q", msgs, want)
			}
			if tc.acked == 0 && len(c.list()) == 0 {
				t.Errorf("the damage was not reported")
			}
		})
	}
}

func mapsEqual(a, b map[string]Cursor) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// The transitions of the read position: what Ack means for each kind of cursor, seen by
// what a reopened spool delivers and what Undelivered says.
func TestAckTransitions(t *testing.T) {
	bs := batches("ack", 6, 3) // one segment: records 0..5 of 3 messages
	all := flatten(bs)
	cases := []struct {
		name string
		read int                     // records read with Next first
		acks func([]Cursor) []Cursor // the Acks, given the records' positions
		want []string                // delivered after a reopen
	}{
		{"nothing", 3, func(p []Cursor) []Cursor { return nil }, all},
		{"the first record whole (offset+1)", 1, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[0].Seg, Index: p[0].Index + 1}}
		}, all[3:]},
		{"three records whole, one by one", 3, func(p []Cursor) []Cursor {
			var out []Cursor
			for _, c := range p[:3] {
				out = append(out, Cursor{Seg: c.Seg, Index: c.Index + 1})
			}
			return out
		}, all[9:]},
		{"part of a record (offset, k)", 3, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[2].Seg, Index: p[2].Index, Offset: 2}}
		}, all[8:]},
		{"part, then the rest of that record", 3, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[2].Seg, Index: p[2].Index, Offset: 1}, {Seg: p[2].Seg, Index: p[2].Index + 1}}
		}, all[9:]},
		{"every message of a record by its offset", 2, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[1].Seg, Index: p[1].Index, Offset: 3}}
		}, all[6:]},
		{"the next record's offset", 2, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[1].Seg, Index: p[2].Index}}
		}, all[6:]},
		{"the last record whole", 6, func(p []Cursor) []Cursor {
			return []Cursor{{Seg: p[5].Seg, Index: p[5].Index + 1}}
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSpool(t, dir, Options{SegmentSize: 1 << 20, NoSync: true}, bs)
			s := mustOpen(t, dir, testOpts())
			var p []Cursor
			for range tc.read {
				r, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				p = append(p, r.Pos)
			}
			for len(p) < len(bs) { // the positions of the records not read, from the file
				p = append(p, Cursor{Seg: p[0].Seg, Index: uint64(layout(t, dir)[len(p)].off)})
			}
			for _, c := range tc.acks(p) {
				if err := s.Ack(c); err != nil {
					t.Fatal(err)
				}
			}
			if u := s.Stats().Undelivered; u != int64(len(tc.want)) {
				t.Errorf("Undelivered %d after the acks, want %d", u, len(tc.want))
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, testOpts())
			if u := s.Stats().Undelivered; u != int64(len(tc.want)) {
				t.Errorf("Undelivered %d after reopening, want %d", u, len(tc.want))
			}
			got := drain(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("delivered\n%q\nwant\n%q", got, tc.want)
			}
			if len(tc.want) == 0 {
				if segs := segNames(t, dir); len(segs) != 0 {
					t.Errorf("segments %v left after everything was acknowledged", segs)
				}
			}
		})
	}
}

// An old cursor (an entry index) translates into the offset of the record that index
// named as the scanner counts entries, and keeps the old rule for damage in front of it
// that may have shifted indexes: reading resumes at that damage (duplicates, never loss).
func TestIndexToOffset(t *testing.T) {
	dir := t.TempDir()
	writeSpool(t, dir, Options{SegmentSize: 1 << 20, NoSync: true}, batches("idx", 6, 2))
	recs := layout(t, dir)
	buf, err := os.ReadFile(walPath(dir, recs[0].seg))
	if err != nil {
		t.Fatal(err)
	}
	seg := segNum(t, recs[0].seg)
	at := func(i int, k uint32) Cursor { return Cursor{Seg: seg, Index: uint64(recs[i].off), Offset: k} }
	// A bad CRC under an intact length: one entry, indexes unchanged.
	crc := slices.Clone(buf)
	crc[recs[1].off+20] ^= 0xff
	// A lost page over the boundary of records 2 and 3: one stretch for two entries.
	page := slices.Clone(buf)
	clear(page[(recs[1].off+recs[1].end)/2 : (recs[2].off+recs[2].end)/2])
	for _, tc := range []struct {
		name   string
		buf    []byte
		c      Cursor
		sealed uint64
		want   Cursor
	}{
		{"start", buf, Cursor{Seg: seg}, 6, Cursor{Seg: seg}},
		{"entry 1", buf, Cursor{Seg: seg, Index: 1}, 6, at(0, 0)},
		{"entry 4, message 1", buf, Cursor{Seg: seg, Index: 4, Offset: 1}, 6, at(3, 1)},
		{"past the last entry", buf, Cursor{Seg: seg, Index: 7}, 6, Cursor{Seg: seg, Index: uint64(len(buf))}},
		{"one bad entry in front", crc, Cursor{Seg: seg, Index: 4, Offset: 1}, 6, at(3, 1)},
		{"the cursor's own entry bad", crc, Cursor{Seg: seg, Index: 2, Offset: 1}, 6, at(1, 1)},
		{"a stretch of two entries in front", page, Cursor{Seg: seg, Index: 5, Offset: 1}, 6, at(1, 0)},
		{"entries missing against the sealed count", crc, Cursor{Seg: seg, Index: 4, Offset: 1}, 7, at(1, 0)},
		{"damage behind the cursor", page, Cursor{Seg: seg, Index: 1, Offset: 1}, 6, at(0, 1)},
	} {
		if got := indexToOffset(tc.buf, tc.c, tc.sealed); got != tc.want {
			t.Errorf("%s: %+v translates to %+v, want %+v", tc.name, tc.c, got, tc.want)
		}
	}
}

// Damage to the record the cursor is in, the last of its segment (found by FuzzRecovery):
// the records in front of it are no reason to take the segment for consumed; the reader
// reads it and reports the damage.
func TestDamageInCursorsLastRecordReported(t *testing.T) {
	dir := t.TempDir()
	writeSpool(t, dir, testOpts(), batches("last", 12, 3))
	recs := layout(t, dir)
	first := segRecs(recs, recs[0].seg)
	last := first[len(first)-1]
	s := mustOpen(t, dir, testOpts())
	readN(t, s, len(first)-1)
	r, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	flipByte(t, walPath(dir, last.seg), last.end-3, 0x31)
	_, reports := readAll(t, dir, testOpts())
	checkReported(t, reports, last.seg, last.off, last.off)
}
