package pelichan

// Crash tests: a re-executed child process (this test binary, run with
// -test.run=^TestCrashChild$ and PELICHAN_CRASH_CHILD set) spills, and is killed with
// SIGKILL at random moments, many times on one directory. The parent reopens the directory
// after every kill and finally drains it, and checks what DESIGN.md promises for a crash:
// every reopen succeeds, nothing false comes out, everything that reached the spool comes
// out, and duplicates stay within the cursor checkpoint window.
//
// What the child knows was stored, it writes to a progress log with write(2) (O_APPEND),
// which SIGKILL cannot undo:
//
//	R <nanos>                       New returned
//	V <n>                           ids below n may be sent (written before they are)
//	P <nanos> <handed> <stats...>   progress every 20ms: ids below handed were taken by the loop
//	W <nanos> <handed>              watermark: the producer paused, nothing held in memory,
//	                                Out empty: every id below handed was stored or received
//	                                (ordered: Out may hold messages, stored ones)
//	E <nanos> <efbig> <full> <corrupt> <quoted error>   an error from WithErrorHandler
//	c <nanos> <len(Out)> <how>      Close is called (close modes; how the consumer meets it)
//	C <nanos> <quoted error or "">  Close returned (close modes only)
//
// A consumer in the child writes each message it receives as a line of its own file, one
// write(2) per message, so at most the one message between receive and write is unknown.
//
// The default run is short (about 20s under -race on 2 cores). Flags for soaks:
// -crash.rounds=N (kills per case), -crash.maxdelay=2.5s (rounds long enough for the
// 1s cursor checkpoint to matter), -crash.margin (slack of the time-based check),
// -crash.seed (replay).

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	crashRoundsFlag = flag.Int("crash.rounds", 0, "crash tests: child processes killed per case (0: a short default)")
	crashSeedFlag   = flag.Uint64("crash.seed", 0, "crash tests: seed for kill times and consumer stalls (0: from the clock)")
	crashMarginFlag = flag.Duration("crash.margin", 200*time.Millisecond,
		"crash tests: slack on top of linger and sync interval within which a message taken from src must be on disk")
	crashMaxDelayFlag = flag.Duration("crash.maxdelay", 400*time.Millisecond,
		"crash tests: longest a child runs before it is killed (at least 50ms; above 1s the time checkpoint comes into play)")
)

const (
	crashEnv       = "PELICHAN_CRASH_CHILD"
	crashLinger    = 25 * time.Millisecond // the children's WithLinger
	crashCkpt      = time.Second           // options.checkpoint's default
	crashProgEvery = 20 * time.Millisecond
	crashMarkEvery = 70 * time.Millisecond
)

// crashCase configures one crash scenario.
type crashCase struct {
	name    string
	mode    string // child mode: spill (no consumer), consume, fsize
	sync    string // never, always, every50ms
	buffer  int    // WithBuffer
	segSize int64  // WithSegmentSize
	rounds  int
	limit   int64 // fsize: RLIMIT_FSIZE of the child
	n       int   // fsize, consume: messages to send
	close   bool  // fsize, consume: Close after n messages and exit (else go on until killed)
	ordered bool  // WithOrdered
	noisy   bool  // messages that compress poorly (always in fsize mode)
	// consume close mode: how long a child takes from exec to New returning, from there to
	// calling Close, and in Close (the parent learns them from the rounds that closed); a
	// kill aimed at one of these stretches comes within it
	readySpan, runSpan, closeSpan time.Duration
}

// opts are the options of the case that a reopen must use too.
func (cc crashCase) opts() []Option {
	if cc.ordered {
		return []Option{WithOrdered()}
	}
	return nil
}

func (cc crashCase) syncPolicy() (SyncPolicy, time.Duration) {
	switch cc.sync {
	case "never":
		return SyncNever, 0
	case "always":
		return SyncAlways, 0
	case "every50ms":
		return SyncEvery(50 * time.Millisecond), 50 * time.Millisecond
	}
	panic("unknown sync " + cc.sync)
}

// window is how long before a kill a message must have been taken from src to be owed:
// the linger, the sync interval and a margin for a loaded machine.
func (cc crashCase) window() time.Duration {
	_, every := cc.syncPolicy()
	return crashLinger + every + *crashMarginFlag
}

// crashMsg is message seq of child round: unique, log-line-like, checkable.
func crashMsg(round, seq int) string {
	h := uint32(round*1_000_003+seq) * 2654435761
	return fmt.Sprintf("m-%d-%d-%08x level=info svc=api msg=\"crash test line\" ms=%d", round, seq, h, seq%997)
}

// crashNoisy is a message that compresses poorly (fsize mode): files grow fast.
func crashNoisy(round, seq int) string {
	r := rand.NewPCG(uint64(round), uint64(seq))
	b := fmt.Appendf(nil, "n-%d-%d-", round, seq)
	const hex = "0123456789abcdef"
	for range 10 { // 160 hex digits, 16 from each draw (cheap: the checks make one per message)
		v := r.Uint64()
		for range 16 {
			b = append(b, hex[v&15])
			v >>= 4
		}
	}
	return string(b)
}

// crashParse returns the round and seq of m, if m is exactly a message the children send.
func crashParse(m string) (round, seq int, ok bool) {
	parts := strings.SplitN(m, "-", 4)
	if len(parts) != 4 || (parts[0] != "m" && parts[0] != "n") {
		return 0, 0, false
	}
	r, err1 := strconv.Atoi(parts[1])
	s, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || r < 0 || s < 0 {
		return 0, 0, false
	}
	want := crashMsg(r, s)
	if parts[0] == "n" {
		want = crashNoisy(r, s)
	}
	return r, s, m == want
}

