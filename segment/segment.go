// Package segment defines pelichan's on-disk record: one record is one WAL entry and
// carries a batch of messages.
//
// # Record layout
//
// All integers are little-endian. The first 24 bytes are the header:
//
//		 0      2      3      4          8          12                 20          24
//		 +------+------+------+----------+----------+------------------+-----------+----------...
//		 | 'p'  | ver  |flags | count    | rawLen   | time             | crc       | payload
//		 | 'c'  |  1   | comp | uint32   | uint32   | int64 unix nanos | uint32    | compressed
//		 +------+------+------+----------+----------+------------------+-----------+----------...
//
//	  - magic: the two bytes "pc".
//	  - ver: the format version, 1. A reader refuses any other value.
//	  - flags: the payload's compression, one of the values below. A reader refuses any
//	    other value: values 2 to 255 are reserved for later compressions or flags.
//	  - count: the number of messages in the batch, 1 to MaxCount.
//	  - rawLen: the length of the decompressed payload in bytes, 4×count to MaxRawSize.
//	  - time: when the first message of the batch was spilled, in Unix nanoseconds.
//	  - crc: CRC-32C (Castagnoli) of header bytes 0..20 followed by the payload bytes.
//
// The CRC covers every byte of the record but its own four, the flags byte included, so
// any bit flip in a stored record is detected before the payload is decompressed. Each
// compression adds its own checksum of the decompressed bytes as a second, independent
// check (for damage the CRC misses, or that happened before it was computed).
//
// # Flags: the compression
//
//	value  constant  payload
//	0      Zstd      one zstd frame
//	1      S2        one S2 stream
//
// Flags 0 is what every record written before S2 was added carries, so all of them read as
// zstd records.
//
// Zstd: the payload is exactly one zstd frame (RFC 8878) with a content checksum; if the
// frame declares its content size, that size is rawLen. No skippable frames, no second
// frame, nothing after the frame's checksum.
//
// S2: the payload is an S2 stream (github.com/klauspost/compress/s2, the Snappy framing
// format with S2 blocks) restricted to: the stream identifier chunk ff 06 00 00 "S2sTwO",
// then one or more chunks of type 0x00 (an S2 block) or 0x01 (uncompressed bytes). Every
// chunk is a type byte, a 3-byte length of the rest of the chunk, the masked CRC-32C of the
// chunk's decompressed bytes (as the framing format defines it), then the data; each chunk
// decompresses to 1 byte to 4 MiB, and the chunks, in order, to rawLen bytes. No padding,
// skippable, index or further stream-identifier chunks. Any S2 stream reader reads it.
//
// # Decompressed payload
//
// Whatever the compression, the decompressed payload is count items of
//
//	+----------------+---------------+
//	| len uint32     | message bytes |
//	+----------------+---------------+
//
// The layout, Magic, Version, HeaderSize, the flag values (Zstd, S2), the limits (MaxCount,
// MaxRawSize) and the meaning of every header field are part of the wire format: they are
// frozen, and testdata/golden.rec (zstd) and testdata/golden_s2.rec (S2) fail any drift.
//
// # Limits and damage
//
// A Writer never produces a record of more than MaxCount messages or MaxRawSize raw bytes,
// and a reader refuses such a record as corrupt from its header alone, before it
// decompresses anything: a small crafted record cannot make it hold millions of messages.
// Decompression itself is bounded by the header's rawLen.
//
// A record that is not exactly as described here (wrong magic, version or flags, bad CRC,
// a count or raw length out of bounds, a compression error, a payload whose items do not
// add up to count and rawLen) is reported as an error that wraps ErrCorrupt. Decoding never
// panics, and one record never makes it allocate more than about MaxRawSize + 4×MaxCount
// bytes (the payload, and an index of 4 bytes per message).
package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Wire-format constants. These are part of the on-disk format: never change them.
const (
	Magic0     = 'p'
	Magic1     = 'c'
	Version    = 1
	HeaderSize = 24
	// lenSize is the size of each message's length prefix inside the payload.
	lenSize = 4
)

