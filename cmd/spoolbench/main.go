// Command spoolbench answers "can my disk keep up with my stream?". It pushes generated log
// lines through a pelichan Chan whose consumer is stalled for an outage, restarts the Chan
// gracefully, lets the consumer drain the backlog while new lines keep arriving, and
// reports store and refill throughput, bytes on disk, compression and peak memory. It fails
// (exit 1) if any message was lost or delivered twice.
//
// With no flags it runs 1M lines of 100-300 bytes through a temporary spool.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pelichan/pelichan"
	"github.com/pelichan/pelichan/internal/loggen"
)

type config struct {
	dir      string
	n        int
	size     int
	rate     int
	outage   time.Duration
	syncMode string
	duration time.Duration
	restart  bool
	json     bool
	buffer   int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var cfg config
	fs := flag.NewFlagSet("spoolbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.dir, "dir", "", "spool directory on the disk to test (default: a temporary directory, removed afterwards)")
	fs.IntVar(&cfg.n, "n", 1_000_000, "messages to send (ignored with -duration)")
	fs.IntVar(&cfg.size, "size", 0, "message size in bytes (0: generated log lines of 100-300 bytes)")
	fs.IntVar(&cfg.rate, "rate", 0, "messages per second the producer sends (0: as fast as possible)")
	fs.DurationVar(&cfg.outage, "outage", 0, "how long the consumer is stalled (0: until half the messages are sent)")
	fs.StringVar(&cfg.syncMode, "sync", "every=1s", "sync policy: never, always, or every=DURATION")
	fs.DurationVar(&cfg.duration, "duration", 0, "send for this long instead of -n messages (needs -rate)")
	fs.BoolVar(&cfg.restart, "restart", true, "restart the Chan (Close, New) when the outage ends")
	fs.BoolVar(&cfg.json, "json", false, "print the summary as JSON")
	fs.IntVar(&cfg.buffer, "buffer", 1024, "capacity of the Out channel")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: spoolbench [flags]\n\nSimulates an outage of a log receiver and measures whether this disk keeps up.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || cfg.n <= 0 || cfg.size < 0 || cfg.rate < 0 || (cfg.duration > 0 && cfg.rate == 0) {
		fmt.Fprintln(stderr, "spoolbench: bad arguments (see -h)")
		return 2
	}
	if cfg.duration > 0 {
		cfg.n = int(cfg.duration.Seconds() * float64(cfg.rate))
	}
	policy, err := parseSync(cfg.syncMode)
	if err != nil {
		fmt.Fprintln(stderr, "spoolbench:", err)
		return 2
	}
	res, err := bench(cfg, policy, progressWriter(stdout, cfg.json))
	if err != nil {
		fmt.Fprintln(stderr, "spoolbench:", err)
		return 1
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		res.print(stdout)
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.Foreign != 0 {
		fmt.Fprintf(stderr, "spoolbench: FAILED: %d lost, %d duplicated, %d unknown messages\n", res.Lost, res.Duplicated, res.Foreign)
		return 1
	}
	return 0
}

func parseSync(s string) (pelichan.SyncPolicy, error) {
	switch {
	case s == "never":
		return pelichan.SyncNever, nil
	case s == "always":
		return pelichan.SyncAlways, nil
	case strings.HasPrefix(s, "every="):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "every="))
		if err != nil || d <= 0 {
			return pelichan.SyncPolicy{}, fmt.Errorf("bad -sync %q: want every=DURATION", s)
		}
		return pelichan.SyncEvery(d), nil
	}
	return pelichan.SyncPolicy{}, fmt.Errorf("bad -sync %q: want never, always or every=DURATION", s)
}

// progressWriter returns where the live progress line goes: stdout when it is a terminal
// and the summary is for people, nowhere otherwise.
func progressWriter(stdout io.Writer, jsonOut bool) io.Writer {
	f, ok := stdout.(*os.File)
	if jsonOut || !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return f
}

