package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pelichan/pelichan/segment"
)

// Helpers of this file are prefixed insp so that they never clash with other test files.

var (
	inspMu   sync.Mutex
	inspW    *segment.Writer
	inspR    *segment.Reader
	inspBase = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
)

// inspTime is the fixed time of the i-th record written by inspWrite.
func inspTime(i int) time.Time { return inspBase.Add(time.Duration(i) * time.Minute) }

func inspRecord(tb testing.TB, t time.Time, msgs []string) []byte {
	tb.Helper()
	inspMu.Lock()
	defer inspMu.Unlock()
	if inspW == nil {
		inspW = segment.NewWriter(4096)
	}
	inspW.Reset()
	for _, m := range msgs {
		if err := inspW.AddBytes([]byte(m)); err != nil {
			tb.Fatal(err)
		}
	}
	inspW.SetTime(t.UnixNano())
	return bytes.Clone(inspW.Record())
}

func inspDecode(tb testing.TB, rec []byte) []string {
	tb.Helper()
	inspMu.Lock()
	defer inspMu.Unlock()
	if inspR == nil {
		inspR = segment.NewReader()
	}
	b, err := inspR.Decode(rec)
	if err != nil {
		tb.Fatalf("decode: %v", err)
	}
	out := make([]string, b.Count)
	for i := range out {
		out[i] = string(b.Message(i))
	}
	return out
}

// inspBatches returns n batches of per messages.
func inspBatches(n, per int) [][]string {
	out := make([][]string, n)
	for i := range out {
		for j := 0; j < per; j++ {
			out[i] = append(out[i], fmt.Sprintf("msg-%02d-%d %s", i, j, strings.Repeat("ab", i%5)))
		}
	}
	return out
}

var inspOpts = Options{SegmentSize: 200, NoSync: true}

