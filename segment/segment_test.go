package segment

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pelichan/pelichan/internal/race"
)

// Regenerate the golden files with: go test ./segment -run TestGolden -update
// (the package must come before -update, or go test passes it to the test binary).
// -run 'TestGolden/s2' -update rewrites only the S2 one.
var update = flag.Bool("update", false, "rewrite testdata/golden*.rec from the golden batch")

// The golden file of each compression.
var goldenPaths = map[Compression]string{
	Zstd: "testdata/golden.rec",
	S2:   "testdata/golden_s2.rec",
}

const goldenPath = "testdata/golden.rec"

// comps lists every compression, for tests that run once per compression.
var comps = []Compression{Zstd, S2}

// The golden batch: fixed messages and time stamp. Changing them changes the golden file.
var (
	goldenTime = int64(1700000000123456789) // 2023-11-14T22:13:20.123456789Z
	goldenMsgs = [][]byte{
		[]byte("hello, pelichan"),
		{}, // an empty message
		{0x00, 0xff, 0x01, 0xfe, 'p', 'c', 0x00},
	}
)

// goldenRecord encodes the golden batch with a fresh Writer.
func goldenRecord(tb testing.TB, comp Compression) []byte {
	tb.Helper()
	w := NewWriter(4096)
	defer w.Close()
	w.SetCompression(comp)
	w.SetTime(goldenTime)
	for _, m := range goldenMsgs {
		if err := w.AddBytes(m); err != nil {
			tb.Fatalf("AddBytes: %v", err)
		}
	}
	return bytes.Clone(w.Record())
}

// encode builds one record from msgs with a fresh Writer.
func encode(tb testing.TB, t int64, msgs [][]byte) []byte {
	tb.Helper()
	return encodeSize(tb, 64<<10, t, msgs)
}

// encodeSize is encode with a Writer made by NewWriter(batchSize). The batch size sets the
// zstd window, so it is part of what makes the output reproducible.
func encodeSize(tb testing.TB, batchSize int, t int64, msgs [][]byte) []byte {
	tb.Helper()
	return encodeWith(tb, Zstd, batchSize, t, msgs)
}

// encodeComp is encode with compression comp.
func encodeComp(tb testing.TB, comp Compression, t int64, msgs [][]byte) []byte {
	tb.Helper()
	return encodeWith(tb, comp, 64<<10, t, msgs)
}

// encodeWith builds one record from msgs with a fresh Writer made by NewWriter(batchSize)
// and set to compression comp.
func encodeWith(tb testing.TB, comp Compression, batchSize int, t int64, msgs [][]byte) []byte {
	tb.Helper()
	w := NewWriter(batchSize)
	defer w.Close()
	w.SetCompression(comp)
	w.SetTime(t)
	for i, m := range msgs {
		if err := w.AddBytes(m); err != nil {
			tb.Fatalf("AddBytes(message %d): %v", i, err)
		}
	}
	return bytes.Clone(w.Record())
}

// zstdFrame compresses raw with an encoder independent of Writer's.
func zstdFrame(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(raw, nil)
}

// seal writes a correct CRC into rec's header, in place, and returns rec.
func seal(rec []byte) []byte {
	crc := crc32.Update(crc32.Checksum(rec[:20], castagnoli), castagnoli, rec[HeaderSize:])
	binary.LittleEndian.PutUint32(rec[20:], crc)
	return rec
}

// handRecord builds a CRC-valid record around an arbitrary zstd payload, computing the
// CRC-32C itself (with its own table) rather than through seal or Writer.
func handRecord(count, rawLen uint32, t int64, payload []byte) []byte {
	return handRecordFlags(0, count, rawLen, t, payload)
}

// handRecordFlags is handRecord with the given flags byte (1: S2).
func handRecordFlags(flags byte, count, rawLen uint32, t int64, payload []byte) []byte {
	rec := make([]byte, HeaderSize, HeaderSize+len(payload))
	rec[0], rec[1], rec[2], rec[3] = 'p', 'c', 1, flags
	binary.LittleEndian.PutUint32(rec[4:], count)
	binary.LittleEndian.PutUint32(rec[8:], rawLen)
	binary.LittleEndian.PutUint64(rec[12:], uint64(t))
	rec = append(rec, payload...)
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Checksum(rec[:20], tab), tab, rec[HeaderSize:])
	binary.LittleEndian.PutUint32(rec[20:], crc)
	return rec
}

// items builds a payload of length-prefixed messages.
func items(msgs ...string) []byte {
	var raw []byte
	for _, m := range msgs {
		raw = binary.LittleEndian.AppendUint32(raw, uint32(len(m)))
		raw = append(raw, m...)
	}
	return raw
}

func rawSize(msgs [][]byte) int {
	n := 0
	for _, m := range msgs {
		n += lenSize + len(m)
	}
	return n
}

