package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

func TestStat(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	code, stdout, stderr := runCmd(t, "stat", dir)
	if code != exitOK || stderr != "" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	golden(t, "stat.golden", normalise(stdout, dir))

	code, stdout, stderr = runCmd(t, "stat", "--json", dir)
	if code != exitOK || stderr != "" {
		t.Errorf("--json: exit %d, stderr %q", code, stderr)
	}
	golden(t, "stat.json.golden", normalise(stdout, dir))
	var r spool.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json output is not valid JSON: %v", err)
	}
	if r.Dir != dir || r.Version != 1 || r.Messages != int64(len(all)) || r.Undelivered != int64(len(all)-testConsumed) ||
		len(r.Segments) != len(segDirs(t, dir)) || r.Cursor.State != "ok" || r.Lock.Held {
		t.Errorf("--json: %+v", r)
	}
	var generic map[string]any
	if err := json.Unmarshal([]byte(stdout), &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"dir", "version", "lock", "cursor", "segments", "undelivered", "oldest", "files", "notes"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("--json lacks %q", k)
		}
	}
}

func TestStatHelp(t *testing.T) {
	code, stdout, stderr := runCmd(t, "stat", "-h")
	if code != exitOK || stderr != "" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	golden(t, "help_stat.golden", stdout)
}

// Damage that a CRC check sees makes stat exit 1 and name the segment and offset.
func TestStatDamaged(t *testing.T) {
	dir, _ := makeSpool(t, testConsumed)
	seg, off := damage(t, dir)
	code, stdout, _ := runCmd(t, "stat", dir)
	if code != exitProblems {
		t.Errorf("exit %d, want 1", code)
	}
	if want := fmt.Sprintf("segment %s entry 2 offset %d", seg, off); !strings.Contains(stdout, want) {
		t.Errorf("output lacks %q:\n%s", want, stdout)
	}
	golden(t, "stat_damaged.golden", normalise(stdout, dir))
}

// While a live Spool holds the directory, stat says so (without taking the lock: the
// Spool goes on appending).
func TestStatLive(t *testing.T) {
	dir, _ := makeSpool(t, testConsumed)
	s, err := spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, stdout, stderr := runCmd(t, "stat", dir)
	if code != exitOK {
		t.Errorf("exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stdout, fmt.Sprintf("held by process %d", os.Getpid())) && !strings.Contains(stdout, "lock         held") {
		t.Errorf("the lock is not shown as held:\n%s", stdout)
	}
	if _, err := s.Next(); err != nil {
		t.Errorf("the Spool cannot go on: %v", err)
	}
}

// A front segment written at shutdown: stat shows it, and where reading goes on after it.
func TestStatFront(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	s, err := spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	w := segment.NewWriter(4096)
	defer w.Close()
	w.AddBytes([]byte("taken back"))
	if err := s.Front([][]byte{w.Record()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs := segDirs(t, dir)
	code, stdout, stderr := runCmd(t, "stat", dir)
	if code != exitOK || stderr != "" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("cursor       segment %s entry 1 message 0", segs[0]),
		fmt.Sprintf("then         segment %s entry 2 message 2 (the cursor is on a front segment)", segs[1]),
		fmt.Sprintf("undelivered  %d messages", len(all)-testConsumed+1),
		segs[0] + "  front ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = runCmd(t, "dump", dir)
	if want := strings.Join(append([]string{"taken back"}, all[testConsumed:]...), "\n") + "\n"; code != exitOK || stdout != want {
		t.Errorf("dump: exit %d\n%s\nwant\n%s", code, stdout, want)
	}
}
