package pelichan

import "encoding/json"

// Codec turns messages into bytes for the spool and back. Its methods are called from
// several goroutines at once (the compressors, the decoders, Store's callers): they must
// be safe for concurrent use.
type Codec[T any] interface {
	// Encode appends v's encoding to dst and returns the extended slice.
	Encode(dst []byte, v T) ([]byte, error)
	// Decode returns the message encoded in data. It must not keep a reference to data.
	Decode(data []byte) (T, error)
}

type bytesCodec struct{}

func (bytesCodec) Encode(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (bytesCodec) Decode(data []byte) ([]byte, error) {
	return append(make([]byte, 0, len(data)), data...), nil
}

func (bytesCodec) decodeShared(data []byte) []byte { return data[:len(data):len(data)] }

// sharedDecoder is a built-in codec that can return a message that refers to data, for
// data that nothing else writes or reuses (segment.Reader.DecodeOwned's buffer): no copy
// and no allocation per message. Only Bytes: a []byte consumer expects a slice to share its
// memory, while a string's substrings kept as map keys, say, would each keep a whole batch.
type sharedDecoder[T any] interface {
	decodeShared(data []byte) T
}

type stringCodec struct{}

func (stringCodec) Encode(dst []byte, v string) ([]byte, error) { return append(dst, v...), nil }
func (stringCodec) Decode(data []byte) (string, error)          { return string(data), nil }

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Encode(dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

func (jsonCodec[T]) Decode(data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

var (
	// Bytes stores []byte messages as they are.
	//
	// Messages read back from the spool are the consumer's to keep and change: the Chan
	// never writes to or reuses their memory. Those of one stored batch share one
	// allocation, each with its capacity cut at its end (appending to one never writes into
	// another), so a message kept, or a slice of it, keeps its whole batch in memory: the
	// batch size of the Chan that wrote it (WithBatchBytes, 64 KiB by default), or one
	// message larger than that. Use bytes.Clone to keep one on its own.
	//
	// A slice sent on src is not copied: the Chan reads it to store it (spilled, written
	// ahead, or a copy of one that waits in Out or unacknowledged past the linger time)
	// until it is done, and may hand it to the consumer as it is. Neither the producer nor
	// the consumer may change it until then.
	Bytes Codec[[]byte] = bytesCodec{}
	// String stores string messages as their bytes. Each message read back is a string of
	// its own.
	String Codec[string] = stringCodec{}
)

// JSON returns a codec that stores messages as JSON (encoding/json).
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }
