package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tidwall/wal"
)

// The segment being written is written by segFile, not by tidwall/wal, but in its format:
// the same records written both ways make the same file, and tidwall/wal reads what
// segFile wrote, entry by entry.
func TestSegFileTidwallReadsIt(t *testing.T) {
	var recs [][]byte
	for i := range 40 {
		msgs := make([]string, 1+i%7)
		for j := range msgs {
			msgs[j] = string(bytes.Repeat([]byte{byte('a' + j)}, 1+i*37%300))
		}
		recs = append(recs, makeRecord(t, msgs...))
	}
	recs = append(recs, bytes.Repeat([]byte{7}, 300<<10)) // a frame the write buffer does not keep (> 127 bytes of length: a longer uvarint)

	ours := filepath.Join(t.TempDir(), "seg")
	w, err := createSegFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	var size int64
	for _, r := range recs {
		offs = append(offs, size)
		if err := w.append(r); err != nil {
			t.Fatal(err)
		}
		size += int64(uvarintLen(uint64(len(r))) + len(r))
	}
	// Read back, as the reader of the segment being written does.
	for i, r := range recs {
		end := size
		if i+1 < len(offs) {
			end = offs[i+1]
		}
		got, err := w.readAt(offs[i], end)
		if err != nil || !bytes.Equal(got, r) {
			t.Fatalf("readAt entry %d: %d bytes, %v; want the %d written", i, len(got), err, len(r))
		}
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}

	theirs := filepath.Join(t.TempDir(), "seg")
	l, err := wal.Open(theirs, (&Spool{}).walOptions())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if err := l.Write(uint64(i+1), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	a, errA := os.ReadFile(filepath.Join(ours, walFile))
	b, errB := os.ReadFile(filepath.Join(theirs, walFile))
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("segFile wrote %d bytes, tidwall/wal %d for the same records: the files differ", len(a), len(b))
	}
	if int64(len(a)) != size {
		t.Fatalf("file of %d bytes, framing says %d", len(a), size)
	}

	l, err = wal.Open(ours, (&Spool{}).walOptions())
	if err != nil {
		t.Fatalf("tidwall/wal opens segFile's file: %v", err)
	}
	defer l.Close()
	last, err := l.LastIndex()
	if err != nil || last != uint64(len(recs)) {
		t.Fatalf("tidwall/wal finds %d entries (%v), want %d", last, err, len(recs))
	}
	for i, r := range recs {
		got, err := l.Read(uint64(i + 1))
		if err != nil || !bytes.Equal(got, r) {
			t.Fatalf("tidwall/wal entry %d: %d bytes, %v", i+1, len(got), err)
		}
	}
}

// A segment directory that already holds a WAL file is never overwritten.
func TestSegFileNeverOverwrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seg")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, walFile), []byte("kept"), 0o640); err != nil {
		t.Fatal(err)
	}
	if w, err := createSegFile(dir); !errors.Is(err, os.ErrExist) {
		if w != nil {
			w.close()
		}
		t.Fatalf("createSegFile over an existing file: %v, want an error wrapping os.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, walFile)); string(b) != "kept" {
		t.Fatalf("the existing file now holds %q", b)
	}
}

// readAt refuses a frame whose length prefix does not match its bounds, and bounds that
// are impossible, rather than returning the wrong bytes or allocating without bound.
func TestSegFileReadAtRefuses(t *testing.T) {
	w, err := createSegFile(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	rec := makeRecord(t, "one", "two")
	if err := w.append(rec); err != nil {
		t.Fatal(err)
	}
	n := int64(uvarintLen(uint64(len(rec))) + len(rec))
	for _, c := range []struct{ off, end int64 }{
		{0, n - 1}, {0, n + 1}, {1, n}, {-1, n}, {n, n}, {0, 1 << 40},
	} {
		if got, err := w.readAt(c.off, c.end); err == nil {
			t.Errorf("readAt(%d, %d) = %d bytes, nil error; want an error", c.off, c.end, len(got))
		}
	}
	if got, err := w.readAt(0, n); err != nil || !bytes.Equal(got, rec) {
		t.Fatalf("readAt(0, %d): %v", n, err)
	}
}

// A record of the segment being written that is damaged on disk before the reader reads
// it back is skipped and reported like damage in a sealed segment; the records around it
// are delivered, and appending goes on in a new segment.
func TestActiveSegmentDamagedBeforeRead(t *testing.T) {
	dir := t.TempDir()
	var reported []error
	opts := testOpts()
	opts.SegmentSize = 1 << 20 // everything below stays in one segment
	opts.OnCorrupt = func(err error) { reported = append(reported, err) }
	s := mustOpen(t, dir, opts)
	defer s.Close()
	var offs []int64 // each record's offset, as Append returns it
	for i := range 3 {
		pos, err := s.Append(makeRecord(t, "m"+string(rune('0'+i)), "x"))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, int64(pos.Index))
	}
	// Flip a byte inside the second record's payload (its last byte).
	flipByte(t, filepath.Join(dir, s.active.name(), walFile), offs[2]-3, 0xff)
	got := drain(t, s)
	if want := []string{"m0", "x", "m2", "x"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %q, want %q", got, want)
	}
	if len(reported) != 1 || !errors.Is(reported[0], ErrCorrupt) {
		t.Fatalf("reported %v, want one error wrapping ErrCorrupt", reported)
	}
	if _, err := s.Append(makeRecord(t, "after")); err != nil {
		t.Fatalf("Append after the damage: %v", err)
	}
	rec, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	if m := decodeRecord(t, rec.Data); !slices.Equal(m, []string{"after"}) {
		t.Fatalf("after the damage: %q", m)
	}
}

// Append checks a record's CRC, as the reader does: a record that would not read back is
// refused (ErrCorrupt) and nothing is stored.
func TestAppendRefusesBadCRC(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOpts())
	defer s.Close()
	rec := makeRecord(t, "one", "two")
	rec[len(rec)-1] ^= 0xff
	if _, err := s.Append(rec); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Append of a record with a bad CRC: %v, want ErrCorrupt", err)
	}
	if st := s.Stats(); st.Undelivered != 0 || st.DiskBytes != 0 {
		t.Fatalf("after the refused Append: %+v", st)
	}
}
