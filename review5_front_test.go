package pelichan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Fixed since: was a BUG (stats / false error), review of cba3b85. An ordered Close takes back from Out
// messages refilled from several segments (and some from memory); finish acknowledges them
// with KeepConsumed on and Front writes the front segment, checkpoints it, then deletes the
// kept segments (finishFront). If one of those deletions fails (here: the rename to
// NAME.del.tmp, made to fail by a non-empty directory of that name), Front returns an error
// although the front segment is written and checkpointed: storeFront then counts every
// message taken back Dropped and Close says they "could not be stored". They are delivered
// after the next New (whose finishFront completes the deletion).
func TestReview5OrderedCloseFinishFrontFails(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(400), WithSegmentSize(1 << 10), WithBatchBytes(256),
		WithLinger(2 * time.Millisecond), WithSync(SyncNever)}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	sent, got, _ := outFromDisk(t, c, src, "f-")
	// Every segment present may be kept: make its deletion fail.
	names, _ := os.ReadDir(dir)
	var blocked []string
	for _, e := range names {
		if e.IsDir() && len(e.Name()) == 20 {
			p := filepath.Join(dir, e.Name()+".del.tmp")
			if err := os.MkdirAll(filepath.Join(p, "x"), 0o750); err != nil {
				t.Fatal(err)
			}
			blocked = append(blocked, p)
		}
	}
	cerr := akClose(t, c)
	st := c.Stats()
	for _, p := range blocked {
		os.RemoveAll(p)
	}
	rest, st2 := clReopen(t, dir, false, opts...)
	got = append(got, rest...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	checkSame(t, "after an ordered Close whose finishFront failed", sent, got)
	if st.Dropped > 0 {
		t.Errorf("first Chan counts %d messages Dropped; all %d were delivered (%d after New)", st.Dropped, len(sent), len(rest))
	}
	if cerr != nil && strings.Contains(cerr.Error(), "could not be stored") {
		t.Errorf("Close says messages could not be stored, yet they were: %v", cerr)
	}
}
