package pelichan

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// An ordered Close whose front segment cannot be written (its number taken by a plain
// file; a full disk does the same): the messages taken back from Out are dropped, and
// counted so (Stats.Dropped, Close's error); nothing else is lost, nothing is repeated.
func TestOrderedCloseFrontFails(t *testing.T) {
	dir := t.TempDir()
	opts := []Option{WithOrdered(), WithBuffer(400), WithSegmentSize(1 << 10), WithBatchBytes(256),
		WithLinger(2 * time.Millisecond), WithSync(SyncNever), WithErrorHandler(func(error) {})}
	src := make(chan string)
	c := open(t, dir, src, opts...)
	sent, got, _ := outFromDisk(t, c, src, "g-")
	block := filepath.Join(dir, fmt.Sprintf("%020d", uint64(spool.FirstSeq-1)))
	if err := os.WriteFile(block, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	cerr := akClose(t, c)
	st := c.Stats()
	os.Remove(block)
	rest, st2 := clReopen(t, dir, false, opts...)
	got = append(got, rest...)
	t.Logf("Close: %v\nfirst Chan %+v\nsecond Chan %+v", cerr, st, st2)
	if cerr == nil {
		t.Error("Close: nil; want the front segment's failure")
	}
	checkBalance(t, st)
	// Nothing twice, and what is missing is what the first Chan counted Dropped: at most
	// the messages that came from memory.
	seen := map[string]int{}
	for _, m := range got {
		seen[m]++
		if seen[m] == 2 {
			t.Errorf("%s delivered twice", m)
		}
	}
	var missing []string
	for _, m := range sent {
		if seen[m] == 0 {
			missing = append(missing, m)
		}
	}
	if int64(len(missing)) != st.Dropped {
		t.Errorf("%d messages lost, the first Chan counts %d Dropped: %q", len(missing), st.Dropped, missing)
	}
	if m := clLostRE.FindStringSubmatch(fmt.Sprint(cerr)); len(missing) > 0 && (m == nil || m[1] != fmt.Sprint(len(missing))) {
		t.Errorf("%d messages lost; Close's error does not say so: %v", len(missing), cerr)
	}
}

// outFromDisk is the state an ordered Close takes back from, on a Chan c opened with
// ordered options: 1000 messages stored while the consumer stalls, 700 of them taken (Out
// refills from the spool: 300 wait there), then 10 more handed out from memory behind
// them. It returns what was sent and what the consumer got, and a recv that takes until
// got holds n.
func outFromDisk(t *testing.T, c *Chan[string], src chan<- string, prefix string) (sent, got []string, recv func(n int) []string) {
	t.Helper()
	recv = func(n int) []string {
		for len(got) < n {
			select {
			case m := <-c.Out():
				got = append(got, m)
			case <-time.After(5 * time.Second):
				t.Fatalf("no message within 5s after %d", len(got))
			}
		}
		return got
	}
	for i := 0; i < 1000; i++ {
		m := msg(prefix, i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second) // consumer stalled: spilled
	}
	time.Sleep(100 * time.Millisecond)
	recv(700)
	time.Sleep(100 * time.Millisecond) // Out refilled from disk: 300 left
	for i := 1000; i < 1010; i++ {     // handed out from memory behind them
		m := msg(prefix, i)
		sent = append(sent, m)
		akSend(t, src, m, 5*time.Second)
	}
	time.Sleep(100 * time.Millisecond)
	return sent, got, recv
}
