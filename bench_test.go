package pelichan

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pelichan/pelichan/internal/loggen"
)

// benchLines returns n generated log lines (100-300 bytes) and their total size.
func benchLines(n int) ([][]byte, int64) {
	g := loggen.New(1)
	lines := make([][]byte, n)
	var total int64
	for i := range lines {
		lines[i] = g.Append(nil, uint64(i))
		total += int64(len(lines[i]))
	}
	return lines, total
}

var benchSyncs = []struct {
	name string
	p    SyncPolicy
}{{"never", SyncNever}, {"every1s", SyncEvery(1e9)}, {"always", SyncAlways}}

// waitStored waits until every message received is on disk or delivered.
func waitStored[T any](c *Chan[T], n int64) {
	for {
		st := c.Stats()
		if st.Received >= n && st.InMemory == 0 {
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// BenchmarkSpill: the consumer is stalled, every message goes to disk.
func BenchmarkSpill(b *testing.B) {
	for _, s := range benchSyncs {
		b.Run("sync="+s.name, func(b *testing.B) { benchSpill(b, WithSync(s.p)) })
	}
}

// benchSpill times b.N lines sent to a new Chan (opts) whose consumer is away, until all
// are stored.
func benchSpill(b *testing.B, opts ...Option) {
	lines, total := benchLines(4096)
	src := make(chan []byte, 256)
	c, err := New(b.TempDir(), src, Bytes, append([]Option{WithBuffer(0)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src <- lines[i%len(lines)]
	}
	waitStored(c, int64(b.N))
	b.StopTimer()
	st := c.Stats()
	if st.Spilled+st.Direct != int64(b.N) {
		b.Fatalf("stored %d+%d of %d", st.Spilled, st.Direct, b.N)
	}
	b.ReportMetric(st.CompressionRatio, "ratio")
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSpillCompression: BenchmarkSpill/sync=never with each compression.
func BenchmarkSpillCompression(b *testing.B) {
	for _, comp := range []Compression{Zstd, S2, Auto} {
		b.Run(comp.String(), func(b *testing.B) { benchSpill(b, WithSync(SyncNever), WithCompression(comp)) })
	}
}

// benchBacklog stores n lines (cycling through lines) in a new spool directory, with the
// consumer away, and returns the directory.
func benchBacklog(b *testing.B, lines [][]byte, n int) string {
	dir := b.TempDir()
	src := make(chan []byte, 256)
	c, err := New(dir, src, Bytes, WithBuffer(0), WithSync(SyncNever))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		src <- lines[i%len(lines)]
	}
	waitStored(c, int64(n))
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkRefill: a backlog on disk is drained by a consumer that keeps up.
func BenchmarkRefill(b *testing.B) {
	benchRefill(b, nil)
}

// BenchmarkRefillWorkingConsumer: as BenchmarkRefill, with the user-side setting:
// WithBuffer(100) and a consumer that does work per message (hashes it nine times, about
// 0.35 µs here), so the refill pipeline competes with it for the cores. Compare with
// BenchmarkWorkingConsumerAlone, the same consumer on a copy of each line.
func BenchmarkRefillWorkingConsumer(b *testing.B) {
	var w benchWork
	benchRefill(b, w.do, WithBuffer(100))
}

// benchRefill stores b.N lines, then times a new Chan (opts) delivering them all to a
// consumer that calls consume (nil: nothing) on each.
func benchRefill(b *testing.B, consume func([]byte), opts ...Option) {
	lines, total := benchLines(4096)
	dir := benchBacklog(b, lines, b.N)
	b.SetBytes(total / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	src2 := make(chan []byte)
	close(src2)
	c, err := New(dir, src2, Bytes, append([]Option{WithSync(SyncNever)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for m := range c.Out() {
		n++
		if consume != nil {
			consume(m)
		}
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("refilled %d of %d", n, b.N)
	}
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkWorkingConsumerAlone(b *testing.B) {
	lines, total := benchLines(4096)
	b.SetBytes(total / int64(len(lines)))
	b.ReportAllocs()
	var w benchWork
	for i := 0; i < b.N; i++ {
		w.do(bytes.Clone(lines[i%len(lines)]))
	}
}

// benchWork is a consumer's per-message work: hashing it nine times.
type benchWork struct {
	h   maphash.Hash
	sum uint64
}

func (w *benchWork) do(m []byte) {
	for range 9 {
		w.h.Reset()
		w.h.Write(m)
		w.sum += w.h.Sum64()
	}
}

// BenchmarkDirect: the consumer keeps up; compare with BenchmarkPlainChanCopy.
func BenchmarkDirect(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprint("buffer=", size), func(b *testing.B) {
			msg := make([]byte, 200)
			src := make(chan []byte, size)
			c, err := New(b.TempDir(), src, Bytes, WithBuffer(size))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					src <- msg
				}
				close(src)
			}()
			for range c.Out() {
			}
			b.StopTimer()
			st := c.Stats()
			b.ReportMetric(float64(st.Spilled)/float64(b.N), "spilled/op")
			c.Close()
		})
	}
}

// BenchmarkPlainChanCopy is the ceiling for BenchmarkDirect: one goroutine copying from
// one channel to another.
func BenchmarkPlainChanCopy(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprint("buffer=", size), func(b *testing.B) {
			msg := make([]byte, 200)
			src, out := make(chan []byte, size), make(chan []byte, size)
			go func() {
				for v := range src {
					out <- v
				}
				close(out)
			}()
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			go func() {
				for i := 0; i < b.N; i++ {
					src <- msg
				}
				close(src)
			}()
			for range out {
			}
		})
	}
}

// BenchmarkAcks: a consumer that keeps up, without acknowledgements, acknowledging every
// 200 deliveries with AckThrough, and acknowledging each one with Ack.
func BenchmarkAcks(b *testing.B) {
	lines, total := benchLines(4096)
	for _, mode := range []string{"none", "through200", "each"} {
		b.Run(mode, func(b *testing.B) {
			src := make(chan []byte, 256)
			opts := []Option{WithSync(SyncNever)}
			if mode != "none" {
				opts = append(opts, WithAcks(4096))
			}
			c, err := New(b.TempDir(), src, Bytes, opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(total / int64(len(lines)))
			b.ReportAllocs()
			done := make(chan struct{})
			go func() {
				defer close(done)
				if mode == "none" {
					for range c.Out() {
					}
					return
				}
				n := 0
				for d := range c.Deliveries() {
					n++
					switch {
					case mode == "each":
						c.Ack(d.Seq)
					case n%200 == 0:
						c.AckThrough(d.Seq)
					}
				}
			}()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				src <- lines[i%len(lines)]
			}
			close(src)
			if mode == "through200" {
				// The last partial batch: acknowledge whatever is out.
				for {
					select {
					case <-done:
					case <-time.After(time.Millisecond):
						if s := c.Stats(); s.Unacked > 0 {
							c.AckThrough(uint64(s.Direct + s.Refilled + s.Unacked))
						}
						continue
					}
					break
				}
			}
			<-done
			b.StopTimer()
			b.ReportMetric(float64(c.Stats().Spilled)/float64(b.N), "spilled/op")
			if err := c.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkIdleAfterSpill: heap held per Chan that spilled 5,000 lines, drained them and
// went idle (compressor and decoder state released after a second without work).
func BenchmarkIdleAfterSpill(b *testing.B) {
	lines, _ := benchLines(5000)
	benchIdleHeap(b, 20, len(lines), idleRelease+500*time.Millisecond, func(j int) []byte { return lines[j] }, WithBuffer(100))
}

// BenchmarkOpenToFirst: New on a spool holding a backlog of 500k lines (the bench/
// restart phase's), to the first message received from Out. Each round takes one
// message, so the backlog barely moves.
func BenchmarkOpenToFirst(b *testing.B) {
	lines, _ := benchLines(4096)
	dir := benchBacklog(b, lines, 500_000)
	b.ReportAllocs()
	b.ResetTimer()
	var inNew time.Duration
	for i := 0; i < b.N; i++ {
		inNew += benchOpenToFirst(b, dir, WithSync(SyncNever))
	}
	b.ReportMetric(float64(inNew.Nanoseconds())/float64(b.N), "ns-in-New/op")
}

// benchOpenToFirst times New on dir and the first message from Out (the timer running),
// then closes the Chan with the timer stopped. It returns the time spent in New.
func benchOpenToFirst(b *testing.B, dir string, opts ...Option) time.Duration {
	src := make(chan []byte)
	t0 := time.Now()
	c, err := New(dir, src, Bytes, opts...)
	if err != nil {
		b.Fatal(err)
	}
	inNew := time.Since(t0)
	select {
	case <-c.Out():
	case <-time.After(10 * time.Second):
		b.Fatal("no first message within 10s")
	}
	b.StopTimer()
	close(src)
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	return inNew
}

// BenchmarkOpenToFirstAfterCrash: as BenchmarkOpenToFirst, on the image of a spool taken
// while its Chan was running (a SIGKILL's state): the newest segment, 85-100% full, has no
// meta file, so Open scans it and cuts its tail. One sub-benchmark per segment size; the
// newest segment's size is reported.
func BenchmarkOpenToFirstAfterCrash(b *testing.B) {
	lines, _ := benchLines(4096)
	for _, size := range []int64{2 << 20, 4 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("segment=%dMiB", size>>20), func(b *testing.B) {
			img, newest := benchCrashImage(b, lines, size)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "spool")
				if err := os.CopyFS(dir, os.DirFS(img)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				benchOpenToFirst(b, dir, WithSync(SyncNever), WithSegmentSize(size))
			}
			b.ReportMetric(float64(newest), "newest-bytes")
		})
	}
}

// benchCrashImage stores lines into a Chan with the given segment size until its newest
// segment is 85-100% full, and copies the directory while the Chan runs.
func benchCrashImage(b *testing.B, lines [][]byte, size int64) (string, int64) {
	dir := b.TempDir()
	src := make(chan []byte, 256)
	c, err := New(dir, src, Bytes, WithBuffer(0), WithSync(SyncNever), WithSegmentSize(size),
		WithLinger(time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sent := 0
	for {
		for range 1000 {
			src <- lines[sent%len(lines)]
			sent++
		}
		waitStored(c, int64(sent))
		names, err := os.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		var newest string
		for _, e := range names {
			if e.IsDir() && len(e.Name()) == 20 && e.Name() > newest {
				newest = e.Name()
			}
		}
		if newest == "" {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, newest, "00000000000000000001"))
		if err != nil || fi.Size() < size*85/100 {
			continue
		}
		img := filepath.Join(b.TempDir(), "img")
		for try := 0; ; try++ {
			os.RemoveAll(img)
			if err = os.CopyFS(img, os.DirFS(dir)); err == nil {
				return img, fi.Size()
			}
			if try == 5 {
				b.Fatal(err) // files a live spool removes (a seal's meta.tmp) may vanish mid-copy
			}
		}
	}
}
