package pelichan

// Done sets in the cursor file for records that are not on disk (see also
// TestRegressionPreDoneInLostTail): Spool.Holds at Open, tracker.lost at the reader's
// io.EOF.

import (
	"encoding/binary"
	"github.com/pelichan/pelichan/spool"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ltSetup stores n messages (one record each, several small segments), then delivers
// them all and acknowledges all but the first: the cursor stays at the first record and
// the cursor file's done sets cover every other record. It returns the segment
// directories, oldest first.
func ltSetup(t *testing.T, dir string, n int, opts []Option) []string {
	t.Helper()
	dmStore(t, dir, opts, "t", n)
	if _, st := dmAckSome(t, dir, opts, n, func(i int) bool { return i > 0 }); st.OnDisk != int64(n) {
		t.Fatalf("session 2: OnDisk %d at open, want %d", st.OnDisk, n)
	}
	var segs []string
	for _, name := range waSegs(t, dir) {
		segs = append(segs, filepath.Join(dir, name))
	}
	return segs
}

// ltCut cuts segment seg's WAL file back to its first keep records and returns how many
// records were cut (keep 0: the file is emptied).
func ltCut(t *testing.T, seg string, keep int) int {
	t.Helper()
	wal := filepath.Join(seg, fzWAL)
	recs := fzParseWAL(t, wal, 0)
	if len(recs) <= keep {
		t.Fatalf("%s holds %d records: the test needs more than %d", seg, len(recs), keep)
	}
	if err := os.Truncate(wal, recs[keep].off); err != nil {
		t.Fatal(err)
	}
	return len(recs) - keep
}

// ltSession3 opens the crash image, checks OnDisk at open (want wantOpen, -1: only
// logged), takes and acknowledges the one message not done, and checks that nothing else
// comes and OnDisk is then 0; then a fourth session must deliver nothing.
func ltSession3(t *testing.T, dir string, opts []Option, wantOpen int64) {
	t.Helper()
	src := make(chan string)
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Stats()
	t.Logf("session 3 at open: OnDisk %d Corrupt %d Segments %d", s.OnDisk, s.Corrupt, s.Segments)
	if wantOpen >= 0 && s.OnDisk != wantOpen {
		t.Errorf("session 3: OnDisk %d at open, want %d", s.OnDisk, wantOpen)
	}
	ltTakeFirst(t, c)
	akMustClose(t, c)

	src = make(chan string)
	c, err = New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond); ok {
		t.Errorf("session 4: delivery %q: an acknowledged message delivered again", d.Msg)
	}
	if s := c.Stats(); s.OnDisk != 0 {
		t.Errorf("session 4: OnDisk %d at open, want 0; %+v", s.OnDisk, s)
	}
}

// ltTakeFirst takes and acknowledges the one message ltSetup left not done, and checks
// that no other comes (an acknowledged one delivered again) and that OnDisk is then 0.
func ltTakeFirst(t *testing.T, c *Chan[string]) {
	t.Helper()
	d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
	if !ok || d.Msg != akMsg("t", 0) {
		t.Fatalf("session 3: delivery %q (%v), want the first message", d.Msg, ok)
	}
	if err := c.Ack(d.Seq); err != nil {
		t.Fatalf("Ack(%d): %v", d.Seq, err)
	}
	if d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond); ok {
		t.Fatalf("session 3: a second delivery %q (an acknowledged message delivered again)", d.Msg)
	}
	if s := c.Stats(); s.OnDisk != 0 {
		t.Errorf("session 3: OnDisk %d after the drain, want 0; %+v", s.OnDisk, s)
	}
}