// Format limits, part of the wire format. Writers never produce more; readers refuse more
// as corrupt before decompressing, so hostile input cannot make them, or whoever consumes
// their batches, hold memory without bound.
const (
	// MaxRawSize caps the decompressed payload of one record (64 MiB).
	MaxRawSize = 64 << 20
	// MaxCount caps the number of messages in one record (1 Mi): at most 16 per KiB of a
	// MaxRawSize batch, far more than batches of real messages hold, and few enough that
	// a record of empty messages does not multiply into gigabytes downstream.
	MaxCount = 1 << 20
)

// Compression names the compression of a record's payload. Its values are the values of
// the header's flags byte: part of the wire format.
type Compression uint8

const (
	// Zstd is one zstd frame with a content checksum (flags 0, the default).
	Zstd Compression = 0
	// S2 is one S2 stream (flags 1): faster than Zstd, larger records.
	S2 Compression = 1
)

// String returns "zstd", "s2", or "flags(N)" for a value that names no compression.
func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case S2:
		return "s2"
	}
	return fmt.Sprintf("flags(%d)", uint8(c))
}

func (c Compression) valid() bool { return c == Zstd || c == S2 }

// S2 stream framing (the Snappy framing format with S2's identifier).
const (
	s2Magic           = "\xff\x06\x00\x00S2sTwO" // the stream identifier chunk
	s2ChunkCompressed = 0x00
	s2ChunkRaw        = 0x01
	s2ChunkHeader     = 4       // type, 3-byte length
	s2ChecksumSize    = 4       // masked CRC-32C of the chunk's decompressed bytes
	s2MaxChunk        = 4 << 20 // largest decompressed chunk a stream may hold
	s2WriterChunk     = 1 << 20 // what Writer cuts batches into (s2.Writer's default)
)

// ErrCorrupt is wrapped by every error that reports a malformed record.
var ErrCorrupt = errors.New("segment: corrupt record")

// ErrTooLarge is returned by Writer.Add when a message would make the batch exceed
// MaxRawSize or MaxCount, or is longer than SetMaxMessage allows.
var ErrTooLarge = errors.New("segment: message too large")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Header is the decoded fixed part of a record.
type Header struct {
	Count       int         // messages in the record
	RawLen      int         // decompressed payload length
	Time        int64       // unix nanoseconds when the batch's first message was spilled
	Compression Compression // the payload's compression (the flags byte)
}

// ParseHeader checks magic, version, flags and the count and raw length limits of rec and
// returns its header. It does not verify the CRC; Reader.Decode and Verify do.
func ParseHeader(rec []byte) (Header, error) {
	if len(rec) < HeaderSize {
		return Header{}, corrupt("record of %d bytes is shorter than its header", len(rec))
	}
	if rec[0] != Magic0 || rec[1] != Magic1 {
		return Header{}, corrupt("bad magic %#x %#x", rec[0], rec[1])
	}
	if rec[2] != Version {
		return Header{}, corrupt("unknown version %d", rec[2])
	}
	comp := Compression(rec[3])
	if !comp.valid() {
		return Header{}, corrupt("unknown flags %#x", rec[3])
	}
	// Compare as unsigned 64-bit numbers: with a 32-bit int the conversions below could
	// wrap to negative values, and count*lenSize could overflow.
	count := binary.LittleEndian.Uint32(rec[4:])
	rawLen := binary.LittleEndian.Uint32(rec[8:])
	if count == 0 {
		return Header{}, corrupt("record holds no messages")
	}
	if count > MaxCount {
		return Header{}, corrupt("count %d is above the limit of %d messages", count, MaxCount)
	}
	if rawLen > MaxRawSize {
		return Header{}, corrupt("raw length %d is above the limit of %d bytes", rawLen, MaxRawSize)
	}
	if uint64(rawLen) < uint64(count)*lenSize {
		return Header{}, corrupt("raw length %d does not fit %d messages", rawLen, count)
	}
	return Header{
		Count:       int(count),
		RawLen:      int(rawLen),
		Time:        int64(binary.LittleEndian.Uint64(rec[12:])),
		Compression: comp,
	}, nil
}

// Verify checks a record's header and CRC without decompressing it.
func Verify(rec []byte) (Header, error) {
	h, err := ParseHeader(rec)
	if err != nil {
		return h, err
	}
	want := binary.LittleEndian.Uint32(rec[20:])
	crc := crc32.Update(crc32.Checksum(rec[:20], castagnoli), castagnoli, rec[HeaderSize:])
	if crc != want {
		return h, corrupt("crc mismatch: stored %#08x, computed %#08x", want, crc)
	}
	return h, nil
}

