// Package proccpu reads how much CPU time a process has used, for the
// benchmarks that report where each operation's time goes (Linux /proc).
package proccpu

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100

// Used returns the user and system CPU time process pid has used so far,
// all its threads together; 0 when it cannot be read (no such process).
func Used(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces) start
	// after its closing parenthesis.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 || i+2 > len(raw) {
		return 0
	}
	f := strings.Fields(string(raw[i+2:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// Sample is the CPU time of several processes at one moment.
type Sample []time.Duration

// Take reads the CPU time of each of pids.
func Take(pids ...int) Sample {
	s := make(Sample, len(pids))
	for i, pid := range pids {
		s[i] = Used(pid)
	}
	return s
}

// Since returns, per process, the CPU time used between before and s.
func (s Sample) Since(before Sample) Sample {
	d := make(Sample, len(s))
	for i := range s {
		d[i] = s[i] - before[i]
	}
	return d
}

// Add returns the sum of two samples of the same processes (a nil s
// counts as zeros).
func (s Sample) Add(t Sample) Sample {
	sum := make(Sample, len(t))
	for i := range t {
		sum[i] = t[i]
		if i < len(s) {
			sum[i] += s[i]
		}
	}
	return sum
}
