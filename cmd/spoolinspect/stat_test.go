package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
		fmt.Sprintf("cursor       segment %s offset 0 message 0", segs[0]),
		fmt.Sprintf("then         segment %s offset %d message 2 (the cursor is on a front segment)", segs[1], recordOffsets(t, dir, segs[1])[1]),
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

// The cursor line says what the position means: after a full drain, mid-outage (no
// checkpoint yet), and with segments stored after a drain.
func TestStatCursorLine(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	cursorLine := func() string {
		t.Helper()
		code, stdout, stderr := runCmd(t, "stat", dir)
		if code != exitOK {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		for _, l := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(l, "cursor ") {
				return strings.TrimSpace(strings.TrimPrefix(l, "cursor "))
			}
		}
		t.Fatalf("no cursor line:\n%s", stdout)
		return ""
	}
	// Mid-outage: a live Chan has stored messages and not checkpointed yet.
	cursor := filepath.Join(dir, "cursor")
	saved, err := os.ReadFile(cursor)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(cursor)
	if got, want := cursorLine(), "no cursor saved yet: reading starts at the first segment"; got != want {
		t.Errorf("without a cursor file: %q, want %q", got, want)
	}
	os.WriteFile(cursor, saved, 0o640)

	// Every message delivered, the reader not yet past the last record.
	consume(t, dir, len(all)-testConsumed)
	segs := segDirs(t, dir)
	last := segs[len(segs)-1]
	if got, want := cursorLine(), fmt.Sprintf("segment %s offset %d message 3: all stored messages delivered", last, recordOffsets(t, dir, last)[1]); got != want {
		t.Errorf("after delivering everything: %q, want %q", got, want)
	}
	// Past it: no segment left.
	s, err := spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	for {
		r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		s.Ack(spool.Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := cursorLine(), "all stored messages delivered"; got != want {
		t.Errorf("after a full drain: %q, want %q", got, want)
	}
	// Stored again since: the cursor lies before the new segment.
	s, err = spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	w := segment.NewWriter(4096)
	defer w.Close()
	w.AddBytes([]byte("later"))
	if _, err := s.Append(w.Record()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The new segment takes the cursor's number: the cursor is at its start.
	segs = segDirs(t, dir)
	if got, want := cursorLine(), fmt.Sprintf("segment %s offset 0 message 0", segs[0]); got != want {
		t.Errorf("with a segment stored after a drain: %q, want %q", got, want)
	}

	// An empty new spool.
	dir = filepath.Join(t.TempDir(), "new")
	s, err = spool.Open(dir, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "cursor"))
	if got, want := cursorLine(), "no cursor saved yet, and nothing stored"; got != want {
		t.Errorf("a new spool: %q, want %q", got, want)
	}
	s.Close()
}

// recordOffsets returns the byte offsets of the records (entries) of segment seg's WAL
// file, which has no damage.
func recordOffsets(t *testing.T, dir, seg string) []uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, seg, "00000000000000000001"))
	if err != nil {
		t.Fatal(err)
	}
	var offs []uint64
	for pos := 0; pos < len(b); {
		n, k := binary.Uvarint(b[pos:])
		if k <= 0 {
			t.Fatalf("segment %s: bad framing at %d", seg, pos)
		}
		offs = append(offs, uint64(pos))
		pos += k + int(n)
	}
	return offs
}
