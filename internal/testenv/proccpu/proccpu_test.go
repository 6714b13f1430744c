package proccpu

import (
	"os"
	"testing"
	"time"
)

// The process's own CPU time grows while it works and is read as zero for
// a process that does not exist.
func TestUsed(t *testing.T) {
	before := Take(os.Getpid(), -1)
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for Used(os.Getpid()) <= before[0] {
		if time.Now().After(deadline) {
			t.Fatal("CPU time did not grow while spinning")
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	d := Take(os.Getpid(), -1).Since(before)
	if d[0] <= 0 || d[1] != 0 {
		t.Fatalf("CPU used: %v (self), %v (no process); want > 0 and 0 (%d)", d[0], d[1], x)
	}
	if sum := d.Add(d); sum[0] != 2*d[0] {
		t.Fatalf("Add: %v", sum)
	}
}