// checkBatch asserts that b holds exactly msgs with time stamp tm.
func checkBatch(t *testing.T, b Batch, tm int64, msgs [][]byte) {
	t.Helper()
	if b.Count != len(msgs) {
		t.Fatalf("Count = %d, want %d", b.Count, len(msgs))
	}
	if want := rawSize(msgs); b.RawLen != want {
		t.Errorf("RawLen = %d, want %d", b.RawLen, want)
	}
	if b.Time != tm {
		t.Errorf("Time = %d, want %d", b.Time, tm)
	}
	for i, m := range msgs {
		if got := b.Message(i); !bytes.Equal(got, m) {
			t.Errorf("Message(%d) = %q (len %d), want %q (len %d)", i, trim(got), len(got), trim(m), len(m))
		}
	}
}

func trim(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// assertCorrupt fails unless err wraps ErrCorrupt.
func assertCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want one wrapping ErrCorrupt", what)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error %q does not wrap ErrCorrupt", what, err)
	}
}

// decodeNoPanic runs r.Decode and turns a panic into a test failure.
func decodeNoPanic(t *testing.T, r *Reader, rec []byte) (b Batch, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Decode panicked on %d-byte record: %v", len(rec), p)
		}
	}()
	return r.Decode(rec)
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	varied := [][]byte{}
	for _, n := range []int{0, 1, 3, 4, 5, 100, 1000, 4095, 4096, 4097, 20000} {
		varied = append(varied, randBytes(n))
	}
	logs := newLogGen(1)
	near64K := [][]byte{}
	for rawSize(near64K) < 64<<10-300 {
		near64K = append(near64K, logs.line())
	}
	many := make([][]byte, 1000)
	for i := range many {
		many[i] = fmt.Appendf(nil, "message %d", i)
	}
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}

	tests := []struct {
		name string
		time int64
		msgs [][]byte
	}{
		{"one", 1, [][]byte{[]byte("hello")}},
		{"many", 2, many},
		{"one empty", 3, [][]byte{{}}},
		{"only empty", 4, [][]byte{{}, {}, {}, {}, {}}},
		{"empty between", 5, [][]byte{{}, []byte("a"), {}, []byte("bc"), {}}},
		{"varied sizes", 6, varied},
		{"near 64 KiB", 7, near64K},
		{"binary", 8, [][]byte{allBytes, {0, 0, 0, 0}, {0xff, 0xff, 0xff, 0xff}, []byte("pc\x01\x00")}},
		{"incompressible", 9, [][]byte{randBytes(70000)}},
		{"time zero", 0, [][]byte{[]byte("t0")}},
		{"time negative", -1, [][]byte{[]byte("before 1970")}},
		{"time max", 1<<63 - 1, [][]byte{[]byte("far future")}},
	}
	r := NewReader()
	defer r.Close()
	for _, comp := range comps {
		for _, tt := range tests {
			t.Run(comp.String()+"/"+tt.name, func(t *testing.T) {
				rec := encodeComp(t, comp, tt.time, tt.msgs)
				if rec[0] != Magic0 || rec[1] != Magic1 || rec[2] != Version || rec[3] != byte(comp) {
					t.Fatalf("header starts % x", rec[:4])
				}
				h, err := Verify(rec)
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				want := Header{Count: len(tt.msgs), RawLen: rawSize(tt.msgs), Time: tt.time, Compression: comp}
				if h != want {
					t.Fatalf("Verify header = %+v, want %+v", h, want)
				}
				b, err := r.Decode(rec)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if b.Compression != comp {
					t.Errorf("Batch.Compression = %v, want %v", b.Compression, comp)
				}
				checkBatch(t, b, tt.time, tt.msgs)
			})
		}
	}
}

func TestWriterCounters(t *testing.T) {
	w := NewWriter(1024)
	defer w.Close()
	if w.Len() != 0 || w.Size() != 0 {
		t.Fatalf("new writer: Len %d Size %d, want 0 0", w.Len(), w.Size())
	}
	if rec := w.Record(); rec != nil {
		t.Fatalf("Record on empty batch = %d bytes, want nil", len(rec))
	}
	n, err := w.Add(func(dst []byte) ([]byte, error) { return append(dst, "abc"...), nil })
	if err != nil || n != 3 {
		t.Fatalf("Add = %d, %v; want 3, nil", n, err)
	}
	if err := w.AddBytes(nil); err != nil {
		t.Fatal(err)
	}
	if w.Len() != 2 || w.Size() != 2*lenSize+3 {
		t.Fatalf("Len %d Size %d, want 2 %d", w.Len(), w.Size(), 2*lenSize+3)
	}
	w.Reset()
	if w.Len() != 0 || w.Size() != 0 || w.Record() != nil {
		t.Fatalf("after Reset: Len %d Size %d, want an empty batch", w.Len(), w.Size())
	}
}

