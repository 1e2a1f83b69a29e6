package spool

import (
	"fmt"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// BenchmarkOpenBacklog measures Open (to the first record read) with a backlog of many
// sealed segments: the cost that must not grow much with the backlog.
func BenchmarkOpenBacklog(b *testing.B) {
	w := segment.NewWriter(4 << 10)
	for i := 0; i < 50; i++ {
		w.AddBytes([]byte(fmt.Sprintf("a log line of some length, number %d, padded out a bit", i)))
	}
	rec := append([]byte(nil), w.Record()...)
	for _, n := range []int{100, 1000, 3000} {
		dir := b.TempDir()
		s, err := Open(dir, Options{SegmentSize: int64(len(rec)), NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if _, err := s.Append(rec); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprint("segments=", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s, err := Open(dir, Options{NoSync: true})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.Next(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
		})
	}
}
