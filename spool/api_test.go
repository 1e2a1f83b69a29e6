package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Append returns each record's position, the one Next reports for it.
func TestAppendReturnsPosition(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	defer s.Close()
	var pos []Cursor
	size := 0 // bytes of the last record's entry
	for i, b := range batches("pos", 20, 3) {
		rec := makeRecord(t, b...)
		c, err := s.Append(rec)
		if err != nil {
			t.Fatal(err)
		}
		if c.Offset != 0 || c.Seg == 0 {
			t.Fatalf("Append %d: position %+v", i, c)
		}
		// The offset of the record's framing: the file size before it.
		if n := len(pos); n > 0 && c.Seg == pos[n-1].Seg && c.Index != pos[n-1].Index+uint64(size) ||
			(n == 0 || c.Seg != pos[n-1].Seg) && c.Index != 0 || n > 0 && c.Seg < pos[n-1].Seg {
			t.Fatalf("Append %d: position %+v after %+v (%d bytes)", i, c, pos[len(pos)-1], size)
		}
		size = uvarintLen(uint64(len(rec))) + len(rec)
		pos = append(pos, c)
	}
	if segs := segNames(t, dir); len(segs) < 3 {
		t.Fatalf("want several segments, got %v", segs)
	}
	for i := range pos {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if r.Pos != pos[i] {
			t.Errorf("record %d: Next says %+v, Append said %+v", i, r.Pos, pos[i])
		}
	}
	if _, err := s.Append([]byte("not a record")); err == nil {
		t.Errorf("Append of a non-record succeeded")
	}
	s.Close()
	if c, err := s.Append(makeRecord(t, "x")); !errors.Is(err, ErrClosed) || c != (Cursor{}) {
		t.Errorf("Append after Close: %+v, %v", c, err)
	}
}

