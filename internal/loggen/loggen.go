// Package loggen generates deterministic, realistic log lines of 100-300 bytes for
// benchmarks and tests: the same seed gives the same lines. Every line carries its id, so a
// consumer can check for loss and duplicates.
package loggen

import (
	"math/rand/v2"
	"strconv"
	"time"
)

var (
	levels   = []string{"INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"}
	hosts    = []string{"web-01", "web-02", "web-03", "web-04", "api-01", "api-02", "api-03", "worker-01", "worker-02", "db-proxy-1"}
	services = []string{"checkout", "auth", "search", "catalog", "payments", "gateway", "inventory"}
	methods  = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	paths    = []string{"/api/v1/orders", "/api/v1/users/me", "/api/v2/search", "/healthz", "/api/v1/cart/items",
		"/static/app.js", "/api/v1/payments/authorize", "/api/v2/catalog/products", "/login", "/api/v1/inventory/sku"}
	messages = []string{"request completed", "cache miss, fetching from upstream", "slow query detected",
		"retrying request after timeout", "user session refreshed", "rate limit close to threshold",
		"upstream returned non-2xx status", "payload validated", "connection pool exhausted, waiting",
		"background job finished"}
	statuses = []int{200, 200, 200, 200, 201, 204, 301, 400, 404, 500, 503}
	agents   = []string{"Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0", "okhttp/4.12.0", "Go-http-client/1.1", "python-requests/2.31"}
)

// templates is how many distinct lines a generator builds up front; each line it produces
// is one of them with the id spliced in, so producing a line costs a copy, not a format.
const templates = 8192

// Gen produces log lines. It is not safe for concurrent use.
type Gen struct {
	rng   *rand.Rand
	t     time.Time
	lines [][]byte // templates
	at    []int    // where the id goes in each template
}

// New returns a generator seeded with seed.
func New(seed uint64) *Gen {
	g := &Gen{
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		t:   time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC),
	}
	for range templates {
		line, at := g.template()
		g.lines = append(g.lines, line)
		g.at = append(g.at, at)
	}
	return g
}

// Append appends the next line, carrying id, to dst. Lines are 100 to 300 bytes long.
func (g *Gen) Append(dst []byte, id uint64) []byte {
	i := g.rng.IntN(templates)
	line, at := g.lines[i], g.at[i]
	start := len(dst)
	dst = append(dst, line[:at]...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, line[at:]...)
	if len(dst)-start > 300 {
		dst = dst[:start+300]
	}
	return dst
}

func pick[E any](r *rand.Rand, s []E) E { return s[r.IntN(len(s))] }

// template builds one line without its id, and says where the id goes. It leaves room
// for an id of up to 10 digits within 300 bytes.
func (g *Gen) template() (dst []byte, at int) {
	r := g.rng
	g.t = g.t.Add(time.Duration(r.IntN(2000)) * time.Microsecond)
	start := len(dst)
	dst = g.t.AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, " level="...)
	dst = append(dst, pick(r, levels)...)
	dst = append(dst, " host="...)
	dst = append(dst, pick(r, hosts)...)
	dst = append(dst, " svc="...)
	dst = append(dst, pick(r, services)...)
	dst = append(dst, " id="...)
	at = len(dst)
	dst = append(dst, ` msg="`...)
	dst = append(dst, pick(r, messages)...)
	dst = append(dst, `" method=`...)
	dst = append(dst, pick(r, methods)...)
	dst = append(dst, " path="...)
	dst = append(dst, pick(r, paths)...)
	dst = append(dst, " status="...)
	dst = strconv.AppendInt(dst, int64(pick(r, statuses)), 10)
	dst = append(dst, " dur_ms="...)
	dst = strconv.AppendFloat(dst, r.ExpFloat64()*40, 'f', 3, 64)
	dst = append(dst, " user="...)
	dst = strconv.AppendUint(dst, uint64(r.IntN(50000)), 16)
	dst = append(dst, " trace="...)
	dst = strconv.AppendUint(dst, r.Uint64(), 16)
	target := 100 + r.IntN(191)
	if len(dst)-start < target {
		dst = append(dst, ` ua="`...)
		dst = append(dst, pick(r, agents)...)
		dst = append(dst, '"')
	}
	for len(dst)-start < target {
		dst = append(dst, " k"...)
		dst = strconv.AppendInt(dst, int64(r.IntN(100)), 10)
		dst = append(dst, '=')
		dst = strconv.AppendUint(dst, uint64(r.IntN(1_000_000)), 10)
	}
	if len(dst)-start > 290 {
		dst = dst[:start+290]
	}
	return dst, at
}

// ID extracts the id that Append put into line, or false if there is none.
func ID(line []byte) (uint64, bool) {
	const key = " id="
	for i := 0; i+len(key) <= len(line); i++ {
		if string(line[i:i+len(key)]) != key {
			continue
		}
		j := i + len(key)
		var id uint64
		k := j
		for ; k < len(line) && line[k] >= '0' && line[k] <= '9'; k++ {
			id = id*10 + uint64(line[k]-'0')
		}
		return id, k > j
	}
	return 0, false
}
