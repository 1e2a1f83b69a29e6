package pelichan

import (
	"runtime"
	"testing"
)

// Review 12 (f745ca0, serveIdle yields with runtime.Gosched before each job). Gosched puts
// the compressor or decoder on the global run queue. With one P (GOMAXPROCS=1: a
// container limited to one CPU, which Go 1.25 turns into GOMAXPROCS=1 by itself), the
// loop and a busy consumer hand the P to each other through runnext, which inherits the
// time slice and never advances schedtick: the global queue is looked at only when the
// local queue runs dry or when sysmon preempts a goroutine after 10 ms. The compressors
// then get the P a few times a second, and the producer's lead stays only in memory.
//
// The scenario of TestHoldLeavesProducerLeadInMemory, with GOMAXPROCS set to 1 in the
// test (so it runs so under a plain `go test`). DESIGN, "Time bound in memory": what is
// not done stays only in memory for at most the linger time plus one batch write.
//
// Passes on 94fde2b (the parent: 0 of 60000 left in src after 500 ms, InMemory 0 in 12
// of 12 trials); fails on f745ca0 (7-13k left in src, InMemory ~4558, Spilled ~10.6k);
// passes since the yield is made only with more than one P (yieldP).
func TestReview12OneProcSpillKeepsUp(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	holdLeadScenario(t, 2)
}
