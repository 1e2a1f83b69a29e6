// Command natsship ships lines from a file (or stdin) to a NATS JetStream
// stream through a pelichan spool, so that no line is lost while the server is
// away or the shipper is restarted, and none is stored twice in the stream.
//
//	lines --> src --> pelichan.Chan (write-ahead, acks) --> Deliveries
//	      --> JetStream publish (Nats-Msg-Id from Delivery.ID) --> PubAck --> Chan.Ack
//
// Every line is written to the spool before it is published, and the Chan
// forgets it only after JetStream acknowledged the publish. A line that was
// delivered but not acknowledged when the shipper stopped (or crashed) is
// delivered again after a restart, with the same Delivery.ID; the stream
// drops the second copy because it carries the same Nats-Msg-Id (within the
// stream's duplicate window).
//
// A MsgID is unique within its spool directory only, so the Nats-Msg-Id is
// "<spool name>.<MsgID>", where the spool name is random, chosen when the
// spool is created and kept in <spool>.id: shippers on many hosts can share
// a stream.
//
// The input position is kept in an offset file next to the spool
// (<spool>.offset). It is written only after Chan.Sync returned, so every line
// before the recorded offset is in the spool (or already shipped): a restart
// with the same -file and -spool goes on where the last one stopped.
//
// Usage:
//
//	natsship -file /var/log/app.log -spool /var/spool/natsship \
//	    -url nats://127.0.0.1:4222 -stream LOGS -subject logs.app
//
// SIGTERM or SIGINT: stop reading input, let in-flight publishes finish for
// up to -grace, close the spool and exit 0. At the end of a file (without
// -follow) the shipper waits until every line is acknowledged by JetStream,
// then exits 0.
package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pelichan/pelichan"
)

