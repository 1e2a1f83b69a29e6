package pelichan

import (
	"sync"
	"sync/atomic"
)

// maxQueuedErrors is how many errors may wait for a slow error handler; past that they are
// counted in Stats.Errors but not passed on.
const maxQueuedErrors = 1024

// reporter passes errors to the error handler from a goroutine of its own, so that the
// handler may call Stats or Close: nothing the Chan's goroutines hold is held while it
// runs, and they never wait for it.
type reporter struct {
	handler func(error)
	st      *counters
	mu      sync.Mutex
	queue   []error
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	inCall  atomic.Bool // the handler is running
}

func newReporter(h func(error), st *counters) *reporter {
	r := &reporter{handler: h, st: st, wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go r.run()
	return r
}

// report counts err and queues it for the handler. It never blocks.
func (r *reporter) report(err error) {
	r.st.update(func(s *Stats) { s.Errors++; s.LastError = err.Error() })
	r.mu.Lock()
	if len(r.queue) < maxQueuedErrors {
		r.queue = append(r.queue, err)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) run() {
	defer close(r.done)
	for {
		select {
		case <-r.wake:
			r.deliver()
		case <-r.stop:
			r.deliver()
			return
		}
	}
}

func (r *reporter) deliver() {
	for {
		r.mu.Lock()
		q := r.queue
		r.queue = nil
		r.mu.Unlock()
		if len(q) == 0 {
			return
		}
		for _, err := range q {
			r.inCall.Store(true)
			r.handler(err)
			r.inCall.Store(false)
		}
	}
}

// stopSoon makes the reporter end once the queued errors are passed on.
func (r *reporter) stopSoon() { r.once.Do(func() { close(r.stop) }) }

// close stops the reporter once the queued errors are passed on. It waits for that unless
// the handler is running (it may be the one calling Close): then the goroutine ends on its
// own once the handler returns.
func (r *reporter) close() {
	r.stopSoon()
	if !r.inCall.Load() {
		<-r.done
	}
}
