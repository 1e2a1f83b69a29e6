package spool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// A segment a kill left without a record, after a gap in the numbers past the cursor, is
// deleted once the reader has passed it (it has nothing to acknowledge).
func TestEmptySegmentPastCursorDeleted(t *testing.T) {
	dir := t.TempDir()
	sp, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := segment.NewWriter(1024)
	w.AddBytes([]byte("x"))
	if _, err := sp.Append(w.Record()); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "00000000004294967300") // a gap after the first segment
	if err := os.Mkdir(seg, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(seg, walFile), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	sp, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Next(); err == nil {
		t.Fatal("a second record")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg); err == nil {
		t.Errorf("the empty segment %s was left after everything was delivered", seg)
	}
}
