package spool

import (
	"os"
	"slices"
	"strconv"
	"testing"
)

// TakeMissing names each segment counted from its meta file whose counted messages the
// reader did not all find, with how many it did not find, and each segment set aside
// before it was counted (with 0); a healthy spool has none.
func TestTakeMissing(t *testing.T) {
	base := newFixture(t, "miss", 24, 3)
	seg := base.segs[1]
	recs := segRecs(base.recs, seg)
	count := func(rs []recInfo) uint64 { return uint64(len(msgsOf(rs, nil))) }
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
			if !slices.Equal(got, tc.want) {
				t.Errorf("TakeMissing: %v, want %v", got, tc.want)
			}
		})
	}
}
