package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fixture is a closed spool of several sealed segments and a record layout.
type fixture struct {
	dir     string
	written []string
	recs    []recInfo
	segs    []string
}

func newFixture(t testing.TB, name string, nb, per int) fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	bs := batches(name, nb, per)
	writeSpool(t, dir, testOpts(), bs)
	f := fixture{dir: dir, written: flatten(bs), recs: layout(t, dir), segs: segNames(t, dir)}
	if len(f.segs) < 4 {
		t.Fatalf("fixture has %d segments, want >= 4", len(f.segs))
	}
	for _, s := range f.segs[:len(f.segs)-1] {
		if len(segRecs(f.recs, s)) < 3 {
			t.Fatalf("fixture segment %s holds %d records, want >= 3", s, len(segRecs(f.recs, s)))
		}
	}
	return f
}

// clone copies the fixture into a fresh directory.
func (f fixture) clone(t testing.TB) fixture {
	t.Helper()
	g := f
	g.dir = filepath.Join(t.TempDir(), "spool")
	copyDir(t, f.dir, g.dir)
	return g
}

// except returns the messages of every record that does not satisfy touched.
func (f fixture) except(touched func(recInfo) bool) []string {
	return msgsOf(f.recs, func(r recInfo) bool { return !touched(r) })
}

func segNum(t testing.TB, name string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(name, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (r recInfo) same(o recInfo) bool { return r.seg == o.seg && r.index == o.index }

// recoverAll opens a damaged spool, reads everything and checks the contract common to
// every kind of damage: Open succeeds, nothing never written comes out, everything in
// want comes out, and every report wraps ErrCorrupt.
func recoverAll(t testing.TB, f fixture, want []string) ([]string, []error) {
	t.Helper()
	got, reports := readAll(t, f.dir, testOpts())
	checkNoFalse(t, got, f.written)
	checkHas(t, got, want)
	for _, err := range reports {
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("report %q does not wrap ErrCorrupt", err)
		}
	}
	return got, reports
}

// reopenClean appends to a recovered spool and checks that a further Open reports nothing
// and delivers exactly the new messages.
func reopenClean(t testing.TB, dir string) {
	t.Helper()
	bs := batches("after", 4, 2)
	var c corruptions
	opts := testOpts()
	opts.OnCorrupt = c.add
	s := mustOpen(t, dir, opts)
	appendAll(t, s, bs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, c.list())
	got, reports := readAll(t, dir, testOpts())
	checkClean(t, reports)
	checkExactlyOnce(t, got, flatten(bs))
}

func brokenFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range topNames(t, dir) {
		if strings.HasSuffix(n, ".broken") {
			out = append(out, n)
		}
	}
	return out
}

func flipByte(t testing.TB, p string, off int64, mask byte) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= mask
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t testing.TB, p string, data []byte) {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

// ---- torn tails and junk at the end of the newest segment ------------------------------

// The writer died at every possible byte of the newest segment's last record.
func TestTornTailEveryOffset(t *testing.T) {
	base := newFixture(t, "torn", 24, 3)
	newest := base.segs[len(base.segs)-1]
	recs := segRecs(base.recs, newest)
	last := recs[len(recs)-1]
	orig, err := os.ReadFile(walPath(base.dir, newest))
	if err != nil {
		t.Fatal(err)
	}
	for cut := last.off; cut < last.end; cut++ {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			// The writer died before sealing: no meta, the file ends mid-record.
			if err := os.Remove(filepath.Join(f.dir, newest, metaName)); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(walPath(f.dir, newest), cut); err != nil {
				t.Fatal(err)
			}
			var c corruptions
			opts := testOpts()
			opts.OnCorrupt = c.add
			s := mustOpen(t, f.dir, opts)
			// Cut back to the last whole record at Open, before anything is read.
			if sz := fileSize(t, walPath(f.dir, newest)); sz != last.off {
				t.Errorf("after Open the newest segment is %d bytes, want %d (last whole record)", sz, last.off)
			}
			broken := brokenFiles(t, f.dir)
			if cut > last.off {
				checkReported(t, c.list(), newest, last.off, last.off)
				if len(broken) != 1 {
					t.Fatalf("evidence files %v, want one", broken)
				}
				b, _ := os.ReadFile(filepath.Join(f.dir, broken[0]))
				if !bytes.Equal(b, orig[last.off:cut]) {
					t.Errorf("evidence holds %x, want the cut bytes %x", b, orig[last.off:cut])
				}
			} else {
				checkClean(t, c.list())
				if len(broken) != 0 {
					t.Errorf("evidence files %v for a clean cut", broken)
				}
			}
			want := f.except(func(r recInfo) bool { return r.same(last) })
			if u := s.Stats().Undelivered; u != int64(len(want)) {
				t.Errorf("Undelivered %d after Open, want %d", u, len(want))
			}
			got := drain(t, s)
			checkExactlyOnce(t, got, want)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			reopenClean(t, f.dir)
		})
	}
}

