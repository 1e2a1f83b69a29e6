package pelichan

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// slowDecodeCodec is Bytes with a decoder that takes its time, so that the disk goroutine
// reads ahead of the decoders (and the spool reads new chunks) while they still decode.
type slowDecodeCodec struct{}

func (slowDecodeCodec) Encode(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (slowDecodeCodec) Decode(data []byte) ([]byte, error) {
	time.Sleep(30 * time.Microsecond)
	return append([]byte(nil), data...), nil
}

// checkedMsg is message i: its number, a CRC of the rest, and incompressible bytes.
func checkedMsg(rng *rand.Rand, i int) []byte {
	m := make([]byte, 8+4+3000)
	binary.LittleEndian.PutUint64(m, uint64(i))
	for k := 12; k < len(m); k++ {
		m[k] = byte(rng.Uint32())
	}
	binary.LittleEndian.PutUint32(m[8:], crc32.ChecksumIEEE(m[12:]))
	return m
}

// Refill from sealed segment files (several 256 KiB chunks each) with slow decoders:
// every message comes back once, intact, and nothing is reported. A record released to the
// spool before its decoder is done (its chunk reused under the decoder) shows up as
// corruption reports and missing messages.
func TestRefillChunkReuseIntact(t *testing.T) {
	const n = 6000 // about 18 MB: 18 sealed 1 MiB segments
	dir := t.TempDir()
	var mu sync.Mutex
	var errs []error
	onErr := WithErrorHandler(func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() })
	opts := []Option{WithSegmentSize(1 << 20), WithSync(SyncNever), onErr}
	src := make(chan []byte)
	c, err := New(dir, src, Codec[[]byte](slowDecodeCodec{}), append(opts, WithBuffer(0))...)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	akWithin(t, time.Minute, "storing", func() {
		for i := range n {
			src <- checkedMsg(rng, i)
		}
	})
	waitStats(t, c, time.Minute, "every message stored", func(s Stats) bool { return s.Received == n && s.InMemory == 0 })
	if err := akClose(t, c); err != nil {
		t.Fatal(err)
	}
	src2 := make(chan []byte)
	close(src2)
	c, err = New(dir, src2, Codec[[]byte](slowDecodeCodec{}), append(opts, WithBuffer(100))...)
	if err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, n)
	got, bad := 0, 0
	msgs, closed := drain(c.Out(), 10*time.Second)
	if !closed {
		t.Errorf("Out not closed 10s after the last message (src closed)")
	}
	for _, m := range msgs {
		if len(m) < 12 || crc32.ChecksumIEEE(m[12:]) != binary.LittleEndian.Uint32(m[8:]) {
			bad++
			continue
		}
		i := binary.LittleEndian.Uint64(m)
		if i >= n || seen[i] {
			t.Errorf("message %d delivered twice (or out of range)", i)
			continue
		}
		seen[i] = true
		got++
	}
	if err := akClose(t, c); err != nil {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != n || bad > 0 || len(errs) > 0 {
		first := error(nil)
		if len(errs) > 0 {
			first = errs[0]
		}
		t.Fatalf("%d of %d messages intact, %d damaged; %d errors reported (first: %v)", got, n, bad, len(errs), first)
	}
}

// An idle Chan lets go of the done slices kept for reuse, also those handed back by
// acknowledgements that come more than idleRelease after the last read (the idle sweep had
// run already, and they were kept for good).
func TestDoneSlicesLetGoWhenIdle(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithAcks(5000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 2000
	for i := range n {
		if err := c.Store(akMsg("x", i)); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	for i := range n {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("delivery %d missing", i)
		}
		last = d.Seq
	}
	time.Sleep(1500 * time.Millisecond) // reads over: the sweep lets the buffers go
	if err := c.AckThrough(last); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	t.Logf("200ms after the ack: doneFree %d", len(c.doneFree))
	time.Sleep(2500 * time.Millisecond) // idle again, well past idleRelease
	held := 0
	for range len(c.doneFree) {
		s := <-c.doneFree
		held += cap(s) * int(unsafe.Sizeof(MsgID{}))
		c.doneFree <- s
	}
	t.Logf("doneFree holds %d slices, %d bytes, after %v idle", len(c.doneFree), held, 2500*time.Millisecond)
	if held > 0 {
		t.Errorf("an idle Chan keeps %d bytes of done slices", held)
	}
}

// An idle Chan lets go of what its pools of pending batch slices and refill items grew to
// (the free slices are swapped for empty ones), and works as before afterwards: a second
// spill and refill deliver everything once.
func TestPoolsShrinkWhenIdle(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(0))
	round := func(prefix string) {
		t.Helper()
		sent := msgs(prefix, 3000)
		for _, m := range sent {
			select {
			case src <- m:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: src blocked", prefix)
			}
		}
		waitStats(t, c, 10*time.Second, "spilled", func(s Stats) bool { return s.InMemory == 0 && s.OnDisk == int64(len(sent)) })
		got := recvN(c.Out(), len(sent), 5*time.Second)
		checkSame(t, prefix, sent, got)
	}
	round("a")
	time.Sleep(idleRelease + 1500*time.Millisecond) // the idle sweep runs on a checkpoint tick after idleRelease
	held := 0
	for range len(c.freeCh) {
		s := <-c.freeCh
		held += cap(s)
		c.freeCh <- s
	}
	if held > 0 {
		t.Errorf("an idle Chan keeps free pending slices with room for %d messages", held)
	}
	round("b")
	checkBalance(t, c.Stats())
}

// Done messages reach the cursor file within about a checkpoint interval even when they
// are fewer than a batch of done IDs (doneBatch): a copy of the directory taken then (what
// a crash would leave) delivers only what was not acknowledged.
func TestFewDoneReachCursorSoon(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, String, WithAcks(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n, acked = 100, 10
	for i := range n {
		if err := c.Store(akMsg("few", i)); err != nil {
			t.Fatal(err)
		}
	}
	var seq uint64
	for i := range n {
		d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
		if !ok {
			t.Fatalf("delivery %d missing", i)
		}
		if i == acked-1 {
			seq = d.Seq
		}
	}
	if err := c.AckThrough(seq); err != nil {
		t.Fatal(err)
	}
	time.Sleep(doneWait + 3*defaults().checkpoint)
	crashed := t.TempDir()
	if err := os.CopyFS(crashed, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	src2 := make(chan string)
	c2, err := New(crashed, src2, String, WithAcks(1000))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	again := 0
	for {
		d, ok, _ := akRecv(c2.Deliveries(), 300*time.Millisecond)
		if !ok {
			break
		}
		again++
		if err := c2.Ack(d.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if again != n-acked {
		t.Errorf("the copy delivered %d messages, want the %d not acknowledged", again, n-acked)
	}
}
