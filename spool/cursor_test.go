package spool

import (
	"encoding/binary"
	"hash/crc32"
)

// encodeCursorV1 writes a cursor file of version 1, the format before version 2 (which
// Open still reads, and never writes).
func encodeCursorV1(c Cursor) []byte {
	b := make([]byte, cursorV1Size)
	copy(b, "pcur")
	b[4] = 1
	binary.LittleEndian.PutUint64(b[8:], c.Seg)
	binary.LittleEndian.PutUint64(b[16:], c.Index)
	binary.LittleEndian.PutUint32(b[24:], c.Offset)
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// encodeCursorV3 writes cf as a version 3 file (the layout of version 4 without the
// delivered count), as the code before version 4 did.
func encodeCursorV3(cf cursorFile) []byte {
	n := len(cf.extra)
	b := make([]byte, cursorV2Fixed+n)
	copy(b, "pcur")
	b[4] = 3
	binary.LittleEndian.PutUint64(b[8:], cf.pos.Seg)
	binary.LittleEndian.PutUint64(b[16:], cf.pos.Index)
	binary.LittleEndian.PutUint32(b[24:], cf.pos.Offset)
	binary.LittleEndian.PutUint64(b[28:], cf.high)
	binary.LittleEndian.PutUint64(b[36:], cf.low)
	binary.LittleEndian.PutUint32(b[44:], uint32(n))
	copy(b[48:], cf.extra)
	binary.LittleEndian.PutUint32(b[48+n:], crc32.Checksum(b[:48+n], castagnoli))
	return b
}

// encodeCursorV2 writes cf as a version 2 file (the layout of version 3, whose position
// is an entry index), as the code before byte offsets did.
func encodeCursorV2(cf cursorFile) []byte {
	b := encodeCursorV3(cf)
	b[4] = 2
	n := len(b) - 4
	binary.LittleEndian.PutUint32(b[n:], crc32.Checksum(b[:n], castagnoli))
	return b
}
