// Command bench compares pelichan with other Go disk queues on the same workload: log
// lines of 100-300 bytes, generated deterministically. Each system runs in a fresh child
// process per run (so peak RSS is its own), the systems are interleaved, and the parent
// prints markdown tables of medians, min-max and ratios to pelichan. See README.md.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

type config struct {
	n          int
	runs       int
	quick      bool
	dir        string
	sysList    string
	viewList   string
	userBuffer int
	seed       uint64
	nSync1     int
	nDque      int
	dqueSeg    int
	buffer     int
	srcBuffer  int
	linger     time.Duration
	timeout    time.Duration
	quietWait  time.Duration
	stall      time.Duration
	cpuprofile string
	trace      string
	profSys    string
	profileSys map[string]bool
	jsonOut    string
	phaseList  string
	readReopen bool
	phases     map[string]bool

	// child only
	child bool
	sys   string
	run   int
	view  string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.n, "n", 1_000_000, "messages in the store and read phases; the restart phase stores n/2, restarts, then stores n more while draining")
	fs.IntVar(&cfg.runs, "runs", 3, "runs of each system (each in a fresh process)")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke test: -n 100000 -runs 1 -nsync1 1000 -quiet-wait 0 unless those are set")
	fs.StringVar(&cfg.dir, "dir", "", "directory for the queues' temporary directories (default: os.TempDir())")
	fs.StringVar(&cfg.sysList, "systems", "all", "comma-separated systems to run (in each view that has them): "+strings.Join(order[viewBench], ","))
	fs.StringVar(&cfg.viewList, "views", "bench,user", "comma-separated views to run: bench (-buffer, consumer only checks) and user (-user-buffer, producer copies, consumer parses and hashes)")
	fs.IntVar(&cfg.userBuffer, "user-buffer", 100, "pelichan: capacity of Out (WithBuffer) in the user view")
	fs.Uint64Var(&cfg.seed, "seed", 1, "workload seed")
	fs.IntVar(&cfg.nSync1, "nsync1", 10_000, "messages for diskqueue-sync1 (an fsync per message is slow)")
	fs.IntVar(&cfg.nDque, "n-dque", 0, "messages for dque, which is 10-50x slower than the others (0: n/4)")
	fs.IntVar(&cfg.dqueSeg, "dque-seg", 1000, "dque items per segment file")
	fs.IntVar(&cfg.buffer, "buffer", 1024, "pelichan: capacity of Out (WithBuffer)")
	fs.IntVar(&cfg.srcBuffer, "srcbuf", 1024, "pelichan: capacity of the src channel the producer sends on")
	fs.DurationVar(&cfg.linger, "linger", 10*time.Millisecond, "pelichan: WithLinger; the store phase ends up to this long after the last message, when the last partial batch is written")
	fs.DurationVar(&cfg.quietWait, "quiet-wait", 10*time.Second, "before each run, wait up to this long for other processes to use less than 0.25 CPUs (0: do not wait; -quick: 0 unless set)")
	fs.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "kill a child that runs longer than this")
	fs.DurationVar(&cfg.stall, "stall", 10*time.Second, "a child that stores and reads nothing for this long prints its goroutines and fails")
	fs.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write CPU profiles per phase to PREFIX.SYSTEM.PHASE.pprof (the last run's)")
	fs.StringVar(&cfg.trace, "trace", "", "write execution traces (runtime/trace) per phase to PREFIX.SYSTEM.PHASE.trace (the last run's)")
	fs.StringVar(&cfg.profSys, "profile-systems", "pelichan", "comma-separated systems -cpuprofile and -trace apply to")
	fs.StringVar(&cfg.jsonOut, "json", "", "also write every child's raw result to this file (JSON lines)")
	fs.StringVar(&cfg.phaseList, "phases", "store,restart,live", "phases to run: store (store, then read back), restart, live (producer and consumer at once)")
	fs.BoolVar(&cfg.readReopen, "read-reopen", false, "close and reopen each queue between the store and read phases (untimed), instead of reading from the same open queue")
	fs.BoolVar(&cfg.child, "child", false, "internal: run one system in this process")
	fs.StringVar(&cfg.sys, "sys", "", "internal: the system a -child runs")
	fs.IntVar(&cfg.run, "run", 0, "internal: the run number of a -child")
	fs.StringVar(&cfg.view, "view", viewBench, "internal: the view a -child runs in")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.quick {
		if !set["n"] {
			cfg.n = 100_000
		}
		if !set["runs"] {
			cfg.runs = 1
		}
		if !set["nsync1"] {
			cfg.nSync1 = 1_000
		}
		if !set["quiet-wait"] {
			cfg.quietWait = 0
		}
	}
	if cfg.nDque == 0 {
		cfg.nDque = cfg.n / 4
	}
	if fs.NArg() > 0 || cfg.n < 2 || cfg.nDque < 2 || cfg.runs < 1 || cfg.nSync1 < 1 || cfg.dqueSeg < 1 || cfg.buffer < 0 || cfg.srcBuffer < 0 || cfg.userBuffer < 0 {
		fmt.Fprintln(stderr, "bench: bad arguments (see -h)")
		return 2
	}
	cfg.phases = map[string]bool{}
	for _, p := range strings.Split(cfg.phaseList, ",") {
		p = strings.TrimSpace(p)
		if p != "store" && p != "restart" && p != "live" {
			fmt.Fprintf(stderr, "bench: unknown phase %q (want store, restart, live)\n", p)
			return 2
		}
		cfg.phases[p] = true
	}
	cfg.profileSys = map[string]bool{}
	for _, s := range strings.Split(cfg.profSys, ",") {
		cfg.profileSys[strings.TrimSpace(s)] = true
	}
	if cfg.child {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		switch cfg.view {
		case viewBench:
		case viewUser:
			cfg.buffer = cfg.userBuffer
		default:
			fmt.Fprintf(stderr, "bench: unknown view %q\n", cfg.view)
			return 2
		}
		return runChild(cfg)
	}
	if cfg.dir == "" {
		cfg.dir = os.TempDir()
	}
	rows, err := lookupRows(cfg.viewList, cfg.sysList)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	return runParent(cfg, rows, args, stdout, stderr)
}

