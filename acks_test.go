package pelichan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Tests of acknowledgements (WithAcks, Deliveries, Ack, AckThrough), Store and Sync, and
// the time bound on what stays only in memory. Helpers shared with writeahead_test.go and
// close_test.go are prefixed "ak".

// ---- helpers ---------------------------------------------------------------------------

// akSeed is the seed of a randomized test: PELICHAN_SEED if set, else the clock. It is
// logged, so a failing run can be replayed.
func akSeed(t *testing.T) int64 {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("PELICHAN_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("PELICHAN_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with PELICHAN_SEED=%d)", seed, seed)
	return seed
}

// akWithin runs f and fails the test if it has not returned after d (a hang). The
// goroutine of a hung f is left behind: the test has failed anyway.
func akWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v (hang)", what, d)
	}
}

// akClose closes c within 10 s and returns Close's error.
func akClose[T any](t *testing.T, c *Chan[T]) error {
	t.Helper()
	var err error
	akWithin(t, 10*time.Second, "Close", func() { err = c.Close() })
	return err
}

// akMustClose closes c within 10 s and fails the test on an error.
func akMustClose[T any](t *testing.T, c *Chan[T]) {
	t.Helper()
	if err := akClose(t, c); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// akSend sends v on src, failing the test if the Chan does not take it within d.
func akSend[T any](t *testing.T, src chan<- T, v T, d time.Duration) {
	t.Helper()
	select {
	case src <- v:
	case <-time.After(d):
		t.Fatalf("the Chan did not take a message from src within %v", d)
	}
}

// akRecv receives one delivery, waiting at most wait. closed is true if Deliveries is
// closed.
func akRecv[T any](ch <-chan Delivery[T], wait time.Duration) (d Delivery[T], ok, closed bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case d, open := <-ch:
		if !open {
			return d, false, true
		}
		return d, true, false
	case <-timer.C:
		return d, false, false
	}
}

// akDrainAcked receives from Deliveries until it closes (src must be closed), acknowledging
// everything (AckThrough every few deliveries), and fails the test if it does not close
// within d of the last delivery.
func akDrainAcked[T any](t *testing.T, c *Chan[T], idle time.Duration) []Delivery[T] {
	t.Helper()
	var got []Delivery[T]
	for {
		d, ok, closed := akRecv(c.Deliveries(), idle)
		if closed {
			return got
		}
		if !ok {
			t.Fatalf("Deliveries not closed %v after the last of %d deliveries (src closed, all acknowledged); stats %+v",
				idle, len(got), c.Stats())
		}
		got = append(got, d)
		if err := c.Ack(d.Seq); err != nil {
			t.Fatalf("Ack(%d): %v", d.Seq, err)
		}
	}
}

// akIdentity checks Stats' identity on a spool that held backlog messages at open.
func akIdentity(t *testing.T, when string, s Stats, backlog int64) {
	t.Helper()
	if s.Received+backlog != s.Direct+s.Refilled+s.OnDisk+s.Dropped+s.InMemory {
		t.Errorf("%s: Received %d + backlog %d != Direct %d + Refilled %d + OnDisk %d + Dropped %d + InMemory %d (diff %d); %+v",
			when, s.Received, backlog, s.Direct, s.Refilled, s.OnDisk, s.Dropped, s.InMemory,
			s.Received+backlog-(s.Direct+s.Refilled+s.OnDisk+s.Dropped+s.InMemory), s)
	}
	if s.InMemory < 0 || s.OnDisk < 0 || s.Unacked < 0 {
		t.Errorf("%s: negative count: %+v", when, s)
	}
}

// akCopyDir copies the directory tree from to to while a Chan may be writing it: a crash
// image taken file by file. Files and directories that vanish meanwhile are skipped; a
// file being appended is copied as far as it is written (a torn tail).
func akCopyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", from, err)
	}
}

// akMsg is message i of a test: unique, log-line-like.
func akMsg(prefix string, i int) string {
	return fmt.Sprintf("%s%07d level=info svc=acks msg=\"ack test line\" n=%d", prefix, i, i%911)
}

// ---- the model-based property test -------------------------------------------------------

// akModel drives a Chan with acknowledgements through random operations and checks it
// against what it knows of every message.
type akModel struct {
	t    *testing.T
	rng  *rand.Rand
	dir  string
	c    *Chan[string]
	src  chan string
	next int

	known   map[string]bool  // every message given to the Chan (src or Store)
	order   []string         // the same, in order
	acks    map[string]int   // acknowledgements per message
	ids     map[string]MsgID // the non-zero ID a message was delivered with
	idOwner map[MsgID]string // and the other way round
	synced  map[string]bool  // not done when a Sync returned: must survive a crash

	// This Chan's deliveries.
	held     map[uint64]Delivery[string] // received and not acknowledged
	heldMsg  map[string]uint64
	ackedSeq map[uint64]bool
	lastSeq  uint64
	floor    uint64 // every seq up to floor is acknowledged
	acked    int64  // acknowledgements made to this Chan
	window   int
	wa       bool
	desc     string // the options
	base     int64  // the backlog found at open

	before      map[string]bool // received by an earlier Chan and not acknowledged then
	redelivered int64           // of them, delivered again by this Chan

	sessions, crashes, deliveries int
	log                           []string // the last operations, for a failure
	broken                        bool     // a delivery promise was broken: stop
	statFails                     map[string]int
}

func (m *akModel) note(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
	if len(m.log) > 12 {
		m.log = m.log[1:]
	}
}

