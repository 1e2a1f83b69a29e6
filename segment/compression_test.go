package segment

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/pelichan/pelichan/internal/loggen"
)

func TestCompressionString(t *testing.T) {
	for c, want := range map[Compression]string{Zstd: "zstd", S2: "s2", 2: "flags(2)", 255: "flags(255)"} {
		if got := c.String(); got != want {
			t.Errorf("Compression(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
	// The values are the flags byte's: frozen.
	if Zstd != 0 || S2 != 1 {
		t.Fatalf("Zstd = %d, S2 = %d: the wire values are 0 and 1", Zstd, S2)
	}
}

// A Writer's compression applies to every Record until it is changed, survives Reset, and
// may change between records; each record is the one a fresh Writer would make.
func TestSetCompression(t *testing.T) {
	w := NewWriter(4096)
	defer w.Close()
	r := NewReader()
	defer r.Close()
	batches := [][][]byte{
		{[]byte("first")},
		logBatch(3000),
		{{}, []byte("third")},
		logBatch(1000),
	}
	order := []Compression{S2, S2, Zstd, S2}
	for i, msgs := range batches {
		w.Reset()
		if i == 0 || order[i] != order[i-1] {
			w.SetCompression(order[i])
		}
		w.SetTime(int64(i))
		for _, m := range msgs {
			if err := w.AddBytes(m); err != nil {
				t.Fatal(err)
			}
		}
		rec := w.Record()
		if rec[3] != byte(order[i]) {
			t.Errorf("batch %d: flags %d, want %d", i, rec[3], order[i])
		}
		if !bytes.Equal(rec, encodeWith(t, order[i], 4096, int64(i), msgs)) {
			t.Errorf("batch %d: reused writer's %v record differs from a fresh writer's", i, order[i])
		}
		b, err := r.Decode(rec)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		checkBatch(t, b, int64(i), msgs)
	}

	// The compression is the one set when Record is called, not when messages were added.
	w.Reset()
	w.SetCompression(Zstd)
	_ = w.AddBytes([]byte("late switch"))
	w.SetCompression(S2)
	if rec := w.Record(); rec[3] != byte(S2) {
		t.Errorf("flags %d after switching to S2 before Record, want %d", rec[3], S2)
	}

	defer func() {
		if recover() == nil {
			t.Error("SetCompression(2) did not panic")
		}
		if rec := w.Record(); rec[3] != byte(S2) {
			t.Errorf("a refused SetCompression changed the compression: flags %d", rec[3])
		}
	}()
	w.SetCompression(2)
}

// s2Chunk builds one chunk of an S2 stream by hand.
func s2ChunkOf(typ byte, sum uint32, data []byte) []byte {
	n := len(data) + 4
	c := []byte{typ, byte(n), byte(n >> 8), byte(n >> 16)}
	c = binary.LittleEndian.AppendUint32(c, sum)
	return append(c, data...)
}

func s2Compressed(raw []byte) []byte { return s2ChunkOf(0x00, s2Checksum(raw), s2.Encode(nil, raw)) }
func s2Raw(raw []byte) []byte        { return s2ChunkOf(0x01, s2Checksum(raw), raw) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// S2 records whose CRC is right but whose payload is not the S2 stream the package doc
// allows, or not what the header says: only the decoder's own checks catch them.
func TestBadS2Payload(t *testing.T) {
	magic := []byte(s2Magic)
	abc := items("abc")
	long := items(string(bytes.Repeat([]byte("abcdefgh"), 40))) // compresses
	longBlock := s2.Encode(nil, long)
	badBlock := bytes.Clone(longBlock)
	badBlock[len(badBlock)/2] ^= 0x55
	lying := append(binary.AppendUvarint(nil, uint64(len(abc)+1)), byte(len(abc)-1)<<2) // literal tag
	lying = append(lying, abc...)
	huge := binary.AppendUvarint(nil, s2MaxChunk+1) // a block that claims more than a chunk may hold
	huge = append(huge, 0, 'x')

	tests := []struct {
		name          string
		flags         byte
		count, rawLen uint32
		payload       []byte
	}{
		{"no payload", 1, 1, 7, nil},
		{"block without stream", 1, 1, 7, s2.Encode(nil, abc)},
		{"stream identifier only", 1, 1, 7, magic},
		{"snappy stream identifier", 1, 1, 7, cat([]byte("\xff\x06\x00\x00sNaPpY"), s2Raw(abc))},
		{"stream identifier twice", 1, 1, 7, cat(magic, magic, s2Raw(abc))},
		{"stream identifier after data", 1, 1, 7, cat(magic, s2Raw(abc), magic)},
		{"padding chunk", 1, 1, 7, cat(magic, s2Raw(abc), s2ChunkOf(0xfe, 0, nil))},
		{"skippable chunk", 1, 1, 7, cat(magic, s2ChunkOf(0x80, 0, []byte("skip")), s2Raw(abc))},
		{"index chunk", 1, 1, 7, cat(magic, s2Raw(abc), s2ChunkOf(0x99, 0, []byte("index")))},
		{"reserved chunk type 2", 1, 1, 7, cat(magic, s2ChunkOf(0x02, s2Checksum(abc), abc))},
		{"truncated chunk header", 1, 1, 7, cat(magic, s2Raw(abc)[:3])},
		{"truncated chunk", 1, 1, 7, cat(magic, func() []byte { c := s2Raw(abc); return c[:len(c)-1] }())},
		{"chunk length below its checksum", 1, 1, 7, cat(magic, []byte{1, 3, 0, 0, 'a', 'b', 'c', 'd'})},
		{"trailing bytes", 1, 1, 7, cat(magic, s2Raw(abc), []byte{0, 0, 0})},
		{"raw chunk checksum wrong", 1, 1, 7, cat(magic, s2ChunkOf(1, s2Checksum(abc)^1, abc))},
		{"compressed chunk checksum wrong", 1, 1, 7, cat(magic, s2ChunkOf(0, s2Checksum(abc)^1, s2.Encode(nil, abc)))},
		{"checksum unmasked", 1, 1, 7, cat(magic, s2ChunkOf(1, crc32cOf(abc), abc))},
		{"compressed block damaged", 1, 1, uint32(len(long)), cat(magic, s2ChunkOf(0, s2Checksum(long), badBlock))},
		{"compressed block length lies", 1, 1, 8, cat(magic, s2ChunkOf(0, s2Checksum(append(bytes.Clone(abc), 0)), lying))},
		{"empty compressed chunk", 1, 1, 7, cat(magic, s2Compressed(nil), s2Raw(abc))},
		{"empty raw chunk", 1, 1, 7, cat(magic, s2Raw(nil), s2Raw(abc))},
		{"chunk above 4 MiB", 1, 1, s2MaxChunk + 1, cat(magic, s2ChunkOf(0, 0, huge))},
		{"rawLen above payload", 1, 1, 8, cat(magic, s2Raw(abc))},
		{"rawLen below payload", 1, 1, 6, cat(magic, s2Raw(abc))},
		{"second chunk past rawLen", 1, 1, 7, cat(magic, s2Raw(abc), s2Raw(abc))},
		{"length past end", 1, 1, 7, cat(magic, s2Compressed(append(binary.LittleEndian.AppendUint32(nil, 10), "abc"...)))},
		{"count above items", 1, 2, 9, cat(magic, s2Raw(append(bytes.Clone(abc), 'x', 'y')))},
		{"count below items", 1, 1, 14, cat(magic, s2Raw(items("abc", "def")))},
		{"zstd payload under S2 flags", 1, 1, 7, zstdFrame(t, abc)},
		{"S2 payload under zstd flags", 0, 1, 7, cat(magic, s2Raw(abc))},
	}
	r := NewReader()
	defer r.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := handRecordFlags(tt.flags, tt.count, tt.rawLen, 5, tt.payload)
			if _, err := Verify(rec); err != nil {
				t.Fatalf("test setup: hand-built record fails Verify: %v", err)
			}
			b, err := decodeNoPanic(t, r, rec)
			if err == nil {
				t.Fatalf("Decode accepted it as %d messages", b.Count)
			}
			assertCorrupt(t, "Decode", err)
			t.Log(err)
		})
	}
	// The controls: the same constructions, consistent, decode; so the failures above
	// are due to the damage.
	for _, c := range []struct {
		name    string
		payload []byte
		msgs    [][]byte
	}{
		{"raw chunk", cat(magic, s2Raw(abc)), [][]byte{[]byte("abc")}},
		{"compressed chunk", cat(magic, s2Compressed(long)), [][]byte{long[4:]}},
		{"compressed and raw chunks", cat(magic, s2Compressed(long), s2Raw(abc)), [][]byte{long[4:], []byte("abc")}},
		{"message across chunks", cat(magic, s2Raw(abc[:2]), s2Compressed(abc[2:5]), s2Raw(abc[5:])), [][]byte{[]byte("abc")}},
		{"one chunk of 4 MiB", cat(magic, s2Compressed(make([]byte, s2MaxChunk))), make([][]byte, s2MaxChunk/lenSize)},
	} {
		t.Run("control/"+c.name, func(t *testing.T) {
			b, err := r.Decode(handRecordFlags(1, uint32(len(c.msgs)), uint32(rawSize(c.msgs)), 5, c.payload))
			if err != nil {
				t.Fatal(err)
			}
			checkBatch(t, b, 5, c.msgs)
		})
	}
}

func crc32cOf(b []byte) uint32 {
	c := s2Checksum(b) - 0xa282ead8
	return c<<15 | c>>17 // undo the mask
}

// An S2 record's payload is an S2 stream: the s2 package's own stream Reader reads what
// Writer writes, and Reader reads what the s2 package's stream Writer writes, unless it
// adds chunks the package doc does not allow.
func TestS2Interop(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 70000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	batches := []struct {
		name   string
		msgs   [][]byte
		chunks int
	}{
		{"golden", goldenMsgs, 1},
		{"64 KiB of logs", logBatch(64 << 10), 1},
		{"incompressible", [][]byte{random}, 1},
		{"3 MiB of logs", logBatch(3 << 20), 3},
		{"exactly 1 MiB", [][]byte{bytes.Repeat([]byte("x"), s2WriterChunk-lenSize)}, 1},
		{"1 MiB + 1", [][]byte{bytes.Repeat([]byte("x"), s2WriterChunk-lenSize+1)}, 2},
	}
	r := NewReader()
	defer r.Close()
	for _, bt := range batches {
		raw := make([]byte, 0, rawSize(bt.msgs))
		for _, m := range bt.msgs {
			raw = binary.LittleEndian.AppendUint32(raw, uint32(len(m)))
			raw = append(raw, m...)
		}
		t.Run("s2.Reader reads Writer/"+bt.name, func(t *testing.T) {
			rec := encodeComp(t, S2, 1, bt.msgs)
			got, err := io.ReadAll(s2.NewReader(bytes.NewReader(rec[HeaderSize:])))
			if err != nil {
				t.Fatalf("s2.Reader: %v", err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("s2.Reader read %d bytes, want the %d-byte batch", len(got), len(raw))
			}
			if n := countS2Chunks(t, rec[HeaderSize:]); n != bt.chunks {
				t.Errorf("%d chunks, want %d", n, bt.chunks)
			}
		})
		for _, w := range []struct {
			name string
			opts []s2.WriterOption
			ok   bool
		}{
			{"default", nil, true},
			{"64 KiB blocks", []s2.WriterOption{s2.WriterBlockSize(64 << 10)}, true},
			{"4 MiB blocks", []s2.WriterOption{s2.WriterBlockSize(4 << 20)}, true},
			{"better", []s2.WriterOption{s2.WriterBetterCompression()}, true},
			{"uncompressed", []s2.WriterOption{s2.WriterUncompressed()}, true},
			{"snappy", []s2.WriterOption{s2.WriterSnappyCompat()}, false}, // other stream identifier
			{"index", []s2.WriterOption{s2.WriterAddIndex()}, false},
			{"padding", []s2.WriterOption{s2.WriterPadding(1024)}, false},
		} {
			t.Run("Reader reads s2.Writer/"+w.name+"/"+bt.name, func(t *testing.T) {
				rec := handRecordFlags(1, uint32(len(bt.msgs)), uint32(len(raw)), 9, s2Stream(t, raw, w.opts...))
				b, err := decodeNoPanic(t, r, rec)
				if !w.ok {
					assertCorrupt(t, "Decode", err)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				checkBatch(t, b, 9, bt.msgs)
			})
		}
	}
}

func countS2Chunks(t *testing.T, p []byte) int {
	t.Helper()
	n := 0
	for off, rest := len(s2Magic), p[len(s2Magic):]; len(rest) > 0; n++ {
		_, next, err := nextS2Chunk(rest, off)
		if err != nil {
			t.Fatal(err)
		}
		off += len(rest) - len(next)
		rest = next
	}
	return n
}

// loggenBatch returns log lines from internal/loggen (100 to 300 bytes each) adding up
// to at most size raw bytes.
func loggenBatch(size int) [][]byte {
	g := loggen.New(1)
	var msgs [][]byte
	for id, n := uint64(1), 0; ; id++ {
		line := g.Append(nil, id)
		if n+lenSize+len(line) > size {
			return msgs
		}
		msgs = append(msgs, line)
		n += lenSize + len(line)
	}
}

// BenchmarkWriterRecord and BenchmarkReaderDecode encode and decode one 64 KiB batch of
// log lines with each compression; ratio is raw bytes per payload byte.
//
//	go test -run '^$' -bench 'WriterRecord|ReaderDecode' -count 3 ./segment/
func BenchmarkWriterRecord(b *testing.B) {
	msgs := loggenBatch(benchBatch)
	for _, comp := range comps {
		b.Run(comp.String(), func(b *testing.B) {
			w := NewWriter(benchBatch)
			defer w.Close()
			w.SetCompression(comp)
			var rec []byte
			b.SetBytes(int64(rawSize(msgs)))
			b.ReportAllocs()
			for b.Loop() {
				w.Reset()
				w.SetTime(1)
				for _, m := range msgs {
					if err := w.AddBytes(m); err != nil {
						b.Fatal(err)
					}
				}
				rec = w.Record()
			}
			b.ReportMetric(float64(rawSize(msgs))/float64(len(rec)-HeaderSize), "ratio")
			b.ReportMetric(float64(len(msgs)), "msgs/op")
		})
	}
}

func BenchmarkReaderDecode(b *testing.B) {
	msgs := loggenBatch(benchBatch)
	for _, comp := range comps {
		b.Run(comp.String(), func(b *testing.B) {
			rec := encodeComp(b, comp, 1, msgs)
			r := NewReader()
			defer r.Close()
			b.SetBytes(int64(rawSize(msgs)))
			b.ReportAllocs()
			total := 0
			for b.Loop() {
				batch, err := r.Decode(rec)
				if err != nil {
					b.Fatal(err)
				}
				for i := range batch.Count {
					total += len(batch.Message(i))
				}
			}
			if total == 0 {
				b.Fatal("decoded nothing")
			}
			b.ReportMetric(float64(rawSize(msgs))/float64(len(rec)-HeaderSize), "ratio")
		})
	}
}