// runParent runs every (system, run) in a child, interleaved, and prints the tables.
func runParent(cfg *config, rows []row, args []string, stdout, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	var jsonl io.Writer
	if cfg.jsonOut != "" {
		f, err := os.Create(cfg.jsonOut)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer f.Close()
		jsonl = f
	}
	start := time.Now()
	var results []*result
	failed := 0
	for r := range cfg.runs {
		for k := range rows {
			rw := rows[(k+r)%len(rows)] // rotate the order so no system always goes first
			waitQuiet(cfg.quietWait, stderr)
			res := runOne(cfg, exe, rw, r+1, stderr)
			results = append(results, res)
			if jsonl != nil {
				json.NewEncoder(jsonl).Encode(res)
			}
			fmt.Fprintf(stderr, "run %d/%d %-28s %s\n", r+1, cfg.runs, rw.key(), summary(res))
			if res.failed() {
				failed++
				for _, e := range res.Errs {
					fmt.Fprintf(stderr, "    FAILED: %s\n", e)
				}
			}
			for _, n := range res.Notes {
				fmt.Fprintf(stderr, "    note: %s\n", n)
			}
		}
	}
	cmd := "go run ."
	if len(args) > 0 {
		cmd += " " + strings.Join(args, " ")
	}
	writeReport(stdout, cfg, rows, results, cmd, time.Since(start))
	if failed > 0 {
		fmt.Fprintf(stderr, "bench: %d of %d runs failed (see the end of the report)\n", failed, len(results))
		return 1
	}
	return 0
}

