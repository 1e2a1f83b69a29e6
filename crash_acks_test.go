package pelichan

// Crash tests with acknowledgements and write-ahead (issues 10 and 11; DESIGN.md,
// Delivery). A re-executed child process (this test binary, run with
// -test.run=^TestAcksCrashChild$ and PELICHAN_ACKS_CHILD holding its configuration as
// JSON) runs a shipper: a producer hands numbered lines to src at a fixed rate, a consumer
// receives Deliveries in batches of 200 and acknowledges them (or, during an outage, does
// not). The children are killed with SIGKILL (or stopped with SIGTERM, on which they call
// Close) at random moments, several lives on one spool directory; the parent finally
// drains the directory itself and checks the promises:
//
//   - TestCrashAcksOutage: a kill during an outage loses at most the newest linger-worth
//     of messages (plus a batch write: -crash.margin), never the oldest;
//   - TestCrashAcksDraining: a kill while a backlog drains loses nothing, and repeats only
//     what was acknowledged within the last checkpoint interval (plus -crash.margin);
//   - TestCrashWriteAhead: with WithWriteAhead nothing handed to src half a second before
//     a kill is lost, and every message carries one nonzero MsgID in every delivery;
//   - TestCrashAcksGracefulRestart: Close with a batch in hand: it comes again, and
//     nothing acknowledged does.
//
// The child reports on its stdout, which the parent reads line by line while it runs
// (one write(2) per line, under a mutex, so lines never interleave; SIGKILL can only cut
// the line being written, which the parent drops):
//
//	R <nanos>                     New returned
//	H <nanos> <n>                 lines Start..Start+n-1 were taken from src (every 2ms if changed)
//	D <nanos> <line>:<id> ...     a batch received, written before it is acknowledged (id "0": zero MsgID)
//	K <nanos>                     the last D batch is acknowledged (Ack or AckThrough returned nil)
//	X <nanos> <quoted error>      acknowledging the last D batch failed (after Close: ErrClosed)
//	A <line> ...                  (per-message acks, before an X) the lines of the batch acknowledged before the failure
//	S <nanos> <received> <unacked> <ondisk> <inmemory> <redelivered> <spilled>   Stats every 50ms
//	E <nanos> <quoted error>      from WithErrorHandler
//	T <nanos> / C <nanos> <quoted error>   SIGTERM received / Close returned
//	B <quoted message>            a message that is not a line the children send
//	F <quoted error>              the child gives up
//
// Flags shared with crash_test.go: -crash.seed (replay), -crash.rounds (lives per test;
// for the outage test, pairs of an outage and an acknowledging life), -crash.margin (slack
// of the time-based checks but write-ahead's half second); -crash.life: the longest a child
// lives before it is killed. A soak: -crash.rounds=8 -crash.life=2.5s.
//
// The children keep the default linger (100ms) and checkpoint interval (100ms); if those
// defaults change, change acksLinger and acksCkpt.

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var crashLifeFlag = flag.Duration("crash.life", 1200*time.Millisecond,
	"acks crash tests: longest a child lives before it is killed (at least 700ms)")

const (
	acksChildEnv = "PELICHAN_ACKS_CHILD"
	acksCkpt     = 100 * time.Millisecond // options.checkpoint's default
	acksLinger   = 100 * time.Millisecond // the default linger, which the children keep
	acksBatchLen = 200                    // the consumer's batch
	acksRange    = 100_000_000            // line numbers of life r start at r*acksRange
)

// acksLine is line n: unique, log-line-like, checkable.
func acksLine(n int64) string {
	return fmt.Sprintf("L%010d level=info svc=ship host=web-%02d msg=\"GET /api/v1/items\" status=200 ms=%d",
		n, n%17, n%997)
}

// acksParse returns n if m is exactly acksLine(n).
func acksParse(m string) (int64, bool) {
	if len(m) < 11 || m[0] != 'L' {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1:11], 10, 64)
	if err != nil || n < 0 || acksLine(n) != m {
		return 0, false
	}
	return n, true
}

// acksCfg configures one child.
type acksCfg struct {
	Dir        string
	Seed       uint64
	Start      int64 // the producer's first line
	Rate       int   // lines per second the producer hands to src; 0: no producer
	MaxUnacked int
	Buffer     int
	WriteAhead bool
	NoAck      bool          // the receiver is down: receive, never acknowledge
	PerMsg     bool          // acknowledge each delivery with Ack, in shuffled order (else AckThrough)
	HoldMax    time.Duration // each batch is held up to this long before it is acknowledged ("sent")
	StallOneIn int           // 1 batch in StallOneIn is held 100-300ms more (a slow receiver); 0: never
	Term       bool          // on SIGTERM: Close, report, exit 0
	SegSize    int64         // WithSegmentSize; 0: the default
	Sync       string        // WithSync: "always", "never", or "" for the default
}

// options are the Chan options of a child with cfg.
func (cfg acksCfg) options() []Option {
	opts := []Option{WithAcks(cfg.MaxUnacked), WithBuffer(cfg.Buffer)}
	if cfg.WriteAhead {
		opts = append(opts, WithWriteAhead())
	}
	if cfg.SegSize > 0 {
		opts = append(opts, WithSegmentSize(cfg.SegSize))
	}
	switch cfg.Sync {
	case "always":
		opts = append(opts, WithSync(SyncAlways))
	case "never":
		opts = append(opts, WithSync(SyncNever))
	}
	return opts
}

// acksSegSize picks a segment size for a life: small ones make the spool rotate, delete
// consumed segments and move the cursor across segments within one life.
func acksSegSize(rng *rand.Rand) int64 {
	return [...]int64{16 << 10, 64 << 10, 256 << 10, 0}[rng.IntN(4)]
}

// ---- the child ---------------------------------------------------------------------------

