package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// ---- helpers ---------------------------------------------------------------------------

// The zstd encoder and decoder are costly to build: one of each serves every test.
var (
	codecMu  sync.Mutex
	recW     *segment.Writer
	recR     *segment.Reader
	recClock int64 = 1_700_000_000_000_000_000
)

// makeRecord builds one record holding msgs. The result is a fresh slice.
func makeRecord(tb testing.TB, msgs ...string) []byte {
	tb.Helper()
	codecMu.Lock()
	defer codecMu.Unlock()
	if recW == nil {
		recW = segment.NewWriter(4096)
	}
	recW.Reset()
	for _, m := range msgs {
		if err := recW.AddBytes([]byte(m)); err != nil {
			tb.Fatalf("AddBytes: %v", err)
		}
	}
	recClock += 1000
	recW.SetTime(recClock)
	return bytes.Clone(recW.Record())
}

// decodeRecord returns the messages of rec.
func decodeRecord(tb testing.TB, rec []byte) []string {
	tb.Helper()
	codecMu.Lock()
	defer codecMu.Unlock()
	if recR == nil {
		recR = segment.NewReader()
	}
	b, err := recR.Decode(rec)
	if err != nil {
		tb.Fatalf("a record returned by Next does not decode: %v", err)
	}
	out := make([]string, b.Count)
	for i := range out {
		out[i] = string(b.Message(i))
	}
	return out
}

// batches returns n batches of per unique messages: prefix-rrrr-mm.
func batches(prefix string, n, per int) [][]string {
	out := make([][]string, n)
	for i := range out {
		for j := 0; j < per; j++ {
			out[i] = append(out[i], fmt.Sprintf("%s-%04d-%02d-%s", prefix, i, j, strings.Repeat("x", (i*7+j)%13)))
		}
	}
	return out
}

func flatten(bs [][]string) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// testOpts are small, fast options: several segments for a few records.
func testOpts() Options { return Options{SegmentSize: 400, NoSync: true} }

func mustOpen(tb testing.TB, dir string, opts Options) *Spool {
	tb.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

// appendAll appends one record per batch.
func appendAll(tb testing.TB, s *Spool, bs [][]string) {
	tb.Helper()
	for _, b := range bs {
		if _, err := s.Append(makeRecord(tb, b...)); err != nil {
			tb.Fatalf("Append: %v", err)
		}
	}
}

// writeSpool opens dir, appends one record per batch and closes it.
func writeSpool(tb testing.TB, dir string, opts Options, bs [][]string) {
	tb.Helper()
	s := mustOpen(tb, dir, opts)
	appendAll(tb, s, bs)
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
}

// readN reads up to n records (n < 0: all) with Next, acknowledging each one, and
// returns their messages not yet delivered (Pos.Offset skipped).
func readN(tb testing.TB, s *Spool, n int) []string {
	tb.Helper()
	var out []string
	for i := 0; n < 0 || i < n; i++ {
		r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("Next: %v", err)
		}
		msgs := decodeRecord(tb, r.Data)
		if len(msgs) != r.Count {
			tb.Fatalf("record %+v: header count %d, decoded %d", r.Pos, r.Count, len(msgs))
		}
		if int(r.Pos.Offset) > len(msgs) {
			tb.Fatalf("record %+v: offset past its %d messages", r.Pos, len(msgs))
		}
		out = append(out, msgs[r.Pos.Offset:]...)
		if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
			tb.Fatalf("Ack: %v", err)
		}
	}
	return out
}

func drain(tb testing.TB, s *Spool) []string { tb.Helper(); return readN(tb, s, -1) }

// corruptions collects OnCorrupt reports; safe for use from the spool's goroutine.
type corruptions struct {
	mu   sync.Mutex
	errs []error
}

