package loggen

import (
	"bytes"
	"testing"
)

func TestLinesAreDeterministicSizedAndCarryTheirID(t *testing.T) {
	a, b := New(7), New(7)
	var total int
	for id := uint64(0); id < 20000; id++ {
		la, lb := a.Append(nil, id), b.Append(nil, id)
		if !bytes.Equal(la, lb) {
			t.Fatalf("line %d differs between two generators with one seed:\n%s\n%s", id, la, lb)
		}
		if len(la) < 100 || len(la) > 300 {
			t.Fatalf("line %d is %d bytes: %s", id, len(la), la)
		}
		got, ok := ID(la)
		if !ok || got != id {
			t.Fatalf("ID(line %d) = %d, %v: %s", id, got, ok, la)
		}
		total += len(la)
	}
	if avg := total / 20000; avg < 150 || avg > 250 {
		t.Errorf("average line length %d, want about 200", avg)
	}
	if _, ok := ID([]byte("no id here")); ok {
		t.Error("ID found an id in a line without one")
	}
}

func BenchmarkAppend(b *testing.B) {
	g := New(1)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = g.Append(buf[:0], uint64(i))
	}
	b.SetBytes(int64(len(buf)))
}