// A Writer reused across Reset must not leak messages, counts or time stamps from one
// record into the next, whatever the sizes.
func TestWriterReuse(t *testing.T) {
	logs := newLogGen(3)
	w := NewWriter(4096)
	defer w.Close()
	r := NewReader()
	defer r.Close()
	batches := [][][]byte{
		{[]byte("first"), []byte("batch")},
		{bytes.Repeat([]byte("big "), 30000)}, // outgrows the initial buffers
		{[]byte("x")},
		{{}, {}},
		{logs.line(), logs.line(), logs.line()},
	}
	var recs [][]byte
	for i, msgs := range batches {
		w.Reset()
		if i%2 == 0 { // odd batches check that Reset cleared the previous time stamp
			w.SetTime(int64(1000 + i))
		}
		for _, m := range msgs {
			if err := w.AddBytes(m); err != nil {
				t.Fatal(err)
			}
		}
		rec := w.Record()
		if !bytes.Equal(rec, encodeSize(t, 4096, timeOf(i), msgs)) {
			t.Errorf("batch %d: reused writer's record differs from a fresh writer's", i)
		}
		recs = append(recs, bytes.Clone(rec))
	}
	for i, rec := range recs {
		b, err := r.Decode(rec)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		checkBatch(t, b, timeOf(i), batches[i])
	}
}

func timeOf(i int) int64 {
	if i%2 == 0 {
		return int64(1000 + i)
	}
	return 0
}

// Record twice without Reset returns the same record; adding after Record extends the
// batch.
func TestWriterRecordTwice(t *testing.T) {
	w := NewWriter(1024)
	defer w.Close()
	_ = w.AddBytes([]byte("a"))
	first := bytes.Clone(w.Record())
	if second := w.Record(); !bytes.Equal(first, second) {
		t.Fatal("second Record differs from the first")
	}
	_ = w.AddBytes([]byte("b"))
	r := NewReader()
	defer r.Close()
	b, err := r.Decode(w.Record())
	if err != nil {
		t.Fatal(err)
	}
	checkBatch(t, b, 0, [][]byte{[]byte("a"), []byte("b")})
}

// One Reader decodes records of different sizes in any order, including after a failed
// Decode.
func TestReaderReuse(t *testing.T) {
	logs := newLogGen(5)
	var big [][]byte
	for range 500 {
		big = append(big, logs.line())
	}
	small := [][]byte{[]byte("s1"), {}, []byte("s3")}
	one := [][]byte{[]byte("only")}
	recBig, recSmall, recOne := encode(t, 10, big), encode(t, 20, small), encode(t, 30, one)
	bad := bytes.Clone(recSmall)
	bad[len(bad)-1] ^= 1

	r := NewReader()
	defer r.Close()
	steps := []struct {
		rec  []byte
		time int64
		msgs [][]byte
	}{
		{recSmall, 20, small},
		{recBig, 10, big},
		{recOne, 30, one},
		{bad, 0, nil},
		{recSmall, 20, small},
		{recBig, 10, big},
		{recBig, 10, big},
		{recOne, 30, one},
	}
	for i, s := range steps {
		b, err := r.Decode(s.rec)
		if s.msgs == nil {
			assertCorrupt(t, fmt.Sprintf("step %d", i), err)
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		checkBatch(t, b, s.time, s.msgs)
	}
}

// DecodeOwned's messages (the slices Message returns) are the caller's: they stay as decoded through every later
// Decode and DecodeOwned on the same Reader (of either compression, and after an error),
// and through the caller overwriting the record.
func TestDecodeOwnedKeepsMessages(t *testing.T) {
	logs := newLogGen(7)
	var big [][]byte
	for range 400 {
		big = append(big, logs.line())
	}
	small := [][]byte{[]byte("s1"), {}, []byte("s3")}
	bad := encode(t, 3, small)
	bad[len(bad)-1] ^= 1
	r := NewReader()
	defer r.Close()
	var got [][][]byte // each record's messages, taken from the Batch at once
	for i, comp := range []Compression{Zstd, S2, Zstd, S2} {
		rec := encodeComp(t, comp, int64(i), big)
		b, err := r.DecodeOwned(rec)
		if err != nil {
			t.Fatalf("record %d (%v): %v", i, comp, err)
		}
		checkBatch(t, b, int64(i), big)
		msgs := make([][]byte, b.Count)
		for j := range msgs {
			msgs[j] = b.Message(j)
		}
		got = append(got, msgs)
		clear(rec)
		// Reuse the Reader's own buffer in between: it must not be an owned one.
		if _, err := r.Decode(encodeComp(t, comp, 9, small)); err != nil {
			t.Fatal(err)
		}
		if _, err := r.DecodeOwned(bad); err == nil {
			t.Fatal("DecodeOwned of a damaged record: no error")
		}
	}
	for i, msgs := range got {
		for j, m := range msgs {
			if !bytes.Equal(m, big[j]) {
				t.Fatalf("record %d message %d changed to %q after later decodes", i, j, trim(m))
			}
		}
	}
}

// Decode must not keep pointers into rec: the Batch stays intact when the caller
// overwrites the record buffer.
func TestBatchIndependentOfRecord(t *testing.T) {
	msgs := [][]byte{[]byte("alpha"), []byte("beta")}
	rec := encode(t, 1, msgs)
	r := NewReader()
	defer r.Close()
	b, err := r.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rec {
		rec[i] = 0xAA
	}
	checkBatch(t, b, 1, msgs)
}

func TestGolden(t *testing.T) {
	// The header's first 20 bytes do not depend on the compressor's output: check them
	// against a literal, so a drift of the frozen layout is caught even if a golden file is
	// regenerated. Only the flags byte differs between the compressions.
	wantHeads := map[Compression]string{
		Zstd: "7063" + "01" + "00" + "03000000" + "22000000" + "15cd853dfe9c9717",
		S2:   "7063" + "01" + "01" + "03000000" + "22000000" + "15cd853dfe9c9717",
	}
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) {
			path := goldenPaths[comp]
			rec := goldenRecord(t, comp)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, rec, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s (%d bytes)", path, len(rec))
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with: go test ./segment -run TestGolden -update)", err)
			}

			wantHead, _ := hex.DecodeString(wantHeads[comp])
			if !bytes.Equal(golden[:20], wantHead) {
				t.Errorf("golden header bytes 0..20 = % x, want % x", golden[:20], wantHead)
			}

			if !bytes.Equal(rec, golden) {
				t.Errorf("Writer output differs from %s:\n got  %x\n want %x\n(if the %v library changed "+
					"its output, check that the old file still decodes, then run -update)", path, rec, golden, comp)
			}

			r := NewReader()
			defer r.Close()
			b, err := r.Decode(golden)
			if err != nil {
				t.Fatalf("decode %s: %v", path, err)
			}
			if b.Compression != comp {
				t.Errorf("decode %s: Compression = %v, want %v", path, b.Compression, comp)
			}
			checkBatch(t, b, goldenTime, goldenMsgs)
		})
	}
}

