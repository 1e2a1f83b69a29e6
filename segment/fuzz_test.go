package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
)

// fuzzReader and fuzzWriter live across fuzz calls, as a Reader and a Writer live across
// records in a spool: state left over from one input must not affect the next. Calls
// within one process are sequential; the mutex only guards against a future t.Parallel.
var (
	fuzzMu     sync.Mutex
	fuzzReader *Reader
	fuzzWriter *Writer
)

func fuzzState() (*Reader, *Writer, func()) {
	fuzzMu.Lock()
	if fuzzReader == nil {
		fuzzReader, fuzzWriter = NewReader(), NewWriter(4096)
	}
	return fuzzReader, fuzzWriter, fuzzMu.Unlock
}

// FuzzDecode checks Decode's contract on arbitrary input: an error wrapping ErrCorrupt, or
// a Batch whose every message can be read and whose sizes add up to the header's. No
// panic either way.
//
// Random bytes almost never carry a valid CRC, so each input is also decoded with its CRC
// recomputed: that lets the fuzzer reach the header field checks, zstd, S2 and the
// framing.
func FuzzDecode(f *testing.F) {
	golden, err := os.ReadFile(goldenPath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(golden)
	goldenS2, err := os.ReadFile(goldenPaths[S2])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(goldenS2)
	for _, comp := range comps {
		f.Add(encodeComp(f, comp, 1, [][]byte{[]byte("one")}))
		f.Add(encodeComp(f, comp, 2, [][]byte{{}}))
		f.Add(encodeComp(f, comp, 3, [][]byte{{}, []byte("a"), {}, []byte("bc"), {0, 0, 0, 0}}))
		f.Add(encodeComp(f, comp, 4, logBatch(600))) // seeds stay small: minimizing is quadratic in size
		f.Add(encodeComp(f, comp, 5, [][]byte{bytes.Repeat([]byte("repeat "), 500)}))
	}
	f.Add(handRecord(2, 9, 6, zstdFrame(f, append(items("abc"), 'x', 'y')))) // bad framing
	f.Add(handRecord(1, 7, 7, items("abc")))                                 // not zstd
	magic := []byte(s2Magic)
	f.Add(handRecordFlags(1, 2, 9, 6, cat(magic, s2Raw(append(items("abc"), 'x', 'y')))))                          // bad framing
	f.Add(handRecordFlags(1, 1, 7, 7, items("abc")))                                                               // not S2
	f.Add(handRecordFlags(1, 1, 7, 9, cat(magic, s2Raw(items("abc")), s2ChunkOf(0xfe, 0, nil))))                   // padding
	f.Add(handRecordFlags(1, 2, 13, 8, cat(magic, s2Raw(items("abc")[:5]), s2Compressed(items("abc", "de")[5:])))) // message across chunks
	f.Add(handRecordFlags(1, MaxCount, s2MaxChunk, 10, cat(magic, s2Compressed(make([]byte, s2MaxChunk)))))        // MaxCount empty messages
	f.Add(handRecordFlags(2, 1, 7, 11, cat(magic, s2Raw(items("abc")))))                                           // unknown flags
	f.Add(golden[:HeaderSize])
	f.Add([]byte{})
	f.Add([]byte("pc\x01\x00"))
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 23, 24, 25, 40, 100, 200} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		f.Add(b)
		if n >= 4 { // random bytes behind a valid-looking start
			f.Add(append([]byte("pc\x01\x00"), b...))
		}
	}

	f.Fuzz(func(t *testing.T, rec []byte) {
		r, _, unlock := fuzzState()
		defer unlock()
		checkDecode(t, r, rec)
		if len(rec) >= HeaderSize {
			checkDecode(t, r, seal(bytes.Clone(rec)))
		}
	})
}

func checkDecode(t *testing.T, r *Reader, rec []byte) {
	t.Helper()
	b, err := r.Decode(rec)
	h, verr := Verify(rec)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode error %q does not wrap ErrCorrupt", err)
		}
		if verr != nil && !errors.Is(verr, ErrCorrupt) {
			t.Fatalf("Verify error %q does not wrap ErrCorrupt", verr)
		}
		return
	}
	if verr != nil {
		t.Fatalf("Decode accepted a record that Verify rejects: %v", verr)
	}
	if h != b.Header {
		t.Fatalf("Decode header %+v, Verify header %+v", b.Header, h)
	}
	if b.Count < 1 || b.Count > MaxCount || b.RawLen > MaxRawSize || !b.Compression.valid() {
		t.Fatalf("Decode accepted header %+v", b.Header)
	}
	total := 0
	for i := range b.Count {
		total += len(b.Message(i))
	}
	if want := b.RawLen - lenSize*b.Count; total != want {
		t.Fatalf("messages add up to %d bytes, want RawLen %d - 4*Count %d = %d", total, b.RawLen, b.Count, want)
	}
}

// FuzzRoundTrip splits the fuzzer's bytes into messages, each one a uvarint length
// followed by that many bytes (clipped to what is left), writes them as a record with each
// compression and reads them back.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, int64(0))
	f.Add([]byte{0}, int64(1))
	f.Add([]byte{0, 0, 0}, int64(-1))
	f.Add([]byte("\x05hello\x00\x03\x00\xff\x01"), int64(1700000000123456789))
	f.Add(append([]byte{0xff, 0x07}, bytes.Repeat([]byte("abcdefgh"), 20)...), int64(42))
	var many []byte
	for _, m := range logBatch(500) {
		many = binary.AppendUvarint(many, uint64(len(m)))
		many = append(many, m...)
	}
	f.Add(many, int64(7))

	f.Fuzz(func(t *testing.T, data []byte, tm int64) {
		var msgs [][]byte
		for rest := data; len(rest) > 0; {
			n, k := binary.Uvarint(rest)
			if k <= 0 { // not a varint: the rest is one message
				msgs, rest = append(msgs, rest), nil
				continue
			}
			rest = rest[k:]
			n = min(n, uint64(len(rest)))
			msgs, rest = append(msgs, rest[:n]), rest[n:]
		}

		r, w, unlock := fuzzState()
		defer unlock()
		for _, comp := range comps {
			w.Reset()
			w.SetCompression(comp)
			w.SetTime(tm)
			for _, m := range msgs {
				if err := w.AddBytes(m); err != nil {
					t.Fatalf("AddBytes(%d bytes): %v", len(m), err)
				}
			}
			if w.Len() != len(msgs) || w.Size() != rawSize(msgs) {
				t.Fatalf("Len %d Size %d, want %d %d", w.Len(), w.Size(), len(msgs), rawSize(msgs))
			}
			rec := w.Record()
			if len(msgs) == 0 {
				if rec != nil {
					t.Fatalf("Record of an empty batch = %d bytes, want nil", len(rec))
				}
				return
			}
			b, err := r.Decode(rec)
			if err != nil {
				t.Fatalf("Decode of a Writer %v record: %v", comp, err)
			}
			if b.Compression != comp {
				t.Fatalf("Decode of a Writer %v record: Compression %v", comp, b.Compression)
			}
			checkBatch(t, b, tm, msgs)
		}
	})
}