func TestTailJunk(t *testing.T) {
	base := newFixture(t, "junk", 24, 3)
	header := makeRecord(t, "never-written-1", "never-written-2")
	cases := []struct {
		name string
		junk []byte
	}{
		{"one zero", []byte{0}},
		{"zeros", make([]byte, 100)},
		{"a page of zeros", make([]byte, 4096)},
		{"garbage", []byte("\x83\x01some garbage that is not a record \xff\xfe\x00\x17pc")},
		{"0xff", bytes.Repeat([]byte{0xff}, 64)},
		{"length only", []byte{0x80, 0x01}},
		{"header-like", append([]byte{byte(len(header))}, header[:30]...)},
		{"whole record with bad crc", func() []byte {
			r := bytes.Clone(header)
			r[len(r)-1] ^= 1
			return append([]byte{byte(len(r))}, r...)
		}()},
	}
	for _, tc := range cases {
		// newest: the segment being written at a crash (no meta file); old: a sealed one;
		// sealed newest: the newest, sealed (junk there is damage, as in an old one).
		for _, where := range []string{"newest", "old", "sealed newest"} {
			t.Run(tc.name+"/"+where, func(t *testing.T) {
				t.Parallel()
				f := base.clone(t)
				seg := f.segs[len(f.segs)-1]
				switch where {
				case "old":
					seg = f.segs[1]
				case "newest":
					if err := os.Remove(filepath.Join(f.dir, seg, metaName)); err != nil {
						t.Fatal(err)
					}
				}
				p := walPath(f.dir, seg)
				size := fileSize(t, p)
				appendBytes(t, p, tc.junk)
				got, reports := recoverAll(t, f, f.written)
				checkExactlyOnce(t, got, f.written)
				checkReported(t, reports, seg, size, size)
				if where == "newest" {
					if len(brokenFiles(t, f.dir)) != 1 {
						t.Errorf("evidence files %v, want one", brokenFiles(t, f.dir))
					}
				} else if _, err := os.Stat(filepath.Join(f.dir, seg+".bad", walFile)); err != nil {
					t.Errorf("damaged old segment not kept as evidence: %v", err)
				}
				reopenClean(t, f.dir)
			})
		}
	}
}

// Many torn tails over time: evidence is kept but bounded.
func TestBrokenEvidenceBounded(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < maxBroken+4; i++ {
		writeSpool(t, dir, testOpts(), batches(fmt.Sprint("b", i), 1, 1))
		segs := segNames(t, dir)
		appendBytes(t, walPath(dir, segs[len(segs)-1]), []byte{0, 0, 0})
		os.Remove(filepath.Join(dir, segs[len(segs)-1], metaName)) // killed before sealing
	}
	s := mustOpen(t, dir, testOpts())
	defer s.Close()
	if n := len(brokenFiles(t, dir)); n == 0 || n > maxBroken {
		t.Errorf("%d evidence files, want 1..%d", n, maxBroken)
	}
}

// ---- damage inside old, sealed segments -----------------------------------------------