func TestTruncated(t *testing.T) {
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) { testTruncated(t, comp) })
	}
}

func testTruncated(t *testing.T, comp Compression) {
	rec := encodeComp(t, comp, 42, [][]byte{[]byte("one"), []byte("two"), {}, []byte("four")})
	r := NewReader()
	defer r.Close()
	for n := 0; n < len(rec); n++ {
		short := make([]byte, n) // exact capacity: nothing past n is reachable, even by reslicing
		copy(short, rec)
		_, err := decodeNoPanic(t, r, short)
		assertCorrupt(t, fmt.Sprintf("Decode of first %d of %d bytes", n, len(rec)), err)
		_, err = Verify(short)
		assertCorrupt(t, fmt.Sprintf("Verify of first %d of %d bytes", n, len(rec)), err)
	}
	// Trailing garbage is no better than a missing tail.
	for _, tail := range [][]byte{{0}, []byte("pc"), rec} {
		long := append(bytes.Clone(rec), tail...)
		_, err := decodeNoPanic(t, r, long)
		assertCorrupt(t, fmt.Sprintf("Decode with %d trailing bytes", len(tail)), err)
	}
}

func TestHeaderDamage(t *testing.T) {
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) { testHeaderDamage(t, comp) })
	}
}

func testHeaderDamage(t *testing.T, comp Compression) {
	msgs := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	good := encodeComp(t, comp, 7, msgs)
	put32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	raw := uint32(rawSize(msgs))
	tests := []struct {
		name string
		// header: ParseHeader alone must refuse it; otherwise only the payload shows the lie.
		header bool
		damage func([]byte)
	}{
		{"magic byte 0", true, func(b []byte) { b[0] = 'P' }},
		{"magic byte 1", true, func(b []byte) { b[1] = 'C' }},
		{"magic swapped", true, func(b []byte) { b[0], b[1] = b[1], b[0] }},
		{"version 0", true, func(b []byte) { b[2] = 0 }},
		{"version 2", true, func(b []byte) { b[2] = 2 }},
		{"version 255", true, func(b []byte) { b[2] = 255 }},
		{"flags: the other compression", false, func(b []byte) { b[3] ^= 1 }},
		{"flags 2", true, func(b []byte) { b[3] = 2 }},
		{"flags 3", true, func(b []byte) { b[3] = 3 }},
		{"flags 0x80", true, func(b []byte) { b[3] = 0x80 }},
		{"flags 0x81", true, func(b []byte) { b[3] = 0x81 }},
		{"flags 0xff", true, func(b []byte) { b[3] = 0xff }},
		{"count 0", true, put32(4, 0)},
		{"count +1", false, put32(4, 4)},
		{"count -1", false, put32(4, 2)},
		{"count max", true, put32(4, 1<<32-1)},
		{"count rawLen/4", false, put32(4, raw/4)},
		{"rawLen 0", true, put32(8, 0)},
		{"rawLen +1", false, put32(8, raw+1)},
		{"rawLen -1", false, put32(8, raw-1)},
		{"rawLen below 4*count", true, put32(8, 4*3-1)},
		{"rawLen MaxRawSize", false, put32(8, MaxRawSize)},
		{"rawLen MaxRawSize+1", true, put32(8, MaxRawSize+1)},
		{"rawLen max", true, put32(8, 1<<32-1)},
		// With a 32-bit int these wrap to Count -1, RawLen -1, which passes a signed check.
		{"count max, rawLen max", true, func(b []byte) { put32(4, 1<<32-1)(b); put32(8, 1<<32-1)(b) }},
		{"count 2^31, rawLen 2^31", true, func(b []byte) { put32(4, 1<<31)(b); put32(8, 1<<31)(b) }},
		{"count 2^30, rawLen 8", true, func(b []byte) { put32(4, 1<<30)(b); put32(8, 8)(b) }},
		// The format limits: MaxCount messages fit a header, one more does not.
		{"count MaxCount", false, func(b []byte) { put32(4, MaxCount)(b); put32(8, 4*MaxCount)(b) }},
		{"count MaxCount+1", true, func(b []byte) { put32(4, MaxCount+1)(b); put32(8, 4*MaxCount+4)(b) }},
		{"count MaxRawSize/4", true, func(b []byte) { put32(4, MaxRawSize/4)(b); put32(8, MaxRawSize)(b) }},
	}
	r := NewReader()
	defer r.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// As found on disk: the CRC no longer matches.
			rec := bytes.Clone(good)
			tt.damage(rec)
			_, err := decodeNoPanic(t, r, rec)
			assertCorrupt(t, "Decode, stale CRC", err)
			// As crafted: the CRC matches the damaged header, so the field checks must catch it.
			seal(rec)
			_, err = decodeNoPanic(t, r, rec)
			assertCorrupt(t, "Decode, resealed CRC", err)
			if tt.header {
				h, err := ParseHeader(rec)
				assertCorrupt(t, fmt.Sprintf("ParseHeader (returned %+v)", h), err)
				h, err = Verify(rec)
				assertCorrupt(t, fmt.Sprintf("Verify, resealed CRC (returned %+v)", h), err)
			}
			// The reader still works afterwards.
			b, err := r.Decode(good)
			if err != nil {
				t.Fatalf("Decode(good) after damage: %v", err)
			}
			checkBatch(t, b, 7, msgs)
		})
	}
	t.Run("flags keep their compression", func(t *testing.T) {
		h, err := Verify(good)
		if err != nil || h.Compression != comp {
			t.Fatalf("Verify = %+v, %v; want Compression %v", h, err, comp)
		}
	})
	t.Run("crc", func(t *testing.T) {
		rec := bytes.Clone(good)
		rec[20] ^= 0xff
		_, err := decodeNoPanic(t, r, rec)
		assertCorrupt(t, "Decode", err)
		if _, err := ParseHeader(rec); err != nil {
			t.Errorf("ParseHeader checks the CRC, but it is documented not to: %v", err)
		}
	})
	t.Run("time", func(t *testing.T) {
		// Every time stamp is valid, but not a changed one under the old CRC.
		rec := bytes.Clone(good)
		rec[12] ^= 1
		_, err := decodeNoPanic(t, r, rec)
		assertCorrupt(t, "Decode, stale CRC", err)
		seal(rec)
		b, err := r.Decode(rec)
		if err != nil {
			t.Fatalf("Decode, resealed: %v", err)
		}
		checkBatch(t, b, 7^1, msgs)
	})
}

// CRC-32C detects every single-bit error, so every flip anywhere must be reported.
func TestBitFlips(t *testing.T) {
	for _, comp := range comps {
		t.Run(comp.String(), func(t *testing.T) { testBitFlips(t, comp) })
	}
}

func testBitFlips(t *testing.T, comp Compression) {
	for _, msgs := range [][][]byte{
		{[]byte("flip me"), {}, []byte("and me")},
		{{}},
		logBatch(2000), // an S2 block that is compressed, not stored
	} {
		rec := encodeComp(t, comp, 99, msgs)
		r := NewReader()
		for i := range rec {
			for bit := range 8 {
				bad := bytes.Clone(rec)
				bad[i] ^= 1 << bit
				_, err := decodeNoPanic(t, r, bad)
				assertCorrupt(t, fmt.Sprintf("Decode with bit %d of byte %d/%d flipped", bit, i, len(rec)), err)
				_, err = Verify(bad)
				assertCorrupt(t, fmt.Sprintf("Verify with bit %d of byte %d/%d flipped", bit, i, len(rec)), err)
			}
		}
		b, err := r.Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		checkBatch(t, b, 99, msgs)
		r.Close()
	}
}

// Records whose CRC is right but whose content is not what the header says: only the
// decoder's own checks stand between them and the caller.
func TestBadPayload(t *testing.T) {
	frame := func(raw []byte) []byte { return zstdFrame(t, raw) }
	good := frame(items("abc"))
	// A frame that declares more content than MaxRawSize, with a tiny RLE block: it must be
	// refused from its header alone.
	huge := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // magic; descriptor: 8-byte FCS, single segment
	huge = binary.LittleEndian.AppendUint64(huge, MaxRawSize+1)
	huge = append(huge, 0x03, 0x00, 0x00, 0x00) // block header (last, RLE, size 0), RLE byte

	tests := []struct {
		name          string
		count, rawLen uint32
		payload       []byte
	}{
		{"length past end", 1, 7, frame(append(binary.LittleEndian.AppendUint32(nil, 10), "abc"...))},
		{"length max", 1, 7, frame(append(binary.LittleEndian.AppendUint32(nil, 1<<32-1), "abc"...))},
		{"length past end of second", 2, 11, frame(append(items("abc"), 9, 0, 0, 0))},
		{"trailing bytes", 1, 8, frame(append(items("abc"), 'x'))},
		{"trailing partial length", 1, 10, frame(append(items("abc"), 0, 0, 0))},
		{"count above items", 2, 9, frame(append(items("abc"), 'x', 'y'))}, // 2nd length truncated
		{"count above items, rawLen exact", 4, 16, frame(items("", "", "abcd"))},
		{"count below items", 1, 14, frame(items("abc", "def"))},
		{"count far above items", 3, 14, frame(items("abc", "def"))},
		{"rawLen above payload", 1, 8, good},
		{"rawLen below payload", 1, 6, good},
		{"rawLen MaxRawSize", 1, MaxRawSize, good},
		{"no payload", 1, 4, nil},
		{"payload not zstd", 1, 7, items("abc")},
		{"zstd truncated", 1, 7, good[:len(good)-1]},
		{"zstd checksum wrong", 1, 7, func() []byte { p := bytes.Clone(good); p[len(p)-1] ^= 1; return p }()},
		{"zstd trailing garbage", 1, 7, append(bytes.Clone(good), 1, 2, 3)},
		{"zstd content size above MaxRawSize", 1, 7, huge},
		// Below 256 bytes the encoder leaves the content size out: only the buffer's
		// capacity, rawLen, stops the decoder.
		{"zstd without content size, more than rawLen", 1, 8, frame(items(strings.Repeat("x", 200)))},
	}
	r := NewReader()
	defer r.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := handRecord(tt.count, tt.rawLen, 5, tt.payload)
			if _, err := Verify(rec); err != nil && tt.rawLen <= MaxRawSize && tt.rawLen >= 4*tt.count {
				t.Fatalf("test setup: hand-built record fails Verify: %v", err)
			}
			_, err := decodeNoPanic(t, r, rec)
			assertCorrupt(t, "Decode", err)
		})
	}
	// The control: the same hand-built construction with consistent fields decodes, so the
	// failures above are due to the damage, not to handRecord.
	t.Run("control", func(t *testing.T) {
		b, err := r.Decode(handRecord(2, 13, 5, frame(items("abc", "de"))))
		if err != nil {
			t.Fatal(err)
		}
		checkBatch(t, b, 5, [][]byte{[]byte("abc"), []byte("de")})
	})
}