// TestAcksCrashChild is the child process of the acks crash tests; it does nothing in a
// normal run.
func TestAcksCrashChild(t *testing.T) {
	text := os.Getenv(acksChildEnv)
	if text == "" {
		t.Skip("the child process of the acks crash tests (run by them)")
	}
	os.Exit(acksChild(text))
}

func acksChild(text string) int {
	var mu sync.Mutex
	emit := func(b []byte) {
		mu.Lock()
		os.Stdout.Write(b) // one write(2) while the mutex is held: lines never interleave
		mu.Unlock()
	}
	now := func() int64 { return time.Now().UnixNano() }
	say := func(format string, args ...any) { emit(fmt.Appendf(nil, format+"\n", args...)) }
	fail := func(format string, args ...any) int {
		msg := fmt.Sprintf(format, args...)
		say("F %q", msg)
		fmt.Fprintln(os.Stderr, "acks crash child: "+msg)
		return 2
	}
	var cfg acksCfg
	if err := json.Unmarshal([]byte(text), &cfg); err != nil {
		return fail("config: %v", err)
	}
	var term chan os.Signal
	if cfg.Term {
		term = make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM) // before R: the parent may signal right after it
	}
	opts := append(cfg.options(), WithErrorHandler(func(err error) { say("E %d %q", now(), err.Error()) }))
	src := make(chan string)
	c, err := New(cfg.Dir, src, String, opts...)
	if err != nil {
		return fail("New: %v", err)
	}
	say("R %d", now())

	var handed atomic.Int64
	stopProd := make(chan struct{})
	prodDone := make(chan struct{})
	go func() { // producer: Rate lines per second, in steps of 2ms
		defer close(prodDone)
		if cfg.Rate <= 0 {
			return
		}
		const step = 2 * time.Millisecond
		per := max(cfg.Rate*int(step/time.Microsecond)/1_000_000, 1)
		n := cfg.Start
		next := time.Now()
		for {
			for range per {
				select {
				case src <- acksLine(n):
					n++
					handed.Store(n - cfg.Start)
				case <-stopProd:
					return
				}
			}
			next = next.Add(step)
			d := time.Until(next)
			if d < -100*time.Millisecond { // blocked for long: no burst to catch up
				next, d = time.Now(), 0
			}
			if d > 0 {
				select {
				case <-time.After(d):
				case <-stopProd:
					return
				}
			}
		}
	}()
	go func() { // reporter
		last := int64(-1)
		tk := time.NewTicker(2 * time.Millisecond)
		for i := 1; ; i++ {
			<-tk.C
			if h := handed.Load(); h != last {
				say("H %d %d", now(), h) // now() after the load: lines below h were taken by then
				last = h
			}
			if i%25 == 0 {
				s := c.Stats()
				say("S %d %d %d %d %d %d %d", now(), s.Received, s.Unacked, s.OnDisk, s.InMemory, s.Redelivered, s.Spilled)
			}
		}
	}()

	consDone := make(chan struct{})
	go func() { // consumer
		defer close(consDone)
		rng := rand.New(rand.NewPCG(cfg.Seed, 1))
		dels := c.Deliveries()
		idle := time.NewTimer(time.Hour)
		var batch []Delivery[string]
		for {
			d, ok := <-dels
			if !ok {
				return
			}
			batch = append(batch[:0], d)
			idle.Reset(10 * time.Millisecond)
		fill:
			for len(batch) < acksBatchLen {
				select {
				case d, ok := <-dels:
					if !ok {
						break fill
					}
					batch = append(batch, d)
				case <-idle.C:
					break fill
				}
			}
			b := fmt.Appendf(nil, "D %d", now())
			for _, d := range batch {
				n, ok := acksParse(d.Msg)
				if !ok {
					say("B %q", d.Msg)
					continue
				}
				id := d.ID.String()
				if id == "" {
					id = "0"
				}
				b = fmt.Appendf(b, " %d:%s", n, id)
			}
			emit(append(b, '\n')) // before the acknowledgement
			if cfg.NoAck {
				continue
			}
			hold := time.Duration(0)
			if cfg.HoldMax > 0 {
				hold = time.Duration(rng.Int64N(int64(cfg.HoldMax)))
			}
			if cfg.StallOneIn > 0 && rng.IntN(cfg.StallOneIn) == 0 {
				hold += time.Duration(100+rng.IntN(200)) * time.Millisecond
			}
			time.Sleep(hold)
			var err error
			var part []byte // per-message: the lines acknowledged before one failed
			if cfg.PerMsg {
				order := rng.Perm(len(batch))
				part = []byte("A")
				for _, i := range order {
					if err = c.Ack(batch[i].Seq); err != nil {
						break
					}
					if n, ok := acksParse(batch[i].Msg); ok {
						part = fmt.Appendf(part, " %d", n)
					}
				}
			} else {
				err = c.AckThrough(batch[len(batch)-1].Seq)
			}
			if err != nil {
				x := fmt.Appendf(nil, "X %d %q\n", now(), err.Error())
				if len(part) > 1 {
					x = append(append(part, '\n'), x...) // one write: A and X together
				}
				emit(x)
			} else {
				say("K %d", now())
			}
		}
	}()

	if !cfg.Term {
		select {} // until SIGKILL
	}
	select {
	case <-term:
	case <-time.After(2 * time.Minute):
		return fail("no SIGTERM")
	}
	say("T %d", now())
	err = c.Close()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	say("C %d %q", now(), msg)
	close(stopProd)
	<-prodDone
	say("H %d %d", now(), handed.Load())
	select {
	case <-consDone:
	case <-time.After(20 * time.Second):
		return fail("Deliveries not closed 20s after Close returned")
	}
	return 0
}

// ---- the parent --------------------------------------------------------------------------

type acksMark struct {
	at time.Time
	n  int64
}

// acksBatch is one D line: a batch received in one life, and what became of its
// acknowledgement.
type acksBatch struct {
	at    time.Time
	lines []int64
	ids   []string
	state int8           // 0: no K or X (not acknowledged, or killed in between), 1: K, 2: X
	part  map[int64]bool // with X: the lines acknowledged before the failure (per-message acks)
	ackAt time.Time
}

