package pelichan

// A crash test of an ordered Close. Children run WithOrdered (consume close mode of
// crash_test.go's harness): a producer sends n poorly compressible messages, a consumer
// stalls now and then, and the child calls Close; the parent kills them at random moments,
// most of them during that Close, many times on one directory.
//
// In ordered mode Close takes back what waits in Out and stores it in a front segment, in
// front of the backlog, when Out holds a delivery from memory or the consumer took from
// Out while Close drained it (otherwise what Out holds stays in the spool, not done). The
// messages taken back that were stored (read back, or written while they waited) are
// marked done and the cursor moves over them; a kill before the front segment's
// checkpoint must leave them where they were (spool.KeepConsumed). The usual way there in
// this test is a consumer that stops for good a little before the producer's last message
// ("stop"): Out holds the last messages, handed out from memory, their copies written
// before the batch spilled behind them (or by the time bound); Close takes them back, the cursor passes that last record,
// and Front seals its segment. On 2 cores a consumer seldom takes from Out during the few
// microseconds Close drains it ("steady"), so that way is rare here. Round 0 meets a fresh
// directory, which has no cursor file before its first checkpoint: its kill is always
// aimed at Close, with the consumer stopped and messages stored behind Out's (Open then
// has no cursor file to go by, and the front segment is the first segment it finds).
//
// Flags: -crash.rounds (kills per run), -crash.seed (replays the choices, though not the
// timing: the kill delays are fractions of stretches measured in earlier rounds).
// -crash.maxdelay does not apply.

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pelichan/pelichan/spool"
)

// TestCrashOrderedCloseSIGKILL: with WithOrdered, a kill at any moment, in particular
// during Close between the cursor moving over the messages taken back from Out and the
// checkpoint of the front segment that holds them, loses nothing that was stored, and
// nothing comes out of order beyond what DESIGN.md allows; duplicates stay within the
// checkpoint window, and a round that closed gracefully did each message once.
func TestCrashOrderedCloseSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	// Poorly compressible messages and small segments, so that segments are sealed often
	// and Out's messages are a good part of one.
	cc := crashCase{name: "ordered/every50ms/buffer64", mode: "consume", sync: "every50ms", buffer: 64,
		segSize: 64 << 10, rounds: crashRounds(30), n: 4000, close: true, ordered: true, noisy: true}
	dir := filepath.Join(t.TempDir(), "spool")
	work := t.TempDir()
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 11))
	// Until a round has closed and exited: what they take on a 2-core machine under -race.
	cc.readySpan, cc.runSpan, cc.closeSpan = 150*time.Millisecond, 100*time.Millisecond, 10*time.Millisecond
	// What they took in the rounds that got through them; frontCloses: the Closes that made
	// a front segment, the ones to kill.
	var readies, runs, closes, frontCloses []time.Duration
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	fronts := map[string]bool{} // front segments seen so far
	crashFrontSegs(t, dir, fronts)
	start := time.Now()
	var rounds []*crashRound
	plans := map[string]int{}
	madeFront := 0
	made := map[int]int{} // round -> front segments it left
	for r := 0; r < cc.rounds; r++ {
		cr := crashRun(t, cc, dir, work, r, seed, rng)
		made[r] = crashFrontSegs(t, dir, fronts) // before the reopen, which may read them
		if made[r] > 0 {
			madeFront++
		}
		for _, e := range cr.errs {
			if !crashReport(t, e) {
				t.Errorf("round %d: the child reported %s", r, e)
			}
		}
		if cr.exited && (cr.closeErr == nil || *cr.closeErr != "") {
			t.Errorf("round %d: the child exited, Close: %v", r, cr.closeErr)
		}
		st := crashReopen(t, dir, cc.buffer, r, cc.opts()...)
		crashLogRound(t, cr, st)
		plan := cr.plan
		switch {
		case cr.inClose():
			plan = "in Close"
		case cr.exited:
			plan = "exited"
		case !cr.closedAt.IsZero():
			plan = "after Close returned"
		}
		plans[plan]++
		took := "-"
		if !cr.closedAt.IsZero() {
			took = cr.closedAt.Sub(cr.closeAt).Round(100 * time.Microsecond).String()
		} else if cr.inClose() {
			took = fmt.Sprintf("killed after %v", cr.killedAt.Sub(cr.closeAt).Round(100*time.Microsecond))
		}
		t.Logf("          kill aimed at %s: %s; Close called with %d in Out, consumer %q; Close took %s; front segments made: %d",
			cr.plan, plan, cr.outAtClose, cr.closeMode, took, made[r])
		// Kills spread over each stretch.
		if !cr.ready.IsZero() {
			readies = append(readies, cr.ready.Sub(cr.started))
			cc.readySpan = median(readies)
		}
		if !cr.closeAt.IsZero() {
			runs = append(runs, cr.closeAt.Sub(cr.ready))
			cc.runSpan = median(runs)
		}
		if !cr.closedAt.IsZero() {
			closes = append(closes, cr.closedAt.Sub(cr.closeAt))
			if made[r] > 0 {
				frontCloses = append(frontCloses, cr.closedAt.Sub(cr.closeAt))
			}
			cc.closeSpan = median(closes)
			if len(frontCloses) > 0 {
				cc.closeSpan = median(frontCloses)
			}
		}
		rounds = append(rounds, cr)
		if t.Failed() {
			break
		}
	}
	got, st, errs := crashDrain(t, dir, cc.opts()...)
	for _, e := range errs {
		t.Errorf("final drain reported %s", e)
	}
	t.Logf("%d rounds in %v (%v); fronts made in %d; final drain: %d messages, stats %+v",
		len(rounds), time.Since(start).Round(time.Millisecond), plans, madeFront, len(got), st)
	if st.OnDisk != 0 || st.Segments != 0 {
		t.Errorf("after the final drain: OnDisk %d, Segments %d", st.OnDisk, st.Segments)
	}
	ids := crashCheck(t, rounds, got, cc.buffer+1)
	crashExplainTwice(t, rounds, got, ids, made)
	crashCheckStored(t, rounds, ids)
	crashCheckOrder(t, rounds, got, ids, cc.buffer)
}