// The extra bytes go with the cursor: written by Checkpoint and Close, back after Open;
// too many make Checkpoint and Close fail and leave the last checkpoint in place.
func TestExtra(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	if x := s.Extra(); x != nil {
		t.Errorf("Extra of a new spool: %q", x)
	}
	appendAll(t, s, batches("extra", 6, 2))
	readN(t, s, 2)
	b := []byte("acked: 5, 7")
	s.SetExtra(b)
	b[0] = 'X' // SetExtra copied it
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	want := readCursorFile(t, dir)
	// A crash now: the checkpoint has it.
	crash := t.TempDir()
	waitBackground(s) // no seal writing a meta file while it is copied
	copyDir(t, dir, crash)
	s.SetExtra([]byte("acked: 5, 7, 9"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	c := mustOpen(t, crash, testOpts())
	if x := string(c.Extra()); x != "acked: 5, 7" {
		t.Errorf("after a crash: Extra %q, want the checkpoint's", x)
	}
	if c.Cursor() != want {
		t.Errorf("after a crash: cursor %+v, want %+v", c.Cursor(), want)
	}
	c.Close()

	s = mustOpen(t, dir, testOpts())
	if x := string(s.Extra()); x != "acked: 5, 7, 9" {
		t.Errorf("after Close: Extra %q, want what Close wrote", x)
	}
	x := s.Extra()
	x[0] = 'Y' // a copy
	if x := string(s.Extra()); x != "acked: 5, 7, 9" {
		t.Errorf("Extra changed by its caller: %q", x)
	}

	// Too large: nothing written, the previous checkpoint stays.
	before, err := os.ReadFile(filepath.Join(dir, cursorName))
	if err != nil {
		t.Fatal(err)
	}
	readN(t, s, 1)
	s.SetExtra(make([]byte, MaxExtra+1))
	if err := s.Checkpoint(); !errors.Is(err, ErrExtraTooLarge) {
		t.Errorf("Checkpoint with %d extra bytes: %v, want ErrExtraTooLarge", MaxExtra+1, err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, cursorName)); !bytes.Equal(before, after) {
		t.Errorf("a refused checkpoint changed the cursor file")
	}
	// Fewer again: checkpoints work again.
	s.SetExtra(nil)
	if err := s.Checkpoint(); err != nil {
		t.Errorf("Checkpoint after SetExtra(nil): %v", err)
	}
	if s.Extra() != nil {
		t.Errorf("Extra after SetExtra(nil): %q", s.Extra())
	}
	// A file claiming more is damaged, whatever its length.
	cb := encodeCursor(cursorFile{extra: []byte("abc")})
	binary.LittleEndian.PutUint32(cb[44:], MaxExtra+1)
	if _, _, err := decodeCursor(cb); !errors.Is(err, ErrCorrupt) {
		t.Errorf("cursor claiming %d extra bytes: %v, want ErrCorrupt", MaxExtra+1, err)
	}
	s.SetExtra(make([]byte, MaxExtra+1))
	if err := s.Close(); !errors.Is(err, ErrExtraTooLarge) {
		t.Errorf("Close with too many extra bytes: %v, want ErrExtraTooLarge", err)
	}
	s = mustOpen(t, dir, testOpts()) // the lock was released
	if s.Extra() != nil {
		t.Errorf("Extra %q, want none (the last checkpoint had none)", s.Extra())
	}
	s.Close()
}

// Checkpoint writes nothing when neither the cursor nor the extra bytes changed.
func TestCheckpointSkipsUnchanged(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOpts())
	defer s.Close()
	appendAll(t, s, batches("skip", 4, 2))
	p := filepath.Join(dir, cursorName)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	ino := inode(t, p) // every write replaces the file: a new inode
	for range 3 {
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	s.SetExtra(nil) // the same as before
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if inode(t, p) != ino {
		t.Errorf("an unchanged checkpoint rewrote the cursor file")
	}
	for _, change := range []func(){
		func() { readN(t, s, 1) },
		func() { s.SetExtra([]byte("x")) },
		func() { s.SetExtra([]byte("y")) },
	} {
		change()
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if n := inode(t, p); n == ino {
			t.Errorf("a changed checkpoint was not written")
		} else {
			ino = n
		}
	}
	// At Open, the file read counts as written.
	s.Close()
	s = mustOpen(t, dir, testOpts())
	ino = inode(t, p)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if inode(t, p) != ino {
		t.Errorf("the first checkpoint after Open rewrote an unchanged cursor file")
	}
}

// Segment numbers are never used twice in a directory, also once it has emptied and
// been reopened, and by front segments.
func TestSegmentNumbersNeverReused(t *testing.T) {
	dir := t.TempDir()
	used := map[string]bool{}
	note := func() {
		for _, n := range segNames(t, dir) {
			used[n] = true
		}
	}
	highest := func() string {
		var h string
		for n := range used {
			h = max(h, n)
		}
		return h
	}
	s := mustOpen(t, dir, testOpts())
	for _, b := range batches("reuse", 10, 3) {
		if _, err := s.Append(makeRecord(t, b...)); err != nil {
			t.Fatal(err)
		}
		note()
	}
	drain(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if segs := segNames(t, dir); len(segs) != 0 {
		t.Fatalf("segments %v left after a drain", segs)
	}
	for round := range 3 {
		s = mustOpen(t, dir, testOpts())
		h := highest()
		c, err := s.Append(makeRecord(t, "after"))
		if err != nil {
			t.Fatal(err)
		}
		note()
		if name := segName(c.Seg); name <= h {
			t.Errorf("round %d: new segment %s, not above %s", round, name, h)
		}
		if round == 1 {
			// A front segment is numbered below every number ever used.
			low := slices.Min(slices.Collect(maps.Keys(used)))
			if err := s.Front([][]byte{makeRecord(t, "front")}); err != nil {
				t.Fatal(err)
			}
			segs := segNames(t, dir)
			if segs[0] >= low {
				t.Errorf("front segment %s, not below %s", segs[0], low)
			}
			note()
		}
		drain(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Segments written by a run that crashed (its cursor file does not know them), then
	// dropped unread (DropOldest) by a run that crashed too.
	s = mustOpen(t, dir, testOpts())
	appendAll(t, s, batches("dropped", 40, 3))
	note()
	waitBackground(s)
	crash := t.TempDir()
	copyDir(t, dir, crash)
	s.Close()
	dir = crash
	s = mustOpen(t, dir, testOpts())
	for {
		_, ok, err := s.DropOldest()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
	}
	waitBackground(s)
	crash = t.TempDir()
	copyDir(t, dir, crash)
	s.Close()
	if segs := segNames(t, crash); len(segs) > 1 {
		t.Fatalf("segments %v left after dropping", segs)
	}
	dir = crash
	s = mustOpen(t, dir, testOpts())
	drain(t, s)
	c, err := s.Append(makeRecord(t, "after drops"))
	if err != nil {
		t.Fatal(err)
	}
	if name, h := segName(c.Seg), highest(); name <= h {
		t.Errorf("after dropping: new segment %s, not above %s", name, h)
	}
	note()
	s.Close()

	// The cursor file lost: the segments present still give a floor.
	s = mustOpen(t, dir, testOpts())
	appendAll(t, s, batches("floor", 3, 3))
	s.Close()
	note()
	h := highest()
	os.Remove(filepath.Join(dir, cursorName))
	s = mustOpen(t, dir, testOpts())
	c, err = s.Append(makeRecord(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if name := segName(c.Seg); name <= h {
		t.Errorf("without a cursor file: new segment %s, not above %s", name, h)
	}
	s.Close()
}

// Spools written by earlier versions (testdata/v1, testdata/v2, see their READMEs) open
// and deliver exactly what they held, once, with their extra bytes; the next checkpoint
// writes the current version.
func TestOpenOldSpools(t *testing.T) {
	for _, tc := range []struct {
		version int
		name    string
		lost    int // messages of damaged records in the segments not consumed
	}{{1, "plain", 0}, {1, "front", 0}, {2, "plain", 0}, {2, "front", 0}, {2, "damaged", 3}} {
		t.Run(fmt.Sprintf("v%d/%s", tc.version, tc.name), func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join("testdata", fmt.Sprintf("v%d", tc.version))
			copyDir(t, filepath.Join(src, tc.name), dir)
			b, err := os.ReadFile(filepath.Join(src, tc.name+".want"))
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if cb, _ := os.ReadFile(filepath.Join(dir, cursorName)); len(cb) < 8 || int(cb[4]) != tc.version {
				t.Fatalf("testdata cursor is not a version %d file", tc.version)
			}
			s := mustOpen(t, dir, testOpts())
			// The damaged record's messages count as undelivered until its segment is consumed.
			if u := s.Stats().Undelivered; u != int64(len(want)+tc.lost) {
				t.Errorf("Undelivered %d after Open, want %d", u, len(want)+tc.lost)
			}
			wantExtra := ""
			if tc.version >= 2 {
				wantExtra = "v2-extra-" + tc.name
			}
			if string(s.Extra()) != wantExtra {
				t.Errorf("Extra %q, want %q", s.Extra(), wantExtra)
			}
			half := readN(t, s, 3)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, v, err := readCursorPath(filepath.Join(dir, cursorName)); v != cursorVersion || err != nil {
				t.Errorf("cursor file after Close: version %d, %v", v, err)
			}
			rest, reports := readAll(t, dir, testOpts())
			if tc.lost == 0 {
				checkClean(t, reports) // a translated position is no damage
			}
			if got := append(half, rest...); !slices.Equal(got, want) {
				t.Errorf("delivered\n%q\nwant\n%q", got, want)
			}
			// New segments go above the old ones.
			s = mustOpen(t, dir, testOpts())
			c, err := s.Append(makeRecord(t, "new"))
			if err != nil {
				t.Fatal(err)
			}
			if c.Seg <= firstSeq+2 {
				t.Errorf("new segment %d, not above the old spool's", c.Seg)
			}
			s.Close()
		})
	}
}

// Sync returns only once the record that filled a segment, sealed in the background,
// is fsynced as well.
func TestSyncWaitsForSeal(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{SegmentSize: 400}) // with fsync
	defer s.Close()
	var sealed []*seg
	for _, b := range batches("sync", 12, 3) {
		if _, err := s.Append(makeRecord(t, b...)); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, sg := range s.segs {
			if sg.sealed && !slices.Contains(sealed, sg) {
				sealed = append(sealed, sg)
			}
		}
		for _, sg := range sealed {
			select {
			case <-sg.synced:
			default:
				t.Fatalf("Sync returned before segment %s, sealed, was fsynced", sg.name())
			}
		}
	}
	if len(sealed) < 2 {
		t.Fatalf("only %d segments sealed", len(sealed))
	}
	if len(s.sealing) != 0 {
		t.Errorf("%d seals still waited for after Sync", len(s.sealing))
	}
}

// Inspect and Dump read old cursor files as Open does.
func TestInspectOldSpools(t *testing.T) {
	for _, tc := range []struct {
		version int
		name    string
	}{{1, "plain"}, {1, "front"}, {2, "plain"}, {2, "front"}, {2, "damaged"}} {
		t.Run(fmt.Sprintf("v%d/%s", tc.version, tc.name), func(t *testing.T) {
			src := filepath.Join("testdata", fmt.Sprintf("v%d", tc.version))
			dir := filepath.Join(src, tc.name) // read-only: used in place
			b, err := os.ReadFile(filepath.Join(src, tc.name+".want"))
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			r, err := Inspect(dir)
			if err != nil {
				t.Fatal(err)
			}
			if r.Cursor.State != "ok" || r.Cursor.Version != tc.version || (tc.version == 1) != (r.Cursor.High == 0) || r.Undelivered != int64(len(want)) {
				t.Errorf("cursor %+v, undelivered %d; want a version %d cursor and %d undelivered", r.Cursor, r.Undelivered, tc.version, len(want))
			}
			var got []string
			err = Dump(dir, DumpOptions{}, func(m Message) error { got = append(got, string(m.Data)); return nil })
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("Dump: %v\n%q\nwant\n%q", err, got, want)
			}
		})
	}
}
