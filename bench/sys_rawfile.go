package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

func init() {
	register(&system{
		name:   "rawfile",
		desc:   "ceiling: length-prefixed appends to one file through a 64 KiB bufio.Writer, read back through a 64 KiB bufio.Reader; no compression, checksums, deletion or read cursor",
		fifo:   true,
		new:    func(cfg *config) queue { return &rawQ{} },
		phases: []string{"store", "restart", "live"},
	})
}

// rawQ appends length-prefixed messages to one file and reads them back from its start.
// It is a ceiling, not a queue: it never deletes what was read and keeps no read position,
// which is enough here because the benchmark only reopens a file nothing was read from.
type rawQ struct {
	wf        *os.File
	w         *bufio.Writer
	rf        *os.File
	r         *bufio.Reader
	committed atomic.Int64 // bytes written to the file
	roff      int64        // bytes consumed by get
	notify    chan struct{}
}

func (q *rawQ) open(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name := filepath.Join(dir, "data")
	wf, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fi, err := wf.Stat()
	if err != nil {
		return err
	}
	rf, err := os.Open(name)
	if err != nil {
		return err
	}
	q.wf, q.rf, q.roff = wf, rf, 0
	q.committed.Store(fi.Size())
	q.notify = make(chan struct{}, 1)
	q.w = bufio.NewWriterSize(countingWriter{q}, 64<<10)
	q.r = bufio.NewReaderSize(&tailReader{q: q}, 64<<10)
	return nil
}

func (q *rawQ) put(m []byte) error {
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(m)))
	if _, err := q.w.Write(n[:]); err != nil {
		return err
	}
	_, err := q.w.Write(m)
	return err
}

func (q *rawQ) flush() error { return q.w.Flush() }

func (q *rawQ) get() ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(q.r, n[:]); err != nil {
		return nil, err
	}
	m := make([]byte, binary.LittleEndian.Uint32(n[:]))
	if _, err := io.ReadFull(q.r, m); err != nil {
		return nil, err
	}
	q.roff += int64(4 + len(m))
	return m, nil
}

func (q *rawQ) finish() (int64, error) {
	if left := q.committed.Load() - q.roff; left != 0 {
		return 1, fmt.Errorf("rawfile: %d bytes not read", left)
	}
	return 0, nil
}

func (q *rawQ) close() error {
	err := q.w.Flush()
	if cerr := q.wf.Close(); err == nil {
		err = cerr
	}
	q.rf.Close()
	return err
}

// countingWriter writes to the file and tells the reader how far it may read.
type countingWriter struct{ q *rawQ }

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.q.wf.Write(p)
	c.q.committed.Add(int64(n))
	select {
	case c.q.notify <- struct{}{}:
	default:
	}
	return n, err
}

// tailReader reads the file up to what the writer has written, waiting for more there.
type tailReader struct {
	q   *rawQ
	off int64
}

func (t *tailReader) Read(p []byte) (int, error) {
	for {
		if lim := t.q.committed.Load(); t.off < lim {
			n, err := t.q.rf.ReadAt(p[:min(int64(len(p)), lim-t.off)], t.off)
			t.off += int64(n)
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		<-t.q.notify
	}
}