// ---- the child ---------------------------------------------------------------------------

// TestCrashChild is the child process of the crash tests; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(crashEnv)
	if mode == "" {
		t.Skip("the child process of the crash tests (run by them)")
	}
	os.Exit(crashChild(mode))
}

func crashChild(mode string) int {
	env := func(k string) string { return os.Getenv("PELICHAN_CRASH_" + k) }
	num := func(k string) int64 { n, _ := strconv.ParseInt(env(k), 10, 64); return n }
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "crash child: "+format+"\n", args...)
		return 2
	}
	cc := crashCase{mode: mode, sync: env("SYNC"), buffer: int(num("BUFFER")), segSize: num("SEGSIZE"),
		limit: num("LIMIT"), n: int(num("N")), close: env("CLOSE") == "1", ordered: env("ORDERED") == "1",
		noisy: env("NOISY") == "1"}
	round := int(num("ROUND"))
	rng := rand.New(rand.NewPCG(uint64(num("SEED")), uint64(round)))
	closeRng := rand.New(rand.NewPCG(uint64(num("SEED")), uint64(round)|1<<40)) // the main goroutine's

	lg, err := os.OpenFile(env("LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	var lmu sync.Mutex
	logf := func(format string, args ...any) {
		line := fmt.Appendf(nil, format+"\n", args...)
		lmu.Lock()
		lg.Write(line) // one write(2): survives SIGKILL
		lmu.Unlock()
	}
	if mode == "fsize" {
		// Writes past the limit fail with EFBIG instead of killing the process.
		signal.Ignore(syscall.SIGXFSZ)
		lim := syscall.Rlimit{Cur: uint64(cc.limit), Max: uint64(cc.limit)}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			return fail("setrlimit: %v", err)
		}
	}
	gen := crashMsg
	if mode == "fsize" || cc.noisy {
		gen = crashNoisy
	}

	policy, _ := cc.syncPolicy()
	src := make(chan string)
	c, err := New(env("DIR"), src, String, append([]Option{WithBuffer(cc.buffer), WithSync(policy), WithLinger(crashLinger),
		WithSegmentSize(cc.segSize), WithErrorHandler(func(err error) {
			logf("E %d %t %t %t %q", time.Now().UnixNano(), errors.Is(err, syscall.EFBIG), errors.Is(err, ErrFull),
				errors.Is(err, ErrCorrupt), err.Error())
		})}, cc.opts()...)...)
	if err != nil {
		logf("F %q", err.Error())
		return fail("New: %v", err)
	}
	logf("R %d", time.Now().UnixNano())

	var handed atomic.Int64
	go func() { // progress
		for {
			time.Sleep(crashProgEvery)
			h := handed.Load()
			s := c.Stats()
			logf("P %d %d %d %d %d %d %d %d", time.Now().UnixNano(), h,
				s.Received, s.Direct, s.Spilled, s.InMemory, s.OnDisk, s.Refilled)
			lg.Sync()
		}
	}()

	// consume close mode: how the consumer meets Close. "stop": it receives flat out from
	// catchUp on (so that nothing is on disk) and stops for good (a stalled receiver) once
	// the producer reaches stopAt, a little before its last message, so that Out holds
	// what was handed out last, from memory (Close takes all of Out back and, ordered,
	// stores it in front of the backlog); "steady": from the last watermark it receives
	// flat out, also while Close takes Out back; "asis": it goes on stalling now and then
	// (with a backlog, Out holds stored messages at Close).
	closeMode, catchUp, stopAt := "", -1, -1
	if mode == "consume" && cc.close {
		switch p := closeRng.IntN(8); {
		case round == 0 && cc.ordered:
			// A fresh directory, no cursor file yet: the front segment is the first
			// segment Open finds. Stored behind Out's messages, more.
			closeMode, stopAt = "stop", max(cc.n-cc.buffer-1-closeRng.IntN(2*cc.buffer), 0)
			catchUp = max(stopAt-512, 0)
		case p < 5:
			// Mostly all it misses fits in Out: nothing is stored behind Out's messages
			// (their copies, written while they waited, are the last record).
			k := 1 + closeRng.IntN(cc.buffer)
			if closeRng.IntN(4) == 0 {
				k += closeRng.IntN(2 * cc.buffer)
			}
			closeMode, stopAt = "stop", max(cc.n-k, 0)
			catchUp = max(stopAt-512, 0)
		case p < 6:
			closeMode = "steady"
		default:
			closeMode = "asis"
		}
	}
	var steady, stopped atomic.Bool
	closed := make(chan struct{}) // Close returned
	consDone := make(chan struct{})
	if mode == "consume" {
		rf, err := os.OpenFile(env("RECV"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fail("%v", err)
		}
		go func() { // a consumer that stalls now and then, so messages spill and refill
			defer close(consDone)
			for {
				if !steady.Load() && rng.IntN(3) == 0 {
					time.Sleep(time.Duration(10+rng.IntN(60)) * time.Millisecond)
				}
				t := time.NewTimer(time.Duration(10+rng.IntN(60)) * time.Millisecond)
			run:
				for {
					if stopped.Load() {
						select { // until Close has taken back what Out holds
						case <-closed:
						case <-time.After(time.Minute):
						}
					}
					select {
					case v, ok := <-c.Out():
						if !ok { // closed by Close
							t.Stop()
							return
						}
						rf.Write([]byte(v + "\n")) // one write(2) per message
					case <-t.C:
						break run
					}
				}
			}
		}()
	}

	prodDone := make(chan struct{})
	go func() { // producer
		defer close(prodDone)
		reserved := 0
		lastMark := time.Now()
		for seq := 0; cc.n == 0 || seq < cc.n || !cc.close; {
			if seq == catchUp {
				steady.Store(true)
			}
			if seq == stopAt {
				stopped.Store(true)
			}
			if seq == reserved {
				reserved += 1024
				logf("V %d", reserved)
			}
			src <- gen(round, seq)
			seq++
			handed.Store(int64(seq))
			if seq%128 == 0 {
				time.Sleep(time.Millisecond) // keep the spool a size the final drain can afford
			}
			if time.Since(lastMark) >= crashMarkEvery || seq == cc.n {
				// Pause until nothing taken is held in memory: a watermark that does not
				// depend on timing.
				for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
					s := c.Stats()
					// Ordered, with a backlog, Out is seldom empty; InMemory == 0 says that
					// what it holds is stored.
					if s.Received == int64(seq) && s.InMemory == 0 && (mode != "consume" || cc.ordered || len(c.Out()) == 0) {
						logf("W %d %d", time.Now().UnixNano(), seq)
						break
					}
					time.Sleep(2 * time.Millisecond)
				}
				lastMark = time.Now()
			}
		}
	}()
	if !cc.close {
		select {} // until SIGKILL
	}
	<-prodDone
	if closeMode == "steady" {
		steady.Store(true)
	}
	if closeMode != "" {
		time.Sleep(time.Duration(closeRng.IntN(20)) * time.Millisecond)
	}
	logf("c %d %d %s", time.Now().UnixNano(), len(c.Out()), closeMode)
	if env("SIGFD") == "3" { // the parent times its kill from here
		os.NewFile(3, "closing").Write([]byte{1})
	}
	err = c.Close()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	logf("C %d %q", time.Now().UnixNano(), msg)
	close(closed)
	if mode == "consume" {
		select { // the consumer writes down what it took until Out is closed
		case <-consDone:
		case <-time.After(10 * time.Second):
			return fail("the consumer did not see Out closed after Close")
		}
	}
	lg.Close()
	return 0
}

// ---- the parent --------------------------------------------------------------------------

// crashProg is one P line.
type crashProg struct {
	at                                                         time.Time
	handed, received, direct, spilled, inMem, onDisk, refilled int64
}

// crashRound is what one child process left behind.
type crashRound struct {
	round      int
	early      bool // killed at a random moment from exec, maybe before New returned
	delay      time.Duration
	started    time.Time // exec
	ready      time.Time
	killedAt   time.Time
	exited     bool   // exited by itself (close modes)
	plan       string // consume close mode: when the kill was aimed (exec, run, close, exit)
	closeAt    time.Time
	closedAt   time.Time
	outAtClose int    // len(Out) when Close was called
	closeMode  string // consume close mode: how the consumer met Close (stop, steady, asis)
	closeErr   *string
	reserved   int
	progress   []crashProg
	marks      [][2]int64 // nanos, handed
	errs       []string   // E lines
	efbig      int
	recv       []string // consume mode: what its consumer received
	childOut   string
	needTime   int // ids below it were taken more than the window before the kill
	needMark   int // ids below it were stored (last watermark)
	openFailed string
	tail       []string // the last lines of its progress log
}

// inClose reports whether the round was killed while Close ran.
func (r *crashRound) inClose() bool {
	return !r.exited && !r.closeAt.IsZero() && r.closeErr == nil
}

func (r *crashRound) need() int { return max(r.needTime, r.needMark) }

// storeLag estimates from the progress lines the longest a message taken from src waited
// in memory: from a line to the first later one at which as many messages as were taken
// then had been stored or handed to Out. It is evidence for the window, not a check.
func (r *crashRound) storeLag() time.Duration {
	var lag time.Duration
	for j, p := range r.progress {
		for _, q := range r.progress[j:] {
			if q.received-q.inMem >= p.handed {
				lag = max(lag, q.at.Sub(p.at))
				break
			}
		}
	}
	return lag
}

func crashSeed(t *testing.T) uint64 {
	seed := *crashSeedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -crash.seed=%d)", seed, seed)
	return seed
}

func crashRounds(def int) int {
	if *crashRoundsFlag > 0 {
		return *crashRoundsFlag
	}
	return def
}