// A bit flipped anywhere in one record of a sealed segment: that record is skipped and
// reported, every other record is delivered, and the segment is kept as NAME.bad.
func TestBitFlipSealedSegment(t *testing.T) {
	base := newFixture(t, "flip", 24, 3)
	seg := base.segs[1]
	recs := segRecs(base.recs, seg)
	victim := recs[1] // the records after it in the same segment must survive
	for off := victim.off; off < victim.end; off++ {
		masks := []byte{1 << (off % 8)} // one bit per byte, every bit position in turn
		if off < victim.off+2 {
			masks = []byte{0x01, 0x40, 0x80} // the length prefix: its value and continuation bit
		}
		for _, mask := range masks {
			t.Run(fmt.Sprintf("off%d^%#x", off, mask), func(t *testing.T) {
				t.Parallel()
				f := base.clone(t)
				flipByte(t, walPath(f.dir, seg), off, mask)
				damaged, _ := os.ReadFile(walPath(f.dir, seg))
				want := f.except(func(r recInfo) bool { return r.same(victim) })
				got, reports := recoverAll(t, f, want)
				checkExactlyOnce(t, got, want)
				checkReported(t, reports, seg, victim.off, victim.off)
				kept, err := os.ReadFile(filepath.Join(f.dir, seg+".bad", walFile))
				if err != nil {
					t.Errorf("damaged segment not set aside as %s.bad: %v", seg, err)
				} else if !bytes.Equal(kept, damaged) {
					t.Errorf("evidence in %s.bad differs from the damaged file", seg)
				}
				if _, err := os.Stat(filepath.Join(f.dir, seg)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("damaged segment still under its own name after it was consumed: %v", err)
				}
			})
		}
	}
}

// Damage to the framing in the middle of a sealed segment: the scanner resyncs and
// delivers the records after it.
func TestFramingDamageSealedSegment(t *testing.T) {
	base := newFixture(t, "frame", 24, 3)
	seg := base.segs[2]
	recs := segRecs(base.recs, seg)
	victim := recs[1]
	cases := []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"length zeroed", func(b []byte) []byte { b[victim.off] = 0; return b }},
		{"length 0xff", func(b []byte) []byte { b[victim.off] = 0xff; return b }},
		{"length 0xff x10", func(b []byte) []byte {
			for i := victim.off; i < victim.off+10; i++ {
				b[i] = 0xff
			}
			return b
		}},
		{"length too long by one", func(b []byte) []byte { b[victim.off]++; return b }},
		{"length too short by one", func(b []byte) []byte { b[victim.off]--; return b }},
		{"byte inserted inside", func(b []byte) []byte { return slices.Insert(b, int(victim.off)+7, 0x42) }},
		{"byte removed", func(b []byte) []byte { return slices.Delete(b, int(victim.off)+5, int(victim.off)+6) }},
		{"record zeroed", func(b []byte) []byte { clear(b[victim.off:victim.end]); return b }},
	}
	// Junk in front of a record does not damage the record: resync finds it.
	cases = append(cases, struct {
		name   string
		damage func(b []byte) []byte
	}{"junk before a record", func(b []byte) []byte { return slices.Insert(b, int(victim.off), 0x42, 0, 0xff) }})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			p := walPath(f.dir, seg)
			b, _ := os.ReadFile(p)
			if err := os.WriteFile(p, tc.damage(b), 0o640); err != nil {
				t.Fatal(err)
			}
			want := f.except(func(r recInfo) bool { return r.same(victim) })
			if i == len(cases)-1 {
				want = f.written
			}
			got, reports := recoverAll(t, f, want)
			checkExactlyOnce(t, got, want)
			checkReported(t, reports, seg, victim.off, victim.off)
			if _, err := os.Stat(filepath.Join(f.dir, seg+".bad", walFile)); err != nil {
				t.Errorf("damaged segment not kept as evidence: %v", err)
			}
		})
	}
}

// ---- missing and empty segments -------------------------------------------------------

