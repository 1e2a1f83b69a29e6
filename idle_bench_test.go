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
	const chans, n = 4, 100000
	for i := 0; i < b.N; i++ {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cs := make([]*Chan[[]byte], chans)
		for k := range cs {
			src := make(chan []byte)
			c, err := New(b.TempDir(), src, Bytes, WithBuffer(100), WithSegmentSize(1<<20), WithSync(SyncNever))
			if err != nil {
				b.Fatal(err)
			}
			cs[k] = c
			for j := range n {
				src <- lines[j%len(lines)]
			}
			waitStored(c, n)
			for range n {
				<-c.Out()
			}
		}
		time.Sleep(idleRelease + 1500*time.Millisecond)
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/chans, "heap-bytes/chan")
		for _, c := range cs {
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
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
	const chans = 2
	for i := 0; i < b.N; i++ {
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		cs := make([]*Chan[[]byte], chans)
		for k := range cs {
			src := make(chan []byte)
			c, err := New(b.TempDir(), src, Bytes, WithBuffer(0), WithSync(SyncNever))
			if err != nil {
				b.Fatal(err)
			}
			cs[k] = c
			sent := 0
			for j := range 2000 {
				if j%300 == 0 {
					src <- big[j/300%len(big)]
				} else {
					src <- lines[j%len(lines)]
				}
				sent++
			}
			waitStored(c, int64(sent))
			for range sent {
				<-c.Out()
			}
		}
		time.Sleep(idleRelease + 1500*time.Millisecond)
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/chans, "heap-bytes/chan")
		for _, c := range cs {
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
