package pelichan

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Tests of WithWriteAhead: every message is stored before it is delivered, every Delivery
// carries a non-zero ID that stays the same across restarts, and IDs never repeat in a
// directory's life.

// waRun sends n messages (prefix) through c while a consumer keeps up (the producer stays
// at most inflight messages ahead of it), acknowledging every delivery when c has acks.
// It returns the deliveries (Seq and ID are zero without acks).
func waRun(t *testing.T, c *Chan[string], src chan<- string, prefix string, n, inflight int) []Delivery[string] {
	t.Helper()
	var got []Delivery[string]
	received := make(chan struct{}, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < n {
			var d Delivery[string]
			if c.acks != nil {
				var ok bool
				d, ok, _ = akRecv(c.Deliveries(), 10*time.Second)
				if !ok {
					t.Errorf("no delivery for 10s after %d", len(got))
					return
				}
				if err := c.Ack(d.Seq); err != nil {
					t.Errorf("Ack(%d): %v", d.Seq, err)
				}
			} else {
				select {
				case v, ok := <-c.Out():
					if !ok {
						t.Errorf("Out closed after %d", len(got))
						return
					}
					d.Msg = v
				case <-time.After(10 * time.Second):
					t.Errorf("nothing on Out for 10s after %d", len(got))
					return
				}
			}
			got = append(got, d)
			received <- struct{}{}
		}
	}()
	for i := range n {
		if i >= inflight {
			select {
			case <-received:
			case <-done:
				t.Fatalf("the consumer gave up after %d", len(got))
			}
		}
		select {
		case src <- akMsg(prefix, i):
		case <-done:
			t.Fatalf("the consumer gave up after %d", len(got))
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not taken from src in 10s", i)
		}
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the consumer did not get all %d messages", n)
	}
	return got
}

// waCheckIDs checks that every delivery has a non-zero ID, distinct per message, and
// records them in seen (ID -> message); an ID seen before for another message fails.
func waCheckIDs(t *testing.T, what string, got []Delivery[string], seen map[MsgID]string) {
	t.Helper()
	zero, reused := 0, 0
	for _, d := range got {
		if d.ID.IsZero() {
			zero++
			continue
		}
		if d.ID.String() == "" {
			t.Errorf("%s: ID %#v has an empty String()", what, d.ID)
		}
		if m, ok := seen[d.ID]; ok && m != d.Msg {
			if reused < 3 {
				t.Errorf("%s: ID %v (%s) given to %q and to %q", what, d.ID, d.ID, m, d.Msg)
			}
			reused++
		}
		seen[d.ID] = d.Msg
	}
	if zero > 0 || reused > 0 {
		t.Errorf("%s: of %d deliveries %d have the zero ID and %d an ID used before for another message", what, len(got), zero, reused)
	}
}