// Result is the summary; its JSON form is what -json prints.
type Result struct {
	Messages     int     `json:"messages"`
	PayloadBytes int64   `json:"payload_bytes"`
	AvgSize      float64 `json:"avg_message_bytes"`
	Sync         string  `json:"sync"`
	Rate         int     `json:"rate,omitempty"`

	OutageMsgs     int64   `json:"outage_messages"`
	OutageSeconds  float64 `json:"outage_seconds"`
	StoreRate      float64 `json:"store_msgs_per_s"`
	StoreMBps      float64 `json:"store_mb_per_s"`
	CloseMillis    float64 `json:"close_ms"`
	OpenMillis     float64 `json:"open_ms"`
	FirstMsgMillis float64 `json:"first_message_ms"`

	BacklogMsgs     int64   `json:"backlog_messages"`
	DrainSeconds    float64 `json:"drain_seconds"`
	RefillRate      float64 `json:"refill_msgs_per_s"`
	NewWhileDrain   int64   `json:"new_messages_while_draining"`
	NewRate         float64 `json:"new_msgs_per_s_while_draining"`
	TotalSeconds    float64 `json:"total_seconds"`
	PeakDiskBytes   int64   `json:"peak_disk_bytes"`
	DiskPerPayload  float64 `json:"disk_bytes_per_payload_byte"`
	Compression     float64 `json:"compression_ratio"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	Delivered       int64   `json:"delivered"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	Foreign         int64   `json:"unknown"`
	Errors          int64   `json:"errors"`
	KeepsUp         bool    `json:"disk_keeps_up"`
	SpilledMessages int64   `json:"spilled_messages"`
	DirectMessages  int64   `json:"direct_messages"`
}

// checker records delivered ids: no loss, no duplicate.
type checker struct {
	seen    []uint32 // bitmap
	dup     atomic.Int64
	foreign atomic.Int64
	count   atomic.Int64
}

func newChecker(n int) *checker { return &checker{seen: make([]uint32, (n+31)/32)} }

func (c *checker) add(line []byte) {
	c.count.Add(1)
	id, ok := loggen.ID(line)
	if !ok || id >= uint64(len(c.seen))*32 {
		c.foreign.Add(1)
		return
	}
	w, bit := &c.seen[id/32], uint32(1)<<(id%32)
	for {
		old := atomic.LoadUint32(w)
		if old&bit != 0 {
			c.dup.Add(1)
			return
		}
		if atomic.CompareAndSwapUint32(w, old, old|bit) {
			return
		}
	}
}

// line makes message id: a generated log line, padded or cut to size if size > 0.
func line(g *loggen.Gen, id uint64, size int) []byte {
	b := g.Append(make([]byte, 0, max(size, 320)), id)
	if size > 0 {
		for len(b) < size {
			b = append(b, " pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"...)
		}
		if len(b) > size {
			b = b[:size]
		}
	}
	return b
}

