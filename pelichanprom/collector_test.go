package pelichanprom

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pelichan/pelichan"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource returns fixed Stats and counts the calls.
type fakeSource struct {
	st    pelichan.Stats
	calls atomic.Int64
}

func (f *fakeSource) Stats() pelichan.Stats {
	f.calls.Add(1)
	return f.st
}

// metricsPerSpool is the number of series one spool adds to a scrape.
const metricsPerSpool = 18

func fakeStats() pelichan.Stats {
	return pelichan.Stats{
		Received:         100,
		Direct:           60,
		Spilled:          35,
		Refilled:         20,
		OnDisk:           15,
		InMemory:         3,
		Dropped:          2,
		Corrupt:          1,
		Unacked:          4,
		Redelivered:      5,
		Segments:         2,
		DiskBytes:        8192,
		BytesWritten:     4000,
		BytesRead:        2500,
		RawBytesWritten:  14000,
		CompressionRatio: 3.5,
		OldestAge:        1500 * time.Millisecond,
		Errors:           7,
		LastError:        "pelichan: something went wrong",
	}
}

const fakeExposition = `
# HELP pelichan_compression_ratio Uncompressed bytes written divided by compressed bytes written; 0 before the first write.
# TYPE pelichan_compression_ratio gauge
pelichan_compression_ratio{spool="a"} 3.5
pelichan_compression_ratio{spool="b"} 0
# HELP pelichan_corrupt_records_total Damaged records or stretches skipped in the disk spool (records, not messages).
# TYPE pelichan_corrupt_records_total counter
pelichan_corrupt_records_total{spool="a"} 1
pelichan_corrupt_records_total{spool="b"} 0
# HELP pelichan_direct_messages_total Messages done (received from Out, or acknowledged with WithAcks) without having been stored on disk.
# TYPE pelichan_direct_messages_total counter
pelichan_direct_messages_total{spool="a"} 60
pelichan_direct_messages_total{spool="b"} 0
# HELP pelichan_disk_bytes Bytes of segment files in the disk spool.
# TYPE pelichan_disk_bytes gauge
pelichan_disk_bytes{spool="a"} 8192
pelichan_disk_bytes{spool="b"} 0
# HELP pelichan_dropped_messages_total Messages refused or dropped: encode errors, too large, undecodable, or dropped by the full-disk or max-age policy.
# TYPE pelichan_dropped_messages_total counter
pelichan_dropped_messages_total{spool="a"} 2
pelichan_dropped_messages_total{spool="b"} 0
# HELP pelichan_errors_total Errors passed to the error handler.
# TYPE pelichan_errors_total counter
pelichan_errors_total{spool="a"} 7
pelichan_errors_total{spool="b"} 0
# HELP pelichan_in_memory_messages Messages taken and neither stored on disk nor done yet: pending batch, Out's buffer, unacknowledged deliveries from memory.
# TYPE pelichan_in_memory_messages gauge
pelichan_in_memory_messages{spool="a"} 3
pelichan_in_memory_messages{spool="b"} 0
# HELP pelichan_oldest_age_seconds Age of the oldest batch in the disk spool; 0 if the spool is empty.
# TYPE pelichan_oldest_age_seconds gauge
pelichan_oldest_age_seconds{spool="a"} 1.5
pelichan_oldest_age_seconds{spool="b"} 0
# HELP pelichan_on_disk_messages Messages stored in the disk spool and not yet done.
# TYPE pelichan_on_disk_messages gauge
pelichan_on_disk_messages{spool="a"} 15
pelichan_on_disk_messages{spool="b"} 0
# HELP pelichan_raw_written_bytes_total Uncompressed payload bytes written to the disk spool.
# TYPE pelichan_raw_written_bytes_total counter
pelichan_raw_written_bytes_total{spool="a"} 14000
pelichan_raw_written_bytes_total{spool="b"} 0
# HELP pelichan_read_bytes_total Compressed record bytes read from the disk spool.
# TYPE pelichan_read_bytes_total counter
pelichan_read_bytes_total{spool="a"} 2500
pelichan_read_bytes_total{spool="b"} 0
# HELP pelichan_received_messages_total Messages taken from the source channel or given to Store.
# TYPE pelichan_received_messages_total counter
pelichan_received_messages_total{spool="a"} 100
pelichan_received_messages_total{spool="b"} 0
# HELP pelichan_redelivered_messages_total Messages delivered again: handed out by an earlier Chan on the same directory and not done then.
# TYPE pelichan_redelivered_messages_total counter
pelichan_redelivered_messages_total{spool="a"} 5
pelichan_redelivered_messages_total{spool="b"} 0
# HELP pelichan_refilled_messages_total Messages done (received from Out, or acknowledged with WithAcks) after having been stored on disk.
# TYPE pelichan_refilled_messages_total counter
pelichan_refilled_messages_total{spool="a"} 20
pelichan_refilled_messages_total{spool="b"} 0
# HELP pelichan_segments Segment directories in the disk spool.
# TYPE pelichan_segments gauge
pelichan_segments{spool="a"} 2
pelichan_segments{spool="b"} 0
# HELP pelichan_spilled_messages_total Messages written to the disk spool; a message written again counts again.
# TYPE pelichan_spilled_messages_total counter
pelichan_spilled_messages_total{spool="a"} 35
pelichan_spilled_messages_total{spool="b"} 0
# HELP pelichan_unacked_messages Messages delivered and not yet acknowledged (with WithAcks).
# TYPE pelichan_unacked_messages gauge
pelichan_unacked_messages{spool="a"} 4
pelichan_unacked_messages{spool="b"} 0
# HELP pelichan_written_bytes_total Compressed record bytes written to the disk spool.
# TYPE pelichan_written_bytes_total counter
pelichan_written_bytes_total{spool="a"} 4000
pelichan_written_bytes_total{spool="b"} 0
`