type acksStat struct {
	at                                                     time.Time
	received, unacked, onDisk, inMem, redelivered, spilled int64
}

// acksLife is one child process (or the parent's final drain) and what it reported.
type acksLife struct {
	name    string
	cfg     acksCfg
	cmd     *exec.Cmd
	errPath string
	exited  chan struct{} // closed once stdout is read to its end and the child was waited for
	waitErr error

	mu       sync.Mutex
	notify   chan struct{}
	ready    time.Time
	handed   []acksMark
	batches  []*acksBatch
	acked    int // lines in K batches
	lastDel  time.Time
	stat     acksStat
	errs     []string
	bad      []string
	fatal    string
	torn     string
	termAt   time.Time
	closedAt time.Time
	closeErr *string

	covered  []time.Time // by ackTime, once the life is over
	killedAt time.Time   // set by kill
	graceful bool        // stopped by SIGTERM (Close), or the parent's final drain
	final    bool
}

func acksTime(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	return time.Unix(0, n), err
}

func acksStart(t *testing.T, work, name string, cfg acksCfg) *acksLife {
	t.Helper()
	text, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &acksLife{name: name, cfg: cfg, notify: make(chan struct{}, 1), exited: make(chan struct{}),
		errPath: filepath.Join(work, name+".stderr")}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcksCrashChild$")
	cmd.Env = append(os.Environ(), acksChildEnv+"="+string(text))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ef, err := os.Create(l.errPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = ef
	if err := cmd.Start(); err != nil {
		ef.Close()
		t.Fatal(err)
	}
	ef.Close()
	l.cmd = cmd
	go func() {
		l.read(stdout)
		l.waitErr = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-l.exited:
			return
		default:
		}
		cmd.Process.Kill()
		select {
		case <-l.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no end of output 10s after SIGKILL", name)
		}
	})
	return l
}

func (l *acksLife) read(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if line != "" {
				l.mu.Lock()
				l.torn = line // the line being written at the kill
				l.mu.Unlock()
			}
			io.Copy(io.Discard, br)
			return
		}
		l.mu.Lock()
		l.parse(strings.TrimSuffix(line, "\n"))
		l.mu.Unlock()
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// parse takes one report line; l.mu is held.
func (l *acksLife) parse(line string) {
	kind, rest, _ := strings.Cut(line, " ")
	f := strings.Fields(rest)
	bad := func() { l.bad = append(l.bad, "bad report line: "+line) }
	at := func() (time.Time, bool) {
		if len(f) == 0 {
			return time.Time{}, false
		}
		t, err := acksTime(f[0])
		return t, err == nil
	}
	quoted := func() string {
		_, q, _ := strings.Cut(rest, " ")
		s, err := strconv.Unquote(q)
		if err != nil {
			return q
		}
		return s
	}
	switch kind {
	case "R":
		t, ok := at()
		if !ok {
			bad()
			return
		}
		l.ready = t
	case "H":
		t, ok := at()
		if !ok || len(f) != 2 {
			bad()
			return
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			bad()
			return
		}
		l.handed = append(l.handed, acksMark{t, n})
	case "D":
		t, ok := at()
		if !ok {
			bad()
			return
		}
		b := &acksBatch{at: t}
		for _, e := range f[1:] {
			ns, id, ok := strings.Cut(e, ":")
			n, err := strconv.ParseInt(ns, 10, 64)
			if !ok || err != nil {
				bad()
				return
			}
			b.lines = append(b.lines, n)
			b.ids = append(b.ids, id)
		}
		l.batches = append(l.batches, b)
		l.lastDel = t
	case "A":
		if len(l.batches) == 0 || l.batches[len(l.batches)-1].state != 0 {
			bad()
			return
		}
		b := l.batches[len(l.batches)-1]
		b.part = map[int64]bool{}
		for _, e := range f {
			n, err := strconv.ParseInt(e, 10, 64)
			if err != nil {
				bad()
				return
			}
			b.part[n] = true
		}
	case "K", "X":
		t, ok := at()
		if !ok || len(l.batches) == 0 || l.batches[len(l.batches)-1].state != 0 {
			bad()
			return
		}
		b := l.batches[len(l.batches)-1]
		b.ackAt = t
		b.state = 1
		if kind == "X" {
			b.state = 2
			l.errs = append(l.errs, "ack: "+quoted())
			l.acked += len(b.part)
		} else {
			l.acked += len(b.lines)
		}
	case "S":
		t, ok := at()
		if !ok || len(f) != 7 {
			bad()
			return
		}
		var v [6]int64
		for i := range v {
			n, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				bad()
				return
			}
			v[i] = n
		}
		l.stat = acksStat{t, v[0], v[1], v[2], v[3], v[4], v[5]}
	case "E":
		l.errs = append(l.errs, quoted())
	case "T":
		l.termAt, _ = at()
	case "C":
		l.closedAt, _ = at()
		s := quoted()
		l.closeErr = &s
	case "B":
		s, err := strconv.Unquote(rest)
		if err != nil {
			s = rest
		}
		l.bad = append(l.bad, "foreign message: "+strconv.Quote(s))
	case "F":
		s, err := strconv.Unquote(rest)
		if err != nil {
			s = rest
		}
		l.fatal = s
	default:
		l.bad = append(l.bad, "unexpected output: "+line)
	}
}

func (l *acksLife) stderr() string {
	b, _ := os.ReadFile(l.errPath)
	if len(b) > 8000 {
		b = append(b[:8000], "..."...)
	}
	return string(b)
}

// waitFor waits until cond (called with l.mu held) is true, the child exits, or d passes.
func (l *acksLife) waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		l.mu.Lock()
		ok := cond()
		l.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-l.exited:
			l.mu.Lock()
			defer l.mu.Unlock()
			return cond()
		case <-deadline.C:
			return false
		case <-l.notify:
		case <-poll.C:
		}
	}
}

