package pelichan

// This file is the Chan's half of recovery: what a Chan knows about the stored messages it
// hands out (which are done, which were handed out), what it persists of that beside the
// spool's cursor, and what New makes of it. The spool's half (torn tails, damaged
// records, the cursor file) is in package spool.
//
// The read position is one thing, the tracker: the spool's cursor names the first record
// not wholly done (every message before it is done), and the tracker adds, for the records
// after it that the Chan has handed out from, which of their messages are done. Messages
// are done out of order (acknowledgements come in any order; a message written to the
// spool while it waited in Out is done when the consumer takes it), so the cursor alone
// cannot say it. At every checkpoint (every 100 ms while something changed) and at Close,
// the cursor is saved with the tracker's done sets; after a crash or a restart, reading
// starts at the cursor and skips exactly the messages recorded as done. So:
//   - on the graceful path nothing done is delivered again, and every message not done
//     is (at least once: a delivered message that was not acknowledged comes again);
//   - after a crash, messages done since the last checkpoint may come again;
//   - a message is delivered again with the same MsgID, because it is read from the same
//     place.
//
// Records are keyed by segment and byte offset (spool.Cursor.Index), which damage to other
// records cannot change, and offsets order records as the spool reads them. Done sets
// saved before positions were byte offsets (with a spool cursor file of version 1 or 2)
// are keyed by entry index: they match no record now (and the CRC would refuse a wrong
// one), so the messages they marked done past the cursor are delivered again once
// (duplicates, never loss); the cursor itself is translated by the spool.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

// recState is what the tracker knows of one record.
type recState struct {
	key    recKey
	crc    uint32 // the record's CRC: tells it from another record at the same place
	count  int
	done   int      // messages done
	bits   []uint64 // done messages; nil while none is
	sent   int      // its messages before this index were handed out (for Redelivered after a restart)
	before int      // an earlier Chan handed out its messages before this index
	runs   []run    // from the cursor file, until the reader reaches the record (bits then)
}

// run is a stretch of done messages: [start, start+n).
type run struct{ start, n int }

func (r *recState) isDone(i int) bool {
	if r.bits == nil {
		for _, x := range r.runs {
			if i >= x.start && i < x.start+x.n {
				return true
			}
		}
		return false
	}
	return r.bits[i/64]&(1<<(i%64)) != 0
}

// materialize turns the runs read from the cursor file into the done bitmap.
func (r *recState) materialize() {
	runs := r.runs
	r.runs, r.done = nil, 0
	for _, x := range runs {
		for i := x.start; i < x.start+x.n; i++ {
			r.mark(i)
		}
	}
}

// mark records message i as done; false if it was already.
func (r *recState) mark(i int) bool {
	if i < 0 || i >= r.count || r.isDone(i) {
		return false
	}
	if r.bits == nil {
		r.bits = make([]uint64, (r.count+63)/64)
	}
	r.bits[i/64] |= 1 << (i % 64)
	r.done++
	return true
}

func (r *recState) full() bool { return r.done >= r.count }

// tracker is the read position: see the file comment. It is owned by the disk goroutine.
//
// Invariants: recs holds, in spool order, every record the reader has reached since the
// first one not wholly done; ahead holds records written by this Chan and handed out from
// memory that the reader has not reached yet (they are never read back: when the reader
// reaches them they move to recs); pre holds what the cursor file said of records past the
// cursor, until the reader reaches them (or reads everything: lost).
type tracker struct {
	recs    []*recState
	ahead   map[recKey]*recState
	pre     []*recState  // by key
	popped  *recKey      // the last record taken off recs, wholly done
	acked   spool.Cursor // the cursor last returned by advance
	start   spool.Cursor // the cursor at open
	changed bool         // since the last checkpoint
	scanned func(seg uint64) bool
	// passed: what preDone counted of the records of segment seg (counted from its meta
	// file) that reached passed without finding them, for unfound.
	passed struct {
		seg uint64
		n   int64
	}
}

// newTracker starts from the done sets saved with the cursor (extra), keeping those of
// records at or after the cursor that the spool may hold (holds: see spool.Spool.Holds; a
// crash can lose the tail of the segment being written, whose records Open does not
// count, and their done messages must not be taken off the stored ones).
//
// scanned says whether a segment's counts come from reading its file, so that a record
// the reader does not find in it was never counted: the done messages the cursor file
// marked in such a record were taken off OnDisk at open wrongly and are given back
// (reached, lost). In a segment counted from its meta file they were counted, and stay
// taken off.
func newTracker(extra []byte, cursor spool.Cursor, holds func(seg, off uint64) bool, scanned func(seg uint64) bool) (*tracker, error) {
	t := &tracker{ahead: map[recKey]*recState{}, start: cursor, acked: cursor, scanned: scanned}
	if len(extra) == 0 {
		return t, nil
	}
	recs, err := decodeDone(extra)
	if err != nil {
		return t, err
	}
	for _, r := range recs {
		if !r.key.less(recKey{cursor.Seg, cursor.Index}) && holds(r.key.seg, r.key.index) {
			t.pre = append(t.pre, r)
		}
	}
	slices.SortFunc(t.pre, func(a, b *recState) int { return cmpKey(a.key, b.key) })
	t.pre = slices.CompactFunc(t.pre, func(a, b *recState) bool { return a.key == b.key })
	return t, nil
}

