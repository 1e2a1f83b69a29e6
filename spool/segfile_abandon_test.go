package spool

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// abandon (also on the read path) fsyncs what was written; if that fsync fails, the
// next Sync says so, as for a background seal, instead of reporting success for records
// that were never made durable, also when an Append returned the failure first. (From two
// reviews.)
func TestAbandonFsyncErrorReturnedBySync(t *testing.T) {
	dir := t.TempDir()
	opts := testOpts()
	opts.SegmentSize = 1 << 20
	opts.NoSync = false
	s := mustOpen(t, dir, opts)
	defer s.Close()
	for i := range 3 {
		if _, err := s.Append(makeRecord(t, "m", string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	// Stand-in for a disk returning EIO: the read back and the fsync of the segment
	// being written both fail (a pipe: pread ESPIPE, fsync EINVAL).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	real := s.wlog.f
	defer real.Close()
	s.wlog.f = r
	if err := r.Sync(); err == nil {
		t.Skip("fsync of a pipe succeeds here")
	}
	if _, err := s.Next(); err != nil {
		t.Fatalf("Next: %v", err)
	}
	// An Append in between (a spill after the damage) returns the failure first; the
	// Sync after it must still not say the three records are durable.
	if _, err := s.Append(makeRecord(t, "after")); err == nil {
		t.Errorf("Append after the failed fsync: nil error, want it reported")
	}
	if err := s.Sync(); err == nil {
		t.Errorf("Sync returned nil after the fsync of the segment holding 3 unsynced records failed")
	}
	if err := s.Sync(); err != nil {
		t.Errorf("a second Sync: %v, want nil (the failure is reported once)", err)
	}
}

// Damage in the segment being written, found by the reader: abandon seals the segment
// with its meta file, so the next Open counts it from there and the damage is reported
// once in that session (without the meta, Open's scan reported it and the reader again).
// (From a review.)
func TestActiveDamageReportedOnceAfterReopen(t *testing.T) {
	dir := t.TempDir()
	var reports []error
	opts := testOpts()
	opts.SegmentSize = 1 << 20
	opts.OnCorrupt = func(err error) { reports = append(reports, err) }
	s := mustOpen(t, dir, opts)
	var offs []uint64
	for i := range 4 {
		c, err := s.Append(makeRecord(t, "r", string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, c.Index)
	}
	// The consumer has read the first record only.
	rec, err := s.Next()
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, s.active.name(), walFile), int64(offs[2])-2, 0xff) // record 1
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 {
		t.Fatalf("session 1: %d reports", len(reports))
	}
	if err := s.Ack(Cursor{Seg: rec.Pos.Seg, Index: rec.Pos.Index + 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reports = nil
	s = mustOpen(t, dir, opts)
	defer s.Close()
	msgs := drain(t, s)
	st := s.Stats()
	if len(reports) != 1 || st.Corrupt != 1 {
		t.Errorf("session 2: one damaged record reported %d times (Corrupt %d): %v", len(reports), st.Corrupt, reports)
	}
	if want := []string{"r", "c", "r", "d"}; !slices.Equal(msgs, want) {
		t.Errorf("session 2 delivered %q, want %q", msgs, want)
	}
}
