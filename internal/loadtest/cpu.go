package loadtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture's user ABI.
const userHZ = 100

// cpuTime returns the CPU time, user and system, that the processes pids
// and their children alive now (nginx's workers) have used so far.
func cpuTime(pids ...int) (time.Duration, error) {
	var total time.Duration
	all := append([]int(nil), pids...)
	for _, p := range pids {
		all = append(all, childrenOf(p)...)
	}
	for _, p := range all {
		cpu, _, err := procStat(p)
		if err != nil {
			return 0, err
		}
		total += cpu
	}
	return total, nil
}

// procStat reads the CPU time (utime + stime) and the parent of pid.
func procStat(pid int) (cpu time.Duration, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStat(string(b))
}

// parseProcStat parses /proc/<pid>/stat: after the command name in
// parentheses (which may hold spaces and parentheses) come state (field 3),
// ppid (4), ... utime (14) and stime (15), in clock ticks.
func parseProcStat(s string) (cpu time.Duration, ppid int, err error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("proc stat %q: no command name", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("proc stat %q: %d fields after the name", s, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, fmt.Errorf("proc stat ppid %q: %w", f[1], err)
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc stat cpu %q: %w", v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, ppid, nil
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil || p == pid {
			continue
		}
		if _, ppid, err := procStat(p); err == nil && ppid == pid {
			out = append(out, p)
		}
	}
	return out
}
