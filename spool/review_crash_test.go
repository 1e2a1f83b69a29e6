package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const reviewCrashEnv = "SPOOL_REVIEW_CRASH_DIR"

// TestReviewCrashChild is the child of TestReviewSpareRetireSIGKILL: it appends records
// to the spool for ever, reading and acknowledging some (so that consumed segments are
// retired), and logs each position Append returned, with one write(2) a line.
func TestReviewCrashChild(t *testing.T) {
	dir := os.Getenv(reviewCrashEnv)
	if dir == "" {
		t.Skip("the child of TestReviewSpareRetireSIGKILL")
	}
	round, _ := strconv.Atoi(os.Getenv("SPOOL_REVIEW_CRASH_ROUND"))
	lg, err := os.OpenFile(os.Getenv("SPOOL_REVIEW_CRASH_LOG"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s, err := Open(dir, Options{SegmentSize: 1024})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(2)
	}
	rng := rand.New(rand.NewSource(int64(round)))
	for i := 0; ; i++ {
		msg := fmt.Sprintf("r%04d-%06d", round, i)
		pos, err := s.Append(makeRecord(t, msg, msg+"-b"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child append:", err)
			os.Exit(2)
		}
		lg.Write(fmt.Appendf(nil, "A %d %d %s\n", pos.Seg, pos.Index, msg))
		// The reader falls behind, then catches up (the cursor then moves past the sealed
		// segment before the next is made).
		reads := 0
		if rng.Intn(4) == 0 {
			reads = rng.Intn(8)
		}
		for range reads {
			r, err := s.Next()
			if err != nil {
				break
			}
			lg.Write(fmt.Appendf(nil, "K %d %d\n", r.Pos.Seg, r.Pos.Index)) // before Ack: it may delete
			if err := s.Ack(Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1}); err != nil {
				fmt.Fprintln(os.Stderr, "child ack:", err)
				os.Exit(2)
			}
		}
		if i%16 == 0 {
			if err := s.Checkpoint(); err != nil {
				fmt.Fprintln(os.Stderr, "child checkpoint:", err)
				os.Exit(2)
			}
		}
	}
}

type reviewPos struct{ seg, index uint64 }

func (a reviewPos) less(b reviewPos) bool {
	return a.seg < b.seg || a.seg == b.seg && a.index < b.index
}

// Children append (and read, acknowledge, rotate, make spares, retire consumed segments)
// and are SIGKILLed at random moments, many times on one directory. After each kill the
// parent opens the spool: no damage may be reported (SIGKILL cuts no write(2) to a
// regular file short), every record appended at or after the cursor is read back at the
// position Append returned for it with its content, and no position is ever given to two
// records in the directory's life (IDs never repeat).
func TestReviewSpareRetireSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	rounds := 40
	if v, _ := strconv.Atoi(os.Getenv("SPOOL_REVIEW_CRASH_ROUNDS")); v > 0 {
		rounds = v
	}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	owner := map[reviewPos]string{} // every position ever returned, and its record
	acked := map[reviewPos]bool{}   // acknowledged by a child (or about to be)
	unacked := map[reviewPos]string{}
	for round := 1; round <= rounds; round++ {
		logPath := filepath.Join(work, fmt.Sprintf("round%03d.log", round))
		cmd := exec.Command(os.Args[0], "-test.run=^TestReviewCrashChild$")
		cmd.Env = append(os.Environ(), reviewCrashEnv+"="+dir,
			"SPOOL_REVIEW_CRASH_LOG="+logPath, fmt.Sprintf("SPOOL_REVIEW_CRASH_ROUND=%d", round))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rng.Intn(80)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			t.Fatal("the child did not end within 10 s of SIGKILL")
		}
		if strings.Contains(out.String(), "child ") {
			t.Fatalf("round %d: %s", round, out.String())
		}
		// What the child's Appends returned.
		f, err := os.OpenFile(logPath, os.O_RDONLY|os.O_CREATE, 0o644) // the child may not have made it yet
		if err != nil {
			t.Fatal(err)
		}
		appended := map[reviewPos]string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var p reviewPos
			if n, _ := fmt.Sscanf(sc.Text(), "K %d %d", &p.seg, &p.index); n == 2 {
				acked[p] = true
				continue
			}
			var msg string
			if n, _ := fmt.Sscanf(sc.Text(), "A %d %d %s", &p.seg, &p.index, &msg); n != 3 {
				continue // a line cut by the kill
			}
			if prev, ok := owner[p]; ok && prev != msg {
				t.Errorf("round %d: position %d.%d given to %s, and before to %s", round, p.seg, p.index, msg, prev)
			}
			owner[p] = msg
			appended[p] = msg
			unacked[p] = msg
		}
		f.Close()
		// The parent's look.
		var c corruptions
		s, err := Open(dir, Options{SegmentSize: 1024, OnCorrupt: c.add})
		if err != nil {
			t.Fatalf("round %d: Open: %v", round, err)
		}
		cur := s.Cursor()
		found := map[reviewPos]string{}
		for {
			r, err := s.Next()
			if err != nil {
				if err != io.EOF {
					t.Errorf("round %d: Next: %v", round, err)
				}
				break
			}
			msgs := decodeRecord(t, r.Data)
			found[reviewPos{r.Pos.Seg, r.Pos.Index}] = msgs[0]
			s.Release(r)
		}
		if err := s.Close(); err != nil {
			t.Errorf("round %d: Close: %v", round, err)
		}
		for _, e := range c.list() {
			t.Errorf("round %d: damage reported after SIGKILL: %v", round, e)
		}
		for p, msg := range found {
			if want, ok := owner[p]; ok && want != msg {
				t.Errorf("round %d: at %d.%d found %s, appended there: %s", round, p.seg, p.index, msg, want)
			}
		}
		for p := range unacked {
			if acked[p] || p.less(reviewPos{cur.Seg, cur.Index}) {
				delete(unacked, p)
			}
		}
		lost := 0
		for p, msg := range unacked {
			if !p.less(reviewPos{cur.Seg, cur.Index}) && !acked[p] {
				if found[p] != msg {
					lost++
					if lost < 5 {
						t.Errorf("round %d: %s appended at %d.%d (cursor %+v) is not read back", round, msg, p.seg, p.index, cur)
					}
				}
			}
		}
		if lost > 0 {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if fi, err := os.Stat(filepath.Join(dir, e.Name(), walFile)); err == nil {
					t.Logf("  %s: WAL %d bytes", e.Name(), fi.Size())
				} else {
					t.Logf("  %s", e.Name())
				}
			}
			var fps []string
			for p := range found {
				fps = append(fps, fmt.Sprintf("%d.%d", p.seg, p.index))
			}
			t.Logf("found %v", fps)
			t.Fatalf("round %d: %d records lost", round, lost)
		}
		t.Logf("round %d: %d appended, %d read back after the kill; cursor %+v", round, len(appended), len(found), cur)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	t.Logf("left: %v", names)
}
