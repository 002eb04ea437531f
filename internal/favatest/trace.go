package favatest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"sync/atomic"
	"time"
)

// TraceEvent is one line of a trace file.
type TraceEvent struct {
	PID int    `json:"pid"`
	ID  int64  `json:"id"` // pairs a start with its end within one process
	Op  string `json:"op"` // "write" or "read"
	Ev  string `json:"ev"` // "start" or "end"
	T   int64  `json:"t"`  // unix nanoseconds
}

// tracer appends events to a trace file shared by several processes. Each
// line goes out in one write(2) on a file opened with O_APPEND, so lines
// from different processes never interleave.
type tracer struct {
	f   *os.File
	pid int
}

// traceIDs numbers intervals across every tracer of the process, so two
// Servers in one process never pair each other's events.
var traceIDs atomic.Int64

func openTracer(path string) (*tracer, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	return &tracer{f: f, pid: os.Getpid()}, nil
}

// start records the start of op and returns the id to end it with. A nil
// tracer records nothing.
func (t *tracer) start(op string) int64 {
	if t == nil {
		return 0
	}
	id := traceIDs.Add(1)
	t.emit(op, "start", id)
	return id
}

func (t *tracer) end(op string, id int64) {
	if t == nil {
		return
	}
	t.emit(op, "end", id)
}

func (t *tracer) emit(op, ev string, id int64) {
	b, _ := json.Marshal(TraceEvent{PID: t.pid, ID: id, Op: op, Ev: ev, T: time.Now().UnixNano()})
	// One write per line; an error here only loses evidence, never data.
	_, _ = t.f.Write(append(b, '\n'))
}

func (t *tracer) close() error {
	if t == nil {
		return nil
	}
	return t.f.Close()
}

// Overlap counts pairs of intervals in a trace that overlap in time.
type Overlap struct {
	// WriteWrite is the number of pairs of writes that overlap.
	WriteWrite int `json:"write_write"`
	// ReadWrite is the number of (read, write) pairs that overlap.
	ReadWrite int `json:"read_write"`
	// Writes and Reads are the number of intervals seen.
	Writes, Reads int
}

type interval struct {
	op         string
	start, end int64
}

// Overlaps reads a trace file written by emulators (any number of
// processes) and counts the overlapping intervals across the whole trace.
// An interval whose end is missing (its process was killed) lasts until the
// end of time.
func Overlaps(traceFile string) (Overlap, error) {
	f, err := os.Open(traceFile)
	if err != nil {
		return Overlap{}, fmt.Errorf("read trace: %w", err)
	}
	defer f.Close()
	type key struct {
		pid int
		id  int64
	}
	open := map[key]*interval{}
	var all []*interval
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		var ev TraceEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return Overlap{}, fmt.Errorf("read trace: line %d: %w", n, err)
		}
		k := key{ev.PID, ev.ID}
		switch ev.Ev {
		case "start":
			iv := &interval{op: ev.Op, start: ev.T, end: math.MaxInt64}
			open[k] = iv
			all = append(all, iv)
		case "end":
			if iv := open[k]; iv != nil {
				iv.end = ev.T
				delete(open, k)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return Overlap{}, fmt.Errorf("read trace: %w", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start < all[j].start })
	var o Overlap
	for i, a := range all {
		if a.op == "write" {
			o.Writes++
		} else {
			o.Reads++
		}
		for _, b := range all[i+1:] {
			if b.start >= a.end {
				break
			}
			switch {
			case a.op == "write" && b.op == "write":
				o.WriteWrite++
			case a.op != b.op:
				o.ReadWrite++
			}
		}
	}
	return o, nil
}