// crashRun runs child round r on dir and kills it (or, in fsize close mode, waits for it to
// exit), then reads its logs.
func crashRun(t *testing.T, cc crashCase, dir, work string, round int, seed uint64, rng *rand.Rand) *crashRound {
	t.Helper()
	cr := &crashRound{round: round}
	logPath := filepath.Join(work, fmt.Sprintf("round%03d.log", round))
	recvPath := filepath.Join(work, fmt.Sprintf("round%03d.recv", round))
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(),
		crashEnv+"="+cc.mode,
		"PELICHAN_CRASH_DIR="+dir,
		"PELICHAN_CRASH_LOG="+logPath,
		"PELICHAN_CRASH_RECV="+recvPath,
		"PELICHAN_CRASH_ROUND="+strconv.Itoa(round),
		"PELICHAN_CRASH_SEED="+strconv.FormatUint(seed, 10),
		"PELICHAN_CRASH_SYNC="+cc.sync,
		"PELICHAN_CRASH_BUFFER="+strconv.Itoa(cc.buffer),
		"PELICHAN_CRASH_SEGSIZE="+strconv.FormatInt(cc.segSize, 10),
		"PELICHAN_CRASH_LIMIT="+strconv.FormatInt(cc.limit, 10),
		"PELICHAN_CRASH_N="+strconv.Itoa(cc.n),
		"PELICHAN_CRASH_CLOSE="+map[bool]string{true: "1", false: "0"}[cc.close],
		"PELICHAN_CRASH_ORDERED="+map[bool]string{true: "1", false: "0"}[cc.ordered],
		"PELICHAN_CRASH_NOISY="+map[bool]string{true: "1", false: "0"}[cc.noisy],
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// consume close mode: the child writes a byte to fd 3 when it calls Close.
	var closing chan struct{}
	var sigR, sigW *os.File
	if cc.mode == "consume" && cc.close {
		var err error
		if sigR, sigW, err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		cmd.ExtraFiles = []*os.File{sigW}
		cmd.Env = append(cmd.Env, "PELICHAN_CRASH_SIGFD=3")
		closing = make(chan struct{})
	}
	start := time.Now()
	cr.started = start
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exit := make(chan error, 1)
	go func() { exit <- cmd.Wait() }()
	if sigW != nil {
		sigW.Close() // the child's copy stays: the read below ends when the child does
		go func() {
			defer sigR.Close()
			sigR.SetReadDeadline(time.Now().Add(5 * time.Minute))
			if n, _ := sigR.Read(make([]byte, 1)); n == 1 {
				close(closing)
			}
		}()
	}
	exitedEarly := func(err error) {
		t.Fatalf("round %d: child exited by itself (%v); output:\n%s", round, err, out.String())
	}

	cr.delay = 50*time.Millisecond + time.Duration(rng.Int64N(int64(max(*crashMaxDelayFlag-50*time.Millisecond, 0))+1))
	cr.early = cc.mode != "fsize" && rng.IntN(4) == 0
	switch {
	case closing != nil:
		crashCloseRound(t, cc, cr, rng, start, logPath, exit, closing, &out)
	case cc.close:
		select {
		case err := <-exit:
			cr.exited = true
			if err != nil {
				t.Fatalf("round %d: child: %v; output:\n%s", round, err, out.String())
			}
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			<-exit
			t.Fatalf("round %d: child did not finish; output:\n%s", round, out.String())
		}
	case cc.mode == "fsize":
		// Kill once the child has hit the limit a few times and stored more after it.
		deadline := time.Now().Add(time.Minute)
		for {
			b, _ := os.ReadFile(logPath)
			if bytes.Count(b, []byte(" true true false ")) >= 2 && bytes.Count(b, []byte("\nW ")) >= 3 {
				break
			}
			select {
			case err := <-exit:
				exitedEarly(err)
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exit
				t.Fatalf("round %d: child never hit the file size limit; log:\n%s\noutput:\n%s", round, b, out.String())
			}
		}
		select {
		case err := <-exit:
			exitedEarly(err)
		case <-time.After(cr.delay):
		}
	case cr.early:
		select {
		case err := <-exit:
			exitedEarly(err)
		case <-time.After(time.Until(start.Add(cr.delay))):
		}
	default:
		for deadline := time.Now().Add(60 * time.Second); ; {
			if b, _ := os.ReadFile(logPath); bytes.HasPrefix(b, []byte("R ")) || bytes.Contains(b, []byte("\nR ")) {
				break
			}
			select {
			case err := <-exit:
				exitedEarly(err)
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exit
				t.Fatalf("round %d: child never opened the spool; output:\n%s", round, out.String())
			}
		}
		select {
		case err := <-exit:
			exitedEarly(err)
		case <-time.After(cr.delay):
		}
	}
	if !cr.exited {
		cr.killedAt = time.Now()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && !(closing != nil && errors.Is(err, os.ErrProcessDone)) {
			t.Fatal(err)
		}
		var err error
		select {
		case err = <-exit:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: child not gone a minute after SIGKILL", round)
		}
		var ee *exec.ExitError
		switch {
		case err == nil && closing != nil: // it closed and exited just before the kill
			cr.exited, cr.killedAt = true, time.Time{}
		case !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL:
			t.Fatalf("round %d: child ended with %v before the kill; output:\n%s", round, err, out.String())
		}
	}
	cr.childOut = out.String()
	if strings.Contains(cr.childOut, "DATA RACE") || strings.Contains(cr.childOut, "panic:") {
		t.Errorf("round %d: child reported a race or a panic:\n%s", round, cr.childOut)
	}
	crashReadLog(t, cr, logPath)
	if cc.mode == "consume" {
		cr.recv = crashReadLines(t, recvPath)
	}

	// What must have survived the kill.
	if !cr.exited {
		cutoff := cr.killedAt.Add(-cc.window())
		for _, p := range cr.progress {
			if !p.at.After(cutoff) {
				cr.needTime = int(p.handed)
			}
		}
	}
	if len(cr.marks) > 0 {
		cr.needMark = int(cr.marks[len(cr.marks)-1][1])
	}
	if cr.exited && cc.mode == "consume" && cr.closeErr != nil && *cr.closeErr == "" {
		cr.needMark = cc.n // closed gracefully: everything it sent is owed
	}
	return cr
}

