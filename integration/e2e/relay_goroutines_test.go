package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/slapd"
)

// goroutines reads the gateway's goroutine count from its pprof endpoint.
func goroutines(t *testing.T, adminAddr string) int {
	t.Helper()
	// No keep-alive: an idle admin connection would be a goroutine too.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + adminAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("goroutine profile: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := ln.Addr().String()
	ln.Close()
	g := startGateway(t, "--upstream", dir.URL, "--admin-listen", adminAddr)

	base := goroutines(t, adminAddr) // before any LDAP session

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
	t.Logf("goroutines: %d before, %d right after 30 vanished sessions", base, goroutines(t, adminAddr))
	waitFor(t, 15*time.Second, "goroutines back to the baseline", func() error {
		if n := goroutines(t, adminAddr); n > base {
			return fmt.Errorf("%d goroutines, %d before", n, base)
		}
		return nil
	})
	g.requireAlive(t)
}
