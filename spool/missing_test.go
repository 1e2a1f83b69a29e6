package spool

import (
	"os"
	"strconv"
	"testing"
)

// TakeMissing names each segment counted from its meta file, once the reader is done with
// it, with how many of its counted messages the reader did not find, and each segment set
// aside before it was counted (with 0); a healthy spool's are all 0.
func TestTakeMissing(t *testing.T) {
	base := newFixture(t, "miss", 24, 3)
	seg := base.segs[1]
	recs := segRecs(base.recs, seg)
	count := func(rs []recInfo) int64 { return int64(len(msgsOf(rs, nil))) }
	seq := func(name string) uint64 {
		t.Helper()
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   []Missing
	}{
		{"healthy", func(*testing.T, string) {}, nil},
		{"bit flip in a record", func(t *testing.T, dir string) {
			flipByte(t, walPath(dir, seg), recs[1].end-1, 0x10)
		}, []Missing{{seq(seg), count(recs[1:2])}}},
		{"cut after the first record", func(t *testing.T, dir string) {
			if err := os.Truncate(walPath(dir, seg), recs[0].end); err != nil {
				t.Fatal(err)
			}
		}, []Missing{{seq(seg), count(recs[1:])}}},
		{"file removed", func(t *testing.T, dir string) {
			if err := os.Remove(walPath(dir, seg)); err != nil {
				t.Fatal(err)
			}
		}, []Missing{{seq(seg), 0}}}, // counted in the background, which finds no file: never counted
		{"first segment's file emptied", func(t *testing.T, dir string) {
			if err := os.Truncate(walPath(dir, base.segs[0]), 0); err != nil {
				t.Fatal(err)
			}
		}, []Missing{{seq(base.segs[0]), count(segRecs(base.recs, base.segs[0]))}}}, // counted at Open
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := base.clone(t)
			tc.damage(t, f.dir)
			s := mustOpen(t, f.dir, testOpts())
			defer s.Close()
			drain(t, s)
			var got []Missing
			for {
				m := s.TakeMissing()
				if m == nil {
					break
				}
				got = append(got, m...)
			}
			// Every segment counted from its meta file appears once (those not named in
			// want with 0); none twice.
			seen := map[uint64]int64{}
			for _, m := range got {
				if _, ok := seen[m.Seg]; ok {
					t.Errorf("segment %d appears twice: %v", m.Seg, got)
				}
				seen[m.Seg] = m.Messages
			}
			for _, w := range tc.want {
				if n, ok := seen[w.Seg]; !ok || n != w.Messages {
					t.Errorf("TakeMissing: %v, want %v among them", got, w)
				}
				delete(seen, w.Seg)
			}
			for seg, n := range seen {
				if n != 0 {
					t.Errorf("TakeMissing: segment %d with %d, want 0 (%v)", seg, n, got)
				}
			}
			if len(got) < len(base.segs)-1 {
				t.Errorf("TakeMissing: %v: fewer segments than the %d sealed ones", got, len(base.segs)-1)
			}
		})
	}
}