func (c *corruptions) add(err error) { c.mu.Lock(); c.errs = append(c.errs, err); c.mu.Unlock() }
func (c *corruptions) list() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// readAll opens dir, reads everything, closes it, and returns the messages and the
// corruption reports.
func readAll(tb testing.TB, dir string, opts Options) ([]string, []error) {
	tb.Helper()
	var c corruptions
	opts.OnCorrupt = c.add
	s := mustOpen(tb, dir, opts)
	got := drain(tb, s)
	if st := s.Stats(); st.Undelivered != 0 {
		tb.Errorf("after reading everything: Undelivered %d, want 0 (stats %+v)", st.Undelivered, st)
	}
	if err := s.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
	return got, c.list()
}

// checkNoFalse fails if a message of got was never written.
func checkNoFalse(tb testing.TB, got, written []string) {
	tb.Helper()
	w := make(map[string]bool, len(written))
	for _, m := range written {
		w[m] = true
	}
	for _, m := range got {
		if !w[m] {
			tb.Errorf("delivered a message that was never written: %q", m)
		}
	}
}

// checkHas fails for each message of want missing from got.
func checkHas(tb testing.TB, got, want []string) {
	tb.Helper()
	g := make(map[string]bool, len(got))
	for _, m := range got {
		g[m] = true
	}
	missing := 0
	for _, m := range want {
		if !g[m] {
			if missing < 5 {
				tb.Errorf("message %q was not delivered", m)
			}
			missing++
		}
	}
	if missing > 0 {
		tb.Errorf("%d of %d expected messages missing", missing, len(want))
	}
}

// checkExactlyOnce fails unless got is want, in any order, with no repeat.
func checkExactlyOnce(tb testing.TB, got, want []string) {
	tb.Helper()
	seen := make(map[string]int, len(got))
	for _, m := range got {
		seen[m]++
		if seen[m] == 2 {
			tb.Errorf("message %q delivered twice", m)
		}
	}
	checkNoFalse(tb, got, want)
	checkHas(tb, got, want)
	if len(got) != len(want) {
		tb.Errorf("delivered %d messages, want %d", len(got), len(want))
	}
}

// checkReported asserts that reports are all *CorruptionError (or wrap ErrCorrupt) and
// that at least one names segment seg (seg == "": any segment) at an offset within
// [lo, hi] (hi < 0: any offset).
func checkReported(tb testing.TB, reports []error, seg string, lo, hi int64) {
	tb.Helper()
	for _, err := range reports {
		if !errors.Is(err, ErrCorrupt) {
			tb.Errorf("report %q does not wrap ErrCorrupt", err)
		}
	}
	for _, err := range reports {
		var ce *CorruptionError
		if !errors.As(err, &ce) {
			continue
		}
		if seg != "" && ce.Segment != seg {
			continue
		}
		if hi >= 0 && (ce.Offset < lo || ce.Offset > hi) {
			continue
		}
		return
	}
	tb.Errorf("no *CorruptionError for segment %q offset in [%d, %d]; reports: %v", seg, lo, hi, reports)
}

func checkClean(tb testing.TB, reports []error) {
	tb.Helper()
	for _, err := range reports {
		tb.Errorf("unexpected corruption report: %v", err)
	}
}

// recInfo locates one record on disk.
type recInfo struct {
	seg      string // segment directory name
	index    uint64
	off, end int64 // byte range of the framed entry in the WAL file
	msgs     []string
}

