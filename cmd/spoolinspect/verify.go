package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"

	"github.com/pelichan/pelichan/spool"
)

const verifyAbout = `Reads every record of every segment and checks it completely: header, CRC-32C,
zstd decompression and the framing of its messages; also the cursor and meta files. Each
problem names its segment, entry index (1-based) and byte offset in the segment's WAL file.
Exit status 0 if the spool is clean, 1 if problems were found.

While a live Chan holds the directory, an incomplete record at the end of the segment
being written is a write in progress and a segment deleted while being read was consumed:
both are notes, not problems.`

func runVerify(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("verify", flag.ContinueOnError)
	asJSON := fset.Bool("json", false, "print the result as JSON")
	dir, code := parseArgs(fset, args, stdout, stderr, "verify [--json] DIR", verifyAbout)
	if code >= 0 {
		return code
	}
	vr, err := spool.Verify(dir)
	if err != nil {
		return failed(stderr, "verify", err)
	}
	out := bufio.NewWriter(stdout)
	if *asJSON {
		err = writeJSON(out, vr)
	} else {
		printVerify(out, vr)
	}
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		return failed(stderr, "verify", err)
	}
	if len(vr.Problems) > 0 {
		return exitProblems
	}
	return exitOK
}

func printVerify(w io.Writer, vr *spool.VerifyReport) {
	for _, p := range vr.Problems {
		fmt.Fprintf(w, "%s\n", p)
	}
	for _, n := range vr.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	verdict := "no problems"
	if n := len(vr.Problems); n > 0 {
		verdict = plural(int64(n), "problem")
	}
	fmt.Fprintf(w, "%s: %s checked, %s and %s decoded: %s\n", vr.Dir,
		plural(int64(vr.Segments), "segment"), plural(vr.Records, "record"), plural(vr.Messages, "message"), verdict)
}
