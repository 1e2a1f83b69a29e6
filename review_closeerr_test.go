package pelichan

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// reviewGateCodec is String, but Encode of a message starting with "S" waits (at most 10 s) for
// the gate to open, and a message starting with "E" is refused.
type reviewGateCodec struct{ gate chan struct{} }

var errReviewGateBoom = errors.New("gate codec: refused")

func (g reviewGateCodec) Encode(dst []byte, v string) ([]byte, error) {
	if strings.HasPrefix(v, "S") {
		select {
		case <-g.gate:
		case <-time.After(10 * time.Second):
		}
	}
	if strings.HasPrefix(v, "E") {
		return dst, errReviewGateBoom
	}
	return append(dst, v...), nil
}

func (reviewGateCodec) Decode(data []byte) (string, error) { return string(data), nil }

// Review of 43020ae (b): Close names messages the codec refused while it stored them. A
// shadow batch (deliveries written while they wait unacknowledged) still queued in the
// loop at Close is one of req.batches, and finish reports its refusals with closeRefused
// ("dropped"), but a shadow's refused messages are settled by settleShadow, which reports
// them again (with b.err, nil for a refusal) when not done; and when the consumer did
// acknowledge the delivery, it is done, not dropped, yet Close still says it dropped it.
func TestReviewCloseRefusedShadow(t *testing.T) {
	for _, acked := range []bool{false, true} {
		name := "unacked"
		if acked {
			name = "acked"
		}
		t.Run(name, func(t *testing.T) {
			gate := make(chan struct{})
			var once sync.Once
			open := func() { once.Do(func() { close(gate) }) }
			dir := t.TempDir()
			src := make(chan string)
			c, err := New(dir, src, reviewGateCodec{gate}, WithAcks(1000), WithBuffer(1),
				WithLinger(time.Hour), WithBatchBytes(64), WithErrorHandler(func(error) {}))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			defer open()                        // before Close: Close waits for the compressors
			akSend(t, src, "E0", 5*time.Second) // straight into Deliveries' buffer
			// Four full batches (16 messages each: WithBatchBytes(64) gives the least batch
			// count): two block the compressors, one waits in writeCh, one in the loop's queue.
			for i := range 4 * 16 {
				select {
				case src <- "S" + akMsg("", i):
				case <-time.After(5 * time.Second):
					buf := make([]byte, 1<<20)
					buf = buf[:runtime.Stack(buf, true)]
					t.Fatalf("message %d not taken; stats %+v\n%s", i, c.Stats(), buf)
				}
			}
			time.Sleep(100 * time.Millisecond)
			var got Delivery[string]
			if acked {
				d, ok, _ := akRecv(c.Deliveries(), 5*time.Second)
				if !ok || d.Msg != "E0" {
					t.Fatalf("first delivery %+v ok=%v", d, ok)
				}
				got = d
			}
			// Sync queues the shadow batch of E0 behind the blocked compressors.
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			syncErr := make(chan error, 1)
			go func() { syncErr <- c.Sync(ctx) }()
			time.Sleep(100 * time.Millisecond)
			if acked {
				if err := c.Ack(got.Seq); err != nil {
					t.Fatal(err)
				}
			}
			closeErr := make(chan error, 1)
			go func() { closeErr <- c.Close() }()
			time.Sleep(100 * time.Millisecond)
			open()
			var cerr error
			select {
			case cerr = <-closeErr:
			case <-time.After(15 * time.Second):
				t.Fatal("Close did not return within 15 s")
			}
			select {
			case <-syncErr:
			case <-time.After(15 * time.Second):
				t.Fatal("Sync did not return within 15 s")
			}
			s := c.Stats()
			t.Logf("Close: %v", cerr)
			t.Logf("Stats: %+v", s)
			checkBalance(t, s)
			if acked {
				if cerr != nil {
					t.Errorf("Close: %v; want nil: E0 was acknowledged (done), nothing was dropped (Dropped %d)", cerr, s.Dropped)
				}
				return
			}
			if cerr == nil || strings.Count(cerr.Error(), "\n") > 0 || strings.Contains(cerr.Error(), "%!w") {
				t.Errorf("Close: %q; want one error naming the 1 dropped message", cerr)
			}
		})
	}
}