func (l *acksLife) waitReady(t *testing.T) {
	t.Helper()
	if !l.waitFor(60*time.Second, func() bool { return !l.ready.IsZero() }) {
		l.mu.Lock()
		fatal := l.fatal
		l.mu.Unlock()
		t.Fatalf("%s: the child did not open the spool (%s); stderr:\n%s", l.name, fatal, l.stderr())
	}
}

// sleepUntil waits until at; the child may not exit meanwhile.
func (l *acksLife) sleepUntil(t *testing.T, at time.Time) {
	t.Helper()
	select {
	case <-l.exited:
		t.Fatalf("%s: the child exited by itself (%v, %s); stderr:\n%s", l.name, l.waitErr, l.fatal, l.stderr())
	case <-time.After(time.Until(at)):
	}
}

// kill kills the child with SIGKILL and waits for the end of its output.
func (l *acksLife) kill(t *testing.T) {
	t.Helper()
	select {
	case <-l.exited:
		t.Fatalf("%s: the child exited by itself (%v, %s); stderr:\n%s", l.name, l.waitErr, l.fatal, l.stderr())
	default:
	}
	l.killedAt = time.Now() // before the kill: every check that uses it is more lenient so
	if err := l.cmd.Process.Kill(); err != nil {
		t.Fatalf("%s: kill: %v", l.name, err)
	}
	select {
	case <-l.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no end of output 10s after SIGKILL", l.name)
	}
	l.after(t)
}

// term sends SIGTERM (the child calls Close) and waits for the child to exit.
func (l *acksLife) term(t *testing.T) {
	t.Helper()
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: SIGTERM: %v", l.name, err)
	}
	select {
	case <-l.exited:
	case <-time.After(30 * time.Second):
		l.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump on stderr
		select {
		case <-l.exited:
		case <-time.After(5 * time.Second):
			l.cmd.Process.Kill()
			<-l.exited
		}
		t.Fatalf("%s: the child did not exit 30s after SIGTERM (Close hangs?); T %v C %v; stderr:\n%s",
			l.name, l.termAt, l.closedAt, l.stderr())
	}
	l.graceful = true
	if l.waitErr != nil || l.fatal != "" {
		t.Errorf("%s: the child failed after SIGTERM: %v %s; stderr:\n%s", l.name, l.waitErr, l.fatal, l.stderr())
	}
	if l.closeErr == nil {
		t.Errorf("%s: no report of Close", l.name)
	} else if *l.closeErr != "" {
		t.Errorf("%s: Close: %s", l.name, *l.closeErr)
	}
	l.after(t)
}

// after checks what every life reports.
func (l *acksLife) after(t *testing.T) {
	t.Helper()
	if l.fatal != "" {
		t.Errorf("%s: the child gave up: %s", l.name, l.fatal)
	}
	for _, b := range l.bad {
		t.Errorf("%s: %s", l.name, b)
	}
	for _, e := range l.errs {
		if l.graceful && strings.HasPrefix(e, "ack: ") && strings.Contains(e, ErrClosed.Error()) {
			continue // the batch in hand at Close
		}
		if !crashReport(t, e) {
			t.Errorf("%s: the child reported %s", l.name, e)
		}
	}
	if s := l.stderr(); strings.Contains(s, "DATA RACE") || strings.Contains(s, "panic") {
		t.Errorf("%s: stderr:\n%s", l.name, s)
	}
}

// handedBefore is how many lines the producer had taken from it at cut, as far as reported.
func (l *acksLife) handedBefore(cut time.Time) int64 {
	var n int64
	for _, m := range l.handed {
		if m.at.After(cut) {
			break
		}
		n = max(n, m.n)
	}
	return n
}

// handedAt is the time by which line n was reported taken.
func (l *acksLife) handedAt(n int64) time.Time {
	for _, m := range l.handed {
		if l.cfg.Start+m.n > n {
			return m.at
		}
	}
	return time.Time{}
}

func (l *acksLife) lastHanded() int64 {
	if len(l.handed) == 0 {
		return 0
	}
	return l.handed[len(l.handed)-1].n
}

func (l *acksLife) delivered() int {
	n := 0
	for _, b := range l.batches {
		n += len(b.lines)
	}
	return n
}

func (l *acksLife) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	how := "killed " + l.killedAt.Sub(l.ready).Round(time.Millisecond).String() + " after New"
	if l.graceful {
		how = "closed"
	}
	s := l.stat
	t.Logf("%s (segments %d, sync %q): %s; handed %d, delivered %d, acknowledged %d; "+
		"last stats: received %d, unacked %d, on disk %d, in memory %d, redelivered %d, spilled %d; "+format,
		append([]any{l.name, l.cfg.SegSize, l.cfg.Sync, how, l.lastHanded(), l.delivered(), l.acked,
			s.received, s.unacked, s.onDisk, s.inMem, s.redelivered, s.spilled}, args...)...)
}

// Acknowledgement state of a delivery.
const (
	ackNo    = iota // not acknowledged
	ackYes          // acknowledged (Ack or AckThrough returned nil)
	ackMaybe        // killed between the report of the batch and that of its acknowledgement
)

// ackState says whether line k of batch bi was acknowledged.
func (l *acksLife) ackState(bi, k int) int {
	b := l.batches[bi]
	switch {
	case l.final:
		return ackYes
	case l.cfg.NoAck:
		return ackNo
	case b.state == 1:
		return ackYes
	case !l.ackTime(bi).IsZero(): // a later AckThrough covered it
		return ackYes
	case b.state == 2:
		if b.part[b.lines[k]] {
			return ackYes
		}
		return ackNo
	case !l.graceful:
		return ackMaybe
	}
	return ackNo
}

