package pelichan

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the child-process mode of TestRestartInAnotherProcess when asked to, and
// otherwise the tests, checking that none of them leaks a goroutine.
func TestMain(m *testing.M) {
	if mode := os.Getenv("PELICHAN_CHILD"); mode != "" {
		os.Exit(childMain(mode))
	}
	goleak.VerifyTestMain(m)
}

// ---- helpers ---------------------------------------------------------------------------

// msg is message i of a test run: unique (prefix and number), log-line-like, ~80 bytes.
func msg(prefix string, i int) string {
	return fmt.Sprintf("%s%08d level=info svc=api req=%06x msg=\"request served\" ms=%d",
		prefix, i, (uint64(i)*2654435761)&0xffffff, i%997)
}

func msgs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = msg(prefix, i)
	}
	return out
}

// open is New for string messages that fails the test on error and closes the Chan at the
// end of the test (Close is idempotent).
func open(t *testing.T, dir string, src <-chan string, opts ...Option) *Chan[string] {
	t.Helper()
	c, err := New(dir, src, String, opts...)
	if err != nil {
		t.Fatalf("New(%s): %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustClose[T any](t *testing.T, c *Chan[T]) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// recvN receives up to n messages; it stops early when Out is closed or when nothing
// arrives for idle.
func recvN[T any](out <-chan T, n int, idle time.Duration) []T {
	var got []T
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for len(got) < n {
		select {
		case v, ok := <-out:
			if !ok {
				return got
			}
			got = append(got, v)
			timer.Reset(idle)
		case <-timer.C:
			return got
		}
	}
	return got
}

// drain receives until Out is closed. closed is false if nothing arrived for idle first.
func drain[T any](out <-chan T, idle time.Duration) (got []T, closed bool) {
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case v, ok := <-out:
			if !ok {
				return got, true
			}
			got = append(got, v)
			timer.Reset(idle)
		case <-timer.C:
			return got, false
		}
	}
}

// checkSame fails the test unless got holds exactly the messages of sent, counting
// repeats: no loss, no duplicate, nothing foreign.
func checkSame(t *testing.T, what string, sent, got []string) {
	t.Helper()
	count := make(map[string]int, len(sent))
	for _, s := range sent {
		count[s]++
	}
	for _, g := range got {
		count[g]--
	}
	var lost, extra int
	var lostEx, extraEx []string
	for k, v := range count {
		switch {
		case v > 0:
			lost += v
			if len(lostEx) < 3 {
				lostEx = append(lostEx, k)
			}
		case v < 0:
			extra += -v
			if len(extraEx) < 3 {
				extraEx = append(extraEx, k)
			}
		}
	}
	if lost > 0 || extra > 0 {
		t.Errorf("%s: sent %d, delivered %d: %d lost (e.g. %q), %d duplicated or foreign (e.g. %q)",
			what, len(sent), len(got), lost, lostEx, extra, extraEx)
	}
}

// waitStats polls c.Stats until cond holds, failing the test after timeout.
func waitStats[T any](t *testing.T, c *Chan[T], timeout time.Duration, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := c.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, s)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkBalance checks Stats' identity: every message taken (from src or Store), and
// every message of the backlog found at open, is in exactly one state.
func checkBalance(t *testing.T, s Stats, backlog ...int64) {
	t.Helper()
	var b int64
	for _, x := range backlog {
		b += x
	}
	if s.Received+b != s.Direct+s.Refilled+s.OnDisk+s.Dropped+s.InMemory {
		t.Errorf("Received %d + backlog %d != Direct %d + Refilled %d + OnDisk %d + Dropped %d + InMemory %d",
			s.Received, b, s.Direct, s.Refilled, s.OnDisk, s.Dropped, s.InMemory)
	}
	if s.InMemory < 0 || s.OnDisk < 0 {
		t.Errorf("negative count: %+v", s)
	}
}

func isSegDir(name string) bool {
	if len(name) != 20 {
		return false
	}
	for _, r := range name {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

type fileID struct {
	ino  uint64
	size int64
}

// segmentFiles lists the files inside the segment directories of dir. It may run on a
// goroutine of its own, so it reports with Errorf, never Fatalf.
func segmentFiles(t *testing.T, dir string) map[string]fileID {
	t.Helper()
	files := map[string]fileID{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Errorf("read %s: %v", dir, err)
		return files
	}
	for _, e := range ents {
		if !e.IsDir() || !isSegDir(e.Name()) {
			continue
		}
		sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			t.Errorf("read segment: %v", err)
			continue
		}
		for _, f := range sub {
			p := filepath.Join(dir, e.Name(), f.Name())
			fi, err := os.Stat(p)
			if err != nil {
				continue // deleted meanwhile
			}
			files[filepath.Join(e.Name(), f.Name())] = fileID{ino: fi.Sys().(*syscall.Stat_t).Ino, size: fi.Size()}
		}
	}
	return files
}

// walFiles is the sum of the sizes of the segments' WAL files.
func walBytes(files map[string]fileID) (n int64) {
	for name, f := range files {
		if filepath.Base(name) == "00000000000000000001" {
			n += f.size
		}
	}
	return n
}

// dirBytes is the size of every regular file under dir.
func dirBytes(t *testing.T, dir string) (n int64) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// spillAndClose stores msgs in dir: a Chan whose consumer never reads spills them all (but
// the first buffer ones), and Close stores Out's unread buffer too.
func spillAndClose(t *testing.T, dir string, sent []string, opts ...Option) {
	t.Helper()
	src := make(chan string)
	c := open(t, dir, src, opts...)
	for _, m := range sent {
		src <- m
	}
	mustClose(t, c)
	if s := c.Stats(); s.OnDisk != int64(len(sent)) {
		t.Fatalf("after Close: OnDisk %d, want %d; %+v", s.OnDisk, len(sent), s)
	}
}

// reopenAndDrain opens dir with a closed src and returns everything delivered before Out
// closes.
func reopenAndDrain(t *testing.T, dir string, opts ...Option) ([]string, Stats) {
	t.Helper()
	src := make(chan string)
	close(src)
	c := open(t, dir, src, opts...)
	got, closed := drain(c.Out(), 10*time.Second)
	if !closed {
		t.Errorf("Out not closed after src was closed and %d messages came; stats %+v", len(got), c.Stats())
	}
	mustClose(t, c)
	return got, c.Stats()
}

// ---- direct pass -----------------------------------------------------------------------

// A consumer that keeps up gets every message straight from memory: nothing is written.
func TestDirectPassConsumerReady(t *testing.T) {
	const n = 20000
	const window = 256 // never more than this in flight, well under Out's buffer
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(1024))
	sent := msgs("d", n)
	var got []string
	done := make(chan struct{})
	ack := make(chan struct{}, n)
	go func() {
		defer close(done)
		for v := range c.Out() {
			got = append(got, v)
			ack <- struct{}{}
		}
	}()
	for i, m := range sent {
		if i >= window {
			<-ack
		}
		src <- m
	}
	for range min(window, n) {
		<-ack
	}
	s := c.Stats()
	checkBalance(t, s)
	if s.Received != n || s.Direct != n || s.Spilled != 0 || s.BytesWritten != 0 || s.OnDisk != 0 {
		t.Errorf("stats after %d direct passes: %+v", n, s)
	}
	for name, f := range segmentFiles(t, dir) {
		if f.size > 0 {
			t.Errorf("segment file %s has %d bytes; nothing should have been spilled", name, f.size)
		}
	}
	close(src)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Out was not closed after src was closed")
	}
	mustClose(t, c)
	checkSame(t, "direct", sent, got)
	if s := c.Stats(); s.Direct != n || s.Spilled != 0 || s.BytesWritten != 0 {
		t.Errorf("final stats: %+v", s)
	}
	for name, f := range segmentFiles(t, dir) {
		if f.size > 0 {
			t.Errorf("after Close: segment file %s has %d bytes", name, f.size)
		}
	}
}