// crashCloseRound runs a round of consume close mode (for crashRun): it kills the child at
// a random moment from exec (before or during New), from New, or from the moment the
// child calls Close (within cc.closeSpan), or lets it close and exit. A child that exits
// before its kill closed gracefully.
func crashCloseRound(t *testing.T, cc crashCase, cr *crashRound, rng *rand.Rand, start time.Time, logPath string,
	exit chan error, closing chan struct{}, out *bytes.Buffer) {
	t.Helper()
	exited := func(err error) {
		if err != nil {
			t.Fatalf("round %d: child: %v; output:\n%s", cr.round, err, out.String())
		}
		cr.exited = true
	}
	giveUp := time.After(2 * time.Minute)
	stuck := func(what string) {
		t.Fatalf("round %d: child did not %s in 2 minutes; output:\n%s", cr.round, what, out.String())
	}
	var kill <-chan time.Time
	p := rng.IntN(20)
	if cr.round == 0 && cc.ordered {
		p = 17 // the first Close on a fresh directory (see crashChild)
	}
	switch {
	case p < 2:
		cr.plan, cr.early = "exec", true
		cr.delay = time.Duration(rng.Int64N(int64(cc.readySpan)*3/2 + 1))
		kill = time.After(time.Until(start.Add(cr.delay)))
	case p < 6:
		cr.plan, cr.early = "run", false
		for {
			if b, _ := os.ReadFile(logPath); bytes.HasPrefix(b, []byte("R ")) || bytes.Contains(b, []byte("\nR ")) {
				break
			}
			select {
			case err := <-exit:
				exited(err)
				return
			case <-giveUp:
				stuck("open the spool")
			case <-time.After(time.Millisecond):
			}
		}
		cr.delay = time.Duration(rng.Int64N(int64(cc.runSpan) + 1))
		kill = time.After(cr.delay)
	case p < 18:
		cr.plan, cr.early = "close", false
		select {
		case <-closing:
		case err := <-exit:
			exited(err)
			select { // the byte may still be on its way to the reader
			case <-closing:
				return
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: child exited without calling Close; output:\n%s", cr.round, out.String())
			}
		case <-giveUp:
			stuck("call Close")
		}
		cr.delay = time.Duration(rng.Int64N(int64(cc.closeSpan) + 1))
		kill = time.After(cr.delay)
	default:
		cr.plan, cr.early = "exit", false
	}
	select {
	case err := <-exit:
		exited(err)
	case <-kill: // nil for "exit": never
	case <-giveUp:
		stuck("finish")
	}
}

func crashReadLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		// SIGKILL can cut a write(2) to a regular file short (the kernel checks for a fatal
		// signal between pages), seen once in CI: the cut line is the child's, not a
		// message from the Chan, so it is dropped (the message counts as not received).
		t.Logf("%s: last line has no newline (a write cut by the kill): %q", path, lines[len(lines)-1])
		lines = lines[:len(lines)-1]
	}
	return lines
}

func crashReadLog(t *testing.T, cr *crashRound, path string) {
	t.Helper()
	lines := crashReadLines(t, path)
	cr.tail = lines[max(len(lines)-16, 0):]
	for _, line := range lines {
		kind, rest, _ := strings.Cut(line, " ")
		f := strings.Fields(rest)
		n := func(i int) int64 {
			if i >= len(f) {
				t.Fatalf("round %d: short log line %q", cr.round, line)
			}
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				t.Fatalf("round %d: bad log line %q", cr.round, line)
			}
			return v
		}
		switch kind {
		case "R":
			cr.ready = time.Unix(0, n(0))
		case "V":
			cr.reserved = int(n(0))
		case "P":
			cr.progress = append(cr.progress, crashProg{at: time.Unix(0, n(0)), handed: n(1), received: n(2),
				direct: n(3), spilled: n(4), inMem: n(5), onDisk: n(6), refilled: n(7)})
		case "W":
			cr.marks = append(cr.marks, [2]int64{n(0), n(1)})
		case "E":
			cr.errs = append(cr.errs, rest)
			if len(f) > 1 && f[1] == "true" {
				cr.efbig++
			}
		case "F":
			cr.openFailed = rest
		case "c":
			cr.closeAt, cr.outAtClose = time.Unix(0, n(0)), int(n(1))
			if len(f) > 2 {
				cr.closeMode = f[2]
			}
		case "C":
			_, q, _ := strings.Cut(rest, " ")
			s, err := strconv.Unquote(q)
			if err != nil {
				t.Fatalf("round %d: bad log line %q", cr.round, line)
			}
			cr.closedAt, cr.closeErr = time.Unix(0, n(0)), &s
		default:
			t.Fatalf("round %d: bad log line %q", cr.round, line)
		}
	}
	if cr.openFailed != "" {
		t.Errorf("round %d: the child could not open the spool: %s", cr.round, cr.openFailed)
	}
}

// crashReport says whether an error reported after a kill is one a kill may cause: a torn
// tail of the newest segment (cut at open). Nothing else: a kill in the middle of deleting
// or creating a segment leaves nothing the spool takes for damage (it deletes by renaming
// to a .tmp name first and drops empty segment directories at open).
func crashReport(t *testing.T, e string) bool {
	t.Helper()
	return strings.Contains(e, "torn or garbage tail")
}