func bench(cfg config, policy pelichan.SyncPolicy, progress io.Writer) (*Result, error) {
	dir := cfg.dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "spoolbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	res := &Result{Messages: cfg.n, Sync: policy.String(), Rate: cfg.rate}
	var errCount atomic.Int64
	opts := []pelichan.Option{
		pelichan.WithSync(policy),
		pelichan.WithBuffer(cfg.buffer),
		pelichan.WithErrorHandler(func(err error) {
			if errCount.Add(1) <= 5 {
				fmt.Fprintln(os.Stderr, "spoolbench: error:", err)
			}
		}),
	}
	src := make(chan []byte, 256)
	c, err := pelichan.New(dir, src, pelichan.Bytes, opts...)
	if err != nil {
		return nil, err
	}
	var (
		chk      = newChecker(cfg.n)
		cur      atomic.Pointer[pelichan.Chan[[]byte]]
		sent     atomic.Int64
		payload  atomic.Int64
		half     = make(chan struct{}) // the producer sent the outage's share
		resume   = make(chan struct{}) // the consumer may start
		prodDone = make(chan struct{})
		peakDisk atomic.Int64
	)
	cur.Store(c)

	// Producer: one goroutine, at -rate or flat out; the src channel outlives restarts.
	start := time.Now()
	go func() {
		defer close(prodDone)
		g := loggen.New(1)
		var tick time.Duration
		if cfg.rate > 0 {
			tick = time.Second / time.Duration(cfg.rate)
		}
		for i := 0; i < cfg.n; i++ {
			if tick > 0 {
				if d := time.Until(start.Add(time.Duration(i) * tick)); d > 0 {
					time.Sleep(d)
				}
			}
			b := line(g, uint64(i), cfg.size)
			payload.Add(int64(len(b)))
			src <- b
			sent.Add(1)
			if i == cfg.n/2-1 && cfg.outage == 0 {
				close(half)
				<-resume // the outage's share is sent: wait for the restart
			}
		}
		close(src)
	}()
	if cfg.outage > 0 {
		go func() { time.Sleep(cfg.outage); close(half) }()
	}

	// Monitor: peak disk and a live progress line.
	stopMon := make(chan struct{})
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() {
		defer monWG.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		last := time.Now()
		var lastWritten int64
		for {
			select {
			case <-stopMon:
				if progress != nil {
					fmt.Fprint(progress, "\r\033[K")
				}
				return
			case now := <-t.C:
				st := cur.Load().Stats()
				if st.DiskBytes > peakDisk.Load() {
					peakDisk.Store(st.DiskBytes)
				}
				if progress != nil && now.Sub(last) >= 500*time.Millisecond {
					mbps := float64(st.BytesWritten-lastWritten) / now.Sub(last).Seconds() / 1e6
					if mbps < 0 {
						mbps = 0
					}
					fmt.Fprintf(progress, "\r\033[Ksent %d  delivered %d  on disk %d  written %.1f MB/s  rss %.1f MiB",
						sent.Load(), chk.count.Load(), st.OnDisk, mbps, float64(peakRSS())/(1<<20))
					last, lastWritten = now, st.BytesWritten
				}
			}
		}
	}()

	// Consumer: stalled until resume, then drains whichever Chan is current.
	consDone := make(chan struct{})
	var firstMsg atomic.Int64 // unix nanos of the first message after resume
	go func() {
		defer close(consDone)
		<-resume
		for {
			ch := cur.Load()
			for m := range ch.Out() {
				if firstMsg.Load() == 0 {
					firstMsg.Store(time.Now().UnixNano())
				}
				chk.add(m)
			}
			if cur.Load() == ch { // Out closed because src closed and all was delivered
				return
			}
		}
	}()

	// Outage: wait for the producer's share, then until all of it is stored.
	<-half
	outageMsgs := sent.Load()
	for cfg.outage == 0 { // the producer is paused: wait until its share is all stored
		st := c.Stats()
		if st.Received >= outageMsgs && st.InMemory == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if cfg.outage > 0 { // the producer goes on: count what was stored by now
		st := c.Stats()
		outageMsgs = st.Direct + st.Spilled
	}
	res.OutageSeconds = time.Since(start).Seconds()
	res.OutageMsgs = outageMsgs
	res.StoreRate = float64(outageMsgs) / res.OutageSeconds
	res.StoreMBps = float64(payload.Load()) / res.OutageSeconds / 1e6

	var bytesWritten, rawWritten int64 // by the Chan before the restart
	if cfg.restart {
		t0 := time.Now()
		st := c.Stats()
		res.SpilledMessages += st.Spilled
		res.DirectMessages += st.Direct
		if err := c.Close(); err != nil {
			return nil, fmt.Errorf("close: %w", err)
		}
		st = c.Stats()
		bytesWritten, rawWritten = st.BytesWritten, st.RawBytesWritten
		res.CloseMillis = ms(time.Since(t0))
		t1 := time.Now()
		c, err = pelichan.New(dir, src, pelichan.Bytes, opts...)
		if err != nil {
			return nil, fmt.Errorf("reopen: %w", err)
		}
		res.OpenMillis = ms(time.Since(t1))
		cur.Store(c)
		// Time to the first message: measured by a direct receive before the consumer runs.
		m, ok := <-c.Out()
		res.FirstMsgMillis = ms(time.Since(t1))
		if ok {
			chk.add(m)
		}
	}
	backlog := c.Stats().OnDisk
	res.BacklogMsgs = backlog
	drainStart := time.Now()
	sentAtDrain := sent.Load()
	close(resume)
	// Drained: the backlog found at the start of the drain is gone.
	for {
		st := c.Stats()
		if st.Refilled >= backlog || st.OnDisk == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	res.DrainSeconds = time.Since(drainStart).Seconds()
	res.RefillRate = float64(backlog) / res.DrainSeconds
	res.NewWhileDrain = sent.Load() - sentAtDrain
	res.NewRate = float64(res.NewWhileDrain) / res.DrainSeconds

	<-prodDone
	<-consDone
	res.TotalSeconds = time.Since(start).Seconds()
	st := c.Stats()
	res.SpilledMessages += st.Spilled
	res.DirectMessages += st.Direct
	written, raw := st.BytesWritten+bytesWritten, st.RawBytesWritten+rawWritten
	// Over both sessions: the second may write nothing (a consumer keeping up).
	if written > 0 {
		res.Compression = float64(raw) / float64(written)
	}
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("close: %w", err)
	}
	close(stopMon)
	monWG.Wait()

	res.PayloadBytes = payload.Load()
	res.AvgSize = float64(res.PayloadBytes) / float64(cfg.n)
	res.PeakDiskBytes = peakDisk.Load()
	if raw > 0 {
		// Record bytes written per payload byte (raw counts a 4-byte length per message).
		res.DiskPerPayload = float64(written) / float64(raw-4*res.SpilledMessages)
	}
	res.PeakRSSBytes = peakRSS()
	res.Delivered = chk.count.Load()
	res.Duplicated = chk.dup.Load()
	res.Foreign = chk.foreign.Load()
	res.Lost = int64(cfg.n) - (res.Delivered - res.Duplicated - res.Foreign)
	res.Errors = errCount.Load()
	res.KeepsUp = cfg.rate == 0 || res.StoreRate >= float64(cfg.rate)*0.95
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// peakRSS reads the process's peak resident set size (VmHWM) from /proc.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.Sys)
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if f := strings.Fields(string(l)); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func (r *Result) print(w io.Writer) {
	verdict := "OK"
	if r.Lost != 0 || r.Duplicated != 0 || r.Foreign != 0 {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "pelichan spoolbench: %d messages, %.0f bytes on average, sync %s\n", r.Messages, r.AvgSize, r.Sync)
	fmt.Fprintf(w, "outage   : %d messages stored in %.2fs with the consumer stalled: %s msgs/s, %.0f MB/s\n",
		r.OutageMsgs, r.OutageSeconds, human(r.StoreRate), r.StoreMBps)
	if r.OpenMillis > 0 {
		fmt.Fprintf(w, "restart  : close %.1f ms, open %.1f ms, first message %.1f ms after open\n",
			r.CloseMillis, r.OpenMillis, r.FirstMsgMillis)
	}
	fmt.Fprintf(w, "recovery : backlog of %d drained in %.2fs (%s msgs/s) while %d new arrived (%s msgs/s)\n",
		r.BacklogMsgs, r.DrainSeconds, human(r.RefillRate), r.NewWhileDrain, human(r.NewRate))
	fmt.Fprintf(w, "disk     : %.3f bytes written per payload byte spilled (compression %.1fx), peak spool %.1f MB\n",
		r.DiskPerPayload, r.Compression, float64(r.PeakDiskBytes)/1e6)
	fmt.Fprintf(w, "memory   : peak RSS %.1f MiB\n", float64(r.PeakRSSBytes)/(1<<20))
	fmt.Fprintf(w, "check    : %d delivered, %d lost, %d duplicated, %d errors: %s\n",
		r.Delivered, r.Lost, r.Duplicated, r.Errors, verdict)
	if r.Rate > 0 {
		answer := "yes"
		if !r.KeepsUp {
			answer = "NO: it stored fewer messages per second than arrived"
		}
		fmt.Fprintf(w, "keeps up : at %d msgs/s: %s\n", r.Rate, answer)
	}
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}