func cmpKey(a, b recKey) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// preDone is how many messages the cursor file marks done past the cursor: stored, but
// not to be delivered.
func (t *tracker) preDone() int64 {
	var n int64
	for _, r := range t.pre {
		n += t.preCount(r)
	}
	return n
}

// preCount is what preDone counts of r.
func (t *tracker) preCount(r *recState) int64 {
	n := int64(r.done)
	if r.key == (recKey{t.start.Seg, t.start.Index}) {
		// The spool counts the cursor's offset as delivered already.
		for i := range min(int(t.start.Offset), r.count) {
			if r.isDone(i) {
				n--
			}
		}
	}
	return n
}

// unfound forgets what the cursor file said of the records of segment seg the reader did
// not find (it has left seg: those still in pre were not found), and returns how many
// messages preDone counted of them (with those reached passed).
func (t *tracker) unfound(seg uint64) int64 {
	var n int64
	if t.passed.seg == seg {
		n, t.passed.n = t.passed.n, 0
	}
	// pre is sorted by key: seg's records are one run of it.
	lo, _ := slices.BinarySearchFunc(t.pre, recKey{seg: seg}, func(r *recState, k recKey) int { return cmpKey(r.key, k) })
	hi := lo
	for hi < len(t.pre) && t.pre[hi].key.seg == seg {
		n += t.preCount(t.pre[hi])
		hi++
	}
	if hi > lo {
		t.pre = slices.Delete(t.pre, lo, hi)
		t.changed = true
	}
	return n
}

// reached records that the reader returned the record at key (count messages, checksum
// crc, the first offset of them done already per an old-style cursor). It returns the record's state,
// whether it is to be skipped (written and handed out by this Chan, or wholly done), and
// how many messages the cursor file marked done in records the reader passed without
// finding them (counted out of OnDisk at open, wrongly).
func (t *tracker) reached(key recKey, count int, crc uint32, offset int) (*recState, bool, int) {
	if r, ok := t.ahead[key]; ok {
		delete(t.ahead, key)
		t.insert(r)
		return r, true, 0
	}
	gone := 0
	for len(t.pre) > 0 && t.pre[0].key.less(key) {
		// A record the reader passed without finding it (lost, or damaged): its done
		// messages were not counted if its segment was counted from its file.
		if r := t.pre[0]; t.scanned(r.key.seg) {
			gone += r.done
		} else {
			if t.passed.seg != r.key.seg {
				t.passed.seg, t.passed.n = r.key.seg, 0
			}
			t.passed.n += t.preCount(r)
		}
		t.pre = t.pre[1:]
		t.changed = true
	}
	var r *recState
	ok := len(t.pre) > 0 && t.pre[0].key == key
	if ok {
		r = t.pre[0]
		t.pre = t.pre[1:]
		r.materialize()
		if r.count != count || r.crc != crc {
			// Not the record the cursor file meant (damage before it shifted the entry
			// indexes): trust nothing of it. Duplicates, never loss.
			gone += r.done
			r = &recState{key: key, count: count, crc: crc}
		}
		r.before = r.sent // still handed out: by an earlier Chan
	} else {
		r = &recState{key: key, count: count, crc: crc}
	}
	// An old-style cursor's offset: the spool counts those as delivered already.
	for i := range min(offset, count) {
		r.mark(i)
	}
	t.insert(r)
	t.changed = true
	return r, r.full(), gone
}

// lost forgets what the cursor file said of records the reader never found, once it has
// read everything stored, by the rule reached applies to the records it passes: the done
// messages of those in segments counted from their files are given back (returned).
// Records of segments no longer in the spool (has) stay: prune accounts for the ones a
// drop policy took.
func (t *tracker) lost(has func(seg uint64) bool) int {
	gone := 0
	t.pre = slices.DeleteFunc(t.pre, func(r *recState) bool {
		if !has(r.key.seg) {
			return false
		}
		if t.scanned(r.key.seg) {
			gone += r.done
		}
		t.changed = true
		return true
	})
	return gone
}

// aheadIn is how many messages the records of segment seg in ahead hold: handed out from
// memory, and counted as they are done, whether or not the reader finds them.
func (t *tracker) aheadIn(seg uint64) int64 {
	var n int64
	for k, r := range t.ahead {
		if k.seg == seg {
			n += int64(r.count)
		}
	}
	return n
}

