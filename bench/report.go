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
	mMBs = metric{head: "store MB/s", format: fmtNum, noRatio: true,
		value: func(r *result) (float64, bool) { return float64(r.Payload) / 1e6 / r.StoreSec, r.StoreSec > 0 }}
	mRead = metric{head: "read msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.N, r.ReadSec) }}
	mRestartStore = metric{head: "store msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.New, r.RestartStoreSec) }}
	mRestartDrain = metric{head: "drain msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.Backlog+r.New, r.RestartDrainSec) }}
	mLive = metric{head: "live msgs/s", format: fmtRate,
		value: func(r *result) (float64, bool) { return rate(r.N, r.LiveSec) }}
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

// ratioCol is one ratio column of a table: each row's median divided by the median of
// the row base names in the same view ("" for no ratio in that row).
type ratioCol struct {
	head string
	base func(s *system) string
}

func vsSys(name string) ratioCol {
	return ratioCol{head: "vs " + name, base: func(*system) string { return name }}
}

// vsBase is the "vs pelichan" column: each system's base row (pelichan for most; the
// sync1 row is divided by pelichan-syncalways).
var vsBase = ratioCol{head: "vs pelichan", base: func(s *system) string { return s.base }}

// table prints one markdown table: a row per system of one view, per metric a
// "median (min-max)" column and its ratio columns.
func table(w io.Writer, title, note string, rows []row, by map[string][]*result, ratios []ratioCol, ms ...metric) {
	fmt.Fprintf(w, "#### %s\n\n", title)
	if note != "" {
		fmt.Fprintf(w, "%s\n\n", note)
	}
	head := []string{"system"}
	for _, m := range ms {
		head = append(head, m.head+" median (min-max)")
		if !m.noRatio {
			for _, rc := range ratios {
				head = append(head, rc.head)
			}
		}
	}
	var lines []string
	for _, rw := range rows {
		s := rw.sys
		name := s.name
		for _, r := range by[rw.key()] {
			if r.failed() {
				name += " *"
				break
			}
		}
		cells := []string{name}
		any := false
		for _, m := range ms {
			st, ok := stats(by[rw.key()], m)
			if !ok {
				cells = append(cells, "—")
				if !m.noRatio {
					for range ratios {
						cells = append(cells, "—")
					}
				}
				continue
			}
			any = true
			cell := m.format(st.med)
			if st.n > 1 {
				cell += fmt.Sprintf(" (%s-%s)", m.format(st.lo), m.format(st.hi))
			}
			cells = append(cells, cell)
			if m.noRatio {
				continue
			}
			for _, rc := range ratios {
				ratio := "—"
				base := rc.base(s)
				if bst, ok := stats(by[rw.view+"/"+base], m); ok && base != "" && bst.med != 0 {
					ratio = fmtRatio(st.med / bst.med)
					if "vs "+base != rc.head {
						ratio += " (vs " + base + ")"
					}
				}
				cells = append(cells, ratio)
			}
		}
		if any {
			lines = append(lines, fmt.Sprintf("| %s |", strings.Join(cells, " | ")))
		}
	}
	if len(lines) == 0 {
		fmt.Fprintf(w, "(no row ran this phase)\n\n")
		return
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(head)))
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w)
}

func writeReport(w io.Writer, cfg *config, rows []row, results []*result, cmd string, took time.Duration) {
	by := map[string][]*result{}
	for _, r := range results {
		by[r.View+"/"+r.Sys] = append(by[r.View+"/"+r.Sys], r)
	}
	fmt.Fprintf(w, "## pelichan peer comparison\n\n")
	fmt.Fprintf(w, "`%s` (in bench/): n = %d log lines (100-300 bytes, mean %.0f), %d run(s) per system and view, "+
		"each in a fresh process, interleaved. %s, %s/%s, %d CPUs (%s), %s. Took %s.\n\n",
		cmd, cfg.n, float64(newWorkload(cfg.seed).payload(0, poolSize))/poolSize, cfg.runs,
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(),
		time.Now().UTC().Format("2006-01-02"), took.Round(time.Second))
	fmt.Fprintf(w, "Cells are the median over runs, (min-max) across runs; \"vs X\" is this row's median "+
		"divided by X's in the same view: below 1 for a rate means slower than X, above 1 for bytes, time or memory means more. "+
		"pelichan rows use WithLinger(%v) (-linger) so that the store phase does not end with a long wait for the last partial batch.\n\n", cfg.linger)

	var viewsRun []string
	for _, v := range views {
		var vr []row
		for _, rw := range rows {
			if rw.view == v {
				vr = append(vr, rw)
			}
		}
		if len(vr) == 0 {
			continue
		}
		viewsRun = append(viewsRun, v)
		switch v {
		case viewBench:
			fmt.Fprintf(w, "### Bench view: WithBuffer(%d), the producer hands out messages carved from slabs, the consumer only checks each message\n\n", cfg.buffer)
		case viewUser:
			fmt.Fprintf(w, "### User view: WithBuffer(%d), the producer copies each message, the consumer parses and hashes each message\n\n"+
				"As a shipper sees it: the producer builds each line in a reused buffer and copies it into an allocation of its own; the consumer "+
				"(the same for every system, rawfile's reader included) splits the line into its fields, parses status, dur_ms and bytes, and hashes "+
				"every key and value with hash/maphash (about 0.6 µs a line on one core here), besides checking it.\n\n", cfg.userBuffer)
		}
		viewTables(w, cfg, v, vr, by)
	}
	bars(w, viewsRun, by)
	noise(w, results)
	var fails []string
	for _, r := range results {
		for _, e := range r.Errs {
			fails = append(fails, fmt.Sprintf("- run %d, %s/%s: %s", r.Run, r.View, r.Sys, oneLine(e, 600)))
		}
	}
	var ns []string
	for _, r := range results {
		for _, n := range r.Notes {
			ns = append(ns, fmt.Sprintf("- run %d, %s/%s: %s", r.Run, r.View, r.Sys, n))
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

// viewTables prints one view's tables.
func viewTables(w io.Writer, cfg *config, view string, rows []row, by map[string][]*result) {
	counts := fmt.Sprintf("n = %d messages (dque: %d, diskqueue-sync1: %d)", cfg.n, cfg.nDque, cfg.nSync1)
	rates := []ratioCol{vsBase, vsSys("diskqueue"), vsSys("rawfile")}
	table(w, "Store n messages, consumer stalled (spill)",
		counts+". Time from the first put until every message is written to the OS (and synced, for the sync rows). "+
			"pelichan-wa is write-ahead mode with the consumer stalled.",
		rows, by, rates, mStore, mMBs)
	how := "From the queue the store phase filled, still open"
	if cfg.readReopen {
		how = "From the queue the store phase filled, closed and reopened in between, untimed (-read-reopen)"
	}
	table(w, "Read the n messages back (refill)", how+".", rows, by, []ratioCol{vsBase, vsSys("rawfile")}, mRead)
	table(w, "Restart with a backlog: store n/2, close, reopen, then store n more while draining all 3n/2",
		"store: the producer's rate for the n new messages; drain: all 3n/2 messages over the time from reopen to the last one read.",
		rows, by, []ratioCol{vsBase}, mRestartStore, mRestartDrain)
	table(w, "Reopen with a backlog of n/2",
		"Time from the open call to the first message read, in the restart phase.", rows, by, []ratioCol{vsBase}, mReopen)
	table(w, "Live: consumer keeping up (direct pass; write-ahead)",
		"An empty queue; the producer puts n messages while the consumer reads them: n over the time from the first put to the last message read. "+
			"pelichan passes messages directly; pelichan-wa and pelichan-wa-syncalways store every message (the latter fsynced) before delivering it, "+
			"as go-diskqueue writes every message; chancopy is a goroutine copying src to a channel as deep as pelichan's Out.",
		rows, by, []ratioCol{vsSys("diskqueue"), vsSys("chancopy")}, mLive)
	table(w, "Disk and memory",
		"Bytes of the queue's files after the store phase of n messages (dque and diskqueue-sync1 store fewer), and per byte of message payload; "+
			"peak RSS (VmHWM) of the whole child process over all its phases. The harness itself (workload, checker, and the Go heap's headroom "+
			"at millions of allocations per second) is most of rawfile's figure.",
		rows, by, []ratioCol{vsBase}, mDisk, mPerByte, mRSS)
}

// bars checks the medians against DESIGN.md's performance bar, per view.
func bars(w io.Writer, viewsRun []string, by map[string][]*result) {
	if len(viewsRun) == 0 {
		return
	}
	med := func(view, sys string, m metric) (float64, bool) {
		st, ok := stats(by[view+"/"+sys], m)
		return st.med, ok
	}
	// best is the best peer's median; a peer not run in this view counts with its
	// bench-view median (the user view's consumer work only slows a peer down, so this
	// is the stricter reference).
	best := func(view string, m metric) (float64, string) {
		var v float64
		var who string
		for _, p := range []string{"diskqueue", "dque", "leveldb"} {
			x, ok := med(view, p, m)
			name := p
			if !ok && view != viewBench {
				x, ok = med(viewBench, p, m)
				name = p + " (bench view)"
			}
			if ok && x > v {
				v, who = x, name
			}
		}
		return v, who
	}
	type cell struct {
		measured string
		ok, has  bool
	}
	type bar struct {
		what string
		f    func(view string) cell
	}
	ratioBar := func(view, sys, base string, m metric, min float64) cell {
		v, ok1 := med(view, sys, m)
		b, ok2 := med(view, base, m)
		if !ok1 || !ok2 || b == 0 {
			return cell{}
		}
		return cell{fmt.Sprintf("%s vs %s = %s", fmtRate(v), fmtRate(b), fmtRatio(v/b)), v >= min*b, true}
	}
	bs := []bar{
		{"spill (consumer stalled), Zstd: >= 5x go-diskqueue", func(v string) cell { return ratioBar(v, "pelichan", "diskqueue", mStore, 5) }},
		{"spill with Auto: >= 0.5x rawfile append", func(v string) cell { return ratioBar(v, "pelichan-auto", "rawfile", mStore, 0.5) }},
		{"(spill with S2 vs rawfile append, for reference)", func(v string) cell {
			c := ratioBar(v, "pelichan-s2", "rawfile", mStore, 0)
			c.ok = false
			return c
		}},
		{"refill: >= 0.85x rawfile read, same consumer", func(v string) cell { return ratioBar(v, "pelichan", "rawfile", mRead, 0.85) }},
		{"restart: store >= the best peer", func(v string) cell {
			x, ok := med(v, "pelichan", mRestartStore)
			b, who := best(v, mRestartStore)
			if !ok || who == "" {
				return cell{}
			}
			return cell{fmt.Sprintf("%s = %s %s", fmtRate(x), fmtRatio(x/b), who), x >= b, true}
		}},
		{"restart: drain >= 4x the best peer", func(v string) cell {
			x, ok := med(v, "pelichan", mRestartDrain)
			b, who := best(v, mRestartDrain)
			if !ok || who == "" {
				return cell{}
			}
			return cell{fmt.Sprintf("%s = %s %s", fmtRate(x), fmtRatio(x/b), who), x >= 4*b, true}
		}},
		{"write-ahead, consumer keeping up: >= 3x go-diskqueue", func(v string) cell { return ratioBar(v, "pelichan-wa", "diskqueue", mLive, 3) }},
		{"(write-ahead, consumer stalled, vs go-diskqueue store)", func(v string) cell {
			c := ratioBar(v, "pelichan-wa", "diskqueue", mStore, 0)
			c.ok = false
			return c
		}},
		{"write-ahead with SyncAlways, consumer keeping up: >= 100k msgs/s", func(v string) cell {
			x, ok := med(v, "pelichan-wa-syncalways", mLive)
			return cell{fmtRate(x), x >= 1e5, ok}
		}},
		{"spill with SyncAlways: >= 100k msgs/s", func(v string) cell {
			x, ok := med(v, "pelichan-syncalways", mStore)
			return cell{fmtRate(x), x >= 1e5, ok}
		}},
		{"direct pass: >= 0.5x a goroutine copying chan to chan", func(v string) cell { return ratioBar(v, "pelichan", "chancopy", mLive, 0.5) }},
		{"disk with Zstd: <= 0.3 bytes per payload byte", func(v string) cell {
			x, ok := med(v, "pelichan", mPerByte)
			return cell{fmt.Sprintf("%.3f", x), x <= 0.3, ok}
		}},
		{"peak RSS: < 48 MiB", func(v string) cell {
			x, ok := med(v, "pelichan", mRSS)
			m := fmtMiB(x)
			if r, ok := med(v, "rawfile", mRSS); ok {
				m += " (the harness alone, as rawfile: " + fmtMiB(r) + ")"
			}
			return cell{m, x < 48<<20, ok}
		}},
		{"open to first message: < 2 ms", func(v string) cell {
			x, ok := med(v, "pelichan", mReopen)
			return cell{fmtDur(x), x < 0.002, ok}
		}},
	}
	fmt.Fprintf(w, "### DESIGN.md performance bar (medians)\n\n")
	head := []string{"bar"}
	for _, v := range viewsRun {
		head = append(head, v+" view", "holds")
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat("---|", len(head)))
	for _, b := range bs {
		cells := []string{b.what}
		any := false
		for _, v := range viewsRun {
			c := b.f(v)
			if !c.has {
				cells = append(cells, "—", "")
				continue
			}
			any = true
			holds := "no"
			switch {
			case strings.HasPrefix(b.what, "("):
				holds = ""
			case c.ok:
				holds = "yes"
			}
			cells = append(cells, c.measured, holds)
		}
		if any {
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
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