// A consumer that keeps up: every message arrives once, is stored once (Spilled) and is
// never read back from disk; the counters balance at every snapshot.
func TestWriteAheadConsumerKeepsUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		acks bool
		sync SyncPolicy
	}{
		{"acks", true, SyncEvery(time.Second)},
		{"out", false, SyncEvery(time.Second)},
		{"acks-syncalways", true, SyncAlways},
		{"out-syncalways", false, SyncAlways},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 2000
			dir := t.TempDir()
			src := make(chan string)
			opts := []Option{WithWriteAhead(), WithSync(tc.sync), WithBuffer(64)}
			if tc.acks {
				opts = append(opts, WithAcks(256))
			}
			c := open(t, dir, src, opts...)
			stop := make(chan struct{})
			var pollers sync.WaitGroup
			pollers.Add(1)
			go func() {
				defer pollers.Done()
				for {
					select {
					case <-stop:
						return
					case <-time.After(500 * time.Microsecond):
					}
					akIdentity(t, "write-ahead, while running", c.Stats(), 0)
				}
			}()
			start := time.Now()
			got := waRun(t, c, src, "wa", n, 100)
			elapsed := time.Since(start)
			close(stop)
			pollers.Wait()
			var sent, recv []string
			for i := range n {
				sent = append(sent, akMsg("wa", i))
			}
			for _, d := range got {
				recv = append(recv, d.Msg)
			}
			checkSame(t, "write-ahead", sent, recv)
			if tc.acks {
				waCheckIDs(t, "write-ahead", got, map[MsgID]string{})
				for i, d := range got {
					if d.Seq != uint64(i+1) {
						t.Fatalf("delivery %d has Seq %d", i, d.Seq)
					}
				}
			}
			s := waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.OnDisk == 0 && s.InMemory == 0 })
			akIdentity(t, "write-ahead, drained", s, 0)
			if s.Spilled < n || s.Direct != 0 || s.Refilled != n || s.OnDisk != 0 || s.Unacked != 0 {
				t.Errorf("write-ahead: want Spilled >= %d (every message stored), Direct 0, Refilled %d, OnDisk 0, Unacked 0; %+v", n, n, s)
			}
			if s.BytesRead != 0 {
				t.Errorf("write-ahead with a consumer keeping up read %d bytes back from disk (want 0: delivered from memory); %+v", s.BytesRead, s)
			}
			t.Logf("%d messages in %v (%.0f/s); %+v", n, elapsed, float64(n)/elapsed.Seconds(), s)
			akMustClose(t, c)
			// Everything was done: nothing comes again.
			src2 := make(chan string)
			close(src2)
			c2 := open(t, dir, src2, opts...)
			if s := c2.Stats(); s.OnDisk != 0 {
				t.Errorf("reopened after everything was done: OnDisk %d; %+v", s.OnDisk, s)
			}
			var again []string
			if tc.acks {
				for _, d := range akDrainAcked(t, c2, 5*time.Second) {
					again = append(again, d.Msg)
				}
			} else {
				again, _ = drain(c2.Out(), 5*time.Second)
			}
			if len(again) != 0 {
				t.Errorf("reopened after everything was done: %d delivered again (e.g. %q)", len(again), again[0])
			}
			akMustClose(t, c2)
		})
	}
}

// Deliveries not acknowledged before Close come again after New with the same ID;
// acknowledged ones never; new messages get IDs not used before.
func TestWriteAheadRedeliverySameID(t *testing.T) {
	for _, stalled := range []bool{false, true} {
		t.Run(fmt.Sprintf("stalled=%v", stalled), func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{WithWriteAhead(), WithAcks(5000), WithSegmentSize(8 << 10), WithBatchBytes(1 << 10)}
			seen := map[MsgID]string{}
			idOf := map[string]MsgID{}
			acked := map[string]bool{}
			owed := map[string]bool{}
			next := 0
			for session := range 3 {
				src := make(chan string)
				c := open(t, dir, src, opts...)
				var got []Delivery[string]
				if stalled {
					// Everything is stored (and mostly read back) before the consumer comes.
					for range 300 {
						v := akMsg("wr", next)
						next++
						owed[v] = true
						akSend(t, src, v, 5*time.Second)
					}
				} else {
					for range 300 {
						v := akMsg("wr", next)
						next++
						owed[v] = true
						akSend(t, src, v, 5*time.Second)
						d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
						if !ok {
							t.Fatalf("session %d: no delivery", session)
						}
						got = append(got, d)
					}
				}
				for {
					d, ok, _ := akRecv(c.Deliveries(), 100*time.Millisecond)
					if !ok {
						break
					}
					got = append(got, d)
				}
				if len(got) != len(owed) {
					t.Errorf("session %d: %d delivered, %d owed", session, len(got), len(owed))
				}
				for i, d := range got {
					if acked[d.Msg] {
						t.Errorf("session %d: %q delivered again after it was acknowledged", session, d.Msg)
					}
					if id, ok := idOf[d.Msg]; ok && id != d.ID {
						t.Errorf("session %d: %q delivered with ID %v, earlier with %v", session, d.Msg, d.ID, id)
					}
					idOf[d.Msg] = d.ID
					if i%3 != 0 { // acknowledge two in three, in random order below
						continue
					}
					if err := c.Ack(d.Seq); err != nil {
						t.Errorf("Ack(%d): %v", d.Seq, err)
					}
					acked[d.Msg] = true
					delete(owed, d.Msg)
				}
				waCheckIDs(t, fmt.Sprintf("session %d", session), got, seen)
				akMustClose(t, c)
			}
			// The end: the rest, acknowledged.
			src := make(chan string)
			close(src)
			c := open(t, dir, src, opts...)
			got := akDrainAcked(t, c, 5*time.Second)
			akMustClose(t, c)
			for _, d := range got {
				if acked[d.Msg] {
					t.Errorf("final: %q delivered again after it was acknowledged", d.Msg)
				}
				if id, ok := idOf[d.Msg]; ok && id != d.ID {
					t.Errorf("final: %q delivered with ID %v, earlier with %v", d.Msg, d.ID, id)
				}
				delete(owed, d.Msg)
			}
			waCheckIDs(t, "final", got, seen)
			if len(owed) != 0 {
				t.Errorf("%d messages never delivered after they were last delivered unacknowledged", len(owed))
			}
		})
	}
}