// fail reports a broken promise with the recent operations; the run stops after the
// operation.
func (m *akModel) fail(format string, args ...any) {
	m.t.Helper()
	m.broken = true
	m.t.Errorf("session %d: "+format+"\n  recent operations: %q", append([]any{m.sessions}, append(args, m.log)...)...)
}

// statFail reports a wrong counter. The run goes on (a wrong counter must not hide a
// broken delivery promise), and only the first few of each kind are reported.
func (m *akModel) statFail(kind, format string, args ...any) {
	m.t.Helper()
	m.statFails[kind]++
	if m.statFails[kind] <= 2 {
		m.t.Errorf("session %d: "+format, append([]any{m.sessions}, args...)...)
	}
}

// hung fails the test with the Chan's state and a goroutine dump (written to a file).
func (m *akModel) hung(what string) {
	m.t.Helper()
	dump := filepath.Join(os.TempDir(), fmt.Sprintf("pelichan-hang-%d.txt", time.Now().UnixNano()))
	if f, err := os.Create(dump); err == nil {
		pprof.Lookup("goroutine").WriteTo(f, 2)
		f.Close()
	}
	c := m.c
	m.t.Fatalf("session %d: %s; stats %+v; free batch slices %d, batches in flight %d, backlog %v, writeCh %d; goroutines in %s\n  recent operations: %q",
		m.sessions, what, c.Stats(), len(c.freeCh), c.inflight.Load(), c.backlog.Load(), len(c.writeCh), dump, m.log)
}

func (m *akModel) options() []Option {
	r := m.rng
	m.window = []int{1, 3, 16, 64, 500}[r.IntN(5)]
	sync := SyncNever
	switch r.IntN(4) {
	case 0:
		sync = SyncEvery(5 * time.Millisecond)
	case 1:
		sync = SyncAlways
	}
	buffer := []int{0, 1, 8, 100}[r.IntN(4)]
	seg := int64(2<<10 + r.IntN(32<<10))
	batch := 256 + r.IntN(8<<10)
	linger := time.Duration(1+r.IntN(15)) * time.Millisecond
	opts := []Option{WithAcks(m.window), WithBuffer(buffer), WithSegmentSize(seg), WithBatchBytes(batch),
		WithLinger(linger), WithSync(sync)}
	m.wa = r.IntN(4) == 0
	if m.wa {
		opts = append(opts, WithWriteAhead())
	}
	ordered := r.IntN(6) == 0
	if ordered {
		opts = append(opts, WithOrdered())
	}
	m.desc = fmt.Sprintf("WithAcks(%d) WithBuffer(%d) WithSegmentSize(%d) WithBatchBytes(%d) WithLinger(%v) WithSync(%v) write-ahead %v ordered %v",
		m.window, buffer, seg, batch, linger, sync, m.wa, ordered)
	return opts
}

func (m *akModel) start() {
	m.t.Helper()
	opts := m.options()
	m.src = make(chan string)
	c, err := New(m.dir, m.src, String, opts...)
	if err != nil {
		m.t.Fatalf("session %d: New: %v", m.sessions+1, err)
	}
	m.c = c
	m.sessions++
	m.held, m.heldMsg, m.ackedSeq = map[uint64]Delivery[string]{}, map[string]uint64{}, map[uint64]bool{}
	m.lastSeq, m.floor, m.acked, m.redelivered = 0, 0, 0, 0
	s := c.Stats()
	m.base = s.OnDisk
	m.note("New(%s): backlog %d", m.desc, m.base)
}

// stop closes the Chan gracefully: its unacknowledged deliveries are to come again.
func (m *akModel) stop() {
	m.t.Helper()
	m.checkStats("before Close")
	if err := akClose(m.t, m.c); err != nil {
		m.fail("Close: %v", err)
	}
	s := m.c.Stats()
	m.identity("after Close", s, m.base)
	if s.InMemory != 0 {
		m.statFail("close", "after Close: InMemory %d, want 0: %+v", s.InMemory, s)
	}
	if err := m.c.Ack(m.lastSeq); !errors.Is(err, ErrClosed) && m.lastSeq > 0 {
		m.fail("Ack after Close: %v, want ErrClosed", err)
	}
	for msg := range m.heldMsg {
		m.before[msg] = true
	}
	m.note("Close with %d held", len(m.held))
}

func (m *akModel) send(n int) {
	m.t.Helper()
	for range n {
		v := akMsg("m", m.next)
		m.next++
		select {
		case m.src <- v:
		case <-time.After(10 * time.Second):
			m.hung("send: the Chan did not take a message from src within 10s")
		}
		m.known[v] = true
		m.order = append(m.order, v)
	}
	m.note("send %d", n)
}

func (m *akModel) store(n int) {
	m.t.Helper()
	for range n {
		v := akMsg("s", m.next)
		m.next++
		var err error
		akWithin(m.t, 10*time.Second, "Store", func() { err = m.c.Store(v) })
		if err != nil {
			m.fail("Store: %v", err)
			continue
		}
		m.known[v] = true
		m.order = append(m.order, v)
	}
	m.note("store %d", n)
}

// owed is how many messages are neither acknowledged nor held by the consumer.
func (m *akModel) owed() int {
	n := 0
	for v := range m.known {
		if m.acks[v] == 0 {
			if _, ok := m.heldMsg[v]; !ok {
				n++
			}
		}
	}
	return n
}

