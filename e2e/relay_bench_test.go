package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayBenchRuns proves `go run ./bench` works end to end
// (slapd, byte pipe, back-ldap, the gateway binary, every workload) in a
// very short mode; the figures themselves come from `make bench`.
func TestRelayBenchRuns(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./bench", "-quick", "-users", "500",
		"-duration", "200ms", "-warmup", "100ms", "-gateway", gatewayBin)
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, res)
	}
	for _, want := range []string{"direct", "pipe", "back-ldap", "gateway", "search-8", "search-1", "bind-8",
		"gateway/pipe", "gateway/back-ldap", "gateway/direct"} {
		if !strings.Contains(string(res), want) {
			t.Errorf("bench output lacks %q:\n%s", want, res)
		}
	}
	t.Logf("bench output:\n%s", res)
}
