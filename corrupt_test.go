package pelichan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// TestCorruptRecordReportedAndRestDelivered: a byte flipped inside an old segment costs
// that record only; the handler gets a *CorruptionError naming segment and offset, Stats
// counts it (Corrupt, and its messages Dropped), every other message is delivered, and the
// segment is kept as evidence.
func TestCorruptRecordReportedAndRestDelivered(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithBuffer(0), WithSegmentSize(8<<10), WithBatchBytes(1<<10), WithLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := 0; i < n; i++ {
		src <- fmt.Sprintf("message %05d %x", i, i*7919)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "[0-9]*[0-9]", "00000000000000000001"))
	sort.Strings(segs)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	victim := segs[1]
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(victim, b, 0o640); err != nil {
		t.Fatal(err)
	}

	log := &errLog{}
	src2 := make(chan string)
	close(src2)
	c, err = New(dir, src2, String, WithErrorHandler(log.handle))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range c.Out() {
		got++
	}
	st := c.Stats()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	for _, e := range log.errs {
		if errors.As(e, &ce) {
			break
		}
	}
	if ce == nil || !errors.Is(ce, ErrCorrupt) {
		t.Fatalf("no *CorruptionError reported; errors: %v", log.errs)
	}
	if want := filepath.Base(filepath.Dir(victim)); ce.Segment != want || ce.Offset <= 0 {
		t.Errorf("report names segment %s offset %d, want segment %s and an offset", ce.Segment, ce.Offset, want)
	}
	if st.Corrupt == 0 {
		t.Errorf("Stats.Corrupt = 0")
	}
	// The damaged record's messages were counted at open (from the segment's meta file):
	// they are Dropped, not left in OnDisk for good.
	if st.OnDisk != 0 || st.Dropped != int64(n-got) || st.Refilled != int64(got) {
		t.Errorf("after the drain: OnDisk %d Dropped %d Refilled %d, want 0, %d, %d", st.OnDisk, st.Dropped, st.Refilled, n-got, got)
	}
	checkBalance(t, st, n)
	if got >= n || got < n-400 {
		t.Errorf("delivered %d of %d: one damaged record should cost a few hundred messages at most", got, n)
	}
	if _, err := os.Stat(filepath.Dir(victim) + ".bad"); err != nil {
		t.Errorf("damaged segment not kept as evidence: %v", err)
	}
}