// segNames lists dir's segment directories in order.
func segNames(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && isSegName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// layout scans every segment file of a healthy spool and locates its records.
func layout(tb testing.TB, dir string) []recInfo {
	tb.Helper()
	var out []recInfo
	for _, name := range segNames(tb, dir) {
		buf, err := os.ReadFile(filepath.Join(dir, name, walFile))
		if err != nil {
			tb.Fatal(err)
		}
		ents, bad, _ := scanFile(buf)
		if len(bad) > 0 {
			tb.Fatalf("layout: segment %s is damaged: %+v", name, bad)
		}
		for _, e := range ents {
			end := e.offset + int64(uvarintLen(uint64(len(e.data)))+len(e.data))
			out = append(out, recInfo{seg: name, index: e.index, off: e.offset, end: end, msgs: decodeRecord(tb, e.data)})
		}
	}
	return out
}

func segRecs(recs []recInfo, seg string) []recInfo {
	var out []recInfo
	for _, r := range recs {
		if r.seg == seg {
			out = append(out, r)
		}
	}
	return out
}

func msgsOf(recs []recInfo, keep func(recInfo) bool) []string {
	var out []string
	for _, r := range recs {
		if keep == nil || keep(r) {
			out = append(out, r.msgs...)
		}
	}
	return out
}

// snapshot maps every path under dir to its content ("<dir>" for directories).
func snapshot(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func diffSnapshots(tb testing.TB, before, after map[string]string) {
	tb.Helper()
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			tb.Errorf("%s was removed", p)
		case a != b:
			tb.Errorf("%s was modified", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			tb.Errorf("%s was created", p)
		}
	}
}

// copyDir copies a spool directory tree (files and directories only).
//
// from may be a live spool's: a file its background work (a seal's meta.tmp, a retired
// segment) removes during the copy is left out, as a crash a moment later would leave it.
func copyDir(tb testing.TB, from, to string) {
	tb.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p != from {
			return nil
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o750)
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o640)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func walPath(dir, seg string) string { return filepath.Join(dir, seg, walFile) }

func fileSize(tb testing.TB, p string) int64 {
	tb.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Size()
}

func inode(tb testing.TB, p string) uint64 {
	tb.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		tb.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// topNames lists dir's entries, sorted.
func topNames(tb testing.TB, dir string) []string {
	tb.Helper()
	names, err := readDirNames(dir)
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(names)
	return names
}

func writeCursorFile(tb testing.TB, dir string, c Cursor) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, cursorName), encodeCursor(cursorFile{pos: c, delivered: unknownDelivered}), 0o640); err != nil {
		tb.Fatal(err)
	}
}

func readCursorFile(tb testing.TB, dir string) Cursor {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if err != nil {
		tb.Fatal(err)
	}
	cf, _, err := decodeCursor(b)
	if err != nil {
		tb.Fatal(err)
	}
	return cf.pos
}

// ---- basic behaviour -------------------------------------------------------------------

func TestAppendReadAckAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	bs := batches("basic", 40, 3)
	s := mustOpen(t, dir, testOpts())
	for i, b := range bs {
		appendAll(t, s, [][]string{b})
		if got, want := s.Stats().Undelivered, int64(3*(i+1)); got != want {
			t.Fatalf("after %d appends: Undelivered %d, want %d", i+1, got, want)
		}
	}
	st := s.Stats()
	if st.Segments < 4 {
		t.Fatalf("Segments %d: SegmentSize %d should have made several", st.Segments, testOpts().SegmentSize)
	}
	if st.DiskBytes <= 0 {
		t.Fatalf("DiskBytes %d", st.DiskBytes)
	}
	var got []string
	for i := range bs {
		got = append(got, readN(t, s, 1)...)
		if got, want := s.Stats().Undelivered, int64(3*(len(bs)-i-1)); got != want {
			t.Fatalf("after %d acks: Undelivered %d, want %d", i+1, got, want)
		}
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("Next after everything: %v, want io.EOF", err)
	}
	if !s.Empty() {
		t.Errorf("Empty() false after reading everything")
	}
	checkExactlyOnce(t, got, flatten(bs))
	if !slices.Equal(got, flatten(bs)) {
		t.Errorf("one writer, one reader: messages out of order")
	}
	// Only the segment being written may remain until Close.
	if n := len(segNames(t, dir)); n > 1 {
		t.Errorf("%d segment directories remain after everything was acknowledged, want <= 1", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if names := topNames(t, dir); !slices.Equal(names, []string{formatName, lockName, cursorName}) {
		t.Errorf("after consuming everything and Close the directory holds %v", names)
	}
	s = mustOpen(t, dir, testOpts())
	defer s.Close()
	if st := s.Stats(); st.Undelivered != 0 || st.DiskBytes != 0 || st.Segments != 0 {
		t.Errorf("reopened empty spool: stats %+v", st)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Errorf("reopened empty spool: Next %v, want io.EOF", err)
	}
}

// A reader that has caught up must see records appended afterwards, also when they start
// a new segment, without a reopen.
func TestInterleavedAppendAndRead(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	defer s.Close()
	bs := batches("inter", 60, 2)
	var got []string
	for i, b := range bs {
		appendAll(t, s, [][]string{b})
		if i%3 == 2 {
			got = append(got, drain(t, s)...)
			if u := s.Stats().Undelivered; u != 0 {
				t.Fatalf("after draining at %d: Undelivered %d", i, u)
			}
		}
	}
	got = append(got, drain(t, s)...)
	checkExactlyOnce(t, got, flatten(bs))
	if st := s.Stats(); st.Undelivered != 0 {
		t.Errorf("Undelivered %d after reading everything", st.Undelivered)
	}
}

// Restart after restart, reading a varying number of records each time: nothing is
// delivered twice and nothing is lost, and Undelivered is exact after every Open.
func TestCursorPersistence(t *testing.T) {
	dir := t.TempDir()
	bs := batches("persist", 50, 4)
	writeSpool(t, dir, testOpts(), bs)
	total := int64(len(flatten(bs)))
	var got []string
	for round, n := 0, 1; ; round, n = round+1, n+2 {
		s := mustOpen(t, dir, testOpts())
		if u := s.Stats().Undelivered; u != total-int64(len(got)) {
			t.Fatalf("round %d: Undelivered %d after Open, want %d", round, u, total-int64(len(got)))
		}
		more := readN(t, s, n)
		got = append(got, more...)
		if u := s.Stats().Undelivered; u != total-int64(len(got)) {
			t.Fatalf("round %d: Undelivered %d after reading, want %d", round, u, total-int64(len(got)))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if len(more) == 0 {
			break
		}
	}
	checkExactlyOnce(t, got, flatten(bs))
	if !slices.Equal(got, flatten(bs)) {
		t.Errorf("messages out of order across restarts")
	}
	if segs := segNames(t, dir); len(segs) != 0 {
		t.Errorf("segments %v remain after everything was consumed", segs)
	}
}

// Appending while a backlog from an earlier run is being read, with restarts in between.
func TestCursorPersistenceWithNewWrites(t *testing.T) {
	dir := t.TempDir()
	var all, got []string
	for round := 0; round < 8; round++ {
		s := mustOpen(t, dir, testOpts())
		if u := s.Stats().Undelivered; u != int64(len(all)-len(got)) {
			t.Fatalf("round %d: Undelivered %d after Open, want %d", round, u, len(all)-len(got))
		}
		bs := batches(fmt.Sprintf("round%d", round), 7, 3)
		appendAll(t, s, bs)
		all = append(all, flatten(bs)...)
		got = append(got, readN(t, s, 5)...)
		if u := s.Stats().Undelivered; u != int64(len(all)-len(got)) {
			t.Fatalf("round %d: Undelivered %d, want %d", round, u, len(all)-len(got))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	more, reports := readAll(t, dir, testOpts())
	checkClean(t, reports)
	got = append(got, more...)
	checkExactlyOnce(t, got, all)
}

// Ack with an Offset inside a record: after a reopen, that record comes back first with
// Pos.Offset telling how many of its messages were delivered.
func TestPartialCursor(t *testing.T) {
	for _, where := range []string{"sealed", "active"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			bs := batches("partial", 12, 5)
			total := int64(len(flatten(bs)))
			s := mustOpen(t, dir, testOpts())
			appendAll(t, s, bs)
			skip := 1 // a record in an early, sealed segment
			if where == "active" {
				skip = len(bs) - 1 // the last record, in the segment being written
			}
			got := readN(t, s, skip)
			r, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			first := bytes.Clone(r.Data)
			msgs := decodeRecord(t, r.Data)
			got = append(got, msgs[:2]...)
			if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2}); err != nil {
				t.Fatal(err)
			}
			if u, want := s.Stats().Undelivered, total-int64(len(got)); u != want {
				t.Errorf("after a partial Ack: Undelivered %d, want %d", u, want)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if c := readCursorFile(t, dir); c != (Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2}) {
				t.Errorf("cursor file holds %+v, want %+v", c, Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2})
			}

			s = mustOpen(t, dir, testOpts())
			if u, want := s.Stats().Undelivered, total-int64(len(got)); u != want {
				t.Errorf("after reopen: Undelivered %d, want %d", u, want)
			}
			r2, err := s.Next()
			if err != nil {
				t.Fatal(err)
			}
			if r2.Pos != (Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2}) {
				t.Errorf("first record after reopen at %+v, want %+v", r2.Pos, Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: 2})
			}
			if !bytes.Equal(r2.Data, first) {
				t.Errorf("first record after reopen is not the partly delivered one")
			}
			got = append(got, decodeRecord(t, r2.Data)[r2.Pos.Offset:]...)
			if err := s.Ack(Cursor{Seg: r2.Pos.Seg, Index: r2.Pos.Index + 1}); err != nil {
				t.Fatal(err)
			}
			if u, want := s.Stats().Undelivered, total-int64(len(got)); u != want {
				t.Errorf("after finishing the partial record: Undelivered %d, want %d", u, want)
			}
			got = append(got, drain(t, s)...)
			if u := s.Stats().Undelivered; u != 0 {
				t.Errorf("Undelivered %d at the end", u)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkExactlyOnce(t, got, flatten(bs))
		})
	}
}