func TestMissingOrEmptySegment(t *testing.T) {
	base := newFixture(t, "miss", 24, 3)
	cases := []struct {
		name   string
		seg    func(f fixture) string
		damage func(t *testing.T, f fixture, seg string)
		report bool // damage that can be told from a normal state must be reported
	}{
		{"middle segment removed", func(f fixture) string { return f.segs[1] },
			func(t *testing.T, f fixture, seg string) { os.RemoveAll(filepath.Join(f.dir, seg)) }, false},
		{"first segment removed", func(f fixture) string { return f.segs[0] },
			func(t *testing.T, f fixture, seg string) { os.RemoveAll(filepath.Join(f.dir, seg)) }, false},
		{"newest segment removed", func(f fixture) string { return f.segs[len(f.segs)-1] },
			func(t *testing.T, f fixture, seg string) { os.RemoveAll(filepath.Join(f.dir, seg)) }, false},
		{"old segment file emptied", func(f fixture) string { return f.segs[1] },
			func(t *testing.T, f fixture, seg string) { os.Truncate(walPath(f.dir, seg), 0) }, true},
		{"newest segment file emptied", func(f fixture) string { return f.segs[len(f.segs)-1] },
			func(t *testing.T, f fixture, seg string) { os.Truncate(walPath(f.dir, seg), 0) }, false},
		{"old segment without WAL file", func(f fixture) string { return f.segs[1] },
			func(t *testing.T, f fixture, seg string) { os.Remove(walPath(f.dir, seg)) }, true},
		{"newest segment without WAL file", func(f fixture) string { return f.segs[len(f.segs)-1] },
			func(t *testing.T, f fixture, seg string) { os.Remove(walPath(f.dir, seg)) }, true},
		{"old segment cut at a record boundary", func(f fixture) string { return f.segs[1] },
			func(t *testing.T, f fixture, seg string) {
				os.Truncate(walPath(f.dir, seg), segRecs(f.recs, seg)[1].off)
			}, true},
		// A sealed segment (it has its meta) was fsynced before the meta was written, so
		// no crash can take whole records off it, newest or not.
		{"sealed newest segment cut at a record boundary", func(f fixture) string { return f.segs[len(f.segs)-1] },
			func(t *testing.T, f fixture, seg string) {
				os.Truncate(walPath(f.dir, seg), segRecs(f.recs, seg)[1].off)
			}, true},
		{"segment is a file", func(f fixture) string { return f.segs[1] },
			func(t *testing.T, f fixture, seg string) {
				os.RemoveAll(filepath.Join(f.dir, seg))
				os.WriteFile(filepath.Join(f.dir, seg), []byte("x"), 0o640)
			}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			seg := tc.seg(f)
			tc.damage(t, f, seg)
			want := f.except(func(r recInfo) bool { return r.seg == seg })
			got, reports := recoverAll(t, f, want)
			if tc.report {
				checkReported(t, reports, seg, 0, -1)
			}
			// Records of the damaged segment that are still whole may come out too.
			checkNoFalse(t, got, f.written)
			reopenClean(t, f.dir)
		})
	}
}

