package main

import (
	"fmt"
	"math"
	"regexp"
	"time"

	diskqueue "github.com/nsqio/go-diskqueue"
)

func init() {
	register(&system{
		name:   "diskqueue",
		desc:   "github.com/nsqio/go-diskqueue, 100 MiB files (nsqd's default), no fsync but at file rotation and Close",
		fifo:   true,
		new:    func(cfg *config) queue { return &diskQ{syncEvery: math.MaxInt64, syncTimeout: time.Hour} },
		phases: []string{"store", "restart", "live"},
	})
	register(&system{
		name:      "diskqueue-sync1",
		desc:      "go-diskqueue with SyncEvery=1: fsync (and a metadata file rewrite) per message; store only, -nsync1 messages",
		fifo:      true,
		new:       func(cfg *config) queue { return &diskQ{syncEvery: 1, syncTimeout: time.Hour} },
		storeOnly: true,
		count:     func(cfg *config) int { return cfg.nSync1 },
		verify:    func(cfg *config) queue { return &diskQ{syncEvery: math.MaxInt64, syncTimeout: time.Hour} },
		base:      "pelichan-syncalways",
	})
}

// diskQ is a go-diskqueue. Its constructor takes eight positional arguments:
// New(name, dataPath, maxBytesPerFile, minMsgSize, maxMsgSize, syncEvery, syncTimeout, logf).
// syncEvery counts messages written or read between fsyncs; syncTimeout fsyncs that often
// while there is activity. Whatever they say, it fsyncs when it rotates a file, when it
// deletes a consumed file, and at Close.
//
// It reports most trouble only through logf. What it logs at WARNING or above becomes a
// note in the report, not a failure: the checker decides whether a message was lost. (A
// reader that keeps up with the writer gets a spurious EOF at a file roll and renames the
// file .bad without losing anything: nsqio/go-diskqueue issue #42.)
var dirName = regexp.MustCompile(`/\S*/`)

type diskQ struct {
	syncEvery   int64
	syncTimeout time.Duration
	dq          diskqueue.Interface
}

func (q *diskQ) open(dir string) error {
	logf := func(lvl diskqueue.LogLevel, f string, args ...interface{}) {
		if lvl >= diskqueue.WARN {
			msg := fmt.Sprintf(f, args...)
			// Drop the temporary directory's name so that repeats count as one.
			msg = dirName.ReplaceAllString(msg, "")
			note("diskqueue %s: %s", lvl, msg)
		}
	}
	q.dq = diskqueue.New("bench", dir, 100<<20, 0, 1<<20, q.syncEvery, q.syncTimeout, logf)
	return nil
}

func (q *diskQ) put(m []byte) error { return q.dq.Put(m) }
func (q *diskQ) flush() error       { return nil }
func (q *diskQ) get() ([]byte, error) {
	return <-q.dq.ReadChan(), nil
}
func (q *diskQ) finish() (int64, error) { return q.dq.Depth(), nil }
func (q *diskQ) close() error           { return q.dq.Close() }
