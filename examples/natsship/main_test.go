package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// shipperBin is the natsship command, built once by TestMain.
var (
	shipperBin string
	buildFlags []string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natsship-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shipperBin = filepath.Join(dir, "natsship")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	args := append(append([]string{"build"}, buildFlags...), "-o", shipperBin, ".")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	testLines   = 20000
	testRate    = 2500 // input lines per second: 8 s of input
	testStream  = "LINES"
	testSubject = "lines.test"
)

// TestShipExactlyOnce ships a file through an outage of the NATS server, a
// SIGTERM'd and a SIGKILL'd shipper, and checks that the stream holds every
// line exactly once: redeliveries carry the same Nats-Msg-Id, and the stream
// drops the second copy.
func TestShipExactlyOnce(t *testing.T) {
	t.Parallel()
	r := runScenario(t, true)
	if r.missing > 0 || r.dups > 0 || r.other > 0 {
		t.Errorf("want every line exactly once; missing %d, duplicated %d, unexpected messages %d", r.missing, r.dups, r.other)
	}
	if r.noID > 0 {
		t.Errorf("%d messages without Nats-Msg-Id", r.noID)
	}
}

// TestShipWithoutMsgID runs the same scenario without Nats-Msg-Id, for
// comparison: lines are still not lost, but the stream keeps the copies that
// were published again after a lost acknowledgement or a crash.
func TestShipWithoutMsgID(t *testing.T) {
	t.Parallel()
	r := runScenario(t, false)
	if r.missing > 0 || r.other > 0 {
		t.Errorf("missing %d lines, unexpected messages %d", r.missing, r.other)
	}
	t.Logf("without Nats-Msg-Id: %d duplicates (expected: no deduplication)", r.dups)
}

// TestShipKillWhileReading SIGKILLs the shipper four times while it reads
// its input, with the server up. No line may be lost. Lines can be stored
// twice, with different Nats-Msg-Ids, but only the lines the shipper had
// handed to the Chan after its last input checkpoint: the restarted shipper
// reads them again from the recorded offset (at most -checkpoint-lines
// lines, or -checkpoint worth of input). The spool itself adds none: what it
// delivers again carries the same id and is dropped by the stream.
func TestShipKillWhileReading(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	input := filepath.Join(dir, "input.log")
	size := writeInput(t, input, testLines)
	spool := filepath.Join(dir, "spool")
	ns := newNATS(t, filepath.Join(dir, "jetstream"))
	ns.start(t)
	cl := newClient(t, ns.url)
	args := []string{
		"-file", input, "-spool", spool, "-url", ns.url,
		"-stream", testStream, "-subject", testSubject, "-dup-window", "10m",
		"-rate", strconv.Itoa(testRate), "-stats", "1s", "-checkpoint-lines", "1000",
	}
	var resumed []int // first line read by each restarted life
	n := 0
	for i := 1; i <= 4; i++ {
		p := startShipper(t, fmt.Sprintf("life %d", i), args...)
		n = cl.waitCount(t, n+3000, 20*time.Second)
		p.signal(t, syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		off := readOffset(t, spool+".offset")
		if off >= size {
			t.Fatalf("life %d read the whole input before its SIGKILL", i)
		}
		resumed = append(resumed, lineAt(off))
		t.Logf("SIGKILL (life %d) at %d messages; input checkpoint at line %d", i, n, resumed[len(resumed)-1])
	}
	last := startShipper(t, "life 5", args...)
	if code := last.wait(t, 40*time.Second); code != 0 {
		t.Fatalf("life 5 exited with %d", code)
	}

	r := cl.check(t, true)
	if r.missing > 0 || r.other > 0 || r.noID > 0 {
		t.Errorf("missing %d lines, unexpected messages %d, without Nats-Msg-Id %d", r.missing, r.other, r.noID)
	}
	bad := 0
	for i, ids := range r.ids {
		if len(ids) < 2 {
			continue
		}
		reread := false
		for _, k := range resumed {
			reread = reread || (i >= k && i < k+1000)
		}
		if !reread || len(ids) > 2 || ids[0] == ids[1] {
			if bad++; bad <= 5 {
				t.Errorf("line %d stored %d times with Nats-Msg-Id %q: not explained by a re-read after a checkpoint (lines %v + 1000)", i, len(ids), ids, resumed)
			}
		}
	}
	t.Logf("SIGKILL while reading: %d lines, %d messages in the stream, %d missing, %d duplicates, all from input read again after the last checkpoint: %v",
		testLines, r.msgs, r.missing, r.dups, bad == 0)
}

// TestNewSpoolSameStream ships two files into one stream, each through its
// own new spool, as two hosts would (or one host whose spool was deleted).
// Their MsgIDs are the same numbers; the spool name in Nats-Msg-Id keeps the
// stream from dropping the second file's lines as duplicates of the first's.
func TestNewSpoolSameStream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns := newNATS(t, filepath.Join(dir, "jetstream"))
	ns.start(t)
	cl := newClient(t, ns.url)
	const half = 2000
	for i, lines := range [][2]int{{0, half}, {half, 2 * half}} {
		input := filepath.Join(dir, fmt.Sprintf("input%d.log", i))
		writeLines(t, input, lines[0], lines[1])
		p := startShipper(t, fmt.Sprintf("shipper %d", i), "-file", input, "-spool", filepath.Join(dir, fmt.Sprintf("spool%d", i)),
			"-url", ns.url, "-stream", testStream, "-subject", testSubject, "-dup-window", "10m")
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("shipper %d exited with %d", i, code)
		}
	}
	r := cl.checkLines(t, true, 2*half)
	if r.missing > 0 || r.dups > 0 || r.other > 0 {
		t.Errorf("want every line exactly once; missing %d, duplicated %d, unexpected messages %d", r.missing, r.dups, r.other)
	}
}

