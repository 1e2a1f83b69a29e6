package main

import (
	"bufio"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestDumpFormats(t *testing.T) {
	dir, _ := makeSpool(t, testConsumed)
	for _, tc := range []struct {
		args   []string
		golden string
	}{
		{[]string{"dump", dir}, "dump_raw.golden"},
		{[]string{"dump", "--format", "hex", dir}, "dump_hex.golden"},
		{[]string{"dump", "--format", "quoted", dir}, "dump_quoted.golden"},
		{[]string{"dump", "--format", "json", dir}, "dump_json.golden"},
		{[]string{"dump", "--all", "--from", "2", "--limit", "5", "--format", "json", dir}, "dump_all_from_limit.golden"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, tc.args...)
			if code != exitOK || stderr != "" {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			golden(t, tc.golden, normalise(stdout, dir))
		})
	}
}

func TestDumpHelp(t *testing.T) {
	code, stdout, _ := runCmd(t, "dump", "-h")
	if code != exitOK {
		t.Errorf("exit %d", code)
	}
	golden(t, "help_dump.golden", stdout)
}

// dumpQuoted runs dump --format quoted with args and returns the messages.
func dumpQuoted(t *testing.T, args ...string) []string {
	t.Helper()
	code, stdout, stderr := runCmd(t, append([]string{"dump", "--format", "quoted"}, args...)...)
	if code != exitOK {
		t.Fatalf("dump %q: exit %d, stderr %s", args, code, stderr)
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		m, err := strconv.Unquote(sc.Text())
		if err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// dump prints exactly the undelivered messages, however much was consumed, and --all,
// --from and --limit select from them.
func TestDumpUndelivered(t *testing.T) {
	dir, all := makeSpool(t, 0)
	consumed := 0
	for _, step := range []int{0, testConsumed, 1, 6, 7, 0} {
		consume(t, dir, step)
		consumed += step
		if got, want := dumpQuoted(t, dir), all[consumed:]; !slices.Equal(got, want) {
			t.Fatalf("after %d consumed: dump\n%q\nwant\n%q", consumed, got, want)
		}
		if got, want := dumpQuoted(t, "--from", "4", "--limit", "3", dir), all[consumed+4:consumed+7]; !slices.Equal(got, want) {
			t.Errorf("after %d consumed: --from 4 --limit 3: %q, want %q", consumed, got, want)
		}
		// --all: from the first record still on disk (consumed segments are deleted).
		got := dumpQuoted(t, "--all", dir)
		if !slices.Equal(got[len(got)-len(all[consumed:]):], all[consumed:]) || len(got) > len(all) {
			t.Errorf("after %d consumed: --all gave %d messages: %q", consumed, len(got), got)
		}
	}
	consume(t, dir, len(all)-consumed)
	if got := dumpQuoted(t, dir); len(got) != 0 {
		t.Errorf("after everything was consumed: %q", got)
	}
}

func TestDumpJSONLines(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	code, stdout, _ := runCmd(t, "dump", "--all", "--format", "json", dir)
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(all) {
		t.Fatalf("%d lines, want %d", len(lines), len(all))
	}
	for i, l := range lines {
		var v dumpJSON
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("line %d is not JSON: %v", i, err)
		}
		text := ""
		if v.Text != nil {
			text = *v.Text
		}
		if (v.Text == nil) != (v.Base64 != "") || (v.Text != nil && text != all[i]) || v.Delivered != (i < testConsumed) {
			t.Errorf("line %d: %s (message %q)", i, l, all[i])
		}
	}
}

func TestDumpDamaged(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	seg, _ := damage(t, dir)
	code, stdout, stderr := runCmd(t, "dump", "--format", "quoted", dir)
	if code != exitProblems || !strings.Contains(stderr, "skipped: segment "+seg+" entry 2") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if n := strings.Count(stdout, "\n"); n != len(all)-testConsumed-3 {
		t.Errorf("%d messages, want %d", n, len(all)-testConsumed-3)
	}
}

func TestDumpBadFlags(t *testing.T) {
	dir, _ := makeSpool(t, 0)
	for _, args := range [][]string{
		{"--format", "xml"}, {"--limit", "-1"}, {"--from", "-2"},
	} {
		code, stdout, stderr := runCmd(t, append(append([]string{"dump"}, args...), dir)...)
		if code != exitUsage || stdout != "" || stderr == "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}
