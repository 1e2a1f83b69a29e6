package spool

import (
	"testing"
	"time"
)

// With DeferCounting, the counts Open leaves to the background are read only once
// StartCounting (or Stats, or Close) lets the counting begin, so that they do not compete
// with the first read after Open; once begun they all come in, and Close never waits for
// a counting that was not let begin. Without it, they come in with no call.
func TestCountingWaitsForStartCounting(t *testing.T) {
	orig := t.TempDir()
	bs := batches("c", 30, 3)
	writeSpool(t, orig, testOpts(), bs)
	want := int64(len(flatten(bs)))
	deferred := testOpts()
	deferred.DeferCounting = true
	// within runs f, failing the test if it does not return within 10s.
	within := func(t *testing.T, what string, f func()) {
		t.Helper()
		done := make(chan struct{})
		go func() { defer close(done); f() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not return within 10s", what)
		}
	}

	t.Run("StartCounting", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, orig, dir)
		s := mustOpen(t, dir, deferred)
		defer s.Close()
		lazy := s.Peek().Counting
		if lazy < 3 {
			t.Fatalf("Counting %d after Open: want the test's segments left to the background", lazy)
		}
		time.Sleep(20 * time.Millisecond) // time enough for a counting that had begun
		if st := s.Peek(); st.Counting != lazy {
			t.Fatalf("Counting %d -> %d before StartCounting: the counting did not wait", lazy, st.Counting)
		}
		s.StartCounting()
		s.StartCounting() // again: no effect
		within(t, "waiting for Counted after StartCounting", func() { <-s.Counted() })
		if st := s.Peek(); st.Counting != 0 || st.Undelivered != want {
			t.Fatalf("after the counting: Counting %d, Undelivered %d; want 0, %d", st.Counting, st.Undelivered, want)
		}
		if got := drain(t, s); int64(len(got)) != want { // Next never waits
			t.Fatalf("read %d messages, want %d", len(got), want)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, orig, dir)
		s := mustOpen(t, dir, deferred)
		defer s.Close()
		var st Stats
		within(t, "Stats", func() { st = s.Stats() })
		if st.Counting != 0 || st.Undelivered != want {
			t.Fatalf("Stats without StartCounting: Counting %d, Undelivered %d; want 0, %d", st.Counting, st.Undelivered, want)
		}
	})

	t.Run("Close", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, orig, dir)
		s := mustOpen(t, dir, deferred)
		if s.Peek().Counting == 0 {
			t.Fatal("nothing left to the background")
		}
		var err error
		within(t, "Close without StartCounting", func() { err = s.Close() })
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	})

	t.Run("not deferred", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, orig, dir)
		s := mustOpen(t, dir, testOpts())
		defer s.Close()
		if s.countDone == nil { // (Counting may be 0 already: the counting began at Open)
			t.Fatal("nothing left to the background")
		}
		within(t, "waiting for Counted without DeferCounting", func() { <-s.Counted() })
		if st := s.Peek(); st.Counting != 0 || st.Undelivered != want {
			t.Fatalf("after the counting: Counting %d, Undelivered %d; want 0, %d", st.Counting, st.Undelivered, want)
		}
	})
}

// waitBackground waits until s's background work (seals, counting) is over, letting the
// counting begin if it has not.
func waitBackground(s *Spool) {
	s.StartCounting()
	s.bg.Wait()
}
