package main

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The test spool: 10 records of 3 log lines, record i written at testBase + i minutes, the
// last holding one binary message, in segments of about 600 bytes.
var (
	testBase = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	testOpts = spool.Options{SegmentSize: 600, NoSync: true}
)

const testConsumed = 5 // messages delivered by makeSpool: one record and two of the next

func testRecords() [][]string {
	var recs [][]string
	for i := 0; i < 10; i++ {
		var r []string
		for j := 0; j < 3; j++ {
			n := i*3 + j
			r = append(r, fmt.Sprintf(`2024-03-01T12:%02d:%02dZ host=web-%d level=info msg="request served" path=/api/v1/items/%d status=200 bytes=%d`,
				i, j, n%3, n*7, 100+n*13))
		}
		recs = append(recs, r)
	}
	recs[9][2] = "bin\x00\xff\n\x01end"
	return recs
}

// makeSpool writes the test spool through the library and delivers its first consumed
// messages with Next and Ack. It returns the directory and every message written.
func makeSpool(t *testing.T, consumed int) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	s, err := spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	w := segment.NewWriter(4096)
	defer w.Close()
	var all []string
	for i, rec := range testRecords() {
		w.Reset()
		for _, m := range rec {
			if err := w.AddBytes([]byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		w.SetTime(testBase.Add(time.Duration(i) * time.Minute).UnixNano())
		if _, err := s.Append(w.Record()); err != nil {
			t.Fatal(err)
		}
		all = append(all, rec...)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	consume(t, dir, consumed)
	return dir, all
}

// consume delivers n more messages of the spool in dir, as a Chan would: Next, then Ack up
// to the last message handed out, then Close.
func consume(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	for n > 0 {
		r, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		k := min(n, r.Count-int(r.Pos.Offset))
		n -= k
		if err := s.Ack(spool.Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index, Offset: r.Pos.Offset + uint32(k)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// segDirs returns the spool's segment directory names, in order.
func segDirs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && len(e.Name()) == 20 && strings.Trim(e.Name(), "0123456789") == "" {
			out = append(out, e.Name())
		}
	}
	return out
}

// walOffsets returns the byte offset of each entry of a segment's WAL file.
func walOffsets(t *testing.T, file string) []int64 {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for pos := 0; pos < len(b); {
		size, k := binary.Uvarint(b[pos:])
		out = append(out, int64(pos))
		pos += k + int(size)
	}
	return out
}

// damage flips a byte in the payload of the second record of the second segment. It
// returns the segment's name and the record's offset.
func damage(t *testing.T, dir string) (string, int64) {
	t.Helper()
	seg := segDirs(t, dir)[1]
	file := filepath.Join(dir, seg, "00000000000000000001")
	off := walOffsets(t, file)[1]
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[off+2+segment.HeaderSize+10] ^= 0x40
	if err := os.WriteFile(file, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return seg, off
}

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

var (
	ageRE    = regexp.MustCompile(`\([0-9dhms.]+ ago\)`)
	methodRE = regexp.MustCompile(`"method": "[^"]*"`)
)

// normalise removes what differs between runs: the temporary directory, ages, and how
// the lock was checked.
func normalise(s, dir string) string {
	s = strings.ReplaceAll(s, dir, "DIR")
	s = ageRE.ReplaceAllString(s, "(AGE ago)")
	return methodRE.ReplaceAllString(s, `"method": "M"`)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n--- got:\n%s\n--- want:\n%s", p, got, want)
	}
}

// tree lists every path under dir with its size and modification time.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s %v %d %d", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
		}
		return err
	})
	return out
}

func TestUsage(t *testing.T) {
	dir, _ := makeSpool(t, 0)
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string // golden file for stdout, if any
		stderr string // a substring of stderr
	}{
		{args: nil, code: exitUsage, stderr: "usage: spoolinspect COMMAND"},
		{args: []string{"-h"}, code: exitOK, stdout: "usage.golden"},
		{args: []string{"help"}, code: exitOK, stdout: "usage.golden"},
		{args: []string{"help", "stat"}, code: exitOK, stdout: "help_stat.golden"},
		{args: []string{"frobnicate", dir}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{args: []string{"stat"}, code: exitUsage, stderr: "want one spool directory, got 0"},
		{args: []string{"stat", dir, dir}, code: exitUsage, stderr: "want one spool directory, got 2"},
		{args: []string{"stat", "--bogus", dir}, code: exitUsage, stderr: "flag provided but not defined: -bogus"},
		{args: []string{"verify", dir, "--json=maybe"}, code: exitUsage, stderr: "invalid boolean value"},
		{args: []string{"stat", "--json", "--", dir}, code: exitOK},
		{args: []string{"stat", dir, "--json"}, code: exitOK}, // flags after DIR
		{args: []string{"dump", "--limit", "x", dir}, code: exitUsage, stderr: "invalid value"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if tc.stdout != "" {
				golden(t, tc.stdout, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.stderr)
			}
		})
	}
}

// A path that is not a spool is a usage error (exit 2) with a clear message, for every
// command, and nothing is created in it.
func TestNotASpool(t *testing.T) {
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	foreign := filepath.Join(root, "foreign")
	for _, d := range []string{empty, foreign} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(foreign, "FORMAT"), []byte("pelichan-spool 9\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	before := tree(t, root)
	for _, tc := range []struct{ path, msg string }{
		{filepath.Join(root, "missing"), "no such file or directory"},
		{empty, "not a spool: an empty directory (no FORMAT file)"},
		{foreign, `a spool of format "pelichan-spool 9", this build reads "pelichan-spool 1"`},
		{file, "not a spool: not a directory"},
	} {
		for _, cmd := range []string{"stat", "verify", "dump"} {
			code, stdout, stderr := runCmd(t, cmd, tc.path)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.msg) || !strings.HasPrefix(stderr, "spoolinspect "+cmd+": ") {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want exit 2 and %q", cmd, tc.path, code, stdout, stderr, tc.msg)
			}
		}
	}
	if after := tree(t, root); !slices.Equal(before, after) {
		t.Errorf("the commands changed the directory:\n%q\n%q", before, after)
	}
}

// Nothing is changed by any command, on a clean spool or a damaged one.
func TestReadOnly(t *testing.T) {
	dir, _ := makeSpool(t, testConsumed)
	damage(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "cursor.tmp"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)
	for _, args := range [][]string{
		{"stat", dir}, {"stat", "--json", dir}, {"verify", dir}, {"verify", "--json", dir},
		{"dump", dir}, {"dump", "--all", "--format", "json", dir},
	} {
		if code, _, stderr := runCmd(t, args...); code != exitProblems {
			t.Errorf("%q: exit %d, want 1 (damage); stderr %s", args, code, stderr)
		}
	}
	if after := tree(t, dir); !slices.Equal(before, after) {
		t.Errorf("the commands changed the spool:\n%q\n%q", before, after)
	}
}
