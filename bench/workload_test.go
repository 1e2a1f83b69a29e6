package main

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestWorkloadDeterministic(t *testing.T) {
	a, b := newWorkload(1), newWorkload(1)
	for i := 0; i < 3*poolSize; i++ {
		ma, mb := a.msg(i), b.msg(i)
		if !bytes.Equal(ma, mb) {
			t.Fatalf("message %d differs between two workloads with the same seed", i)
		}
		if len(ma) < minLen || len(ma) > maxLen {
			t.Fatalf("message %d is %d bytes, want %d-%d: %q", i, len(ma), minLen, maxLen, ma)
		}
	}
}

func TestCheckerFindsLossAndDuplicates(t *testing.T) {
	w := newWorkload(1)
	c := newChecker(w, 10, false)
	for i := range 10 {
		c.add(w.msg(i))
	}
	if err := c.verify(0, 10); err != nil {
		t.Fatal(err)
	}
	c = newChecker(w, 10, false)
	for i := range 9 {
		c.add(w.msg(i))
	}
	c.add(w.msg(3))
	if err := c.verify(0, 10); err == nil {
		t.Fatal("a lost and a duplicated message went unnoticed")
	}
	c = newChecker(w, 10, true)
	c.add(w.msg(1))
	c.add(w.msg(0))
	if err := c.verify(0, 2); err == nil {
		t.Fatal("messages out of order went unnoticed in a FIFO check")
	}
	c = newChecker(w, 10, false)
	m := w.msg(0)
	m[len(m)-1] ^= 1
	c.add(m)
	if err := c.verify(0, 1); err == nil {
		t.Fatal("a damaged message went unnoticed")
	}
}

// TestWorkloadCompresses reports how well the lines compress in 64 KiB batches with zstd's
// fastest level, the way pelichan spills them; log text should give about 4x.
func TestWorkloadCompresses(t *testing.T) {
	w := newWorkload(1)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var raw, packed int
	var batch, out []byte
	for i := 0; i < 100_000; i++ {
		batch = append(batch, w.msg(i)...)
		if len(batch) >= 64<<10 {
			out = enc.EncodeAll(batch, out[:0])
			raw, packed = raw+len(batch), packed+len(out)
			batch = batch[:0]
		}
	}
	ratio := float64(raw) / float64(packed)
	t.Logf("zstd fastest, 64 KiB batches: %.2fx (%d -> %d bytes), mean line %.0f bytes", ratio, raw, packed, float64(w.payload(0, 100_000))/100_000)
	if ratio < 2.5 || ratio > 8 {
		t.Errorf("compression ratio %.2f is not like log text (want about 4x)", ratio)
	}
}

func TestWorkerParsesEveryField(t *testing.T) {
	w := newWorkload(1)
	var scratch []byte
	for i := range 3 * poolSize {
		m := w.msgCopy(i, &scratch)
		if !bytes.Equal(m, w.msg(i)) {
			t.Fatalf("msgCopy(%d) = %q, want %q", i, m, w.msg(i))
		}
		wk := newWorker()
		wk.do(m)
		if wk.sum == 0 {
			t.Fatalf("no work done on %q", m)
		}
	}
}

func BenchmarkWorker(b *testing.B) {
	w := newWorkload(1)
	wk := newWorker()
	var n int64
	for i := 0; b.Loop(); i++ {
		m := w.pool[i%poolSize]
		n += int64(len(m))
		wk.do(m)
	}
	b.SetBytes(n / int64(b.N))
}
