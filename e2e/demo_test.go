package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoRuns is the README's `make demo`: it starts a real slapd, the
// Axigen simulator and the gateway, shows alice's change arriving in
// Axigen, prints what to try, and stops cleanly on SIGTERM. (A setting
// added without a default in the demo's own configuration once made it
// refuse to start while every other test passed.)
func TestDemoRuns(t *testing.T) {
	gw, ax := demoPorts(t)
	cmd := exec.Command(gatewayBin, "demo", "--listen", fmt.Sprintf("127.0.0.1:%d", gw), "--axigen-listen", fmt.Sprintf("127.0.0.1:%d", ax))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		exited <- cmd.Wait()
	}()
	var seen []string
	deadline := time.After(120 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the demo ended before printing what to try:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, l)
			ready = strings.HasPrefix(l, "Try these")
		case <-deadline:
			t.Fatalf("the demo printed no \"Try these\" within 120 s:\n%s\nstderr:\n%s", strings.Join(seen, "\n"), stderr.String())
		}
	}
	all := strings.Join(seen, "\n")
	if !strings.Contains(all, "Axigen: account alice phone") {
		t.Errorf("the demo's own change did not reach Axigen:\n%s\nstderr:\n%s", all, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the demo's exit on SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the demo did not stop within 30 s of SIGTERM")
	}
}

// demoPorts finds a free loopback port whose successor is free too (the
// demo's ldaps:// listener takes the port after its ldap:// one), and
// another for the simulator.
func demoPorts(t *testing.T) (gw, ax int) {
	t.Helper()
	free := func(port int) bool {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		l.Close()
		return true
	}
	pick := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	for range 50 {
		gw = pick()
		if gw < 65535 && free(gw+1) {
			ax = pick()
			if ax != gw && ax != gw+1 {
				return gw, ax
			}
		}
	}
	t.Fatal("no free pair of loopback ports")
	return 0, 0
}
