package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pelichan/pelichan"
)

func init() {
	register(&system{
		name:   "pelichan",
		desc:   "pelichan with its defaults (Zstd), except WithLinger (see -linger); Out buffer -buffer (bench view) or -user-buffer (user view); consumer stalled while storing",
		new:    func(cfg *config) queue { return &pelichanQ{cfg: cfg} },
		phases: []string{"store", "restart", "live"},
	})
	register(&system{
		name: "pelichan-s2",
		desc: "pelichan with WithCompression(S2)",
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithCompression(pelichan.S2)}}
		},
		phases: []string{"store"}, // spill and refill; the restart rows are the default compression's
	})
	register(&system{
		name: "pelichan-auto",
		desc: "pelichan with WithCompression(Auto): Zstd while the compressors keep up, S2 for batches queued behind them",
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithCompression(pelichan.Auto)}}
		},
		phases: []string{"store"}, // spill and refill; the restart rows are the default compression's
	})
	register(&system{
		name: "pelichan-wa",
		desc: "pelichan with WithWriteAhead(): every message appended (group commit) before it is delivered; live phase and consumer-stalled store phase",
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithWriteAhead()}}
		},
		phases: []string{"store", "live"},
	})
	register(&system{
		name: "pelichan-wa-syncalways",
		desc: "pelichan with WithWriteAhead() and WithSync(SyncAlways): every message fsynced before it is delivered; live phase only",
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithWriteAhead(), pelichan.WithSync(pelichan.SyncAlways)}}
		},
		phases: []string{"live"},
	})
	register(&system{
		name: "pelichan-ordered",
		desc: "pelichan with WithOrdered(): FIFO across spill, refill and restarts",
		fifo: true,
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithOrdered()}}
		},
	})
	register(&system{
		name: "pelichan-syncalways",
		desc: "pelichan with WithSync(SyncAlways): one fsync per batch before its messages count as stored",
		new: func(cfg *config) queue {
			return &pelichanQ{cfg: cfg, opts: []pelichan.Option{pelichan.WithSync(pelichan.SyncAlways)}}
		},
		storeOnly: true,
		verify:    func(cfg *config) queue { return &pelichanQ{cfg: cfg} },
	})
}

// pelichanQ drives a pelichan Chan as a queue: put sends on src, get receives from Out.
type pelichanQ struct {
	cfg  *config
	opts []pelichan.Option
	c    *pelichan.Chan[[]byte]
	src  chan []byte
	out  <-chan []byte
	sent int64 // messages sent on src since open

	mu   sync.Mutex
	errs []string
}

func (q *pelichanQ) open(dir string) error {
	q.src = make(chan []byte, q.cfg.srcBuffer)
	q.sent = 0
	opts := []pelichan.Option{
		pelichan.WithBuffer(q.cfg.buffer),
		pelichan.WithLinger(q.cfg.linger),
		pelichan.WithErrorHandler(func(err error) {
			q.mu.Lock()
			if len(q.errs) < 5 {
				q.errs = append(q.errs, err.Error())
			}
			q.mu.Unlock()
		}),
	}
	c, err := pelichan.New(dir, q.src, pelichan.Bytes, append(opts, q.opts...)...)
	if err != nil {
		return err
	}
	q.c, q.out = c, c.Out()
	return nil
}

func (q *pelichanQ) put(m []byte) error {
	q.src <- m
	q.sent++
	return nil
}

// flush waits until the Chan has taken every message sent and either written it to the
// spool or put it in Out's buffer.
func (q *pelichanQ) flush() error {
	deadline := time.Now().Add(time.Minute)
	for {
		s := q.c.Stats()
		if s.Dropped > 0 || s.Errors > 0 {
			return fmt.Errorf("pelichan: %d dropped, %d errors: %s", s.Dropped, s.Errors, q.errors())
		}
		if s.Received == q.sent && s.Direct+s.Spilled >= q.sent {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pelichan: flush: not stored after a minute: sent %d, stats %+v", q.sent, s)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (q *pelichanQ) get() ([]byte, error) {
	m, ok := <-q.out
	if !ok {
		return nil, errors.New("pelichan: Out closed before every message was delivered")
	}
	return m, nil
}

// finish closes src: the Chan must then deliver what it still holds and close Out.
func (q *pelichanQ) finish() (int64, error) {
	close(q.src)
	var extra int64
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case _, ok := <-q.out:
			if !ok {
				if s := q.c.Stats(); s.OnDisk != 0 || s.InMemory != 0 {
					return extra, fmt.Errorf("pelichan: Out closed with OnDisk=%d InMemory=%d", s.OnDisk, s.InMemory)
				}
				return extra, nil
			}
			extra++
		case <-timeout.C:
			return extra, fmt.Errorf("pelichan: src closed and every message read, but Out not closed after 30s (stats %+v)", q.c.Stats())
		}
	}
}

func (q *pelichanQ) close() error {
	err := q.c.Close()
	s := q.c.Stats()
	if err == nil && (s.Dropped > 0 || s.Corrupt > 0 || s.Errors > 0) {
		err = fmt.Errorf("pelichan: %d dropped, %d corrupt, %d errors: %s", s.Dropped, s.Corrupt, s.Errors, q.errors())
	}
	return err
}

func (q *pelichanQ) errors() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return strings.Join(q.errs, "; ")
}

func (q *pelichanQ) debug() string {
	done := make(chan string, 1)
	go func() {
		done <- fmt.Sprintf("sent %d on src (%d still in src), len(Out)=%d, Stats %+v", q.sent, len(q.src), len(q.out), q.c.Stats())
	}()
	select {
	case s := <-done:
		return s
	case <-time.After(5 * time.Second):
		return "Stats() did not answer in 5s"
	}
}
