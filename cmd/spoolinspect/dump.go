package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/pelichan/pelichan/spool"
)

const dumpAbout = `Writes the messages the next open of the spool would deliver (from the cursor on), one
per line, in segment and record order. With --all, also the messages already delivered
whose records are still on disk. Damaged records are skipped and reported on stderr
(exit status 1).

formats:
  raw     the message bytes as they are (a message holding a newline spans lines)
  hex     the message bytes in hex
  quoted  a Go-quoted string ("..." with escapes), unambiguous for any bytes
  json    one JSON object per line: segment, offset (the record's byte offset in the
          segment's WAL file, as in message IDs), n (message in the record), time,
          delivered, and "text" (valid UTF-8) or "base64" (other bytes)`

func runDump(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("dump", flag.ContinueOnError)
	format := fset.String("format", "raw", "output format: raw, hex, quoted or json")
	from := fset.Int64("from", 0, "skip the first `N` messages of the selection")
	limit := fset.Int64("limit", 0, "write at most `N` messages (0: no limit)")
	all := fset.Bool("all", false, "also the messages already delivered whose records are still on disk")
	dir, code := parseArgs(fset, args, stdout, stderr, "dump [--format raw|hex|quoted|json] [--from N] [--limit N] [--all] DIR", dumpAbout)
	if code >= 0 {
		return code
	}
	write, ok := dumpFormats[*format]
	if !ok || *from < 0 || *limit < 0 {
		fmt.Fprintf(stderr, "spoolinspect dump: bad flags: --format must be raw, hex, quoted or json; --from and --limit at least 0\n")
		return exitUsage
	}
	out := bufio.NewWriter(stdout)
	problems := 0
	opts := spool.DumpOptions{All: *all, From: *from, Limit: *limit,
		OnProblem: func(p spool.Problem) {
			problems++
			fmt.Fprintf(stderr, "spoolinspect dump: skipped: %s\n", p)
		},
		OnNote: func(n string) { fmt.Fprintf(stderr, "spoolinspect dump: note: %s\n", n) },
	}
	err := spool.Dump(dir, opts, func(m spool.Message) error { return write(out, m) })
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		return failed(stderr, "dump", err)
	}
	if problems > 0 {
		return exitProblems
	}
	return exitOK
}

var dumpFormats = map[string]func(w *bufio.Writer, m spool.Message) error{
	"raw": func(w *bufio.Writer, m spool.Message) error {
		w.Write(m.Data)
		return w.WriteByte('\n')
	},
	"hex": func(w *bufio.Writer, m spool.Message) error {
		hex.NewEncoder(w).Write(m.Data)
		return w.WriteByte('\n')
	},
	"quoted": func(w *bufio.Writer, m spool.Message) error {
		w.Write(strconv.AppendQuote(w.AvailableBuffer(), string(m.Data)))
		return w.WriteByte('\n')
	},
	"json": func(w *bufio.Writer, m spool.Message) error {
		v := dumpJSON{Segment: m.Segment, Offset: m.Index, N: m.N, Delivered: m.Delivered}
		if !m.Time.IsZero() {
			v.Time = m.Time.UTC().Format(time.RFC3339Nano)
		}
		if utf8.Valid(m.Data) {
			s := string(m.Data)
			v.Text = &s
		} else {
			v.Base64 = base64.StdEncoding.EncodeToString(m.Data)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		w.Write(b)
		return w.WriteByte('\n')
	},
}

// dumpJSON is one line of --format json.
type dumpJSON struct {
	Segment   string  `json:"segment"`
	Offset    uint64  `json:"offset"` // the record's byte offset in its segment's WAL file
	N         int     `json:"n"`
	Time      string  `json:"time,omitempty"`
	Delivered bool    `json:"delivered"`
	Text      *string `json:"text,omitempty"`
	Base64    string  `json:"base64,omitempty"`
}
