package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
)

// s2Stream compresses raw with the s2 package's own stream Writer, independent of
// Writer's.
func s2Stream(tb testing.TB, raw []byte, opts ...s2.WriterOption) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w := s2.NewWriter(&buf, append([]s2.WriterOption{s2.WriterConcurrency(1)}, opts...)...)
	if _, err := w.Write(raw); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// compress compresses raw as comp's payload, with the compression library's own encoder.
func compress(tb testing.TB, comp Compression, raw []byte) []byte {
	tb.Helper()
	if comp == S2 {
		return s2Stream(tb, raw)
	}
	return zstdFrame(tb, raw)
}

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// retained is what a Reader keeps allocated between records.
func (r *Reader) retained() int { return cap(r.raw) + 4*cap(r.offs) }

// decodeBound is the most one Decode may allocate, per the package doc: the payload and
// an index of 4 bytes per message, plus 1 MiB for the decompressor's own state.
const decodeBound = MaxRawSize + 4*(MaxCount+1) + 1<<20

var hostileRecords = map[Compression][]byte{}

// hostileRecord is a record of MaxRawSize/4 (16 Mi) empty messages: 64 MiB of zero
// length prefixes, which compress to a few KB, behind a valid CRC. Every field but the
// count is valid, and the payload is what the header says it is; only MaxCount makes it
// corrupt. A Reader that accepted it would hand out 16 Mi messages, which cost a consumer
// over a gigabyte.
func hostileRecord(tb testing.TB, comp Compression) []byte {
	tb.Helper()
	if rec, ok := hostileRecords[comp]; ok {
		return rec
	}
	rec := handRecordFlags(byte(comp), MaxRawSize/lenSize, MaxRawSize, 1, compress(tb, comp, make([]byte, MaxRawSize)))
	hostileRecords[comp] = rec
	return rec
}

// The record of millions of empty messages is refused as damage from its header, before
// anything is decompressed or allocated.
func TestHostileCount(t *testing.T) {
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) {
			rec := hostileRecord(t, comp)
			_, err := ParseHeader(rec)
			assertCorrupt(t, "ParseHeader", err)
			_, err = Verify(rec)
			assertCorrupt(t, "Verify", err)
			r := NewReader()
			defer r.Close()
			const runs = 10
			start := time.Now()
			alloc := allocated(func() {
				for range runs {
					_, err = decodeNoPanic(t, r, rec)
				}
			})
			elapsed := time.Since(start) / runs
			assertCorrupt(t, "Decode", err)
			t.Logf("%d-byte record claiming %d messages: %v in %v, %d bytes allocated per Decode",
				len(rec), MaxRawSize/lenSize, err, elapsed, alloc/runs)
			// Decompressing would take 64 MiB: a few hundred bytes for the error is all
			// a refusal from the header costs.
			if alloc/runs > 4<<10 {
				t.Errorf("Decode allocated %d bytes refusing the record: it got past the header", alloc/runs)
			}
			if r.retained() != 0 {
				t.Errorf("Reader keeps %d bytes after refusing the record", r.retained())
			}
		})
	}
}

// The control for TestHostileCount: the same construction with MaxCount messages decodes,
// so what refuses the hostile record is the limit, not the construction.
func TestMaxCountRecord(t *testing.T) {
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) {
			rec := handRecordFlags(byte(comp), MaxCount, MaxCount*lenSize, 1, compress(t, comp, make([]byte, MaxCount*lenSize)))
			r := NewReader()
			defer r.Close()
			b, err := r.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			if b.Count != MaxCount || len(b.Message(0)) != 0 || len(b.Message(MaxCount-1)) != 0 {
				t.Fatalf("decoded %d messages, want %d empty ones", b.Count, MaxCount)
			}
		})
	}
}

