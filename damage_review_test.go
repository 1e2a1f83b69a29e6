package pelichan

// Stats after damage, in the cases review found (see damage_stats_test.go).

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// dmRewriteDone rewrites the done sets of a version 4 cursor file with f.
func dmRewriteDone(t *testing.T, dir string, f func(cur spool.Cursor, recs []*recState)) {
	t.Helper()
	p := filepath.Join(dir, "cursor")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if b[4] != 4 {
		t.Fatalf("cursor version %d", b[4])
	}
	cur := spool.Cursor{Seg: binary.LittleEndian.Uint64(b[8:]), Index: binary.LittleEndian.Uint64(b[16:]), Offset: binary.LittleEndian.Uint32(b[24:])}
	n := binary.LittleEndian.Uint32(b[52:])
	recs, err := decodeDone(b[56 : 56+n])
	if err != nil {
		t.Fatal(err)
	}
	f(cur, recs)
	extra := encodeDone(recs, cur)
	out := append([]byte(nil), b[:52]...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(extra)))
	out = append(out, extra...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, crc32.MakeTable(crc32.Castagnoli)))
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A cursor file whose done sets name records that are not in a segment counted from its
// meta file (a hostile or stale file; the keys moved one byte, where no record starts),
// while every message that segment counted is found: preDone took them off OnDisk at open
// and the messages are delivered again, so when the reader is done with the segment they
// are given back (its Missing count is 0): OnDisk ends at 0, not below. (Found by review.)
func TestDoneSetsOfRecordsNotInSegment(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(100), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 60
	dmStore(t, dir, opts, "p", n)
	dmAckSome(t, dir, opts, n, func(i int) bool { return i%2 == 1 })
	moved := 0
	dmRewriteDone(t, dir, func(cur spool.Cursor, recs []*recState) {
		for _, r := range recs {
			if r.key.seg > cur.Seg && r.done > 0 {
				r.key.index++ // no record starts here
				moved += r.done
			}
		}
	})
	if moved == 0 {
		t.Fatal("no done set moved")
	}
	c := open(t, dir, make(chan string), opts...)
	msgs, st := dmDrainAcking(t, c, nil) // the moved done sets mark nothing: delivered again
	got := len(msgs)
	t.Logf("moved %d done messages; delivered %d; %+v", moved, got, st)
	if st.OnDisk != 0 {
		t.Errorf("after the drain OnDisk %d, want 0", st.OnDisk)
	}
	checkBalance(t, st, int64(got)) // backlog: what was delivered
	akMustClose(t, c)
}

// A version 4 cursor file whose count of messages before the cursor (delivered) is too
// large (hostile; CRC correct): Open trusts it for a segment counted from its meta file and
// OnDisk starts too low; when the reader is done with the segment, the messages found
// beyond the count are given back (a negative Missing count), so OnDisk never ends below
// zero. (Found by review.)
func TestCursorCountTooLarge(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithAcks(100), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 60
	dmStore(t, dir, opts, "p", n)
	acked, _ := dmAckSome(t, dir, opts, 25, func(int) bool { return true })
	p := filepath.Join(dir, "cursor")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cursor seg %d index %d offset %d delivered %d", binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]),
		binary.LittleEndian.Uint32(b[24:]), binary.LittleEndian.Uint64(b[44:]))
	binary.LittleEndian.PutUint64(b[44:], 1000)
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32.MakeTable(crc32.Castagnoli)))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := open(t, dir, make(chan string), opts...)
	msgs, st := dmDrainAcking(t, c, acked)
	t.Logf("delivered %d; %+v", len(msgs), st)
	if len(msgs) != n-25 {
		t.Errorf("delivered %d, want the %d not acknowledged", len(msgs), n-25)
	}
	if st.OnDisk != 0 {
		t.Errorf("after the drain OnDisk %d, want 0", st.OnDisk)
	}
	akMustClose(t, c)
}

