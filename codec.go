package pelichan

import (
	"encoding/json"
	"unsafe"
)

// Codec turns messages into bytes for the spool and back.
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
// and no allocation per message.
type sharedDecoder[T any] interface {
	decodeShared(data []byte) T
}

type stringCodec struct{}

func (stringCodec) decodeShared(data []byte) string {
	return unsafe.String(unsafe.SliceData(data), len(data))
}

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
	// Bytes stores []byte messages as they are. Decoded messages are the consumer's to
	// keep and change: the Chan never writes to or reuses their memory. Those read back
	// from one stored batch share one allocation, each with its capacity cut at its end
	// (appending to one never writes into another): keeping one keeps its batch's memory
	// (up to WithBatchBytes) from the garbage collector; copy it to keep only its own.
	Bytes Codec[[]byte] = bytesCodec{}
	// String stores string messages as their bytes. Those read back from one stored
	// batch share one allocation, as Bytes' do.
	String Codec[string] = stringCodec{}
)

// JSON returns a codec that stores messages as JSON (encoding/json).
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }
