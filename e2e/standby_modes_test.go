package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// pairWrite changes a user's phone through the pair's listening address
// and says how long the client waited for its answer.
func pairWrite(t *testing.T, p *gatewayPair, i int, value string) time.Duration {
	t.Helper()
	c := bindConn(t, p.listen, mirrorAdminDN, p.e.dir.RootPW)
	defer c.Close()
	req := ldap.NewModifyRequest(userDN(slapd.UserUID(i)), nil)
	req.Replace("telephoneNumber", []string{value})
	start := time.Now()
	if err := c.Modify(req); err != nil {
		t.Fatalf("modify %s: %v", slapd.UserUID(i), err)
	}
	return time.Since(start)
}

// Async replication: writes never wait for the standby; with the standby
// away, what it lacks is reported as the loss window, which closes again
// once it is back. A standby is not ready (/readyz) and does not listen.
func TestStandbyAsyncReportsTheLossWindow(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{Users: 4, LogLevel: "info"})
	p := newGatewayPair(t, e, "async", 2*time.Second, 5*time.Second)
	p.start(p.a)
	p.waitServing(p.a, 30*time.Second)
	p.start(p.b)
	p.waitFollowing(p.b, p.a, 30*time.Second)

	resp, err := http.Get("http://" + p.b.adminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("standby /readyz: %s, want 503", resp.Status)
	}
	if _, err := os.Stat(p.b.addrFile); err == nil {
		t.Error("the standby wrote an address file: it listens for clients")
	}
	for i := range 3 {
		pairWrite(t, p, i, fmt.Sprintf("+1 555 100%d", i))
	}
	p.waitMetric(p.a, "ldapgate_replication_loss_window_changes", 10*time.Second, func(v float64) bool { return v == 0 })
	p.waitMetric(p.b, "ldapgate_replication_lag_changes", 10*time.Second, func(v float64) bool { return v == 0 })

	p.stop(p.b)
	for i := range 3 {
		if d := pairWrite(t, p, i, fmt.Sprintf("+1 555 200%d", i)); d > 2*time.Second {
			t.Errorf("an async write waited %v with the standby away", d)
		}
	}
	loss := p.waitMetric(p.a, "ldapgate_replication_loss_window_changes", 10*time.Second, func(v float64) bool { return v >= 6 })
	t.Logf("loss window with the standby away after 3 writes: %v changes", loss)
	if v, err := p.metric(p.a, "ldapgate_replication_standby_connected"); err != nil || v != 0 {
		t.Errorf("standby_connected = %v (%v), want 0", v, err)
	}

	p.start(p.b)
	p.waitFollowing(p.b, p.a, 30*time.Second)
	p.waitMetric(p.a, "ldapgate_replication_loss_window_changes", 10*time.Second, func(v float64) bool { return v == 0 })
	e.waitMirrored(30*time.Second, false)
}

// Sync replication with the standby away: the first write waits the
// replication timeout and is then acknowledged (the directory has it), the
// primary says loudly that it runs degraded and stops waiting; once the
// standby is back and has caught up, writes wait for it again.
func TestStandbySyncDegradesWithoutTheStandbyAndResumes(t *testing.T) {
	const timeout = time.Second
	e := newMirrorEnv(t, mirrorOptions{Users: 4, LogLevel: "info"})
	p := newGatewayPair(t, e, "sync", 2*time.Second, timeout)
	p.start(p.a)
	p.waitServing(p.a, 30*time.Second)
	p.start(p.b)
	p.waitFollowing(p.b, p.a, 30*time.Second)
	if d := pairWrite(t, p, 0, "+1 555 3000"); d >= timeout {
		t.Errorf("a sync write with the standby there took %v", d)
	}

	p.stop(p.b)
	if d := pairWrite(t, p, 1, "+1 555 3001"); d < timeout || d > timeout+3*time.Second {
		t.Errorf("the first sync write without the standby took %v, want about the %v timeout", d, timeout)
	}
	if d := pairWrite(t, p, 2, "+1 555 3002"); d >= timeout {
		t.Errorf("a degraded write took %v; want no wait", d)
	}
	p.waitMetric(p.a, "ldapgate_replication_sync_degraded", 5*time.Second, func(v float64) bool { return v == 1 })
	unconfirmed := p.waitMetric(p.a, "ldapgate_replication_unconfirmed_acks_total", 5*time.Second, func(v float64) bool { return v >= 2 })
	if log, _ := os.ReadFile(p.a.logPath); !strings.Contains(string(log), "SYNCHRONOUS REPLICATION DEGRADED") {
		t.Error("the primary did not log that it degraded")
	}

	p.start(p.b)
	p.waitFollowing(p.b, p.a, 30*time.Second)
	p.waitMetric(p.a, "ldapgate_replication_sync_degraded", 10*time.Second, func(v float64) bool { return v == 0 })
	if d := pairWrite(t, p, 3, "+1 555 3003"); d >= timeout {
		t.Errorf("a sync write after the standby's return took %v", d)
	}
	if v, _ := p.metric(p.a, "ldapgate_replication_unconfirmed_acks_total"); v != unconfirmed {
		t.Errorf("unconfirmed acknowledgements went from %v to %v after the standby's return", unconfirmed, v)
	}
	e.waitMirrored(30*time.Second, false)
}