// A crash right after a new segment was created leaves an empty directory or file with
// no meta: that is a normal state, not damage.
func TestEmptyNewestSegmentFromCrash(t *testing.T) {
	f := newFixture(t, "crash", 24, 3)
	next := fmt.Sprintf("%020d", segNum(t, f.segs[len(f.segs)-1])+1)
	if err := os.MkdirAll(filepath.Join(f.dir, next), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(walPath(f.dir, next), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	got, reports := recoverAll(t, f, f.written)
	checkClean(t, reports)
	checkExactlyOnce(t, got, f.written)
	reopenClean(t, f.dir)
}

// ---- the cursor ------------------------------------------------------------------------

func TestCursorDamage(t *testing.T) {
	base := newFixture(t, "cur", 24, 3)
	// Read the first records of the second segment, leaving the cursor inside it.
	first := len(segRecs(base.recs, base.segs[0])) + 2
	s := mustOpen(t, base.dir, testOpts())
	delivered := readN(t, s, first)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	at := readCursorFile(t, base.dir)
	if seg := fmt.Sprintf("%020d", at.Seg); seg != base.segs[1] || at.Index != uint64(segRecs(base.recs, base.segs[1])[1].off)+1 {
		t.Fatalf("cursor at %+v, want %s just after its second record", at, base.segs[1])
	}
	base.recs = layout(t, base.dir) // the first segment is gone
	rest := msgsOf(base.recs, func(r recInfo) bool { return !(r.seg == base.segs[1] && r.index < 3) })
	_ = delivered

	cases := []struct {
		name   string
		damage func(t *testing.T, f fixture)
		report bool
		want   func(f fixture) []string // exactly these, when not nil
	}{
		{"missing", func(t *testing.T, f fixture) { os.Remove(filepath.Join(f.dir, cursorName)) }, false, nil},
		{"empty", func(t *testing.T, f fixture) { os.WriteFile(filepath.Join(f.dir, cursorName), nil, 0o640) }, true, nil},
		{"bit flip", func(t *testing.T, f fixture) { flipByte(t, filepath.Join(f.dir, cursorName), 17, 0x04) }, true, nil},
		{"garbage", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, cursorName), []byte("not a cursor at all, no"), 0o640)
		}, true, nil},
		{"truncated", func(t *testing.T, f fixture) { os.Truncate(filepath.Join(f.dir, cursorName), 20) }, true, nil},
		{"past the last segment", func(t *testing.T, f fixture) {
			writeCursorFile(t, f.dir, Cursor{Seg: segNum(t, f.segs[len(f.segs)-1]) + 10, Index: 1})
		}, true, nil},
		{"at the start of a segment past the last", func(t *testing.T, f fixture) {
			// What the reader writes after the newest segment: a kill before its deletion.
			writeCursorFile(t, f.dir, Cursor{Seg: segNum(t, f.segs[len(f.segs)-1]) + 1})
		}, false, func(f fixture) []string { return []string{} }},
		{"at the start of a segment further past the last", func(t *testing.T, f fixture) {
			// Not what the reader writes: damage, read from the first segment again.
			writeCursorFile(t, f.dir, Cursor{Seg: segNum(t, f.segs[len(f.segs)-1]) + 2})
		}, true, nil},
		{"before the first segment", func(t *testing.T, f fixture) {
			writeCursorFile(t, f.dir, Cursor{Seg: 1, Index: 7})
		}, false, nil},
		{"into a deleted segment", func(t *testing.T, f fixture) {
			os.RemoveAll(filepath.Join(f.dir, f.segs[1]))
		}, false, func(f fixture) []string {
			return msgsOf(f.recs, func(r recInfo) bool { return r.seg != f.segs[1] })
		}},
		{"into a segment deleted along with the next", func(t *testing.T, f fixture) {
			os.RemoveAll(filepath.Join(f.dir, f.segs[1]))
			os.RemoveAll(filepath.Join(f.dir, f.segs[2]))
		}, false, func(f fixture) []string {
			return msgsOf(f.recs, func(r recInfo) bool { return r.seg != f.segs[1] && r.seg != f.segs[2] })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			tc.damage(t, f)
			want := rest
			if tc.want != nil {
				want = tc.want(f)
			}
			var wantReported []string
			got, reports := recoverAll(t, f, append(wantReported, want...))
			if tc.want != nil {
				checkExactlyOnce(t, got, want)
			}
			if tc.report {
				if len(reports) == 0 {
					t.Errorf("damaged cursor not reported")
				}
			} else {
				checkClean(t, reports)
			}
			reopenClean(t, f.dir)
		})
	}
}

// ---- leftovers of interrupted operations ----------------------------------------------

func TestLeftovers(t *testing.T) {
	base := newFixture(t, "left", 24, 3)
	cases := []struct {
		name string
		make func(t *testing.T, f fixture)
	}{
		{"cursor.tmp", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, cursorName+".tmp"), []byte("half a cur"), 0o640)
		}},
		{"cursor.tmp without cursor", func(t *testing.T, f fixture) {
			os.Remove(filepath.Join(f.dir, cursorName))
			os.WriteFile(filepath.Join(f.dir, cursorName+".tmp"), encodeCursor(cursorFile{pos: Cursor{Seg: 99, Index: 3}})[:10], 0o640)
		}},
		{"meta.tmp in old segment", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[1], metaName+".tmp"), []byte("pmet"), 0o640)
		}},
		{"meta.tmp in newest segment", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[len(f.segs)-1], metaName+".tmp"), []byte("pmet"), 0o640)
		}},
		{"tidwall TEMP file", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[1], walFile+".TEMP"), []byte("temp"), 0o640)
		}},
		{"tidwall START and END files", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[2], "00000000000000000002.START"), []byte("s"), 0o640)
			os.WriteFile(filepath.Join(f.dir, f.segs[len(f.segs)-1], "00000000000000000003.END"), []byte("e"), 0o640)
		}},
		{"broken.tmp", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[1]+".123.broken.tmp"), []byte("x"), 0o640)
		}},
		{"FORMAT.tmp", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, formatName+".tmp"), []byte("pelichan-spool 1\n"), 0o640)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := base.clone(t)
			tc.make(t, f)
			got, reports := recoverAll(t, f, f.written)
			checkClean(t, reports)
			checkExactlyOnce(t, got, f.written)
			for _, n := range topNames(t, f.dir) {
				if strings.HasSuffix(n, ".tmp") {
					t.Errorf("leftover %s not removed", n)
				}
			}
			reopenClean(t, f.dir)
		})
	}
}

