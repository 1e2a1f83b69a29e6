package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FrontExcept on a cursor inside an earlier front segment F1, at an offset inside its
// first record, with done marking messages of that record past the offset, one record
// wholly and another in part: the new front segment holds the new records and exactly the
// rest not done, in order, its time stamps kept; Undelivered says so before and after
// Close, and after the next Open.
func TestReview7FrontExceptCounts(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 10, NoSync: true}
	s := mustOpen(t, dir, opts)
	appendAll(t, s, batches("b", 3, 5)) // a backlog behind F1
	var f1 [][]byte
	for r := 0; r < 4; r++ {
		var ms []string
		for i := 0; i < 5; i++ {
			ms = append(ms, fmt.Sprintf("f1-%d-%d", r, i))
		}
		f1 = append(f1, makeRecord(t, ms...))
	}
	if err := s.Front(f1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, dir, opts)
	defer s.Close()
	if got := s.Stats().Undelivered; got != 35 {
		t.Fatalf("Undelivered %d after Open, want 35", got)
	}
	var recs []Record
	for range 4 {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, Record{Pos: r.Pos, Data: slices.Clone(r.Data), Header: r.Header})
	}
	if recs[0].Pos.Seg >= FirstSeq {
		t.Fatalf("first record in segment %d: no front segment", recs[0].Pos.Seg)
	}
	// The first two messages of F1's first record delivered: the cursor's offset.
	if err := s.Ack(Cursor{Seg: recs[0].Pos.Seg, Index: recs[0].Pos.Index, Offset: 2}); err != nil {
		t.Fatal(err)
	}
	doneSet := map[[2]uint64]bool{}
	mark := func(rec, i int) { doneSet[[2]uint64{recs[rec].Pos.Index, uint64(i)}] = true }
	mark(0, 4)
	for i := 0; i < 5; i++ {
		mark(1, i)
	}
	mark(2, 0)
	mark(2, 1)
	mark(0, 0) // before the offset: already counted delivered
	done := func(off uint64, i int) bool { return doneSet[[2]uint64{off, uint64(i)}] }
	before := s.Stats().Undelivered
	if err := s.FrontExcept([][]byte{makeRecord(t, "n-0", "n-1", "n-2")}, done); err != nil {
		t.Fatal(err)
	}
	want := []string{"n-0", "n-1", "n-2", "f1-0-2", "f1-0-3", "f1-2-2", "f1-2-3", "f1-2-4",
		"f1-3-0", "f1-3-1", "f1-3-2", "f1-3-3", "f1-3-4"}
	for _, b := range batches("b", 3, 5) {
		want = append(want, b...)
	}
	st := s.Stats()
	t.Logf("Undelivered %d before FrontExcept, %d after", before, st.Undelivered)
	if st.Undelivered != int64(len(want)) {
		t.Errorf("Undelivered %d after FrontExcept, want %d", st.Undelivered, len(want))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The time stamps of F1's records, kept by the new front segment (whole or re-encoded).
	var times []int64
	for _, r := range recs {
		times = append(times, r.Header.Time)
	}

	s = mustOpen(t, dir, opts)
	if got := s.Stats().Undelivered; got != int64(len(want)) {
		t.Errorf("Undelivered %d after the next Open, want %d", got, len(want))
	}
	var got []string
	var gotTimes []int64
	for {
		r, err := s.Next()
		if err != nil {
			break
		}
		ms := decodeRecord(t, r.Data)
		got = append(got, ms[r.Pos.Offset:]...)
		gotTimes = append(gotTimes, r.Header.Time)
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("after the next Open:\n got %q\nwant %q", got, want)
	}
	// gotTimes: the new record, then F1's records 0, 2, 3.
	if len(gotTimes) >= 4 && (gotTimes[1] != times[0] || gotTimes[2] != times[2] || gotTimes[3] != times[3]) {
		t.Errorf("time stamps of F1's rest not kept: %v, F1's %v", gotTimes[1:4], times)
	}
	if st := s.Stats(); st.Undelivered != 0 {
		t.Errorf("Undelivered %d after reading everything", st.Undelivered)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && isSegName(e.Name()) {
			t.Errorf("segment %s left after everything was read", filepath.Join(dir, e.Name()))
		}
	}
}
