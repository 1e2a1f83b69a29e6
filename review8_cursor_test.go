package pelichan

// Review of ddcbe1f (spool.Open writes a cursor file when there is none).

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// review8Zero leaves dir a spool whose cursor file names segment 0: what any Close of an
// empty spool wrote before ddcbe1f (every spool that was ever shut down idle), and what
// the code of ddcbe1f still wrote at Close after a damaged cursor file on an empty spool.
func review8Zero(t *testing.T, dir string) {
	t.Helper()
	s, err := spool.Open(dir, spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A version 4 cursor file naming segment 0, as Close of an empty spool wrote before
	// Open started writing one where the first segment will begin.
	b, _ := hex.DecodeString("70637572040000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000d974440")
	if err := os.WriteFile(filepath.Join(dir, "cursor"), b, 0o640); err != nil {
		t.Fatal(err)
	}
}

// An ordered Close killed between writing the front segment and its checkpoint (stood in
// for by a cursor file that cannot be replaced, so that both Front's checkpoint and
// Close's fail and the disk holds what such a kill leaves), the consumer stopped, Out
// holding messages from memory whose copies were written (time bound) behind a backlog.
// ddcbe1f's case: on a fresh directory the Open-time cursor file keeps the front segment
// behind it. The same spool whose cursor file names segment 0 (not missing, so Open
// writes nothing) reads the front segment first, and then Out's copies again.
func TestReview8OrderedCloseKillCursorSeg0(t *testing.T) {
	for _, pre := range []string{"fresh", "cursor-seg-0"} {
		t.Run(pre, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			if pre != "fresh" {
				review8Zero(t, dir)
			}
			opts := []Option{WithOrdered(), WithBuffer(50), WithLinger(50 * time.Millisecond), WithBatchBytes(256),
				WithSegmentSize(4 << 10), WithSync(SyncNever), WithErrorHandler(func(error) {})}
			src := make(chan string)
			c := open(t, dir, src, opts...)
			var sent []string
			for i := 0; i < 250; i++ { // 50 wait in Out (from memory), 200 spilled behind them
				m := msg("z-", i)
				sent = append(sent, m)
				akSend(t, src, m, 5*time.Second)
			}
			// After the linger time, Out's 50 are written too, behind the backlog.
			waitStats(t, c, 5*time.Second, "everything stored", func(s Stats) bool { return s.OnDisk == 250 })
			unblock := review6BlockCheckpoint(t, dir)
			cerr := akClose(t, c)
			st := c.Stats()
			unblock()
			fronts := 0
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if len(e.Name()) == 20 && e.Name() < "00000000004294967296" {
					fronts++
				}
			}
			got, st2 := clReopen(t, dir, false, opts...)
			t.Logf("%s: Close: %v\nfirst Chan %+v\nfront segments %d; second Chan delivered %d: %+v", pre, cerr, st, fronts, len(got), st2)
			if fronts == 0 {
				t.Skip("Close made no front segment")
			}
			seen := clNoDup(t, pre+": the Chan after the kill", got)
			lost := int64(0)
			for _, m := range sent {
				if !seen[m] {
					lost++
				}
			}
			if lost != st.Dropped {
				t.Errorf("%s: %d lost, first Chan counts %d Dropped", pre, lost, st.Dropped)
			}
		})
	}
}
