package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// goroutines reads the gateway's goroutine count from its pprof endpoint
// (on the admin socket: profiles are not served over TCP).
func goroutines(t *testing.T, dataDir string) int {
	t.Helper()
	b := adminGet(t, dataDir, "/debug/pprof/goroutine?debug=1")
	first, _, _ := strings.Cut(string(b), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(first, "goroutine profile: total "))
	if err != nil {
		t.Fatalf("goroutine profile starts with %q", first)
	}
	return n
}

// TestRelayDisconnectsLeaveNoGoroutines opens many sessions that start a
// large search and vanish after its first entry; the gateway's goroutines
// return to what they were.
func TestRelayDisconnectsLeaveNoGoroutines(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{Users: 2000})
	g := startGateway(t, "--upstream", dir.URL)

	base := goroutines(t, g.DataDir) // before any LDAP session

	// One complete session, then many that vanish mid-search.
	c := bindConn(t, g.URL, dir.RootDN, dir.RootPW)
	if _, err := c.Search(ldap.NewSearchRequest(dir.Suffix, ldap.ScopeBaseObject, 0, 0, 0, false, "(objectClass=*)", nil, nil)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	for i := 0; i < 30; i++ {
		rc := dialRaw(t, g.URL)
		rc.send(t, bindRequest(1, dir.RootDN, dir.RootPW))
		rc.expectResult(t, 1, 0)
		rc.send(t, searchRequest(t, 2, dir.Suffix, "(objectClass=inetOrgPerson)"))
		if _, err := rc.next(5 * time.Second); err != nil {
			t.Fatalf("first search entry: %v", err)
		}
		rc.Conn.Close()
	}
	t.Logf("goroutines: %d before, %d right after 30 vanished sessions", base, goroutines(t, g.DataDir))
	waitFor(t, 15*time.Second, "goroutines back to the baseline", func() error {
		if n := goroutines(t, g.DataDir); n > base {
			return fmt.Errorf("%d goroutines, %d before", n, base)
		}
		return nil
	})
	g.requireAlive(t)
}
