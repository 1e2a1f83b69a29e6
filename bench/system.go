package main

import (
	"fmt"
	"sort"
	"strings"
)

// queue is what every system under test provides. One goroutine calls put and flush, one
// calls get; in the restart phase the two run at the same time.
type queue interface {
	// open opens the queue in dir, creating it if needed, with any backlog left there.
	open(dir string) error
	// put stores one message. The queue may keep m until it is written.
	put(m []byte) error
	// flush returns once every message put has been written to the OS (not necessarily
	// synced, unless the system is configured to sync). It ends the store phase.
	flush() error
	// get blocks until a message is available and returns it; the caller owns it.
	get() ([]byte, error)
	// finish is called once every message expected has been read: it reports how many
	// messages are still in the queue (there should be none).
	finish() (left int64, err error)
	// close closes the queue; a later open on the same dir sees what was not read.
	close() error
}

// system is one row of the tables.
type system struct {
	name string
	desc string
	new  func(cfg *config) queue
	// count, if set, is the message count n for this system instead of -n (for the slow
	// ones, so that the default run stays within minutes).
	count func(cfg *config) int
	// storeOnly systems run the store phase only; what they stored is read back and
	// checked, untimed, by a queue made with verify.
	storeOnly bool
	verify    func(cfg *config) queue
	// fifo systems promise delivery in put order; the checker enforces it.
	fifo bool
	// base is the row this one's ratios are computed against.
	base string
}

var systems = map[string]*system{}

// n is the message count of the store and read phases for s; the restart phase stores
// n/2, restarts, and stores n more.
func (s *system) n(cfg *config) int {
	if s.count != nil {
		return s.count(cfg)
	}
	return cfg.n
}

// order is the default order of the rows.
var order = []string{"pelichan", "diskqueue", "dque", "leveldb", "rawfile", "pelichan-ordered", "pelichan-syncalways", "diskqueue-sync1"}

func register(s *system) {
	if s.base == "" {
		s.base = "pelichan"
	}
	systems[s.name] = s
}

func lookupSystems(list string) ([]*system, error) {
	if list == "" || list == "all" {
		list = strings.Join(order, ",")
	}
	var out []*system
	for _, name := range strings.Split(list, ",") {
		s, ok := systems[strings.TrimSpace(name)]
		if !ok {
			names := make([]string, 0, len(systems))
			for n := range systems {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("unknown system %q (have: %s)", name, strings.Join(names, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}
