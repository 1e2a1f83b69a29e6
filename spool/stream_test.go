package spool

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The cursor file (version 4) carries the count of messages before the position in its
// segment, so Open need not read the segment; a version 3 file of the same position
// gives the same backlog by scanning it. Both deliver the same messages, with the
// position left mid-record and after a whole record (Ack's form off+1, from which the
// streaming reader finds the next record).
func TestCursorDeliveredCount(t *testing.T) {
	opts := Options{SegmentSize: 4 << 10, NoSync: true}
	bs := batches("dc", 12, 5)
	all := flatten(bs)
	for _, form := range []string{"mid-record", "whole record"} {
		for _, version := range []int{4, 3} {
			t.Run(form+"/v"+string(rune('0'+version)), func(t *testing.T) {
				dir := t.TempDir()
				writeSpool(t, dir, opts, bs)
				s := mustOpen(t, dir, opts)
				done := readN(t, s, 3)
				r, err := s.Next()
				if err != nil {
					t.Fatal(err)
				}
				c := Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}
				if form == "mid-record" {
					c = Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2}
					done = append(done, decodeRecord(t, r.Data)[:2]...)
				} else {
					done = append(done, decodeRecord(t, r.Data)...)
				}
				if err := s.Ack(c); err != nil {
					t.Fatal(err)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				cf, v, err := readCursorPath(filepath.Join(dir, cursorName))
				if err != nil || v != 4 || cf.delivered != uint64(len(done)) {
					t.Fatalf("cursor file version %d delivered %d (%v), want version 4 delivered %d", v, cf.delivered, err, len(done))
				}
				if version == 3 {
					if err := os.WriteFile(filepath.Join(dir, cursorName), encodeCursorV3(cf), 0o640); err != nil {
						t.Fatal(err)
					}
				}
				s = mustOpen(t, dir, opts)
				defer s.Close()
				if u := s.Stats().Undelivered; u != int64(len(all)-len(done)) {
					t.Errorf("Undelivered %d after Open, want %d", u, len(all)-len(done))
				}
				got := drain(t, s)
				if want := all[len(done):]; !slices.Equal(got, want) {
					t.Errorf("delivered %d messages, want the %d after the cursor:\n%q\n%q", len(got), len(want), got, want)
				}
				if u := s.Stats().Undelivered; u != 0 {
					t.Errorf("Undelivered %d after draining", u)
				}
			})
		}
	}
}

// A hostile count (more messages than the segment holds) is clamped: Undelivered never
// goes negative, and every message after the position is still delivered.
func TestCursorDeliveredCountClamped(t *testing.T) {
	opts := Options{SegmentSize: 4 << 10, NoSync: true}
	bs := batches("hc", 6, 4)
	dir := t.TempDir()
	writeSpool(t, dir, opts, bs)
	s := mustOpen(t, dir, opts)
	done := readN(t, s, 2) // the cursor inside the first segment, past its start
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cf, _, err := readCursorPath(filepath.Join(dir, cursorName))
	if err != nil {
		t.Fatal(err)
	}
	if cf.pos.Index == 0 || cf.delivered != uint64(len(done)) {
		t.Fatalf("cursor %+v delivered %d: want a position past the segment's start, %d delivered", cf.pos, cf.delivered, len(done))
	}
	cf.delivered = 1 << 60
	if err := os.WriteFile(filepath.Join(dir, cursorName), encodeCursor(cf), 0o640); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer s.Close()
	if u := s.Stats().Undelivered; u < 0 {
		t.Errorf("Undelivered %d after Open", u)
	}
	got := readN(t, s, 1)
	if u := s.Stats().Undelivered; u < 0 {
		t.Errorf("Undelivered %d after one record", u)
	}
	got = append(got, drain(t, s)...)
	if want := flatten(bs)[len(done):]; !slices.Equal(got, want) {
		t.Errorf("delivered %d messages, want the %d after the cursor", len(got), len(want))
	}
	if u := s.Stats().Undelivered; u != 0 {
		t.Errorf("Undelivered %d after draining", u)
	}
}
