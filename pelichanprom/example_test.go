package pelichanprom_test

import (
	"fmt"
	"log"
	"os"

	"github.com/pelichan/pelichan"
	"github.com/pelichan/pelichan/pelichanprom"
	"github.com/prometheus/client_golang/prometheus"
)

// Export a Chan's Stats on a registry; in a program, serve the registry with
// promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).
func Example() {
	dir, err := os.MkdirTemp("", "pelichanprom-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	src := make(chan string)
	c, err := pelichan.New(dir, src, pelichan.String)
	if err != nil {
		log.Fatal(err)
	}

	col := pelichanprom.NewCollector("pelichan")
	if err := col.Add("logs", c); err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)

	go func() {
		for _, line := range []string{"GET /", "GET /about", "POST /login"} {
			src <- line
		}
		close(src)
	}()
	for range c.Out() {
		// ship the line
	}
	if err := c.Close(); err != nil {
		log.Fatal(err)
	}

	// A closed Chan reports its final Stats.
	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "pelichan_received_messages_total":
			m := mf.GetMetric()[0]
			fmt.Printf("%s{spool=%q} %v\n", mf.GetName(), m.GetLabel()[0].GetValue(), m.GetCounter().GetValue())
		case "pelichan_on_disk_messages":
			m := mf.GetMetric()[0]
			fmt.Printf("%s{spool=%q} %v\n", mf.GetName(), m.GetLabel()[0].GetValue(), m.GetGauge().GetValue())
		}
	}
	// Output:
	// pelichan_on_disk_messages{spool="logs"} 0
	// pelichan_received_messages_total{spool="logs"} 3
}
