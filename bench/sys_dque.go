package main

import (
	"fmt"
	"os"

	"github.com/joncrlsn/dque"
)

func init() {
	register(&system{
		name:  "dque",
		desc:  "github.com/joncrlsn/dque, turbo mode (no fsync), gob-encoded struct{Data []byte}, -dque-seg items per segment file; -n-dque messages (it is slow)",
		fifo:  true,
		new:   func(cfg *config) queue { return &dqueQ{segItems: cfg.dqueSeg} },
		count: func(cfg *config) int { return cfg.nDque },
	})
}

// dqueItem is what dque stores: it gob-encodes structs, so the message is wrapped in one.
type dqueItem struct {
	Data []byte
}

// dqueQ is a dque queue in turbo mode (writes go to the OS without fsync).
type dqueQ struct {
	segItems int
	q        *dque.DQue
}

func (q *dqueQ) open(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := dque.NewOrOpen("bench", dir, q.segItems, func() interface{} { return &dqueItem{} })
	if err != nil {
		return err
	}
	if err := d.TurboOn(); err != nil {
		return err
	}
	q.q = d
	return nil
}

func (q *dqueQ) put(m []byte) error { return q.q.Enqueue(&dqueItem{Data: m}) }
func (q *dqueQ) flush() error       { return nil }
func (q *dqueQ) get() ([]byte, error) {
	v, err := q.q.DequeueBlock()
	if err != nil {
		return nil, err
	}
	it, ok := v.(*dqueItem)
	if !ok {
		return nil, fmt.Errorf("dque: got %T", v)
	}
	return it.Data, nil
}
func (q *dqueQ) finish() (int64, error) { return int64(q.q.Size()), nil }
func (q *dqueQ) close() error           { return q.q.Close() }