// Right after open, OnDisk can be 0 with messages owed (the cursor file marks more done
// than the segments counted at open hold; the rest are counted in the background). Damage
// the reader finds in the first segment before the background counts come in is moved to
// Dropped in full, the part OnDisk cannot give yet owed to the late counts: OnDisk is 0
// after the drain and Dropped holds the damaged messages. (Found by review: the move was
// clamped at OnDisk and the rest lost.)
func TestDamageWhileCountsOwed(t *testing.T) {
	fails := 0
	for run := range 8 {
		if dmClampRun(t, run) {
			fails++
		}
	}
	if fails > 0 {
		t.Errorf("%d of 8 runs ended with OnDisk != 0 (or Dropped short)", fails)
	}
}

func dmClampRun(t *testing.T, run int) bool {
	dir := t.TempDir()
	opts := []Option{WithAcks(4000), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 1200
	rng := rand.New(rand.NewSource(int64(run)))
	dmStore(t, dir, opts, fmt.Sprintf("%d-%x-", run, rng.Uint64()), n)
	acked, _ := dmAckSome(t, dir, opts, n, func(i int) bool { return i%2 == 1 })
	segs := waSegs(t, dir)
	// The third record of the cursor's (first) segment: message 2, not done.
	dmFlipRecord(t, filepath.Join(dir, segs[0]), 2)
	c := open(t, dir, make(chan string), opts...)
	msgs, _ := dmDrainAcking(t, c, acked)
	got := len(msgs)
	st := waitStatsOr(c, 3*time.Second, func(s Stats) bool { return s.Unacked == 0 && s.OnDisk == 0 })
	akMustClose(t, c)
	t.Logf("run %d: %d segments; delivered %d of %d not done; OnDisk %d Dropped %d Corrupt %d", run, len(segs), got, n/2, st.OnDisk, st.Dropped, st.Corrupt)
	return st.OnDisk != 0 || st.Dropped != int64(n/2-got)
}

// A sealed segment whose WAL file is emptied (meta kept) is noted Missing when the reader
// finishes it (its messages move OnDisk -> Dropped), and stays in the spool while an
// earlier segment has records read and not acknowledged; WithMaxAge (or DropOldest) may then
// drop it, and must not count its messages as dropped a second time. (Found by review.)
func TestDropPolicyAfterDamageNoted(t *testing.T) {
	dir := t.TempDir()
	base := []Option{WithAcks(1000), WithSegmentSize(1 << 10), WithBatchBytes(256)}
	const n = 60
	dmStore(t, dir, base, "s", n)
	segs := waSegs(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments", len(segs))
	}
	cut := ltCut(t, filepath.Join(dir, segs[1]), 0)
	time.Sleep(300 * time.Millisecond)
	opts := append(append([]Option{}, base...), WithMaxAge(200*time.Millisecond))
	c := open(t, dir, make(chan string), opts...)
	var seqs []uint64
	for {
		d, ok, _ := akRecv(c.Deliveries(), 300*time.Millisecond)
		if !ok {
			break
		}
		seqs = append(seqs, d.Seq) // not acknowledged: segment 0 keeps unacked records
	}
	time.Sleep(1500 * time.Millisecond) // expire runs every 10 checkpoint ticks
	st := c.Stats()
	t.Logf("records cut %d, delivered %d, stats before acks: OnDisk %d Dropped %d Unacked %d", cut, len(seqs), st.OnDisk, st.Dropped, st.Unacked)
	checkBalance(t, st, n)
	for _, s := range seqs {
		if err := c.Ack(s); err != nil {
			t.Fatal(err)
		}
	}
	st = waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.Unacked == 0 })
	t.Logf("after acks: %+v", st)
	if st.OnDisk != 0 || st.Dropped != int64(n-len(seqs)) {
		t.Errorf("after the drain: OnDisk %d Dropped %d, want 0 and %d", st.OnDisk, st.Dropped, n-len(seqs))
	}
	checkBalance(t, st, n)
	akMustClose(t, c)
}