// ackTime is when batch bi was acknowledged as a whole: its K, or, with AckThrough (which
// is cumulative), the first later K of the life. Zero if it was not.
func (l *acksLife) ackTime(bi int) time.Time {
	if l.covered == nil {
		l.covered = make([]time.Time, len(l.batches))
		var next time.Time
		for j := len(l.batches) - 1; j >= 0; j-- {
			b := l.batches[j]
			if b.state == 1 {
				l.covered[j] = b.ackAt
				if !l.cfg.PerMsg {
					next = b.ackAt
				}
				continue
			}
			l.covered[j] = next
		}
	}
	return l.covered[bi]
}

// acksFill stores lines start..start+n-1 in dir as a Chan would that nobody receives
// from, and closes it (a graceful Close stores everything).
func acksFill(t *testing.T, dir string, start, n int64, cfg acksCfg) {
	t.Helper()
	src := make(chan string)
	c, err := New(dir, src, String, cfg.options()...)
	if err != nil {
		t.Fatalf("fill: New: %v", err)
	}
	for i := start; i < start+n; i++ {
		select {
		case src <- acksLine(i):
		case <-time.After(30 * time.Second):
			c.Close()
			t.Fatalf("fill: src blocked for 30s at line %d; stats %+v", i, c.Stats())
		}
	}
	if err := acksClose(t, c); err != nil {
		t.Fatalf("fill: Close: %v", err)
	}
	if s := c.Stats(); s.Received != n || s.InMemory != 0 {
		t.Errorf("fill: after Close, stats %+v", s)
	}
}

// acksClose closes c, failing the test if Close does not return within 30s.
func acksClose(t *testing.T, c *Chan[string]) error {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- c.Close() }()
	select {
	case err := <-res:
		return err
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("HANG: Close did not return within 30s; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		return nil
	}
}

// acksFinalDrain opens dir in this process with src closed, receives and acknowledges
// every delivery until Deliveries closes, and closes.
func acksFinalDrain(t *testing.T, dir string, writeAhead bool, maxUnacked int) *acksLife {
	t.Helper()
	l := &acksLife{name: "final", graceful: true, final: true}
	var mu sync.Mutex
	var errs []string
	opts := []Option{WithAcks(maxUnacked), WithErrorHandler(func(err error) {
		mu.Lock()
		errs = append(errs, err.Error())
		mu.Unlock()
	})}
	if writeAhead {
		opts = append(opts, WithWriteAhead())
	}
	src := make(chan string)
	close(src)
	start := time.Now()
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatalf("final drain: New: %v", err)
	}
	l.ready = time.Now()
	b := &acksBatch{at: time.Now(), state: 1}
	zero, ackErrs := 0, 0
	idle := time.NewTimer(10 * time.Second)
	defer idle.Stop()
	dels := c.Deliveries()
recv:
	for {
		select {
		case d, ok := <-dels:
			if !ok {
				break recv
			}
			idle.Reset(10 * time.Second)
			n, ok := acksParse(d.Msg)
			if !ok {
				t.Errorf("final drain: foreign message %q", d.Msg)
			} else {
				id := d.ID.String()
				if id == "" {
					id = "0"
					zero++
				}
				b.lines = append(b.lines, n)
				b.ids = append(b.ids, id)
			}
			// A failed Ack is a failure; it is retried, so that the drain goes on and the
			// rest of the checks still mean something.
			for try := 0; ; try++ {
				err := c.Ack(d.Seq)
				if err == nil {
					break
				}
				if ackErrs++; ackErrs <= 3 {
					t.Errorf("final drain: Ack(%d) of a delivery received: %v", d.Seq, err)
				}
				if try == 100 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		case <-idle.C:
			t.Errorf("final drain: nothing delivered for 10s and Deliveries not closed after %d; stats %+v",
				len(b.lines), c.Stats())
			break recv
		}
	}
	if err := acksClose(t, c); err != nil {
		t.Errorf("final drain: Close: %v", err)
	}
	s := c.Stats()
	l.batches = []*acksBatch{b}
	l.acked = len(b.lines)
	l.stat = acksStat{received: s.Received, unacked: s.Unacked, onDisk: s.OnDisk, inMem: s.InMemory,
		redelivered: s.Redelivered, spilled: s.Spilled}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		if !crashReport(t, e) {
			t.Errorf("final drain reported %s", e)
		}
	}
	if zero > 0 {
		t.Errorf("final drain: %d of %d deliveries (all from disk) had the zero MsgID", zero, len(b.lines))
	}
	if ackErrs > 3 {
		t.Errorf("final drain: %d failed Acks", ackErrs)
	}
	if s.OnDisk != 0 || s.Unacked != 0 || s.InMemory != 0 || s.Segments != 0 {
		t.Errorf("STATS: after the final drain (want OnDisk, Unacked, InMemory and Segments 0): %+v", s)
	}
	t.Logf("final drain: %d deliveries in %v; Redelivered %d", len(b.lines),
		time.Since(start).Round(time.Millisecond), s.Redelivered)
	return l
}

// ---- the oracle --------------------------------------------------------------------------

// acksOwed is a stretch of lines that must be done (acknowledged in some life, or
// delivered by the final drain).
type acksOwed struct {
	from         string
	start, count int64
	life         *acksLife // nil: stored by a graceful Close in this process
}