// take checks one delivery against the model.
func (m *akModel) take(d Delivery[string], who string) {
	m.t.Helper()
	m.deliveries++
	if d.Seq != m.lastSeq+1 {
		m.fail("%s: delivery Seq %d after %d, want %d", who, d.Seq, m.lastSeq, m.lastSeq+1)
	}
	m.lastSeq = max(m.lastSeq, d.Seq)
	v := d.Msg
	switch {
	case !m.known[v]:
		m.fail("%s: delivered %q, which was never sent", who, v)
		return
	case m.acks[v] > 0:
		m.fail("%s: delivered %q (Seq %d, ID %v) again after it was acknowledged", who, v, d.Seq, d.ID)
	}
	if s, ok := m.heldMsg[v]; ok {
		m.fail("%s: delivered %q as Seq %d while Seq %d of it is not acknowledged yet", who, v, d.Seq, s)
	}
	if m.wa && d.ID.IsZero() {
		m.fail("%s: write-ahead delivery Seq %d of %q has the zero ID", who, d.Seq, v)
	}
	if !d.ID.IsZero() {
		if old, ok := m.ids[v]; ok && old != d.ID {
			m.fail("%s: %q delivered with ID %v, earlier with %v", who, v, d.ID, old)
		}
		if o, ok := m.idOwner[d.ID]; ok && o != v {
			m.fail("%s: ID %v given to %q and to %q", who, d.ID, o, v)
		}
		m.ids[v], m.idOwner[d.ID] = d.ID, v
	}
	if m.before[v] {
		delete(m.before, v)
		m.redelivered++
	}
	m.held[d.Seq] = d
	m.heldMsg[v] = d.Seq
}

// receive takes up to n deliveries. When messages are owed and the window has room,
// deliveries must keep coming.
func (m *akModel) receive(n int) {
	m.t.Helper()
	got := 0
	for got < n {
		wait := 20 * time.Millisecond
		if m.owed() > 0 && m.lastSeq-m.floor < uint64(m.window) {
			wait = 3 * time.Second
		}
		d, ok, closed := akRecv(m.c.Deliveries(), wait)
		if closed {
			m.fail("receive: Deliveries closed while the Chan runs and src is open")
			return
		}
		if !ok {
			if wait > time.Second {
				m.fail("receive: nothing delivered for %v while %d messages are owed and %d of a window of %d are out; stats %+v",
					wait, m.owed(), m.lastSeq-m.floor, m.window, m.c.Stats())
			}
			break
		}
		m.take(d, "receive")
		got++
	}
	m.note("receive %d of %d", got, n)
}

// acked records that seq was acknowledged.
func (m *akModel) ackedOne(seq uint64) {
	d, ok := m.held[seq]
	if !ok {
		return
	}
	delete(m.held, seq)
	delete(m.heldMsg, d.Msg)
	m.acks[d.Msg]++
	m.ackedSeq[seq] = true
	m.acked++
	for m.ackedSeq[m.floor+1] {
		delete(m.ackedSeq, m.floor+1)
		m.floor++
	}
}