// ---- stalled consumer, restart in another process --------------------------------------

const (
	crossFirst      = 200_000 // spilled by the parent
	crossChildNew   = 100_000 // sent to the child while it drains
	crossChildPause = 50_000  // the child's consumer stalls after this many until all new ones are sent
	crossChildClose = 150_000 // the child closes after receiving this many
)

// The parent spills a backlog and closes; a child process opens the directory, drains
// part of the backlog while new messages arrive and closes while still busy; the parent
// opens again and drains the rest. Every message is delivered exactly once.
func TestRestartInAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	const buffer = 1024

	// Phase 1: the consumer is stalled, so everything beyond Out's buffer spills.
	sent := msgs("p", crossFirst)
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(buffer))
	start := time.Now()
	for _, m := range sent {
		src <- m
	}
	s := waitStats(t, c, 10*time.Second, "the batch to be written", func(s Stats) bool { return s.InMemory == 0 })
	checkBalance(t, s)
	// Out's buffer is written too: the consumer stalled for longer than the linger time.
	if s.Direct != 0 || s.Spilled != crossFirst || s.OnDisk != crossFirst || s.Refilled != 0 {
		t.Errorf("stalled consumer: want Direct 0, Spilled = OnDisk = %d, Refilled 0; got %+v",
			crossFirst, s)
	}
	if s.Segments < 1 || s.BytesWritten == 0 || s.DiskBytes < s.BytesWritten {
		t.Errorf("stalled consumer: disk stats %+v", s)
	}
	mustClose(t, c)
	if s := c.Stats(); s.OnDisk != crossFirst {
		t.Errorf("after Close: OnDisk %d, want %d (Out's unread buffer is stored too)", s.OnDisk, crossFirst)
	}
	t.Logf("phase 1: %d spilled in %v", crossFirst, time.Since(start))

	// Phase 2: a child process drains while it receives new messages, then closes.
	outFile := filepath.Join(t.TempDir(), "child.out")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestartInAnotherProcess$")
	cmd.Env = append(os.Environ(),
		"PELICHAN_CHILD=drain",
		"PELICHAN_DIR="+dir,
		"PELICHAN_OUT="+outFile,
		"PELICHAN_NEW="+strconv.Itoa(crossChildNew),
		"PELICHAN_CLOSE_AFTER="+strconv.Itoa(crossChildClose),
		"PELICHAN_PAUSE_AT="+strconv.Itoa(crossChildPause),
	)
	var childLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &childLog, &childLog
	start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	// While the child holds the directory, this process cannot open it.
	ready := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if _, err := os.Stat(outFile + ".ready"); err == nil {
			ready = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !ready {
		cmd.Process.Kill()
		<-waitErr
		t.Fatalf("child did not open the spool; its output:\n%s", childLog.String())
	}
	if c2, err := New(dir, make(chan string), String); !errors.Is(err, ErrLocked) {
		if err == nil {
			c2.Close()
		}
		t.Errorf("New while another process holds the directory: err %v, want ErrLocked", err)
	}
	if err := os.WriteFile(outFile+".go", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; err != nil {
		t.Fatalf("child: %v; its output:\n%s", err, childLog.String())
	}
	t.Logf("phase 2 (child): %v; %s", time.Since(start), strings.TrimSpace(childLog.String()))
	childSent, childGot := readChildOutput(t, outFile)
	if len(childSent) < crossChildNew || len(childGot) < crossChildClose {
		t.Errorf("child sent %d (want >= %d) and received %d (want >= %d)",
			len(childSent), crossChildNew, len(childGot), crossChildClose)
	}
	sent = append(sent, childSent...)

	// Phase 3: the parent opens again and drains the rest.
	start = time.Now()
	rest, s := reopenAndDrain(t, dir)
	t.Logf("phase 3: %d drained in %v; stats %+v", len(rest), time.Since(start), s)
	if s.OnDisk != 0 || s.Segments != 0 {
		t.Errorf("after the final drain: %+v", s)
	}
	checkSame(t, "across processes", sent, append(childGot, rest...))
}

func readChildOutput(t *testing.T, path string) (sent, got []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		kind, m, ok := strings.Cut(sc.Text(), "\t")
		switch {
		case ok && kind == "S":
			sent = append(sent, m)
		case ok && kind == "R":
			got = append(got, m)
		default:
			t.Fatalf("bad line in child output: %q", sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sent, got
}

// childMain is the child process of TestRestartInAnotherProcess: it opens the spool,
// tells the parent (file OUT.ready), waits for its go (file OUT.go), then drains with a
// consumer while a producer sends new messages (the consumer stalls for a while, so they
// spill), closes while both are still busy, and writes what it sent ("S\tmsg") and
// received ("R\tmsg") to OUT.
func childMain(mode string) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "child: "+format+"\n", args...)
		return 2
	}
	if mode != "drain" {
		return fail("unknown mode %q", mode)
	}
	dir, outPath := os.Getenv("PELICHAN_DIR"), os.Getenv("PELICHAN_OUT")
	newN, _ := strconv.Atoi(os.Getenv("PELICHAN_NEW"))
	closeAfter, _ := strconv.Atoi(os.Getenv("PELICHAN_CLOSE_AFTER"))
	pauseAt, _ := strconv.Atoi(os.Getenv("PELICHAN_PAUSE_AT"))
	src := make(chan string)
	c, err := New(dir, src, String)
	if err != nil {
		return fail("New: %v", err)
	}
	backlog := c.Stats().OnDisk
	if err := os.WriteFile(outPath+".ready", nil, 0o644); err != nil {
		return fail("%v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(outPath + ".go"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.Close()
			return fail("no go from the parent")
		}
		time.Sleep(2 * time.Millisecond)
	}

	// The producer sends newN messages, then keeps sending until told to stop.
	var sent []string
	stop := make(chan struct{})
	mandatory := make(chan struct{})
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; ; i++ {
			if i == newN {
				close(mandatory)
			}
			m := msg("c", i)
			select {
			case src <- m:
				sent = append(sent, m)
			case <-stop:
				return
			}
		}
	}()
	var got []string
	closeErr := make(chan error, 1)
	closing := false
	for v := range c.Out() {
		got = append(got, v)
		switch {
		case len(got) == pauseAt:
			// Stall until every new message was taken: they pile up on disk behind the
			// backlog.
			<-mandatory
		case len(got) == closeAfter:
			closing = true
			go func() { closeErr <- c.Close() }() // the consumer keeps receiving meanwhile
		}
	}
	if !closing {
		return fail("Out closed before Close after %d messages", len(got))
	}
	if err := <-closeErr; err != nil {
		return fail("Close: %v", err)
	}
	close(stop)
	<-prodDone
	s := c.Stats()

	f, err := os.Create(outPath)
	if err != nil {
		return fail("%v", err)
	}
	w := bufio.NewWriter(f)
	for _, m := range sent {
		fmt.Fprintf(w, "S\t%s\n", m)
	}
	for _, m := range got {
		fmt.Fprintf(w, "R\t%s\n", m)
	}
	if err := w.Flush(); err != nil {
		return fail("%v", err)
	}
	if err := f.Close(); err != nil {
		return fail("%v", err)
	}
	fmt.Printf("child: backlog %d, sent %d, received %d; stats at close: Direct %d Spilled %d Refilled %d OnDisk %d\n",
		backlog, len(sent), len(got), s.Direct, s.Spilled, s.Refilled, s.OnDisk)
	return 0
}

// ---- property test ---------------------------------------------------------------------

// Random interleavings of producer bursts, consumer bursts and graceful restarts with
// random options: every message sent is delivered exactly once, and with WithOrdered in
// src order. Set PELICHAN_SEED to replay a run.
func TestPropertyRandomInterleavings(t *testing.T) {
	seed := akSeed(t)
	t.Run("unordered", func(t *testing.T) { propertyRun(t, seed, false) })
	t.Run("ordered", func(t *testing.T) { propertyRun(t, seed, true) })
}

func propertyRun(t *testing.T, seed int64, ordered bool) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
	dir := t.TempDir()

	var (
		sent, got []string
		carry     []string // messages left in a closed Chan's src: still the caller's
		next      int
		c         *Chan[string]
		src       chan string
		sessions  int
		base      int64 // the backlog found at open
	)
	start := func() {
		batch := 256 + rng.IntN(16<<10)
		sync := SyncNever
		switch r := rng.IntN(10); {
		case r < 5:
			sync = SyncEvery(5 * time.Millisecond)
		case r == 5:
			sync, batch = SyncAlways, 8<<10 // one fsync per batch: keep batches big
		}
		opts := []Option{
			WithBuffer([]int{0, 1, 7, 64, 300}[rng.IntN(5)]),
			WithSegmentSize(int64(2<<10 + rng.IntN(64<<10))),
			WithBatchBytes(batch),
			WithLinger(time.Duration(1+rng.IntN(5)) * time.Millisecond),
			WithSync(sync),
		}
		if ordered {
			opts = append(opts, WithOrdered())
		}
		src = make(chan string, rng.IntN(8))
		c = open(t, dir, src, opts...)
		base = c.Stats().OnDisk
		sessions++
		for _, m := range carry {
			src <- m
		}
		carry = nil
	}
	stop := func(how int) {
		switch how {
		case 0: // plain Close
			mustClose(t, c)
		case 1: // Close while a consumer is in the middle of a range loop
			done := make(chan []string)
			go func() {
				var mine []string
				for v := range c.Out() {
					mine = append(mine, v)
				}
				done <- mine
			}()
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			mustClose(t, c)
			got = append(got, <-done...)
		case 2: // Close from two goroutines at once
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- c.Close() }()
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent Close: %v", err)
				}
			}
		}
		// What Close did not take from src is still ours, to send again.
	leftover:
		for {
			select {
			case m := <-src:
				carry = append(carry, m)
			default:
				break leftover
			}
		}
	}

	start()
	for round := 0; round < 120; round++ {
		switch op := rng.IntN(20); {
		case op < 7: // producer burst
			for range 1 + rng.IntN(1500) {
				m := msg("r", next)
				next++
				sent = append(sent, m)
				src <- m
			}
		case op < 9: // a pause: what was taken from src reaches the disk (or Out)
			waitStats(t, c, 5*time.Second, "a pause", func(s Stats) bool { return s.InMemory == 0 })
		case op < 17: // consumer burst
			k := 1 + rng.IntN(2500)
			part := recvN(c.Out(), k, 20*time.Millisecond)
			if s := c.Stats(); len(part) < k && s.OnDisk > 0 {
				// Stored messages must keep coming while the consumer waits.
				more := recvN(c.Out(), k-len(part), time.Second)
				if len(more) == 0 {
					t.Errorf("round %d: consumer waited 1s for nothing while %d messages were stored; stats %+v",
						round, c.Stats().OnDisk, c.Stats())
				}
				part = append(part, more...)
			}
			got = append(got, part...)
		default: // graceful restart
			how := rng.IntN(3)
			if ordered && how == 1 {
				// A consumer still receiving while Close takes Out's buffer back may get
				// one of them between two it took back: FIFO holds for graceful restarts
				// with the consumer stopped (see WithOrdered).
				how = 0
			}
			stop(how)
			start()
		}
		if round%10 == 0 {
			checkBalance(t, c.Stats(), base)
		}
		if t.Failed() {
			break
		}
	}
	// Final drain: src closed, everything still stored arrives, then Out closes.
	close(src)
	rest, closed := drain(c.Out(), 5*time.Second)
	got = append(got, rest...)
	final := c.Stats()
	mustClose(t, c)
	t.Logf("%d sessions, %d messages; final stats %+v", sessions, len(sent), final)
	if !closed || final.OnDisk != 0 {
		t.Errorf("src closed: Out closed=%v with OnDisk %d still stored; stats %+v", closed, final.OnDisk, final)
		// Whatever was left must still be there for the next opener.
		more, _ := reopenAndDrain(t, dir)
		t.Logf("a further session delivered %d more", len(more))
		got = append(got, more...)
	}
	checkSame(t, fmt.Sprintf("seed %d", seed), sent, got)
	if ordered {
		checkOrder(t, fmt.Sprintf("seed %d", seed), sent, got)
	}
}

// checkOrder fails the test unless got is sent, in the same order.
func checkOrder(t *testing.T, what string, sent, got []string) {
	t.Helper()
	for i := range min(len(sent), len(got)) {
		if sent[i] != got[i] {
			lo, hi := max(i-2, 0), min(i+3, len(got))
			t.Errorf("%s: out of order at delivery %d: got %q, want %q (deliveries %d..%d: %q)",
				what, i, got[i], sent[i], lo, hi-1, got[lo:hi])
			return
		}
	}
	if len(sent) != len(got) {
		t.Errorf("%s: sent %d, delivered %d", what, len(sent), len(got))
	}
}

// ---- src closed with a backlog ---------------------------------------------------------

// src closed while a backlog spilled in this very session is on disk: everything arrives,
// then Out closes, and the segments are deleted.
func TestSrcClosedDrainsBacklog(t *testing.T) {
	const n = 30000
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(100), WithSegmentSize(64<<10))
	sent := msgs("b", n)
	for _, m := range sent {
		src <- m
	}
	s := waitStats(t, c, 5*time.Second, "the backlog to reach the disk", func(s Stats) bool {
		return s.InMemory == 0
	})
	// Out's 100 are written too once they waited the linger time.
	if s.OnDisk != n || s.Spilled != n {
		t.Errorf("backlog: want OnDisk = Spilled = %d, got %+v", n, s)
	}
	close(src)
	got, closed := drain(c.Out(), 3*time.Second)
	s = c.Stats()
	if !closed {
		t.Errorf("Out not closed: %d of %d delivered; stats %+v", len(got), n, s)
	}
	checkSame(t, "src closed", sent, got)
	if s.OnDisk != 0 || s.Direct+s.Refilled != n {
		t.Errorf("after the drain: want OnDisk 0, Direct + Refilled %d; got %+v", n, s)
	}
	mustClose(t, c)
	if s := c.Stats(); s.OnDisk != 0 || s.Segments != 0 || s.DiskBytes > 0 {
		t.Errorf("after Close: %+v", s)
	}
	if b := walBytes(segmentFiles(t, dir)); b > 0 {
		t.Errorf("%d bytes of segments left after everything was delivered", b)
	}
}

// The same with a backlog left by an earlier Chan.
func TestSrcClosedDrainsBacklogAfterReopen(t *testing.T) {
	const n = 30000
	dir := t.TempDir()
	sent := msgs("o", n)
	spillAndClose(t, dir, sent, WithBuffer(100), WithSegmentSize(64<<10))
	got, s := reopenAndDrain(t, dir)
	checkSame(t, "reopen, src closed", sent, got)
	if s.OnDisk != 0 || s.Refilled != n || s.Segments != 0 || s.DiskBytes != 0 {
		t.Errorf("after the drain: %+v", s)
	}
	if b := walBytes(segmentFiles(t, dir)); b > 0 {
		t.Errorf("%d bytes of segments left after everything was delivered", b)
	}
}

// Messages spilled in a session are refilled in that session, whether the spool was
// empty at New or the reader had already read every segment there was.
func TestRefillInSameSession(t *testing.T) {
	run := func(t *testing.T, dir string, backlog []string) {
		src := make(chan string)
		c := open(t, dir, src, WithBuffer(4))
		// First the backlog left by an earlier Chan, if any: the reader reads it all.
		got := recvN(c.Out(), len(backlog), 5*time.Second)
		checkSame(t, "backlog", backlog, got)
		// Then the consumer stalls while messages spill, and comes back.
		sent := msgs("n", 100)
		for _, m := range sent {
			src <- m
		}
		waitStats(t, c, 5*time.Second, "the spill", func(s Stats) bool { return s.InMemory == 0 })
		got = recvN(c.Out(), len(sent), 2*time.Second)
		if len(got) != len(sent) {
			s := c.Stats()
			t.Errorf("consumer received %d of %d while %d were on disk; stats %+v", len(got), len(sent), s.OnDisk, s)
		}
		close(src)
		rest, closed := drain(c.Out(), 2*time.Second)
		got = append(got, rest...)
		if !closed {
			t.Errorf("Out not closed after src was closed")
		}
		if s := c.Stats(); s.OnDisk != 0 {
			t.Errorf("Out closed with OnDisk %d: %+v", s.OnDisk, s)
		}
		mustClose(t, c)
		more, _ := reopenAndDrain(t, dir)
		checkSame(t, "spilled in the same session", sent, append(got, more...))
	}
	t.Run("fresh directory", func(t *testing.T) {
		run(t, t.TempDir(), nil)
	})
	t.Run("after the reader read every segment", func(t *testing.T) {
		dir := t.TempDir()
		old := msgs("old", 1000)
		spillAndClose(t, dir, old, WithBuffer(4))
		run(t, dir, old)
	})
}

// ---- Close at awkward moments ----------------------------------------------------------

// Close while a refill batch is half handed out, while a consumer is in the middle of a
// range loop, and from two goroutines at once: then reopen and drain; nothing is lost and
// nothing repeated.
func TestCloseDuringRefill(t *testing.T) {
	const n = 20000
	dir := t.TempDir()
	opts := []Option{WithBuffer(8), WithBatchBytes(2 << 10), WithSegmentSize(32 << 10)}
	sent := msgs("h", n)
	spillAndClose(t, dir, sent, opts...)
	var got []string

	// Read part of a refilled batch, then Close: the exact cursor is kept.
	for i := range 6 {
		src := make(chan string)
		c := open(t, dir, src, opts...)
		k := 3 + i*37
		part := recvN(c.Out(), k, 5*time.Second)
		if len(part) != k {
			t.Fatalf("session %d: received %d of %d", i, len(part), k)
		}
		got = append(got, part...)
		s := c.Stats()
		mustClose(t, c)
		after := c.Stats()
		if want := int64(n - len(got)); after.OnDisk != want {
			t.Errorf("session %d: after Close OnDisk %d, want %d (stats before %+v)", i, after.OnDisk, want, s)
		}
	}

	// A consumer goroutine is mid-range while Close happens: what it got counts.
	{
		src := make(chan string)
		c := open(t, dir, src, opts...)
		received := make(chan int, 1)
		done := make(chan []string)
		go func() {
			var mine []string
			for v := range c.Out() {
				mine = append(mine, v)
				if len(mine) == 500 {
					received <- len(mine)
				}
			}
			done <- mine
		}()
		// New messages keep arriving as well.
		extra := msgs("hx", 200)
		for _, m := range extra {
			src <- m
		}
		sent = append(sent, extra...)
		<-received
		mustClose(t, c)
		mine := <-done
		if len(mine) < 500 {
			t.Errorf("mid-range consumer got %d", len(mine))
		}
		got = append(got, mine...)
	}

	// Close twice, concurrently.
	{
		src := make(chan string)
		c := open(t, dir, src, opts...)
		got = append(got, recvN(c.Out(), 50, 5*time.Second)...)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = c.Close() }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Close #%d: %v", i, err)
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("third Close: %v", err)
		}
		if _, ok := <-c.Out(); ok {
			t.Errorf("Out still open after Close")
		}
	}

	rest, s := reopenAndDrain(t, dir, opts...)
	got = append(got, rest...)
	checkSame(t, "close during refill", sent, got)
	if s.OnDisk != 0 {
		t.Errorf("final: %+v", s)
	}
}

// Close after src was closed and Out has closed by itself is harmless.
func TestCloseAfterSrcClosed(t *testing.T) {
	src := make(chan string, 3)
	c := open(t, t.TempDir(), src)
	src <- "a"
	src <- "b"
	close(src)
	got, closed := drain(c.Out(), 5*time.Second)
	if !closed || len(got) != 2 {
		t.Fatalf("got %q, closed %v", got, closed)
	}
	for range 2 {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if s := c.Stats(); s.Received != 2 || s.Direct != 2 || s.OnDisk != 0 {
		t.Errorf("stats: %+v", s)
	}
}

// ---- segments --------------------------------------------------------------------------

// With small segments a backlog spans many; they are appended to, never rewritten or
// replaced, and deleted once delivered.
func TestSegmentRotationAndDeletion(t *testing.T) {
	const n = 60000
	dir := t.TempDir()
	opts := []Option{WithBuffer(16), WithSegmentSize(64 << 10)}
	// Random-looking payloads compress poorly, so the backlog needs many segments.
	rng := rand.New(rand.NewPCG(1, 2))
	sent := make([]string, n)
	for i := range sent {
		sent[i] = fmt.Sprintf("s%08d %016x%016x%016x", i, rng.Uint64(), rng.Uint64(), rng.Uint64())
	}

	// Watch the segment files: each keeps its inode and only grows until it is deleted.
	var (
		mu      sync.Mutex
		seen    = map[string]fileID{}
		gone    = map[string]bool{}
		badNews []string
	)
	watch := func() {
		files := segmentFiles(t, dir)
		mu.Lock()
		defer mu.Unlock()
		for name, f := range files {
			old, ok := seen[name]
			switch {
			case gone[name]:
				badNews = append(badNews, fmt.Sprintf("%s came back after being deleted", name))
			case ok && old.ino != f.ino:
				badNews = append(badNews, fmt.Sprintf("%s replaced (inode %d -> %d)", name, old.ino, f.ino))
			case ok && f.size < old.size && filepath.Base(name) == "00000000000000000001":
				badNews = append(badNews, fmt.Sprintf("%s shrank from %d to %d", name, old.size, f.size))
			}
			seen[name] = f
		}
		for name := range seen {
			if _, ok := files[name]; !ok {
				gone[name] = true
			}
		}
	}
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(time.Millisecond):
				watch()
			}
		}
	}()

	src := make(chan string)
	c := open(t, dir, src, opts...)
	for _, m := range sent {
		src <- m
	}
	s := waitStats(t, c, 5*time.Second, "the backlog to reach the disk", func(s Stats) bool { return s.InMemory == 0 })
	files := segmentFiles(t, dir)
	if s.Segments <= 1 {
		t.Errorf("Segments = %d with 64 KiB segments and %d bytes written", s.Segments, s.BytesWritten)
	}
	if w := walBytes(files); w != s.DiskBytes {
		t.Errorf("segment files hold %d bytes, Stats.DiskBytes says %d", w, s.DiskBytes)
	}
	// Each record is written once: the files hold the records plus their length prefixes.
	if s.DiskBytes < s.BytesWritten || s.DiskBytes > s.BytesWritten+s.BytesWritten/100+64 {
		t.Errorf("DiskBytes %d vs BytesWritten %d: records written more than once?", s.DiskBytes, s.BytesWritten)
	}
	t.Logf("spilled: %+v", s)
	mustClose(t, c)

	got, s := reopenAndDrain(t, dir, opts...)
	close(stopWatch)
	<-watched
	watch()
	checkSame(t, "rotation", sent, got)
	if s.Segments != 0 || s.DiskBytes != 0 || s.OnDisk != 0 {
		t.Errorf("after the drain: %+v", s)
	}
	if b := dirBytes(t, dir); b > 4<<10 {
		t.Errorf("%d bytes left in the spool directory after the drain", b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Errorf("watched only %d segment files", len(seen))
	}
	for _, e := range badNews {
		t.Error(e)
	}
}

// In ordered mode Close puts Out's unread buffer in front of the backlog. That must not
// cost a copy of the rest of the segment being read: no segment is rewritten whole.
func TestOrderedCloseDoesNotRewriteSegment(t *testing.T) {
	const n = 40000
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(8), WithSegmentSize(4 << 20)}
	rng := rand.New(rand.NewPCG(3, 4))
	sent := make([]string, n)
	for i := range sent {
		sent[i] = fmt.Sprintf("o%08d %016x%016x%016x", i, rng.Uint64(), rng.Uint64(), rng.Uint64())
	}
	spillAndClose(t, dir, sent, opts...)
	before := segmentFiles(t, dir)

	// Take a few messages, then Close while the rest of the (only) segment is unread.
	src := make(chan string)
	c := open(t, dir, src, opts...)
	got := recvN(c.Out(), 10, 5*time.Second)
	mustClose(t, c)
	after := segmentFiles(t, dir)
	var fresh int64
	for name, f := range after {
		if old, ok := before[name]; !ok || old.ino != f.ino {
			fresh += f.size
		}
	}
	// Out's buffer is 8 messages of ~80 bytes; the segment holds megabytes.
	if total := walBytes(before); fresh > 64<<10 {
		t.Errorf("Close wrote %d bytes of new segment files to store Out's 8 unread messages (the backlog is %d bytes): "+
			"the rest of the segment was rewritten", fresh, total)
	}
	rest, _ := reopenAndDrain(t, dir, opts...)
	checkOrder(t, "ordered", sent, append(got, rest...))
}

// ---- errors ----------------------------------------------------------------------------

func TestNewErrors(t *testing.T) {
	src := make(chan string)

	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		c := open(t, dir, src)
		c2, err := New(dir, src, String)
		if !errors.Is(err, ErrLocked) || c2 != nil {
			t.Errorf("second New: %v, %v; want ErrLocked", c2, err)
		}
		if err != nil && !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name the directory", err)
		}
		mustClose(t, c)
		c3 := open(t, dir, src) // free again after Close
		mustClose(t, c3)
	})
	t.Run("regular file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "spool")
		if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if c, err := New(file, src, String); err == nil {
			c.Close()
			t.Errorf("New on a regular file succeeded")
		}
		if c, err := New(filepath.Join(file, "sub"), src, String); err == nil {
			c.Close()
			t.Errorf("New below a regular file succeeded")
		}
	})
	t.Run("unwritable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("running as root, which ignores permissions")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		if c, err := New(dir, src, String); err == nil {
			c.Close()
			t.Errorf("New on a read-only directory succeeded")
		}
		if c, err := New(filepath.Join(dir, "sub"), src, String); err == nil {
			c.Close()
			t.Errorf("New below a read-only directory succeeded")
		}
	})
	t.Run("foreign files", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		if c, err := New(dir, src, String); !errors.Is(err, ErrVersion) {
			if err == nil {
				c.Close()
			}
			t.Errorf("New on a directory with foreign files: %v, want ErrVersion", err)
		}
		// ErrVersion promises that nothing in the directory is changed.
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !reflect.DeepEqual(names, []string{"notes.txt"}) {
			t.Errorf("foreign directory changed by a refused New: now holds %q", names)
		}
	})
	t.Run("other format version", func(t *testing.T) {
		dir := t.TempDir()
		c := open(t, dir, src)
		mustClose(t, c)
		if err := os.WriteFile(filepath.Join(dir, "FORMAT"), []byte("pelichan-spool 99\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if c, err := New(dir, src, String); !errors.Is(err, ErrVersion) {
			if err == nil {
				c.Close()
			}
			t.Errorf("New on a spool of another version: %v, want ErrVersion", err)
		}
	})
	t.Run("nil src", func(t *testing.T) {
		c, err := New[string](t.TempDir(), nil, String)
		if err == nil || c != nil {
			t.Errorf("New with nil src: %v, %v", c, err)
		}
	})
	t.Run("nil codec", func(t *testing.T) {
		c, err := New[string](t.TempDir(), src, nil)
		if err == nil || c != nil {
			t.Errorf("New with nil codec: %v, %v", c, err)
		}
	})
}