func TestShortInput(t *testing.T) {
	rec := encode(t, 1, [][]byte{[]byte("m")})
	for n := 0; n < HeaderSize; n++ {
		short := make([]byte, n)
		copy(short, rec)
		_, err := ParseHeader(short)
		assertCorrupt(t, fmt.Sprintf("ParseHeader(%d bytes)", n), err)
		_, err = Verify(short)
		assertCorrupt(t, fmt.Sprintf("Verify(%d bytes)", n), err)
	}
	assertCorrupt(t, "ParseHeader(nil)", func() error { _, err := ParseHeader(nil); return err }())
	assertCorrupt(t, "Verify(nil)", func() error { _, err := Verify(nil); return err }())
	// A whole header with no payload: ParseHeader accepts it (no CRC check), Verify does not.
	h, err := ParseHeader(rec[:HeaderSize])
	if err != nil {
		t.Fatalf("ParseHeader(header only): %v", err)
	}
	if want := (Header{Count: 1, RawLen: 5, Time: 1}); h != want {
		t.Fatalf("ParseHeader = %+v, want %+v", h, want)
	}
	_, err = Verify(rec[:HeaderSize])
	assertCorrupt(t, "Verify(header only)", err)
}

var errEncode = errors.New("encode failed")

func TestAddEncodeError(t *testing.T) {
	tests := []struct {
		name   string
		encode func(dst []byte) ([]byte, error)
	}{
		{"nothing written", func(dst []byte) ([]byte, error) { return dst, errEncode }},
		{"nil returned", func(dst []byte) ([]byte, error) { return nil, errEncode }},
		{"partial write", func(dst []byte) ([]byte, error) { return append(dst, "half a mess"...), errEncode }},
		{"write that grows the buffer", func(dst []byte) ([]byte, error) {
			return append(dst, make([]byte, 3*cap(dst)+100)...), errEncode
		}},
		{"scribbles in spare capacity", func(dst []byte) ([]byte, error) {
			spare := dst[len(dst):cap(dst)]
			for i := range spare {
				spare[i] = 0xEE
			}
			return dst, errEncode
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWriter(256)
			defer w.Close()
			w.SetTime(77)
			good := [][]byte{[]byte("before"), {}}
			for _, m := range good {
				if err := w.AddBytes(m); err != nil {
					t.Fatal(err)
				}
			}
			len0, size0 := w.Len(), w.Size()
			n, err := w.Add(tt.encode)
			if !errors.Is(err, errEncode) {
				t.Fatalf("Add error = %v, want %v", err, errEncode)
			}
			if n != 0 {
				t.Errorf("Add returned n = %d on error, want 0", n)
			}
			if w.Len() != len0 || w.Size() != size0 {
				t.Fatalf("after failed Add: Len %d Size %d, want %d %d", w.Len(), w.Size(), len0, size0)
			}
			good = append(good, []byte("after"))
			if err := w.AddBytes(good[2]); err != nil {
				t.Fatal(err)
			}
			r := NewReader()
			defer r.Close()
			b, err := r.Decode(w.Record())
			if err != nil {
				t.Fatal(err)
			}
			checkBatch(t, b, 77, good)
		})
	}
}

