// Command spoolinspect shows what a pelichan spool directory holds, checks it, and writes
// out its messages. It changes nothing: it never writes to the directory, never takes its
// lock, and is safe to run while a live Chan uses it (what it shows is then a snapshot).
//
//	spoolinspect stat [--json] DIR     format, lock, cursor, backlog, segments, set-aside files
//	spoolinspect verify [--json] DIR   decode every record; report damage by segment, entry, offset
//	spoolinspect dump [flags] DIR      write the undelivered messages, one per line
//
// Flags may come before or after DIR; "spoolinspect COMMAND -h" describes each command.
//
// Exit status: 0 fine; 1 problems found (damage in the spool: a bad record, torn tail,
// damaged cursor or meta file, unreadable segment) or an error while reading or writing;
// 2 usage error, which includes a DIR that does not exist or is not a spool.
//
// The same inspection is available from Go: spool.Inspect, spool.Verify and spool.Dump.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/pelichan/pelichan/spool"
)

const (
	exitOK       = 0
	exitProblems = 1
	exitUsage    = 2
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"stat", "what is on disk: format, lock, cursor, backlog, segments, set-aside files", runStat},
	{"verify", "decode every record; report damage with segment, entry and byte offset", runVerify},
	{"dump", "write the undelivered messages (or all with --all), one per line", runDump},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program: tests call it instead of executing the binary.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			return run([]string{args[1], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "spoolinspect: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: spoolinspect COMMAND [flags] DIR

Shows, checks and dumps a pelichan spool directory without changing it: safe while a
live Chan uses the directory.

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
"spoolinspect COMMAND -h" describes a command's flags.

exit status: 0 fine, 1 problems found in the spool (or a read or write error),
2 usage error (including a DIR that does not exist or is not a spool).
`)
}

// parseArgs parses a subcommand's flags, which may come before or after DIR, and returns
// DIR. code is the exit code to return at once, or -1 to go on.
func parseArgs(fset *flag.FlagSet, args []string, stdout, stderr io.Writer, synopsis, about string) (dir string, code int) {
	help := func(w io.Writer) {
		fmt.Fprintf(w, "usage: spoolinspect %s\n\n%s\n", synopsis, about)
		n := 0
		fset.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nflags:\n")
			fset.SetOutput(w)
			fset.PrintDefaults()
			fset.SetOutput(io.Discard)
		}
	}
	fset.SetOutput(io.Discard) // errors are printed below, help on stdout
	fset.Usage = func() {}
	var pos []string
	for {
		err := fset.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			help(stdout)
			return "", exitOK
		}
		if err != nil {
			fmt.Fprintf(stderr, "spoolinspect %s: %v\n", fset.Name(), err)
			help(stderr)
			return "", exitUsage
		}
		rest := fset.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "spoolinspect %s: want one spool directory, got %d arguments\n", fset.Name(), len(pos))
		help(stderr)
		return "", exitUsage
	}
	return pos[0], -1
}

// failed reports an error that stopped a command and returns its exit code: a path that
// does not exist or is not a spool is a usage error.
func failed(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "spoolinspect %s: %v\n", cmd, err)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, spool.ErrVersion) {
		return exitUsage
	}
	return exitProblems
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// plural returns "1 record", "2 records".
func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
