package main

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// The workload: log lines of 100-300 bytes, the same for every system and every run.
//
// Generating a realistic line costs more than storing it in the fastest systems, so the
// lines are made once, before anything is timed: a pool of poolSize distinct lines built
// from a seeded generator. Message i is a copy of pool[i%poolSize] with i written into its
// fixed-width seq field, so every message is unique and the consumer can check each one
// (loss, duplicates, damage) cheaply. Lines that repeat are poolSize lines (about 1.6 MB)
// apart, much further than any system's compression window (pelichan compresses 64 KiB
// batches, leveldb 4 KiB blocks), so compression sees realistic text and no repetition.

const (
	poolSize = 8192
	// Every line starts with a 27-byte timestamp, then " seq=" and ten digits.
	seqOff = len("2026-11-24T08:00:00.000000Z seq=")
	seqLen = 10
	minLen = 100
	maxLen = 300
)

var (
	levels   = []string{"INFO", "INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"}
	hosts    = []string{"web-01", "web-02", "web-03", "web-04", "web-05", "api-01", "api-02", "api-03", "worker-01", "worker-02", "worker-03", "db-proxy-1", "db-proxy-2"}
	services = []string{"checkout", "auth", "search", "catalog", "payments", "gateway", "inventory", "shipping", "notifications"}
	methods  = []string{"GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"}
	paths    = []string{"/api/v1/orders", "/api/v1/orders/{id}", "/api/v1/users/me", "/api/v2/search", "/healthz",
		"/api/v1/cart/items", "/static/js/app.3f9c1b.js", "/api/v1/payments/authorize", "/api/v2/catalog/products",
		"/login", "/logout", "/api/v1/inventory/sku", "/api/v1/shipping/quote", "/metrics", "/api/v1/notifications/unread"}
	messages = []string{"request completed", "request completed", "request completed", "cache miss, fetching from upstream",
		"slow query detected", "retrying request after timeout", "user session refreshed", "rate limit close to threshold",
		"upstream returned non-2xx status", "payload validated", "connection pool exhausted, waiting",
		"background job finished", "token expired, refreshing", "circuit breaker half-open", "wrote audit record"}
	statuses = []int{200, 200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 404, 500, 502, 503}
	agents   = []string{"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
		"curl/8.5.0", "okhttp/4.12.0", "Go-http-client/1.1", "python-requests/2.31.0", "kube-probe/1.30"}
	errs = []string{"context deadline exceeded", "connection reset by peer", "EOF", "i/o timeout",
		"no such host", "too many open files", "invalid token signature"}
	regions = []string{"eu-west-1a", "eu-west-1b", "us-east-1c", "us-east-1d"}
)

func pick[E any](r *rand.Rand, s []E) E { return s[r.IntN(len(s))] }

// workload holds the pool and hands out messages.
type workload struct {
	pool [][]byte
	slab []byte // messages are carved from 64 KiB slabs: one allocation per ~300 messages
}

func newWorkload(seed uint64) *workload {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	w := &workload{pool: make([][]byte, poolSize)}
	for i := range w.pool {
		t = t.Add(time.Duration(r.IntN(3000)) * time.Microsecond)
		w.pool[i] = genLine(r, t)
	}
	return w
}

