package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pelichan/pelichan/spool"
)

const statAbout = `Shows what the spool holds: format version, whether a process holds its lock, the
cursor and what is still undelivered, totals, one line per segment, damage found by the
records' CRCs (verify also decompresses), and files set aside by recovery or left over.
It reads every segment file. Times are record times (when a batch was spilled), in UTC.
A position is a segment, the byte offset of a record in the segment's WAL file (as in
message IDs) and how many of the record's messages were delivered.
Exit status 1 if damage was found.`

func runStat(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("stat", flag.ContinueOnError)
	asJSON := fset.Bool("json", false, "print the report as JSON")
	dir, code := parseArgs(fset, args, stdout, stderr, "stat [--json] DIR", statAbout)
	if code >= 0 {
		return code
	}
	r, err := spool.Inspect(dir)
	if err != nil {
		return failed(stderr, "stat", err)
	}
	out := bufio.NewWriter(stdout)
	if *asJSON {
		err = writeJSON(out, r)
	} else {
		printStat(out, r, time.Now())
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		return failed(stderr, "stat", err)
	}
	if len(r.Problems()) > 0 {
		return exitProblems
	}
	return exitOK
}

// printStat writes r for a human. Write errors show when the caller flushes w.
func printStat(w io.Writer, r *spool.Report, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }

	line("spool", "%s", r.Dir)
	line("format", "pelichan-spool %d", r.Version)
	switch l := r.Lock; {
	case l.Held && l.PID > 0:
		line("lock", "held by process %d", l.PID)
	case l.Held:
		line("lock", "held")
	case l.Error != "":
		line("lock", "unknown: %s", l.Error)
	default:
		line("lock", "not held")
	}
	line("cursor", "%s", cursorText(r))
	c := r.Cursor
	for _, s := range r.Segments {
		if s.Resume != nil && s.Seq == c.Seq {
			// Messages taken back at shutdown (ordered mode): read first, then reading goes
			// on at the resume cursor.
			line("then", "segment %s offset %d message %d (the cursor is on a front segment)", s.Resume.Segment, s.Resume.Index, s.Resume.Offset)
		}
	}
	und := fmt.Sprintf("%s in %s", plural(r.Undelivered, "message"), plural(r.UndeliveredRecords, "record"))
	if !r.OldestUndelivered.IsZero() {
		und += fmt.Sprintf(", oldest from %s (%s ago)", stamp(r.OldestUndelivered), age(now.Sub(r.OldestUndelivered)))
	}
	line("undelivered", "%s", und)
	line("stored", "%s in %s, %s", plural(r.Messages, "message"), plural(r.Records, "record"), plural(int64(len(r.Segments)), "segment"))
	line("bytes", "%s raw, %s compressed (ratio %.2f), %s in segment files",
		size(r.RawBytes), size(r.RecordBytes), r.Ratio, size(r.FileBytes))
	if !r.Oldest.IsZero() {
		line("times", "%s .. %s", stamp(r.Oldest), stamp(r.Newest))
	}
	tw.Flush()

	if len(r.Segments) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SEGMENT\tSTATE\tFILE\tRECORDS\tMESSAGES\tRAW\tCOMPRESSED\tRATIO\tFIRST\tLAST\tUNDELIVERED\tDAMAGE")
		for _, s := range r.Segments {
			state := "active"
			switch {
			case s.Resume != nil:
				state = "front"
			case s.Sealed:
				state = "sealed"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%.2f\t%s\t%s\t%d\t%d\n", s.Name, state, size(s.FileBytes),
				s.Records, s.Messages, size(s.RawBytes), size(s.RecordBytes), s.Ratio, stamp(s.First), stamp(s.Last),
				s.Undelivered, len(s.Damage))
		}
		tw.Flush()
	}
	if ps := r.Problems(); len(ps) > 0 {
		fmt.Fprintf(w, "\ndamage (%d):\n", len(ps))
		for _, p := range ps {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	if len(r.Files) > 0 {
		fmt.Fprintf(w, "\nset aside and leftovers:\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range r.Files {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", f.Name, size(f.Bytes), fileKinds[f.Kind])
		}
		tw.Flush()
	}
	if len(r.Notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
}

// cursorText says where reading resumes, in words.
func cursorText(r *spool.Report) string {
	c := r.Cursor
	switch {
	case c.State == "missing" && len(r.Segments) == 0:
		return "no cursor saved yet, and nothing stored"
	case c.State == "missing":
		return "no cursor saved yet: reading starts at the first segment"
	case c.State != "ok":
		return fmt.Sprintf("%s: %s", c.State, c.Error)
	case len(r.Segments) == 0:
		return "all stored messages delivered"
	case c.Seq < r.Segments[0].Seq:
		// The segments it passed are deleted; the ones stored since come after it.
		return fmt.Sprintf("every message before segment %s delivered: reading starts at its first message", r.Segments[0].Name)
	}
	at := fmt.Sprintf("segment %s offset %d message %d", c.Segment, c.Index, c.Offset)
	if r.Undelivered == 0 && len(r.Problems()) == 0 {
		at += ": all stored messages delivered"
	}
	return at
}

var fileKinds = map[string]string{
	"bad":     "damaged segment set aside after it was consumed, kept as evidence",
	"broken":  "torn tail cut off at open, kept as evidence",
	"tmp":     "leftover of an interrupted write; the next open removes it",
	"unknown": "not a spool file",
}

// stamp formats a record time; "-" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// age rounds d for a human: 42s, 17m, 5h3m, 3d4h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// size formats a byte count: 999 B, 12.3 KiB, 4.0 MiB.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if f < unit {
			break
		}
		f, suffix = f/unit, s
	}
	return fmt.Sprintf("%.1f %s", f, suffix)
}