// lineAt returns the number of the line that starts at input offset off.
func lineAt(off int64) int {
	var pos int64
	i := 0
	for ; pos < off; i++ {
		pos += int64(len(lineText(i)) + 1)
	}
	return i
}

type result struct {
	msgs, missing, dups, other, noID int
	dropped                          int        // publishes JetStream reported as duplicates
	ids                              [][]string // per line: the Nats-Msg-Id of each copy
}

var reportedDups = regexp.MustCompile(`stream reported (\d+) duplicates`)

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func runScenario(t *testing.T, dedup bool) result {
	start := time.Now()
	dir := t.TempDir()
	input := filepath.Join(dir, "input.log")
	size := writeInput(t, input, testLines)
	spool := filepath.Join(dir, "spool")

	ns := newNATS(t, filepath.Join(dir, "jetstream"))
	ns.start(t)
	cl := newClient(t, ns.url)

	args := []string{
		"-file", input, "-spool", spool, "-url", ns.url,
		"-stream", testStream, "-subject", testSubject,
		"-dedup=" + strconv.FormatBool(dedup), "-dup-window", "10m",
		"-rate", strconv.Itoa(testRate), "-stats", "1s", "-grace", "2s",
	}

	// Life 1: ship a while, then the server goes away for 3 s.
	life1 := startShipper(t, "life 1", args...)
	n := cl.waitCount(t, 2000, 20*time.Second)
	t.Logf("outage: stopping the server at %d messages", n)
	ns.stop(t)
	time.Sleep(3 * time.Second)
	ns.start(t)
	n = cl.waitCount(t, n+2000, 20*time.Second)

	// SIGTERM in the middle of the input: graceful stop, exit 0.
	t.Logf("SIGTERM at %d messages", n)
	life1.signal(t, syscall.SIGTERM)
	if code := life1.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("life 1 exited with %d after SIGTERM", code)
	}
	off := readOffset(t, spool+".offset")
	t.Logf("life 1 stopped at input offset %d of %d", off, size)
	if off >= size {
		t.Logf("note: SIGTERM came after the end of the input (slow machine?)")
	}

	// Life 2 resumes; the server goes away again until the whole input is
	// in the spool, then comes back, and the shipper is SIGKILLed while it
	// drains its backlog into the stream: lives 2, 3 and 4 are each killed
	// shortly after they started to publish, when some publishes are stored
	// in the stream but not yet acknowledged in the spool.
	life := startShipper(t, "life 2", args...)
	n = cl.waitCount(t, n+1000, 20*time.Second)
	t.Logf("outage: stopping the server at %d messages", n)
	ns.stop(t)
	waitFor(t, 30*time.Second, "the input offset to reach the end of the file", func() bool {
		return readOffset(t, spool+".offset") == size
	})
	ns.start(t)
	for i := 2; i <= 4; i++ {
		if i > 2 {
			life = startShipper(t, fmt.Sprintf("life %d", i), args...)
		}
		n = cl.waitCount(t, min(n+300, testLines), 20*time.Second)
		life.signal(t, syscall.SIGKILL)
		life.wait(t, 10*time.Second)
		t.Logf("SIGKILL (life %d) at %d messages in the stream (of %d lines)", i, n, testLines)
	}

	// The last life runs to completion: the input is at its end, so it
	// ships what is left in the spool and exits 0 once JetStream
	// acknowledged all.
	last := startShipper(t, "life 5", args...)
	if code := last.wait(t, 40*time.Second); code != 0 {
		t.Fatalf("life 5 exited with %d", code)
	}

	r := cl.check(t, dedup)
	// Lives 1 and 5 exit normally and report the publishes that JetStream
	// acknowledged as duplicates (a copy with that Nats-Msg-Id was stored).
	for _, p := range []*proc{life1, last} {
		if m := reportedDups.FindStringSubmatch(p.out.String()); m != nil {
			r.dropped += atoi(m[1])
		}
	}
	t.Logf("dedup=%v: %d lines, %d messages in the stream, %d missing, %d duplicates; JetStream dropped %d copies by Nats-Msg-Id (%.1fs)",
		dedup, testLines, r.msgs, r.missing, r.dups, r.dropped, time.Since(start).Seconds())
	return r
}

// ---- input ------------------------------------------------------------------

func lineText(i int) string {
	const words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua "
	return fmt.Sprintf("%06d level=info msg=%q", i, words[:20+i*37%(len(words)-20)])
}

