package spool

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/pelichan/pelichan/segment"
)

// checkFreeChunks checks the chunk free list: no buffer twice, none still referenced,
// neither the stream's current one nor one a held record is in.
func checkFreeChunks(t *testing.T, s *Spool, held map[*chunk]int, when string) {
	t.Helper()
	seen := map[*chunk]bool{}
	for _, ck := range s.free {
		switch {
		case seen[ck]:
			t.Fatalf("%s: chunk %p twice in the free list", when, ck)
		case ck.refs != 0:
			t.Fatalf("%s: chunk %p in the free list with %d refs", when, ck, ck.refs)
		case ck == s.rs.ck:
			t.Fatalf("%s: the stream's current chunk %p is in the free list", when, ck)
		case held[ck] > 0:
			t.Fatalf("%s: chunk %p of %d held records is in the free list", when, ck, held[ck])
		}
		seen[ck] = true
	}
}

// Records held for a random while (a window of up to 24, released in random order, as the
// Chan's decoders finish out of order) with chunks being reused meanwhile: each record's
// bytes are checked when it is released, and the free list's invariants after every step.
// Variants: a damaged record in the middle of the second segment (stream falls back to
// loadReader while stream records are held), and records appended after Open (read from
// the active segment, tidwall's memory).
func TestChunkReuseHoldWindow(t *testing.T) {
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	bs := bigBatches(200)
	extra := bigBatches(230)[200:]
	for _, damage := range []bool{false, true} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("damage=%v/seed=%d", damage, seed), func(t *testing.T) {
				dir := t.TempDir()
				writeSpool(t, dir, opts, bs)
				want := len(bs) + len(extra)
				if damage {
					segs := segNames(t, dir)
					recs := segRecs(layout(t, dir), segs[1])
					r := recs[len(recs)/2]
					inspFlip(t, walPath(dir, segs[1]), (r.off+r.end)/2)
					want--
				}
				o := opts
				var corrupt []error
				o.OnCorrupt = func(err error) { corrupt = append(corrupt, err) }
				s := mustOpen(t, dir, o)
				defer s.Close()
				appendAll(t, s, extra)
				rng := rand.New(rand.NewPCG(seed, 99))
				type hold struct {
					r    Record
					snap []byte
				}
				var held []hold
				refs := map[*chunk]int{}
				last, n, reused := -1, 0, 0
				everyCk := map[*chunk]int{}
				var prevCk *chunk
				release := func(i int) {
					h := held[i]
					if !bytes.Equal(h.r.Data, h.snap) {
						t.Fatalf("record %+v changed while held", h.r.Pos)
					}
					if _, err := segment.Verify(h.r.Data); err != nil {
						t.Fatalf("record %+v: %v", h.r.Pos, err)
					}
					s.Release(h.r)
					if h.r.ck != nil {
						refs[h.r.ck]--
					}
					held[i] = held[len(held)-1]
					held = held[:len(held)-1]
					checkFreeChunks(t, s, refs, "after Release")
				}
				for {
					r, err := s.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					n++
					msgs := decodeRecord(t, r.Data)
					k, err := strconv.Atoi(msgs[0][:4])
					if err != nil || k <= last {
						t.Fatalf("record %d after record %d (%+v)", k, last, r.Pos)
					}
					last = k
					if r.ck != nil {
						refs[r.ck]++
						if r.ck != prevCk {
							if everyCk[r.ck]++; everyCk[r.ck] > 1 {
								reused++
							}
							prevCk = r.ck
						}
					}
					held = append(held, hold{r, bytes.Clone(r.Data)})
					checkFreeChunks(t, s, refs, "after Next")
					for len(held) > 24 || (len(held) > 0 && rng.IntN(3) == 0) {
						release(rng.IntN(len(held)))
					}
					if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
						t.Fatal(err)
					}
				}
				for len(held) > 0 {
					release(rng.IntN(len(held)))
				}
				if n != want {
					t.Fatalf("read %d records, want %d", n, want)
				}
				if damage != (len(corrupt) > 0) {
					t.Fatalf("damage %v, reported %v", damage, corrupt)
				}
				if reused == 0 {
					t.Fatalf("no chunk buffer was reused: the test does not exercise reuse")
				}
				t.Logf("%d records, %d chunk reuses", n, reused)
			})
		}
	}
}