func TestConsumedSegmentsDeleted(t *testing.T) {
	dir := t.TempDir()
	bs := batches("gc", 30, 3)
	writeSpool(t, dir, testOpts(), bs)
	recs := layout(t, dir)
	segs := segNames(t, dir)
	if len(segs) < 3 {
		t.Fatalf("only %d segments", len(segs))
	}
	s := mustOpen(t, dir, testOpts())
	sizes := map[string]int64{}
	var sum int64
	for _, name := range segs {
		sizes[name] = fileSize(t, walPath(dir, name))
		sum += sizes[name]
	}
	if st := s.Stats(); st.DiskBytes != sum || st.Segments != len(segs) {
		t.Errorf("after Open: DiskBytes %d Segments %d, want %d and %d", st.DiskBytes, st.Segments, sum, len(segs))
	}
	for i, r := range recs {
		readN(t, s, 1)
		last := i == len(recs)-1 || recs[i+1].seg != r.seg
		_, err := os.Stat(filepath.Join(dir, r.seg))
		if last {
			sum -= sizes[r.seg]
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("segment %s still there after its last record was acknowledged (%v)", r.seg, err)
			}
		} else if err != nil {
			t.Errorf("segment %s gone before it was consumed: %v", r.seg, err)
		}
		if d := s.Stats().DiskBytes; d != sum {
			t.Errorf("after record %d: DiskBytes %d, want %d", i, d, sum)
		}
	}
	if st := s.Stats(); st.DiskBytes != 0 || st.Segments != 0 || st.Undelivered != 0 {
		t.Errorf("at the end: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(segNames(t, dir)) != 0 {
		t.Errorf("segments left: %v", segNames(t, dir))
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	if l, err := Locked(dir); err != nil || l {
		t.Fatalf("Locked on a fresh dir: %v %v", l, err)
	}
	s := mustOpen(t, dir, testOpts())
	if l, err := Locked(dir); err != nil || !l {
		t.Errorf("Locked while open: %v %v, want true", l, err)
	}
	_, err := Open(dir, testOpts())
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	// The caller names the directory; the error says who holds it.
	if msg := fmt.Sprint(err); strings.Contains(msg, dir) || !strings.Contains(msg, fmt.Sprintf("pid %d", os.Getpid())) {
		if _, err := os.Stat("/proc/locks"); err == nil {
			t.Errorf("second Open: %q; want the holder's pid and not the directory", msg)
		}
	}
	// The refused opener must not have disturbed the first.
	appendAll(t, s, batches("lock", 3, 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err := Locked(dir); err != nil || l {
		t.Errorf("Locked after Close: %v %v, want false", l, err)
	}
	got, reports := readAll(t, dir, testOpts())
	checkClean(t, reports)
	checkExactlyOnce(t, got, flatten(batches("lock", 3, 2)))
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Append(makeRecord(t, "x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestOpenFileNotDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(p, []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, filepath.Dir(p))
	s, err := Open(p, testOpts())
	if err == nil {
		s.Close()
		t.Fatal("Open of a regular file succeeded")
	}
	diffSnapshots(t, before, snapshot(t, filepath.Dir(p)))
}

func TestOpenForeign(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		msg   string // what the error says
	}{
		{"other FORMAT", func(t *testing.T, dir string) {
			writeSpool(t, dir, testOpts(), batches("v", 5, 2))
			os.WriteFile(filepath.Join(dir, formatName), []byte("pelichan-spool 2\n"), 0o640)
		}, `spool: a spool of format "pelichan-spool 2", this build reads "pelichan-spool 1"`},
		{"empty FORMAT", func(t *testing.T, dir string) {
			writeSpool(t, dir, testOpts(), batches("v", 5, 2))
			os.WriteFile(filepath.Join(dir, formatName), nil, 0o640)
		}, `spool: not a spool: its FORMAT file holds "", not a spool format line such as "pelichan-spool 1"`},
		{"foreign files", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o640)
			os.MkdirAll(filepath.Join(dir, "sub"), 0o750)
			os.WriteFile(filepath.Join(dir, "sub", "x"), []byte("x"), 0o640)
		}, `spool: not a spool: no FORMAT file, and the directory holds other files ("notes.txt", "sub"); use an empty or new directory`},
		{"many foreign files", func(t *testing.T, dir string) {
			for i := range 7 {
				os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o640)
			}
		}, `spool: not a spool: no FORMAT file, and the directory holds other files ("f0", "f1", "f2", "f3", and 3 more); use an empty or new directory`},
		{"foreign segment-like dir", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "00000000000000000001"), 0o750)
		}, `spool: not a spool: no FORMAT file, and the directory holds other files ("00000000000000000001"); use an empty or new directory`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			before := snapshot(t, dir)
			s, err := Open(dir, testOpts())
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrVersion) {
				t.Errorf("Open: %v, want ErrVersion", err)
			}
			if err != nil && err.Error() != tc.msg {
				t.Errorf("Open: %q\nwant %q", err, tc.msg)
			}
			diffSnapshots(t, before, snapshot(t, dir))
		})
	}
}

