package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// result is what one child (one system, one run) measured. Durations are in seconds;
// zero means not measured. A metric is set only once its phase has passed its checks.
type result struct {
	View    string `json:"view"`
	Sys     string `json:"sys"`
	Run     int    `json:"run"`
	N       int    `json:"n"`       // messages stored in the store phase
	Payload int64  `json:"payload"` // their bytes

	StoreSec  float64 `json:"store_sec,omitempty"`
	ReadSec   float64 `json:"read_sec,omitempty"`
	DiskBytes int64   `json:"disk_bytes,omitempty"` // bytes of files in the queue's directory after the store phase

	Backlog         int     `json:"backlog,omitempty"` // restart phase: messages stored before the restart
	New             int     `json:"new,omitempty"`     // and stored after it, while draining
	ReopenSec       float64 `json:"reopen_sec,omitempty"`
	RestartStoreSec float64 `json:"restart_store_sec,omitempty"`
	RestartDrainSec float64 `json:"restart_drain_sec,omitempty"`

	// LiveSec: live phase: the producer puts n messages while the consumer reads them,
	// from the first put to the last message read.
	LiveSec float64 `json:"live_sec,omitempty"`

	PeakRSS int64    `json:"peak_rss"` // VmHWM of the child at its end, bytes
	WallSec float64  `json:"wall_sec"`
	Errs    []string `json:"errs,omitempty"`  // one per failed phase
	Notes   []string `json:"notes,omitempty"` // what a system logged without failing the checks
	// OtherCPU is set by the parent: CPUs used on average by everything but the child
	// while it ran (steal included); a noisy machine makes the numbers worth little.
	OtherCPU float64 `json:"other_cpu"`
}

func (r *result) failed() bool { return len(r.Errs) > 0 }

// progress is bumped by every put and get, for the stall watchdog.
var (
	progress atomic.Int64
	phase    atomic.Value // string
	current  atomic.Value // queue: the one in use, for the stall report
)

var notes struct {
	sync.Mutex
	list []string
	seen map[string]int
}

// note records something a system reported that is not a failure by itself (the checker
// decides whether messages were lost). Repeats are counted, not listed.
func note(format string, args ...any) {
	s := oneLine(fmt.Sprintf(format, args...), 300)
	notes.Lock()
	defer notes.Unlock()
	if notes.seen == nil {
		notes.seen = map[string]int{}
	}
	if notes.seen[s]++; notes.seen[s] == 1 {
		notes.list = append(notes.list, s)
	}
}

// debugger is a queue that can describe its state when a phase stalls.
type debugger interface{ debug() string }

// runChild runs every phase for one system in this process and prints the result as one
// JSON line on stdout.
func runChild(cfg *config) int {
	start := time.Now()
	sys, ok := systems[cfg.sys]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown system %q\n", cfg.sys)
		return 2
	}
	res := &result{View: cfg.view, Sys: sys.name, Run: cfg.run}
	w := newWorkload(cfg.seed)
	res.N = sys.n(cfg)
	res.Payload = w.payload(0, res.N)
	first := true
	for _, p := range []struct {
		name string
		f    func(*config, *system, *workload, *result) error
	}{{"store", storePhase}, {"restart", restartPhase}, {"live", livePhase}} {
		if !cfg.phases[p.name] || !sys.runs(p.name) {
			continue
		}
		if !first {
			// Start from a clean heap, so that each phase's peak RSS is its own.
			runtime.GC()
			debug.FreeOSMemory()
		}
		first = false
		step(cfg, res, p.name, func() error { return p.f(cfg, sys, w, res) })
	}
	notes.Lock()
	for _, s := range notes.list {
		if n := notes.seen[s]; n > 1 {
			s += fmt.Sprintf(" (%d times)", n)
		}
		res.Notes = append(res.Notes, s)
	}
	notes.Unlock()
	res.PeakRSS = peakRSS()
	res.WallSec = time.Since(start).Seconds()
	json.NewEncoder(os.Stdout).Encode(res)
	if res.failed() {
		return 1
	}
	return 0
}

