package pelichan

// Stats after damage found while reading segments counted from their meta files (see
// Spool.TakeMissing): the messages the reader does not find move from OnDisk to Dropped,
// less those the cursor file marked done.

import (
	"encoding/binary"
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
	c := open(t, dir, make(chan string), opts...)
	for i := range n {
		if err := c.Store(akMsg("s", i)); err != nil { // a record each
			t.Fatalf("Store: %v", err)
		}
	}
	mustClose(t, c)
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
	src := make(chan string)
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := c.Store(akMsg("p", i)); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
	akMustClose(t, c)
	c, err = New(dir, make(chan string), String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("session 2: delivery %d did not come", i)
		}
		if i%2 == 1 {
			if err := c.Ack(d.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	akMustClose(t, c)
	segs := waSegs(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments: the test needs 3 or more", len(segs))
	}
	lost := ltCut(t, filepath.Join(dir, segs[1]), 1)
	c, err = New(dir, make(chan string), String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond)
		if !ok {
			break
		}
		got++
		if err := c.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
	}
	st := waitStats(t, c, 5*time.Second, "every delivery acknowledged", func(s Stats) bool { return s.Unacked == 0 })
	t.Logf("%d records cut; delivered %d; then %+v", lost, got, st)
	if st.OnDisk != 0 || st.Dropped != int64(n/2-got) || st.Dropped == 0 {
		t.Errorf("after the drain: OnDisk %d Dropped %d, want 0 and the %d not done that were cut", st.OnDisk, st.Dropped, n/2-got)
	}
	checkBalance(t, st, n/2) // the backlog: the messages not acknowledged
	akMustClose(t, c)
	c, err = New(dir, make(chan string), String, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
	for i := range n {
		if err := c.Store(akMsg("w", i)); err != nil { // a record each, the consumer away
			t.Fatalf("Store: %v", err)
		}
	}
	segs := waSegs(t, dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments: the test needs 4 or more", len(segs))
	}
	wal := filepath.Join(dir, segs[2], "00000000000000000001")
	data, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	size, k := binary.Uvarint(data)
	data[k+int(size)-1] ^= 0xff // the first record's last byte: its CRC fails
	if err := os.WriteFile(wal, data, 0o640); err != nil {
		t.Fatal(err)
	}
	got := recvN(c.Out(), n, time.Second)
	st := waitStats(t, c, 5*time.Second, "OnDisk 0", func(s Stats) bool { return s.OnDisk == 0 })
	if len(got) != n-1 || st.Dropped != 1 || st.Corrupt == 0 {
		t.Errorf("delivered %d of %d, Dropped %d, Corrupt %d; want %d, 1 and the damage counted", len(got), n, st.Dropped, st.Corrupt, n-1)
	}
	checkBalance(t, st)
}