// writeInput writes lines [0, n) to path and returns its size.
func writeInput(t *testing.T, path string, n int) int64 {
	return writeLines(t, path, 0, n)
}

func writeLines(t *testing.T, path string, from, to int) int64 {
	t.Helper()
	var b bytes.Buffer
	for i := from; i < to; i++ {
		b.WriteString(lineText(i))
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return int64(b.Len())
}

func readOffset(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var rec offsetRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rec.Offset
}

// ---- NATS server --------------------------------------------------------------

type natsServer struct {
	opts *server.Options
	srv  *server.Server
	url  string
}

// newNATS prepares a JetStream server on a free loopback port; start and stop
// it any number of times, always on the same port and store directory.
func newNATS(t *testing.T, storeDir string) *natsServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ns := &natsServer{
		opts: &server.Options{
			ServerName: "natsship-test",
			Host:       "127.0.0.1",
			Port:       port,
			JetStream:  true,
			StoreDir:   storeDir,
			NoLog:      true,
			NoSigs:     true,
		},
		url: fmt.Sprintf("nats://127.0.0.1:%d", port),
	}
	t.Cleanup(func() {
		if ns.srv != nil {
			ns.stop(t)
		}
	})
	return ns
}

func (ns *natsServer) start(t *testing.T) {
	t.Helper()
	opts := *ns.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		t.Fatal("nats-server not ready after 10s")
	}
	ns.srv = srv
}

func (ns *natsServer) stop(t *testing.T) {
	t.Helper()
	srv := ns.srv
	ns.srv = nil
	done := make(chan struct{})
	go func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("nats-server did not shut down within 20s")
	}
}

// ---- test client ------------------------------------------------------------

type client struct {
	js jetstream.JetStream
}

func newClient(t *testing.T, url string) *client {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.RetryOnFailedConnect(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &client{js: js}
}

// count returns the number of messages in the stream, or -1 if that is not
// known now (no stream yet, server away).
func (c *client) count() int {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s, err := c.js.Stream(ctx, testStream)
	if err != nil {
		return -1
	}
	return int(s.CachedInfo().State.Msgs)
}

func (c *client) waitCount(t *testing.T, atLeast int, timeout time.Duration) int {
	t.Helper()
	n := -1
	waitFor(t, timeout, fmt.Sprintf("%d messages in the stream", atLeast), func() bool {
		n = c.count()
		return n >= atLeast
	})
	return n
}

// check reads the whole stream and counts every line.
func (c *client) check(t *testing.T, dedup bool) result {
	return c.checkLines(t, dedup, testLines)
}

// checkLines reads the whole stream and counts each of lines [0, lines).
func (c *client) checkLines(t *testing.T, dedup bool, lines int) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	total := int(s.CachedInfo().State.Msgs)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	ids := make([][]string, lines)
	r.ids = ids
	for r.msgs < total {
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d stream messages: %v", r.msgs, total, ctx.Err())
		}
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			r.msgs++
			data := string(m.Data())
			id := m.Headers().Get(jetstream.MsgIDHeader)
			if id == "" {
				r.noID++
			}
			i, err := strconv.Atoi(data[:min(6, len(data))])
			if err != nil || i < 0 || i >= lines || data != lineText(i) {
				r.other++
				if r.other <= 5 {
					t.Logf("unexpected message %q", data)
				}
				continue
			}
			ids[i] = append(ids[i], id)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	var sameID, otherID int
	for i := range ids {
		switch n := len(ids[i]); {
		case n == 0:
			r.missing++
			if r.missing <= 5 {
				t.Logf("line %d missing", i)
			}
		case n > 1:
			r.dups += n - 1
			if dedup {
				if ids[i][0] == ids[i][1] {
					sameID++
				} else {
					otherID++
				}
				if sameID+otherID <= 5 {
					t.Logf("line %d stored %d times, Nats-Msg-Id %q", i, n, ids[i])
				}
			}
		}
	}
	if testing.Verbose() && r.dups > 0 {
		var runs []string
		for i := 0; i < len(ids); {
			if len(ids[i]) < 2 {
				i++
				continue
			}
			j := i
			for j < len(ids) && len(ids[j]) > 1 {
				j++
			}
			runs = append(runs, fmt.Sprintf("%d-%d", i, j-1))
			i = j
		}
		t.Logf("duplicated line ranges: %v", runs)
	}
	if dedup && r.dups > 0 {
		t.Logf("duplicated lines: %d with the same Nats-Msg-Id (outside the stream's window?), %d with different ids (redelivered with a new MsgID, or read twice)", sameID, otherID)
	}
	return r
}

// ---- child processes ----------------------------------------------------------

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

func startShipper(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(shipperBin, args...), out: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: still running 10s after SIGKILL", p.name)
		}
		t.Logf("%s (killed at test end):\n%s", p.name, p.out.String())
	})
	return p
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code (-1 when it
// was killed by a signal).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %v; output:\n%s", p.name, timeout, p.out.String())
	}
	t.Logf("%s:\n%s", p.name, indent(p.out.String()))
	return p.cmd.ProcessState.ExitCode()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func indent(s string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		b.WriteString("    ")
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