type config struct {
	file       string
	spool      string
	offsetFile string
	follow     bool

	url       string
	stream    string
	subject   string
	dedup     bool
	dupWindow time.Duration

	maxUnacked      int
	pubTimeout      time.Duration
	grace           time.Duration
	checkpoint      time.Duration
	checkpointLines int
	rate            float64
	statsEvery      time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.file, "file", "-", "input file; - reads stdin (stdin is not resumable)")
	flag.StringVar(&cfg.spool, "spool", "", "spool directory (required)")
	flag.StringVar(&cfg.offsetFile, "offset-file", "", "input offset file (default <spool>.offset)")
	flag.BoolVar(&cfg.follow, "follow", false, "at the end of the file, wait for more lines (like tail -f) instead of finishing")
	flag.StringVar(&cfg.url, "url", nats.DefaultURL, "NATS server URL(s), comma separated")
	flag.StringVar(&cfg.stream, "stream", "LOGS", "JetStream stream (created if missing)")
	flag.StringVar(&cfg.subject, "subject", "logs.lines", "subject to publish to (must belong to -stream)")
	flag.BoolVar(&cfg.dedup, "dedup", true, "set Nats-Msg-Id to <spool name>.<pelichan MsgID>, so the stream drops copies delivered again")
	flag.DurationVar(&cfg.dupWindow, "dup-window", 10*time.Minute, "duplicate window of the stream when it is created")
	flag.IntVar(&cfg.maxUnacked, "max-unacked", 512, "deliveries (= async publishes) in flight")
	flag.DurationVar(&cfg.pubTimeout, "pub-timeout", 5*time.Second, "time to wait for a publish acknowledgement before retrying")
	flag.DurationVar(&cfg.grace, "grace", 3*time.Second, "on SIGTERM, time given to in-flight publishes before the spool is closed")
	flag.DurationVar(&cfg.checkpoint, "checkpoint", 100*time.Millisecond, "longest time between input offset checkpoints")
	flag.IntVar(&cfg.checkpointLines, "checkpoint-lines", 1000, "lines between input offset checkpoints")
	flag.Float64Var(&cfg.rate, "rate", 0, "read at most this many lines per second (0: no limit; for demos and tests)")
	flag.DurationVar(&cfg.statsEvery, "stats", 10*time.Second, "log spool and shipping statistics this often (0: never)")
	flag.Parse()

	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("natsship: ")
	if cfg.spool == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if cfg.offsetFile == "" {
		cfg.offsetFile = filepath.Clean(cfg.spool) + ".offset"
	}
	if cfg.maxUnacked < 1 || cfg.checkpointLines < 1 || cfg.checkpoint <= 0 {
		log.Fatal("-max-unacked, -checkpoint-lines and -checkpoint must be positive")
	}

	// The first SIGTERM/SIGINT starts a graceful shutdown, a second one
	// exits at once (what is in the spool survives either way).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		s := <-sigs
		log.Printf("%v: stopping", s)
		stop()
		s = <-sigs
		log.Printf("%v again: exiting now", s)
		os.Exit(1)
	}()

	if err := run(ctx, cfg); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	in, start, err := openInput(cfg)
	if err != nil {
		return err
	}
	defer in.Close()

	// MsgIDs are unique within one spool directory only: another spool (on
	// another host, or this one after the spool was deleted) numbers its
	// messages the same way. Nats-Msg-Id is therefore the spool's own random
	// name followed by the MsgID.
	name, err := spoolName(cfg.spool)
	if err != nil {
		return err
	}

	src := make(chan string) // unbuffered: a send that returned was received by the Chan
	c, err := pelichan.New(cfg.spool, src, pelichan.String,
		pelichan.WithWriteAhead(),
		pelichan.WithAcks(cfg.maxUnacked),
		pelichan.WithErrorHandler(func(err error) { log.Printf("spool: %v", err) }),
	)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	if st := c.Stats(); st.OnDisk > 0 {
		log.Printf("spool %s: %d messages from an earlier run", cfg.spool, st.OnDisk)
	}

	nc, err := nats.Connect(cfg.url,
		nats.Name("natsship"),
		nats.RetryOnFailedConnect(true), // start (and spool) while the server is down
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// No reconnect buffer: a publish while disconnected fails at once and
		// is retried by us, instead of piling up copies to send on reconnect.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Printf("nats: disconnected: %v", err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { logErr("nats: %v", err) }),
	)
	if err != nil {
		c.Close()
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.maxUnacked),
		jetstream.WithPublishAsyncTimeout(cfg.pubTimeout),
	)
	if err != nil {
		c.Close()
		return err
	}

	s := &shipper{cfg: cfg, c: c, js: js, name: name}
	s.reconnected = make(chan struct{})
	nc.SetReconnectHandler(func(nc *nats.Conn) {
		log.Printf("nats: reconnected to %s", nc.ConnectedUrl())
		s.mu.Lock()
		close(s.reconnected) // wake the retries
		s.reconnected = make(chan struct{})
		s.mu.Unlock()
	})
	s.hard, s.abandon = context.WithCancel(context.Background())
	defer s.abandon()

	fctx, stopFeed := context.WithCancel(ctx)
	defer stopFeed()
	feedDone := make(chan error, 1)
	go func() { feedDone <- feed(fctx, cfg, c, src, in, start) }()

	dctx, stopDispatch := context.WithCancel(ctx)
	defer stopDispatch()
	dispatched := make(chan struct{}) // dispatch returned
	var drained bool                  // it returned because Deliveries closed: everything is acknowledged
	go func() {
		drained = s.dispatch(dctx)
		close(dispatched)
	}()
	if cfg.statsEvery > 0 {
		go s.logStats(dctx, cfg.statsEvery)
	}

	// Run until a signal, an input error, or (at EOF) until Deliveries
	// closes because every line was acknowledged.
	var feedErr error
	fed := false