// crashExplainTwice says, for a session that delivered messages twice (crashCheck reports
// it), which they were and how the round before it ended: the kill that left the spool so.
func crashExplainTwice(t *testing.T, rounds []*crashRound, final []string, ids map[string]crashID, made map[int]int) {
	t.Helper()
	for si, got := range append(crashSessions(rounds), final) {
		seen := map[string]bool{}
		var twice []int
		rounds0 := map[int]bool{}
		for _, m := range got {
			if seen[m] {
				if id, ok := ids[m]; ok {
					twice = append(twice, id.seq)
					rounds0[id.round] = true
				}
			}
			seen[m] = true
		}
		if len(twice) == 0 || si == 0 {
			continue
		}
		slices.Sort(twice)
		prev := rounds[si-1]
		how := "closed and exited"
		switch {
		case prev.inClose():
			how = fmt.Sprintf("was killed %v after calling Close, before it returned (Close called with %d in Out, consumer %q), leaving %d new front segments",
				prev.killedAt.Sub(prev.closeAt).Round(time.Microsecond), prev.outAtClose, prev.closeMode, made[prev.round])
		case !prev.exited:
			how = fmt.Sprintf("was killed (aimed at %s, %v)", prev.plan, prev.delay)
		}
		t.Logf("session %d delivered %d messages twice, of rounds %v: ids %s. The round before it, %d, %s; its log ends:\n\t%s",
			si, len(twice), slices.Sorted(maps.Keys(rounds0)), crashRuns(twice), prev.round, how, strings.Join(prev.tail, "\n\t"))
	}
}

// crashFrontSegs adds the front segments now in dir to seen and returns how many were new.
func crashFrontSegs(t *testing.T, dir string, seen map[string]bool) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		seq, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || !e.IsDir() || len(e.Name()) != 20 || seq >= spool.FirstSeq || seen[e.Name()] {
			continue
		}
		seen[e.Name()] = true
		n++
	}
	return n
}

// crashCheckStored checks, per round, what its watermarks say it stored: the ids below its
// last W line (all it sent, if it closed gracefully) were stored or received at that moment
// and none is in memory only from then on, not even while Close takes Out's buffer back;
// every one must come out, in that round or later (DESIGN.md, Crash: what reached the
// spool and is not done survives). A kill may cost only the one message its consumer had
// received and not yet written down; a round that closed and exited, none.
func crashCheckStored(t *testing.T, rounds []*crashRound, ids map[string]crashID) {
	t.Helper()
	seen := map[crashID]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for _, r := range rounds {
		var missing []int
		for s := 0; s < r.needMark; s++ {
			if !seen[crashID{r.round, s}] {
				missing = append(missing, s)
			}
		}
		allowed := 1
		if r.exited {
			allowed = 0
		}
		if len(missing) <= allowed {
			continue
		}
		how := "closed and exited"
		switch {
		case r.inClose():
			how = fmt.Sprintf("killed %v after calling Close (with %d in Out), before it returned",
				r.killedAt.Sub(r.closeAt).Round(time.Microsecond), r.outAtClose)
		case !r.exited:
			how = fmt.Sprintf("killed (aimed at %s, %v)", r.plan, r.delay)
		}
		t.Errorf("round %d, %s: %d of the %d ids below its last watermark never came out: %s; its consumer received %d (last %q); its log ends:\n\t%s",
			r.round, how, len(missing), r.needMark, crashRuns(missing), len(r.recv), crashLast(r.recv),
			strings.Join(r.tail, "\n\t"))
	}
}