// IDs never repeat across Close/New cycles on one directory, also when the spool was
// drained completely (every segment deleted) before each Close.
func TestWriteAheadIDsNeverRepeat(t *testing.T) {
	dir := t.TempDir()
	seen := map[MsgID]string{}
	for cycle := range 6 {
		src := make(chan string)
		c := open(t, dir, src, WithWriteAhead(), WithAcks(100), WithSegmentSize(4<<10), WithBatchBytes(512),
			WithLinger(time.Millisecond))
		got := waRun(t, c, src, fmt.Sprintf("c%d-", cycle), 300, 50)
		waCheckIDs(t, fmt.Sprintf("cycle %d", cycle), got, seen)
		s := waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.OnDisk == 0 && s.InMemory == 0 })
		if s.OnDisk != 0 || s.Unacked != 0 {
			t.Errorf("cycle %d: everything acknowledged, but %+v", cycle, s)
		}
		if cycle%2 == 0 {
			akMustClose(t, c)
		} else {
			close(src) // the other way to end: src closed, everything done
			if _, _, closed := akRecv(c.Deliveries(), 5*time.Second); !closed {
				t.Errorf("cycle %d: Deliveries not closed after src closed with everything done", cycle)
			}
			akMustClose(t, c)
		}
		if segs := waSegs(t, dir); len(segs) != 0 {
			t.Errorf("cycle %d: segment directories left after a full drain: %v", cycle, segs)
		}
	}
	if len(seen) != 6*300 {
		t.Errorf("%d distinct IDs for %d messages", len(seen), 6*300)
	}
}

// A stalled consumer in write-ahead mode: everything is stored before it is delivered, so
// once src was read nothing is only in memory, and a crash image taken then holds every
// message; when the consumer comes back, every message arrives with its ID.
func TestWriteAheadStalledCrashImage(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithWriteAhead(), WithAcks(500), WithBatchBytes(4<<10), WithSegmentSize(32<<10))
	var sent []string
	for i := range n {
		v := akMsg("ws", i)
		sent = append(sent, v)
		akSend(t, src, v, 5*time.Second)
	}
	s := waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.InMemory == 0 })
	if s.InMemory != 0 || s.Spilled < n {
		t.Errorf("write-ahead, all sent: InMemory %d (want 0), Spilled %d (want >= %d); %+v", s.InMemory, s.Spilled, n, s)
	}
	akIdentity(t, "write-ahead stalled", s, 0)
	img := filepath.Join(t.TempDir(), "crash")
	akCopyDir(t, dir, img)
	close(src)
	got := akDrainAcked(t, c, 5*time.Second)
	var msgs []string
	for _, d := range got {
		msgs = append(msgs, d.Msg)
	}
	checkSame(t, "write-ahead stalled", sent, msgs)
	waCheckIDs(t, "write-ahead stalled", got, map[MsgID]string{})
	akMustClose(t, c)

	src2 := make(chan string)
	close(src2)
	c2 := open(t, img, src2, WithAcks(500))
	imgGot := akDrainAcked(t, c2, 5*time.Second)
	akMustClose(t, c2)
	idOf := map[string]MsgID{}
	for _, d := range got {
		idOf[d.Msg] = d.ID
	}
	var imgMsgs []string
	for _, d := range imgGot {
		imgMsgs = append(imgMsgs, d.Msg)
		if d.ID != idOf[d.Msg] {
			t.Errorf("crash image: %q has ID %v, %v when delivered by the running Chan", d.Msg, d.ID, idOf[d.Msg])
			break
		}
	}
	checkSame(t, "write-ahead crash image", sent, imgMsgs)
}

