package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelichan/pelichan/segment"
	"github.com/pelichan/pelichan/spool"
)

func TestVerify(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	code, stdout, stderr := runCmd(t, "verify", dir)
	if code != exitOK || stderr != "" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	golden(t, "verify.golden", normalise(stdout, dir))

	code, stdout, _ = runCmd(t, "verify", "--json", dir)
	if code != exitOK {
		t.Errorf("--json: exit %d", code)
	}
	golden(t, "verify.json.golden", normalise(stdout, dir))
	var vr spool.VerifyReport
	if err := json.Unmarshal([]byte(stdout), &vr); err != nil {
		t.Fatalf("--json output is not valid JSON: %v", err)
	}
	if vr.Records != 10 || vr.Messages != int64(len(all)) || len(vr.Problems) != 0 {
		t.Errorf("--json: %+v", vr)
	}
}

func TestVerifyHelp(t *testing.T) {
	code, stdout, _ := runCmd(t, "verify", "-h")
	if code != exitOK {
		t.Errorf("exit %d", code)
	}
	golden(t, "help_verify.golden", stdout)
}

// After a byte is flipped inside a segment, verify exits 1 naming that segment and
// offset, and the library still opens the spool and delivers every other record.
func TestVerifyDamaged(t *testing.T) {
	dir, all := makeSpool(t, testConsumed)
	seg, off := damage(t, dir)
	code, stdout, _ := runCmd(t, "verify", dir)
	if code != exitProblems {
		t.Errorf("exit %d, want 1", code)
	}
	if want := fmt.Sprintf("segment %s entry 2 offset %d", seg, off); !strings.Contains(stdout, want) {
		t.Errorf("output lacks %q:\n%s", want, stdout)
	}
	golden(t, "verify_damaged.golden", normalise(stdout, dir))

	code, stdout, _ = runCmd(t, "verify", "--json", dir)
	var vr spool.VerifyReport
	if err := json.Unmarshal([]byte(stdout), &vr); err != nil {
		t.Fatalf("--json output is not valid JSON: %v", err)
	}
	if code != exitProblems || len(vr.Problems) != 1 {
		t.Fatalf("--json: exit %d, %+v", code, vr)
	}
	if p := vr.Problems[0]; p.Kind != "record" || p.Segment != seg || p.Index != 2 || p.Offset != off {
		t.Errorf("--json problem %+v, want segment %s entry 2 offset %d", p, seg, off)
	}

	// The library: every undelivered message but those of the damaged record, the second
	// of the second segment.
	first := len(walOffsets(t, filepath.Join(dir, segDirs(t, dir)[0], "00000000000000000001")))
	lost := all[(first+1)*3 : (first+2)*3]
	var reports []error
	s, err := spool.Open(dir, spool.Options{SegmentSize: testOpts.SegmentSize, NoSync: true,
		OnCorrupt: func(err error) { reports = append(reports, err) }})
	if err != nil {
		t.Fatalf("the library does not open the damaged spool: %v", err)
	}
	rd := segment.NewReader()
	defer rd.Close()
	var got []string
	for {
		r, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := rd.Decode(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		for i := int(r.Pos.Offset); i < b.Count; i++ {
			got = append(got, string(b.Message(i)))
		}
		s.Ack(spool.Cursor{Seg: r.Pos.Seg, Index: r.Pos.Index + 1})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || !strings.Contains(reports[0].Error(), fmt.Sprintf("segment %s entry 2 offset %d", seg, off)) {
		t.Errorf("library reports %v", reports)
	}
	var want []string
	for _, m := range all[testConsumed:] {
		if !contains(lost, m) {
			want = append(want, m)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the library delivered %q\nwant %q", got, want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