// Writer builds one record from a batch of messages. It reuses its buffers and zstd
// encoder between records; the zero value is not usable, call NewWriter. A Writer is not
// safe for concurrent use.
type Writer struct {
	raw   []byte // len-prefixed messages
	count int
	time  int64
	out   []byte
	enc   *zstd.Encoder
	max   int         // largest message accepted; 0: no limit but MaxRawSize
	comp  Compression // what Record compresses with
}

// SetMaxMessage makes Add refuse, with ErrTooLarge, a message longer than n bytes
// (n <= 0: no limit but MaxRawSize).
func (w *Writer) SetMaxMessage(n int) { w.max = n }

// SetCompression sets the compression of the records Record returns from now on (the
// default is Zstd). It may change between records; Reset keeps it. It panics if c is not
// Zstd or S2.
func (w *Writer) SetCompression(c Compression) {
	if !c.valid() {
		panic(fmt.Sprintf("segment: SetCompression(%v): not a compression", c))
	}
	w.comp = c
}

// NewWriter returns a Writer whose zstd window fits batches of about batchSize bytes.
func NewWriter(batchSize int) *Writer {
	window := zstd.MinWindowSize
	for window < batchSize && window < zstd.MaxWindowSize {
		window <<= 1
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(window),
		zstd.WithEncoderCRC(true), // zstd's own checksum as well as ours: catches what a CRC collision would pass
	)
	if err != nil {
		// Only invalid options fail, and the options above are constants.
		panic(fmt.Sprintf("segment: zstd encoder: %v", err))
	}
	return &Writer{raw: make([]byte, 0, batchSize+batchSize/8), enc: enc}
}

// Add appends one message's encoding to the batch. encode appends the message to dst and
// returns the extended slice, as Codec.Encode does. If encode fails, or the message would
// push the batch past MaxRawSize or MaxCount, the batch is left as it was. When the batch
// already holds MaxCount messages, Add returns ErrTooLarge without calling encode.
func (w *Writer) Add(encode func(dst []byte) ([]byte, error)) (int, error) {
	if w.count >= MaxCount {
		return 0, fmt.Errorf("%w: the batch already holds %d messages, the most a record may", ErrTooLarge, w.count)
	}
	mark := len(w.raw)
	w.raw = append(w.raw, 0, 0, 0, 0)
	raw, err := encode(w.raw)
	if err != nil {
		w.raw = w.raw[:mark]
		return 0, err
	}
	n := len(raw) - mark - lenSize
	if w.max > 0 && n > w.max {
		w.raw = w.raw[:mark]
		return 0, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, n, w.max)
	}
	if len(raw) > MaxRawSize {
		w.raw = w.raw[:mark] // not raw[:mark]: drop the buffer encode grew for the refused message
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	binary.LittleEndian.PutUint32(raw[mark:], uint32(n))
	w.raw = raw
	w.count++
	return n, nil
}

// AddBytes appends msg to the batch.
func (w *Writer) AddBytes(msg []byte) error {
	_, err := w.Add(func(dst []byte) ([]byte, error) { return append(dst, msg...), nil })
	return err
}

// SetTime sets the record's time stamp (unix nanoseconds).
func (w *Writer) SetTime(t int64) { w.time = t }

// Len is the number of messages in the batch.
func (w *Writer) Len() int { return w.count }

// Size is the batch's raw (uncompressed) size in bytes.
func (w *Writer) Size() int { return len(w.raw) }

// Reset empties the batch, keeping its buffers and its settings (compression, message
// limit).
func (w *Writer) Reset() {
	w.raw = w.raw[:0]
	w.count = 0
	w.time = 0
}

// Record compresses the batch with the Writer's compression and returns the finished
// record. The slice is valid until the next call to Record or Reset. Record on an empty
// batch returns nil.
func (w *Writer) Record() []byte {
	if w.count == 0 {
		return nil
	}
	out := append(w.out[:0], make([]byte, HeaderSize)...)
	switch w.comp {
	case S2:
		out = appendS2(out, w.raw)
	default:
		out = w.enc.EncodeAll(w.raw, out)
	}
	out[0], out[1], out[2], out[3] = Magic0, Magic1, Version, byte(w.comp)
	binary.LittleEndian.PutUint32(out[4:], uint32(w.count))
	binary.LittleEndian.PutUint32(out[8:], uint32(len(w.raw)))
	binary.LittleEndian.PutUint64(out[12:], uint64(w.time))
	crc := crc32.Update(crc32.Checksum(out[:20], castagnoli), castagnoli, out[HeaderSize:])
	binary.LittleEndian.PutUint32(out[20:], crc)
	w.out = out
	return out
}