// acksCheck checks every life's deliveries (lives in order, the final drain last): no
// foreign message, no message twice in one life, nothing owed lost, nothing acknowledged
// (before the kill less the checkpoint interval and margin, or before a Close) delivered
// again, and at most maxUnacked plus what was acknowledged in that window delivered again
// after a kill. With ids, every delivery's MsgID is nonzero (write-ahead) and the same each
// time a message is delivered, and no two messages share one.
func acksCheck(t *testing.T, lives []*acksLife, owed []acksOwed, writeAhead bool) {
	t.Helper()
	margin := *crashMarginFlag
	where := map[int64][]int{} // line -> lives that delivered it, ascending
	for i, l := range lives {
		seen := map[int64]bool{}
		twice := 0
		for _, b := range l.batches {
			for _, n := range b.lines {
				if seen[n] {
					if twice++; twice <= 3 {
						t.Errorf("%s delivered line %d twice (a Chan never delivers a message twice in one life)", l.name, n)
					}
					continue
				}
				seen[n] = true
				where[n] = append(where[n], i)
			}
		}
		if twice > 3 {
			t.Errorf("%s delivered %d lines twice", l.name, twice)
		}
	}
	owes := func(n int64) bool {
		for _, o := range owed {
			if n >= o.start && n < o.start+o.count {
				return true
			}
		}
		return false
	}
	for n := range where {
		if !owes(n) {
			found := false
			for _, l := range lives {
				if l.cfg.Rate > 0 && n >= l.cfg.Start && n < l.cfg.Start+acksRange {
					found = true
				}
			}
			for _, o := range owed {
				if o.life == nil && n >= o.start && n < o.start+o.count {
					found = true
				}
			}
			if !found {
				t.Errorf("line %d came out and was never sent", n)
			}
		}
	}

	// Done somewhere: acknowledged (K), maybe acknowledged (the last batch of a killed
	// life, between its D and K), or delivered by the final drain.
	done := map[int64]bool{}
	for _, l := range lives {
		for bi, b := range l.batches {
			for k, n := range b.lines {
				if l.ackState(bi, k) != ackNo {
					done[n] = true
				}
			}
		}
	}
	totalLost := 0
	for _, o := range owed {
		var lost []int64
		for n := o.start; n < o.start+o.count; n++ {
			if !done[n] {
				lost = append(lost, n)
			}
		}
		if len(lost) == 0 {
			continue
		}
		totalLost += len(lost)
		what := "stored by a graceful Close"
		if o.life != nil {
			oldest := o.life.handedAt(lost[0])
			newest := o.life.handedAt(lost[len(lost)-1])
			if o.life.graceful {
				what = fmt.Sprintf("taken from src before Close (%s)", o.life.name)
			} else {
				what = fmt.Sprintf("taken from src by %s, %v to %v before its kill", o.life.name,
					o.life.killedAt.Sub(oldest).Round(time.Millisecond), o.life.killedAt.Sub(newest).Round(time.Millisecond))
			}
		}
		t.Errorf("LOST: %d of %d lines owed by %s never done, e.g. %v; %s; their deliveries: %s", len(lost), o.count, o.from,
			lost[:min(5, len(lost))], what, acksHistory(lives, lost[:min(5, len(lost))]))
	}

	// Delivered again after being acknowledged.
	for i, l := range lives[:len(lives)-1] {
		cut := l.killedAt.Add(-acksCkpt - margin)
		var again, strictAgain, window, unacked, strictN int
		var ex []string
		var worst time.Duration
		for bi, b := range l.batches {
			for k, n := range b.lines {
				st := l.ackState(bi, k)
				at := l.ackTime(bi)
				if st == ackYes && at.IsZero() {
					at = l.killedAt // acknowledged before a failed Ack of its batch: no time known
				}
				strict := st == ackYes && (l.graceful || at.Before(cut))
				switch {
				case st != ackNo && !strict:
					window++
				case st == ackNo:
					unacked++
				case strict:
					strictN++
				}
				w := where[n]
				j, _ := slices.BinarySearch(w, i+1)
				if j == len(w) {
					continue
				}
				again++
				if strict {
					strictAgain++
					if !l.graceful {
						worst = max(worst, l.killedAt.Sub(at))
					}
					if len(ex) < 3 {
						when := "before Close"
						if !l.graceful {
							when = l.killedAt.Sub(at).Round(time.Millisecond).String() + " before the kill"
						}
						ex = append(ex, fmt.Sprintf("line %d (acknowledged %s, delivered again by %s)", n, when, lives[w[j]].name))
					}
				}
			}
		}
		if strictAgain > 0 {
			limit := "Close"
			if !l.graceful {
				limit = fmt.Sprintf("the kill less %v (checkpoint %v, margin %v); the oldest %v before it",
					acksCkpt+margin, acksCkpt, margin, worst.Round(time.Millisecond))
			}
			t.Errorf("REPEATED: %d lines %s acknowledged before %s came out again, e.g. %v", strictAgain, l.name, limit, ex)
		}
		bound := unacked
		if !l.graceful {
			bound = max(l.cfg.MaxUnacked, unacked) + window + acksBatchLen
		}
		if again > bound {
			t.Errorf("REPEATED: %d of the lines %s delivered came out again; "+
				"bound %d (%d not acknowledged, %d acknowledged within %v of the kill)",
				again, l.name, bound, unacked, window, acksCkpt+margin)
		}
		if l.graceful {
			t.Logf("%s: %d of its deliveries came out again (%d not acknowledged, %d acknowledged before Close)",
				l.name, again, unacked, strictN)
		} else {
			t.Logf("%s: %d of its deliveries came out again (%d not acknowledged, %d acknowledged within %v of the kill, %d before)",
				l.name, again, unacked, window, acksCkpt+margin, strictN)
		}
	}

	// MsgIDs.
	idOf := map[int64]string{}
	lineOf := map[string]int64{}
	var zero, changed, shared int
	for _, l := range lives {
		for _, b := range l.batches {
			for k, n := range b.lines {
				id := b.ids[k]
				if id == "0" {
					if writeAhead {
						if zero++; zero <= 3 {
							t.Errorf("%s: line %d delivered with the zero MsgID in write-ahead mode", l.name, n)
						}
					}
					continue
				}
				if prev, ok := idOf[n]; ok && prev != id {
					if changed++; changed <= 3 {
						t.Errorf("MSGID: line %d delivered as %s, then by %s as %s", n, prev, l.name, id)
					}
				} else if !ok {
					idOf[n] = id
				}
				if m, ok := lineOf[id]; ok && m != n {
					if shared++; shared <= 3 {
						t.Errorf("MSGID: lines %d and %d share MsgID %s", m, n, id)
					}
				} else if !ok {
					lineOf[id] = n
				}
			}
		}
	}
	if zero+changed+shared > 3 {
		t.Errorf("MSGID: %d zero, %d changed, %d shared", zero, changed, shared)
	}
	var nOwed int64
	for _, o := range owed {
		nOwed += o.count
	}
	t.Logf("owed %d, lost %d; %d distinct lines delivered, %d with a MsgID", nOwed, totalLost, len(where), len(idOf))
}

