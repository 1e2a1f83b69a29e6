package pelichan_test

import (
	"fmt"
	"log"
	"os"

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