// Close releases the zstd encoder.
func (w *Writer) Close() { w.enc.Close() }

// appendS2 appends raw to dst as an S2 stream of chunks of s2WriterChunk bytes: an S2
// block each, or the bytes themselves where the block would save less than 1/32.
func appendS2(dst, raw []byte) []byte {
	dst = append(dst, s2Magic...)
	for len(raw) > 0 {
		n := min(len(raw), s2WriterChunk)
		chunk := raw[:n]
		raw = raw[n:]
		head := len(dst)
		data := head + s2ChunkHeader + s2ChecksumSize
		dst = slices.Grow(dst, s2ChunkHeader+s2ChecksumSize+s2.MaxEncodedLen(n))
		dst = dst[:data]
		block := s2.Encode(dst[data:cap(dst)], chunk) // fits: no allocation
		typ := byte(s2ChunkCompressed)
		if len(block) >= n-n>>5 {
			typ = s2ChunkRaw
			dst = append(dst, chunk...)
		} else {
			dst = dst[:data+len(block)]
		}
		size := len(dst) - head - s2ChunkHeader
		dst[head], dst[head+1], dst[head+2], dst[head+3] = typ, byte(size), byte(size>>8), byte(size>>16)
		binary.LittleEndian.PutUint32(dst[head+s2ChunkHeader:], s2Checksum(chunk))
	}
	return dst
}

// s2Checksum is the framing format's masked CRC-32C of a chunk's decompressed bytes.
func s2Checksum(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// Reader decodes records of either compression. It reuses its buffers and zstd decoder,
// except that a failed Decode drops buffers larger than 1 MiB, so that a damaged record
// does not pin what it made the Reader allocate. It is not safe for concurrent use.
type Reader struct {
	dec  *zstd.Decoder
	raw  []byte
	offs []uint32 // start of each message in raw; offs[count] is the end sentinel
}

// keepAfterError is the largest buffer a Reader keeps after a failed Decode.
const keepAfterError = 1 << 20

// NewReader returns a Reader.
func NewReader() *Reader {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxRawSize),
		zstd.WithDecodeAllCapLimit(true), // decode no more than the buffer sized to rawLen holds
	)
	if err != nil {
		panic(fmt.Sprintf("segment: zstd decoder: %v", err))
	}
	return &Reader{dec: dec}
}

// Decode checks rec completely (header, CRC, decompression, framing) and returns its
// messages. The Batch refers to the Reader's buffers and is valid until the next Decode.
// Every error wraps ErrCorrupt. A record beyond the format limits is refused before any
// decompression, and decompression never produces more than the header's raw length.
func (r *Reader) Decode(rec []byte) (Batch, error) {
	b, err := r.decode(rec)
	if err != nil {
		if cap(r.raw) > keepAfterError {
			r.raw = nil
		}
		if cap(r.offs)*4 > keepAfterError {
			r.offs = nil
		}
	}
	return b, err
}

// DecodeOwned is Decode with the messages in a buffer of their own: the Reader never
// reuses it, so the slices Message returns stay valid and unchanged after later calls (the
// caller may keep them, and each keeps the whole buffer from the garbage collector). The
// Batch itself is valid only until the next call, as Decode's.
func (r *Reader) DecodeOwned(rec []byte) (Batch, error) {
	r.raw = nil
	b, err := r.Decode(rec)
	r.raw = nil
	return b, err
}

