package pelichan

import (
	"strconv"

	"github.com/pelichan/pelichan/spool"
)

// MsgID is a message's place in the spool: its segment, the record's byte offset in it
// and the message's position in the record. It is comparable and small. A message delivered from
// disk, or in write-ahead mode, has the same ID every time it is delivered, before and
// after any crash, and IDs never repeat within a spool directory's life (segment numbers
// are never reused). Damage to other records of the segment does not change it: a record
// is named by where it starts in the file, not by how many records precede it. The zero
// MsgID means the message was never stored.
type MsgID struct {
	Seg   uint64 // segment number
	Index uint32 // the record's byte offset in the segment (of its framing in the WAL file; 0 for the first)
	Msg   uint32 // the message's position in the record (0-based)
}

// IsZero reports whether id is the zero MsgID: a message that was never stored.
func (id MsgID) IsZero() bool { return id == MsgID{} }

// String returns a short text form, "SEG.OFFSET.MSG" in decimal (for example
// "4294967297.1536.3": message 3 of the record at byte offset 1536 of segment
// 4294967297), that a sink can use as an idempotency key. It is "" for the zero MsgID.
func (id MsgID) String() string {
	if id.IsZero() {
		return ""
	}
	b := make([]byte, 0, 32)
	b = strconv.AppendUint(b, id.Seg, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(id.Index), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(id.Msg), 10)
	return string(b)
}

// recKey names a record: its segment and byte offset (spool.Cursor.Index).
type recKey struct {
	seg   uint64
	index uint64
}

func keyOf(c spool.Cursor) recKey { return recKey{c.Seg, c.Index} }

func (k recKey) less(o recKey) bool {
	return k.seg < o.seg || (k.seg == o.seg && k.index < o.index)
}

func (k recKey) id(msg int) MsgID { return MsgID{Seg: k.seg, Index: uint32(k.index), Msg: uint32(msg)} }

func (id MsgID) key() recKey { return recKey{id.Seg, uint64(id.Index)} }
