package main

import (
	"fmt"
	"slices"
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
	// phases are the phases this system runs (store: store, then read back; restart;
	// live: producer and consumer at once); nil: store and restart. storeOnly systems run
	// the store phase only.
	phases []string
}

// runs reports whether s runs phase p.
func (s *system) runs(p string) bool {
	if s.storeOnly {
		return p == "store"
	}
	if s.phases == nil {
		return p == "store" || p == "restart"
	}
	return slices.Contains(s.phases, p)
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

// The views: how the producer and the consumer behave, and how deep pelichan's Out is.
const (
	// viewBench: the harness as it always was: WithBuffer(-buffer, 1024), the producer
	// hands out messages carved from slabs, the consumer only checks each message.
	viewBench = "bench"
	// viewUser: what a shipper sees: WithBuffer(-user-buffer, 100), the producer copies
	// each line into an allocation of its own, the consumer checks each message and does
	// per-message work (parses the line's fields and hashes them; see worker).
	viewUser = "user"
)

var views = []string{viewBench, viewUser}

// order is the default order of the rows of each view.
var order = map[string][]string{
	viewBench: {"pelichan", "diskqueue", "dque", "leveldb", "rawfile", "pelichan-ordered", "pelichan-syncalways", "diskqueue-sync1",
		"pelichan-s2", "pelichan-auto", "pelichan-wa", "pelichan-wa-syncalways", "chancopy"},
	viewUser: {"pelichan", "pelichan-s2", "pelichan-auto", "diskqueue", "rawfile", "pelichan-wa", "pelichan-wa-syncalways", "chancopy"},
}

// row is one system in one view: one row of that view's tables.
type row struct {
	view string
	sys  *system
}

func (r row) key() string { return r.view + "/" + r.sys.name }

func register(s *system) {
	if s.base == "" {
		s.base = "pelichan"
	}
	systems[s.name] = s
}

// lookupRows returns the rows of the views named in viewList, keeping the systems named
// in list (all: every system of the view).
func lookupRows(viewList, list string) ([]row, error) {
	want := map[string]bool{}
	if list != "" && list != "all" {
		for _, name := range strings.Split(list, ",") {
			name = strings.TrimSpace(name)
			if systems[name] == nil {
				return nil, unknownSystem(name)
			}
			want[name] = true
		}
	}
	var out []row
	for _, v := range strings.Split(viewList, ",") {
		v = strings.TrimSpace(v)
		names, ok := order[v]
		if !ok {
			return nil, fmt.Errorf("unknown view %q (have: %s)", v, strings.Join(views, ", "))
		}
		for _, name := range names {
			if len(want) == 0 || want[name] {
				out = append(out, row{v, systems[name]})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no system of -systems %q runs in -views %q", list, viewList)
	}
	return out, nil
}

func unknownSystem(name string) error {
	names := make([]string, 0, len(systems))
	for n := range systems {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("unknown system %q (have: %s)", name, strings.Join(names, ", "))
}
