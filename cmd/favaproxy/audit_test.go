package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/journal"
)

func TestAuditFiltersAndFormats(t *testing.T) {
	ledger := ledgerFile(t)
	// Where serve keeps it without state_dir, and where audit looks.
	j, err := journal.Open(config.Ledger{File: ledger}.StatePath(), ledger)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for i, r := range []journal.Record{
		{Time: t0, User: "alice", Ledger: "test", Route: "PUT /test/api/add_entries", Kind: "add_entries", Key: "k1", Entries: 1, Outcome: journal.OutcomeOK, Status: 200,
			Files: []journal.FileChange{{Path: ledger, Before: strings.Repeat("a", 64), After: strings.Repeat("b", 64)}}},
		{Time: t0.Add(time.Hour), User: "bob", Ledger: "test", Route: "PUT /test/api/source", Kind: "source", Outcome: "conflict", Status: 409},
		{Time: t0.Add(2 * time.Hour), User: "alice", Ledger: "test", Route: "DELETE /test/api/source_slice", Kind: "source_slice", Outcome: journal.OutcomeOK, Status: 200},
	} {
		if err := j.Append(r); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	j.Close()

	r := favaproxy(t, nil, "audit", ledger, "--user", "alice", "--json")
	if r.code != 0 {
		t.Fatalf("audit exit %d: %s", r.code, r.stderr)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var rec journal.Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if rec.User != "alice" {
			t.Errorf("user %q in --user alice output", rec.User)
		}
		kinds = append(kinds, rec.Kind)
	}
	if got, want := strings.Join(kinds, ","), "add_entries,source_slice"; got != want {
		t.Errorf("alice's writes = %s, want %s", got, want)
	}

	r = favaproxy(t, nil, "audit", ledger, "--since", t0.Add(30*time.Minute).Format(time.RFC3339))
	if r.code != 0 {
		t.Fatalf("audit exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "bob") || !strings.Contains(lines[1], "conflict") || !strings.HasPrefix(lines[0], "TIME") {
		t.Errorf("table since 12:30 =\n%s\nwant a header, bob's conflict and alice's delete", r.stdout)
	}

	if r := favaproxy(t, nil, "audit", ledgerFile(t)); r.code != exitFailure || !strings.Contains(r.stderr, "no journal") {
		t.Errorf("audit of a ledger without journal: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := favaproxy(t, nil, "audit", ledger, "--since", "yesterday"); r.code != exitUsage {
		t.Errorf("audit --since yesterday: exit %d, want %d", r.code, exitUsage)
	}
}