// acksHistory describes the deliveries of lines: life, acknowledgement, MsgID.
func acksHistory(lives []*acksLife, lines []int64) string {
	var b strings.Builder
	for _, n := range lines {
		fmt.Fprintf(&b, "[%d:", n)
		for _, l := range lives {
			for _, bt := range l.batches {
				for k, m := range bt.lines {
					if m == n {
						state := [...]string{"not acknowledged", "acknowledged", "ack failed"}[bt.state]
						if bt.part[n] {
							state = "acknowledged (then an ack failed)"
						}
						fmt.Fprintf(&b, " %s %s id %s (batch of %d at +%v);", l.name, state, bt.ids[k], len(bt.lines),
							bt.at.Sub(l.ready).Round(time.Millisecond))
					}
				}
			}
		}
		b.WriteString("]")
	}
	return b.String()
}

// acksLifeLen is a random life length from lo to -crash.life.
func acksLifeLen(rng *rand.Rand, lo time.Duration) time.Duration {
	hi := max(*crashLifeFlag, lo)
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// ---- the tests ---------------------------------------------------------------------------

// TestCrashAcksOutage: the receiver is down (the consumer receives and acknowledges
// nothing) and the child is killed; the next life acknowledges everything (and is killed
// too, once idle or mid-drain). A kill during the outage may lose only what was taken
// from src within the linger time (plus a batch write: -crash.margin) before it.
func TestCrashAcksOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 21))
	rounds := crashRounds(3)
	const maxUnacked, buffer = 500, 256
	window := acksLinger + *crashMarginFlag
	var lives []*acksLife
	var owed []acksOwed
	for r := range rounds {
		out := acksStart(t, work, fmt.Sprintf("outage%d", r), acksCfg{Dir: dir, Seed: seed + uint64(r),
			Start: int64(r) * acksRange, SegSize: acksSegSize(rng), Rate: 20000, MaxUnacked: maxUnacked,
			Buffer: buffer, NoAck: true})
		out.waitReady(t)
		out.sleepUntil(t, out.ready.Add(acksLifeLen(rng, 600*time.Millisecond)))
		out.kill(t)
		n := out.handedBefore(out.killedAt.Add(-window))
		out.logf(t, "owed %d (taken %v before the kill)", n, window)
		lives = append(lives, out)
		owed = append(owed, acksOwed{from: out.name, start: out.cfg.Start, count: n, life: out})

		ack := acksStart(t, work, fmt.Sprintf("acks%d", r), acksCfg{Dir: dir, Seed: seed + uint64(r) + 1000,
			SegSize: acksSegSize(rng), MaxUnacked: maxUnacked, Buffer: buffer, HoldMax: 5 * time.Millisecond})
		ack.waitReady(t)
		if rng.IntN(2) == 0 {
			if !ack.waitFor(15*time.Second, func() bool {
				s := ack.stat
				return s.at.After(ack.lastDel.Add(200*time.Millisecond)) && s.unacked == 0 && s.inMem == 0
			}) {
				t.Errorf("%s: not idle after 15s: stats %+v", ack.name, ack.stat)
			}
		} else {
			ack.sleepUntil(t, ack.ready.Add(time.Duration(50+rng.IntN(400))*time.Millisecond))
		}
		ack.kill(t)
		ack.logf(t, "")
		lives = append(lives, ack)
		if t.Failed() {
			break
		}
	}
	lives = append(lives, acksFinalDrain(t, dir, false, maxUnacked))
	acksCheck(t, lives, owed, false)
}

// TestCrashAcksDraining: a backlog drains with acknowledgements (AckThrough per 200) and
// the child is killed mid-drain; the next life drains the rest. Nothing may be lost;
// what comes again is bounded by maxUnacked plus what was acknowledged in the last
// checkpoint interval (plus -crash.margin), and nothing acknowledged before that window
// comes again. Every delivery is from disk: each carries a MsgID, the same every time.
func TestCrashAcksDraining(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 22))
	rounds := crashRounds(4)
	const maxUnacked, buffer, fill = 1000, 256, 25000
	var lives []*acksLife
	var owed []acksOwed
	var total, acked int64
	for r := range rounds {
		start := time.Now()
		acksFill(t, dir, int64(r)*acksRange, fill, acksCfg{MaxUnacked: maxUnacked, Buffer: buffer, SegSize: acksSegSize(rng)})
		owed = append(owed, acksOwed{from: fmt.Sprintf("fill%d", r), start: int64(r) * acksRange, count: fill})
		total += fill
		fillTime := time.Since(start)
		backlog := total - acked
		frac := 0.3 + 0.65*rng.Float64()
		target := int(frac * float64(backlog))
		// The consumer "sends" each batch for up to 3ms: a life drains for long enough
		// that acknowledgements older than the checkpoint window come before most kills.
		l := acksStart(t, work, fmt.Sprintf("drain%d", r), acksCfg{Dir: dir, Seed: seed + uint64(r),
			SegSize: acksSegSize(rng), MaxUnacked: maxUnacked, Buffer: buffer, HoldMax: 3 * time.Millisecond})
		l.waitReady(t)
		if !l.waitFor(30*time.Second, func() bool {
			return l.acked >= target || (l.stat.at.After(l.lastDel.Add(time.Second)) && l.stat.unacked == 0)
		}) {
			t.Errorf("%s: %d of %d acknowledged after 30s; stats %+v", l.name, l.acked, target, l.stat)
		}
		l.kill(t)
		acked += int64(l.acked)
		var rate float64
		if len(l.batches) > 1 {
			first, last := l.batches[0].at, l.batches[len(l.batches)-1].at
			if d := last.Sub(first).Seconds(); d > 0 {
				rate = float64(l.delivered()) / d
			}
		}
		l.logf(t, "fill %d in %v; killed at %.0f%% of a backlog of about %d; drain %.0f msgs/s", fill,
			fillTime.Round(time.Millisecond), 100*frac, backlog, rate)
		lives = append(lives, l)
		if t.Failed() {
			break
		}
	}
	lives = append(lives, acksFinalDrain(t, dir, false, maxUnacked))
	acksCheck(t, lives, owed, false)
	// Everything came from disk: every delivery of every life has a MsgID.
	zero := 0
	for _, l := range lives {
		for _, b := range l.batches {
			for _, id := range b.ids {
				if id == "0" {
					zero++
				}
			}
		}
	}
	if zero > 0 {
		t.Errorf("MSGID: %d deliveries of stored messages had the zero MsgID", zero)
	}
}

