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
//		 | 'c'  |  1   |  0   | uint32   | uint32   | int64 unix nanos | uint32    | zstd frame
//		 +------+------+------+----------+----------+------------------+-----------+----------...
//
//	  - magic: the two bytes "pc".
//	  - ver: the format version, 1. A reader refuses any other value.
//	  - flags: reserved, must be 0.
//	  - count: the number of messages in the batch, at least 1.
//	  - rawLen: the length of the decompressed payload in bytes.
//	  - time: when the first message of the batch was spilled, in Unix nanoseconds.
//	  - crc: CRC-32C (Castagnoli) of header bytes 0..20 followed by the payload bytes.
//
// The payload is one zstd frame (with zstd's own content checksum) whose decompressed
// content is count items of
//
//	+----------------+---------------+
//	| len uint32     | message bytes |
//	+----------------+---------------+
//
// The layout, Magic, Version, HeaderSize and the meaning of every header field are part
// of the wire format: they are frozen, and testdata/golden.rec fails any drift.
//
// A record that is not exactly this (wrong magic or version, bad CRC, a zstd error, a
// payload whose items do not add up to count and rawLen) is reported as an error that
// wraps ErrCorrupt. Decoding never panics, and one record never makes it allocate more than
// about 2 × MaxRawSize bytes (the payload, and an index of 4 bytes per message).
package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

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

// MaxRawSize caps the decompressed payload of one record (64 MiB). Writers never produce
// more; readers refuse more, so hostile input cannot make them allocate without bound.
const MaxRawSize = 64 << 20

// ErrCorrupt is wrapped by every error that reports a malformed record.
var ErrCorrupt = errors.New("segment: corrupt record")

// ErrTooLarge is returned by Writer.Add when a message would make the batch exceed
// MaxRawSize.
var ErrTooLarge = errors.New("segment: message too large")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// Header is the decoded fixed part of a record.
type Header struct {
	Count  int   // messages in the record
	RawLen int   // decompressed payload length
	Time   int64 // unix nanoseconds when the batch's first message was spilled
}

// ParseHeader checks magic, version and flags of rec and returns its header. It does not
// verify the CRC; Reader.Decode and Verify do.
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
	if rec[3] != 0 {
		return Header{}, corrupt("unknown flags %#x", rec[3])
	}
	// Compare as unsigned 64-bit numbers: with a 32-bit int the conversions below could
	// wrap to negative values, and count*lenSize could overflow.
	count := binary.LittleEndian.Uint32(rec[4:])
	rawLen := binary.LittleEndian.Uint32(rec[8:])
	if count == 0 {
		return Header{}, corrupt("record holds no messages")
	}
	if rawLen > MaxRawSize || uint64(rawLen) < uint64(count)*lenSize {
		return Header{}, corrupt("raw length %d does not fit %d messages", rawLen, count)
	}
	return Header{
		Count:  int(count),
		RawLen: int(rawLen),
		Time:   int64(binary.LittleEndian.Uint64(rec[12:])),
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
	max   int // largest message accepted; 0: no limit but MaxRawSize
}

// SetMaxMessage makes Add refuse, with ErrTooLarge, a message longer than n bytes
// (n <= 0: no limit but MaxRawSize).
func (w *Writer) SetMaxMessage(n int) { w.max = n }

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
// push the batch past MaxRawSize, the batch is left as it was.
func (w *Writer) Add(encode func(dst []byte) ([]byte, error)) (int, error) {
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

// Reset empties the batch, keeping its buffers.
func (w *Writer) Reset() {
	w.raw = w.raw[:0]
	w.count = 0
	w.time = 0
}

// Record compresses the batch and returns the finished record. The slice is valid until
// the next call to Record or Reset. Record on an empty batch returns nil.
func (w *Writer) Record() []byte {
	if w.count == 0 {
		return nil
	}
	out := append(w.out[:0], make([]byte, HeaderSize)...)
	out = w.enc.EncodeAll(w.raw, out)
	out[0], out[1], out[2], out[3] = Magic0, Magic1, Version, 0
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

// Reader decodes records. It reuses its buffers and zstd decoder; it is not safe for
// concurrent use.
type Reader struct {
	dec  *zstd.Decoder
	raw  []byte
	offs []uint32 // start of each message in raw; offs[count] is the end sentinel
}

// NewReader returns a Reader.
func NewReader() *Reader {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(MaxRawSize),
	)
	if err != nil {
		panic(fmt.Sprintf("segment: zstd decoder: %v", err))
	}
	return &Reader{dec: dec}
}

// Decode checks rec completely (header, CRC, decompression, framing) and returns its
// messages. The Batch refers to the Reader's buffers and is valid until the next Decode.
// Every error wraps ErrCorrupt.
func (r *Reader) Decode(rec []byte) (Batch, error) {
	h, err := Verify(rec)
	if err != nil {
		return Batch{}, err
	}
	if cap(r.raw) < h.RawLen {
		r.raw = make([]byte, 0, h.RawLen)
	}
	if err := oneFrame(rec[HeaderSize:]); err != nil {
		return Batch{}, corrupt("zstd: %v", err)
	}
	raw, err := r.dec.DecodeAll(rec[HeaderSize:], r.raw[:0])
	if err != nil {
		return Batch{}, corrupt("zstd: %v", err)
	}
	if len(raw) != h.RawLen {
		return Batch{}, corrupt("payload is %d bytes, header says %d", len(raw), h.RawLen)
	}
	r.raw = raw
	// Count <= RawLen/4, so the index takes at most RawLen+4 bytes, allocated once.
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

// oneFrame checks that p is exactly one zstd frame that carries a content checksum:
// DecodeAll alone would also accept several frames and skippable frames.
func oneFrame(p []byte) error {
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
	pos := zh.HeaderSize
	for {
		if len(p)-pos < 3 {
			return errors.New("truncated block header")
		}
		bh := uint32(p[pos]) | uint32(p[pos+1])<<8 | uint32(p[pos+2])<<16
		pos += 3
		size := int(bh >> 3)
		if bh>>1&3 == 1 { // RLE block: one byte repeated size times
			size = 1
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
	return nil
}