// skipHuge skips tests that fill 64 MiB buffers in -short mode and under the race
// detector, whose shadow memory makes them take seconds; they have no concurrency to check.
func skipHuge(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fills 64 MiB buffers; skipped in -short mode")
	}
	if race.Enabled {
		t.Skip("fills 64 MiB buffers, which takes seconds under -race; run without -race")
	}
}

// A message that would push the batch past MaxRawSize is refused and leaves the batch
// as it was; a batch of exactly MaxRawSize is fine.
func TestAddTooLarge(t *testing.T) {
	skipHuge(t)
	w := NewWriter(1024)
	defer w.Close()
	if err := w.AddBytes([]byte("small")); err != nil {
		t.Fatal(err)
	}
	size0 := w.Size()
	fill := MaxRawSize - size0 - lenSize // the largest message that still fits
	n, err := w.Add(func(dst []byte) ([]byte, error) { return append(dst, make([]byte, fill+1)...), nil })
	if !errors.Is(err, ErrTooLarge) || n != 0 {
		t.Fatalf("Add(%d bytes) = %d, %v; want 0, ErrTooLarge", fill+1, n, err)
	}
	if w.Len() != 1 || w.Size() != size0 {
		t.Fatalf("after ErrTooLarge: Len %d Size %d, want 1 %d", w.Len(), w.Size(), size0)
	}
	n, err = w.Add(func(dst []byte) ([]byte, error) { return append(dst, make([]byte, fill)...), nil })
	if err != nil || n != fill {
		t.Fatalf("Add(%d bytes) = %d, %v; want %d, nil", fill, n, err, fill)
	}
	if w.Size() != MaxRawSize {
		t.Fatalf("Size = %d, want MaxRawSize", w.Size())
	}
	r := NewReader()
	defer r.Close()
	b, err := r.Decode(w.Record())
	if err != nil {
		t.Fatalf("Decode of a MaxRawSize batch: %v", err)
	}
	if b.Count != 2 || b.RawLen != MaxRawSize || string(b.Message(0)) != "small" || len(b.Message(1)) != fill {
		t.Fatalf("MaxRawSize batch decoded as Count %d RawLen %d", b.Count, b.RawLen)
	}
}

// Regression test: after refusing a message with
// ErrTooLarge, Add keeps the oversized buffer the encode func grew (w.raw = raw[:mark]),
// so one refused 100 MiB message pins 100 MiB in the Writer until it is dropped; Reset
// keeps it too.
func TestAddTooLargeKeepsNoBuffer(t *testing.T) {
	skipHuge(t)
	w := NewWriter(1024)
	defer w.Close()
	_ = w.AddBytes([]byte("small"))
	_, err := w.Add(func(dst []byte) ([]byte, error) { return append(dst, make([]byte, MaxRawSize)...), nil })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Add = %v, want ErrTooLarge", err)
	}
	if c := cap(w.raw); c > 1<<20 {
		t.Errorf("after a refused message the Writer holds a %d MiB buffer for a %d-byte batch", c>>20, w.Size())
	}
}

