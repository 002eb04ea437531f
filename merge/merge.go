// Package merge reconciles concurrent whole-file edits of a ledger file: it
// remembers recent versions of each file by checksum, and merges a client's
// edit of an old version into the current one when the two changes do not
// overlap.
//
// The three-way merge stands on go-udiff, a maintained port of the line
// diff and edit merge that gopls uses: it diffs base→current and
// base→client at line boundaries and combines the two edit lists, refusing
// when they touch overlapping regions.
package merge

import (
	"container/list"
	"sync"

	udiff "github.com/aymanbagabas/go-udiff"

	"github.com/favaproxy/favaproxy/checksum"
)

// ThreeWay merges two edits of base: current (what the file holds now) and
// client (what a client made of base). It returns the merged text and true,
// or "" and false when the edits overlap. Identical changes on both sides
// count once; two insertions at the same point are both kept, current's
// first. Texts are normalized (LF newlines), as Fava serves them.
func ThreeWay(base, current, client string) (string, bool) {
	switch {
	case current == base:
		return client, true
	case client == base || client == current:
		return current, true
	}
	ours := udiff.Lines(base, current)
	theirs := udiff.Lines(base, client)
	edits, ok := udiff.Merge(ours, theirs)
	if !ok {
		return "", false
	}
	merged, err := udiff.Apply(base, edits)
	if err != nil {
		return "", false
	}
	return merged, true
}

// Versions remembers file texts by their Fava checksum, least recently used
// first out, bounded by the total bytes it holds. The zero value is not
// usable; call NewVersions. It is safe for concurrent use.
type Versions struct {
	max int64 // bytes at most; fixed at creation

	// mu guards size, order and byKey.
	mu    sync.Mutex
	size  int64
	order *list.List               // of *version, most recently used at the front
	byKey map[string]*list.Element // checksum → element of order
}

type version struct {
	sum  string
	text string
}

// NewVersions returns a store holding at most maxBytes of text. Zero or
// negative means 32 MiB.
func NewVersions(maxBytes int64) *Versions {
	if maxBytes <= 0 {
		maxBytes = 32 << 20
	}
	return &Versions{max: maxBytes, order: list.New(), byKey: map[string]*list.Element{}}
}

// Add remembers text (normalized, as Fava hashes it) and returns its
// checksum. A text larger than the whole store is not kept.
func (v *Versions) Add(text string) string {
	sum := checksum.String(text)
	n := int64(len(text))
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.byKey[sum]; ok {
		v.order.MoveToFront(e)
		return sum
	}
	if n > v.max {
		return sum
	}
	v.byKey[sum] = v.order.PushFront(&version{sum: sum, text: text})
	v.size += n
	for v.size > v.max {
		last := v.order.Back()
		old := last.Value.(*version)
		v.order.Remove(last)
		delete(v.byKey, old.sum)
		v.size -= int64(len(old.text))
	}
	return sum
}

// Get returns the text whose checksum is sum, if it is still remembered.
func (v *Versions) Get(sum string) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.byKey[sum]
	if !ok {
		return "", false
	}
	v.order.MoveToFront(e)
	return e.Value.(*version).text, true
}

// Size returns the bytes of text held.
func (v *Versions) Size() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.size
}
