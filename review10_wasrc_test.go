package pelichan

import (
	"fmt"
	"testing"
	"time"
)

// Write-ahead, src closed: every item written ahead passes through readyCh's buffer; Out
// closes only once all are delivered (with acks: acknowledged), never while one waits there.
func TestReview10WriteAheadSrcClosed(t *testing.T) {
	const n = 3000
	for _, acks := range []bool{false, true} {
		for _, sync := range []Option{WithSync(SyncAlways), WithSync(SyncNever)} {
			t.Run(fmt.Sprintf("acks=%v", acks), func(t *testing.T) {
				dir := t.TempDir()
				src := make(chan string)
				opts := []Option{WithWriteAhead(), sync, WithBatchBytes(256), WithBuffer(4)}
				if acks {
					opts = append(opts, WithAcks(8))
				}
				c := open(t, dir, src, opts...)
				go func() {
					for i := range n {
						select {
						case src <- msg("w", i):
						case <-time.After(10 * time.Second):
							return
						}
					}
					close(src)
				}()
				var got []string
				if acks {
					for _, d := range akDrainAcked(t, c, 10*time.Second) {
						got = append(got, d.Msg)
					}
				} else {
					var closed bool
					got, closed = drain(c.Out(), 10*time.Second)
					if !closed {
						t.Fatalf("Out not closed after %d; %+v", len(got), c.Stats())
					}
				}
				s := c.Stats()
				akMustClose(t, c)
				checkSame(t, "write-ahead", msgs("w", n), got)
				akIdentity(t, "end", s, 0)
			})
		}
	}
}