// crashReopen opens dir between rounds, as a restarted process would, and closes it again.
func crashReopen(t *testing.T, dir string, buffer, round int, opts ...Option) Stats {
	t.Helper()
	var errs []string
	var mu sync.Mutex
	c, err := New(dir, make(chan string), String, append([]Option{WithBuffer(buffer), WithErrorHandler(func(err error) {
		mu.Lock()
		errs = append(errs, err.Error())
		mu.Unlock()
	})}, opts...)...)
	if err != nil {
		t.Errorf("round %d: reopen after the kill: %v", round, err)
		return Stats{}
	}
	s := c.Stats()
	if err := c.Close(); err != nil {
		t.Errorf("round %d: Close after reopen: %v", round, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		// After a kill the only damage is a torn tail of the newest segment.
		if !crashReport(t, e) {
			t.Errorf("round %d: reopen reported %s", round, e)
		}
	}
	return s
}

// crashDrain opens dir with src closed and receives everything until Out closes.
func crashDrain(t *testing.T, dir string, opts ...Option) ([]string, Stats, []string) {
	t.Helper()
	var errs []string
	var mu sync.Mutex
	src := make(chan string)
	close(src)
	c, err := New(dir, src, String, append([]Option{WithErrorHandler(func(err error) {
		mu.Lock()
		errs = append(errs, err.Error())
		mu.Unlock()
	})}, opts...)...)
	if err != nil {
		t.Fatalf("final open: %v", err)
	}
	got, closed := drain(c.Out(), 30*time.Second)
	if !closed {
		t.Errorf("final drain: Out not closed after %d messages; stats %+v", len(got), c.Stats())
	}
	if err := c.Close(); err != nil {
		t.Errorf("final Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got, c.Stats(), slices.Clone(errs)
}

// crashID names a message the children send: its round and sequence number.
type crashID struct{ round, seq int }

// crashCheck checks the union of what the children received and what the final drain
// delivered against what the children stored. allowance is how many owed messages one
// kill may legitimately cost (messages handed to Out that nobody received, and the one a
// consumer received but had not yet written down). It returns the id of every message
// that came out and is one the children sent.
func crashCheck(t *testing.T, rounds []*crashRound, final []string, allowance int) map[string]crashID {
	t.Helper()
	byRound := map[int]*crashRound{}
	for _, r := range rounds {
		byRound[r.round] = r
	}
	// Nothing false.
	seen := map[string]int{} // id -> sessions that delivered it
	last := map[string]int{} // id -> index of the last session that delivered it
	dups := make([]int, len(rounds)+1)
	ids := map[string]crashID{} // what seen holds
	var foreign []string
	sessions := make([][]string, 0, len(rounds)+1)
	for _, r := range rounds {
		sessions = append(sessions, r.recv)
	}
	sessions = append(sessions, final)
	for si, got := range sessions {
		inSession := map[string]bool{}
		twice := 0
		for _, m := range got {
			r, s, ok := crashParse(m)
			if cr := byRound[r]; !ok || cr == nil || s >= cr.reserved {
				if len(foreign) < 5 {
					foreign = append(foreign, m)
				}
				continue
			}
			if inSession[m] {
				if twice++; twice <= 5 {
					t.Errorf("session %d delivered %q twice (duplicates within one process are never allowed)", si, m)
				}
				continue
			}
			inSession[m] = true
			if seen[m] > 0 {
				// Delivered again: the session that delivered it before was killed (a
				// graceful one did it once) before its checkpoint covered it.
				dups[last[m]]++
			}
			last[m] = si
			seen[m]++
			ids[m] = crashID{r, s}
		}
		if twice > 5 {
			t.Errorf("session %d delivered %d messages twice in all", si, twice)
		}
	}
	if len(foreign) > 0 {
		t.Errorf("messages that were never sent came out, e.g. %q", foreign)
	}

	// Everything owed came out.
	got := map[crashID]bool{}
	for _, id := range ids {
		got[id] = true
	}
	totalMissing, totalOwed := 0, 0
	for _, r := range rounds {
		var missing []int
		for s := 0; s < r.need(); s++ {
			if !got[crashID{r.round, s}] {
				missing = append(missing, s)
			}
		}
		totalOwed += r.need()
		totalMissing += len(missing)
		if len(missing) > allowance {
			t.Logf("round %d: %d of the %d owed ids missing, e.g. %v", r.round, len(missing), r.need(), missing[:min(5, len(missing))])
		}
	}
	if totalMissing > allowance*len(rounds) {
		t.Errorf("%d owed messages lost in %d kills (at most %d per kill allowed: Out's buffer and the consumer's hand)",
			totalMissing, len(rounds), allowance)
	}

	// Duplicates: only messages refilled by a killed session since its last checkpoint.
	totalDups := 0
	for i, r := range rounds {
		totalDups += dups[i]
		bound := crashDupBound(r)
		if dups[i] > 0 {
			t.Logf("round %d: %d of its deliveries came out again (bound: %d)", r.round, dups[i], bound)
		}
		if dups[i] > bound {
			t.Errorf("round %d: %d messages it received came out again later; it refilled only %d in the last checkpoint window",
				r.round, dups[i], bound)
		}
	}
	if dups[len(rounds)] != 0 {
		t.Errorf("the final drain's messages came out twice: %d", dups[len(rounds)])
	}
	t.Logf("owed %d, missing %d (allowance %d per kill), duplicates across sessions %d, delivered %d distinct",
		totalOwed, totalMissing, allowance, totalDups, len(seen))
	return ids
}

// crashDupBound is how many of a killed session's deliveries may come out again (none of a
// session that closed and exited): what it refilled since its last cursor checkpoint (at
// most crashCkpt before the kill, earlier if a segment boundary came), plus what was
// refilled after the last progress line: at most what was on disk then, and no more than
// twice what the consumer took in any progress interval, plus what was spilled after it
// (2048 is ample for 20 ms; 2*maxStep for a report that came late). A consumer fed new
// messages from memory first can leave the backlog untouched for a while and then take a
// whole interval's worth of it from the backlog just before the kill.
func crashDupBound(r *crashRound) int {
	switch {
	case r.exited:
		return 0 // a session that closed gracefully did each message once
	case len(r.progress) == 0:
		// Killed within a progress interval of New, shorter than a checkpoint interval:
		// all it received (a backlog) may come again.
		return len(r.recv)
	}
	cutoff := r.killedAt.Add(-crashCkpt - *crashMarginFlag)
	var base, maxStep, prev, maxTake, prevTake int64
	for _, p := range r.progress {
		if !p.at.After(cutoff) {
			base = p.refilled
		}
		maxStep = max(maxStep, p.refilled-prev)
		prev = p.refilled
		maxTake = max(maxTake, p.direct+p.refilled-prevTake)
		prevTake = p.direct + p.refilled
	}
	last := r.progress[len(r.progress)-1]
	return int(last.refilled - base + 2*maxStep + 2048 + min(last.onDisk, 2*maxTake))
}

func crashLogRound(t *testing.T, cr *crashRound, reopen Stats) {
	t.Helper()
	var last crashProg
	if len(cr.progress) > 0 {
		last = cr.progress[len(cr.progress)-1]
	}
	when := "after ready"
	switch {
	case cr.plan == "close":
		when = "after calling Close"
	case cr.early:
		when = "after exec"
		if cr.ready.IsZero() || cr.ready.After(cr.killedAt) {
			when += ", before New returned"
		}
	}
	kill := fmt.Sprintf("killed %v %s", cr.delay, when)
	switch {
	case cr.exited && cr.plan == "exit":
		kill = "closed and exited"
	case cr.exited:
		kill = fmt.Sprintf("closed and exited before a kill aimed %v %s", cr.delay, when)
	}
	t.Logf("round %2d: %s; taken %d, spilled %d, refilled %d, received %d; owed %d (time) %d (watermark); store lag <= %v; reopen: OnDisk %d, Segments %d, Corrupt %d; child errors %d",
		cr.round, kill, last.handed, last.spilled, last.refilled, len(cr.recv), cr.needTime, cr.needMark,
		cr.storeLag().Round(time.Millisecond), reopen.OnDisk, reopen.Segments, reopen.Corrupt, len(cr.errs))
}

func crashScenario(t *testing.T, cc crashCase, allowance int) {
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	start := time.Now()
	var rounds []*crashRound
	for r := 0; r < cc.rounds; r++ {
		cr := crashRun(t, cc, dir, work, r, seed, rng)
		for _, e := range cr.errs {
			if !crashReport(t, e) {
				t.Errorf("round %d: the child reported %s", r, e)
			}
		}
		st := crashReopen(t, dir, cc.buffer, r, cc.opts()...)
		crashLogRound(t, cr, st)
		rounds = append(rounds, cr)
		if t.Failed() {
			break
		}
	}
	got, st, errs := crashDrain(t, dir, cc.opts()...)
	for _, e := range errs {
		t.Errorf("final drain reported %s", e)
	}
	t.Logf("%d rounds in %v; final drain: %d messages, stats %+v", len(rounds), time.Since(start), len(got), st)
	if st.OnDisk != 0 || st.Segments != 0 {
		t.Errorf("after the final drain: OnDisk %d, Segments %d", st.OnDisk, st.Segments)
	}
	crashCheck(t, rounds, got, allowance)
}

// TestCrashSpillSIGKILL: children spill with no consumer and are killed at random moments,
// many times on one directory.
func TestCrashSpillSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, cc := range []crashCase{
		{name: "never/buffer0", sync: "never", buffer: 0, segSize: 256 << 10, rounds: crashRounds(10)},
		{name: "always/buffer0", sync: "always", buffer: 0, segSize: 256 << 10, rounds: crashRounds(10)},
		{name: "every50ms/buffer8", sync: "every50ms", buffer: 8, segSize: 1 << 20, rounds: crashRounds(8)},
	} {
		t.Run(cc.name, func(t *testing.T) {
			cc.mode = "spill"
			// With no consumer nothing is received: Out's buffer (direct or refilled, memory
			// only at the kill) is all a kill may cost.
			crashScenario(t, cc, cc.buffer)
		})
	}
}

// TestCrashWithConsumerSIGKILL: children produce and consume (the consumer stalls now and
// then) and are killed at random moments, many times on one directory.
func TestCrashWithConsumerSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, cc := range []crashCase{
		{name: "always/buffer0", sync: "always", buffer: 0, segSize: 256 << 10, rounds: crashRounds(10)},
		{name: "never/buffer16", sync: "never", buffer: 16, segSize: 256 << 10, rounds: crashRounds(8)},
	} {
		t.Run(cc.name, func(t *testing.T) {
			cc.mode = "consume"
			crashScenario(t, cc, cc.buffer+1)
		})
	}
}

// TestCrashFileSizeLimit runs children under RLIMIT_FSIZE, so segment writes fail with
// EFBIG: the Chan reports it (as ErrFull), does not corrupt the spool, and goes on in a new
// segment. The first child closes gracefully, the second is killed; a parent without the
// limit then delivers everything they stored.
func TestCrashFileSizeLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 9))
	const limit = 200 << 10
	cc := crashCase{mode: "fsize", sync: "always", buffer: 0, segSize: 1 << 20, limit: limit, n: 12000, close: true}
	start := time.Now()
	r0 := crashRun(t, cc, dir, work, 0, seed, rng)
	cc.close = false
	r1 := crashRun(t, cc, dir, work, 1, seed, rng)
	t.Logf("child 0 (closed): %d errors, %d EFBIG; child 1 (killed %v after its 2nd EFBIG): %d errors, %d EFBIG; %v",
		len(r0.errs), r0.efbig, r1.delay, len(r1.errs), r1.efbig, time.Since(start))

	for _, cr := range []*crashRound{r0, r1} {
		if cr.efbig == 0 {
			t.Errorf("child %d: no EFBIG reported to the error handler; errors: %q", cr.round, cr.errs)
		}
		for _, e := range cr.errs {
			f := strings.Fields(e)
			switch {
			case f[1] == "true" && f[2] == "true": // EFBIG, reported as ErrFull
			case f[3] == "true" && crashReport(t, e): // the kill
			default:
				t.Errorf("child %d reported %s", cr.round, e)
			}
		}
	}
	if r0.closeErr == nil || *r0.closeErr != "" {
		t.Errorf("child 0: Close: %v", r0.closeErr)
	}
	r0.needMark = cc.n // it closed gracefully: everything it sent is owed
	// Segments were cut at the limit, never left with a partial record.
	segs, _ := filepath.Glob(filepath.Join(dir, "*", "00000000000000000001"))
	for _, p := range segs {
		if fi, err := os.Stat(p); err == nil && fi.Size() > limit {
			t.Errorf("%s: %d bytes, past the %d limit", p, fi.Size(), limit)
		}
	}
	bad, _ := filepath.Glob(filepath.Join(dir, "*.bad"))
	if len(bad) > 0 {
		t.Errorf("segments set aside: %v", bad)
	}
	t.Logf("%d segments", len(segs))

	got, st, errs := crashDrain(t, dir)
	for _, e := range errs {
		if !crashReport(t, e) { // the kill may have torn a write
			t.Errorf("final drain reported %s", e)
		}
	}
	if st.Corrupt > 1 {
		t.Errorf("final drain: Corrupt %d", st.Corrupt)
	}
	t.Logf("final drain: %d messages, stats %+v", len(got), st)
	crashCheck(t, []*crashRound{r0, r1}, got, 0)
	// The graceful child's messages exactly once.
	n := 0
	for _, m := range got {
		if r, _, _ := crashParse(m); r == 0 {
			n++
		}
	}
	if n != cc.n {
		t.Errorf("the closed child's messages: %d delivered, want %d", n, cc.n)
	}
}