func (r *Reader) decode(rec []byte) (Batch, error) {
	// Verify refuses a count or raw length beyond the format limits, so nothing below
	// allocates or decompresses more than MaxRawSize + 4×MaxCount bytes.
	h, err := Verify(rec)
	if err != nil {
		return Batch{}, err
	}
	// Check the payload's structure before allocating for it: a small record that claims
	// a large raw length its payload cannot produce is refused without the allocation.
	payload := rec[HeaderSize:]
	switch h.Compression {
	case S2:
		err = checkS2(payload, h.RawLen)
	default:
		err = oneFrame(payload, h.RawLen)
	}
	if err != nil {
		return Batch{}, corrupt("%v: %v", h.Compression, err)
	}
	if cap(r.raw) < h.RawLen {
		r.raw = make([]byte, 0, h.RawLen)
	}
	// Capacity rawLen: a payload that decompresses to more fails rather than grows it.
	buf := r.raw[:0:h.RawLen]
	var raw []byte
	switch h.Compression {
	case S2:
		raw, err = decodeS2(buf, payload)
	default:
		raw, err = r.dec.DecodeAll(payload, buf)
	}
	if err != nil {
		return Batch{}, corrupt("%v: %v", h.Compression, err)
	}
	if len(raw) != h.RawLen {
		return Batch{}, corrupt("payload is %d bytes, header says %d", len(raw), h.RawLen)
	}
	// Count <= MaxCount and <= RawLen/4: the index takes at most 4×MaxCount+4 bytes, and
	// no more than the raw buffer, allocated once.
	if cap(r.offs) < h.Count+1 {
		r.offs = make([]uint32, 0, h.Count+1)
	}
	offs := r.offs[:0]
	pos := 0
	for i := 0; i < h.Count; i++ {
		if len(raw)-pos < lenSize {
			return Batch{}, corrupt("message %d of %d: truncated length", i, h.Count)
		}
		n := int(binary.LittleEndian.Uint32(raw[pos:]))
		pos += lenSize
		if n > len(raw)-pos {
			return Batch{}, corrupt("message %d of %d: length %d past the payload", i, h.Count, n)
		}
		offs = append(offs, uint32(pos))
		pos += n
	}
	if pos != len(raw) {
		return Batch{}, corrupt("%d trailing payload bytes", len(raw)-pos)
	}
	offs = append(offs, uint32(pos+lenSize)) // sentinel: message i ends at offs[i+1]-lenSize
	r.offs = offs
	return Batch{Header: h, raw: raw, offs: offs}, nil
}

// Close releases the zstd decoder.
func (r *Reader) Close() { r.dec.Close() }

// Batch is a decoded record.
type Batch struct {
	Header
	raw  []byte
	offs []uint32
}

// Message returns message i (0 <= i < Count). The slice aliases the Reader's buffer.
func (b Batch) Message(i int) []byte {
	return b.raw[b.offs[i] : b.offs[i+1]-lenSize]
}

// oneFrame checks that p is exactly one zstd frame that carries a content checksum and, if
// it declares its content size, declares rawLen: DecodeAll alone would also accept several
// frames and skippable frames. It also refuses a frame whose blocks cannot decompress to
// rawLen bytes (a compressed block holds at most 128 KiB), before anything is allocated.
func oneFrame(p []byte, rawLen int) error {
	var zh zstd.Header
	if err := zh.Decode(p); err != nil {
		return err
	}
	if zh.Skippable {
		return errors.New("skippable frame")
	}
	if !zh.HasCheckSum {
		return errors.New("frame without content checksum")
	}
	if zh.HasFCS && zh.FrameContentSize != uint64(rawLen) {
		return fmt.Errorf("frame declares %d bytes of content, header says %d", zh.FrameContentSize, rawLen)
	}
	pos := zh.HeaderSize
	most := 0 // the most the blocks so far can decompress to
	for {
		if len(p)-pos < 3 {
			return errors.New("truncated block header")
		}
		bh := uint32(p[pos]) | uint32(p[pos+1])<<8 | uint32(p[pos+2])<<16
		pos += 3
		size := int(bh >> 3)
		switch bh >> 1 & 3 {
		case 0: // raw block: size bytes
			most += size
		case 1: // RLE block: one byte repeated size times
			most += size
			size = 1
		default: // compressed block (or the reserved type, which the decoder refuses)
			most += zstdMaxBlock
		}
		if len(p)-pos < size {
			return errors.New("truncated block")
		}
		pos += size
		if bh&1 == 1 { // last block
			break
		}
	}
	if len(p)-pos != 4 {
		return fmt.Errorf("frame followed by %d bytes instead of a 4-byte checksum", len(p)-pos)
	}
	if most < rawLen {
		return fmt.Errorf("frame's blocks decompress to at most %d bytes, header says %d", most, rawLen)
	}
	return nil
}

