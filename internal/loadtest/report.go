package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// rssTarget is favaproxy's peak RSS target, in MiB, for the write and read
// runs (the hostile phase has its own, larger bound).
const rssTarget = 40

// memory gathers favaproxy's peak RSS of every run of the write and read
// phases into one phase.
func memory(phases []Phase) Phase {
	p := Phase{Name: PhaseMemory, Title: "favaproxy peak RSS (VmHWM) at the end of each run"}
	var peak int64
	for _, ph := range phases {
		for _, r := range ph.Results {
			if r.PeakRSSKiB == 0 {
				continue
			}
			setup := ph.Name + "/" + r.Setup
			if r.Upstream != "" {
				setup += " " + r.Upstream
			}
			if r.Route != "" {
				setup += " " + r.Route
			}
			p.Memory = append(p.Memory, RSS{Run: setup, PeakRSSKiB: r.PeakRSSKiB})
			if ph.Name != PhaseHostile {
				peak = max(peak, r.PeakRSSKiB)
			}
		}
	}
	if peak > 0 {
		p.Checks = append(p.Checks, atMost("favaproxy peak RSS in the write and read runs, MiB",
			float64(peak)/1024, rssTarget))
	}
	return p
}

// WriteJSON writes one JSON object per phase, one per line.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, p := range r.Phases {
		line := struct {
			Bench  string `json:"bench"`
			Date   string `json:"date"`
			Cores  int    `json:"cores"`
			GOOS   string `json:"goos"`
			GOARCH string `json:"goarch"`
			Quick  bool   `json:"quick"`
			Phase
		}{"favabench", r.Date.Format("2006-01-02T15:04:05Z"), r.Cores, r.GOOS, r.GOARCH, r.Quick, p}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

// usOrDash formats a CPU time per request, "-" for none.
func usOrDash(us float64) string {
	if us == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", us)
}

// WriteTable writes the report for people: one table per phase, then its
// checks against their targets.
func (r *Report) WriteTable(w io.Writer) error {
	quick := ""
	if r.Quick {
		quick = " (quick)"
	}
	fmt.Fprintf(w, "favabench %s, %d cores, %s/%s%s\n", r.Date.Format("2006-01-02 15:04 MST"),
		r.Cores, r.GOOS, r.GOARCH, quick)
	for _, p := range r.Phases {
		fmt.Fprintf(w, "\n%s: %s\n", strings.ToUpper(p.Name), p.Title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		if p.Name == PhaseMemory {
			fmt.Fprintf(tw, "run\tpeak RSS MiB\t\n")
			for _, m := range p.Memory {
				fmt.Fprintf(tw, "%s\t%.1f\t\n", m.Run, float64(m.PeakRSSKiB)/1024)
			}
		} else {
			fmt.Fprintf(tw, "setup\troute\tok\tfailed\tlost\tdup\tper s\tp50 ms\tp99 ms\tpeak RSS MiB\tproxy CPU µs/req\tupstream CPU µs/req\t\n")
			for _, res := range p.Results {
				rss := "-"
				if res.PeakRSSKiB > 0 {
					rss = fmt.Sprintf("%.1f", float64(res.PeakRSSKiB)/1024)
				}
				route := res.Route
				if res.Upstream != "" {
					route = res.Upstream + " " + route
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.1f\t%.2f\t%.2f\t%s\t%s\t%s\t\n", res.Setup, route,
					res.OK, res.Failed, res.Lost, res.Duplicated, res.PerSecond, res.P50Ms, res.P99Ms, rss,
					usOrDash(res.ProxyCPUUs), usOrDash(res.UpstreamCPUUs))
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, res := range p.Results {
			if res.Note != "" {
				fmt.Fprintf(w, "  %s: %s\n", res.Setup, res.Note)
			}
		}
		for _, c := range p.Checks {
			verdict := "met"
			switch {
			case c.Target == "(reported)":
				verdict = ""
			case !c.Met:
				verdict = "MISSED"
			}
			fmt.Fprintf(w, "  %-62s %9.2f  %-10s %s\n", c.Name, c.Value, c.Target, verdict)
		}
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	return nil
}