// ack acknowledges some held deliveries in random order from two goroutines; with
// through, one goroutine acknowledges a prefix with AckThrough while the other acknowledges
// single deliveries after it.
func (m *akModel) ack(frac float64, through bool) {
	m.t.Helper()
	seqs := make([]uint64, 0, len(m.held))
	for s := range m.held {
		seqs = append(seqs, s)
	}
	if len(seqs) == 0 {
		return
	}
	slices.Sort(seqs)
	var cut uint64 // AckThrough(cut)
	if through {
		cut = seqs[m.rng.IntN(len(seqs))]
	}
	var singles []uint64
	for _, s := range seqs {
		if s > cut && m.rng.Float64() < frac {
			singles = append(singles, s)
		}
	}
	m.rng.Shuffle(len(singles), func(i, j int) { singles[i], singles[j] = singles[j], singles[i] })
	half := len(singles) / 2
	parts := [2][]uint64{singles[:half], singles[half:]}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	wg.Add(2)
	for g := range 2 {
		go func() {
			defer wg.Done()
			if g == 0 && cut > 0 {
				if err := m.c.AckThrough(cut); err != nil {
					errs[2] = fmt.Errorf("AckThrough(%d): %w", cut, err)
				}
			}
			for _, s := range parts[g] {
				if err := m.c.Ack(s); err != nil && errs[g] == nil {
					errs[g] = fmt.Errorf("Ack(%d): %w", s, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			m.fail("ack: %v", err)
		}
	}
	for _, s := range seqs {
		if s <= cut {
			m.ackedOne(s)
		}
	}
	for _, s := range singles {
		m.ackedOne(s)
	}
	m.note("ack: through %d, %d single", cut, len(singles))
}

func (m *akModel) sync() {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.c.Sync(ctx); err != nil {
		m.fail("Sync: %v", err)
		return
	}
	for v := range m.known {
		if m.acks[v] == 0 {
			m.synced[v] = true
		}
	}
	m.note("sync")
}

// checkStats compares the counters with the model.
func (m *akModel) checkStats(when string) {
	m.t.Helper()
	s := m.c.Stats()
	m.identity(when, s, m.base)
	if s.Direct+s.Refilled != m.acked {
		m.statFail("done", "%s: Direct %d + Refilled %d != %d acknowledged deliveries (done = acknowledged); %+v",
			when, s.Direct, s.Refilled, m.acked, s)
	}
	if s.Unacked < int64(len(m.held)) || s.Unacked > int64(m.window) {
		m.statFail("unacked", "%s: Unacked %d; the consumer holds %d unacknowledged, the window is %d; %+v",
			when, s.Unacked, len(m.held), m.window, s)
	}
	if s.Redelivered < m.redelivered {
		m.statFail("redelivered", "%s: Redelivered %d, but %d deliveries were of messages an earlier Chan delivered and that were not acknowledged",
			when, s.Redelivered, m.redelivered)
	}
}

// identity checks Stats' identity (see akIdentity) as a counter failure.
func (m *akModel) identity(when string, s Stats, backlog int64) {
	m.t.Helper()
	if d := s.Received + backlog - (s.Direct + s.Refilled + s.OnDisk + s.Dropped + s.InMemory); d != 0 {
		m.statFail("identity", "%s: Received %d + backlog %d != Direct %d + Refilled %d + OnDisk %d + Dropped %d + InMemory %d (diff %d); %+v",
			when, s.Received, backlog, s.Direct, s.Refilled, s.OnDisk, s.Dropped, s.InMemory, d, s)
	}
	if s.InMemory < 0 || s.OnDisk < 0 || s.Unacked < 0 {
		m.statFail("negative", "%s: negative count: %+v", when, s)
	}
}

// crash copies the directory while the Chan runs, closes the Chan, and checks the copy
// as the spool a crash would have left: it opens, nothing foreign comes out, and every
// message not done when a Sync returned comes out (duplicates are allowed).
func (m *akModel) crash() {
	m.t.Helper()
	m.crashes++
	img := filepath.Join(m.t.TempDir(), "crash")
	must := map[string]bool{}
	for v := range m.synced {
		if m.acks[v] == 0 {
			must[v] = true
		}
	}
	sentThen := make(map[string]bool, len(m.known))
	for v := range m.known {
		sentThen[v] = true
	}
	akCopyDir(m.t, m.dir, img)
	m.stop()

	src := make(chan string)
	close(src)
	c, err := New(img, src, String, WithAcks(1+m.rng.IntN(200)))
	if err != nil {
		m.fail("crash %d: New on the crash image: %v", m.crashes, err)
		return
	}
	backlog := c.Stats().OnDisk
	got := akDrainAcked(m.t, c, 5*time.Second)
	s := c.Stats()
	akMustClose(m.t, c)
	m.identity(fmt.Sprintf("crash %d image", m.crashes), s, backlog)
	seen := map[string]int{}
	for _, d := range got {
		seen[d.Msg]++
		if !sentThen[d.Msg] {
			m.fail("crash %d: the image delivered %q, never sent before the copy", m.crashes, d.Msg)
		}
		if old, ok := m.ids[d.Msg]; ok && !d.ID.IsZero() && old != d.ID {
			m.fail("crash %d: %q delivered with ID %v from the image, with %v before", m.crashes, d.Msg, d.ID, old)
		}
		if o, ok := m.idOwner[d.ID]; ok && o != d.Msg {
			m.fail("crash %d: ID %v of %q delivered for %q from the image", m.crashes, d.ID, o, d.Msg)
		}
	}
	lost := 0
	var ex []string
	for v := range must {
		if seen[v] == 0 {
			lost++
			if len(ex) < 3 {
				ex = append(ex, v)
			}
		}
	}
	if lost > 0 {
		m.fail("crash %d: %d of %d messages not done when Sync returned are missing from the crash image (e.g. %q)",
			m.crashes, lost, len(must), ex)
	}
	m.note("crash %d: image delivered %d, %d required", m.crashes, len(got), len(must))
}

// TestAcksModel runs random sequences of sends, deliveries, acknowledgements (out of order,
// from two goroutines, single and cumulative), Store, Sync, graceful restarts and crash
// images against a model. Graceful path: every message is acknowledged exactly once in the
// end; an acknowledged message is never delivered again; Seq counts 1, 2, 3 per Chan; a
// stored message keeps its ID. Crash images: every message not done when a Sync returned
// survives. Set PELICHAN_SEED to replay a run.
func TestAcksModel(t *testing.T) {
	seed := akSeed(t)
	m := &akModel{
		t: t, rng: rand.New(rand.NewPCG(uint64(seed), 0xac55)), dir: t.TempDir(),
		known: map[string]bool{}, acks: map[string]int{}, ids: map[string]MsgID{},
		idOwner: map[MsgID]string{}, synced: map[string]bool{}, before: map[string]bool{},
		statFails: map[string]int{},
	}
	m.start()
	defer func() { m.c.Close() }()
	for round := 0; round < 120 && !m.broken; round++ {
		r := m.rng
		switch op := r.IntN(100); {
		case op < 22:
			m.send(1 + r.IntN(400))
		case op < 46:
			m.receive(1 + r.IntN(300))
		case op < 58:
			m.ack(r.Float64(), false)
		case op < 66:
			m.ack(r.Float64(), true)
		case op < 71:
			m.store(1 + r.IntN(5))
		case op < 78:
			m.sync()
		case op < 86:
			m.checkStats(fmt.Sprintf("round %d", round))
		case op < 94:
			m.stop()
			m.start()
		default:
			m.crash()
			m.start()
		}
	}
	if m.broken {
		return
	}
	// The end: src closed, everything comes (again), is acknowledged, and Deliveries closes.
	m.ack(1, false)
	close(m.src)
	for {
		d, ok, closed := akRecv(m.c.Deliveries(), 10*time.Second)
		if closed {
			break
		}
		if !ok {
			m.fail("final drain: Deliveries not closed 10s after the last delivery; %d held, stats %+v", len(m.held), m.c.Stats())
			return
		}
		m.take(d, "final drain")
		if err := m.c.Ack(d.Seq); err != nil {
			m.fail("final drain: Ack(%d): %v", d.Seq, err)
			return
		}
		m.ackedOne(d.Seq)
	}
	m.checkStats("after the final drain")
	final := m.c.Stats()
	if final.OnDisk != 0 || final.InMemory != 0 || final.Unacked != 0 {
		m.statFail("final", "after the final drain: %+v", final)
	}
	akMustClose(t, m.c)
	lost, dup := 0, 0
	var lostEx []string
	for _, v := range m.order {
		switch n := m.acks[v]; {
		case n == 0:
			lost++
			if len(lostEx) < 3 {
				lostEx = append(lostEx, v)
			}
		case n > 1:
			dup++
		}
	}
	t.Logf("%d sessions (%d after crash-image checks), %d messages, %d deliveries; counter failures by kind %v",
		m.sessions, m.crashes, len(m.order), m.deliveries, m.statFails)
	if lost > 0 || dup > 0 {
		t.Errorf("graceful path: of %d messages %d were never acknowledged (e.g. %q), %d more than once",
			len(m.order), lost, lostEx, dup)
	}
}

// ---- errors ----------------------------------------------------------------------------

// akChan opens a Chan with acknowledgements, sends n messages and receives them all (with
// WithBuffer(0), so that nothing else is out).
func akChan(t *testing.T, n int, opts ...Option) (*Chan[string], chan string, []Delivery[string]) {
	t.Helper()
	src := make(chan string)
	c := open(t, t.TempDir(), src, append([]Option{WithAcks(100), WithBuffer(0)}, opts...)...)
	var got []Delivery[string]
	for i := range n {
		akSend(t, src, akMsg("e", i), 5*time.Second)
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("delivery %d did not come", i+1)
		}
		got = append(got, d)
	}
	return c, src, got
}

func TestAckErrors(t *testing.T) {
	type step struct {
		through bool
		seq     uint64
		want    error // nil: must succeed
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"seq 0", []step{{false, 0, ErrAck}}},
		{"AckThrough 0", []step{{true, 0, ErrAck}}},
		{"beyond the last delivery", []step{{false, 6, ErrAck}}},
		{"AckThrough beyond the last delivery", []step{{true, 6, ErrAck}}},
		{"far beyond", []step{{false, 1 << 40, ErrAck}}},
		{"repeated", []step{{false, 3, nil}, {false, 3, ErrAck}}},
		{"repeated first", []step{{false, 1, nil}, {false, 1, ErrAck}}},
		{"after AckThrough", []step{{true, 4, nil}, {false, 2, ErrAck}, {false, 4, ErrAck}, {false, 5, nil}}},
		{"AckThrough below the floor", []step{{true, 4, nil}, {true, 3, ErrAck}}},
		{"AckThrough at the floor", []step{{true, 4, nil}, {true, 4, ErrAck}}},
		{"AckThrough over single acks", []step{{false, 2, nil}, {false, 4, nil}, {true, 5, nil}, {true, 5, ErrAck}, {false, 3, ErrAck}}},
		{"AckThrough after all acked singly", []step{{false, 1, nil}, {false, 2, nil}, {true, 2, ErrAck}}},
		{"out of order", []step{{false, 5, nil}, {false, 1, nil}, {false, 3, nil}, {false, 2, nil}, {false, 4, nil}, {true, 5, ErrAck}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, _ := akChan(t, 5)
			for i, st := range tc.steps {
				var err error
				if st.through {
					err = c.AckThrough(st.seq)
				} else {
					err = c.Ack(st.seq)
				}
				name := fmt.Sprintf("step %d: Ack(%d)", i, st.seq)
				if st.through {
					name = fmt.Sprintf("step %d: AckThrough(%d)", i, st.seq)
				}
				switch {
				case st.want == nil && err != nil:
					t.Errorf("%s: %v, want success", name, err)
				case st.want != nil && !errors.Is(err, st.want):
					t.Errorf("%s: %v, want an error wrapping %v", name, err, st.want)
				}
			}
			akMustClose(t, c)
		})
	}
	t.Run("after Close", func(t *testing.T) {
		c, _, got := akChan(t, 3)
		akMustClose(t, c)
		for _, f := range []func(uint64) error{c.Ack, c.AckThrough} {
			for _, seq := range []uint64{got[0].Seq, 99} {
				if err := f(seq); !errors.Is(err, ErrClosed) {
					t.Errorf("ack of %d after Close: %v, want ErrClosed", seq, err)
				}
			}
		}
	})
	t.Run("without WithAcks", func(t *testing.T) {
		src := make(chan string)
		c := open(t, t.TempDir(), src)
		akSend(t, src, "x", 5*time.Second)
		if err := c.Ack(1); !errors.Is(err, ErrMode) {
			t.Errorf("Ack without WithAcks: %v, want ErrMode", err)
		}
		if err := c.AckThrough(1); !errors.Is(err, ErrMode) {
			t.Errorf("AckThrough without WithAcks: %v, want ErrMode", err)
		}
		akMustClose(t, c)
		if err := c.Ack(1); !errors.Is(err, ErrMode) && !errors.Is(err, ErrClosed) {
			t.Errorf("Ack without WithAcks after Close: %v, want ErrMode or ErrClosed", err)
		}
	})
}

// Out under WithAcks and Deliveries without it are closed from the start (a receive never
// hangs) and the misuse is reported.
func TestAckWrongChannel(t *testing.T) {
	for _, acks := range []bool{true, false} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			log := &errLog{}
			src := make(chan string)
			opts := []Option{WithErrorHandler(log.handle)}
			if acks {
				opts = append(opts, WithAcks(10))
			}
			c := open(t, t.TempDir(), src, opts...)
			akSend(t, src, "a message", 5*time.Second)
			if acks {
				select {
				case v, ok := <-c.Out():
					if ok {
						t.Errorf("Out under WithAcks delivered %q", v)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("receive from Out under WithAcks hangs")
				}
				if d, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok || d.Msg != "a message" {
					t.Errorf("Deliveries: %+v, %v", d, ok)
				}
			} else {
				select {
				case d, ok := <-c.Deliveries():
					if ok {
						t.Errorf("Deliveries without WithAcks delivered %+v", d)
					}
				case <-time.After(2 * time.Second):
					t.Fatalf("receive from Deliveries without WithAcks hangs")
				}
				select {
				case v := <-c.Out():
					if v != "a message" {
						t.Errorf("Out: %q", v)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("Out: nothing")
				}
			}
			akMustClose(t, c)
			if log.count(ErrMode) == 0 {
				t.Errorf("the misuse was not reported to the error handler (ErrMode); errors: %v", log.errs)
			}
		})
	}
}

