package pelichan

import "encoding/json"

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
	// Bytes stores []byte messages as they are. Decoded messages are fresh copies.
	Bytes Codec[[]byte] = bytesCodec{}
	// String stores string messages as their bytes.
	String Codec[string] = stringCodec{}
)

// JSON returns a codec that stores messages as JSON (encoding/json).
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }
