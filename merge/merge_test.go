package merge_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/merge"
)

const base = `option "title" "Home"

2024-01-01 open Assets:Bank USD
2024-01-01 open Expenses:Food USD

2024-02-01 * "Shop" "Bread"
  Expenses:Food   3.00 USD
  Assets:Bank

2024-02-02 * "Shop" "Milk"
  Expenses:Food   2.00 USD
  Assets:Bank
`

func TestThreeWay(t *testing.T) {
	for _, tc := range []struct {
		name            string
		current, client string
		want            string
		ok              bool
	}{
		{
			name:    "DisjointRegionsMerge",
			current: strings.Replace(base, "3.00 USD", "3.50 USD", 1),
			client:  strings.Replace(base, `"Milk"`, `"Oat milk"`, 1),
			want:    strings.Replace(strings.Replace(base, "3.00 USD", "3.50 USD", 1), `"Milk"`, `"Oat milk"`, 1),
			ok:      true,
		},
		{
			name:    "OverlappingEditsConflict",
			current: strings.Replace(base, "3.00 USD", "3.50 USD", 1),
			client:  strings.Replace(base, "3.00 USD", "4.00 USD", 1),
			ok:      false,
		},
		{
			name:    "SameChangeBothSides",
			current: strings.Replace(base, "3.00 USD", "3.50 USD", 1),
			client:  strings.Replace(base, "3.00 USD", "3.50 USD", 1),
			want:    strings.Replace(base, "3.00 USD", "3.50 USD", 1),
			ok:      true,
		},
		{
			name:    "UnchangedCurrentTakesClient",
			current: base,
			client:  base + "\n2024-02-03 note Assets:Bank \"x\"\n",
			want:    base + "\n2024-02-03 note Assets:Bank \"x\"\n",
			ok:      true,
		},
		{
			name:    "AppendsAtEndBothKept",
			current: base + "\n2024-03-01 note Assets:Bank \"current\"\n",
			client:  base + "\n2024-03-02 note Assets:Bank \"client\"\n",
			want:    base + "\n2024-03-01 note Assets:Bank \"current\"\n\n2024-03-02 note Assets:Bank \"client\"\n",
			ok:      true,
		},
		{
			name:    "ClientDeletesWhatCurrentEdited",
			current: strings.Replace(base, `"Milk"`, `"Whole milk"`, 1),
			client:  strings.Replace(base, "2024-02-02 * \"Shop\" \"Milk\"\n  Expenses:Food   2.00 USD\n  Assets:Bank\n", "", 1),
			ok:      false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := merge.ThreeWay(base, tc.current, tc.client)
			if ok != tc.ok {
				t.Fatalf("ok=%v, want %v (merged %q)", ok, tc.ok, got)
			}
			if ok && got != tc.want {
				t.Fatalf("merged:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestVersionsEvictsLeastRecentlyUsed(t *testing.T) {
	v := merge.NewVersions(30)
	a := v.Add(strings.Repeat("a", 10))
	b := v.Add(strings.Repeat("b", 10))
	if got, want := a, checksum.String(strings.Repeat("a", 10)); got != want {
		t.Fatalf("Add returned %s, want the Fava checksum %s", got, want)
	}
	if _, ok := v.Get(a); !ok { // a is now the most recently used
		t.Fatal("a missing")
	}
	c := v.Add(strings.Repeat("c", 10))
	d := v.Add(strings.Repeat("d", 10)) // over 30 bytes: b goes
	if _, ok := v.Get(b); ok {
		t.Error("b kept, want evicted as least recently used")
	}
	for _, s := range []string{a, c, d} {
		if _, ok := v.Get(s); !ok {
			t.Errorf("%s evicted, want kept", s)
		}
	}
	if got, want := v.Size(), int64(30); got != want {
		t.Errorf("Size=%d, want %d", got, want)
	}
	v.Add(strings.Repeat("x", 31))
	if got, want := v.Size(), int64(30); got != want {
		t.Errorf("Size after oversized Add=%d, want %d", got, want)
	}
}

func TestVersionsConcurrent(t *testing.T) {
	v := merge.NewVersions(1 << 10)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sum := v.Add(fmt.Sprintf("g%d-%d", g, i))
				v.Get(sum)
			}
		}(g)
	}
	wg.Wait()
	if v.Size() > 1<<10 {
		t.Fatalf("Size=%d over the bound", v.Size())
	}
}

func FuzzThreeWay(f *testing.F) {
	f.Add(base, strings.Replace(base, "3.00", "3.50", 1), strings.Replace(base, "Milk", "Tea", 1))
	f.Add("a\nb\n", "a\n", "b\n")
	f.Fuzz(func(t *testing.T, b, cur, cli string) {
		got, ok := merge.ThreeWay(b, cur, cli)
		if !ok {
			return
		}
		// A clean merge keeps each side's change: merging back with
		// either side as base reproduces the merge.
		if cur == b && got != cli {
			t.Fatalf("current unchanged, merge=%q, want client %q", got, cli)
		}
		if cli == b && got != cur {
			t.Fatalf("client unchanged, merge=%q, want current %q", got, cur)
		}
	})
}