// ---- codecs ----------------------------------------------------------------------------

func TestCodecBytes(t *testing.T) {
	const n = 3000
	dir := t.TempDir()
	src := make(chan []byte)
	c, err := New(dir, src, Bytes, WithBuffer(4))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for i := range n {
		m := []byte(msg("y", i))
		want[string(m)]++
		src <- m
	}
	mustClose(t, c)
	src2 := make(chan []byte)
	close(src2)
	c, err = New(dir, src2, Bytes)
	if err != nil {
		t.Fatal(err)
	}
	got, closed := drain(c.Out(), 10*time.Second)
	mustClose(t, c)
	if !closed || len(got) != n || c.Stats().Refilled != n {
		t.Fatalf("got %d of %d (closed %v); stats %+v", len(got), n, closed, c.Stats())
	}
	// Appending to a decoded slice never writes into another (messages of one record
	// share a buffer, each with its capacity cut at its end).
	for _, g := range got {
		_ = append(g, "APPENDED"...)
	}
	// Each decoded slice is a copy of its own: scribbling over one changes no other.
	for i, g := range got {
		if want[string(g)] == 0 {
			t.Fatalf("message %d: %q was not sent, or is a repeat, or shares memory with another", i, g)
		}
		want[string(g)]--
		for j := range g {
			g[j] = 'X'
		}
	}
}

func TestCodecString(t *testing.T) {
	dir := t.TempDir()
	sent := []string{"", "a", "ü€😀", strings.Repeat("z", 100000), "tab\tnew\nline", "\x00\xff"}
	for i := range 1000 {
		sent = append(sent, msg("str", i))
	}
	spillAndClose(t, dir, sent, WithBuffer(2))
	got, s := reopenAndDrain(t, dir)
	checkSame(t, "String", sent, got)
	if s.Refilled != int64(len(sent)) {
		t.Errorf("Refilled %d, want %d", s.Refilled, len(sent))
	}
}

type jsonRec struct {
	ID   int
	Name string
	Tags []string
	When time.Time
	Sub  *jsonRec `json:",omitempty"`
}

func TestCodecJSON(t *testing.T) {
	const n = 2000
	dir := t.TempDir()
	sent := make([]jsonRec, n)
	base := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := range sent {
		sent[i] = jsonRec{ID: i, Name: msg("j", i), Tags: []string{"a", strconv.Itoa(i)}, When: base.Add(time.Duration(i) * time.Millisecond)}
		if i%7 == 0 {
			sent[i].Sub = &jsonRec{ID: -i, Name: "sub"}
		}
	}
	src := make(chan jsonRec)
	c, err := New(dir, src, JSON[jsonRec](), WithBuffer(4))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range sent {
		src <- r
	}
	mustClose(t, c)
	src2 := make(chan jsonRec)
	close(src2)
	c, err = New(dir, src2, JSON[jsonRec]())
	if err != nil {
		t.Fatal(err)
	}
	got, closed := drain(c.Out(), 10*time.Second)
	mustClose(t, c)
	if !closed || len(got) != n {
		t.Fatalf("got %d of %d (closed %v)", len(got), n, closed)
	}
	seen := make([]bool, n)
	for _, g := range got {
		if g.ID < 0 || g.ID >= n || seen[g.ID] {
			t.Fatalf("unexpected or repeated record %+v", g)
		}
		seen[g.ID] = true
		if !reflect.DeepEqual(g, sent[g.ID]) {
			t.Errorf("record %d: got %+v, want %+v", g.ID, g, sent[g.ID])
		}
	}
}

var (
	errEncodeBoom = errors.New("test: cannot encode")
	errDecodeBoom = errors.New("test: cannot decode")
)

// faultyCodec is String, but fails to encode messages starting with "E" (after writing
// part of them) and to decode messages starting with "D".
type faultyCodec struct{}

func (faultyCodec) Encode(dst []byte, v string) ([]byte, error) {
	if strings.HasPrefix(v, "E") {
		return append(dst, "half-writ"...), errEncodeBoom
	}
	return append(dst, v...), nil
}

func (faultyCodec) Decode(data []byte) (string, error) {
	if bytes.HasPrefix(data, []byte("D")) {
		return "", errDecodeBoom
	}
	return string(data), nil
}

// errorLog collects what the error handler receives.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) handle(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

func (l *errorLog) all() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// Messages the codec cannot encode are refused, counted and reported; the others arrive.
func TestEncodeErrors(t *testing.T) {
	const n, buffer = 1000, 4
	dir := t.TempDir()
	var log errorLog
	src := make(chan string)
	c, err := New(dir, src, faultyCodec{}, WithBuffer(buffer), WithErrorHandler(log.handle))
	if err != nil {
		t.Fatal(err)
	}
	var good []string
	bad := 0
	for i := range n {
		m := msg("ok", i)
		if i >= buffer && i%10 == 3 {
			m = msg("E", i) // beyond Out's buffer: it has to be encoded
			bad++
		} else {
			good = append(good, m)
		}
		src <- m
	}
	s := waitStats(t, c, 5*time.Second, "the spill", func(s Stats) bool { return s.InMemory == 0 })
	checkBalance(t, s)
	// Out's buffer is written too once it waited the linger time.
	if s.Dropped != int64(bad) || s.Spilled != int64(n-bad) || s.OnDisk != s.Spilled {
		t.Errorf("want Dropped %d, Spilled = OnDisk = %d; got %+v", bad, n-bad, s)
	}
	mustClose(t, c)
	errs := log.all()
	if len(errs) != bad {
		t.Errorf("error handler got %d errors, want %d", len(errs), bad)
	}
	for _, err := range errs {
		if !errors.Is(err, ErrCodec) || !errors.Is(err, errEncodeBoom) {
			t.Errorf("error %v does not wrap ErrCodec and the codec's error", err)
		}
	}
	got, s := reopenAndDrain(t, dir, WithErrorHandler(log.handle))
	checkSame(t, "encode errors", good, got)
	if s.Corrupt != 0 || s.Dropped != 0 {
		t.Errorf("the refused messages left a trace in the spool: %+v", s)
	}
}