wait:
	for {
		select {
		case feedErr = <-feedDone:
			fed = true
			if feedErr != nil {
				break wait
			}
			feedDone = nil // EOF: src is closed; wait until Deliveries closes
		case <-dispatched:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if !fed {
		stopFeed()
		feedErr = <-feedDone // returns soon: it stops with fctx
	}
	stopDispatch()
	<-dispatched
	if !drained {
		// Stopping early: take no new deliveries, let the publishes already
		// sent get their acknowledgement for up to -grace, then give up on
		// the rest. They stay unacknowledged, and Close keeps them.
		if !waitTimeout(&s.inflight, cfg.grace) {
			log.Printf("grace period over: leaving the unacknowledged publishes in the spool")
		}
	}
	s.abandon()
	s.inflight.Wait()
	if err := c.Close(); err != nil {
		log.Printf("close spool: %v", err)
	}
	st := c.Stats()
	log.Printf("done: shipped %d (stream reported %d duplicates), publish retries %d; spool: received %d, redelivered %d, unacked %d, on disk %d",
		s.shipped.Load(), s.dups.Load(), s.retries.Load(), st.Received, st.Redelivered, st.Unacked, st.OnDisk)
	return feedErr
}

// ---- input ----------------------------------------------------------------

type offsetRecord struct {
	File   string `json:"file"`
	Offset int64  `json:"offset"`
}

// openInput opens the input and seeks to the recorded offset.
func openInput(cfg config) (io.ReadCloser, int64, error) {
	if cfg.file == "-" || cfg.file == "" {
		log.Printf("reading stdin (not resumable: no offset file)")
		return io.NopCloser(os.Stdin), 0, nil
	}
	abs, err := filepath.Abs(cfg.file)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, 0, err
	}
	var rec offsetRecord
	b, err := os.ReadFile(cfg.offsetFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		f.Close()
		return nil, 0, err
	default:
		if err := json.Unmarshal(b, &rec); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("%s: %w", cfg.offsetFile, err)
		}
		if rec.File != abs {
			f.Close()
			return nil, 0, fmt.Errorf("%s records the offset of %s, not %s: use another -spool", cfg.offsetFile, rec.File, abs)
		}
	}
	if fi, err := f.Stat(); err == nil && fi.Size() < rec.Offset {
		log.Printf("%s is shorter (%d bytes) than the recorded offset %d: truncated? reading from the start", abs, fi.Size(), rec.Offset)
		rec.Offset = 0
	}
	if _, err := f.Seek(rec.Offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, err
	}
	log.Printf("reading %s from offset %d", abs, rec.Offset)
	return f, rec.Offset, nil
}

// spoolName returns the random name of the spool directory, kept in
// <spool>.id. A spool that is new (missing or empty) gets a new name, also
// when an old id file is still there: its MsgIDs start again from the
// beginning, and the stream must not take them for the old spool's.
func spoolName(spool string) (string, error) {
	idFile := filepath.Clean(spool) + ".id"
	if err := os.MkdirAll(filepath.Dir(idFile), 0o755); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(spool)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if len(ents) > 0 {
		b, err := os.ReadFile(idFile)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b)), nil
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		log.Printf("%s is missing: the spool gets a new name, and messages it delivers again may be stored twice", idFile)
	}
	var r [10]byte
	if _, err := crand.Read(r[:]); err != nil {
		return "", err
	}
	name := strings.ToLower(base32.StdEncoding.EncodeToString(r[:]))
	if err := writeFileDurably(idFile, []byte(name+"\n")); err != nil {
		return "", err
	}
	log.Printf("new spool %s: name %s", spool, name)
	return name, nil
}

// writeOffset replaces the offset file atomically and durably.
func writeOffset(path, file string, off int64) error {
	b, _ := json.Marshal(offsetRecord{File: file, Offset: off})
	return writeFileDurably(path, append(b, '\n'))
}