// A segment file is only ever appended to: never copied, rewritten or truncated while
// it is written and read.
func TestRotationNeverRewrites(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	defer s.Close()
	inodes := map[string]uint64{}
	sizes := map[string]int64{}
	var recBytes, raw int64
	check := func(when string) {
		t.Helper()
		var disk int64
		for _, name := range segNames(t, dir) {
			p := walPath(dir, name)
			ino, sz := inode(t, p), fileSize(t, p)
			disk += sz
			if old, ok := inodes[name]; ok && old != ino {
				t.Fatalf("%s: segment %s file replaced (inode %d -> %d)", when, name, old, ino)
			}
			if sz < sizes[name] {
				t.Fatalf("%s: segment %s shrank from %d to %d", when, name, sizes[name], sz)
			}
			inodes[name], sizes[name] = ino, sz
		}
		if st := s.Stats(); st.DiskBytes != disk {
			t.Fatalf("%s: DiskBytes %d, files hold %d", when, st.DiskBytes, disk)
		}
	}
	bs := batches("rot", 80, 3)
	for i, b := range bs {
		rec := makeRecord(t, b...)
		recBytes += int64(len(rec))
		h, _ := segment.ParseHeader(rec)
		raw += int64(h.RawLen)
		if _, err := s.Append(rec); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("append %d", i))
		if i%4 == 3 {
			readN(t, s, 2) // reading and deleting consumed segments on the way
			check(fmt.Sprintf("read after append %d", i))
		}
	}
	st := s.Stats()
	if st.BytesWritten != recBytes {
		t.Errorf("BytesWritten %d, sum of record sizes %d", st.BytesWritten, recBytes)
	}
	if st.RawWritten != raw {
		t.Errorf("RawWritten %d, sum of raw sizes %d", st.RawWritten, raw)
	}
	readN(t, s, -1)
	if st := s.Stats(); st.BytesRead != recBytes {
		t.Errorf("BytesRead %d after reading everything once, want %d", st.BytesRead, recBytes)
	}
}