// The first Open of a directory died while writing FORMAT: the next Open must not refuse
// the directory as foreign.
func TestInterruptedCreation(t *testing.T) {
	for _, leftovers := range [][]string{{lockName}, {lockName, formatName + ".tmp"}} {
		t.Run(strings.Join(leftovers, "+"), func(t *testing.T) {
			dir := t.TempDir()
			for _, n := range leftovers {
				if err := os.WriteFile(filepath.Join(dir, n), nil, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Open(dir, testOpts())
			if err != nil {
				t.Fatalf("Open after an interrupted creation: %v", err)
			}
			appendAll(t, s, batches("new", 2, 2))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			got, reports := readAll(t, dir, testOpts())
			checkClean(t, reports)
			checkExactlyOnce(t, got, flatten(batches("new", 2, 2)))
		})
	}
}

// ---- meta files ------------------------------------------------------------------------

func TestMetaMissingOrDamaged(t *testing.T) {
	base := newFixture(t, "meta", 24, 3)
	cases := []struct {
		name   string
		damage func(t *testing.T, f fixture)
	}{
		{"missing", func(t *testing.T, f fixture) { os.Remove(filepath.Join(f.dir, f.segs[1], metaName)) }},
		{"all missing", func(t *testing.T, f fixture) {
			for _, s := range f.segs {
				os.Remove(filepath.Join(f.dir, s, metaName))
			}
		}},
		{"bit flip", func(t *testing.T, f fixture) { flipByte(t, filepath.Join(f.dir, f.segs[1], metaName), 17, 0x20) }},
		{"truncated", func(t *testing.T, f fixture) { os.Truncate(filepath.Join(f.dir, f.segs[2], metaName), 7) }},
		{"garbage", func(t *testing.T, f fixture) {
			os.WriteFile(filepath.Join(f.dir, f.segs[0], metaName), bytes.Repeat([]byte("meta"), 13), 0o640)
		}},
		{"a directory", func(t *testing.T, f fixture) {
			os.Remove(filepath.Join(f.dir, f.segs[1], metaName))
			os.MkdirAll(filepath.Join(f.dir, f.segs[1], metaName), 0o750)
		}},
	}
	for _, tc := range cases {
		for _, partial := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/partial=%v", tc.name, partial), func(t *testing.T) {
				t.Parallel()
				f := base.clone(t)
				var done []string
				if partial {
					// Leave the cursor inside the first segment, mid-record.
					s := mustOpen(t, f.dir, testOpts())
					done = readN(t, s, 1)
					r, err := s.Next()
					if err != nil {
						t.Fatal(err)
					}
					done = append(done, decodeRecord(t, r.Data)[:1]...)
					if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 1}); err != nil {
						t.Fatal(err)
					}
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
				tc.damage(t, f)
				want := slices.DeleteFunc(slices.Clone(f.written), func(m string) bool { return slices.Contains(done, m) })
				var c corruptions
				opts := testOpts()
				opts.OnCorrupt = c.add
				s := mustOpen(t, f.dir, opts)
				if u := s.Stats().Undelivered; u != int64(len(want)) {
					t.Errorf("Undelivered %d after Open, want %d", u, len(want))
				}
				got := drain(t, s)
				if u := s.Stats().Undelivered; u != 0 {
					t.Errorf("Undelivered %d at the end", u)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				checkClean(t, c.list())
				checkExactlyOnce(t, got, want)
			})
		}
	}
}

// ---- damage to a segment being read, before the cursor -----------------------------------

// One stretch of damage that spans two records in front of the cursor must not cost a
// record behind the cursor that it did not touch, nor deliver again one before it: the
// cursor is a byte offset, which the damage cannot shift.
func TestDamageBeforeCursorSpanningRecords(t *testing.T) {
	f := newFixture(t, "span", 24, 3)
	seg := f.segs[1]
	recs := segRecs(f.recs, seg)
	if len(recs) < 4 {
		t.Skipf("segment %s holds %d records, need 4", seg, len(recs))
	}
	s := mustOpen(t, f.dir, testOpts())
	done := readN(t, s, len(segRecs(f.recs, f.segs[0]))+3) // cursor at entry 4 of seg
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c := readCursorFile(t, f.dir); fmt.Sprintf("%020d", c.Seg) != seg || c.Index != uint64(recs[2].off)+1 {
		t.Fatalf("cursor %+v, want %s just after its third record", c, seg)
	}
	// Zero from the middle of entry 2 to the middle of entry 3 (a lost page, say).
	p := walPath(f.dir, seg)
	b, _ := os.ReadFile(p)
	clear(b[(recs[1].off+recs[1].end)/2 : (recs[2].off+recs[2].end)/2])
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
	want := f.except(func(r recInfo) bool { return r.seg == f.segs[0] || (r.seg == seg && r.index <= 3) })
	got, _ := recoverAll(t, f, want)
	checkNoFalse(t, append(got, done...), f.written)
	checkExactlyOnce(t, got, want)
}

