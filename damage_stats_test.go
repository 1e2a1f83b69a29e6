package pelichan

// Stats after damage found while reading segments counted from their meta files (see
// Spool.TakeMissing): the messages the reader does not find move from OnDisk to Dropped,
// less those the cursor file marked done.

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A sealed segment cut short (meta kept): its lost records' messages were counted at open;
// after the drain they are Dropped and OnDisk is 0, and Stats' identity holds.
func TestSealedShortSegmentLostToDropped(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 60
	dmStore(t, dir, opts, "s", n)
	segs := waSegs(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs 3 or more", len(segs))
	}
	victim := filepath.Join(dir, segs[1])
	if _, err := os.Stat(filepath.Join(victim, "meta")); err != nil {
		t.Fatalf("segment %s has no meta file: %v", victim, err)
	}
	ltCut(t, victim, 1)
	got, st := reopenAndDrain(t, dir, opts...)
	if len(got) >= n || len(got) == 0 {
		t.Fatalf("delivered %d of %d: the cut should cost some", len(got), n)
	}
	if st.OnDisk != 0 || st.Dropped != int64(n-len(got)) || st.Refilled != int64(len(got)) {
		t.Errorf("after the drain: OnDisk %d Dropped %d Refilled %d, want 0, %d, %d; %+v",
			st.OnDisk, st.Dropped, st.Refilled, n-len(got), len(got), st)
	}
	checkBalance(t, st, n)
}

// As above with acknowledgements, where the cursor file marks some of the lost messages
// done (every other one was acknowledged before the cut): only those not done move to
// Dropped (the done ones were taken off OnDisk at open), and a restart delivers nothing.
func TestSealedShortSegmentLostPartlyDone(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(100), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 60
	dmStore(t, dir, opts, "p", n)
	acked, _ := dmAckSome(t, dir, opts, n, func(i int) bool { return i%2 == 1 })
	segs := waSegs(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs 3 or more", len(segs))
	}
	lost := ltCut(t, filepath.Join(dir, segs[1]), 1)
	c := open(t, dir, make(chan string), opts...)
	msgs, st := dmDrainAcking(t, c, acked)
	got := len(msgs)
	t.Logf("%d records cut; delivered %d; then %+v", lost, got, st)
	if st.OnDisk != 0 || st.Dropped != int64(n/2-got) || st.Dropped == 0 {
		t.Errorf("after the drain: OnDisk %d Dropped %d, want 0 and the %d not done that were cut", st.OnDisk, st.Dropped, n/2-got)
	}
	checkBalance(t, st, n/2) // the backlog: the messages not acknowledged
	akMustClose(t, c)
	c = open(t, dir, make(chan string), opts...)
	if d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond); ok {
		t.Errorf("session 4: delivery %q: a message delivered again", d.Msg)
	}
	if s := c.Stats(); s.OnDisk != 0 {
		t.Errorf("session 4: OnDisk %d at open, want 0", s.OnDisk)
	}
}

// Damage to a segment this Chan wrote, found by its own reader: the messages of the
// damaged record move from OnDisk to Dropped when the reader is done with the segment, as
// for a segment counted at open. (Found by review: they stayed in OnDisk for good.)
func TestDamageInSegmentWrittenThisSession(t *testing.T) {
	dir := t.TempDir()
	// Out unbuffered: the reader reads only a few records ahead of the consumer.
	c := open(t, dir, make(chan string), WithBuffer(0), WithSegmentSize(1<<10), WithBatchBytes(256))
	const n = 60
	var sent []string
	for i := range n {
		sent = append(sent, akMsg("w", i))
		if err := c.Store(sent[i]); err != nil { // a record each, the consumer away
			t.Fatalf("Store: %v", err)
		}
	}
	segs := waSegs(t, dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments: the test needs 4 or more", len(segs))
	}
	dmFlipRecord(t, filepath.Join(dir, segs[2]), 0)
	got := recvN(c.Out(), n, time.Second)
	st := waitStats(t, c, 5*time.Second, "OnDisk 0", func(s Stats) bool { return s.OnDisk == 0 })
	if len(got) != n-1 || st.Dropped != 1 || st.Corrupt == 0 {
		t.Errorf("delivered %d of %d, Dropped %d, Corrupt %d; want %d, 1 and the damage counted", len(got), n, st.Dropped, st.Corrupt, n-1)
	}
	// Nothing twice, nothing foreign: exactly the damaged record's message is missing.
	left := map[string]int{}
	for _, m := range sent {
		left[m]++
	}
	for _, m := range got {
		if left[m]--; left[m] < 0 {
			t.Errorf("%q delivered twice or never sent", m)
		}
	}
	checkBalance(t, st)
}

// ---- helpers for the damage tests --------------------------------------------------------

// dmStore stores n messages (prefix, akMsg) in a new Chan on dir with Store, a record
// each, the consumer away, and closes it.
func dmStore(t *testing.T, dir string, opts []Option, prefix string, n int) {
	t.Helper()
	c := open(t, dir, make(chan string), opts...)
	for i := range n {
		if err := c.Store(akMsg(prefix, i)); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
	mustClose(t, c)
}

// dmAckSome opens dir (with acks), takes n deliveries, acknowledges delivery i if ack(i),
// and closes. It returns the messages acknowledged and Stats at open.
func dmAckSome(t *testing.T, dir string, opts []Option, n int, ack func(i int) bool) (map[string]bool, Stats) {
	t.Helper()
	c := open(t, dir, make(chan string), opts...)
	atOpen := c.Stats()
	acked := map[string]bool{}
	for i := range n {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("delivery %d of %d did not come; stats %+v", i+1, n, c.Stats())
		}
		if ack(i) {
			if err := c.Ack(d.Seq); err != nil {
				t.Fatalf("Ack(%d): %v", d.Seq, err)
			}
			acked[d.Msg] = true
		}
	}
	akMustClose(t, c)
	return acked, atOpen
}

// dmDrainAcking takes and acknowledges deliveries until none comes for 300 ms, and waits
// for the acknowledgements to count. It fails the test on a message delivered twice or
// one in done (acknowledged in an earlier session).
func dmDrainAcking(t *testing.T, c *Chan[string], done map[string]bool) ([]string, Stats) {
	t.Helper()
	var got []string
	seen := map[string]bool{}
	for {
		d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond)
		if !ok {
			break
		}
		if seen[d.Msg] || done[d.Msg] {
			t.Errorf("%q delivered again (twice in a session, or acknowledged before)", d.Msg)
		}
		seen[d.Msg] = true
		got = append(got, d.Msg)
		if err := c.Ack(d.Seq); err != nil {
			t.Fatalf("Ack(%d): %v", d.Seq, err)
		}
	}
	return got, waitStats(t, c, 5*time.Second, "every delivery acknowledged", func(s Stats) bool { return s.Unacked == 0 })
}

// dmFlipRecord flips a byte of record k (0-based) of a segment's WAL file so that its CRC
// fails, and returns the record's offset.
func dmFlipRecord(t *testing.T, seg string, k int) int {
	t.Helper()
	wal := filepath.Join(seg, fzWAL)
	recs := fzParseWAL(t, wal, 0)
	if k >= len(recs) {
		t.Fatalf("%s: no record %d (%d records)", wal, k, len(recs))
	}
	data, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	data[recs[k].end-1] ^= 0x10 // the record's last byte
	if err := os.WriteFile(wal, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return int(recs[k].off)
}