// Messages taken back from Out at Close are encoded then; those the codec refuses are
// counted as Dropped (not also as Spilled), reported wrapping ErrCodec, and Close's error
// says so, in both modes.
func TestEncodeErrorsAtClose(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			dir := t.TempDir()
			var log errorLog
			opts := []Option{WithBuffer(8), WithErrorHandler(log.handle)}
			if ordered {
				opts = append(opts, WithOrdered())
			}
			src := make(chan string)
			c, err := New(dir, src, faultyCodec{}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			var good []string
			for i := range 8 { // all fit in Out: nothing is encoded before Close
				if i%2 == 0 {
					src <- msg("E", i)
				} else {
					good = append(good, msg("ok", i))
					src <- good[len(good)-1]
				}
			}
			// Close says what it dropped.
			if err := akClose(t, c); !errors.Is(err, ErrCodec) || !errors.Is(err, errEncodeBoom) ||
				!strings.Contains(err.Error(), "4 messages") {
				t.Errorf("Close: %v, want an error for the 4 messages, wrapping ErrCodec and the codec's error", err)
			}
			s := c.Stats()
			if s.Dropped != 4 || s.Spilled != 4 || s.OnDisk != 4 {
				t.Errorf("want Dropped 4, Spilled 4, OnDisk 4; got %+v", s)
			}
			if s.DiskBytes > 0 && s.BytesWritten == 0 {
				t.Errorf("records written at Close are missing from BytesWritten: %+v", s)
			}
			errs := log.all()
			if len(errs) != 4 {
				t.Errorf("error handler got %d errors, want 4", len(errs))
			}
			for _, err := range errs {
				if !errors.Is(err, ErrCodec) || !errors.Is(err, errEncodeBoom) {
					t.Errorf("error %q does not wrap ErrCodec and the codec's error", err)
				}
			}
			got, _ := reopenAndDrain(t, dir, opts...)
			checkSame(t, "stored at Close", good, got)
		})
	}
}

// A Sync whose own write finds a delivery the codec refuses says so (ErrCodec), not only
// the next Sync: the message is neither written nor done (found by a contract audit: the
// count was taken before the write).
func TestSyncReportsRefusalItsWriteFound(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, faultyCodec{}, WithBuffer(8), WithErrorHandler(func(error) {}))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ok0", "E1", "ok2"} { // all wait in Out: nothing written yet
		akSend(t, src, m, 5*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Sync(ctx); !errors.Is(err, ErrCodec) || !strings.Contains(err.Error(), "1 messages") {
		t.Errorf("first Sync: %v, want an error for 1 message wrapping ErrCodec", err)
	}
	if s, ok := statsWithin(c, 5*time.Second); !ok {
		t.Fatal("Stats did not return within 5 s")
	} else if s.InMemory != 1 || s.OnDisk != 2 {
		t.Errorf("after Sync: InMemory %d OnDisk %d, want 1 and 2", s.InMemory, s.OnDisk)
	}
	got := recvN(c.Out(), 3, 5*time.Second)
	checkSame(t, "received", []string{"ok0", "E1", "ok2"}, got)
	akMustClose(t, c)
}

// Messages the codec cannot decode are reported with their bytes and counted; the others
// arrive. Each is reported once, in whichever session decoded its record: the first one
// may already have read some spilled records back (read-ahead) before Close.
func TestDecodeErrors(t *testing.T) {
	const n = 1000
	dir := t.TempDir()
	var sent, good []string
	badRaw := map[string]bool{}
	for i := range n {
		m := msg("ok", i)
		if i%9 == 5 {
			m = msg("D", i)
			badRaw[m] = true
		} else {
			good = append(good, m)
		}
		sent = append(sent, m)
	}
	var log errorLog
	src := make(chan string)
	c, err := New(dir, src, faultyCodec{}, WithBuffer(4), WithErrorHandler(log.handle))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sent {
		src <- m
	}
	mustClose(t, c)
	first := c.Stats()
	if first.OnDisk+first.InMemory+first.Dropped != n {
		t.Errorf("first session: %d messages on disk, %d in memory, %d dropped, want %d in all: %+v", first.OnDisk, first.InMemory, first.Dropped, n, first)
	}

	src2 := make(chan string)
	close(src2)
	c, err = New(dir, src2, faultyCodec{}, WithErrorHandler(log.handle))
	if err != nil {
		t.Fatal(err)
	}
	got, closed := drain(c.Out(), 10*time.Second)
	mustClose(t, c)
	if !closed {
		t.Errorf("Out not closed")
	}
	checkSame(t, "decode errors", good, got)
	s := c.Stats()
	if first.Dropped+s.Dropped != int64(len(badRaw)) || s.OnDisk != 0 || s.Corrupt != 0 {
		t.Errorf("want Dropped %d over both sessions (%d in the first), OnDisk 0, Corrupt 0; got %+v", len(badRaw), first.Dropped, s)
	}
	errs := log.all()
	if len(errs) != len(badRaw) {
		t.Errorf("error handler got %d errors, want %d", len(errs), len(badRaw))
	}
	for _, err := range errs {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("error %v is not a *DecodeError", err)
			continue
		}
		if !errors.Is(err, ErrCodec) || !errors.Is(err, errDecodeBoom) {
			t.Errorf("error %v does not wrap ErrCodec and the codec's error", err)
		}
		if !badRaw[string(de.Raw)] {
			t.Errorf("DecodeError.Raw = %q, not one of the undecodable messages", de.Raw)
		}
		delete(badRaw, string(de.Raw))
		if !isSegDir(de.Segment) {
			t.Errorf("DecodeError does not say where: %+v", de)
		}
	}
}

// ---- stats -----------------------------------------------------------------------------

