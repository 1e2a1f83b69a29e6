package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestRunSmallJSON(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"-n", "20000", "-json", "-dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if r.Delivered != 20000 || r.Lost != 0 || r.Duplicated != 0 || r.Foreign != 0 {
		t.Fatalf("delivered %d, lost %d, duplicated %d, unknown %d", r.Delivered, r.Lost, r.Duplicated, r.Foreign)
	}
	if r.StoreRate <= 0 || r.RefillRate <= 0 || r.Compression < 2 || r.PeakRSSBytes <= 0 {
		t.Fatalf("implausible figures: %+v", r)
	}
}

func TestRunRateAndFixedSize(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"-n", "4000", "-rate", "20000", "-size", "120", "-sync", "always", "-outage", "50ms", "-dir", t.TempDir()}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"outage", "recovery", "check", "0 lost, 0 duplicated", "keeps up : at 20000 msgs/s", "sync always", "120 bytes on average"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-n", "0"}, {"-sync", "sometimes"}, {"-duration", "1s"}, {"extra"}, {"-nosuchflag"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