// A sequence number that the loop is offering on an unbuffered Deliveries but that the
// consumer has not received was never delivered: acknowledging it is an error, and once
// it is received it can be acknowledged and counts as done.
func TestAckOfferedNotReceived(t *testing.T) {
	c, src, got := akChan(t, 1)
	akSend(t, src, "second", 5*time.Second)
	time.Sleep(50 * time.Millisecond) // the loop now offers delivery 2
	err := c.Ack(got[0].Seq + 1)
	if err == nil {
		t.Errorf("Ack(%d) of a delivery not yet received succeeded; want an error wrapping ErrAck", got[0].Seq+1)
	} else if !errors.Is(err, ErrAck) {
		t.Errorf("Ack(%d) of a delivery not yet received: %v, want ErrAck", got[0].Seq+1, err)
	}
	d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
	if !ok {
		t.Fatalf("delivery 2 did not come")
	}
	if err := c.Ack(got[0].Seq); err != nil {
		t.Errorf("Ack(%d): %v", got[0].Seq, err)
	}
	if err := c.Ack(d.Seq); err != nil {
		t.Errorf("Ack(%d) after it was received: %v", d.Seq, err)
	}
	s := waitStatsOr(c, 2*time.Second, func(s Stats) bool { return s.Unacked == 0 })
	if s.Unacked != 0 || s.Direct+s.Refilled != 2 {
		t.Errorf("both deliveries acknowledged: want Unacked 0 and 2 done; %+v", s)
	}
	close(src)
	if _, _, closed := akRecv(c.Deliveries(), 5*time.Second); !closed {
		t.Errorf("Deliveries not closed after src closed and every delivery acknowledged; %+v", c.Stats())
	}
	akMustClose(t, c)
}

