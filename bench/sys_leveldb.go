package main

import (
	"encoding/binary"
	"time"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/util"
)

func init() {
	register(&system{
		name: "leveldb",
		desc: "FIFO queue on github.com/syndtr/goleveldb (default options, no sync) as the seed's backend: 8-byte big-endian sequence keys, one Put per message, read by iterating from the first key and deleting each",
		fifo: true,
		new:  func(cfg *config) queue { return &levelQ{} },
	})
}

// levelQ is a FIFO queue on leveldb the way the seed library's backend was built: every
// message is one Put under the next 8-byte big-endian sequence number; the reader iterates
// from the first key, copies each value and deletes its key. When its iterator runs dry
// (it sees a snapshot), the reader opens a new one at the key after the last it read, so
// it does not walk the tombstones it left behind over and over.
type levelQ struct {
	db     *leveldb.DB
	wseq   uint64 // next key to write; used by the producer only
	it     iterator.Iterator
	next   []byte // key to start the next iterator at; nil: the first key
	notify chan struct{}
}

func (q *levelQ) open(dir string) error {
	db, err := leveldb.OpenFile(dir, nil)
	if err != nil {
		return err
	}
	q.db, q.it, q.next = db, nil, nil
	q.notify = make(chan struct{}, 1)
	q.wseq = 0
	it := db.NewIterator(nil, nil)
	if it.Last() {
		q.wseq = binary.BigEndian.Uint64(it.Key()) + 1
	}
	it.Release()
	return it.Error()
}

func (q *levelQ) put(m []byte) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], q.wseq)
	if err := q.db.Put(key[:], m, nil); err != nil {
		return err
	}
	q.wseq++
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return nil
}

func (q *levelQ) flush() error { return nil }

func (q *levelQ) get() ([]byte, error) {
	fresh := false
	for {
		if q.it == nil {
			var r *util.Range
			if q.next != nil {
				r = &util.Range{Start: q.next}
			}
			q.it, fresh = q.db.NewIterator(r, nil), true
		}
		if q.it.Next() {
			key := q.it.Key()
			v := append([]byte(nil), q.it.Value()...)
			if err := q.db.Delete(key, nil); err != nil {
				return nil, err
			}
			q.next = binary.BigEndian.AppendUint64(q.next[:0], binary.BigEndian.Uint64(key)+1)
			return v, nil
		}
		err := q.it.Error()
		q.it.Release()
		q.it = nil
		if err != nil {
			return nil, err
		}
		if fresh { // nothing new since the last iterator: wait for a Put
			select {
			case <-q.notify:
			case <-time.After(time.Millisecond):
			}
		}
	}
}

func (q *levelQ) finish() (int64, error) {
	var r *util.Range
	if q.next != nil {
		r = &util.Range{Start: q.next}
	}
	it := q.db.NewIterator(r, nil)
	defer it.Release()
	var n int64
	for it.Next() {
		n++
	}
	return n, it.Error()
}

func (q *levelQ) close() error {
	if q.it != nil {
		q.it.Release()
		q.it = nil
	}
	return q.db.Close()
}