// A lost cursor on an empty spool lets segment numbers start over, so a damaged segment
// can come to be set aside under a name whose NAME.bad is already taken by the evidence
// of an earlier one. Both must be kept and the spool must go on deleting what it consumes.
func TestSetAsideNameTaken(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 2; round++ {
		os.Remove(filepath.Join(dir, cursorName)) // a lost cursor: tolerated damage
		bs := batches(fmt.Sprint("again", round), 24, 3)
		writeSpool(t, dir, testOpts(), bs)
		segs := segNames(t, dir)
		recs := segRecs(layout(t, dir), segs[0])
		flipByte(t, walPath(dir, segs[0]), recs[1].off+10, 1)
		var c corruptions
		opts := testOpts()
		opts.OnCorrupt = c.add
		s := mustOpen(t, dir, opts)
		got := drain(t, s) // fails on an Ack error
		if err := s.Close(); err != nil {
			t.Errorf("round %d: Close: %v", round, err)
		}
		checkNoFalse(t, got, flatten(bs))
		checkReported(t, c.list(), segs[0], recs[1].off, recs[1].off)
		if left := segNames(t, dir); len(left) != 0 {
			t.Errorf("round %d: segments %v left after everything was consumed", round, left)
		}
	}
	bad := 0
	for _, n := range topNames(t, dir) {
		if strings.HasSuffix(n, ".bad") {
			bad++
		}
	}
	if bad != 2 {
		t.Errorf("%d segments kept as evidence, want 2: %v", bad, topNames(t, dir))
	}
}

// A crash right after a front segment has been read: its deletion moves the acknowledged
// position to its resume cursor, which only the front segment's meta file records. The
// cursor file must say so before the front segment goes, or Open (finding a cursor into a
// missing segment: "the start of the next one") delivers again what was delivered before
// the Close that wrote the front segment.
func TestCrashAfterFrontConsumed(t *testing.T) {
	dir := t.TempDir()
	bs := batches("front-crash", 12, 3)
	all := flatten(bs)
	writeSpool(t, dir, testOpts(), bs)

	// Deliver up to message 1 of entry 2 of the second segment, then shut down in ordered
	// mode: two messages taken back from Out go in front.
	s := mustOpen(t, dir, testOpts())
	second := segNum(t, segNames(t, dir)[1])
	delivered, inSecond := 0, 0
	for {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if r.Pos.Seg == second {
			inSecond++
		}
		if inSecond == 2 {
			delivered++
			if err := s.Ack(Cursor{Seg: second, Index: r.Pos.Index, Offset: 1}); err != nil {
				t.Fatal(err)
			}
			break
		}
		delivered += r.Count
	}
	if err := s.Front([][]byte{makeRecord(t, "taken-back-1", "taken-back-2")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The next run delivers the front segment and acknowledges it: the front segment is
	// deleted. Then the process is killed: the directory as it is now is the crash image.
	s = mustOpen(t, dir, testOpts())
	if got := readN(t, s, 1); !slices.Equal(got, []string{"taken-back-1", "taken-back-2"}) {
		t.Fatalf("first record after Front: %q", got)
	}
	if segs := segNames(t, dir); segNum(t, segs[0]) != second {
		t.Fatalf("segments %v: the front segment was not deleted once read", segs)
	}
	waitBackground(s)
	crash := t.TempDir()
	copyDir(t, dir, crash)
	s.Close()

	got, reports := readAll(t, crash, testOpts())
	checkClean(t, reports)
	if want := all[delivered:]; !slices.Equal(got, want) {
		t.Errorf("after the crash delivered %d messages, want the %d from the resume cursor on\ngot  %q\nwant %q",
			len(got), len(want), got, want)
	}
}
