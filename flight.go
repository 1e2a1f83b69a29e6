package pelichan

// The deliveries table: every message handed to Out or Deliveries that is not done yet,
// by its delivery sequence number. It is owned by the loop goroutine.
//
// A delivery is in one of four states:
//   - fMem: only in memory (it came straight from src or the pending batch): v holds it;
//   - fStoring: being written to the spool because it waited too long (v still holds it);
//   - fDisk: stored, at id;
//   - fDone.
//
// Without acknowledgements a delivery is done once the consumer took it from Out: Out is
// FIFO and only the loop sends on it, so the consumer has taken every delivery up to
// sent - len(Out). With WithAcks it is done when acknowledged.
const (
	fMem uint8 = iota
	fStoring
	fDisk
	fDone
)

type flight[T any] struct {
	v      T
	id     MsgID
	at     int64 // when it was handed out (unix nanos), for fMem
	st     uint8
	direct bool // it came from memory: counts in Direct once done, else in Refilled
	stuck  bool // its encoding was refused: it cannot be written
}

type table[T any] struct {
	ents  []flight[T]
	mask  uint64
	floor uint64 // every delivery up to floor is done
	sent  uint64 // the last delivery's seq
}

func newTable[T any]() *table[T] {
	return &table[T]{ents: make([]flight[T], 64), mask: 63}
}

func (t *table[T]) at(seq uint64) *flight[T] { return &t.ents[seq&t.mask] }

// push adds the next delivery and returns its seq.
func (t *table[T]) push(f flight[T]) uint64 {
	if t.sent-t.floor >= uint64(len(t.ents)) {
		bigger := make([]flight[T], 2*len(t.ents))
		m := uint64(len(bigger) - 1)
		for s := t.floor + 1; s <= t.sent; s++ {
			bigger[s&m] = *t.at(s)
		}
		t.ents, t.mask = bigger, m
	}
	t.sent++
	*t.at(t.sent) = f
	return t.sent
}

// out is how many deliveries are not known to be done (an upper bound).
func (t *table[T]) out() uint64 { return t.sent - t.floor }

// settle moves floor over done deliveries, clearing them.
func (t *table[T]) settle() {
	for t.floor < t.sent {
		f := t.at(t.floor + 1)
		if f.st != fDone {
			return
		}
		*f = flight[T]{}
		t.floor++
	}
}