// writeFileDurably replaces the file at path with data: written to a
// temporary file, fsynced, renamed over path, and the directory fsynced.
func writeFileDurably(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type line struct {
	text string
	end  int64 // input offset just after this line
}

// readLines sends the lines of r to out, starting at input offset start, and
// closes out at the end. With follow it waits for more at EOF (a line is sent
// once its newline arrived); otherwise a last line without a newline is sent
// too. It returns io.EOF at the end of the input, or the error that ended it.
func readLines(ctx context.Context, r io.Reader, start int64, follow bool, out chan<- line) error {
	defer close(out)
	br := bufio.NewReaderSize(r, 64<<10)
	off := start
	var partial []byte // bytes of a line not complete yet
	send := func(text string, n int) bool {
		off += int64(n)
		select {
		case out <- line{text, off}:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		b, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			n := len(partial) + len(b)
			partial = append(partial, b[:len(b)-1]...)
			if !send(string(partial), n) {
				return ctx.Err()
			}
			partial = partial[:0]
			continue
		case errors.Is(err, bufio.ErrBufferFull):
			partial = append(partial, b...)
			continue
		case err != io.EOF:
			return err
		}
		partial = append(partial, b...)
		if !follow {
			if len(partial) > 0 && !send(string(partial), len(partial)) {
				return ctx.Err()
			}
			return io.EOF
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// feed hands lines to src (one at a time: src is unbuffered, so a send that
// returned was received by the Chan) and checkpoints the input offset: every
// checkpoint-lines lines or checkpoint interval it calls c.Sync, which makes
// everything received from src before the call durable, and only then records
// the offset just after the last line handed over. At EOF (without -follow)
// it checkpoints and closes src. When ctx ends it stops reading, checkpoints
// and returns.
func feed(ctx context.Context, cfg config, c *pelichan.Chan[string], src chan<- string, in io.Reader, start int64) error {
	resumable := cfg.file != "-" && cfg.file != ""
	abs, _ := filepath.Abs(cfg.file)
	lines := make(chan line, 256)
	readErr := make(chan error, 1)
	go func() { readErr <- readLines(ctx, in, start, cfg.follow, lines) }()

	handed, saved := start, start
	sinceSave := 0
	checkpoint := func() error {
		if !resumable || handed == saved {
			return nil
		}
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Sync(sctx); err != nil {
			return fmt.Errorf("sync spool: %w", err)
		}
		if err := writeOffset(cfg.offsetFile, abs, handed); err != nil {
			return fmt.Errorf("write offset: %w", err)
		}
		saved, sinceSave = handed, 0
		return nil
	}
	tick := time.NewTicker(cfg.checkpoint)
	defer tick.Stop()

	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	next := time.Now()

	for {
		select {
		case ln, ok := <-lines:
			if !ok {
				if err := <-readErr; !errors.Is(err, io.EOF) {
					cerr := checkpoint()
					if ctx.Err() != nil {
						return cerr
					}
					return fmt.Errorf("read input: %w", err)
				}
				if err := checkpoint(); err != nil {
					return err
				}
				log.Printf("end of input at offset %d; waiting until everything is acknowledged", handed)
				close(src)
				return nil
			}
			if interval > 0 {
				if now := time.Now(); next.Before(now.Add(-time.Second)) {
					next = now // do not burst to catch up after a stall
				}
				if d := time.Until(next); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return checkpoint()
					}
				}
				next = next.Add(interval)
			}
			select {
			case src <- ln.text:
				handed = ln.end
				sinceSave++
			case <-ctx.Done():
				return checkpoint()
			}
			if sinceSave >= cfg.checkpointLines {
				if err := checkpoint(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if err := checkpoint(); err != nil {
				return err
			}
		case <-ctx.Done():
			return checkpoint()
		}
	}
}

// ---- output ---------------------------------------------------------------

type shipper struct {
	cfg  config
	c    *pelichan.Chan[string]
	js   jetstream.JetStream
	name string // of the spool: prefix of Nats-Msg-Id

	hard    context.Context // canceled: give up retrying (shutdown)
	abandon context.CancelFunc

	inflight sync.WaitGroup

	mu          sync.Mutex
	reconnected chan struct{} // closed (and replaced) on each reconnect

	shipped, dups, retries, zeroIDs atomic.Int64
}

// dispatch publishes every delivery in its own goroutine (at most
// max-unacked are in flight: the Chan delivers no more until some are
// acknowledged). It returns true when Deliveries is closed, false when ctx
// is done.
func (s *shipper) dispatch(ctx context.Context) bool {
	s.ensureStream(ctx)
	dl := s.c.Deliveries()
	for {
		select {
		case d, ok := <-dl:
			if !ok {
				return true
			}
			s.inflight.Add(1)
			go s.ship(d)
		case <-ctx.Done():
			return false
		}
	}
}

// ensureStream creates the stream if it does not exist, retrying while the
// server is unreachable.
func (s *shipper) ensureStream(ctx context.Context) {
	bo := newBackoff()
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := s.js.Stream(rctx, s.cfg.stream)
		if err == nil {
			log.Printf("stream %s: duplicate window %v", s.cfg.stream, st.CachedInfo().Config.Duplicates)
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = s.js.CreateStream(rctx, jetstream.StreamConfig{
				Name:       s.cfg.stream,
				Subjects:   []string{s.cfg.subject},
				Storage:    jetstream.FileStorage,
				Duplicates: s.cfg.dupWindow,
			})
			if err == nil {
				log.Printf("created stream %s (subject %s, duplicate window %v)", s.cfg.stream, s.cfg.subject, s.cfg.dupWindow)
			}
		}
		cancel()
		if err == nil {
			return
		}
		logErr("stream %s: %v", s.cfg.stream, err)
		bo.wait(ctx, s.reconnectedCh())
	}
}

func (s *shipper) reconnectedCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnected
}

// ship publishes one delivery until JetStream acknowledges it, then acks it
// in the Chan. It never drops a message: on failure it retries with backoff
// until the shipper gives up at shutdown, leaving the delivery unacknowledged
// (the Chan keeps it and delivers it again after a restart).
func (s *shipper) ship(d pelichan.Delivery[string]) {
	defer s.inflight.Done()
	m := &nats.Msg{Subject: s.cfg.subject, Data: []byte(d.Msg), Header: nats.Header{}}
	if s.cfg.dedup {
		if d.ID.IsZero() {
			// Write-ahead mode gives every message an id; tell if not.
			if s.zeroIDs.Add(1) == 1 {
				log.Printf("warning: delivery %d has no message id; publishing it without Nats-Msg-Id", d.Seq)
			}
		} else {
			m.Header.Set(jetstream.MsgIDHeader, s.name+"."+d.ID.String())
		}
	}
	bo := newBackoff()
	for {
		paf, err := s.js.PublishMsgAsync(m)
		if err == nil {
			select {
			case ack := <-paf.Ok():
				if ack.Duplicate {
					s.dups.Add(1)
				}
				s.shipped.Add(1)
				if err := s.c.Ack(d.Seq); err != nil {
					log.Printf("ack %d: %v", d.Seq, err)
				}
				return
			case err = <-paf.Err():
			case <-s.hard.Done():
				return
			}
		}
		s.retries.Add(1)
		logErr("publish: %v (retrying)", err)
		if !bo.wait(s.hard, s.reconnectedCh()) {
			return
		}
	}
}

var lastErrLog atomic.Int64

// logErr logs at most one error a second: during an outage every publish
// fails.
func logErr(format string, args ...any) {
	now := time.Now().UnixNano()
	last := lastErrLog.Load()
	if now-last < int64(time.Second) || !lastErrLog.CompareAndSwap(last, now) {
		return
	}
	log.Printf(format, args...)
}

func (s *shipper) logStats(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			st := s.c.Stats()
			log.Printf("stats: received %d, shipped %d (duplicates %d), retries %d, unacked %d, on disk %d",
				st.Received, s.shipped.Load(), s.dups.Load(), s.retries.Load(), st.Unacked, st.OnDisk)
		case <-ctx.Done():
			return
		}
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

// wait sleeps for the current delay (with jitter) and doubles it, up to 2 s,
// or until wake is closed (the connection is back). It returns false if ctx
// ended first.
func (b *backoff) wait(ctx context.Context, wake <-chan struct{}) bool {
	d := b.d/2 + rand.N(b.d)
	b.d = min(2*b.d, 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