// TestCrashTornTailOnFullDisk: a process killed mid-write leaves a torn tail, and the disk
// is full when the spool is opened again (the usual moment for a crash, and what a
// restart loop meets). Open must still deliver every whole record: the evidence of the
// torn tail may not fit, but that is no reason to withhold the good records before it.
func TestCrashTornTailOnFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "size=1m")
	dir := filepath.Join(mnt, "spool")

	// A spool of one segment, as a killed process leaves it: no meta (it was never
	// sealed), the last record cut in the middle.
	src := make(chan string)
	c, err := New(dir, src, String, WithBuffer(0), WithSync(SyncNever), WithBatchBytes(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	for i := range n {
		src <- crashNoisy(0, i)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	segs := fzSegs(dir)
	if len(segs) != 1 {
		t.Fatalf("want one segment, have %v", segs)
	}
	seg := filepath.Join(dir, fmt.Sprintf("%020d", segs[0]))
	recs := fzParseWAL(t, filepath.Join(seg, fzWAL), segs[0])
	if len(recs) < 3 {
		t.Fatalf("%d records, want at least 3", len(recs))
	}
	last := recs[len(recs)-1]
	if err := os.Truncate(filepath.Join(seg, fzWAL), (last.off+last.end)/2); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(seg, "meta")); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range recs[:len(recs)-1] {
		want = append(want, r.msgs...)
	}

	// Fill the disk.
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4<<10)
	for {
		if _, err := filler.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	filler.Close()

	var mu sync.Mutex
	var reports []string
	src2 := make(chan string)
	close(src2)
	c, err = New(dir, src2, String, WithErrorHandler(func(err error) {
		mu.Lock()
		reports = append(reports, err.Error())
		mu.Unlock()
	}))
	if err != nil {
		t.Fatalf("New on a full disk with a torn tail: %v", err)
	}
	got, closed := drain(c.Out(), 10*time.Second)
	if !closed {
		t.Errorf("Out not closed")
	}
	// The cursor could not be saved on the full disk (Out closed after the spool was
	// closed): that, and only that, may be reported.
	if err := c.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close: %v", err)
	}
	os.Remove(filepath.Join(mnt, "filler"))
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d of %d messages delivered; %d reports, the first: %q", len(got), len(want), len(reports), reports[:min(2, len(reports))])
	checkSame(t, "whole records before the torn tail", want, got)
}
