package pelichan_test

import (
	"fmt"
	"log"
	"os"
	"time"

	"github.com/pelichan/pelichan"
)

// A consumer that keeps up gets the messages straight from memory; what it cannot take in
// time would be spilled to the directory and handed out later.
func Example() {
	dir, err := os.MkdirTemp("", "pelichan-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	src := make(chan string)
	c, err := pelichan.New(dir, src, pelichan.String)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for _, line := range []string{"GET /", "GET /about", "POST /login"} {
			src <- line
		}
		close(src) // when src is closed, Out closes once everything is handed out
	}()
	for line := range c.Out() {
		fmt.Println(line)
	}
	if err := c.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// GET /
	// GET /about
	// POST /login
}

// A shipper that sends in batches and acknowledges a batch once the receiver took it: a
// batch in its hands when the process restarts is delivered again, and nothing
// acknowledged is.
func ExampleChan_Deliveries() {
	dir, err := os.MkdirTemp("", "pelichan-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	src := make(chan string)
	c, err := pelichan.New(dir, src, pelichan.String, pelichan.WithAcks(1000))
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		for _, line := range []string{"GET /", "GET /about", "POST /login"} {
			src <- line
		}
		close(src) // Deliveries closes once every delivery is acknowledged
	}()

	var batch []pelichan.Delivery[string]
	send := func() {
		if len(batch) == 0 {
			return
		}
		for _, d := range batch {
			fmt.Println("sent", d.Msg) // a real shipper sends the batch over the network here
		}
		if err := c.AckThrough(batch[len(batch)-1].Seq); err != nil {
			log.Fatal(err)
		}
		batch = batch[:0]
	}
	flush := time.NewTicker(20 * time.Millisecond) // a partial batch goes out too
	defer flush.Stop()
	for done := false; !done; {
		select {
		case d, ok := <-c.Deliveries():
			if !ok {
				done = true
				break
			}
			batch = append(batch, d)
			if len(batch) == 200 {
				send()
			}
		case <-flush.C:
			send()
		}
	}
	if err := c.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// sent GET /
	// sent GET /about
	// sent POST /login
}