// step runs one phase in its own goroutine and waits for it. If no message is stored or
// read for -stall, it records the stall with the queue's state, prints every goroutine's
// stack to stderr, and gives up on the phase (its goroutines are left blocked), so the
// next phase still runs.
func step(cfg *config, res *result, name string, f func() error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last, since := progress.Load(), time.Now()
	for {
		select {
		case err := <-done:
			if err != nil {
				res.Errs = append(res.Errs, fmt.Sprintf("%s: %v: %v", name, phase.Load(), err))
			}
			return
		case <-tick.C:
		}
		if p := progress.Load(); p != last {
			last, since = p, time.Now()
			continue
		}
		if time.Since(since) < cfg.stall {
			continue
		}
		msg := fmt.Sprintf("%s: %v: STALL: no message stored or read for %v", name, phase.Load(), cfg.stall)
		if d, ok := current.Load().(debugger); ok {
			msg += "; state: " + d.debug()
		}
		res.Errs = append(res.Errs, msg)
		fmt.Fprintf(os.Stderr, "bench: %s %s; goroutines:\n", res.Sys, msg)
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		// Try to close the stuck queue, so that its memory does not count against the
		// next phase; the phase's goroutine may then fail, and nobody is listening.
		if q, ok := current.Load().(queue); ok {
			closed := make(chan error, 1)
			go func() { closed <- q.close() }()
			select {
			case err := <-closed:
				fmt.Fprintf(os.Stderr, "bench: %s: closed the stalled queue: %v\n", res.Sys, err)
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "bench: %s: the stalled queue did not close in 5s\n", res.Sys)
			}
		}
		return
	}
}

// storePhase stores n messages with the consumer stalled, then reads them back from the
// same open queue.
func storePhase(cfg *config, sys *system, w *workload, res *result) error {
	n := res.N
	dir := filepath.Join(cfg.dir, "store")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	q := sys.new(cfg)
	current.Store(q)
	setPhase("open")
	if err := q.open(dir); err != nil {
		return err
	}
	prod := newProducer(cfg, w)
	setPhase("store")
	stop := startProfile(cfg, sys.name, "store")
	t0 := time.Now()
	for i := range n {
		if err := q.put(prod.msg(i)); err != nil {
			return err
		}
		progress.Add(1)
	}
	if err := q.flush(); err != nil {
		return err
	}
	storeSec := time.Since(t0).Seconds()
	stop()
	disk, err := dirBytes(dir)
	if err != nil {
		return err
	}
	res.StoreSec, res.DiskBytes = storeSec, disk
	if sys.storeOnly {
		// Check what was stored with a plain reader, untimed.
		setPhase("verify: close")
		if err := q.close(); err != nil {
			return err
		}
		q = sys.verify(cfg)
		current.Store(q)
		setPhase("verify: reopen")
		if err := q.open(dir); err != nil {
			return err
		}
		setPhase("verify: read")
		if _, err := readAll(q, newConsumer(cfg, w, n, sys.fifo), 0, n); err != nil {
			return err
		}
		return os.RemoveAll(dir)
	}
	if cfg.readReopen {
		setPhase("close before read")
		if err := q.close(); err != nil {
			return err
		}
		q = sys.new(cfg)
		current.Store(q)
		setPhase("reopen before read")
		if err := q.open(dir); err != nil {
			return err
		}
	}
	setPhase("read")
	stop = startProfile(cfg, sys.name, "read")
	readSec, err := readAll(q, newConsumer(cfg, w, n, sys.fifo), 0, n)
	stop()
	if err != nil {
		return err
	}
	res.ReadSec = readSec
	return os.RemoveAll(dir)
}

// restartPhase stores a backlog of n/2 messages, closes the queue, reopens it, then stores
// n more while a consumer drains all of them.
func restartPhase(cfg *config, sys *system, w *workload, res *result) error {
	backlog, more := res.N/2, res.N
	total := backlog + more
	dir := filepath.Join(cfg.dir, "restart")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	q := sys.new(cfg)
	current.Store(q)
	prod := newProducer(cfg, w)
	setPhase("store backlog")
	if err := q.open(dir); err != nil {
		return err
	}
	for i := range backlog {
		if err := q.put(prod.msg(i)); err != nil {
			return err
		}
		progress.Add(1)
	}
	if err := q.flush(); err != nil {
		return err
	}
	setPhase("close")
	if err := q.close(); err != nil {
		return err
	}
	setPhase("reopen")
	check := newConsumer(cfg, w, total, sys.fifo)
	q = sys.new(cfg)
	current.Store(q)
	stop := startProfile(cfg, sys.name, "restart")
	defer stop()
	t0 := time.Now()
	if err := q.open(dir); err != nil {
		return err
	}
	m, err := q.get()
	if err != nil {
		return err
	}
	reopenSec := time.Since(t0).Seconds()
	check.add(m)
	setPhase("store and drain")
	prodErr := make(chan error, 1)
	prodSec := make(chan float64, 1)
	go func() {
		prod := newProducer(cfg, w)
		tp := time.Now()
		for i := backlog; i < total; i++ {
			if err := q.put(prod.msg(i)); err != nil {
				prodErr <- err
				return
			}
			progress.Add(1)
		}
		if err := q.flush(); err != nil {
			prodErr <- err
			return
		}
		prodSec <- time.Since(tp).Seconds()
	}()
	for got := 1; got < total; got++ {
		m, err := q.get()
		if err != nil {
			return err
		}
		check.add(m)
		progress.Add(1)
	}
	drainSec := time.Since(t0).Seconds()
	var storeSec float64
	select {
	case err := <-prodErr:
		return err
	case storeSec = <-prodSec:
	}
	stop()
	setPhase("finish")
	if err := finish(q); err != nil {
		return err
	}
	if err := check.verify(0, total); err != nil {
		return err
	}
	res.Backlog, res.New = backlog, more
	res.ReopenSec, res.RestartStoreSec, res.RestartDrainSec = reopenSec, storeSec, drainSec
	return os.RemoveAll(dir)
}