// With a stalled consumer, a write-ahead Chan keeps taking messages from src as fast as
// it can store them: group commit must not wait for an unrelated event (a Stats call, an
// acknowledgement, a timer) to notice that the previous write was taken. Small batches
// and a short linger make the pending batch fill while the previous one waits for a
// compressor, after the linger timer has fired.
func TestWriteAheadStalledConsumerKeepsReading(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"out", nil},
		{"acks", []Option{WithAcks(100000)}},
		{"out-syncalways", []Option{WithSync(SyncAlways)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 3000
			dir := t.TempDir()
			src := make(chan string)
			c := open(t, dir, src, append([]Option{WithWriteAhead(), WithBuffer(0), WithBatchBytes(256),
				WithLinger(time.Millisecond)}, tc.opts...)...)
			start := time.Now()
			var longest time.Duration
			for i := range n {
				t0 := time.Now()
				select {
				case src <- akMsg("k", i):
				case <-time.After(2 * time.Second):
					// No Stats call before this point: it would wake the loop up.
					t.Fatalf("write-ahead, stalled consumer: src not read for 2s after %d messages (%v); stats %+v",
						i, time.Since(start), c.Stats())
				}
				longest = max(longest, time.Since(t0))
			}
			t.Logf("%d messages taken in %v; longest wait for src %v", n, time.Since(start), longest)
			s := waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.InMemory == 0 })
			if s.InMemory != 0 || s.Spilled != n {
				t.Errorf("write-ahead, stalled: InMemory %d (want 0), Spilled %d (want %d); %+v", s.InMemory, s.Spilled, n, s)
			}
			akIdentity(t, "write-ahead, stalled", s, 0)
			akMustClose(t, c)
		})
	}
}

// waSegs lists the segment directories in dir.
func waSegs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if e.IsDir() && isSegDir(e.Name()) {
			segs = append(segs, e.Name())
		}
	}
	return segs
}

// Redelivered after a restart counts what an earlier Chan handed out and did not see
// acknowledged, also in write-ahead mode, where every record is written before its
// messages go out: the stored backlog no earlier Chan handed out is not redelivered
// (found by a contract audit: every message written ahead counted as handed out).
func TestWriteAheadRedeliveredCountsOnlyHandedOut(t *testing.T) {
	for _, wa := range []bool{false, true} {
		t.Run(fmt.Sprintf("writeAhead=%v", wa), func(t *testing.T) {
			const n, k = 3000, 5
			dir := t.TempDir()
			opts := []Option{WithAcks(1000), WithBuffer(10)}
			if wa {
				opts = append(opts, WithWriteAhead())
			}
			src := make(chan string)
			c := open(t, dir, src, opts...)
			for i := range n {
				akSend(t, src, akMsg("r", i), 5*time.Second)
			}
			for i := range k { // received, never acknowledged
				if _, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok {
					t.Fatalf("delivery %d did not come", i+1)
				}
			}
			// Out: the k received and Deliveries' buffer, full (the consumer stalls).
			s1 := waitStats(t, c, 5*time.Second, "Unacked = the received and the buffered", func(s Stats) bool { return s.Unacked == k+10 })
			akMustClose(t, c)
			checkRedelivered(t, dir, opts, n, s1.Unacked, 5*time.Second)
		})
	}
}

// checkRedelivered opens a Chan with opts on dir (src closed), receives and acknowledges
// everything, and checks that n messages came (none lost, none twice: the first Chan
// acknowledged none) and that Redelivered is want.
func checkRedelivered(t *testing.T, dir string, opts []Option, n int, want int64, idle time.Duration) {
	t.Helper()
	src := make(chan string)
	close(src)
	c := open(t, dir, src, opts...)
	got := akDrainAcked(t, c, idle)
	s, ok := statsWithin(c, 5*time.Second)
	if !ok {
		t.Fatal("Stats did not return within 5 s")
	}
	akMustClose(t, c)
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.Msg] {
			t.Errorf("after the restart: %q delivered twice", d.Msg)
		}
		seen[d.Msg] = true
	}
	if len(got) != n || s.Redelivered != want {
		t.Errorf("after the restart: %d deliveries (want %d), Redelivered %d (want %d)", len(got), n, s.Redelivered, want)
	}
}