func TestCollectAndCompare(t *testing.T) {
	c := NewCollector("pelichan")
	a := &fakeSource{st: fakeStats()}
	b := &fakeSource{} // all zero
	if err := c.Add("a", a); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("b", b); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(fakeExposition)); err != nil {
		t.Fatal(err)
	}
}

func TestCollectCallsStatsOncePerSource(t *testing.T) {
	c := NewCollector("pelichan")
	a := &fakeSource{st: fakeStats()}
	b := &fakeSource{}
	if err := c.Add("a", a); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("b", b); err != nil {
		t.Fatal(err)
	}
	ch := make(chan prometheus.Metric, 2*metricsPerSpool)
	c.Collect(ch)
	close(ch)
	if n := len(ch); n != 2*metricsPerSpool {
		t.Errorf("Collect sent %d metrics, want %d", n, 2*metricsPerSpool)
	}
	if n := a.calls.Load(); n != 1 {
		t.Errorf("Stats called %d times on a, want 1", n)
	}
	if n := b.calls.Load(); n != 1 {
		t.Errorf("Stats called %d times on b, want 1", n)
	}
}

func TestCollectAndCount(t *testing.T) {
	c := NewCollector("pelichan")
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("no spools: %d metrics, want 0", n)
	}
	for i, name := range []string{"x", "y", "z"} {
		if err := c.Add(name, &fakeSource{st: fakeStats()}); err != nil {
			t.Fatal(err)
		}
		if n, want := testutil.CollectAndCount(c), (i+1)*metricsPerSpool; n != want {
			t.Errorf("%d spools: %d metrics, want %d", i+1, n, want)
		}
	}
	if n := testutil.CollectAndCount(c, "pelichan_on_disk_messages", "pelichan_received_messages_total"); n != 6 {
		t.Errorf("two names, three spools: %d metrics, want 6", n)
	}
	if !c.Remove("y") {
		t.Error("Remove(y) = false, want true")
	}
	if c.Remove("y") {
		t.Error("second Remove(y) = true, want false")
	}
	if n, want := testutil.CollectAndCount(c), 2*metricsPerSpool; n != want {
		t.Errorf("after Remove: %d metrics, want %d", n, want)
	}
	// The name is free again.
	if err := c.Add("y", &fakeSource{}); err != nil {
		t.Errorf("Add after Remove: %v", err)
	}
}

func TestAddErrors(t *testing.T) {
	c := NewCollector("pelichan")
	if err := c.Add("a", &fakeSource{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("a", &fakeSource{}); err == nil {
		t.Error("Add of a duplicate name: nil error")
	}
	if err := c.Add("", &fakeSource{}); err == nil {
		t.Error("Add with an empty name: nil error")
	}
	if err := c.Add("b", nil); err == nil {
		t.Error("Add of a nil source: nil error")
	}
	if n := testutil.CollectAndCount(c); n != metricsPerSpool {
		t.Errorf("%d metrics after failed Adds, want %d", n, metricsPerSpool)
	}
}

func TestNamespace(t *testing.T) {
	for _, tc := range []struct{ namespace, want string }{
		{"", "pelichan_received_messages_total"},
		{"pelichan", "pelichan_received_messages_total"},
		{"shipper", "shipper_received_messages_total"},
	} {
		c := NewCollector(tc.namespace)
		if err := c.Add("logs", &fakeSource{st: fakeStats()}); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`
# HELP %[1]s Messages taken from the source channel or given to Store.
# TYPE %[1]s counter
%[1]s{spool="logs"} 100
`, tc.want)
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), tc.want); err != nil {
			t.Errorf("namespace %q: %v", tc.namespace, err)
		}
	}
}

