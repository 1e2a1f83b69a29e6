package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// metric is one measured quantity, computed from each run's result.
type metric struct {
	head    string
	value   func(r *result) (float64, bool)
	format  func(float64) string
	noRatio bool // the rows measure different amounts (bytes on disk after n messages)
}

var (
	mStore = metric{head: "store msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.N, r.StoreSec) }}
	mMBs = metric{head: "store MB/s", format: fmtNum,
		value: func(r *result) (float64, bool) { return float64(r.Payload) / 1e6 / r.StoreSec, r.StoreSec > 0 }}
	mRead = metric{head: "read msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.N, r.ReadSec) }}
	mRestartStore = metric{head: "store msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.New, r.RestartStoreSec) }}
	mRestartDrain = metric{head: "drain msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.Backlog+r.New, r.RestartDrainSec) }}
	mReopen = metric{head: "open to first message", format: fmtDur,
		value: func(r *result) (float64, bool) { return r.ReopenSec, r.ReopenSec > 0 }}
	mDisk = metric{head: "bytes on disk", format: fmtBytes, noRatio: true,
		value: func(r *result) (float64, bool) { return float64(r.DiskBytes), r.DiskBytes > 0 }}
	mPerByte = metric{head: "per payload byte", format: func(v float64) string { return fmt.Sprintf("%.3f", v) },
		value: func(r *result) (float64, bool) {
			return float64(r.DiskBytes) / float64(r.Payload), r.DiskBytes > 0 && r.Payload > 0
		}}
	mRSS = metric{head: "peak RSS", format: fmtMiB,
		value: func(r *result) (float64, bool) { return float64(r.PeakRSS), r.PeakRSS > 0 }}
)

func rate(n int, sec float64) (float64, bool) {
	if sec <= 0 {
		return 0, false
	}
	return float64(n) / sec, true
}

// stat is the median, min and max of a metric over one system's successful runs.
type stat struct {
	med, lo, hi float64
	n           int
}

func stats(rs []*result, m metric) (stat, bool) {
	var vs []float64
	for _, r := range rs {
		if v, ok := m.value(r); ok && !math.IsInf(v, 0) && !math.IsNaN(v) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return stat{}, false
	}
	slices.Sort(vs)
	med := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
	}
	return stat{med, vs[0], vs[len(vs)-1], len(vs)}, true
}

// table prints one markdown table: a row per system, per metric a "median (min-max)"
// column and a ratio column (this system's median / its base's median).
func table(w io.Writer, title, note string, syss []*system, by map[string][]*result, ms ...metric) {
	fmt.Fprintf(w, "### %s\n\n", title)
	if note != "" {
		fmt.Fprintf(w, "%s\n\n", note)
	}
	head := []string{"system"}
	for _, m := range ms {
		head = append(head, m.head+" median (min-max)")
		if !m.noRatio {
			head = append(head, "vs pelichan")
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(head)))
	for _, s := range syss {
		name := s.name
		for _, r := range by[s.name] {
			if r.failed() {
				name += " *"
				break
			}
		}
		row := []string{name}
		any := false
		for _, m := range ms {
			st, ok := stats(by[s.name], m)
			if !ok {
				row = append(row, "—")
				if !m.noRatio {
					row = append(row, "—")
				}
				continue
			}
			any = true
			cell := m.format(st.med)
			if st.n > 1 {
				cell += fmt.Sprintf(" (%s-%s)", m.format(st.lo), m.format(st.hi))
			}
			if m.noRatio {
				row = append(row, cell)
				continue
			}
			ratio := "—"
			if bst, ok := stats(by[s.base], m); ok && bst.med != 0 {
				ratio = fmtRatio(st.med / bst.med)
				if s.base != "pelichan" {
					ratio += " (vs " + s.base + ")"
				}
			}
			row = append(row, cell, ratio)
		}
		if any {
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
	}
	fmt.Fprintln(w)
}

func writeReport(w io.Writer, cfg *config, syss []*system, results []*result, cmd string, took time.Duration) {
	by := map[string][]*result{}
	for _, r := range results {
		by[r.Sys] = append(by[r.Sys], r)
	}
	fmt.Fprintf(w, "## pelichan peer comparison\n\n")
	fmt.Fprintf(w, "`%s` (in bench/): n = %d log lines (100-300 bytes, mean %.0f), %d run(s) per system, "+
		"each in a fresh process, interleaved. %s, %s/%s, %d CPUs (%s), %s. Took %s.\n\n",
		cmd, cfg.n, float64(newWorkload(cfg.seed).payload(0, poolSize))/poolSize, cfg.runs,
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(),
		time.Now().UTC().Format("2006-01-02"), took.Round(time.Second))
	fmt.Fprintf(w, "Cells are the median over runs, (min-max) across runs; \"vs pelichan\" is this row's median "+
		"divided by pelichan's: below 1 for a rate means slower than pelichan, above 1 for bytes, time or memory means more.\n\n")

	counts := fmt.Sprintf("n = %d messages (dque: %d, diskqueue-sync1: %d)", cfg.n, cfg.nDque, cfg.nSync1)
	table(w, "Store n messages, consumer stalled",
		counts+". Time from the first put until every message is written to the OS (and synced, for the sync rows).",
		syss, by, mStore, mMBs)
	how := "From the queue the store phase filled, still open"
	if cfg.readReopen {
		how = "From the queue the store phase filled, closed and reopened in between, untimed (-read-reopen)"
	}
	table(w, "Read the n messages back", how+".", syss, by, mRead)
	table(w, "Restart with a backlog: store n/2, close, reopen, then store n more while draining all 3n/2",
		"store: the producer's rate for the n new messages; drain: all 3n/2 messages over the time from reopen to the last one read.",
		syss, by, mRestartStore, mRestartDrain)
	table(w, "Reopen with a backlog of n/2",
		"Time from the open call to the first message read, in the restart phase.", syss, by, mReopen)
	table(w, "Disk and memory",
		"Bytes of the queue's files after the store phase of n messages (dque and diskqueue-sync1 store fewer), and per byte of message payload; "+
			"peak RSS (VmHWM) of the whole child process over all phases. The harness itself (workload, checker, and the Go heap's headroom "+
			"at millions of allocations per second) is most of rawfile's figure.",
		syss, by, mDisk, mPerByte, mRSS)
	bars(w, by)
	noise(w, results)
	var fails []string
	for _, r := range results {
		for _, e := range r.Errs {
			fails = append(fails, fmt.Sprintf("- run %d, %s: %s", r.Run, r.Sys, oneLine(e, 600)))
		}
	}
	var ns []string
	for _, r := range results {
		for _, n := range r.Notes {
			ns = append(ns, fmt.Sprintf("- run %d, %s: %s", r.Run, r.Sys, n))
		}
	}
	if len(ns) > 0 {
		fmt.Fprintf(w, "### Notes\n\nLogged by the systems without failing the checks.\n\n%s\n\n", strings.Join(ns, "\n"))
	}
	if len(fails) > 0 {
		fmt.Fprintf(w, "### Failures\n\nA failed phase leaves its cells empty (or fewer runs in its median); the phases before and after it still count. Rows marked * had failures.\n\n%s\n\n",
			strings.Join(fails, "\n"))
	}
}

// bars checks the medians against DESIGN.md's performance bar.
func bars(w io.Writer, by map[string][]*result) {
	med := func(sys string, m metric) (float64, bool) {
		st, ok := stats(by[sys], m)
		return st.med, ok
	}
	best := func(m metric) (float64, string) {
		var v float64
		var who string
		for _, p := range []string{"diskqueue", "dque", "leveldb"} {
			if x, ok := med(p, m); ok && x > v {
				v, who = x, p
			}
		}
		return v, who
	}
	type bar struct {
		what, measured string
		ok             bool
	}
	var bs []bar
	if v, ok := med("pelichan", mStore); ok {
		bs = append(bs, bar{"spill (consumer stalled) >= 1M msgs/s", fmtRate(v), v >= 1e6})
		if d, ok := med("diskqueue", mStore); ok {
			bs = append(bs, bar{"spill >= 3x go-diskqueue", fmtRatio(v / d), v >= 3*d})
		}
	}
	if v, ok := med("pelichan", mRead); ok {
		bs = append(bs, bar{"refill from disk >= 2M msgs/s", fmtRate(v), v >= 2e6})
	}
	for _, m := range []metric{mRestartStore, mRestartDrain} {
		if v, ok := med("pelichan", m); ok {
			if b, who := best(m); who != "" {
				bs = append(bs, bar{"restart: " + m.head + " >= 2x the best peer",
					fmt.Sprintf("%s = %s %s", fmtRate(v), fmtRatio(v/b), who), v >= 2*b})
			}
		}
	}
	if v, ok := med("pelichan-syncalways", mStore); ok {
		bs = append(bs, bar{"SyncAlways >= 100k msgs/s", fmtRate(v), v >= 1e5})
	}
	if v, ok := med("pelichan", mPerByte); ok {
		bs = append(bs, bar{"disk <= 0.3 bytes per payload byte", fmt.Sprintf("%.3f", v), v <= 0.3})
	}
	if v, ok := med("pelichan", mRSS); ok {
		m := fmtMiB(v)
		if r, ok := med("rawfile", mRSS); ok {
			m += " (the harness alone, as rawfile: " + fmtMiB(r) + ")"
		}
		bs = append(bs, bar{"peak RSS < 48 MiB", m, v < 48<<20})
	}
	if v, ok := med("pelichan", mReopen); ok {
		bs = append(bs, bar{"open to first message < 10 ms", fmtDur(v), v < 0.010})
	}
	if len(bs) == 0 {
		return
	}
	fmt.Fprintf(w, "### DESIGN.md performance bar (pelichan medians)\n\n| bar | measured | holds |\n|---|---|---|\n")
	for _, b := range bs {
		ok := "no"
		if b.ok {
			ok = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", b.what, b.measured, ok)
	}
	fmt.Fprintln(w)
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtNum(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtDur(sec float64) string {
	switch {
	case sec >= 1:
		return fmt.Sprintf("%.2f s", sec)
	case sec >= 0.01:
		return fmt.Sprintf("%.0f ms", sec*1e3)
	case sec >= 0.001:
		return fmt.Sprintf("%.1f ms", sec*1e3)
	default:
		return fmt.Sprintf("%.0f µs", sec*1e6)
	}
}

func fmtBytes(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.2f GB", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.1f MB", v/1e6)
	default:
		return fmt.Sprintf("%.0f kB", v/1e3)
	}
}

func fmtRatio(v float64) string {
	if v < 0.1 {
		return fmt.Sprintf("%.3fx", v)
	}
	return fmt.Sprintf("%.2fx", v)
}

func fmtMiB(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

// noise says how busy the machine was with other work while the children ran.
func noise(w io.Writer, results []*result) {
	var vs []float64
	for _, r := range results {
		if r.OtherCPU >= 0 {
			vs = append(vs, r.OtherCPU)
		}
	}
	if len(vs) == 0 {
		return
	}
	slices.Sort(vs)
	fmt.Fprintf(w, "Other processes used %.2f CPUs on average during a run (median; max %.2f) of the machine's %d.",
		vs[len(vs)/2], vs[len(vs)-1], runtime.NumCPU())
	if vs[len(vs)-1] > 0.2 {
		fmt.Fprintf(w, " Runs that shared the machine are slower and noisier than these tables suggest.")
	}
	fmt.Fprintf(w, "\n\n")
}