// A Writer never builds a record beyond MaxCount: the message after the MaxCount-th is
// refused with ErrTooLarge, without calling encode, and the batch is left as it was.
func TestAddMaxCount(t *testing.T) {
	w := NewWriter(1024)
	defer w.Close()
	for i := range MaxCount {
		if err := w.AddBytes(nil); err != nil {
			t.Fatalf("AddBytes #%d: %v", i+1, err)
		}
	}
	called := false
	n, err := w.Add(func(dst []byte) ([]byte, error) { called = true; return append(dst, 'x'), nil })
	if !errors.Is(err, ErrTooLarge) || n != 0 {
		t.Fatalf("Add of message %d = %d, %v; want 0, ErrTooLarge", MaxCount+1, n, err)
	}
	if called {
		t.Error("Add called encode for a message the batch has no room for")
	}
	if w.Len() != MaxCount || w.Size() != MaxCount*lenSize {
		t.Fatalf("after ErrTooLarge: Len %d Size %d, want %d %d", w.Len(), w.Size(), MaxCount, MaxCount*lenSize)
	}
	r := NewReader()
	defer r.Close()
	for _, comp := range comps {
		w.SetCompression(comp)
		b, err := r.Decode(w.Record())
		if err != nil {
			t.Fatalf("%v: Decode of a MaxCount batch: %v", comp, err)
		}
		if b.Count != MaxCount {
			t.Fatalf("%v: Count = %d, want %d", comp, b.Count, MaxCount)
		}
	}
	w.Reset()
	if err := w.AddBytes([]byte("after")); err != nil {
		t.Fatalf("AddBytes after Reset: %v", err)
	}
}

// The package doc promises that decoding one record never allocates more than about
// MaxRawSize + 4×MaxCount bytes. The worst legal record has both: MaxCount messages (all
// empty but one) that fill MaxRawSize. Decode needs the raw buffer plus an index of 4
// bytes per message, and nothing more.
//
// Regression test: Decode's offset index was an []int grown by append, so a record of
// empty messages made it allocate 12.5 × MaxRawSize.
func TestDecodeMemoryBound(t *testing.T) {
	skipHuge(t)
	raw := make([]byte, MaxRawSize)
	last := (MaxCount - 1) * lenSize
	binary.LittleEndian.PutUint32(raw[last:], uint32(MaxRawSize-last-lenSize))
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) {
			rec := handRecordFlags(byte(comp), MaxCount, MaxRawSize, 0, compress(t, comp, raw))
			r := NewReader()
			defer r.Close()
			var b Batch
			var err error
			alloc := allocated(func() { b, err = r.Decode(rec) })
			if err != nil {
				t.Fatal(err)
			}
			if b.Count != MaxCount || len(b.Message(MaxCount-1)) != MaxRawSize-last-lenSize {
				t.Fatalf("Count = %d, want %d", b.Count, MaxCount)
			}
			t.Logf("decoding a %d-byte record of %d messages, %d bytes, allocated %d MiB",
				len(rec), MaxCount, MaxRawSize, alloc>>20)
			if alloc > decodeBound {
				t.Errorf("Decode allocated %d bytes (%.2f × MaxRawSize), the bound is %d", alloc, float64(alloc)/MaxRawSize, decodeBound)
			}
			// A second record of the same size reuses the buffers.
			if alloc := allocated(func() { _, err = r.Decode(rec) }); err != nil || alloc > 1<<20 {
				t.Errorf("second Decode: %v, allocated %d bytes", err, alloc)
			}
		})
	}
}

// rleFrame is a zstd frame, by hand, that declares n bytes (a multiple of 128 KiB) and
// holds them as RLE blocks of b, with a wrong content checksum: it passes every check
// made before decompression and fails only after decompressing n bytes.
func rleFrame(n int, b byte) []byte {
	p := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe4} // magic; 8-byte FCS, single segment, checksum
	p = binary.LittleEndian.AppendUint64(p, uint64(n))
	const block = 128 << 10
	for i := 0; i < n; i += block {
		h := uint32(block)<<3 | 1<<1 // RLE
		if i+block >= n {
			h |= 1 // last
		}
		p = append(p, byte(h), byte(h>>8), byte(h>>16), b)
	}
	return append(p, 0, 0, 0, 0)
}