// inspWrite makes a spool in dir holding one record per batch, record i at inspTime(i).
func inspWrite(tb testing.TB, dir string, bs [][]string) {
	tb.Helper()
	s, err := Open(dir, inspOpts)
	if err != nil {
		tb.Fatal(err)
	}
	for i, b := range bs {
		if _, err := s.Append(inspRecord(tb, inspTime(i), b)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
}

// inspConsume delivers the first n messages of the spool with Next and Ack, the last
// record possibly in part, and closes it.
func inspConsume(tb testing.TB, dir string, n int) {
	tb.Helper()
	s, err := Open(dir, inspOpts)
	if err != nil {
		tb.Fatal(err)
	}
	for n > 0 {
		r, err := s.Next()
		if err != nil {
			tb.Fatal(err)
		}
		k := min(n, r.Count-int(r.Pos.Offset))
		n -= k
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: r.Pos.Offset + uint32(k)}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
}

// inspDrain opens dir with the library and returns every message it delivers, and the
// corruption it reports.
func inspDrain(tb testing.TB, dir string) ([]string, []error) {
	tb.Helper()
	var reports []error
	opts := inspOpts
	opts.OnCorrupt = func(err error) { reports = append(reports, err) }
	s, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("the library cannot open the spool: %v", err)
	}
	var got []string
	for {
		r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := segment.Verify(r.Data); err == nil {
			inspMu.Lock()
			if inspR == nil {
				inspR = segment.NewReader()
			}
			_, derr := inspR.Decode(r.Data)
			inspMu.Unlock()
			if derr != nil {
				// What a Chan does with a record that passes its CRC but does not decode.
				reports = append(reports, derr)
			} else {
				got = append(got, inspDecode(tb, r.Data)[r.Pos.Offset:]...)
			}
		}
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	return got, reports
}

func inspDump(tb testing.TB, dir string, opts DumpOptions) (msgs []string, delivered int, problems []Problem) {
	tb.Helper()
	opts.OnProblem = func(p Problem) { problems = append(problems, p) }
	err := Dump(dir, opts, func(m Message) error {
		msgs = append(msgs, string(m.Data))
		if m.Delivered {
			delivered++
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("Dump: %v", err)
	}
	return msgs, delivered, problems
}

// inspSeg is one segment's layout, worked out by walking the framing independently of
// scanFile.
type inspSeg struct {
	name    string
	offsets []int64 // of each entry's framing
	first   int     // number of its first record among all records written
}

func inspLayout(tb testing.TB, dir string) []inspSeg {
	tb.Helper()
	names, err := readDirNames(dir)
	if err != nil {
		tb.Fatal(err)
	}
	slices.Sort(names)
	var out []inspSeg
	n := 0
	for _, name := range names {
		if !isSegName(name) {
			continue
		}
		buf, err := os.ReadFile(filepath.Join(dir, name, walFile))
		if err != nil {
			tb.Fatal(err)
		}
		sg := inspSeg{name: name, first: n}
		for pos := 0; pos < len(buf); {
			size, k := binary.Uvarint(buf[pos:])
			sg.offsets = append(sg.offsets, int64(pos))
			pos += k + int(size)
			n++
		}
		out = append(out, sg)
	}
	if len(out) < 3 {
		tb.Fatalf("want at least 3 segments for the tests, got %d", len(out))
	}
	return out
}

// inspTree fingerprints every file and directory under dir: name, mode, size, mtime and
// a hash of the contents.
func inspTree(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		v := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out[p] = v
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func inspSameTree(tb testing.TB, before, after map[string]string) {
	tb.Helper()
	for p, v := range before {
		if w, ok := after[p]; !ok {
			tb.Errorf("%s was removed", p)
		} else if v != w {
			tb.Errorf("%s changed: %s -> %s", p, v, w)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			tb.Errorf("%s was created", p)
		}
	}
}

// inspFixture is a spool of 12 records of 3 messages in several segments, of which the
// first 7 messages were delivered (the cursor is inside the third record).
type inspFixture struct {
	dir         string
	all         []string // every message, in order
	undelivered []string
	recs        [][]string
	segs        []inspSeg
}

const inspConsumed = 7

func newInspFixture(tb testing.TB) inspFixture {
	tb.Helper()
	f := inspFixture{dir: tb.TempDir(), recs: inspBatches(12, 3)}
	inspWrite(tb, f.dir, f.recs)
	inspConsume(tb, f.dir, inspConsumed)
	f.all = slices.Concat(f.recs...)
	f.undelivered = f.all[inspConsumed:]
	f.segs = inspLayout(tb, f.dir)
	return f
}

// without returns msgs minus the messages of the given records.
func (f inspFixture) without(msgs []string, recs ...int) []string {
	var drop []string
	for _, r := range recs {
		drop = append(drop, f.recs[r]...)
	}
	return slices.DeleteFunc(slices.Clone(msgs), func(m string) bool { return slices.Contains(drop, m) })
}

// ---- tests ------------------------------------------------------------------------------

func TestInspectClean(t *testing.T) {
	f := newInspFixture(t)
	before := inspTree(t, f.dir)
	r, err := Inspect(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != 1 {
		t.Errorf("Version %d", r.Version)
	}
	if r.Lock.Held {
		t.Errorf("lock held: %+v", r.Lock)
	}
	if len(r.Segments) != len(f.segs) {
		t.Fatalf("%d segments, want %d", len(r.Segments), len(f.segs))
	}
	var msgs int64
	for i, s := range r.Segments {
		if s.Name != f.segs[i].name || !s.Sealed || s.Records != int64(len(f.segs[i].offsets)) || len(s.Damage) != 0 {
			t.Errorf("segment %d: %+v, want %s sealed with %d records, no damage", i, s, f.segs[i].name, len(f.segs[i].offsets))
		}
		fi, err := os.Stat(filepath.Join(f.dir, s.Name, walFile))
		if err != nil || fi.Size() != s.FileBytes {
			t.Errorf("segment %s: FileBytes %d, file: %v %v", s.Name, s.FileBytes, fi, err)
		}
		if s.First != inspTime(f.segs[i].first) || s.Last != inspTime(f.segs[i].first+len(f.segs[i].offsets)-1) {
			t.Errorf("segment %s: times %v..%v", s.Name, s.First, s.Last)
		}
		msgs += s.Messages
	}
	if r.Records != 12 || r.Messages != 36 || msgs != 36 {
		t.Errorf("Records %d Messages %d (sum %d), want 12 and 36", r.Records, r.Messages, msgs)
	}
	if r.RawBytes <= 0 || r.RecordBytes <= 0 || r.FileBytes <= r.RecordBytes || r.Ratio != float64(r.RawBytes)/float64(r.RecordBytes) {
		t.Errorf("bytes: raw %d record %d file %d ratio %v", r.RawBytes, r.RecordBytes, r.FileBytes, r.Ratio)
	}
	want := CursorInfo{State: "ok", Seq: segNumOf(t, f.segs[0].name), Segment: f.segs[0].name, Index: uint64(f.segs[0].offsets[2]), Offset: 1,
		Version: 4, High: segNumOf(t, f.segs[len(f.segs)-1].name), Low: segNumOf(t, f.segs[0].name)}
	if r.Cursor != want {
		t.Errorf("cursor %+v, want %+v", r.Cursor, want)
	}
	if r.Undelivered != int64(len(f.undelivered)) || r.UndeliveredRecords != 10 {
		t.Errorf("Undelivered %d in %d records, want %d in 10", r.Undelivered, r.UndeliveredRecords, len(f.undelivered))
	}
	if r.Oldest != inspTime(0) || r.Newest != inspTime(11) || r.OldestUndelivered != inspTime(2) {
		t.Errorf("times: oldest %v newest %v oldest undelivered %v", r.Oldest, r.Newest, r.OldestUndelivered)
	}
	if len(r.Files) != 0 || len(r.Notes) != 0 || len(r.Problems()) != 0 {
		t.Errorf("files %v notes %v problems %v", r.Files, r.Notes, r.Problems())
	}

	vr, err := Verify(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(vr.Problems) != 0 || vr.Segments != len(f.segs) || vr.Records != 12 || vr.Messages != 36 {
		t.Errorf("Verify: %+v", vr)
	}
	inspSameTree(t, before, inspTree(t, f.dir))

	// The library agrees on the backlog.
	s, err := Open(f.dir, inspOpts)
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Stats().Undelivered; u != r.Undelivered {
		t.Errorf("Inspect says %d undelivered, the library %d", r.Undelivered, u)
	}
	s.Close()
}

func segNumOf(t *testing.T, name string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(name, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDumpSelection(t *testing.T) {
	f := newInspFixture(t)
	for _, tc := range []struct {
		name          string
		opts          DumpOptions
		want          []string
		wantDelivered int
	}{
		{"undelivered", DumpOptions{}, f.undelivered, 0},
		{"all", DumpOptions{All: true}, f.all, inspConsumed},
		{"from", DumpOptions{From: 2}, f.undelivered[2:], 0},
		{"from a whole record", DumpOptions{From: 5}, f.undelivered[5:], 0},
		{"limit", DumpOptions{Limit: 4}, f.undelivered[:4], 0},
		{"from and limit", DumpOptions{From: 5, Limit: 3}, f.undelivered[5:8], 0},
		{"all from and limit", DumpOptions{All: true, From: 1, Limit: 8}, f.all[1:9], 6},
		{"from past the end", DumpOptions{From: 1000}, nil, 0},
		{"limit past the end", DumpOptions{Limit: 1000}, f.undelivered, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, delivered, problems := inspDump(t, f.dir, tc.opts)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
			if delivered != tc.wantDelivered || len(problems) != 0 {
				t.Errorf("%d marked delivered (want %d), problems %v", delivered, tc.wantDelivered, problems)
			}
		})
	}

	// The default selection is exactly what the library delivers next.
	got, _, _ := inspDump(t, f.dir, DumpOptions{})
	lib, _ := inspDrain(t, f.dir)
	if !slices.Equal(got, lib) {
		t.Errorf("Dump %q\nlibrary %q", got, lib)
	}
}

func TestDumpStops(t *testing.T) {
	f := newInspFixture(t)
	stop := errors.New("stop")
	n := 0
	err := Dump(f.dir, DumpOptions{}, func(m Message) error {
		if n++; n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Dump returned %v after %d messages", err, n)
	}
}

// Damage of every kind: Verify names the segment, entry and offset; Inspect sees what a
// CRC check can see; nothing is changed; Dump yields exactly what the library, which still
// opens the spool, delivers: everything but the damaged records.
func TestInspectDamage(t *testing.T) {
	type want struct {
		kind   string
		seg    int // index into the layout; -1: none
		index  uint64
		offset int64
	}
	for _, tc := range []struct {
		name       string
		damage     func(t *testing.T, f inspFixture) want
		crcVisible bool                      // Inspect (no decompression) sees it
		lost       func(f inspFixture) []int // records whose messages are lost
		fromStart  bool                      // Open falls back to the first segment
	}{
		{
			name: "payload byte flipped", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[1]
				inspFlip(t, filepath.Join(f.dir, sg.name, walFile), sg.offsets[1]+1+segment.HeaderSize+5)
				return want{"record", 1, 2, sg.offsets[1]}
			},
			lost: func(f inspFixture) []int { return []int{f.segs[1].first + 1} },
		},
		{
			name: "magic byte flipped", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[1]
				inspFlip(t, filepath.Join(f.dir, sg.name, walFile), sg.offsets[1]+1)
				return want{"record", 1, 2, sg.offsets[1]}
			},
			lost: func(f inspFixture) []int { return []int{f.segs[1].first + 1} },
		},
		{
			name: "length byte flipped", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[1]
				inspFlip(t, filepath.Join(f.dir, sg.name, walFile), sg.offsets[1])
				return want{"record", 1, 2, sg.offsets[1]}
			},
			lost: func(f inspFixture) []int { return []int{f.segs[1].first + 1} },
		},
		{
			name: "payload not zstd under a valid crc",
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[1]
				p := filepath.Join(f.dir, sg.name, walFile)
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				size, k := binary.Uvarint(b[sg.offsets[1]:])
				rec := b[sg.offsets[1]+int64(k) : sg.offsets[1]+int64(k)+int64(size)]
				rec[segment.HeaderSize] ^= 0xff // the zstd magic
				crc := crc32.Update(crc32.Checksum(rec[:20], castagnoli), castagnoli, rec[segment.HeaderSize:])
				binary.LittleEndian.PutUint32(rec[20:], crc)
				if err := os.WriteFile(p, b, 0o640); err != nil {
					t.Fatal(err)
				}
				return want{"record", 1, 2, sg.offsets[1]}
			},
			lost: func(f inspFixture) []int { return []int{f.segs[1].first + 1} },
		},
		{
			name: "torn tail of the newest segment", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[len(f.segs)-1]
				p := filepath.Join(f.dir, sg.name, walFile)
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(p, fi.Size()-5); err != nil {
					t.Fatal(err)
				}
				last := len(sg.offsets) - 1
				return want{"tail", len(f.segs) - 1, uint64(last + 1), sg.offsets[last]}
			},
			lost: func(f inspFixture) []int { return []int{11} },
		},
		{
			name: "sealed segment cut short by a whole record", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				sg := f.segs[1]
				last := len(sg.offsets) - 1
				if err := os.Truncate(filepath.Join(f.dir, sg.name, walFile), sg.offsets[last]); err != nil {
					t.Fatal(err)
				}
				return want{"record", 1, uint64(last + 1), sg.offsets[last]}
			},
			lost: func(f inspFixture) []int { return []int{f.segs[1].first + len(f.segs[1].offsets) - 1} },
		},
		{
			name: "meta damaged", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				inspFlip(t, filepath.Join(f.dir, f.segs[1].name, metaName), 10)
				return want{"meta", 1, 0, 0}
			},
		},
		{
			name: "cursor damaged", crcVisible: true, fromStart: true,
			damage: func(t *testing.T, f inspFixture) want {
				inspFlip(t, filepath.Join(f.dir, cursorName), 17)
				return want{"cursor", -1, 0, 0}
			},
		},
		{
			name: "segment file missing", crcVisible: true,
			damage: func(t *testing.T, f inspFixture) want {
				if err := os.Remove(filepath.Join(f.dir, f.segs[1].name, walFile)); err != nil {
					t.Fatal(err)
				}
				return want{"segment", 1, 0, 0}
			},
			lost: func(f inspFixture) []int {
				var out []int
				for i := range f.segs[1].offsets {
					out = append(out, f.segs[1].first+i)
				}
				return out
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newInspFixture(t)
			w := tc.damage(t, f)
			var lost []int
			if tc.lost != nil {
				lost = tc.lost(f)
			}
			wantSeg := ""
			if w.seg >= 0 {
				wantSeg = f.segs[w.seg].name
			}
			match := func(p Problem) bool {
				return p.Kind == w.kind && p.Segment == wantSeg && p.Index == w.index && p.Offset == w.offset && p.Err != ""
			}
			before := inspTree(t, f.dir)

			vr, err := Verify(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(vr.Problems) != 1 || !match(vr.Problems[0]) {
				t.Errorf("Verify problems %+v, want one %+v", vr.Problems, w)
			} else {
				t.Logf("Verify: %s", vr.Problems[0])
			}
			r, err := Inspect(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			ps := r.Problems()
			if tc.crcVisible && (len(ps) != 1 || !match(ps[0])) {
				t.Errorf("Inspect problems %+v, want one %+v", ps, w)
			}
			if !tc.crcVisible && len(ps) != 0 {
				t.Errorf("Inspect problems %+v, want none (it does not decompress)", ps)
			}

			dumped, _, dumpProblems := inspDump(t, f.dir, DumpOptions{})
			if len(dumpProblems) != 1 || !match(dumpProblems[0]) {
				t.Errorf("Dump problems %+v, want one %+v", dumpProblems, w)
			}
			all, _, _ := inspDump(t, f.dir, DumpOptions{All: true})
			if want := f.without(f.all, lost...); !slices.Equal(all, want) {
				t.Errorf("Dump --all: %q\nwant %q", all, want)
			}
			inspSameTree(t, before, inspTree(t, f.dir))

			got, reports := inspDrain(t, f.dir)
			want := f.undelivered
			if tc.fromStart {
				want = f.all
			}
			want = f.without(want, lost...)
			if !slices.Equal(got, want) {
				t.Errorf("the library delivered %q\nwant %q", got, want)
			}
			if !slices.Equal(dumped, got) {
				t.Errorf("Dump %q\nthe library %q", dumped, got)
			}
			if w.kind == "tail" {
				// The library names the torn entry as Inspect does. (This segment was sealed,
				// so the library also reports the entry missing from its meta count.)
				var torn []*CorruptionError
				for _, err := range reports {
					var ce *CorruptionError
					if errors.As(err, &ce) && errors.Is(ce, errTornTail) {
						torn = append(torn, ce)
					}
				}
				if len(torn) != 1 || torn[0].Segment != wantSeg || torn[0].Index != w.index || torn[0].Offset != w.offset {
					t.Errorf("library reports %v, want one torn tail at %s entry %d offset %d", reports, wantSeg, w.index, w.offset)
				}
			}
			t.Logf("library reports: %v", reports)
		})
	}
}

func inspFlip(t *testing.T, p string, off int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x5a
	if err := os.WriteFile(p, b, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestInspectFiles(t *testing.T) {
	f := newInspFixture(t)
	bad := f.segs[0].name + ".bad"
	if err := os.Mkdir(filepath.Join(f.dir, bad), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(f.dir, f.segs[2].name+".1.bad"), 0o750); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		filepath.Join(bad, walFile):                    "12345",
		f.segs[1].name + ".1700000000000000000.broken": "xyz",
		"cursor.tmp": "",
		"notes.txt":  "hello",
	} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Inspect(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []FileInfo{
		{Name: bad, Kind: "bad", Bytes: 5},
		{Name: f.segs[1].name + ".1700000000000000000.broken", Kind: "broken", Bytes: 3},
		{Name: f.segs[2].name + ".1.bad", Kind: "bad"},
		{Name: "cursor.tmp", Kind: "tmp"},
		{Name: "notes.txt", Kind: "unknown", Bytes: 5},
	}
	if !slices.Equal(r.Files, want) {
		t.Errorf("Files %+v\nwant %+v", r.Files, want)
	}
	if len(r.Segments) != len(f.segs) {
		t.Errorf("%d segments, want %d", len(r.Segments), len(f.segs))
	}
}

func TestInspectNotASpool(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, formatName), []byte("pelichan-spool 2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want error
	}{
		{filepath.Join(dir, "missing"), fs.ErrNotExist},
		{file, ErrVersion},
		{other, ErrVersion},
		{empty, ErrVersion},
	} {
		before := inspTree(t, dir)
		_, err1 := Inspect(tc.path)
		_, err2 := Verify(tc.path)
		err3 := Dump(tc.path, DumpOptions{}, func(Message) error { return nil })
		for _, err := range []error{err1, err2, err3} {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.path, err, tc.want)
			}
		}
		inspSameTree(t, before, inspTree(t, dir))
	}
}

// While a Spool holds the directory, Inspect sees the lock without taking it: the Spool
// goes on working, and a torn-looking tail of the segment being written is not damage.
func TestInspectLockHeld(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, inspOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Append(inspRecord(t, inspTime(0), []string{"a", "b"})); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Lock.Held {
		t.Fatalf("lock not seen: %+v", r.Lock)
	}
	if r.Lock.Method == "/proc/locks" && r.Lock.PID != os.Getpid() {
		t.Errorf("holder pid %d, want %d", r.Lock.PID, os.Getpid())
	}
	if len(r.Segments) != 1 || r.Segments[0].Sealed || r.Undelivered != 2 {
		t.Errorf("segments %+v, undelivered %d", r.Segments, r.Undelivered)
	}

	// Half a record at the end of the active segment: a write in progress.
	p := filepath.Join(dir, r.Segments[0].Name, walFile)
	rec := inspRecord(t, inspTime(1), []string{"c"})
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.Write(binary.AppendUvarint(nil, uint64(len(rec))))
	fh.Write(rec[:10])
	fh.Close()
	vr, err := Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(vr.Problems) != 0 || len(vr.Notes) != 1 {
		t.Errorf("while locked: problems %v, notes %q; want no problem and one note", vr.Problems, vr.Notes)
	}
	if err := os.Truncate(p, r.Segments[0].FileBytes); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(inspRecord(t, inspTime(2), []string{"d"})); err != nil {
		t.Fatalf("the Spool cannot go on after an inspection: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if r, err := Inspect(dir); err != nil || r.Lock.Held {
		t.Errorf("after Close: %+v %v", r.Lock, err)
	}
	s, err = Open(dir, inspOpts)
	if err != nil {
		t.Fatalf("Open after inspection: %v", err)
	}
	s.Close()
}

func TestProcLocksHolder(t *testing.T) {
	text := `1: FLOCK  ADVISORY  WRITE 29997 fe:00:9984050 0 EOF
2: POSIX  ADVISORY  WRITE 111 fe:00:42 0 EOF
2: -> FLOCK  ADVISORY  WRITE 222 fe:00:43 0 EOF
3: FLOCK  ADVISORY  READ 333 fe:00:44 0 EOF
4: FLOCK  ADVISORY  WRITE 444 103:07:45 0 EOF
garbage
`
	dev := func(major, minor uint64) uint64 {
		return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
	}
	for _, tc := range []struct {
		dev, ino uint64
		held     bool
		pid      int
	}{
		{dev(0xfe, 0), 9984050, true, 29997},
		{dev(0xfe, 0), 42, false, 0}, // POSIX lock: not ours
		{dev(0xfe, 0), 43, false, 0}, // a waiter
		{dev(0xfe, 0), 44, false, 0}, // shared: a probe, not an opener
		{dev(0x103, 0x07), 45, true, 444},
		{dev(0xfe, 1), 9984050, false, 0},
	} {
		held, pid := procLocksHolder(text, tc.dev, tc.ino)
		if held != tc.held || pid != tc.pid {
			t.Errorf("dev %#x ino %d: %v %d, want %v %d", tc.dev, tc.ino, held, pid, tc.held, tc.pid)
		}
	}
}

// Inspect, Verify and Dump run against a Spool that appends, reads, acknowledges,
// rotates and deletes segments all the while: they never fail and never report damage.
func TestInspectWhileLive(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 300, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	recs := make([][]byte, 40)
	for i := range recs {
		recs[i] = inspRecord(t, inspTime(i), []string{fmt.Sprintf("live-%d-a", i), fmt.Sprintf("live-%d-b", i)})
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the only goroutine that touches s
		defer wg.Done()
		defer close(done)
		for round := 0; round < 30; round++ {
			for _, rec := range recs[:10+round%7] {
				if _, err := s.Append(rec); err != nil {
					t.Error(err)
					return
				}
			}
			for {
				r, err := s.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
					t.Error(err)
					return
				}
				if r.Pos.Index%3 == 0 {
					if err := s.Checkpoint(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}
	}()
	notes := map[string]int{}
	for n := 0; ; n++ {
		select {
		case <-done:
			wg.Wait()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d inspections while live; notes seen: %v", n, notes)
			return
		default:
		}
		r, err := Inspect(dir)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if ps := r.Problems(); len(ps) != 0 {
			t.Fatalf("Inspect found damage in a healthy live spool: %v (notes %q)", ps, r.Notes)
		}
		vr, err := Verify(dir)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		for _, n := range slices.Concat(r.Notes, vr.Notes) {
			notes[strings.Join(strings.Fields(n)[2:], " ")]++ // without the segment name
		}
		if len(vr.Problems) != 0 {
			t.Fatalf("Verify found damage in a healthy live spool: %v (notes %q)", vr.Problems, vr.Notes)
		}
		err = Dump(dir, DumpOptions{All: n%2 == 0, OnProblem: func(p Problem) {
			t.Errorf("Dump found damage in a healthy live spool: %v", p)
		}}, func(m Message) error {
			if !strings.HasPrefix(string(m.Data), "live-") {
				t.Errorf("Dump yielded %q", m.Data)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("Dump: %v", err)
		}
	}
}

// inspCopy copies the spool in dir to a new directory, for the library to open without
// changing dir.
func inspCopy(tb testing.TB, dir string) string {
	tb.Helper()
	cp := filepath.Join(tb.TempDir(), "copy")
	if err := os.CopyFS(cp, os.DirFS(dir)); err != nil {
		tb.Fatal(err)
	}
	return cp
}

// inspAgree checks that Inspect, Dump and the library agree that want is what the next
// Open delivers, without changing dir: Inspect's undelivered count is the library's
// Stats().Undelivered after Open, and Dump yields exactly what the library delivers.
func inspAgree(tb testing.TB, dir string, want []string) *Report {
	tb.Helper()
	before := inspTree(tb, dir)
	r, err := Inspect(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if r.Undelivered != int64(len(want)) || len(r.Problems()) != 0 {
		tb.Errorf("Inspect: Undelivered %d (want %d), problems %v", r.Undelivered, len(want), r.Problems())
	}
	var undelivered int64
	for _, sg := range r.Segments {
		undelivered += sg.Undelivered
	}
	if undelivered != r.Undelivered {
		tb.Errorf("Inspect: segments hold %d undelivered messages, the total says %d", undelivered, r.Undelivered)
	}
	dumped, _, problems := inspDump(tb, dir, DumpOptions{})
	if !slices.Equal(dumped, want) || len(problems) != 0 {
		tb.Errorf("Dump %q (problems %v)\nwant %q", dumped, problems, want)
	}
	vr, err := Verify(dir)
	if err != nil || len(vr.Problems) != 0 {
		tb.Errorf("Verify: %+v %v", vr, err)
	}
	inspSameTree(tb, before, inspTree(tb, dir))

	s, err := Open(inspCopy(tb, dir), inspOpts)
	if err != nil {
		tb.Fatal(err)
	}
	if u := s.Stats().Undelivered; u != r.Undelivered {
		tb.Errorf("Inspect says %d undelivered, the library %d", r.Undelivered, u)
	}
	s.Close()
	got, reports := inspDrain(tb, inspCopy(tb, dir))
	if !slices.Equal(got, want) || len(reports) != 0 {
		tb.Errorf("the library delivered %q (reports %v)\nwant %q", got, reports, want)
	}
	return r
}

// inspSegment returns the SegmentInfo of r named name.
func inspSegment(tb testing.TB, r *Report, name string) SegmentInfo {
	tb.Helper()
	for _, sg := range r.Segments {
		if sg.Name == name {
			return sg
		}
	}
	tb.Fatalf("no segment %s in %+v", name, r.Segments)
	return SegmentInfo{}
}

// A front segment written at shutdown after a partial acknowledgement in the middle of a
// segment: reading starts in the front segment, then goes on at its resume cursor, in
// the middle of a record (Offset > 0) of a segment that was left untouched.
func TestInspectFrontResume(t *testing.T) {
	dir := t.TempDir()
	recs := inspBatches(12, 3)
	inspWrite(t, dir, recs)
	segs := inspLayout(t, dir)
	if len(segs[1].offsets) < 3 {
		t.Fatalf("segment %s has %d records, want at least 3", segs[1].name, len(segs[1].offsets))
	}
	// Deliver everything before entry 2 of the second segment, and one message of it.
	s, err := Open(dir, inspOpts)
	if err != nil {
		t.Fatal(err)
	}
	resume := Cursor{Seg: segNumOf(t, segs[1].name), Index: uint64(segs[1].offsets[1]), Offset: 1} // entry 2
	for {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if r.Pos.Seg == resume.Seg && r.Pos.Index == resume.Index {
			break
		}
	}
	if err := s.Ack(resume); err != nil {
		t.Fatal(err)
	}
	if err := s.Front([][]byte{inspRecord(t, inspTime(99), []string{"front-1", "front-2"})}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	delivered := (segs[1].first+1)*3 + 1 // messages before the resume cursor
	all := slices.Concat(recs...)
	want := slices.Concat([]string{"front-1", "front-2"}, all[delivered:])

	r := inspAgree(t, dir, want)
	// Numbered below every segment ever created: the first one, consumed and deleted.
	front := fmt.Sprintf("%020d", segNumOf(t, segs[0].name)-1)
	if r.Cursor.Segment != front || r.Cursor.Index != 0 || r.Cursor.Offset != 0 {
		t.Errorf("cursor %+v, want offset 0 of the front segment %s", r.Cursor, front)
	}
	fs := inspSegment(t, r, front)
	if want := (Position{Seq: resume.Seg, Segment: segs[1].name, Index: resume.Index, Offset: 1}); fs.Resume == nil || *fs.Resume != want || fs.Undelivered != 2 {
		t.Errorf("front segment %+v (resume %+v), want resume %+v and 2 undelivered", fs, fs.Resume, want)
	}
	if rs := inspSegment(t, r, segs[1].name); rs.Resume != nil || rs.Undelivered != rs.Messages-4 {
		t.Errorf("resume segment %+v, want 4 of its messages delivered", rs)
	}
	if len(r.Notes) != 0 {
		t.Errorf("notes %q", r.Notes)
	}

	// With --all, the messages of the resume segment before the resume cursor are on disk,
	// delivered.
	got, n, _ := inspDump(t, dir, DumpOptions{All: true})
	if wantAll := slices.Concat([]string{"front-1", "front-2"}, all[segs[1].first*3:]); !slices.Equal(got, wantAll) || n != 4 {
		t.Errorf("Dump --all: %q (%d delivered)\nwant %q (4 delivered)", got, n, wantAll)
	}

	// Partway through the front segment, the resume cursor still applies.
	inspConsume(t, dir, 1)
	r = inspAgree(t, dir, want[1:])
	if r.Cursor.Segment != front || r.Cursor.Index != 0 || r.Cursor.Offset != 1 {
		t.Errorf("cursor %+v, want offset 0 message 1 of the front segment", r.Cursor)
	}
	// Every message of it delivered, but the reader has not left it: the cursor stays in
	// it, and reading goes on at the resume cursor.
	inspConsume(t, dir, 1)
	r = inspAgree(t, dir, want[2:])
	if r.Cursor.Segment != front || r.Cursor.Index != 0 || r.Cursor.Offset != 2 {
		t.Errorf("cursor %+v, want offset 0 message 2 of the front segment", r.Cursor)
	}
	// One message past it: the one at the resume cursor. The front segment is gone.
	inspConsume(t, dir, 1)
	r = inspAgree(t, dir, want[3:])
	if next := (Cursor{Seg: resume.Seg, Index: resume.Index, Offset: resume.Offset + 1}); r.Cursor.Pos() != next || len(r.Segments) != len(segs)-1 {
		t.Errorf("cursor %+v, want %+v; segments %+v", r.Cursor, next, r.Segments)
	}
}

// A shutdown interrupted after Front moved the cursor to a new front segment, before it
// deleted the earlier front segment the cursor was inside (whose undelivered rest the new
// one holds): Inspect and Dump count that earlier segment out, as Open does (it deletes
// it), and deliver the new front records, the earlier one's rest, then the rest from the
// carried-over resume cursor.
func TestInspectInterruptedFront(t *testing.T) {
	f := newInspFixture(t)
	resume := Cursor{Seg: segNumOf(t, f.segs[0].name), Index: uint64(f.segs[0].offsets[2]), Offset: 1} // entry 3

	// A first shutdown puts two records in front; one message of them is delivered next.
	s, err := Open(f.dir, inspOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Front([][]byte{
		inspRecord(t, inspTime(97), []string{"front-1", "front-2"}),
		inspRecord(t, inspTime(98), []string{"front-3"}),
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	inspConsume(t, f.dir, 1)
	first := fmt.Sprintf("%020d", resume.Seg-1)
	r := inspAgree(t, f.dir, slices.Concat([]string{"front-2", "front-3"}, f.undelivered))
	if r.Cursor.Segment != first || r.Cursor.Index != 0 || r.Cursor.Offset != 1 {
		t.Fatalf("cursor %+v, want offset 0 message 1 of the front segment %s", r.Cursor, first)
	}

	// A second shutdown, with the cursor inside the first front segment, puts a record in
	// front of that one's rest; the crash comes before the first one is deleted.
	old := filepath.Join(f.dir, first)
	saved := filepath.Join(t.TempDir(), "saved")
	if err := os.CopyFS(saved, os.DirFS(old)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(f.dir, inspOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Front([][]byte{inspRecord(t, inspTime(99), []string{"back-1", "back-2"})}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Front left the earlier front segment: %v", err)
	}
	if err := os.CopyFS(old, os.DirFS(saved)); err != nil { // the deletion never happened
		t.Fatal(err)
	}
	want := slices.Concat([]string{"back-1", "back-2", "front-2", "front-3"}, f.undelivered)

	r, err = Inspect(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	second := fmt.Sprintf("%020d", resume.Seg-2)
	if r.Undelivered != int64(len(want)) || len(r.Problems()) != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "replaced") {
		t.Errorf("Undelivered %d (want %d), problems %v, notes %q", r.Undelivered, len(want), r.Problems(), r.Notes)
	}
	if r.Cursor.Segment != second || r.Cursor.Index != 0 || r.Cursor.Offset != 0 {
		t.Errorf("cursor %+v, want offset 0 of the new front segment %s", r.Cursor, second)
	}
	wantResume := Position{Seq: resume.Seg, Segment: f.segs[0].name, Index: resume.Index, Offset: resume.Offset}
	if sg := inspSegment(t, r, second); sg.Resume == nil || *sg.Resume != wantResume || sg.Undelivered != 4 {
		t.Errorf("new front segment %+v (resume %+v), want resume %+v (carried over) and 4 undelivered", sg, sg.Resume, wantResume)
	}
	if sg := inspSegment(t, r, first); sg.Undelivered != 0 || sg.Messages != 3 {
		t.Errorf("replaced front segment %+v, want its 3 messages and none undelivered", sg)
	}
	if sg := inspSegment(t, r, f.segs[0].name); sg.Undelivered != sg.Messages-inspConsumed {
		t.Errorf("resume segment %+v, want %d of its messages delivered", sg, inspConsumed)
	}
	dumped, _, problems := inspDump(t, f.dir, DumpOptions{})
	if !slices.Equal(dumped, want) || len(problems) != 0 {
		t.Errorf("Dump %q (problems %v)\nwant %q", dumped, problems, want)
	}
	all, _, _ := inspDump(t, f.dir, DumpOptions{All: true})
	if wantAll := slices.Concat([]string{"back-1", "back-2", "front-2", "front-3", "front-1", "front-2", "front-3"}, f.all); !slices.Equal(all, wantAll) {
		t.Errorf("Dump --all %q\nwant %q", all, wantAll)
	}
	inspAgree(t, f.dir, want)

	// Open, which deletes the replaced segment, delivers the same.
	got, _ := inspDrain(t, f.dir)
	if !slices.Equal(got, want) {
		t.Errorf("the library delivered %q\nDump %q", got, want)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open left the replaced front segment: %v", err)
	}
}

// Empty segment directories at both ends (a segment, or a front segment below all others,
// whose creation was cut short): Open removes them without a report, and Inspect says so
// and reports no problem, with the same undelivered messages.
func TestInspectEmptySegmentDirsAtBothEnds(t *testing.T) {
	f := newInspFixture(t)
	first, last := segNumOf(t, f.segs[0].name), segNumOf(t, f.segs[len(f.segs)-1].name)
	for _, seq := range []uint64{first - 1, last + 1} {
		if err := os.Mkdir(filepath.Join(f.dir, segName(seq)), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Inspect(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems()) != 0 || len(r.Segments) != len(f.segs) || r.Undelivered != int64(len(f.undelivered)) {
		t.Errorf("Inspect: problems %v, %d segments (want %d), %d undelivered (want %d)",
			r.Problems(), len(r.Segments), len(f.segs), r.Undelivered, len(f.undelivered))
	}
	if n := len(r.Notes); n != 2 {
		t.Errorf("notes %q, want one for each empty directory", r.Notes)
	}
	var c corruptions
	s := mustOpen(t, f.dir, Options{OnCorrupt: c.add})
	got := drain(t, s)
	s.Close()
	if !slices.Equal(got, f.undelivered) || len(c.list()) != 0 {
		t.Errorf("Open delivered %d messages (want %d), reports %v", len(got), len(f.undelivered), c.list())
	}
}