// TestLint checks the metric names and help strings against Prometheus conventions.
func TestLint(t *testing.T) {
	c := NewCollector("pelichan")
	if err := c.Add("a", &fakeSource{st: fakeStats()}); err != nil {
		t.Fatal(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestRegister checks that a pedantic registry accepts the Collector, and that Describe
// and Collect agree.
func TestRegister(t *testing.T) {
	c := NewCollector("pelichan")
	if err := c.Add("a", &fakeSource{st: fakeStats()}); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("b", &fakeSource{}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fakeExposition)); err != nil {
		t.Fatal(err)
	}
	// A second collector with the same namespace clashes; another namespace does not.
	if err := reg.Register(NewCollector("pelichan")); err == nil {
		t.Error("registering a second collector with the same namespace: nil error")
	}
	if err := reg.Register(NewCollector("other")); err != nil {
		t.Errorf("registering a collector with another namespace: %v", err)
	}
}

// TestConcurrent runs Add, Remove and Collect at once; run it with -race.
func TestConcurrent(t *testing.T) {
	c := NewCollector("pelichan")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				name := fmt.Sprintf("s%d-%d", w, i%5)
				_ = c.Add(name, &fakeSource{st: fakeStats()})
				if i%3 == 0 {
					c.Remove(name)
				}
			}
		}()
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if n := testutil.CollectAndCount(c); n%metricsPerSpool != 0 {
					t.Errorf("scrape of %d metrics, not a multiple of %d", n, metricsPerSpool)
				}
			}
		}()
	}
	wg.Wait()
}

// TestRealChan exports the Stats of a real Chan after it handed out all its messages.
func TestRealChan(t *testing.T) {
	src := make(chan string)
	ch, err := pelichan.New(t.TempDir(), src, pelichan.String)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	c := NewCollector("pelichan")
	if err := c.Add("logs", ch); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	go func() {
		for i := range 10 {
			src <- fmt.Sprintf("line %d", i)
		}
		close(src)
	}()
	n := 0
	for range ch.Out() {
		n++
	}
	if n != 10 {
		t.Fatalf("got %d messages, want 10", n)
	}

	// Everything was handed out: received 10, none held, none lost. Whether a message went
	// directly or through the disk depends on timing, so only their sum is checked.
	const want = `
# HELP pelichan_dropped_messages_total Messages refused or dropped: encode errors, too large, undecodable, or dropped by the full-disk or max-age policy.
# TYPE pelichan_dropped_messages_total counter
pelichan_dropped_messages_total{spool="logs"} 0
# HELP pelichan_in_memory_messages Messages taken and neither stored on disk nor done yet: pending batch, Out's buffer, unacknowledged deliveries from memory.
# TYPE pelichan_in_memory_messages gauge
pelichan_in_memory_messages{spool="logs"} 0
# HELP pelichan_on_disk_messages Messages stored in the disk spool and not yet done.
# TYPE pelichan_on_disk_messages gauge
pelichan_on_disk_messages{spool="logs"} 0
# HELP pelichan_received_messages_total Messages taken from the source channel or given to Store.
# TYPE pelichan_received_messages_total counter
pelichan_received_messages_total{spool="logs"} 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pelichan_received_messages_total", "pelichan_on_disk_messages",
		"pelichan_in_memory_messages", "pelichan_dropped_messages_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != metricsPerSpool {
		t.Errorf("%d metrics, want %d", n, metricsPerSpool)
	}
	direct := value(t, reg, "pelichan_direct_messages_total")
	refilled := value(t, reg, "pelichan_refilled_messages_total")
	if direct+refilled != 10 {
		t.Errorf("direct %v + refilled %v != 10", direct, refilled)
	}

	// After Close the spool keeps reporting its final values.
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"pelichan_received_messages_total", "pelichan_on_disk_messages",
		"pelichan_in_memory_messages", "pelichan_dropped_messages_total"); err != nil {
		t.Errorf("after Close: %v", err)
	}
}

// value gathers reg and returns the value of the single series named name.
func value(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%s: %d series, want 1", name, len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s: not gathered", name)
	return 0
}
