package pelichan

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// After New on a backlog of many segments, the reader decodes one record before the rest
// and the spool's background counting waits for the first read (so that the first
// message is not held up). Neither may stall: with a consumer that takes nothing, Stats
// (which waits for the counts once) returns the whole backlog, and the first message then
// comes, followed by every other, once each. (A guard against stalls: the code before the
// warm-up passes it too; BenchmarkOpenToFirst measures what the warm-up is for.)
func TestFirstMessageAndLateCountsAfterOpen(t *testing.T) {
	dir := t.TempDir()
	const n = 600
	opts := []Option{WithSegmentSize(1 << 10), WithBatchBytes(256), WithBuffer(0)}
	dmStore(t, dir, opts, "f", n)

	c := open(t, dir, make(chan string), opts...)
	s, ok := statsWithin(c, 10*time.Second)
	if !ok {
		t.Fatal("Stats did not return within 10s of New with a stalled consumer: the background counts never came")
	}
	if s.Segments < 10 {
		t.Fatalf("%d segments: the test wants a backlog Open leaves mostly to the background", s.Segments)
	}
	if s.OnDisk+s.InMemory != n {
		t.Errorf("at open with a stalled consumer: OnDisk %d + InMemory %d, want %d", s.OnDisk, s.InMemory, n)
	}
	checkBalance(t, s, n)

	seen := map[string]bool{}
	for i := range n {
		v, ok, _ := recvString(c.Out(), 5*time.Second)
		if !ok {
			t.Fatalf("message %d of %d did not come within 5s; stats %+v", i+1, n, c.st.get())
		}
		if seen[v] {
			t.Fatalf("%q delivered twice", v)
		}
		seen[v] = true
	}
	for i := range n {
		if m := akMsg("f", i); !seen[m] {
			t.Errorf("%q not delivered", m)
		}
	}
	s = waitStats(t, c, 5*time.Second, "OnDisk 0", func(s Stats) bool { return s.OnDisk == 0 })
	checkBalance(t, s, n)
	akMustClose(t, c)
}

// lockedCodec is String with a Decode that takes a lock (a codec sharing a lock with the
// program's metrics).
type lockedCodec struct{ mu *sync.Mutex }

func (l lockedCodec) Encode(dst []byte, v string) ([]byte, error) { return String.Encode(dst, v) }
func (l lockedCodec) Decode(b []byte) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return String.Decode(b)
}

// Stats waits once for the backlog's segments to be counted, never for the codec: a
// metrics goroutine that holds the lock the codec's Decode takes may call Stats right
// after New (found in review: the background counting had waited for the first Decode).
func TestStatsAfterOpenDoesNotWaitForDecode(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithSegmentSize(1 << 10), WithBatchBytes(256), WithBuffer(0)}
	dmStore(t, dir, opts, "f", 300)
	var mu sync.Mutex
	mu.Lock()
	c, err := New(dir, make(chan string), Codec[string](lockedCodec{&mu}), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := statsWithin(c, 10*time.Second); !ok {
		t.Error("Stats did not return within 10s while the codec's Decode waited for a lock")
	} else if s.OnDisk+s.InMemory != 300 {
		t.Errorf("OnDisk %d + InMemory %d at open, want 300", s.OnDisk, s.InMemory)
	}
	mu.Unlock()
	akMustClose(t, c)
}

// lockedEncoder is String with an Encode that takes a lock.
type lockedEncoder struct{ mu *sync.Mutex }

func (l lockedEncoder) Encode(dst []byte, v string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return String.Encode(dst, v)
}
func (l lockedEncoder) Decode(b []byte) (string, error) { return String.Decode(b) }