// tracker.lost with something to forget: the records lost are in a segment counted in the
// background (Holds cannot tell, it says true), and nothing found follows them (the newest
// segment lost every record), so only the reader's io.EOF can hand their done messages
// back. OnDisk is low at open (documented: lazily counted segments), 0 after the drain,
// and a restart delivers nothing again.
func TestLostTailInLazySegment(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(60), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	segs := ltSetup(t, dir, 60, opts)
	if len(segs) < 4 {
		t.Fatalf("%d segments: the test needs 4 or more", len(segs))
	}
	// The two newest were being written (no meta): the one before the newest keeps its
	// first record, the newest keeps nothing.
	lost := ltCut(t, segs[len(segs)-2], 1)
	lost += ltCut(t, segs[len(segs)-1], 0)
	for _, s := range segs[len(segs)-2:] {
		if err := os.Remove(filepath.Join(s, "meta")); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d segments, %d records lost", len(segs), lost)
	ltSession3(t, dir, opts, -1)
}

// A sealed segment (meta present: the spool counts its records from the meta) whose file
// is shorter than its records (damage: sealing fsyncs the file before the meta is
// written). Holds says true for the done sets of the missing records (the meta's counts
// include them), so their done messages are not counted in OnDisk: 1 at open, 0 after the
// drain. (A first version of Holds judged them by the file's size and left 5 and 4.)
func TestSealedShortSegmentDoneSets(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(60), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	segs := ltSetup(t, dir, 60, opts)
	lost := ltCut(t, segs[len(segs)-1], 1) // meta kept
	t.Logf("%d segments, %d records lost from the sealed newest", len(segs), lost)
	ltSession3(t, dir, opts, 1)
}

// A damaged record in the middle of a sealed segment (counted from its meta) whose one
// message the cursor file marks done: the reader skips it and reports it, and its done
// message, counted at open and taken off OnDisk there, is not given back when the reader
// passes it (it was given back, leaving OnDisk one high for good).
func TestDamagedDoneRecordInSealedSegment(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(60), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	segs := ltSetup(t, dir, 60, opts)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs 3 or more", len(segs))
	}
	wal := filepath.Join(segs[1], "00000000000000000001")
	data, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	size, k := binary.Uvarint(data)
	data[k+int(size)-1] ^= 0xff // the first record's last byte: its CRC fails
	if err := os.WriteFile(wal, data, 0o640); err != nil {
		t.Fatal(err)
	}
	ltSession3(t, dir, opts, 1)
}

// A sealed segment shortened by damage (meta kept): its never-found records are forgotten
// once the reader has read everything, without giving back their done messages, so a
// record read later (which would make the reader pass them) does not add them to OnDisk.
func TestSealedShortThenNewRecord(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(60), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	segs := ltSetup(t, dir, 60, opts)
	ltCut(t, segs[len(segs)-1], 1) // meta kept
	c, err := New(dir, make(chan string), String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, want := range []string{akMsg("t", 0), "new"} {
		if want == "new" {
			if err := c.Store(want); err != nil {
				t.Fatalf("Store: %v", err)
			}
		}
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok || d.Msg != want {
			t.Fatalf("delivery %q (%v), want %q", d.Msg, ok, want)
		}
		if err := c.Ack(d.Seq); err != nil {
			t.Fatalf("Ack(%d): %v", d.Seq, err)
		}
		waitStats(t, c, 5*time.Second, "OnDisk 0 after "+want+" was acknowledged", func(s Stats) bool { return s.OnDisk == 0 })
	}
	if d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond); ok {
		t.Fatalf("a delivery %q more: an acknowledged message delivered again", d.Msg)
	}
}

// newTracker keeps a cursor-file done set only for a record the spool may hold, and
// counts only those in preDone; lost gives back the done messages of those it forgets
// in scanned segments only, and keeps those of segments gone.
func TestTrackerHoldsAndLost(t *testing.T) {
	rec := func(seg, index uint64, done ...int) *recState {
		r := &recState{key: recKey{seg, index}, count: 4}
		for _, i := range done {
			r.mark(i)
		}
		return r
	}
	cursor := spool.Cursor{Seg: 1}
	extra := encodeDone([]*recState{
		rec(1, 100, 0, 1), // held, scanned segment
		rec(1, 900, 0),    // past segment 1's end: lost in a crash
		rec(2, 50, 0, 1, 2),
		rec(3, 10, 3), // segment 3 is counted from its meta
	}, cursor)
	holds := func(seg, off uint64) bool { return !(seg == 1 && off >= 500) }
	scanned := func(seg uint64) bool { return seg != 3 }
	tr, err := newTracker(extra, cursor, holds, scanned)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.preDone(); got != 2+3+1 {
		t.Errorf("preDone %d, want 6 (the record past segment 1's end left out)", got)
	}
	// The reader found everything but segment 2's record and segment 3's; segment 2 is
	// gone meanwhile.
	tr.reached(recKey{1, 100}, 4, 0, 0)
	has := func(seg uint64) bool { return seg != 2 }
	if got := tr.lost(has); got != 0 {
		t.Errorf("lost gave back %d, want 0 (segment 3 counted from its meta, segment 2 gone)", got)
	}
	if len(tr.pre) != 1 || tr.pre[0].key.seg != 2 {
		t.Errorf("after lost, pre holds %d records, want segment 2's alone (for prune)", len(tr.pre))
	}
	scanned = func(uint64) bool { return true }
	tr.scanned = scanned
	has = func(uint64) bool { return true }
	if got := tr.lost(has); got != 3 {
		t.Errorf("lost gave back %d, want 3 (segment 2's record, scanned and not found)", got)
	}
}