// register records a record written by this Chan whose messages are handed out from
// memory (write-ahead, or written while they waited for the consumer), of which the first
// sent are handed out already.
func (t *tracker) register(key recKey, count int, crc uint32, sent int) *recState {
	r := &recState{key: key, count: count, crc: crc, sent: sent}
	t.ahead[key] = r
	t.changed = true
	return r
}

func (t *tracker) insert(r *recState) {
	n := len(t.recs)
	if n == 0 || t.recs[n-1].key.less(r.key) {
		t.recs = append(t.recs, r)
		return
	}
	i, _ := slices.BinarySearchFunc(t.recs, r.key, func(a *recState, k recKey) int { return cmpKey(a.key, k) })
	t.recs = slices.Insert(t.recs, i, r)
}

func (t *tracker) find(k recKey) *recState {
	if r, ok := t.ahead[k]; ok {
		return r
	}
	i, ok := slices.BinarySearchFunc(t.recs, k, func(a *recState, k recKey) int { return cmpKey(a.key, k) })
	if ok {
		return t.recs[i]
	}
	return nil
}

// done marks a message done. It returns false for an ID it does not track (the record
// was dropped by a full-disk or age policy meanwhile) or a message already done.
func (t *tracker) done(id MsgID) bool {
	r := t.find(id.key())
	if r == nil || !r.mark(int(id.Msg)) {
		return false
	}
	t.changed = true
	return true
}

// advance takes wholly done records off the front. It returns the cursor to acknowledge
// in the spool, and false if it did not move. The cursor names the first record not wholly
// done and, as its Offset, how many of that record's first messages are done (the spool
// counts them delivered, and copies only the rest when a front segment replaces it).
func (t *tracker) advance() (spool.Cursor, bool) {
	for len(t.recs) > 0 && t.recs[0].full() {
		k := t.recs[0].key
		t.popped = &k
		t.recs[0] = nil
		t.recs = t.recs[1:]
	}
	var c spool.Cursor
	switch {
	case len(t.recs) > 0:
		r := t.recs[0]
		off := 0
		for off < r.count && r.isDone(off) {
			off++
		}
		c = spool.Cursor{Seg: r.key.seg, Index: r.key.index, Offset: uint32(off)}
	case t.popped != nil:
		// One byte past the popped record's offset: spool.Ack counts every record of the
		// segment before it delivered, the popped one included, and no record starts
		// there (a record's framing takes more than one byte).
		c = spool.Cursor{Seg: t.popped.seg, Index: t.popped.index + 1}
	default:
		return c, false
	}
	if c == t.acked {
		return c, false
	}
	t.acked = c
	return c, true
}

// doneIn returns what the tracker knows to be done of the records of segment seq that the
// reader reached this session: done(off, i) for message i of the record at byte offset off.
// It is a copy: dropSeg may follow. (What the cursor file marked done in records not
// reached yet is left out: delivered again, never lost.)
func (t *tracker) doneIn(seq uint64) func(off uint64, i int) bool {
	m := map[uint64]*recState{}
	for _, r := range t.recs {
		if r.key.seg == seq {
			m[r.key.index] = r
		}
	}
	for k, r := range t.ahead {
		if k.seg == seq {
			m[k.index] = r
		}
	}
	return func(off uint64, i int) bool {
		r := m[off]
		return r != nil && r.isDone(i)
	}
}

// dropSeg forgets the records of segment seq.
func (t *tracker) dropSeg(seq uint64) {
	t.recs = slices.DeleteFunc(t.recs, func(r *recState) bool { return r.key.seg == seq })
	for k := range t.ahead {
		if k.seg == seq {
			delete(t.ahead, k)
		}
	}
	t.pre = slices.DeleteFunc(t.pre, func(r *recState) bool { return r.key.seg == seq })
	t.changed = true
}

// sentUpTo records that the messages of id's record up to id were handed out.
func (t *tracker) sentUpTo(id MsgID) {
	if id.IsZero() {
		return
	}
	if r := t.find(id.key()); r != nil && int(id.Msg) >= r.sent {
		r.sent = int(id.Msg) + 1
		t.changed = true
	}
}

// prune forgets what the cursor file said of records in segments that are gone (dropped by
// the full-disk or age policies) and returns how many done messages that was.
func (t *tracker) prune(has func(seg uint64) bool) int {
	gone := 0
	t.pre = slices.DeleteFunc(t.pre, func(r *recState) bool {
		if has(r.key.seg) {
			return false
		}
		gone += r.done
		return true
	})
	if gone > 0 {
		t.changed = true
	}
	return gone
}

// pins reports whether records of segment seq are handed out from memory.
func (t *tracker) pins(seq uint64) bool {
	for k := range t.ahead {
		if k.seg == seq {
			return true
		}
	}
	return false
}