// zstdMaxBlock is the most one compressed zstd block decompresses to (RFC 8878 3.1.1.2.4).
const zstdMaxBlock = 128 << 10

// s2Chunk is one data chunk of an S2 stream.
type s2Chunk struct {
	off  int    // where the chunk starts in the payload
	typ  byte   // s2ChunkCompressed or s2ChunkRaw
	sum  uint32 // stored checksum of the decompressed bytes
	data []byte // the S2 block, or the bytes themselves
	n    int    // decompressed length, 1 to s2MaxChunk
}

// nextS2Chunk splits the data chunk at the start of p (which is at off in the payload)
// from the rest, checking its type and decompressed length but not decompressing it.
func nextS2Chunk(p []byte, off int) (c s2Chunk, rest []byte, err error) {
	if len(p) < s2ChunkHeader+s2ChecksumSize {
		return c, nil, fmt.Errorf("chunk at %d: truncated header", off)
	}
	size := int(p[1]) | int(p[2])<<8 | int(p[3])<<16
	if size < s2ChecksumSize || size > len(p)-s2ChunkHeader {
		return c, nil, fmt.Errorf("chunk at %d: length %d with %d bytes left", off, size, len(p)-s2ChunkHeader)
	}
	c = s2Chunk{
		off:  off,
		typ:  p[0],
		sum:  binary.LittleEndian.Uint32(p[s2ChunkHeader:]),
		data: p[s2ChunkHeader+s2ChecksumSize : s2ChunkHeader+size],
	}
	switch c.typ {
	case s2ChunkCompressed:
		if c.n, err = s2.DecodedLen(c.data); err != nil {
			return c, nil, fmt.Errorf("chunk at %d: %v", off, err)
		}
	case s2ChunkRaw:
		c.n = len(c.data)
	default:
		return c, nil, fmt.Errorf("chunk at %d: type %#x is not a data chunk", off, c.typ)
	}
	if c.n == 0 || c.n > s2MaxChunk {
		return c, nil, fmt.Errorf("chunk at %d: decompresses to %d bytes", off, c.n)
	}
	return c, p[s2ChunkHeader+size:], nil
}

// checkS2 checks that p is an S2 stream as the package doc allows whose chunks decompress
// to rawLen bytes in all, without decompressing them.
func checkS2(p []byte, rawLen int) error {
	if !bytes.HasPrefix(p, []byte(s2Magic)) {
		return errors.New("no stream identifier")
	}
	total := 0
	for off, rest := len(s2Magic), p[len(s2Magic):]; len(rest) > 0; {
		c, next, err := nextS2Chunk(rest, off)
		if err != nil {
			return err
		}
		if total += c.n; total > rawLen {
			return fmt.Errorf("chunk at %d: decompresses past the header's raw length %d", off, rawLen)
		}
		off += len(rest) - len(next)
		rest = next
	}
	if total != rawLen {
		return fmt.Errorf("chunks decompress to %d bytes, header says %d", total, rawLen)
	}
	return nil
}

// decodeS2 decompresses the S2 stream p, which checkS2 accepted, into dst[:cap(dst)], the
// header's raw length: each chunk goes to its own part of it, so nothing is allocated.
func decodeS2(dst, p []byte) ([]byte, error) {
	raw := dst[:cap(dst)]
	pos := 0
	for off, rest := len(s2Magic), p[len(s2Magic):]; len(rest) > 0; {
		c, next, err := nextS2Chunk(rest, off)
		if err != nil {
			return nil, err
		}
		if c.n > len(raw)-pos {
			return nil, fmt.Errorf("chunk at %d: decompresses past the header's raw length %d", off, len(raw))
		}
		out := raw[pos : pos+c.n : pos+c.n]
		if c.typ == s2ChunkRaw {
			copy(out, c.data)
		} else if _, err := s2.Decode(out, c.data); err != nil {
			return nil, fmt.Errorf("chunk at %d: %v", off, err)
		}
		if got := s2Checksum(out); got != c.sum {
			return nil, fmt.Errorf("chunk at %d: checksum %#08x, stored %#08x", off, got, c.sum)
		}
		pos += c.n
		off += len(rest) - len(next)
		rest = next
	}
	return raw[:pos], nil
}