// runOne runs one system once in a child process and returns what it measured.
func runOne(cfg *config, exe string, rw row, run int, stderr io.Writer) *result {
	sys := rw.sys
	fail := func(format string, a ...any) *result {
		return &result{View: rw.view, Sys: sys.name, Run: run, Errs: []string{fmt.Sprintf(format, a...)}}
	}
	dir, err := os.MkdirTemp(cfg.dir, "pelichan-bench-"+sys.name+"-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	args := []string{"-child", "-sys=" + sys.name, "-view=" + rw.view, "-user-buffer=" + strconv.Itoa(cfg.userBuffer),
		"-run=" + strconv.Itoa(run), "-dir=" + dir,
		"-n=" + strconv.Itoa(cfg.n), "-seed=" + strconv.FormatUint(cfg.seed, 10),
		"-nsync1=" + strconv.Itoa(cfg.nSync1), "-n-dque=" + strconv.Itoa(cfg.nDque), "-dque-seg=" + strconv.Itoa(cfg.dqueSeg),
		"-buffer=" + strconv.Itoa(cfg.buffer), "-srcbuf=" + strconv.Itoa(cfg.srcBuffer),
		"-linger=" + cfg.linger.String(), "-stall=" + cfg.stall.String(),
		"-cpuprofile=" + cfg.cpuprofile, "-trace=" + cfg.trace, "-profile-systems=" + cfg.profSys, "-phases=" + cfg.phaseList, "-read-reopen=" + strconv.FormatBool(cfg.readReopen)}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	c := exec.CommandContext(ctx, exe, args...)
	var out, errb bytes.Buffer
	c.Stdout = &out
	c.Stderr = io.MultiWriter(stderr, &errb)
	cpu0, t0 := busyCPU(), time.Now()
	runErr := c.Run()
	wall := time.Since(t0).Seconds()
	var own float64
	if c.ProcessState != nil {
		own = (c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Seconds()
	}
	others := -1.0
	if cpu0 >= 0 && wall > 0 {
		if cpu1 := busyCPU(); cpu1 >= 0 {
			others = max(0, (cpu1-cpu0-own)/wall)
		}
	}
	var res *result
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r result
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Sys == sys.name && r.View == rw.view {
			res = &r
		}
	}
	switch {
	case ctx.Err() != nil:
		return fail("killed after -timeout %v", cfg.timeout)
	case res == nil:
		return fail("child failed (%v) without a result; stderr: %s", runErr, lastLines(errb.String(), 20))
	case !res.failed() && runErr != nil:
		res.Errs = append(res.Errs, fmt.Sprintf("child: %v", runErr))
	}
	res.OtherCPU = others
	return res
}

// waitQuiet waits up to max for a second in which other processes use less than a quarter
// of a CPU.
func waitQuiet(max time.Duration, stderr io.Writer) {
	deadline := time.Now().Add(max)
	said := false
	for time.Now().Before(deadline) {
		c0 := busyCPU()
		time.Sleep(time.Second)
		c1 := busyCPU()
		if c0 < 0 || c1 < 0 || c1-c0 < 0.25 {
			return
		}
		if !said {
			fmt.Fprintf(stderr, "waiting up to %v for other processes to quiet down (%.2f CPUs busy)\n", max, c1-c0)
			said = true
		}
	}
}

// busyCPU returns the CPU seconds the whole machine has spent busy since boot (steal
// included: time the hypervisor gave to someone else), or -1.
func busyCPU() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return -1
	}
	var busy float64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return -1
		}
		busy += x
	}
	return busy / 100 // USER_HZ
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// summary is the one-line progress report of a run.
func summary(r *result) string {
	var s string
	if r.StoreSec > 0 {
		s = fmt.Sprintf("store %s/s", fmtRate(float64(r.N)/r.StoreSec))
	}
	if r.ReadSec > 0 {
		s += fmt.Sprintf("  read %s/s", fmtRate(float64(r.N)/r.ReadSec))
	}
	if r.RestartDrainSec > 0 {
		s += fmt.Sprintf("  restart: store %s/s drain %s/s open %s",
			fmtRate(float64(r.New)/r.RestartStoreSec), fmtRate(float64(r.Backlog+r.New)/r.RestartDrainSec),
			fmtDur(r.ReopenSec))
	}
	if r.LiveSec > 0 {
		s += fmt.Sprintf("  live %s/s", fmtRate(float64(r.N)/r.LiveSec))
	}
	if r.DiskBytes > 0 {
		s += fmt.Sprintf("  disk %.3f B/B", float64(r.DiskBytes)/float64(r.Payload))
	}
	if r.PeakRSS > 0 {
		s += fmt.Sprintf("  rss %.1f MiB  (%.1fs)", float64(r.PeakRSS)/(1<<20), r.WallSec)
	}
	if r.OtherCPU >= 0 {
		s += fmt.Sprintf("  [other processes: %.2f CPUs]", r.OtherCPU)
	}
	return strings.TrimSpace(s)
}