// encode returns the done sets to save with the cursor: every record past the cursor with
// a message done or handed out, including what the cursor file said of records not reached
// yet.
func (t *tracker) encode() []byte {
	var all []*recState
	for _, r := range t.recs {
		if r.done > 0 || r.sent > 0 {
			all = append(all, r)
		}
	}
	for _, r := range t.ahead {
		all = append(all, r)
	}
	all = append(all, t.pre...)
	return encodeDone(all, t.acked)
}

// The done sets, saved as the spool cursor's extra bytes:
//
//	"pd" | version 3 | uvarint records | per record:
//	    uvarint seg | uvarint index | uvarint count | crc u32 (the record's CRC-32C, little
//	    endian, as in its header) | uvarint sent (its messages before this index were
//	    handed out) |
//	    uvarint runs | per run: uvarint start (from the previous run's end) | uvarint length
//
// A run is a stretch of done messages. The spool's cursor file has its own CRC.
const doneVersion = 3

// encodeDone leaves out the messages of the cursor's record that its offset covers (the
// spool counts them delivered).
func encodeDone(recs []*recState, cursor spool.Cursor) []byte {
	b := []byte{'p', 'd', doneVersion}
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = binary.AppendUvarint(b, r.key.seg)
		b = binary.AppendUvarint(b, r.key.index)
		b = binary.AppendUvarint(b, uint64(r.count))
		b = binary.LittleEndian.AppendUint32(b, r.crc)
		b = binary.AppendUvarint(b, uint64(r.sent))
		var runs [][2]int
		from := 0
		if r.key == (recKey{cursor.Seg, cursor.Index}) {
			from = int(cursor.Offset)
		}
		if r.bits == nil && r.runs != nil {
			for _, x := range r.runs {
				if x.start+x.n > from {
					s := max(x.start, from)
					runs = append(runs, [2]int{s, x.start + x.n - s})
				}
			}
		}
		for i := from; r.bits != nil && i < r.count; {
			if !r.isDone(i) {
				i++
				continue
			}
			j := i
			for j < r.count && r.isDone(j) {
				j++
			}
			runs = append(runs, [2]int{i, j - i})
			i = j
		}
		b = binary.AppendUvarint(b, uint64(len(runs)))
		end := 0
		for _, run := range runs {
			b = binary.AppendUvarint(b, uint64(run[0]-end))
			b = binary.AppendUvarint(b, uint64(run[1]))
			end = run[0] + run[1]
		}
	}
	return b
}

// Bounds of the done sets read from a cursor file, so that a damaged or hostile one cannot
// make New take time or memory without bound: a record claims at most segment.MaxCount
// messages, and its done messages are kept as runs (a bitmap only once the reader reaches
// the record, whose count and CRC must match). Far more than any Chan writes: the done sets
// cover at most the deliveries out at once.
const (
	maxDoneRecords = 1 << 20
	maxDoneRuns    = 1 << 22
)

var errDoneSet = errors.New("pelichan: done sets in the cursor file")

func decodeDone(b []byte) ([]*recState, error) {
	if len(b) < 3 || b[0] != 'p' || b[1] != 'd' || b[2] != doneVersion {
		return nil, fmt.Errorf("%w: %w: not version %d", ErrCorrupt, errDoneSet, doneVersion)
	}
	p := b[3:]
	bad := fmt.Errorf("%w: %w: truncated or damaged", ErrCorrupt, errDoneSet)
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	n, ok := next()
	if !ok || n > uint64(len(p)) || n > maxDoneRecords {
		return nil, bad
	}
	var total uint64
	recs := make([]*recState, 0, n)
	for range n {
		seg, ok1 := next()
		index, ok2 := next()
		count, ok3 := next()
		if !ok1 || !ok2 || !ok3 || len(p) < 4 || count == 0 || count > segment.MaxCount {
			return nil, bad
		}
		r := &recState{key: recKey{seg, index}, count: int(count), crc: binary.LittleEndian.Uint32(p)}
		p = p[4:]
		sent, ok := next()
		if !ok || sent > count {
			return nil, bad
		}
		r.sent = int(sent)
		runs, ok := next()
		if !ok || runs > count {
			return nil, bad
		}
		if total += runs; total > maxDoneRuns {
			return nil, bad
		}
		end := uint64(0)
		for range runs {
			start, ok1 := next()
			length, ok2 := next()
			if !ok1 || !ok2 || length == 0 || start > count || length > count || end+start+length > count {
				return nil, bad
			}
			r.runs = append(r.runs, run{int(end + start), int(length)})
			r.done += int(length)
			end += start + length
		}
		recs = append(recs, r)
	}
	if len(p) != 0 {
		return nil, bad
	}
	return recs, nil
}
