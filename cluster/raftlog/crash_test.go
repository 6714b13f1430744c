package raftlog

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// crashChildEnv names the store directory a re-executed test binary
// appends to until it is killed (TestCrashKill9).
const crashChildEnv = "RAFTLOG_CRASH_CHILD_DIR"

// crashLog is the content of index i in the crash test: derived from the
// index alone, so that the parent can check what it reads back.
func crashLog(i uint64) *raft.Log {
	return &raft.Log{
		Index:      i,
		Term:       1 + i/1000,
		Type:       raft.LogCommand,
		Data:       []byte(strings.Repeat(strconv.FormatUint(i, 36), 1+int(i%97))),
		AppendedAt: time.Unix(int64(i), 0).UTC(),
	}
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestCrashKill9")
	}
	s, err := Open(context.Background(), dir, Options{SegmentSize: 32 << 10, Logger: quiet()})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(2)
	}
	next, _ := s.LastIndex()
	next++
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), next))
	for {
		n := 1 + rnd.IntN(40)
		logs := make([]*raft.Log, n)
		for k := range logs {
			logs[k] = crashLog(next + uint64(k))
		}
		if err := s.StoreLogs(logs); err != nil {
			fmt.Printf("error %v\n", err)
			os.Exit(2)
		}
		next += uint64(n)
		// Printed only once acknowledged: the parent's floor.
		fmt.Printf("ack %d\n", next-1)
		if rnd.IntN(50) == 0 {
			// A compaction, as after a snapshot, keeping a trailing part.
			if first, _ := s.FirstIndex(); next > first+500 {
				if err := s.DeleteRange(first, next-400); err != nil {
					fmt.Printf("error %v\n", err)
					os.Exit(2)
				}
			}
		}
	}
}

// TestCrashKill9 kills a child appending to the store at random moments;
// every reopen must succeed and hold every acknowledged index, in a
// contiguous run of intact logs. LDAPGATE_CRASH_ROUNDS sets the rounds
// (20), as for the journal's crash tests under make soak.
func TestCrashKill9(t *testing.T) {
	rounds := 20
	if v, err := strconv.Atoi(os.Getenv("LDAPGATE_CRASH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if testing.Short() {
		rounds = 3
	}
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var acked uint64
	for round := range rounds {
		cmd := exec.Command(exe, "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A failed round must not leave its child appending.
		t.Cleanup(func() { cmd.Process.Kill() })
		// Kill after a random number of acknowledged batches, at a random
		// point of the next write: from the moment the wanted ack is read,
		// the child is already on its next batch.
		want := 1 + rnd.IntN(300)
		lines := bufio.NewScanner(out)
		seen := 0
		killed := false
		for lines.Scan() {
			line := lines.Text()
			if strings.HasPrefix(line, "error ") {
				t.Fatalf("round %d: child: %s", round, line)
			}
			v, ok := strings.CutPrefix(line, "ack ")
			if !ok {
				continue // the test framework's own lines
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("round %d: %q", round, line)
			}
			acked = max(acked, n)
			if seen++; seen == want && !killed {
				time.AfterFunc(time.Duration(rnd.IntN(3000))*time.Microsecond, func() { cmd.Process.Kill() })
				killed = true
			}
		}
		cmd.Wait()
		if !killed {
			t.Fatalf("round %d: the child stopped on its own after %d batches", round, seen)
		}
		s, err := Open(context.Background(), dir, Options{SegmentSize: 32 << 10, Logger: quiet()})
		if err != nil {
			t.Fatalf("round %d: reopen after kill -9: %v", round, err)
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if last < acked {
			t.Fatalf("round %d: last index %d after kill -9; %d was acknowledged", round, last, acked)
		}
		for i := first; i <= last; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("round %d: GetLog(%d) in %d..%d: %v", round, i, first, last, err)
			}
			if w := crashLog(i); l.Index != i || string(l.Data) != string(w.Data) || l.Term != w.Term || !l.AppendedAt.Equal(w.AppendedAt) {
				t.Fatalf("round %d: index %d reads back %+v", round, i, l)
			}
		}
		s.Close()
		t.Logf("round %d: killed after %d batches; log %d..%d, %d acknowledged", round, seen, first, last, acked)
	}
}