// crashCheckOrder checks the order of what came out (DESIGN.md, Ordering: with
// WithOrdered, src order across spill, refill and restarts; a round's messages are later
// than every earlier round's). Within one session the order is exact: its own round's
// messages in increasing order, and after the first of them nothing of an earlier round
// (new messages go behind the backlog). Across sessions, what was not delivered before
// comes out in order, except for what a kill or a receiving consumer may move:
//   - a kill: the one message the consumer had received and not written down. (What waits
//     in Out from memory is written before the first batch spilled behind it, so a kill
//     leaves it in front; before that, a block of up to Out's buffer came out after later
//     messages.)
//   - a graceful Close with the consumer receiving meanwhile: it may get messages after
//     later ones (WithOrdered's doc: nobody can tell which of Out's it took): buffer.
//   - a graceful Close with the consumer stopped before it (closeMode "stop"): none.
func crashCheckOrder(t *testing.T, rounds []*crashRound, final []string, ids map[string]crashID, buffer int) {
	t.Helper()
	for _, r := range rounds {
		last, began, bad := -1, false, 0
		for i, m := range r.recv {
			id, ok := ids[m]
			if !ok {
				continue // not a message sent (crashCheck reports it)
			}
			rr, s := id.round, id.seq
			switch {
			case rr == r.round && s <= last, rr != r.round && began:
				if bad++; bad <= 3 {
					t.Errorf("round %d: its consumer received %q (its %dth) after %q", r.round, m, i, r.recv[i-1])
				}
			}
			if rr == r.round {
				last, began = s, true
			}
		}
		if bad > 3 {
			t.Errorf("round %d: %d messages out of order in all", r.round, bad)
		}
	}

	less := func(a, b crashID) bool { return a.round < b.round || a.round == b.round && a.seq < b.seq }
	seen := map[string]bool{}
	top := crashID{-1, -1}
	var late []string
	perSession := make([]int, len(rounds)+1)
	for si, got := range append(crashSessions(rounds), final) {
		for _, m := range got {
			if seen[m] {
				continue // a duplicate: it came out in its place before
			}
			seen[m] = true
			k, ok := ids[m]
			if !ok {
				continue
			}
			if less(k, top) {
				perSession[si]++
				if len(late) < 8 {
					late = append(late, fmt.Sprintf("%d-%d in session %d after %d-%d", k.round, k.seq, si, top.round, top.seq))
				}
			} else {
				top = k
			}
		}
	}
	total := 0
	for _, n := range perSession {
		total += n
	}
	bound, kills := 0, 0
	for _, r := range rounds {
		switch {
		case !r.exited:
			bound++
			kills++
		case r.closeMode != "stop":
			bound += buffer
		}
	}
	t.Logf("order: %d messages came out for the first time after a later one (per session %v; bound %d), e.g. %v", total, perSession, bound, late)
	if total > bound {
		t.Errorf("order: %d messages came out after later ones; %d kills and the graceful rounds with a consumer receiving during Close allow %d (Out's buffer, %d, for a graceful round, the consumer's hand for a kill); e.g. %v",
			total, kills, bound, buffer, late)
	}
}

// crashSessions returns what each round's consumer received.
func crashSessions(rounds []*crashRound) [][]string {
	s := make([][]string, len(rounds))
	for i, r := range rounds {
		s[i] = r.recv
	}
	return s
}

// crashRuns writes ids as ranges: "3-7 12 15-16".
func crashRuns(ids []int) string {
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if j == i {
			fmt.Fprintf(&b, "%d", ids[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", ids[i], ids[j])
		}
		i = j + 1
	}
	return b.String()
}

func crashLast(recv []string) string {
	if len(recv) == 0 {
		return ""
	}
	m := recv[len(recv)-1]
	if r, s, ok := crashParse(m); ok {
		return fmt.Sprintf("%d-%d", r, s)
	}
	return m[:min(len(m), 40)]
}
