package pelichan

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// review7Base is the options of the ordered chains below: nothing is written while it
// waits in Out or Deliveries (a long linger), so what an ordered Close takes back from
// memory goes into a front segment.
func review7Base() []Option {
	return []Option{WithOrdered(), WithBuffer(100), WithLinger(time.Minute), WithBatchBytes(256),
		WithSync(SyncNever), WithErrorHandler(func(error) {})}
}

// review7F1 runs session 1 of a chain: n messages wait in Out at Close, which puts them
// into a front segment F1. It returns them.
func review7F1(t *testing.T, dir string, n int, opts ...Option) []string {
	t.Helper()
	src := make(chan string)
	c := open(t, dir, src, opts...)
	var sent []string
	for i := 0; i < n; i++ {
		m := msg("f1-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	time.Sleep(20 * time.Millisecond)
	if err := akClose(t, c); err != nil {
		t.Fatal(err)
	}
	return sent
}

// review7LowestSeg returns the lowest segment number in dir.
func review7LowestSeg(t *testing.T, dir string) uint64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var low uint64
	for _, e := range ents {
		if !e.IsDir() || !isSegDir(e.Name()) {
			continue
		}
		var seq uint64
		fmt.Sscanf(e.Name(), "%d", &seq)
		if low == 0 || seq < low {
			low = seq
		}
	}
	return low
}

// review7Session2 opens the chain's second session with acks, receives F1's messages,
// acknowledges all but the first, and has one message from src delivered from memory and
// not acknowledged. It returns the Chan, the deliveries of F1 and the acknowledged set.
func review7Session2(t *testing.T, dir string, n int, codec Codec[string], memMsg string, opts []Option) (*Chan[string], []Delivery[string], map[string]bool) {
	t.Helper()
	src := make(chan string)
	c, err := New(dir, src, codec, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var got []Delivery[string]
	for len(got) < n {
		d, ok, closed := akRecv(c.Deliveries(), 5*time.Second)
		if !ok || closed {
			t.Fatalf("session 2: %d deliveries of F1, want %d", len(got), n)
		}
		got = append(got, d)
	}
	acked := map[string]bool{}
	for _, d := range got[1:] {
		if err := c.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
		acked[d.Msg] = true
	}
	akSend(t, src, memMsg, 5*time.Second)
	if d, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok || d.Msg != memMsg {
		t.Fatalf("session 2: want %q delivered from memory, got %q (%v)", memMsg, d.Msg, ok)
	}
	time.Sleep(150 * time.Millisecond) // the acknowledgements reach a checkpoint
	return c, got, acked
}

// The acks chain of TestReview6AcksOrderedFrontChainRedeliversAcked, with session 2's
// Front failing (the number below F1 taken: a full disk does the same). finish has already
// forgotten F1's done sets (tr.dropSeg) and encoded the extra bytes without them before
// FrontExcept ran; when Front fails, F1 stays the cursor's segment, Close checkpoints the
// cursor in F1 with no done set for it, and session 3 delivers again the 9 messages the
// consumer acknowledged out of order. Close's error speaks only of the one message taken
// back from memory.
func TestReview7FrontFailsForgetsAckedOfF1(t *testing.T) {
	dir := t.TempDir()
	base := review7Base()
	review7F1(t, dir, 10, base...)
	f1 := review7LowestSeg(t, dir)
	if f1 >= spool.FirstSeq {
		t.Fatalf("session 1 left no front segment (lowest %d)", f1)
	}
	opts := append(base[:len(base):len(base)], WithAcks(100))
	c2, got, acked := review7Session2(t, dir, 10, String, msg("mem-", 0), opts)
	block := filepath.Join(dir, fmt.Sprintf("%020d", f1-1))
	if err := os.WriteFile(block, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	cerr := akClose(t, c2)
	st2 := c2.Stats()
	os.Remove(block)
	rest, st3 := clReopen(t, dir, true, opts...)
	t.Logf("session 2 Close: %v\n%+v\nsession 3 delivered %d: %q\n%+v", cerr, st2, len(rest), rest, st3)
	if cerr == nil {
		t.Error("session 2 Close: nil; want the front segment's failure")
	}
	twice := 0
	for _, m := range rest {
		if acked[m] {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d messages acknowledged in session 2 delivered again after New (Close's error: %v)", twice, cerr)
	}
	found := false
	for _, m := range rest {
		found = found || m == got[0].Msg
	}
	if !found {
		t.Errorf("the unacknowledged %q was not delivered after New", got[0].Msg)
	}
}

// review7Refusing is String, refusing (ErrCodec) the messages that start with "bad".
type review7Refusing struct{}

func (review7Refusing) Encode(dst []byte, v string) ([]byte, error) {
	if strings.HasPrefix(v, "bad") {
		return dst, fmt.Errorf("%w: refused %q", ErrCodec, v)
	}
	return append(dst, v...), nil
}

func (review7Refusing) Decode(b []byte) (string, error) { return string(b), nil }

// The same chain, the front segment not written for another reason: the one message taken
// back from memory is one the codec refuses (a direct pass never encodes it; Close is
// the first to). storeFront's recs are empty, FrontExcept returns nil without replacing
// F1, but finish has dropped F1's done sets: Close checkpoints the cursor in F1 without
// them and the 9 acknowledged messages are delivered again. Close's error speaks only of
// the refused message.
func TestReview7RefusedFrontForgetsAckedOfF1(t *testing.T) {
	dir := t.TempDir()
	base := review7Base()
	review7F1(t, dir, 10, base...)
	opts := append(base[:len(base):len(base)], WithAcks(100))
	c2, got, acked := review7Session2(t, dir, 10, review7Refusing{}, "bad-0", opts)
	cerr := akClose(t, c2)
	st2 := c2.Stats()
	rest, st3 := clReopen(t, dir, true, opts...)
	t.Logf("session 2 Close: %v\n%+v\nsession 3 delivered %d: %q\n%+v", cerr, st2, len(rest), rest, st3)
	twice := 0
	for _, m := range rest {
		if acked[m] {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%d messages acknowledged in session 2 delivered again after New (Close's error: %v)", twice, cerr)
	}
	if len(rest) == 0 || rest[0] != got[0].Msg {
		t.Errorf("after New: %q, want %q first", rest, got[0].Msg)
	}
}

// An ordered Close whose front segment holds messages from memory, one of which the codec
// refuses (counted Dropped by storeFront), with a backlog spilled behind them; the cursor
// file cannot be written (Front's checkpoint and Close's fail). finish then moves
// len(msgs) - onDisk from OnDisk to Dropped: the refused message a second time. The first
// Chan says Dropped one more than it lost, and OnDisk one short of what the next Chan delivers.
//
// Since ordered mode writes Out's messages from memory before the first spilled batch
// (flush), those in Out are stored already and only the refused one is in memory at
// Close; the counts must balance all the same.
func TestReview7UnsavedCountsRefusedTwice(t *testing.T) {
	dir := t.TempDir()
	opts := review7Base()
	src := make(chan string)
	c, err := New(dir, src, review7Refusing{}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var sent []string
	for i := 0; i < 100; i++ { // direct, wait in Out (consumer stalled), never encoded
		m := msg("mem-", i)
		if i == 50 {
			m = "bad-" + m
		}
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	for i := 0; i < 200; i++ { // behind them: spilled
		m := msg("disk-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	time.Sleep(300 * time.Millisecond) // the backlog written, a checkpoint
	if s := c.Stats(); s.OnDisk < 100 || len(c.Out()) != 100 || s.InMemory < 1 {
		t.Fatalf("want 100 in Out (the refused one only in memory) and a backlog of at least 100 on disk: %+v, Out %d", s, len(c.Out()))
	}
	unblock := review6BlockCheckpoint(t, dir)
	cerr := akClose(t, c)
	st := c.Stats()
	unblock()
	got, st2 := clReopen(t, dir, false, opts...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkBalance(t, st)
	seen := map[string]bool{}
	for _, m := range got {
		seen[m] = true
	}
	lost := 0
	for _, m := range sent {
		if !seen[m] {
			lost++
		}
	}
	if int64(lost) != st.Dropped {
		t.Errorf("%d messages lost (one refused by the codec), the first Chan counts %d Dropped", lost, st.Dropped)
	}
	if int64(len(got)) != st.OnDisk {
		t.Errorf("the first Chan's OnDisk after Close is %d; the next Chan delivers %d", st.OnDisk, len(got))
	}
}

// An ordered Close takes back from Out messages that came from memory while the cursor
// file is stale (it cannot be written since the consumer took the last stored messages;
// their segment was sealed idle and deleted). Front's checkpoint and Close's fail, so
// finish counts them Dropped and Close's error says they could not be stored. But the
// front segment is then the only segment and the stale cursor file names a position
// before its resume cursor: the next Open reads it (loneFront) and delivers them.
//
// Left: with both checkpoints failing the Chan counts those messages Dropped, which may
// be too many (never too few). Set PELICHAN_KNOWN_ISSUES=1 to run it.
func TestReview7UnsavedLoneFrontDeliveredAnyway(t *testing.T) {
	if os.Getenv("PELICHAN_KNOWN_ISSUES") == "" {
		t.Skip("known: both checkpoints of an ordered Close failing may count too many Dropped")
	}
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(100), WithLinger(time.Minute), WithBatchBytes(256),
		WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	var sent, got []string
	for i := 0; i < 300; i++ { // 100 wait in Out, 200 spilled
		m := msg("s-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	recv := func(n int) {
		for len(got) < n {
			select {
			case m := <-c.Out():
				got = append(got, m)
			case <-time.After(5 * time.Second):
				t.Fatalf("no message within 5s after %d", len(got))
			}
		}
	}
	recv(250)
	time.Sleep(300 * time.Millisecond) // the cursor file names a place among the last 50
	unblock := review6BlockCheckpoint(t, dir)
	defer unblock()
	recv(300)
	// Idle: the segment the reader finished is sealed and deleted (no checkpoint needed).
	waitStats(t, c, 5*time.Second, "the spool empty", func(s Stats) bool { return s.Segments == 0 })
	for i := 0; i < 10; i++ { // straight to Out, only in memory
		m := msg("m-", i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	cerr := akClose(t, c)
	st := c.Stats()
	unblock()
	rest, st2 := clReopen(t, dir, false, opts...)
	t.Logf("Close: %v\nfirst Chan %+v\nafter New %q\nsecond Chan %+v", cerr, st, rest, st2)
	checkBalance(t, st)
	got = append(got, rest...)
	seen := clNoDup(t, "both Chans", got)
	lost := int64(0)
	for _, m := range sent {
		if !seen[m] {
			lost++
		}
	}
	if lost != st.Dropped || lost != clLost(cerr) {
		t.Errorf("%d messages lost; the first Chan counts %d Dropped, its Close says %d could not be stored (%v)",
			lost, st.Dropped, clLost(cerr), cerr)
	}
}

// A chain of ordered Closes with acknowledgements in random order: each session receives
// everything it is given (the front segment's rest first), acknowledges a random subset
// of it, including messages of partly acknowledged records and the first ones (so the
// cursor's offset lies inside a record), has a few new messages delivered from memory
// and closes. No acknowledged message may come again, nothing unacknowledged may be
// lost, OnDisk after Close must be what the next Chan delivers, and the identity holds
// with the backlog counted at open.
func TestReview7AcksChainRandom(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			review7Chain(t, seed)
		})
	}
}

func review7Chain(t *testing.T, seed int64) {
	rnd := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	base := review7Base()
	opts := append(base[:len(base):len(base)], WithAcks(1000))
	pending := map[string]bool{} // sent, not acknowledged
	for _, m := range review7F1(t, dir, 30, base...) {
		pending[m] = true
	}
	prevOnDisk := int64(len(pending))
	next := 0
	for session := 2; session <= 7; session++ {
		src := make(chan string)
		c := open(t, dir, src, opts...)
		var dels []Delivery[string]
		for len(dels) < len(pending) {
			d, ok, _ := akRecv(c.Deliveries(), 3*time.Second)
			if !ok {
				break
			}
			dels = append(dels, d)
		}
		if int64(len(dels)) != prevOnDisk {
			t.Errorf("session %d: %d delivered at open, the previous Chan's OnDisk after Close was %d", session, len(dels), prevOnDisk)
		}
		open0 := c.Stats()
		for _, d := range dels {
			if !pending[d.Msg] {
				t.Errorf("session %d: %q delivered again, acknowledged earlier (or twice now)", session, d.Msg)
			}
		}
		// New messages from memory, behind the backlog (delivered once it is read).
		for i := 0; i < 1+rnd.Intn(8); i++ {
			m := msg(fmt.Sprintf("s%d-", session), next)
			next++
			pending[m] = true
			akSend(t, src, m, 5*time.Second)
			d, ok, _ := akRecv(c.Deliveries(), 3*time.Second)
			if !ok {
				t.Fatalf("session %d: %q not delivered", session, m)
			}
			dels = append(dels, d)
		}
		rnd.Shuffle(len(dels), func(i, j int) { dels[i], dels[j] = dels[j], dels[i] })
		for _, d := range dels[:rnd.Intn(len(dels)+1)] {
			if err := c.Ack(d.Seq); err != nil {
				t.Fatal(err)
			}
			delete(pending, d.Msg)
		}
		if rnd.Intn(2) == 0 {
			time.Sleep(150 * time.Millisecond) // a checkpoint with the done sets
		}
		if err := akClose(t, c); err != nil {
			t.Fatalf("session %d: Close: %v", session, err)
		}
		st := c.Stats()
		checkBalance(t, st, review7Backlog(open0))
		prevOnDisk = st.OnDisk
		if st.OnDisk != int64(len(pending)) {
			t.Errorf("session %d: OnDisk %d after Close, %d messages not acknowledged", session, st.OnDisk, len(pending))
		}
		t.Logf("session %d: %d delivered, %d pending; %+v", session, len(dels), len(pending), st)
	}
	rest, _ := clReopen(t, dir, true, base...)
	seen := clNoDup(t, "last session", rest)
	var missing, extra []string
	for m := range pending {
		if !seen[m] {
			missing = append(missing, m)
		}
	}
	for m := range seen {
		if !pending[m] {
			extra = append(extra, m)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("last session: %d not acknowledged and lost %q; %d acknowledged and delivered again %q", len(missing), missing, len(extra), extra)
	}
}

// review7Backlog is the backlog a Chan counted at open, from a snapshot taken before it
// received anything from src: every message is then one of the backlog's.
func review7Backlog(s Stats) int64 {
	return s.Direct + s.Refilled + s.OnDisk + s.Dropped + s.InMemory - s.Received
}

// The same chain without acknowledgements: each session takes a random number of the
// messages waiting in Out (the front segment's rest first), gets a few from memory into
// Out behind them (with a short linger in some sessions, so that they are written at the
// tail while they wait) and closes. Every message must come out exactly once over the
// chain, and OnDisk after Close must be what the next Chan delivers.
func TestReview7OrderedChainRandom(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewSource(seed))
			dir := t.TempDir()
			base := review7Base()
			sent := review7F1(t, dir, 40, base...)
			var got []string
			prevOnDisk := int64(len(sent))
			next := 0
			for session := 2; session <= 7; session++ {
				opts := base
				if rnd.Intn(2) == 0 {
					opts = append(base[:len(base):len(base)], WithLinger(5*time.Millisecond))
				}
				src := make(chan string)
				c := open(t, dir, src, opts...)
				time.Sleep(30 * time.Millisecond) // Out filled from the spool
				open0 := waitStatsOr(c, time.Second, func(s Stats) bool { return s.OnDisk+s.InMemory >= prevOnDisk })
				if b := review7Backlog(open0); b != prevOnDisk {
					t.Errorf("session %d: backlog %d counted at open, the previous Chan's OnDisk after Close was %d", session, b, prevOnDisk)
				}
				take := rnd.Intn(int(prevOnDisk) + 1)
				got = append(got, recvN(c.Out(), take, 2*time.Second)...)
				for i := 0; i < 1+rnd.Intn(8); i++ {
					m := msg(fmt.Sprintf("s%d-", session), next)
					next++
					sent = append(sent, m)
					akSend(t, src, m, 5*time.Second)
				}
				time.Sleep(time.Duration(rnd.Intn(150)) * time.Millisecond)
				if err := akClose(t, c); err != nil {
					t.Fatalf("session %d: Close: %v", session, err)
				}
				st := c.Stats()
				checkBalance(t, st, prevOnDisk)
				prevOnDisk = st.OnDisk
				t.Logf("session %d: took %d; %+v", session, take, st)
			}
			rest, st := clReopen(t, dir, false, base...)
			if int64(len(rest)) != prevOnDisk {
				t.Errorf("last Chan delivered %d, the previous Chan's OnDisk after Close was %d", len(rest), prevOnDisk)
			}
			t.Logf("last %+v", st)
			checkSame(t, "over the chain", sent, append(got, rest...))
		})
	}
}