// Nor does Stats wait for the codec's Encode of a Store right after New (found in review:
// the disk goroutine encoded Store's message itself, before it took the background
// counts).
func TestStatsAfterOpenDoesNotWaitForStoreEncode(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithSegmentSize(1 << 10), WithBatchBytes(256), WithBuffer(0)}
	dmStore(t, dir, opts, "f", 3000) // many segments: the counting takes a few ms
	var mu sync.Mutex
	c, err := New(dir, make(chan string), Codec[string](lockedEncoder{&mu}), opts...)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	stored := make(chan error, 1)
	go func() { stored <- c.Store("given back") }()
	time.Sleep(50 * time.Millisecond) // the Store on its way
	if _, ok := statsWithin(c, 10*time.Second); !ok {
		t.Error("Stats did not return within 10s while a Store's Encode waited for a lock")
	}
	mu.Unlock()
	select {
	case err := <-stored:
		if err != nil {
			t.Errorf("Store: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("Store did not return within 10s of the lock's release")
	}
	akMustClose(t, c)
}

// gateCodec is String with a Decode that waits for gate (a slow schema registry).
type gateCodec struct{ gate chan struct{} }

func (g gateCodec) Encode(dst []byte, v string) ([]byte, error) { return String.Encode(dst, v) }
func (g gateCodec) Decode(b []byte) (string, error) {
	<-g.gate
	return String.Decode(b)
}

// The disk cap counts the backlog's segments, including those counted in the background,
// while the first record read after New is still being decoded (found in review: the
// counting had waited for the first Decode, and spills went past the cap meanwhile).
func TestCapHoldsWhileFirstDecodeWaits(t *testing.T) {
	dir := t.TempDir()
	base := []Option{WithSegmentSize(4 << 10), WithBatchBytes(1 << 10), WithBuffer(0)}
	dmStore(t, dir, base, "f", 1500)
	backlog := walBytes(segmentFiles(t, dir))
	limit := backlog + 16<<10
	g := gateCodec{make(chan struct{})}
	src := make(chan string)
	opts := append(append([]Option{}, base...), WithMaxDiskBytes(limit), WithWhenFull(DropNewest))
	c, err := New(dir, src, Codec[string](g), opts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4000 {
		akSend(t, src, msg("n", i), 5*time.Second)
	}
	// What was taken is written (or dropped) within the linger; the cap must hold then.
	// Stats is called with a deadline: it waits for the background counts.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, ok := statsWithin(c, 5*time.Second)
		if !ok {
			close(g.gate)
			akMustClose(t, c)
			t.Fatal("Stats did not return within 5s while the first Decode waited: the background counts never came")
		}
		if s.Received == 4000 && s.InMemory == 0 {
			break
		}
		if time.Now().After(deadline) {
			close(g.gate)
			akMustClose(t, c)
			t.Fatalf("messages taken not written or dropped within 5s: %+v", s)
		}
		time.Sleep(2 * time.Millisecond)
	}
	on := walBytes(segmentFiles(t, dir))
	close(g.gate)
	akMustClose(t, c)
	if on > limit+(4<<10) {
		t.Errorf("spool files %d bytes, cap %d (+ one batch): the cap did not hold while the first Decode waited", on, limit)
	}
}

// statsWithin calls c.Stats, which waits once for the backlog's counts, and gives up after
// d (false); the call then returns at Close.
func statsWithin[T any](c *Chan[T], d time.Duration) (Stats, bool) {
	got := make(chan Stats, 1)
	go func() { got <- c.Stats() }()
	select {
	case s := <-got:
		return s, true
	case <-time.After(d):
		return Stats{}, false
	}
}

// failEncoder is String with an Encode that always fails.
type failEncoder struct{}

func (failEncoder) Encode([]byte, string) ([]byte, error) { return nil, errors.New("no encoding") }
func (failEncoder) Decode(b []byte) (string, error)       { return String.Decode(b) }

// Store encodes in the caller's goroutine, but after Close it still says ErrClosed (as
// DESIGN.md promises), not what the codec would say; before Close a codec error is
// ErrCodec.
func TestStoreErrorsWithCallerSideEncode(t *testing.T) {
	c, err := New(t.TempDir(), make(chan string), Codec[string](failEncoder{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Store("x"); !errors.Is(err, ErrCodec) {
		t.Errorf("Store with a failing Encode: %v, want ErrCodec", err)
	}
	s, ok := statsWithin(c, 10*time.Second)
	if !ok {
		t.Fatal("Stats did not return within 10s")
	}
	if s.Received != 0 || s.Dropped != 0 || s.InMemory != 0 {
		t.Errorf("a refused Store counted: %+v", s)
	}
	akMustClose(t, c)
	if err := c.Store("x"); !errors.Is(err, ErrClosed) {
		t.Errorf("Store after Close: %v, want ErrClosed", err)
	}
}