// livePhase opens an empty queue and puts n messages while a consumer reads them: the
// consumer keeps up as well as it can (for pelichan, the direct pass; with write-ahead,
// every message is stored first). It times the first put to the last message read.
func livePhase(cfg *config, sys *system, w *workload, res *result) error {
	n := res.N
	dir := filepath.Join(cfg.dir, "live")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	q := sys.new(cfg)
	current.Store(q)
	setPhase("live: open")
	if err := q.open(dir); err != nil {
		return err
	}
	check := newConsumer(cfg, w, n, sys.fifo)
	setPhase("live")
	stop := startProfile(cfg, sys.name, "live")
	defer stop()
	prodErr := make(chan error, 1)
	t0 := time.Now()
	go func() {
		prod := newProducer(cfg, w)
		for i := range n {
			if err := q.put(prod.msg(i)); err != nil {
				prodErr <- err
				return
			}
			progress.Add(1)
		}
		prodErr <- q.flush()
	}()
	for range n {
		m, err := q.get()
		if err != nil {
			return err
		}
		check.add(m)
		progress.Add(1)
	}
	liveSec := time.Since(t0).Seconds()
	stop()
	if err := <-prodErr; err != nil {
		return err
	}
	setPhase("live: finish")
	if err := finish(q); err != nil {
		return err
	}
	if err := check.verify(0, n); err != nil {
		return err
	}
	res.LiveSec = liveSec
	return os.RemoveAll(dir)
}

// producer hands out the messages to put: in the user view, each one copied into an
// allocation of its own from a reused line buffer, as a shipper reading lines does.
type producer struct {
	w       *workload
	copy    bool
	scratch []byte
}

func newProducer(cfg *config, w *workload) *producer {
	return &producer{w: w, copy: cfg.view == viewUser}
}

func (p *producer) msg(i int) []byte {
	if p.copy {
		return p.w.msgCopy(i, &p.scratch)
	}
	return p.w.msg(i)
}

// newConsumer returns the checker a phase's consumer runs on every message it reads; in
// the user view it also does the per-message work (see worker).
func newConsumer(cfg *config, w *workload, total int, fifo bool) *checker {
	c := newChecker(w, total, fifo)
	if cfg.view == viewUser {
		c.work = newWorker()
	}
	return c
}

// readAll reads the messages [from, to) and checks them; it returns the seconds taken.
func readAll(q queue, check *checker, from, to int) (float64, error) {
	t0 := time.Now()
	for range to - from {
		m, err := q.get()
		if err != nil {
			return 0, err
		}
		check.add(m)
		progress.Add(1)
	}
	sec := time.Since(t0).Seconds()
	if err := finish(q); err != nil {
		return 0, err
	}
	return sec, check.verify(from, to)
}

// finish checks that nothing is left in the queue and closes it.
func finish(q queue) error {
	left, err := q.finish()
	if err == nil && left != 0 {
		err = fmt.Errorf("%d messages left in the queue after every message was read", left)
	}
	if cerr := q.close(); err == nil {
		err = cerr
	}
	return err
}

func setPhase(s string) { phase.Store(s) }

// startProfile starts a CPU profile and an execution trace of one phase if -cpuprofile
// or -trace ask for this system.
func startProfile(cfg *config, sys, ph string) (stop func()) {
	var stops []func()
	name := sys
	if cfg.view != viewBench {
		name += "-" + cfg.view
	}
	start := func(prefix, ext string, begin func(io.Writer) error, end func()) {
		if prefix == "" || !cfg.profileSys[sys] {
			return
		}
		f, err := os.Create(fmt.Sprintf("%s.%s.%s.%s", prefix, name, ph, ext))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return
		}
		if err := begin(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			f.Close()
			return
		}
		stops = append(stops, func() { end(); f.Close() })
	}
	start(cfg.cpuprofile, "pprof", pprof.StartCPUProfile, pprof.StopCPUProfile)
	start(cfg.trace, "trace", trace.Start, trace.Stop)
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, f := range stops {
				f()
			}
		})
	}
}

// dirBytes adds up the sizes of the regular files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