func genLine(r *rand.Rand, t time.Time) []byte {
	b := make([]byte, 0, 2*maxLen)
	// The fields every line has (about 110 bytes).
	b = t.AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, " seq="...)
	b = append(b, "0000000000"...)
	lvl := pick(r, levels)
	b = append(b, " level="...)
	b = append(b, lvl...)
	b = append(b, " host="...)
	b = append(b, pick(r, hosts)...)
	b = append(b, " svc="...)
	b = append(b, pick(r, services)...)
	b = append(b, " req="...)
	b = appendHex(b, r.Uint64(), 12)
	b = append(b, ` msg="`...)
	b = append(b, pick(r, messages)...)
	b = append(b, '"')
	// Then optional fields, in a random order, until the line reaches its target length.
	target := minLen + r.IntN(maxLen-minLen+1)
	fields := []func([]byte) []byte{
		func(b []byte) []byte {
			b = append(b, " method="...)
			b = append(b, pick(r, methods)...)
			b = append(b, " path="...)
			p := pick(r, paths)
			if i := strings.Index(p, "{id}"); i >= 0 {
				p = p[:i] + strconv.Itoa(100000+r.IntN(900000)) + p[i+4:]
			}
			b = append(b, p...)
			b = append(b, " status="...)
			return strconv.AppendInt(b, int64(pick(r, statuses)), 10)
		},
		func(b []byte) []byte {
			b = append(b, " dur_ms="...)
			return strconv.AppendFloat(b, r.ExpFloat64()*35, 'f', 3, 64)
		},
		func(b []byte) []byte {
			b = append(b, " bytes="...)
			return strconv.AppendInt(b, int64(r.IntN(64<<10)), 10)
		},
		func(b []byte) []byte {
			b = append(b, " user_id=u"...)
			return strconv.AppendInt(b, int64(r.IntN(200000)), 10)
		},
		func(b []byte) []byte {
			b = append(b, " trace_id="...)
			return appendHex(b, r.Uint64(), 16)
		},
		func(b []byte) []byte {
			b = append(b, " region="...)
			return append(b, pick(r, regions)...)
		},
		func(b []byte) []byte {
			b = append(b, ` ua="`...)
			b = append(b, pick(r, agents)...)
			return append(b, '"')
		},
		func(b []byte) []byte {
			b = append(b, " upstream=10.0."...)
			b = strconv.AppendInt(b, int64(r.IntN(8)), 10)
			b = append(b, '.')
			b = strconv.AppendInt(b, int64(r.IntN(250)), 10)
			return strconv.AppendInt(append(b, ":8080 attempt="...), int64(r.IntN(4)), 10)
		},
	}
	if lvl == "WARN" || lvl == "ERROR" {
		fields = append(fields, func(b []byte) []byte {
			b = append(b, ` err="`...)
			b = append(b, pick(r, errs)...)
			return append(b, '"')
		})
	}
	r.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	for _, f := range fields {
		if len(b) >= target {
			break
		}
		b = f(b)
	}
	for len(b) < target {
		b = append(b, " span="...)
		b = appendHex(b, r.Uint64(), 8)
	}
	b = b[:min(len(b), maxLen)]
	return append(make([]byte, 0, len(b)), b...)
}

// appendHex appends the low n hex digits of v.
func appendHex(b []byte, v uint64, n int) []byte {
	const digits = "0123456789abcdef"
	for i := 4 * (n - 1); i >= 0; i -= 4 {
		b = append(b, digits[(v>>uint(i))&15])
	}
	return b
}

// size returns the length of message i.
func (w *workload) size(i int) int { return len(w.pool[i%poolSize]) }

// payload returns the bytes of messages [from, to).
func (w *workload) payload(from, to int) int64 {
	var n int64
	for i := from; i < to; i++ {
		n += int64(w.size(i))
	}
	return n
}

// msg returns message i in memory of its own (shared with no other live message).
func (w *workload) msg(i int) []byte {
	src := w.pool[i%poolSize]
	n := len(src)
	if cap(w.slab)-len(w.slab) < n {
		w.slab = make([]byte, 0, 64<<10)
	}
	m := w.slab[len(w.slab) : len(w.slab)+n : len(w.slab)+n]
	w.slab = w.slab[:len(w.slab)+n]
	copy(m, src)
	putSeq(m[seqOff:seqOff+seqLen], uint64(i))
	return m
}

func putSeq(d []byte, v uint64) {
	for j := seqLen - 1; j >= 0; j-- {
		d[j] = byte('0' + v%10)
		v /= 10
	}
}

// checker verifies what a consumer reads: every message intact, none twice, none missing.
type checker struct {
	w        *workload
	seen     []uint64 // bitmap of seq numbers
	total    int
	fifo     bool // messages must come in seq order
	last     int64
	got      int
	dups     int
	bad      int
	disorder int
	firstEr  string
	work     *worker // if set, the per-message work of the user view, done on every message
}

func newChecker(w *workload, total int, fifo bool) *checker {
	return &checker{w: w, seen: make([]uint64, (total+63)/64), total: total, fifo: fifo, last: -1}
}

// add checks one message read back.
func (c *checker) add(m []byte) {
	if c.work != nil {
		c.work.do(m)
	}
	c.got++
	if len(m) < seqOff+seqLen {
		c.fail("short message %q", m)
		return
	}
	var seq uint64
	for _, d := range m[seqOff : seqOff+seqLen] {
		if d < '0' || d > '9' {
			c.fail("bad seq field in %q", m)
			return
		}
		seq = seq*10 + uint64(d-'0')
	}
	if seq >= uint64(c.total) {
		c.fail("seq %d out of range (total %d)", seq, c.total)
		return
	}
	want := c.w.pool[seq%poolSize]
	if len(m) != len(want) || !bytes.Equal(m[:seqOff], want[:seqOff]) || !bytes.Equal(m[seqOff+seqLen:], want[seqOff+seqLen:]) {
		c.fail("message %d damaged: %q", seq, m)
		return
	}
	if c.fifo && int64(seq) <= c.last {
		c.disorder++
		if c.firstEr == "" {
			c.firstEr = fmt.Sprintf("message %d delivered after message %d", seq, c.last)
		}
	}
	c.last = max(c.last, int64(seq))
	if c.seen[seq/64]&(1<<(seq%64)) != 0 {
		c.dups++
		if c.firstEr == "" {
			c.firstEr = fmt.Sprintf("message %d delivered twice", seq)
		}
		return
	}
	c.seen[seq/64] |= 1 << (seq % 64)
}

