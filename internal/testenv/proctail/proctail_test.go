package proctail

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestBufferKeepsTheTail(t *testing.T) {
	b := New(10, "test", nil)
	for _, s := range []string{"first line\n", "second\n", "third\n"} {
		if _, err := b.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.String(); got != "ond\nthird\n" {
		t.Fatalf("kept %q, want the last 10 bytes", got)
	}
	c := make(chan struct{})
	if Closed(c) {
		t.Fatal("open channel reported closed")
	}
	close(c)
	if !Closed(c) || !Closed(nil) {
		t.Fatal("closed or nil channel reported open")
	}
}

// Halt stops a process with the signal, or kills one that ignores it once
// the grace period is over; PID is 0 from then on.
func TestHalt(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script string
	}{
		{"stops on SIGTERM", "echo ready; exec sleep 60"},
		{"ignores SIGTERM", "trap '' TERM; echo ready; exec sleep 60"}, // an ignored signal stays ignored across exec
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", tt.script)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The shell has set its trap once it says so.
			if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
				t.Fatalf("the shell said %q, %v", line, err)
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			if PID(cmd, exited) != cmd.Process.Pid {
				t.Fatalf("PID of a running process: %d, want %d", PID(cmd, exited), cmd.Process.Pid)
			}
			start := time.Now()
			if err := Halt("test", cmd, exited, syscall.SIGTERM, 200*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			t.Logf("halted in %v", time.Since(start))
			if !Closed(exited) || PID(cmd, exited) != 0 {
				t.Fatal("the process still runs after Halt")
			}
			if err := Halt("test", cmd, exited, syscall.SIGTERM, time.Second); err != nil {
				t.Fatalf("Halt of a stopped process: %v", err)
			}
		})
	}
}
