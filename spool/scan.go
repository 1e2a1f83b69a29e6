package spool

import (
	"bytes"
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
	gaveUp bool // the stretch runs to the end because scanFile stopped looking (see there)
}

// scanFile walks tidwall/wal's binary framing (uvarint length, then the data) over buf,
// checking every record's header and CRC. Where the framing or a record is bad it looks
// for the next offset at which a valid framed record starts, so that damage costs only the
// bytes it touches. good is the length of the prefix that is a clean run of valid entries
// (the place to cut a torn tail). Entries found after damage keep counting indexes as if
// the damaged stretch were one entry.
//
// The work is bounded whatever buf holds. Looking for the next valid record jumps from one
// occurrence of the record magic to the next (every candidate offset is one of the ten
// before an occurrence, where a uvarint length would end at the magic), skips candidates
// whose length runs past the end of buf or whose header is impossible, and checks each
// remaining candidate's CRC at most once. The CRCs checked add up to at most
// verifyBudget(len(buf)) bytes: a file crafted to hold a plausible header every few bytes
// (each claiming megabytes, for a CRC over most of the file) exhausts it, and then the
// rest of the file is one damaged stretch (marked gaveUp: no torn tail, never cut).
func scanFile(buf []byte) (entries []entry, bad []damage, good int64) {
	sc := scanner{buf: buf, budget: verifyBudget(len(buf))}
	pos := 0
	index := uint64(1)
	clean := true
	for pos < len(buf) {
		if rec, n, h, ok := sc.valid(pos); ok {
			entries = append(entries, entry{index: index, offset: int64(pos), data: rec, hdr: h})
			index++
			pos += n
			if clean {
				good = int64(pos)
			}
			continue
		}
		// Damage starts here: find the next valid framed record.
		clean = false
		start := pos
		next := sc.resync(pos + 1)
		_, _, framed := frameAt(buf, start)
		gaveUp := sc.gaveUp && next == len(buf)
		err := errTornTail
		switch {
		case gaveUp:
			err = errGaveUp
		case next < len(buf) || framed:
			err = errBadRecord
		}
		bad = append(bad, damage{index: index, offset: int64(start), length: int64(next - start), err: err, gaveUp: gaveUp})
		index++
		pos = next
	}
	return entries, bad, good
}

// verifyBudget is how many bytes of CRC scanFile checks at most for a buffer of n bytes:
// every byte of a file of valid records once, and much more again for resynchronising
// after damage, which in a real file meets few candidates (a random match of the two
// magic bytes, a plausible header and a length that fits). At the speed of CRC-32C
// (several GB/s) that is milliseconds for a segment.
func verifyBudget(n int) int64 { return 4*int64(n) + 16<<20 }

// scanner is scanFile's state: the CRC budget left, and the candidate a resync verified
// (the loop takes it without checking it again).
type scanner struct {
	buf    []byte
	budget int64
	gaveUp bool // the budget ran out: no more records are looked for
	// The record found by the last resync.
	at  int
	rec []byte
	n   int
	hdr segment.Header
}

// valid reports whether a valid framed record starts at pos.
func (sc *scanner) valid(pos int) ([]byte, int, segment.Header, bool) {
	if sc.rec != nil && sc.at == pos {
		rec, n, h := sc.rec, sc.n, sc.hdr
		sc.rec = nil
		return rec, n, h, true
	}
	if sc.gaveUp {
		return nil, 0, segment.Header{}, false
	}
	rec, n, ok := frameAt(sc.buf, pos)
	if !ok {
		return nil, 0, segment.Header{}, false
	}
	h, ok := sc.verify(rec)
	return rec, n, h, ok
}

// verify checks rec's header, then, within the budget, its CRC.
func (sc *scanner) verify(rec []byte) (segment.Header, bool) {
	if _, err := segment.ParseHeader(rec); err != nil {
		return segment.Header{}, false // cheap: no CRC for an impossible header
	}
	if int64(len(rec)) > sc.budget {
		sc.budget, sc.gaveUp = 0, true
		return segment.Header{}, false
	}
	sc.budget -= int64(len(rec))
	h, err := segment.Verify(rec)
	return h, err == nil
}

// maxFrameLen is the most bytes a uvarint length prefix takes (binary.Uvarint reads
// non-minimal encodings too).
const maxFrameLen = binary.MaxVarintLen64

// resync returns the first offset at or after from where a valid framed record starts,
// or len(buf). A record starts with the magic, which follows its length prefix of 1 to
// maxFrameLen bytes: only the offsets just before an occurrence of the magic can start
// one. Each candidate offset is tried once, at the occurrence where its length prefix
// ends.
func (sc *scanner) resync(from int) int {
	buf := sc.buf
	magic := []byte{segment.Magic0, segment.Magic1}
	best := -1 // the first valid candidate found so far
	for at := from + 1; at < len(buf) && !sc.gaveUp; {
		i := bytes.Index(buf[at:], magic)
		if i < 0 {
			break
		}
		q := at + i // an occurrence of the magic
		at = q + 1
		if best >= 0 && q >= best+maxFrameLen {
			break // no candidate before best has its magic this far on
		}
		hi := q
		if best >= 0 {
			hi = min(hi, best)
		}
		for c := max(from, q-maxFrameLen); c < hi; c++ {
			rec, n, ok := frameAt(buf, c)
			if !ok || c+n-len(rec) != q {
				continue // not framed, or its length prefix does not end here
			}
			if h, ok := sc.verify(rec); ok {
				best = c
				sc.at, sc.rec, sc.n, sc.hdr = c, rec, n, h
				break
			}
			if sc.gaveUp {
				break
			}
		}
	}
	if best < 0 {
		return len(buf)
	}
	return best
}

// tornTail is Open's rule for a torn tail of the newest segment (loadSeg): one damaged
// stretch, at the end, after a clean run of entries, and not one where scanFile stopped
// looking for records.
func tornTail(buf []byte, bad []damage, good int64) bool {
	return len(bad) == 1 && bad[0].offset == good && good+bad[0].length == int64(len(buf)) && !bad[0].gaveUp
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
