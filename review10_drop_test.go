package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// WithMaxAge while items wait in readyCh's buffer: the segments their records are in are
// read and not acknowledged, so not dropped; what the consumer gets and what is counted
// dropped never overlap and add up to the backlog. Records of one message, segments of
// about ten records, so the items in the buffer are often from an older segment than the
// one being read.
func TestReview10MaxAgeWithItemsInBuffer(t *testing.T) {
	const n = 600
	fast := Option(func(o *options) { o.checkpoint = 5 * time.Millisecond }) // expire every 50 ms
	for run := range 3 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{WithSegmentSize(1 << 10), WithBuffer(0)}
			dmStore(t, dir, opts, "m", n)
			time.Sleep(30 * time.Millisecond)
			src := make(chan string)
			close(src)
			c := open(t, dir, src, append(opts, WithMaxAge(10*time.Millisecond), fast)...)
			var got []string
			for i := range 5 + run*3 {
				v, ok, _ := recvString(c.Out(), 5*time.Second)
				if !ok {
					t.Fatalf("message %d did not come", i)
				}
				got = append(got, v)
			}
			r10WaitBuffered(t, c, readyBuffer, 5*time.Second)
			time.Sleep(300 * time.Millisecond) // several expiry runs with the consumer stalled
			mid := c.Stats()
			akIdentity(t, "stalled", mid, n)
			rest, closed := drain(c.Out(), 10*time.Second)
			if !closed {
				t.Fatalf("Out not closed; stats %+v", c.Stats())
			}
			got = append(got, rest...)
			s := c.Stats()
			akMustClose(t, c)
			seen := map[string]bool{}
			for _, v := range got {
				if seen[v] {
					t.Errorf("%q twice", v)
				}
				seen[v] = true
			}
			akIdentity(t, "drained", s, n)
			if int64(len(got))+s.Dropped != n || s.OnDisk != 0 {
				t.Errorf("delivered %d + Dropped %d != %d (OnDisk %d); %+v", len(got), s.Dropped, n, s.OnDisk, s)
			}
			t.Logf("stalled: %+v; delivered %d, dropped %d", mid, len(got), s.Dropped)
		})
	}
}
