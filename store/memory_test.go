package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

const idleChildEnv = "LDAPGATE_IDLE_CHILD"

// residentKB reads the process's resident set size.
func residentKB() (int, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// idleChild opens an empty journal the way a gateway does (key, fsync,
// housekeeping, delivery running with nothing to deliver) and reports its
// resident memory before and after.
func idleChild() int {
	dir, err := os.MkdirTemp("", "ldapgate-idle-")
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	defer os.RemoveAll(dir)
	runtime.GC()
	before, _ := residentKB()
	j, err := Open(filepath.Join(dir, "journal"), Options{KeyFile: filepath.Join(dir, "journal.key"), Logger: quietLogger()})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- j.Run(ctx, 4, DeliverFunc(func(context.Context, *Record) error { return nil })) }()
	// Let Badger's background goroutines reach their steady state.
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	after, _ := residentKB()
	fmt.Printf("rss %d %d\n", before, after)
	cancel()
	<-done
	j.Close()
	return 0
}

func TestIdleJournalStaysSmall(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), idleChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("idle child: %v\n%s", err, out)
	}
	var before, after int
	if _, err := fmt.Sscanf(string(out), "rss %d %d", &before, &after); err != nil {
		t.Fatalf("idle child said %q", out)
	}
	t.Logf("resident memory: %d KiB before opening, %d KiB with an idle empty journal open (+%d KiB)", before, after, after-before)
	if after > 64<<10 {
		t.Fatalf("an idle empty journal uses %d KiB resident; want under 64 MiB", after)
	}
}
