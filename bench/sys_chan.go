package main

import "errors"

func init() {
	register(&system{
		name: "chancopy",
		desc: "the direct-pass reference: a goroutine copying from a src channel (capacity -srcbuf) to an out channel (the view's buffer); live phase only",
		fifo: true,
		new:  func(cfg *config) queue { return &chanQ{srcCap: cfg.srcBuffer, outCap: cfg.buffer} },
		// Nothing is stored: only the live phase means anything.
		phases: []string{"live"},
	})
}

// chanQ is what DESIGN.md's direct-pass bar compares with: a plain goroutine copying
// chan to chan, with the same channel capacities as pelichan's src and Out.
type chanQ struct {
	srcCap, outCap int
	src, out       chan []byte
}

func (q *chanQ) open(dir string) error {
	q.src, q.out = make(chan []byte, q.srcCap), make(chan []byte, q.outCap)
	go func(src <-chan []byte, out chan<- []byte) {
		for m := range src {
			out <- m
		}
		close(out)
	}(q.src, q.out)
	return nil
}

func (q *chanQ) put(m []byte) error { q.src <- m; return nil }
func (q *chanQ) flush() error       { return nil }
func (q *chanQ) get() ([]byte, error) {
	m, ok := <-q.out
	if !ok {
		return nil, errors.New("chancopy: out closed")
	}
	return m, nil
}

func (q *chanQ) finish() (int64, error) {
	close(q.src)
	var n int64
	for range q.out {
		n++
	}
	return n, nil
}

func (q *chanQ) close() error { return nil }