func TestAppendRefusesNonRecord(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	for _, rec := range [][]byte{nil, []byte("garbage"), make([]byte, 40)} {
		if _, err := s.Append(rec); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Append(%q): %v, want an error wrapping ErrCorrupt", rec, err)
		}
	}
	appendAll(t, s, batches("ok", 2, 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, reports := readAll(t, dir, testOpts())
	checkClean(t, reports)
	checkExactlyOnce(t, got, flatten(batches("ok", 2, 2)))
}

func TestCursorEncoding(t *testing.T) {
	for _, cf := range []cursorFile{
		{},
		{pos: Cursor{Seg: 1 << 32, Index: 1}},
		{pos: Cursor{Seg: ^uint64(0), Index: ^uint64(0), Offset: ^uint32(0)}, high: ^uint64(0), low: 1},
		{pos: Cursor{Seg: 7, Index: 2, Offset: 3}, high: 9, low: 5, extra: []byte("acked out of order"), delivered: 12},
		{pos: Cursor{Seg: 7, Index: 2, Offset: 3}, delivered: unknownDelivered},
	} {
		for _, v := range []int{1, 2, 3, 4} {
			b, want := encodeCursor(cf), cf
			switch v {
			case 1:
				b, want = encodeCursorV1(cf.pos), cursorFile{pos: cf.pos, delivered: unknownDelivered}
			case 2:
				b = encodeCursorV2(cf)
				want.delivered = unknownDelivered
			case 3:
				b = encodeCursorV3(cf)
				want.delivered = unknownDelivered
			}
			got, gotv, err := decodeCursor(b)
			if err != nil || gotv != v || !reflect.DeepEqual(got, want) {
				t.Errorf("version %d cursor %+v round trip: %+v version %d, %v", v, want, got, gotv, err)
			}
			for i := range b {
				d := bytes.Clone(b)
				d[i] ^= 0x10
				if _, _, err := decodeCursor(d); !errors.Is(err, ErrCorrupt) {
					t.Errorf("version %d cursor with byte %d flipped: %v, want ErrCorrupt", v, i, err)
				}
			}
			for _, d := range [][]byte{b[:len(b)-1], append(bytes.Clone(b), 0)} {
				if _, _, err := decodeCursor(d); !errors.Is(err, ErrCorrupt) {
					t.Errorf("version %d cursor of %d bytes: %v, want ErrCorrupt", v, len(d), err)
				}
			}
		}
	}
	m := segMeta{records: 3, messages: 9, raw: 100, first: -5, last: 7}
	b := encodeMeta(m)
	if got, ok := decodeMeta(b); !ok || got != m || b[4] != 2 {
		t.Errorf("meta round trip: %+v %v (version %d)", got, ok, b[4])
	}
	// A front segment's meta of version 1: its resume cursor is an entry index.
	m1 := segMeta{records: 1, resume: Cursor{Seg: 9, Index: 2, Offset: 1}}
	b1 := encodeMeta(m1)
	b1[4] = 1
	binary.LittleEndian.PutUint32(b1[76:], crc32.Checksum(b1[:76], castagnoli))
	if got, ok := decodeMeta(b1); !ok || got.resume != m1.resume || !got.resumeIndex {
		t.Errorf("version 1 meta: %+v %v, want its resume marked as an entry index", got, ok)
	}
	binary.LittleEndian.PutUint64(b[8:], 4)
	if _, ok := decodeMeta(b); ok {
		t.Errorf("damaged meta accepted")
	}
}