func (c *checker) fail(format string, args ...any) {
	c.bad++
	if c.firstEr == "" {
		s := fmt.Sprintf(format, args...)
		if len(s) > 400 {
			s = s[:400] + "..."
		}
		c.firstEr = s
	}
}

// verify reports an error unless exactly the messages [from, to) were read, once each.
func (c *checker) verify(from, to int) error {
	missing, first := 0, -1
	for i := from; i < to; i++ {
		if c.seen[i/64]&(1<<(i%64)) == 0 {
			missing++
			if first < 0 {
				first = i
			}
		}
	}
	extra := 0
	for i := 0; i < c.total; i++ {
		if (i < from || i >= to) && c.seen[i/64]&(1<<(i%64)) != 0 {
			extra++
		}
	}
	if missing == 0 && c.dups == 0 && c.bad == 0 && extra == 0 && c.disorder == 0 && c.got == to-from {
		return nil
	}
	err := fmt.Sprintf("read %d messages, want %d: %d missing (first: seq %d), %d duplicates, %d damaged, %d unexpected, %d out of order",
		c.got, to-from, missing, first, c.dups, c.bad, extra, c.disorder)
	if c.firstEr != "" {
		err += "; first problem: " + c.firstEr
	}
	return fmt.Errorf("%s", err)
}

// msgCopy returns message i the way a shipper's producer has it: the line is built in a
// reused buffer (as bufio.Scanner hands out lines) and copied into an allocation of its
// own before it is handed on. The user view's producer uses it.
func (w *workload) msgCopy(i int, scratch *[]byte) []byte {
	src := w.pool[i%poolSize]
	b := append((*scratch)[:0], src...)
	putSeq(b[seqOff:seqOff+seqLen], uint64(i))
	*scratch = b
	return bytes.Clone(b)
}

// worker is the user view's per-message work, done by the consumer on every message it
// reads, the same for every system: split the line into its fields (the timestamp, then
// key=value pairs whose values may be quoted), parse the numeric fields a shipper would
// index (status, dur_ms, bytes) and hash every key and value, as a shipper building a
// document and a dedup key does. About 0.3-0.5 µs a line on one core.
type worker struct {
	h   maphash.Hash
	sum uint64 // kept so that the work cannot be optimized away
}

func newWorker() *worker {
	wk := &worker{}
	wk.h.SetSeed(maphash.MakeSeed())
	return wk
}

func (wk *worker) do(m []byte) {
	var sum uint64
	var status int64
	var dur float64
	// The timestamp is the first field.
	sp := bytes.IndexByte(m, ' ')
	if sp < 0 {
		sp = len(m)
	}
	wk.h.Reset()
	wk.h.Write(m[:sp])
	sum ^= wk.h.Sum64()
	rest := m[sp:]
	for len(rest) > 0 {
		if rest[0] == ' ' {
			rest = rest[1:]
			continue
		}
		eq := bytes.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		key, val := rest[:eq], rest[eq+1:]
		var end int
		if len(val) > 0 && val[0] == '"' {
			q := bytes.IndexByte(val[1:], '"')
			if q < 0 {
				q = len(val) - 1
			}
			end = q + 2
			rest = val[min(end, len(val)):]
			val = val[1 : q+1]
		} else {
			end = bytes.IndexByte(val, ' ')
			if end < 0 {
				end = len(val)
			}
			rest = val[end:]
			val = val[:end]
		}
		switch string(key) {
		case "status":
			status, _ = strconv.ParseInt(string(val), 10, 64)
		case "dur_ms":
			dur, _ = strconv.ParseFloat(string(val), 64)
		case "bytes":
			n, _ := strconv.ParseInt(string(val), 10, 64)
			sum += uint64(n)
		}
		wk.h.Reset()
		wk.h.Write(key)
		wk.h.WriteByte('=')
		wk.h.Write(val)
		sum = sum*31 + wk.h.Sum64()
	}
	wk.sum += sum + uint64(status) + uint64(dur*1000)
}
