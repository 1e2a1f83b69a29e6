package spool

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// bigBatches returns n batches of hard-to-compress messages, about 20 KiB of record each,
// so that a 1 MiB segment takes several of the reader's 256 KiB chunks.
func bigBatches(n int) [][]string {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]string, n)
	for i := range out {
		for j := range 20 {
			b := make([]byte, 1000)
			for k := range b {
				b[k] = byte('a' + rng.IntN(26))
			}
			out[i] = append(out[i], fmt.Sprintf("%04d-%02d-%s", i, j, b))
		}
	}
	return out
}

// Released records give their chunk buffers back for later reads (keep=0), and a record
// that is not released keeps its chunk from reuse, so its bytes stay as they were whatever
// is read after it: every record kept is checked (its bytes, CRC and messages) after the
// whole spool has been read. TestChunkReuseHoldWindow holds and releases records out of
// order while chunks are reused.
func TestStreamChunksReused(t *testing.T) {
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	bs := bigBatches(200) // about 4 MiB: four sealed segments
	for _, keepEvery := range []int{0, 2, 7} {
		t.Run(fmt.Sprintf("keep=%d", keepEvery), func(t *testing.T) {
			dir := t.TempDir()
			writeSpool(t, dir, opts, bs)
			s := mustOpen(t, dir, opts)
			defer s.Close()
			type held struct {
				r    Record
				data []byte // a copy of Data when it was returned
				i    int
			}
			var kept []held
			bufs := map[*chunk]bool{} // the chunk buffers records came from
			bytesRead, n := 0, 0
			for ; ; n++ {
				r, err := s.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if r.ck != nil {
					bufs[r.ck] = true
				}
				bytesRead += len(r.Data)
				if keepEvery > 0 && n%keepEvery == 0 {
					kept = append(kept, held{r, bytes.Clone(r.Data), n})
				} else {
					s.Release(r)
				}
				if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
					t.Fatal(err)
				}
			}
			if n != len(bs) {
				t.Fatalf("read %d records, want %d", n, len(bs))
			}
			for _, h := range kept {
				if !bytes.Equal(h.r.Data, h.data) {
					t.Fatalf("record %d (%+v) changed after it was returned, while not released", h.i, h.r.Pos)
				}
				if _, err := segment.Verify(h.r.Data); err != nil {
					t.Fatalf("record %d: %v", h.i, err)
				}
				if got := decodeRecord(t, h.r.Data); len(got) != len(bs[h.i]) || got[0] != bs[h.i][0] {
					t.Fatalf("record %d holds %q..., want %q...", h.i, got[0][:8], bs[h.i][0][:8])
				}
			}
			// 4 MiB in 256 KiB chunks is 16 reads at least; with every record released as
			// it comes, a handful of buffers serve them all.
			if chunks := bytesRead / streamChunk; keepEvery == 0 && (chunks < 12 || len(bufs) > 8) {
				t.Errorf("%d records (%d bytes, %d chunks) came from %d chunk buffers: want reuse", n, bytesRead, chunks, len(bufs))
			}
			for _, h := range kept {
				s.Release(h.r)
			}
			if n := len(s.free); n == 0 || n > freeChunks {
				t.Errorf("%d free chunk buffers after every record was released, want 1 to %d", n, freeChunks)
			}
		})
	}
}

// Holds: a segment counted from its meta file may hold a record anywhere; one whose file
// was read (the newest, unsealed at a crash) holds none at or past its last record; a
// segment not in the spool holds nothing.
func TestHolds(t *testing.T) {
	opts := Options{SegmentSize: 1 << 10, NoSync: true}
	dir := t.TempDir()
	writeSpool(t, dir, opts, batches("h", 60, 4))
	s := mustOpen(t, dir, opts)
	var segs []uint64
	var offs []uint64 // of the newest segment's records
	for {
		r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n := len(segs); n == 0 || segs[n-1] != r.Pos.Seg {
			segs, offs = append(segs, r.Pos.Seg), nil
		}
		offs = append(offs, r.Pos.Index)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(segs) < 3 || len(offs) < 2 {
		t.Fatalf("%d segments, %d records in the newest: the test needs 3 and 2", len(segs), len(offs))
	}
	newest := fmt.Sprintf("%020d", segs[len(segs)-1])
	// The crash image: the newest segment unsealed, its records after the first lost.
	if err := os.Remove(filepath.Join(dir, newest, metaName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, newest, walFile), int64(offs[1])); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, opts)
	defer s.Close()
	last := segs[len(segs)-1]
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			seq, off uint64
			want     bool
		}{
			{segs[0], 0, true},
			{segs[0], 1 << 40, true}, // counted from its meta: the spool cannot tell
			{segs[1], 1 << 40, true}, // counted in the background, or from its meta
			{last, offs[0], true},
			{last, offs[1], false}, // lost
			{last, offs[len(offs)-1], false},
			{last + 1, 0, false}, // not in the spool
		} {
			if got := s.Holds(c.seq, c.off); got != c.want {
				t.Errorf("%s: Holds(%d, %d) = %v, want %v", when, c.seq, c.off, got, c.want)
			}
		}
	}
	check("at open")
	// Read through (not acknowledged: every segment stays): the reader now knows where
	// each segment ends, and a segment counted from its meta still says true past it.
	drainNoAck := func() {
		for {
			if _, err := s.Next(); err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				return
			}
		}
	}
	drainNoAck()
	check("read through")
}
