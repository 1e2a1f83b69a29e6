package pelichan

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// BenchmarkIdleAfterRefill: heap held per Chan that spilled enough to seal several
// segments, refilled all of it from the sealed files (the streaming reader's chunks), and
// went idle. (The spool keeps its read buffers for reuse until the Chan has been idle a second.)
func BenchmarkIdleAfterRefill(b *testing.B) {
	lines, _ := benchLines(4096)
	benchIdleHeap(b, 4, 100000, idleRelease+1500*time.Millisecond, func(j int) []byte { return lines[j%len(lines)] },
		WithBuffer(100), WithSegmentSize(1<<20), WithSync(SyncNever))
}

// BenchmarkIdleAfterLargeMessages: heap held per Chan, idle, after it spilled a few
// large (8 MiB, incompressible) messages among small ones, all consumed.
func BenchmarkIdleAfterLargeMessages(b *testing.B) {
	lines, _ := benchLines(4096)
	big := make([][]byte, 6)
	for k := range big {
		big[k] = make([]byte, 8<<20)
		rng := rand.New(rand.NewPCG(uint64(k), 1))
		for j := 0; j < len(big[k]); j += 8 {
			binary.LittleEndian.PutUint64(big[k][j:], rng.Uint64())
		}
	}
	msg := func(j int) []byte {
		if j%300 == 0 {
			return big[j/300%len(big)]
		}
		return lines[j%len(lines)]
	}
	benchIdleHeap(b, 2, 2000, idleRelease+1500*time.Millisecond, msg, WithBuffer(0), WithSync(SyncNever))
}

// benchIdleHeap reports the heap held per Chan, idle (settle after the last message),
// by chans Chans that each took n messages (msg(j)) with the consumer away, so they were
// spilled, and then delivered them all.
func benchIdleHeap(b *testing.B, chans, n int, settle time.Duration, msg func(j int) []byte, opts ...Option) {
	for i := 0; i < b.N; i++ {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cs := make([]*Chan[[]byte], chans)
		for k := range cs {
			src := make(chan []byte)
			c, err := New(b.TempDir(), src, Bytes, opts...)
			if err != nil {
				b.Fatal(err)
			}
			cs[k] = c
			for j := range n {
				src <- msg(j)
			}
			waitStored(c, int64(n))
			for range n {
				<-c.Out()
			}
		}
		time.Sleep(settle)
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/float64(chans), "heap-bytes/chan")
		for _, c := range cs {
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkIdleAfterTinyMessages: heap held per Chan, idle, after it spilled 50,000
// one-byte messages (a pending batch of 64 KiB holds tens of thousands of them, so the
// batch slices grow large) and delivered them all.
func BenchmarkIdleAfterTinyMessages(b *testing.B) {
	tiny := [][]byte{[]byte("0"), []byte("1"), []byte("2")}
	benchIdleHeap(b, 10, 50000, idleRelease+1500*time.Millisecond, func(j int) []byte { return tiny[j%len(tiny)] }, WithBuffer(0))
}