// waitStatsOr polls Stats until cond holds or timeout passes, and returns the last.
func waitStatsOr[T any](c *Chan[T], timeout time.Duration, cond func(Stats) bool) Stats {
	deadline := time.Now().Add(timeout)
	for {
		s := c.Stats()
		if cond(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---- the window --------------------------------------------------------------------------

func TestAckWindow(t *testing.T) {
	for _, buffer := range []int{0, 1024} {
		t.Run(fmt.Sprintf("buffer=%d", buffer), func(t *testing.T) {
			const window = 10
			src := make(chan string)
			c := open(t, t.TempDir(), src, WithAcks(window), WithBuffer(buffer), WithLinger(5*time.Millisecond))
			go func() {
				for i := range 100 {
					select {
					case src <- akMsg("w", i):
					case <-time.After(10 * time.Second):
						return
					}
				}
			}()
			recv := func(want int, wait time.Duration) []Delivery[string] {
				var got []Delivery[string]
				for {
					d, ok, _ := akRecv(c.Deliveries(), wait)
					if !ok {
						return got
					}
					got = append(got, d)
					if len(got) > want {
						return got
					}
				}
			}
			first := recv(window, 150*time.Millisecond)
			if len(first) != window {
				t.Fatalf("nobody acknowledging, window %d: %d deliveries came", window, len(first))
			}
			// Acknowledgements after the oldest do not open the window.
			for _, d := range first[1:] {
				if err := c.Ack(d.Seq); err != nil {
					t.Fatal(err)
				}
			}
			if more := recv(0, 150*time.Millisecond); len(more) != 0 {
				t.Errorf("the oldest delivery not acknowledged: %d more came (window %d)", len(more), window)
			}
			if s := c.Stats(); s.Unacked != 1 {
				t.Errorf("Unacked %d, want 1", s.Unacked)
			}
			if err := c.Ack(first[0].Seq); err != nil {
				t.Fatal(err)
			}
			second := recv(window, 150*time.Millisecond)
			if len(second) != window {
				t.Fatalf("after the window was acknowledged: %d deliveries came, want %d", len(second), window)
			}
			if err := c.AckThrough(second[len(second)-1].Seq); err != nil {
				t.Fatal(err)
			}
			third := recv(window, 150*time.Millisecond)
			if len(third) != window {
				t.Fatalf("after AckThrough: %d deliveries came, want %d", len(third), window)
			}
			if third[0].Seq != 2*window+1 {
				t.Errorf("Seq %d after %d deliveries", third[0].Seq, 2*window)
			}
			s := c.Stats()
			if s.Unacked != window || s.Direct+s.Refilled != 2*window {
				t.Errorf("Unacked %d (want %d), done %d (want %d): %+v", s.Unacked, window, s.Direct+s.Refilled, 2*window, s)
			}
			akIdentity(t, "window", s, 0)
			akMustClose(t, c)
		})
	}
}

// ---- stats -----------------------------------------------------------------------------

// The identity holds at every snapshot while a consumer receives and acknowledges (out of
// order, from two goroutines) and the producer outruns it, and after Close. Done
// (Direct + Refilled) is what was acknowledged, and Unacked what was not.
func TestAckStatsIdentity(t *testing.T) {
	seed := akSeed(t)
	dir := t.TempDir()
	const n = 6000
	src := make(chan string)
	c := open(t, dir, src, WithAcks(64), WithBuffer(16), WithBatchBytes(2<<10),
		WithLinger(2*time.Millisecond), WithSegmentSize(16<<10))
	stop := make(chan struct{})
	polled := make(chan int)
	go func() {
		polls := 0
		defer func() { polled <- polls }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			akIdentity(t, "while running", c.Stats(), 0)
			polls++
			time.Sleep(100 * time.Microsecond)
		}
	}()
	go func() {
		for i := range n {
			select {
			case src <- akMsg("i", i):
			case <-time.After(10 * time.Second):
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	var acked, received int64
	ackCh := make(chan uint64, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range ackCh {
				if err := c.Ack(s); err != nil {
					t.Errorf("Ack(%d): %v", s, err)
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}()
	}
	var held []uint64
	for received < n/2 {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("no delivery after %d", received)
		}
		received++
		held = append(held, d.Seq)
		if len(held) >= 8 || rng.IntN(4) == 0 {
			rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
			keep := rng.IntN(2) // leave one unacknowledged now and then, for later
			for _, s := range held[keep:] {
				ackCh <- s
			}
			held = held[:keep]
		}
		if received%500 == 0 {
			time.Sleep(20 * time.Millisecond) // stall: what is out and waiting is written
		}
	}
	for _, s := range held {
		ackCh <- s
	}
	close(ackCh)
	wg.Wait()
	s := waitStatsOr(c, 5*time.Second, func(s Stats) bool { return s.Received == n && s.InMemory == 0 })
	akIdentity(t, "quiet", s, 0)
	if s.Direct+s.Refilled != acked {
		t.Errorf("Direct %d + Refilled %d != %d acknowledged", s.Direct, s.Refilled, acked)
	}
	if s.Unacked < 0 || s.Unacked > 64 {
		t.Errorf("Unacked %d, window 64", s.Unacked)
	}
	close(stop)
	t.Logf("%d snapshots polled; quiet: %+v", <-polled, s)
	akMustClose(t, c)
	after := c.Stats()
	akIdentity(t, "after Close", after, 0)
	if after.InMemory != 0 || after.OnDisk != n-acked-after.Dropped {
		t.Errorf("after Close: InMemory %d (want 0), OnDisk %d (want %d); %+v", after.InMemory, after.OnDisk, n-acked, after)
	}
	// Everything not acknowledged comes again, nothing acknowledged does.
	src2 := make(chan string)
	close(src2)
	c2 := open(t, dir, src2, WithAcks(1000))
	base := c2.Stats().OnDisk
	if base != n-acked {
		t.Errorf("backlog at open %d, want %d", base, n-acked)
	}
	got := akDrainAcked(t, c2, 5*time.Second)
	if int64(len(got)) != n-acked {
		t.Errorf("after restart %d delivered, want %d", len(got), n-acked)
	}
	s2 := c2.Stats()
	akIdentity(t, "restart drained", s2, base)
	akMustClose(t, c2)
}

// akRecvAckSome receives the i-th delivery and acknowledges it if i%5 < 2 (two in five).
func akRecvAckSome(t *testing.T, c *Chan[string], i int) {
	t.Helper()
	d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
	if !ok {
		t.Fatal("no delivery")
	}
	if i%5 < 2 {
		if err := c.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
	}
}

// Redelivered counts the deliveries of messages that an earlier Chan delivered and that
// were not acknowledged then: from memory (stored at Close), from disk, and written while
// they waited.
func TestAckRedeliveredAfterRestart(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) (held int)
	}{
		{"from memory", func(t *testing.T, dir string) int {
			// The consumer keeps up: direct deliveries, 30 of them held at Close.
			src := make(chan string)
			c := open(t, dir, src, WithAcks(100), WithBuffer(0), WithLinger(time.Hour))
			for i := range 50 {
				akSend(t, src, akMsg("r", i), 5*time.Second)
				akRecvAckSome(t, c, i)
			}
			akMustClose(t, c)
			return 30
		}},
		{"written while held", func(t *testing.T, dir string) int {
			src := make(chan string)
			c := open(t, dir, src, WithAcks(100), WithBuffer(0), WithLinger(10*time.Millisecond))
			for i := range 50 {
				akSend(t, src, akMsg("r", i), 5*time.Second)
				akRecvAckSome(t, c, i)
			}
			waitStats(t, c, 5*time.Second, "the held deliveries to be written", func(s Stats) bool { return s.InMemory == 0 })
			akMustClose(t, c)
			return 30
		}},
		{"from disk", func(t *testing.T, dir string) int {
			// A backlog of 3000 (many records); the next Chan delivers 100 of it and
			// acknowledges 40.
			src := make(chan string)
			c := open(t, dir, src, WithAcks(100), WithBuffer(0), WithBatchBytes(1<<10))
			for i := range 3000 {
				akSend(t, src, akMsg("r", i), 5*time.Second)
			}
			akMustClose(t, c)
			src = make(chan string)
			c = open(t, dir, src, WithAcks(100), WithBuffer(0))
			for i := range 100 {
				akRecvAckSome(t, c, i)
			}
			time.Sleep(50 * time.Millisecond) // the reader reads ahead meanwhile
			akMustClose(t, c)
			return 60
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			held := tc.setup(t, dir)
			src := make(chan string)
			close(src)
			c := open(t, dir, src, WithAcks(5000))
			got := akDrainAcked(t, c, 5*time.Second)
			s := c.Stats()
			akMustClose(t, c)
			if s.Redelivered != int64(held) {
				t.Errorf("Redelivered %d, want %d (delivered earlier and not acknowledged); %d delivered now; %+v",
					s.Redelivered, held, len(got), s)
			}
		})
	}
}

// ---- the time bound ----------------------------------------------------------------------

// A consumer that holds deliveries from memory without acknowledging them (or, without
// acks, leaves them in Out's buffer) for longer than the linger time gets them written:
// InMemory drops to 0 without Sync, and a crash image taken then holds them.
func TestAckTimeBoundInMemory(t *testing.T) {
	for _, acks := range []bool{true, false} {
		t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
			const n, linger = 60, 30 * time.Millisecond
			dir := t.TempDir()
			src := make(chan string)
			opts := []Option{WithLinger(linger), WithBuffer(100)}
			if acks {
				opts = append(opts, WithAcks(1000))
			}
			c := open(t, dir, src, opts...)
			var sent []string
			for i := range n {
				v := akMsg("tb", i)
				sent = append(sent, v)
				akSend(t, src, v, 5*time.Second)
			}
			var held []Delivery[string]
			if acks {
				// The consumer takes 40 and holds them; 20 wait in Deliveries.
				for range 40 {
					d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
					if !ok {
						t.Fatal("no delivery")
					}
					held = append(held, d)
				}
				// Acknowledge a few: they are done, the rest are not.
				for _, d := range held[:5] {
					if err := c.Ack(d.Seq); err != nil {
						t.Fatal(err)
					}
				}
			}
			start := time.Now()
			s := waitStatsOr(c, linger+2*time.Second, func(s Stats) bool { return s.InMemory == 0 })
			if s.InMemory != 0 {
				t.Fatalf("%v after the deliveries went out, %d messages are still only in memory (linger %v); %+v",
					time.Since(start), s.InMemory, linger, s)
			}
			t.Logf("in memory for at most %v after the last send (linger %v)", time.Since(start), linger)
			akIdentity(t, "stalled", s, 0)
			img := filepath.Join(t.TempDir(), "crash")
			akCopyDir(t, dir, img)
			akMustClose(t, c)

			want := sent
			if acks {
				want = nil
				for _, v := range sent {
					if v != held[0].Msg && v != held[1].Msg && v != held[2].Msg && v != held[3].Msg && v != held[4].Msg {
						want = append(want, v)
					}
				}
			}
			src2 := make(chan string)
			close(src2)
			var got []string
			if acks {
				c2 := open(t, img, src2, WithAcks(1000))
				for _, d := range akDrainAcked(t, c2, 5*time.Second) {
					got = append(got, d.Msg)
				}
				akMustClose(t, c2)
			} else {
				c2 := open(t, img, src2)
				var closed bool
				got, closed = drain(c2.Out(), 5*time.Second)
				if !closed {
					t.Errorf("crash image: Out not closed")
				}
				akMustClose(t, c2)
			}
			// Duplicates are allowed in a crash image (a done message may come again);
			// losses are not.
			seen := map[string]bool{}
			for _, v := range got {
				seen[v] = true
			}
			lost := 0
			for _, v := range want {
				if !seen[v] {
					lost++
				}
			}
			if lost > 0 {
				t.Errorf("crash image taken after the linger: %d of %d messages not done are missing", lost, len(want))
			}
		})
	}
}

// Sync writes what is held unacknowledged and what is pending at once (not at the
// linger), so that a crash image taken right after Sync returns holds it.
func TestAckSyncThenCrashImage(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithAcks(1000), WithBuffer(10), WithLinger(time.Hour), WithBatchBytes(16<<10))
	var sent []string
	for i := range 200 {
		v := akMsg("sy", i)
		sent = append(sent, v)
		akSend(t, src, v, 5*time.Second)
	}
	for range 5 {
		if _, ok, _ := akRecv(c.Deliveries(), 5*time.Second); !ok {
			t.Fatal("no delivery")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if s := c.Stats(); s.InMemory != 0 {
		t.Errorf("after Sync: InMemory %d, want 0 (everything not done written); %+v", s.InMemory, s)
	}
	img := filepath.Join(t.TempDir(), "crash")
	akCopyDir(t, dir, img)
	akMustClose(t, c)
	src2 := make(chan string)
	close(src2)
	c2 := open(t, img, src2, WithAcks(1000))
	var got []string
	for _, d := range akDrainAcked(t, c2, 5*time.Second) {
		got = append(got, d.Msg)
	}
	akMustClose(t, c2)
	checkSame(t, "crash image after Sync", sent, got)
}
