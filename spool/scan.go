package spool

import (
	"encoding/binary"

	"github.com/pelichan/pelichan/segment"
)

// entry is one record found in a segment file.
type entry struct {
	index  uint64 // 1-based ordinal among the entries of the file
	offset int64  // byte offset of the entry's framing (the uvarint length)
	data   []byte // the record; aliases the file buffer
	hdr    segment.Header
}

// damage is a stretch of a segment file that holds no valid record.
type damage struct {
	index  uint64 // the index the damaged entry would have had
	offset int64
	length int64
	err    error
}

// scanFile walks tidwall/wal's binary framing (uvarint length, then the data) over buf,
// checking every record's header and CRC. Where the framing or a record is bad it looks
// for the next offset at which a valid framed record starts, so that damage costs only the
// bytes it touches. good is the length of the prefix that is a clean run of valid entries
// (the place to cut a torn tail). Entries found after damage keep counting indexes as if
// the damaged stretch were one entry.
func scanFile(buf []byte) (entries []entry, bad []damage, good int64) {
	pos := 0
	index := uint64(1)
	clean := true
	for pos < len(buf) {
		if rec, n, ok := frameAt(buf, pos); ok {
			h, err := segment.Verify(rec)
			if err == nil {
				entries = append(entries, entry{index: index, offset: int64(pos), data: rec, hdr: h})
				index++
				pos += n
				if clean {
					good = int64(pos)
				}
				continue
			}
		}
		// Damage starts here: find the next valid framed record.
		clean = false
		start := pos
		next := len(buf)
		for p := pos + 1; p < len(buf); p++ {
			if rec, _, ok := frameAt(buf, p); ok {
				if _, err := segment.Verify(rec); err == nil {
					next = p
					break
				}
			}
		}
		_, _, framed := frameAt(buf, start)
		err := errTornTail
		if next < len(buf) || framed {
			err = errBadRecord
		}
		bad = append(bad, damage{index: index, offset: int64(start), length: int64(next - start), err: err})
		index++
		pos = next
	}
	return entries, bad, good
}

// frameAt reads one framed entry at pos. ok is false if the length is malformed or runs
// past the buffer.
func frameAt(buf []byte, pos int) (rec []byte, n int, ok bool) {
	size, k := binary.Uvarint(buf[pos:])
	if k <= 0 || size < segment.HeaderSize || size > uint64(len(buf)-pos-k) {
		return nil, 0, false
	}
	// A record starts with the magic: checking it here keeps the resync scan cheap.
	rec = buf[pos+k : pos+k+int(size)]
	if rec[0] != segment.Magic0 || rec[1] != segment.Magic1 {
		return nil, 0, false
	}
	return rec, k + int(size), true
}
