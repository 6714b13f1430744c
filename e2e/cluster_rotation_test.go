package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// A three-way rotation of account names (alice -> tmp, bob -> alice,
// carol -> bob, tmp -> carol) with phone changes between, written through
// the three gateways of a cluster while Axigen is down, then a password
// change of the entry now named alice (bob's): delivered after the
// outage, each mailbox follows its entry — Axigen's carol is alice's
// mailbox, with alice's password — and the new password opens bob's
// mailbox, now named alice. Named as the entries are now, each delivery
// took over another person's mailbox.
func TestClusterRotationOfThreeWhileAxigenIsDown(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	nodes := c.members()
	admins := make([]*ldap.Conn, 0, len(nodes))
	for _, n := range nodes {
		admins = append(admins, c.adminConn(n))
	}
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	step := 0
	next := func() *ldap.Conn { step++; return admins[step%len(admins)] }
	adminModify(t, next(), userDN("alice"), "telephoneNumber", "+1 555 1001")
	adminRename(t, next(), "alice", "tmp")
	adminModify(t, next(), userDN("tmp"), "telephoneNumber", "+1 555 1002")
	adminRename(t, next(), "bob", "alice")
	adminModify(t, next(), userDN("alice"), "telephoneNumber", "+1 555 2001")
	adminRename(t, next(), "carol", "bob")
	adminRename(t, next(), "tmp", "carol")
	adminModify(t, next(), userDN("alice"), "userPassword", "bob-now-alice-pw")
	adminModify(t, next(), userDN("carol"), "telephoneNumber", "+1 555 1003")
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(90 * time.Second)
	if a, ok := c.e.sim.Account(mirrorDomain, "alice"); !ok || a.Password != "bob-now-alice-pw" {
		t.Errorf("Axigen's alice (bob's entry): %+v, want the new password", a)
	}
	if a, ok := c.e.sim.Account(mirrorDomain, "carol"); !ok || a.Password != slapd.AlicePassword {
		t.Errorf("Axigen's carol (alice's entry): password %q, want alice's", a.Password)
	}
	if a, ok := c.e.sim.Account(mirrorDomain, "bob"); !ok || a.Password != slapd.CarolPassword {
		t.Errorf("Axigen's bob (carol's entry): password %q, want carol's", a.Password)
	}
}

// The rotation, each rename through another gateway, while the other
// gateways change the phone numbers of the same entries as fast as they
// can under every name the rotation uses (a write to a name that has
// moved is refused, one to a name taken meanwhile lands on whoever has
// it): their records reach the journal in any order with the renames.
// Delivered after the outage, each mailbox still follows its person
// (passwords are never written, so each password says whose mailbox it
// is).
func TestClusterRotationRacingPhoneWritesWhileAxigenIsDown(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	nodes := c.members()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var made atomic.Int64
	for i, n := range nodes {
		conn := c.adminConn(n)
		wg.Go(func() {
			defer conn.Close()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				uid := []string{"alice", "bob", "carol", "tmp"}[(i+k)%4]
				m := ldap.NewModifyRequest(userDN(uid), nil)
				m.Replace("telephoneNumber", []string{fmt.Sprintf("+1 555 %d%04d", i, k%10000)})
				if err := conn.Modify(m); err == nil {
					made.Add(1)
				} else if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) && !ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) {
					t.Errorf("phone of %s: %v", uid, err)
					return
				}
			}
		})
	}
	admins := make([]*ldap.Conn, 0, len(nodes))
	for _, n := range nodes {
		admins = append(admins, c.adminConn(n))
	}
	for round := range 2 {
		for s, step := range [][2]string{{"alice", "tmp"}, {"bob", "alice"}, {"carol", "bob"}, {"tmp", "carol"}} {
			adminRename(t, admins[(round+s)%len(admins)], step[0], step[1])
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d phone changes made during the rotations", made.Load())
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(120 * time.Second)
	// Two rotations: alice's entry is named bob now, bob's carol, carol's
	// alice.
	for name, pw := range map[string]string{"bob": slapd.AlicePassword, "carol": slapd.BobPassword, "alice": slapd.CarolPassword} {
		if a, ok := c.e.sim.Account(mirrorDomain, name); !ok || a.Password != pw {
			t.Errorf("Axigen's %s: password %q, want %q (the mailbox of the entry named %s now)", name, a.Password, pw, name)
		}
	}
}
