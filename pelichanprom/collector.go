// Package pelichanprom exports the Stats of one or more pelichan channels as Prometheus
// metrics.
//
// A Collector holds a set of named spools; every scrape calls Stats once on each and turns
// the snapshot into const metrics with a "spool" label. Counters end in _total, gauges
// carry their unit in the name:
//
//	c, err := pelichan.New(dir, src, pelichan.String)
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//
//	col := pelichanprom.NewCollector("pelichan")
//	if err := col.Add("logs", c); err != nil {
//		log.Fatal(err)
//	}
//	prometheus.MustRegister(col)
//	http.Handle("/metrics", promhttp.Handler())
//
// This exposes, among others, pelichan_received_messages_total{spool="logs"} and
// pelichan_on_disk_messages{spool="logs"}. Stats.LastError is not exported: its text would
// make an unbounded label; alert on pelichan_errors_total instead.
//
// Since Chan is generic, the Collector takes anything with a Stats() pelichan.Stats
// method (StatsSource), so channels of different message types share one Collector.
// Spools can be added and removed at any time, also while registered.
package pelichanprom

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/pelichan/pelichan"
	"github.com/prometheus/client_golang/prometheus"
)

// StatsSource is what a Collector reads: any *pelichan.Chan[T] is one.
type StatsSource interface {
	Stats() pelichan.Stats
}

// DefaultNamespace is the metric name prefix NewCollector uses when given "".
const DefaultNamespace = "pelichan"

// metric describes one exported metric and where its value comes from.
type metric struct {
	desc  *prometheus.Desc
	vtype prometheus.ValueType
	value func(*pelichan.Stats) float64
}

// Collector is a prometheus.Collector for a set of named pelichan spools. Its methods are
// safe for concurrent use. The zero value is not usable; call NewCollector.
type Collector struct {
	metrics []metric

	mu      sync.Mutex
	sources map[string]StatsSource
}