// Regression test: the package doc says the payload is one
// zstd frame with zstd's content checksum, and that a record that is not exactly this is
// corrupt; Decode accepts (behind a valid CRC) several frames, skippable frames, and a
// frame without checksum, because DecodeAll does.
func TestPayloadIsOneFrame(t *testing.T) {
	skippable := []byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'x', 'y', 'z'}
	noCRC, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	defer noCRC.Close()
	tests := []struct {
		name          string
		count, rawLen uint32
		payload       []byte
	}{
		{"two frames", 2, 12, append(zstdFrame(t, items("ab")), zstdFrame(t, items("cd"))...)},
		{"frame, skippable frame", 1, 6, append(zstdFrame(t, items("ab")), skippable...)},
		{"skippable frame, frame", 1, 6, append(bytes.Clone(skippable), zstdFrame(t, items("ab"))...)},
		{"frame without checksum", 1, 6, noCRC.EncodeAll(items("ab"), nil)},
	}
	r := NewReader()
	defer r.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := decodeNoPanic(t, r, handRecord(tt.count, tt.rawLen, 0, tt.payload))
			if err == nil {
				t.Fatalf("Decode accepted it as %d messages", b.Count)
			}
			assertCorrupt(t, "Decode", err)
		})
	}
}

// logGen generates deterministic, log-like lines of 100 to 300 bytes: increasing time
// stamps, levels, hosts, paths, status codes, sizes, durations and request ids, so that a
// batch compresses like real logs (about 4x) rather than like repeated text.
type logGen struct {
	rng *rand.Rand
	now time.Time
}

func newLogGen(seed uint64) *logGen {
	return &logGen{
		rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		now: time.Date(2024, 5, 17, 13, 45, 0, 0, time.UTC),
	}
}

var (
	logLevels  = []string{"DEBUG", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR"}
	logMethods = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	logPaths   = []string{"/api/v1/users", "/api/v1/orders", "/api/v2/search", "/healthz",
		"/static/js/app.js", "/api/v1/payments", "/login", "/api/v1/inventory/items", "/metrics"}
	logServices = []string{"checkout", "auth", "catalog", "gateway", "billing", "search"}
	logRegions  = []string{"eu-west-1", "us-east-1", "ap-south-1", "us-west-2"}
	logStatuses = []int{200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 500, 503}
	logAgents   = []string{"Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "Go-http-client/1.1",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2)", "kube-probe/1.29", "python-requests/2.31"}
	logWords = []string{"cache", "miss", "retry", "upstream", "timeout", "slow", "query", "user",
		"token", "expired", "connection", "reset", "pool", "exhausted", "fallback", "ok"}
)

func (g *logGen) line() []byte {
	rng := g.rng
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	g.now = g.now.Add(time.Duration(rng.IntN(20000)) * time.Microsecond)
	b := g.now.AppendFormat(nil, "2006-01-02T15:04:05.000000Z07:00")
	b = fmt.Appendf(b, " %-5s %s-%d.%s ", pick(logLevels), pick(logServices), rng.IntN(40), pick(logRegions))
	b = fmt.Appendf(b, "%s %s", pick(logMethods), pick(logPaths))
	if rng.IntN(2) == 0 {
		b = fmt.Appendf(b, "/%d", rng.IntN(1000000))
	}
	if rng.IntN(3) == 0 {
		b = fmt.Appendf(b, "?page=%d&limit=%d", rng.IntN(50), 10*(1+rng.IntN(10)))
	}
	b = fmt.Appendf(b, " status=%d bytes=%d dur=%d.%dms ip=10.0.%d.%d req=%08x ua=%q",
		logStatuses[rng.IntN(len(logStatuses))], rng.IntN(50000), rng.IntN(500), rng.IntN(10),
		rng.IntN(8), rng.IntN(256), rng.Uint32(), pick(logAgents))
	for len(b) < 100 || (len(b) < 260 && rng.IntN(3) != 0) {
		b = append(b, ' ')
		b = append(b, pick(logWords)...)
	}
	return b[:min(len(b), 300)]
}

// logBatch returns deterministic log lines adding up to at most size raw bytes.
func logBatch(size int) [][]byte {
	g := newLogGen(2024)
	var msgs [][]byte
	for n := 0; ; {
		line := g.line()
		if n+lenSize+len(line) > size {
			return msgs
		}
		msgs = append(msgs, line)
		n += lenSize + len(line)
	}
}

func TestLogGen(t *testing.T) {
	g := newLogGen(7)
	seen := map[string]bool{}
	for range 1000 {
		l := g.line()
		if len(l) < 100 || len(l) > 300 {
			t.Fatalf("line of %d bytes: %q", len(l), l)
		}
		seen[string(l)] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("only %d distinct lines of 1000", len(seen))
	}
	a, b := logBatch(64<<10), logBatch(64<<10)
	if len(a) != len(b) || !bytes.Equal(a[len(a)-1], b[len(b)-1]) {
		t.Fatal("logBatch is not deterministic")
	}
}

const benchBatch = 64 << 10