// While messages flow, every message taken from src is accounted for exactly once.
func TestStatsAccounting(t *testing.T) {
	const n = 20000
	dir := t.TempDir()
	src := make(chan string)
	c, err := New(dir, src, faultyCodec{}, WithBuffer(32), WithBatchBytes(4<<10), WithLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var sent []string
	for i := range n {
		if i%50 == 7 {
			sent = append(sent, msg("E", i))
		} else {
			sent = append(sent, msg("ok", i))
		}
	}
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for _, m := range sent {
			src <- m
		}
	}()
	// A slow consumer that takes a third of the messages.
	var got []string
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for range n / 3 {
			v, ok := <-c.Out()
			if !ok {
				return
			}
			got = append(got, v)
			if len(got)%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// Idle: everything stored, except messages the codec refuses that wait in Out's buffer
	// (handed out from memory, they cannot be written; at most Out's 32).
	idleNow := func(s Stats) bool { return s.Received == n && s.InMemory <= 32 }
	polls := 0
	deadline := time.Now().Add(20 * time.Second)
	for idle := false; !idle && !t.Failed(); polls++ {
		if time.Now().After(deadline) {
			t.Fatalf("not idle after 20s: %+v", c.Stats())
		}
		s := c.Stats()
		checkBalance(t, s)
		select {
		case <-produced:
			select {
			case <-consumed:
				idle = idleNow(s)
			default:
			}
		default:
		}
		time.Sleep(200 * time.Microsecond)
	}
	<-produced
	<-consumed
	s := waitStats(t, c, 5*time.Second, "idle", idleNow)
	checkBalance(t, s)
	t.Logf("%d polls; idle stats %+v", polls, s)
	// A refused message still in Out's buffer is taken back and dropped at Close, which
	// says so.
	if err := c.Close(); err != nil && !errors.Is(err, ErrCodec) {
		t.Fatalf("Close: %v", err)
	}
	s = c.Stats()
	if want := int64(n-len(got)) - s.Dropped; s.OnDisk != want {
		t.Errorf("after Close: OnDisk %d, want sent %d - received %d - dropped %d = %d",
			s.OnDisk, n, len(got), s.Dropped, want)
	}
	rest, _ := reopenAndDrain(t, dir)
	delivered := append(got, rest...)
	if int64(len(delivered))+s.Dropped != n {
		t.Errorf("delivered %d + dropped %d != sent %d", len(delivered), s.Dropped, n)
	}
	var expect []string
	dropped := map[string]bool{}
	for _, m := range sent {
		dropped[m] = strings.HasPrefix(m, "E")
	}
	for _, m := range delivered {
		dropped[m] = false
	}
	for _, m := range sent {
		if !dropped[m] {
			expect = append(expect, m)
		}
	}
	checkSame(t, "accounting", expect, delivered)
}

// Every snapshot is consistent, not only the idle ones: whatever was stored (the backlog
// found at New plus what was spilled since) is either still on disk or was refilled.
func TestStatsSnapshotConsistent(t *testing.T) {
	const backlog, n = 10000, 20000
	dir := t.TempDir()
	// Small batches: many writes and acknowledgements to be caught in the middle of.
	opts := []Option{WithBuffer(4), WithBatchBytes(300), WithLinger(time.Millisecond)}
	old := msgs("s", backlog)
	spillAndClose(t, dir, old, opts...)
	src := make(chan string)
	c := open(t, dir, src, opts...)
	sent := msgs("t", n)
	go func() {
		for _, m := range sent {
			src <- m
		}
		close(src)
	}()
	done := make(chan []string)
	go func() {
		var got []string
		for v := range c.Out() {
			got = append(got, v)
			if len(got)%64 == 0 {
				time.Sleep(50 * time.Microsecond) // slow enough that messages spill
			}
		}
		done <- got
	}()
	var got []string
	polls, bad := 0, 0
	diffs := map[int64]int{}
	for got == nil {
		select {
		case got = <-done:
			continue
		default:
		}
		s := c.Stats()
		polls++
		if s.InMemory < 0 || s.OnDisk < 0 {
			bad++
		}
		if d := s.Received + backlog - (s.Direct + s.Refilled + s.OnDisk + s.Dropped + s.InMemory); d != 0 {
			if diffs[d] == 0 {
				t.Logf("inconsistent snapshot: %+v", s)
			}
			diffs[d]++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d snapshots had a negative count", bad, polls)
	}
	if len(diffs) > 0 {
		t.Errorf("Received + backlog != Direct + Refilled + OnDisk + Dropped + InMemory in snapshots: {difference: count} %v of %d", diffs, polls)
	}
	mustClose(t, c)
	more, _ := reopenAndDrain(t, dir)
	checkSame(t, "snapshots", append(old, sent...), append(got, more...))
}

// A spilled message reaches the disk within the linger interval, even when its batch is
// far from full.
func TestLingerWritesPartialBatch(t *testing.T) {
	dir := t.TempDir()
	src := make(chan string)
	c := open(t, dir, src, WithBuffer(1), WithLinger(20*time.Millisecond))
	for _, m := range msgs("l", 5) {
		src <- m
	}
	s := waitStats(t, c, 2*time.Second, "the linger", func(s Stats) bool { return s.InMemory == 0 })
	// The one in Out's buffer is written too: nobody took it within the linger time.
	if s.Spilled != 5 || s.OnDisk != 5 || s.BytesWritten == 0 {
		t.Errorf("after the linger: %+v", s)
	}
	if b := walBytes(segmentFiles(t, dir)); b == 0 {
		t.Errorf("nothing in the segment files after the linger")
	}
	if s.OldestAge <= 0 {
		t.Errorf("OldestAge %v with a backlog", s.OldestAge)
	}
}

func TestExpvar(t *testing.T) {
	src := make(chan string)
	c := open(t, t.TempDir(), src, WithBuffer(1))
	src <- "a"
	src <- "b"
	check := func(when string) {
		v := c.Var().String()
		if !json.Valid([]byte(v)) || !strings.Contains(v, `"OnDisk"`) {
			t.Errorf("%s: Var().String() = %q, want a JSON object with OnDisk", when, v)
		}
		var s Stats
		if err := json.Unmarshal([]byte(v), &s); err != nil || s.Received != 2 {
			t.Errorf("%s: Var() decodes to %+v, %v", when, s, err)
		}
	}
	check("running")
	mustClose(t, c)
	check("closed")
}

// A producer ahead of a consumer that keeps pace: the full pending batch is held for the
// consumer (src's buffer absorbs the lead) rather than spilled; when the consumer stalls,
// the batch is spilled after one hold window, and everything still arrives exactly once.
func TestHoldForConsumerThenSpillOnStall(t *testing.T) {
	const n = 60000
	dir := t.TempDir()
	src := make(chan string, 1024)
	c := open(t, dir, src, WithBuffer(100))
	sent := msgs("h", n)
	stall := make(chan struct{})
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := range c.Out() {
			got = append(got, v)
			if len(got) == n/2 {
				<-stall // the consumer stops until the producer is done
			}
		}
	}()
	for _, m := range sent {
		select {
		case src <- m:
		case <-time.After(10 * time.Second):
			t.Fatalf("src blocked 10s; stats %+v", c.Stats())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Spilled == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the stalled consumer's backlog goes to disk
	}
	if s := c.Stats(); s.Spilled == 0 {
		t.Errorf("consumer stalled with %d messages waiting: nothing spilled; stats %+v", n-len(got), s)
	}
	close(stall)
	close(src)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("Out not closed 20s after src; stats %+v", c.Stats())
	}
	s := c.Stats()
	checkBalance(t, s)
	mustClose(t, c)
	checkSame(t, "hold", sent, got)
}