// A Reader fed damaged and hostile records stays within its bounds: those that the header
// or the payload's structure give away cost (almost) nothing; one that must be
// decompressed to be found out costs at most its raw length, which the Reader does not
// keep afterwards; and it keeps decoding good records.
func TestReaderMemoryBounded(t *testing.T) {
	abc := items("abc")
	noFCS := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58} // magic; checksum, no FCS; 2 MiB window
	noFCS = append(noFCS, byte(len(abc)<<3|1), 0, 0)    // last raw block
	noFCS = append(append(noFCS, abc...), 1, 2, 3, 4)
	var big [][]byte // 3 MiB of log lines: more than a failed Decode lets the Reader keep
	for rawSize(big) < 3<<20 {
		big = append(big, logBatch(64<<10)...)
	}
	small := [][]byte{[]byte("small")}

	type step struct {
		name  string
		rec   func(t *testing.T) []byte
		msgs  [][]byte // nil: must fail with ErrCorrupt
		alloc uint64   // the most Decode may allocate
	}
	const little = 16 << 10 // an error message, no buffers
	steps := []step{
		{"small", func(t *testing.T) []byte { return encode(t, 1, small) }, small, 1 << 20},
		{"16 Mi messages, zstd", func(t *testing.T) []byte { return hostileRecord(t, Zstd) }, nil, little},
		{"16 Mi messages, s2", func(t *testing.T) []byte { return hostileRecord(t, S2) }, nil, little},
		{"zstd frame declares less than rawLen", func(t *testing.T) []byte {
			return handRecord(1, MaxRawSize, 1, zstdFrame(t, abc))
		}, nil, little},
		{"zstd frame without content size, blocks too small for rawLen", func(t *testing.T) []byte {
			return handRecord(1, MaxRawSize, 1, noFCS)
		}, nil, little},
		{"s2 chunks too small for rawLen", func(t *testing.T) []byte {
			return handRecordFlags(1, 1, MaxRawSize, 1, s2Stream(t, abc))
		}, nil, little},
		{"small again", func(t *testing.T) []byte { return encode(t, 1, small) }, small, little},
		{"3 MiB", func(t *testing.T) []byte { return encodeComp(t, S2, 1, big) }, big, 3<<20 + 4*uint64(len(big)) + 1<<20},
		// Found out only by decompressing: allocates the raw length, then lets it go.
		{"zstd 64 MiB of RLE blocks, bad checksum", func(t *testing.T) []byte {
			return handRecord(1, MaxRawSize, 1, rleFrame(MaxRawSize, 0xff))
		}, nil, MaxRawSize + 1<<20},
		{"small after damage", func(t *testing.T) []byte { return encodeComp(t, S2, 1, small) }, small, 1 << 20},
	}
	r := NewReader()
	defer r.Close()
	for i, s := range steps {
		rec := s.rec(t)
		var b Batch
		var err error
		alloc := allocated(func() { b, err = decodeNoPanic(t, r, rec) })
		what := fmt.Sprintf("step %d (%s)", i, s.name)
		t.Logf("%s: %d-byte record, Decode allocated %d bytes, Reader keeps %d; %v", what, len(rec), alloc, r.retained(), err)
		if s.msgs == nil {
			assertCorrupt(t, what, err)
			if r.retained() > keepAfterError {
				t.Errorf("%s: after the error the Reader keeps %d bytes", what, r.retained())
			}
		} else {
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			checkBatch(t, b, 1, s.msgs)
		}
		if alloc > s.alloc {
			t.Errorf("%s: Decode allocated %d bytes, want at most %d", what, alloc, s.alloc)
		}
		if r.retained() > decodeBound {
			t.Errorf("%s: Reader keeps %d bytes, above the bound %d", what, r.retained(), decodeBound)
		}
	}
}