// TestCrashWriteAhead: WithWriteAhead and WithAcks, several lives on one directory, each
// producing and acknowledging (AckThrough per batch or Ack per message in shuffled order,
// the consumer stalling now and then) until killed. Nothing taken from src half a second
// before a kill may be lost; every delivery carries a nonzero MsgID, the same each time
// the message is delivered.
func TestCrashWriteAhead(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 23))
	rounds := crashRounds(5)
	const maxUnacked, buffer = 1000, 256
	const window = 500 * time.Millisecond
	var lives []*acksLife
	var owed []acksOwed
	for r := range rounds {
		l := acksStart(t, work, fmt.Sprintf("life%d", r), acksCfg{Dir: dir, Seed: seed + uint64(r), Start: int64(r) * acksRange,
			SegSize: acksSegSize(rng), Sync: [...]string{"", "always", "never"}[rng.IntN(3)],
			Rate: 10000, MaxUnacked: maxUnacked, Buffer: buffer, WriteAhead: true, PerMsg: r%2 == 1,
			HoldMax: 20 * time.Millisecond, StallOneIn: 8})
		l.waitReady(t)
		l.sleepUntil(t, l.ready.Add(acksLifeLen(rng, 700*time.Millisecond)))
		l.kill(t)
		n := l.handedBefore(l.killedAt.Add(-window))
		l.logf(t, "owed %d (taken %v before the kill); per-message acks %t", n, window, l.cfg.PerMsg)
		lives = append(lives, l)
		owed = append(owed, acksOwed{from: l.name, start: l.cfg.Start, count: n, life: l})
		if t.Failed() {
			break
		}
	}
	lives = append(lives, acksFinalDrain(t, dir, true, maxUnacked))
	acksCheck(t, lives, owed, true)
}

// TestCrashAcksGracefulRestart: the child gets SIGTERM and calls Close while its consumer
// holds a batch it has not acknowledged (it is "sending" it): the batch is delivered
// again after New, and nothing acknowledged before Close ever is.
func TestCrashAcksGracefulRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, wa := range []bool{false, true} {
		name := "memory"
		if wa {
			name = "writeahead"
		}
		t.Run(name, func(t *testing.T) {
			// No time-based check here: the two modes may share the CPU.
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "spool")
			work := t.TempDir()
			seed := crashSeed(t)
			rng := rand.New(rand.NewPCG(seed, 24))
			rounds := crashRounds(3)
			const maxUnacked, buffer = 500, 128
			var lives []*acksLife
			var owed []acksOwed
			inHand := 0
			for r := range rounds {
				l := acksStart(t, work, fmt.Sprintf("life%d", r), acksCfg{Dir: dir, Seed: seed + uint64(r), Start: int64(r) * acksRange,
					SegSize: acksSegSize(rng), Rate: 10000, MaxUnacked: maxUnacked, Buffer: buffer, WriteAhead: wa, PerMsg: r%2 == 1,
					HoldMax: 40 * time.Millisecond, Term: true})
				l.waitReady(t)
				l.sleepUntil(t, l.ready.Add(time.Duration(250+rng.IntN(450))*time.Millisecond))
				l.term(t)
				held := 0
				for bi, b := range l.batches {
					for k := range b.lines {
						if l.ackState(bi, k) != ackYes {
							held++
						}
					}
					if b.state == 0 {
						t.Errorf("%s: a batch without the result of its acknowledgement after a graceful exit", l.name)
					}
				}
				inHand += held
				l.logf(t, "%d deliveries in hand at Close; Close took %v", held, l.closedAt.Sub(l.termAt).Round(time.Millisecond))
				lives = append(lives, l)
				owed = append(owed, acksOwed{from: l.name, start: l.cfg.Start, count: l.lastHanded(), life: l})
				if t.Failed() {
					break
				}
			}
			lives = append(lives, acksFinalDrain(t, dir, wa, maxUnacked))
			acksCheck(t, lives, owed, wa)
			// The batches in hand at Close came again (acksCheck counts them as owed
			// through the lines taken from src; this names the failure).
			for i, l := range lives[:len(lives)-1] {
				seenAfter := map[int64]bool{}
				for _, m := range lives[i+1:] {
					for _, b := range m.batches {
						for _, n := range b.lines {
							seenAfter[n] = true
						}
					}
				}
				missing := 0
				for bi, b := range l.batches {
					for k, n := range b.lines {
						if l.ackState(bi, k) == ackNo && !seenAfter[n] {
							missing++
						}
					}
				}
				if missing > 0 {
					t.Errorf("LOST: %s: %d deliveries in hand at Close (not acknowledged) never came again", l.name, missing)
				}
			}
			if inHand == 0 {
				t.Errorf("no life held a batch at Close: the test did not test the case")
			}
		})
	}
}