// NewCollector returns a Collector with no spools. The metric names start with
// namespace followed by an underscore; "" means DefaultNamespace ("pelichan").
func NewCollector(namespace string) *Collector {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	labels := []string{"spool"}
	counter := func(name, help string, v func(*pelichan.Stats) float64) metric {
		return metric{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
			vtype: prometheus.CounterValue,
			value: v,
		}
	}
	gauge := func(name, help string, v func(*pelichan.Stats) float64) metric {
		return metric{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
			vtype: prometheus.GaugeValue,
			value: v,
		}
	}
	return &Collector{
		sources: make(map[string]StatsSource),
		metrics: []metric{
			// Counters, counting from pelichan.New.
			counter("received_messages_total",
				"Messages taken from the source channel or given to Store.",
				func(s *pelichan.Stats) float64 { return float64(s.Received) }),
			counter("direct_messages_total",
				"Messages done (received from Out, or acknowledged with WithAcks) without having been stored on disk.",
				func(s *pelichan.Stats) float64 { return float64(s.Direct) }),
			counter("spilled_messages_total",
				"Messages written to the disk spool; a message written again counts again.",
				func(s *pelichan.Stats) float64 { return float64(s.Spilled) }),
			counter("refilled_messages_total",
				"Messages done (received from Out, or acknowledged with WithAcks) after having been stored on disk.",
				func(s *pelichan.Stats) float64 { return float64(s.Refilled) }),
			counter("dropped_messages_total",
				"Messages refused or dropped: encode errors, too large, undecodable, or dropped by the full-disk or max-age policy.",
				func(s *pelichan.Stats) float64 { return float64(s.Dropped) }),
			counter("corrupt_records_total",
				"Damaged records or stretches skipped in the disk spool (records, not messages).",
				func(s *pelichan.Stats) float64 { return float64(s.Corrupt) }),
			counter("redelivered_messages_total",
				"Messages delivered again: handed out by an earlier Chan on the same directory and not done then.",
				func(s *pelichan.Stats) float64 { return float64(s.Redelivered) }),
			counter("written_bytes_total",
				"Compressed record bytes written to the disk spool.",
				func(s *pelichan.Stats) float64 { return float64(s.BytesWritten) }),
			counter("read_bytes_total",
				"Compressed record bytes read from the disk spool.",
				func(s *pelichan.Stats) float64 { return float64(s.BytesRead) }),
			counter("raw_written_bytes_total",
				"Uncompressed payload bytes written to the disk spool.",
				func(s *pelichan.Stats) float64 { return float64(s.RawBytesWritten) }),
			counter("errors_total",
				"Errors passed to the error handler.",
				func(s *pelichan.Stats) float64 { return float64(s.Errors) }),

			// Gauges.
			gauge("on_disk_messages",
				"Messages stored in the disk spool and not yet done.",
				func(s *pelichan.Stats) float64 { return float64(s.OnDisk) }),
			gauge("in_memory_messages",
				"Messages taken and neither stored on disk nor done yet: pending batch, Out's buffer, unacknowledged deliveries from memory.",
				func(s *pelichan.Stats) float64 { return float64(s.InMemory) }),
			gauge("unacked_messages",
				"Messages delivered and not yet acknowledged (with WithAcks).",
				func(s *pelichan.Stats) float64 { return float64(s.Unacked) }),
			gauge("segments",
				"Segment directories in the disk spool.",
				func(s *pelichan.Stats) float64 { return float64(s.Segments) }),
			gauge("disk_bytes",
				"Bytes of segment files in the disk spool.",
				func(s *pelichan.Stats) float64 { return float64(s.DiskBytes) }),
			gauge("compression_ratio",
				"Uncompressed bytes written divided by compressed bytes written; 0 before the first write.",
				func(s *pelichan.Stats) float64 { return s.CompressionRatio }),
			gauge("oldest_age_seconds",
				"Age of the oldest batch in the disk spool; 0 if the spool is empty.",
				func(s *pelichan.Stats) float64 { return s.OldestAge.Seconds() }),
		},
	}
}

// Add starts exporting the Stats of src under the label spool="<spool>". It fails if spool
// is empty, src is nil, or a source with that name is already added.
func (c *Collector) Add(spool string, src StatsSource) error {
	if spool == "" {
		return errors.New("pelichanprom: Add: empty spool name")
	}
	if src == nil {
		return fmt.Errorf("pelichanprom: Add %q: nil source", spool)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.sources[spool]; ok {
		return fmt.Errorf("pelichanprom: Add %q: spool already added", spool)
	}
	c.sources[spool] = src
	return nil
}

// Remove stops exporting the spool with the given name, and reports whether it was there.
// A closed Chan keeps reporting its final Stats, so remove it when it is closed for good
// (its series then disappear from the next scrape).
func (c *Collector) Remove(spool string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.sources[spool]
	delete(c.sources, spool)
	return ok
}

// Describe implements prometheus.Collector. The set of descriptors is fixed, so the
// Collector is checked by a registry even when it has no spools.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: it calls Stats once on each spool, in name
// order, and sends one metric per Stats field.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	type named struct {
		spool string
		src   StatsSource
	}
	c.mu.Lock()
	srcs := make([]named, 0, len(c.sources))
	for spool, src := range c.sources {
		srcs = append(srcs, named{spool, src})
	}
	c.mu.Unlock()
	sort.Slice(srcs, func(i, j int) bool { return srcs[i].spool < srcs[j].spool })

	// Stats is called outside the lock, so a slow source does not hold up Add and Remove.
	for _, n := range srcs {
		st := n.src.Stats()
		for _, m := range c.metrics {
			ch <- prometheus.MustNewConstMetric(m.desc, m.vtype, m.value(&st), n.spool)
		}
	}
}

var _ prometheus.Collector = (*Collector)(nil)
