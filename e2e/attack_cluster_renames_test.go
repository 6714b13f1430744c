package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// Attacks on a cluster's deliveries naming each account or group by the
// DN its entry's next rename moved it from (Journal.RenameAfter,
// Mapping.NameInDN): rotations of names delivered after an Axigen outage,
// with moves between units, moves out of the bases and back, multi-valued
// RDNs, deleteoldrdn=false, case-only renames, deletes and re-adds, refused
// renames, password changes, leader crashes and groups. Each mailbox is
// told apart by its password: Axigen's is set only from journaled password
// changes, so an initial password never changed marks its original
// mailbox, and a password changed marks the mailbox of the entry it was
// set on.

// renameVia sends a modify DN of dn to newRDN (under newSup when not "")
// through conn, retrying while the cluster answers unavailable (electing a
// leader) or the gateway busy (a write of the entry still on its way: its
// Commit goes in the background), and returns the directory's (or
// gateway's) answer.
func renameVia(t *testing.T, conn *ldap.Conn, dn, newRDN string, deleteOld bool, newSup string) error {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := conn.ModifyDN(ldap.NewModifyDNRequest(dn, newRDN, deleteOld, newSup))
		retry := ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) || ldap.IsErrorWithCode(err, ldap.LDAPResultBusy)
		if err == nil || !retry || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond) // a new leader is being elected, or a write of the entry is answered
	}
}

func mustRename(t *testing.T, conn *ldap.Conn, dn, newRDN string, deleteOld bool, newSup string) {
	t.Helper()
	if err := renameVia(t, conn, dn, newRDN, deleteOld, newSup); err != nil {
		t.Fatalf("modify DN %s -> %s (newSuperior %q, deleteoldrdn %v): %v", dn, newRDN, newSup, deleteOld, err)
	}
}

// setPassword sets dn's password through conn (password modify), retrying
// while the cluster answers unavailable.
func setPassword(t *testing.T, conn *ldap.Conn, dn, pw string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := conn.PasswordModify(ldap.NewPasswordModifyRequest(dn, "", pw))
		if err == nil {
			return
		}
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) || time.Now().After(deadline) {
			t.Fatalf("password of %s: %v", dn, err)
		}
		time.Sleep(200 * time.Millisecond) // a new leader is being elected
	}
}

// directAdd adds an entry straight to slapd (organisational units the
// tests move accounts between: no account, no record).
func (c *clusterEnv) directAdd(dn string, attrs map[string][]string) {
	c.t.Helper()
	conn, err := c.e.dir.AdminConn(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close()
	req := ldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		req.Attribute(k, v)
	}
	if err := conn.Add(req); err != nil {
		c.t.Fatalf("add %s to slapd: %v", dn, err)
	}
}

// wantMailboxes checks that Axigen's account of each name has the
// password that marks whose mailbox it is.
func (c *clusterEnv) wantMailboxes(want map[string]string) {
	c.t.Helper()
	for name, pw := range want {
		a, ok := c.e.sim.Account(mirrorDomain, name)
		switch {
		case !ok:
			c.t.Errorf("Axigen has no account %s (want the mailbox with password %q)", name, pw)
		case a.Password != pw:
			c.t.Errorf("Axigen's %s has password %q, want %q: another person's mailbox", name, a.Password, pw)
		}
	}
}

// wantEntry checks that the directory has an entry at dn.
func (c *clusterEnv) wantEntry(dn string) {
	c.t.Helper()
	if c.e.directoryEntry(dn) == nil {
		c.t.Errorf("the directory has no entry %s", dn)
	}
}

// clusterConns are admin connections to every member, in order.
func (c *clusterEnv) clusterConns() []*ldap.Conn {
	var out []*ldap.Conn
	for _, n := range c.members() {
		out = append(out, c.adminConn(n))
	}
	return out
}

// FIXED (failed 4 of 4 runs): no SET name was ever sent; Axigen alice (alice-pw, her
// mailbox) ends with Bob's entry (firstName Bob, bob@example.com) and Axigen
// bob (bob-pw) with Alice's. The move-out record is named by the next
// rename's DN, uid=alice,ou=outside, a DN out of the bases (NameInDN does
// not ask), so alice's account keeps its name; bob's rename then finds an
// account alice and updates it instead of renaming bob. A lone gateway does
// the same (TestAttackLoneRotationThroughOutsideTheBases).
//
// A rotation through a unit outside the bases: alice's entry moves out of
// the account base (keeping uid=alice, now under ou=outside), bob takes
// the name alice, and alice's entry comes back in as bob; a phone change
// of each between, through another gateway; all while Axigen is down. The
// next rename's DN of alice's first record is uid=alice,ou=outside: a name
// in the DN, but of an entry out of the bases.
func TestAttackClusterRotationThroughOutsideTheBases(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.directAdd("ou=outside,"+mirrorSuffix, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"outside"}})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	outside := "ou=outside," + mirrorSuffix
	adminModify(t, g[1], userDN("alice"), "telephoneNumber", "+1 555 7001")
	mustRename(t, g[0], userDN("alice"), "uid=alice", true, outside)
	adminModify(t, g[2], userDN("bob"), "telephoneNumber", "+1 555 7002")
	mustRename(t, g[1], userDN("bob"), "uid=alice", true, "")
	adminModify(t, g[0], userDN("alice"), "telephoneNumber", "+1 555 7003")
	mustRename(t, g[2], "uid=alice,"+outside, "uid=bob", true, mirrorAccountBase)
	adminModify(t, g[0], userDN("bob"), "telephoneNumber", "+1 555 7004")
	c.axigenBack(30*time.Second, map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "carol": slapd.CarolPassword})
}

// HELD (4 of 4 runs).
//
// A rotation whose renames also move the entries between units of the
// account base (newSuperior), and end with moves that change only the
// superior: alice -> uid=tmp,ou=unit1; bob -> uid=alice,ou=unit2;
// tmp,ou=unit1 -> uid=bob,ou=unit2; then alice,ou=unit2 moves to ou=unit1
// and bob,ou=unit2 back to ou=people, each through another gateway, with
// phone changes between, while Axigen is down.
func TestAttackClusterRotationWithMovesBetweenUnits(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	unit := func(u string) string { return "ou=" + u + "," + mirrorAccountBase }
	for _, u := range []string{"unit1", "unit2"} {
		c.directAdd(unit(u), map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {u}})
	}
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	mustRename(t, g[0], userDN("alice"), "uid=tmp", true, unit("unit1"))
	adminModify(t, g[1], "uid=tmp,"+unit("unit1"), "telephoneNumber", "+1 555 7101")
	mustRename(t, g[1], userDN("bob"), "uid=alice", true, unit("unit2"))
	adminModify(t, g[2], "uid=alice,"+unit("unit2"), "telephoneNumber", "+1 555 7102")
	mustRename(t, g[2], "uid=tmp,"+unit("unit1"), "uid=bob", true, unit("unit2"))
	mustRename(t, g[0], "uid=alice,"+unit("unit2"), "uid=alice", true, unit("unit1"))
	adminModify(t, g[1], "uid=alice,"+unit("unit1"), "telephoneNumber", "+1 555 7103")
	mustRename(t, g[1], "uid=bob,"+unit("unit2"), "uid=bob", true, mirrorAccountBase)
	adminModify(t, g[2], userDN("bob"), "telephoneNumber", "+1 555 7104")
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(30 * time.Second)
	c.wantEntry("uid=alice," + unit("unit1"))
	c.wantEntry(userDN("bob"))
	c.wantMailboxes(map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "carol": slapd.CarolPassword})
}

// HELD (3 of 3 runs; slapd takes the case-only rename).
//
// RDN shapes in a swap: alice's entry is renamed to a multi-valued RDN
// whose first value is not the name (cn=Alice Liddell+uid=tmp), bob takes
// alice with deleteoldrdn=false (his entry keeps uid: bob as a value
// beside alice, named by its RDN), and alice's entry takes bob back to a
// single RDN. Then a case-only rename of bob's entry (uid=alice ->
// uid=Alice). Through three gateways, while Axigen is down.
func TestAttackClusterSwapWithRDNShapes(t *testing.T) {
	c, g := axigenDownCluster(t)
	mustRename(t, g[0], userDN("alice"), "cn=Alice Liddell+uid=tmp", true, "")
	adminModify(t, g[1], "cn=Alice Liddell+uid=tmp,"+mirrorAccountBase, "telephoneNumber", "+1 555 7201")
	mustRename(t, g[1], userDN("bob"), "uid=alice", false, "")
	adminModify(t, g[2], userDN("alice"), "telephoneNumber", "+1 555 7202")
	// deleteoldrdn=false: cn=Alice Liddell is the entry's only cn, which
	// inetOrgPerson requires (uid: tmp stays too).
	mustRename(t, g[2], "cn=Alice Liddell+uid=tmp,"+mirrorAccountBase, "uid=bob", false, "")
	adminModify(t, g[0], userDN("bob"), "telephoneNumber", "+1 555 7203")
	// Case only: the directory may take it or refuse it; either way the
	// answer must be a standard one and the mailboxes unmoved.
	err := renameVia(t, g[0], userDN("alice"), "uid=Alice", true, "")
	t.Logf("case-only rename uid=alice -> uid=Alice: %v", err)
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) {
		t.Errorf("case-only rename: %v (want success or entryAlreadyExists)", err)
	}
	c.axigenBack(30*time.Second, map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "carol": slapd.CarolPassword})
}

// HELD (3 of 3 runs; the refused rename is answered 68).
//
// A rotation with a rename refused by the directory in the middle (onto
// carol's DN), a delete of carol and a re-add of the name carol by
// another person through another gateway, and password changes between;
// each person's mailbox must carry the LAST password set on that person.
// All while Axigen is down.
func TestAttackClusterRotationWithRefusalDeleteReAddAndPasswords(t *testing.T) {
	c, g := axigenDownCluster(t)
	setPassword(t, g[2], userDN("alice"), "alice-pw-1")
	mustRename(t, g[0], userDN("alice"), "uid=tmp", true, "")
	setPassword(t, g[1], userDN("tmp"), "alice-pw-2")
	// Refused: carol holds that DN.
	err := renameVia(t, g[1], userDN("bob"), "uid=carol", true, "")
	if err == nil {
		t.Fatal("rename of bob onto carol's DN was taken")
	}
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultEntryAlreadyExists) && !ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation) {
		t.Errorf("rename of bob onto carol's DN: %v (want entryAlreadyExists or constraintViolation)", err)
	}
	mustRename(t, g[1], userDN("bob"), "uid=alice", true, "")
	setPassword(t, g[0], userDN("alice"), "bob-pw-1")
	// carol goes, a newcomer takes her name through another gateway.
	if err := g[2].Del(ldap.NewDelRequest(userDN("carol"), nil)); err != nil {
		t.Fatalf("delete carol: %v", err)
	}
	add := accountAdd(userDN("carol"), "carol")
	if err := g[0].Add(add); err != nil {
		t.Fatalf("re-add carol: %v", err)
	}
	mustRename(t, g[2], userDN("tmp"), "uid=bob", true, "")
	setPassword(t, g[1], userDN("bob"), "alice-pw-3")
	adminModify(t, g[0], userDN("alice"), "telephoneNumber", "+1 555 7301")
	c.axigenBack(30*time.Second, map[string]string{"bob": "alice-pw-3", "alice": "bob-pw-1", "carol": "pw-carol"})
}

// HELD (3 of 3 runs).
//
// A rotation whose renames go through different gateways with the leader
// killed (-9) right after each acknowledged rename (its Commit may still
// be on its way, to be settled as an orphan), while Axigen is down; the
// killed gateways are started again once the rotation is written.
func TestAttackClusterRotationLeaderKilledBetweenRenames(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	var killed []*gwNode
	for _, step := range [][2]string{{"alice", "tmp"}, {"bob", "alice"}, {"carol", "bob"}, {"tmp", "carol"}} {
		leader := c.waitLeader(30 * time.Second)
		var via *gwNode
		if len(killed) == 0 {
			via = leader
		} else {
			for _, n := range c.members() {
				if n != leader && n.gw.alive() {
					via = n
				}
			}
		}
		conn := c.dialAdmin(via, 20*time.Second)
		mustRename(t, conn, userDN(step[0]), "uid="+step[1], true, "")
		// A phone change through the same gateway, right behind the rename.
		m := ldap.NewModifyRequest(userDN(step[1]), nil)
		m.Replace("telephoneNumber", []string{"+1 555 74" + step[1][:1] + "0"})
		if err := conn.Modify(m); err != nil {
			t.Fatalf("phone of %s: %v", step[1], err)
		}
		conn.Close()
		c.kill(leader)
		killed = append(killed, leader)
		// Keep a quorum: the node killed last time comes back now.
		if len(killed) >= 2 {
			prev := killed[len(killed)-2]
			if !prev.gw.alive() {
				c.start(prev)
			}
		}
	}
	for _, n := range c.members() {
		if !n.gw.alive() {
			c.start(n)
		}
	}
	c.axigenBack(60*time.Second, map[string]string{"carol": slapd.AlicePassword, "alice": slapd.BobPassword, "bob": slapd.CarolPassword})
}

// HELD (3 of 3 runs that were not disturbed by another process's cluster;
// since each write of a cluster reads its target — no entry cache — the
// dangling member uid=carol, renamed, is rightly left out of admins).
//
// Groups rotated through a third name (staff -> tmpg, admins -> staff,
// tmpg -> admins), each rename through another gateway, while the members
// change through the others and Axigen is down.
func TestAttackClusterGroupRotationWithMembersChanging(t *testing.T) {
	c, g := axigenDownCluster(t)
	renameGroup := func(conn *ldap.Conn, from, to string) {
		t.Helper()
		mustRename(t, conn, groupDN(from), "cn="+to, true, "")
	}
	members := func(conn *ldap.Conn, cn string, uids ...string) {
		t.Helper()
		var dns []string
		for _, u := range uids {
			dns = append(dns, userDN(u))
		}
		m := ldap.NewModifyRequest(groupDN(cn), nil)
		m.Replace("member", dns)
		if err := conn.Modify(m); err != nil {
			t.Fatalf("members of %s: %v", cn, err)
		}
	}
	members(g[1], "staff", "alice", "bob", "carol")
	renameGroup(g[0], "staff", "tmpg")
	members(g[2], "tmpg", "alice")
	members(g[0], "admins", "carol", "bob")
	renameGroup(g[1], "admins", "staff")
	members(g[2], "staff", "bob")
	renameGroup(g[2], "tmpg", "admins")
	members(g[0], "admins", "alice", "carol")
	// A member renamed too: her address changes under the groups.
	mustRename(t, g[1], userDN("carol"), "uid=carol2", true, "")
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(30 * time.Second)
	// This directory has no refint: admins still lists uid=carol, an entry
	// gone (renamed), whose address no group has any more.
	want := map[string][]string{"admins": {"alice@example.com"}, "staff": {"bob@example.com"}}
	for name, addrs := range want {
		gr, ok := c.e.sim.Group(mirrorDomain, name)
		if !ok {
			t.Errorf("Axigen has no group %s", name)
			continue
		}
		if !equalFoldSets(gr.Members, addrs) {
			t.Errorf("Axigen's group %s has %v, want %v", name, gr.Members, addrs)
		}
	}
	if _, ok := c.e.sim.Group(mirrorDomain, "tmpg"); ok {
		t.Errorf("Axigen still has the group tmpg")
	}
}

// HELD (2 of 2 runs).
//
// No swap: alice's entry moves out of the account base (keeping its RDN),
// a phone change is made there, and it comes back in under another name
// (alice9), each step through another gateway, while Axigen is down. Her
// mailbox must follow her to alice9, and no account alice stay behind.
func TestAttackClusterMoveOutAndBackUnderAnotherName(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	outside := "ou=outside," + mirrorSuffix
	c.directAdd(outside, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"outside"}})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	adminModify(t, g[2], userDN("alice"), "telephoneNumber", "+1 555 7501")
	mustRename(t, g[0], userDN("alice"), "uid=alice", true, outside)
	adminModify(t, g[1], "uid=alice,"+outside, "telephoneNumber", "+1 555 7502")
	mustRename(t, g[2], "uid=alice,"+outside, "uid=alice9", true, mirrorAccountBase)
	adminModify(t, g[0], userDN("alice9"), "telephoneNumber", "+1 555 7503")
	c.axigenBack(30*time.Second, map[string]string{"alice9": slapd.AlicePassword, "bob": slapd.BobPassword})
	if _, ok := c.e.sim.Account(mirrorDomain, "alice"); ok {
		t.Errorf("Axigen still has an account alice")
	}
}

// HELD (2 of 2 runs): groups are applied from their entry's whole state.
//
// The groups' rotation through a unit outside the group base: staff moves
// out (cn=staff,ou=outside), admins takes the name staff, and the old staff
// comes back in as admins; members change between, through the other
// gateways; Axigen is down.
func TestAttackClusterGroupRotationThroughOutsideTheBases(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	outside := "ou=outside," + mirrorSuffix
	c.directAdd(outside, map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {"outside"}})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	setMembers := func(conn *ldap.Conn, dn string, uids ...string) {
		t.Helper()
		var dns []string
		for _, u := range uids {
			dns = append(dns, userDN(u))
		}
		m := ldap.NewModifyRequest(dn, nil)
		m.Replace("member", dns)
		if err := conn.Modify(m); err != nil {
			t.Fatalf("members of %s: %v", dn, err)
		}
	}
	setMembers(g[1], groupDN("staff"), "alice")
	mustRename(t, g[0], groupDN("staff"), "cn=staff", true, outside)
	setMembers(g[2], groupDN("admins"), "bob", "carol")
	mustRename(t, g[1], groupDN("admins"), "cn=staff", true, "")
	setMembers(g[0], groupDN("staff"), "bob")
	mustRename(t, g[2], "cn=staff,"+outside, "cn=admins", true, mirrorGroupBase)
	setMembers(g[1], groupDN("admins"), "alice", "carol")
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(30 * time.Second)
	want := map[string][]string{"admins": {"alice@example.com", "carol@example.com"}, "staff": {"bob@example.com"}}
	for name, addrs := range want {
		gr, ok := c.e.sim.Group(mirrorDomain, name)
		if !ok {
			t.Errorf("Axigen has no group %s", name)
			continue
		}
		if !equalFoldSets(gr.Members, addrs) {
			t.Errorf("Axigen's group %s has %v, want %v", name, gr.Members, addrs)
		}
	}
}

// HELD (3 of 3 runs; the BER-encoded DN is refused 34 by the gateway).
//
// The swap through a third with each rename's DN spelled another way than
// the directory's: upper case, the alias userid, uid's OID (a BER-encoded
// value first: refused with invalidDNSyntax, or taken). The name a delivery takes from the next rename's DN must be the
// same name whatever the spelling.
func TestAttackClusterSwapWithDNsSpelledOtherwise(t *testing.T) {
	c, g := axigenDownCluster(t)
	adminModify(t, g[1], userDN("alice"), "telephoneNumber", "+1 555 7601")
	mustRename(t, g[0], "UID=ALICE,OU=People,DC=Example,DC=Com", "uid=tmp", true, "")
	adminModify(t, g[2], userDN("tmp"), "telephoneNumber", "+1 555 7602")
	adminModify(t, g[2], userDN("bob"), "telephoneNumber", "+1 555 7603")
	mustRename(t, g[1], "userid=bob,ou=people,dc=example,dc=com", "uid=alice", true, "")
	adminModify(t, g[0], userDN("alice"), "telephoneNumber", "+1 555 7604")
	// A BER-encoded value (#04 03 74 6d 70: an OCTET STRING "tmp"): the
	// gateway refuses it as slapd would (invalidDNSyntax), or it is taken.
	err := renameVia(t, g[2], "0.9.2342.19200300.100.1.1=#0403746d70,ou=people,dc=example,dc=com", "uid=bob", true, "")
	t.Logf("rename by a BER-encoded value: %v", err)
	if err != nil {
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax) {
			t.Errorf("rename by a BER-encoded value: %v (want success or invalidDNSyntax)", err)
		}
		mustRename(t, g[2], "0.9.2342.19200300.100.1.1=tmp,ou=people,dc=example,dc=com", "uid=bob", true, "")
	}
	adminModify(t, g[1], userDN("bob"), "telephoneNumber", "+1 555 7605")
	c.axigenBack(30*time.Second, map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "carol": slapd.CarolPassword})
}

// HELD (2 of 2 runs).
//
// A rotation whose middle names differ from the final ones by case only:
// alice -> TMP, bob -> Alice, TMP -> bob, then Alice -> alice (case only),
// each through another gateway, while Axigen is down.
func TestAttackClusterRotationWithCaseOnlyRenames(t *testing.T) {
	c, g := axigenDownCluster(t)
	mustRename(t, g[0], userDN("alice"), "uid=TMP", true, "")
	adminModify(t, g[1], userDN("TMP"), "telephoneNumber", "+1 555 7701")
	mustRename(t, g[1], userDN("bob"), "uid=Alice", true, "")
	adminModify(t, g[2], userDN("Alice"), "telephoneNumber", "+1 555 7702")
	mustRename(t, g[2], userDN("TMP"), "uid=bob", true, "")
	mustRename(t, g[0], userDN("Alice"), "uid=alice", true, "")
	adminModify(t, g[1], userDN("alice"), "telephoneNumber", "+1 555 7703")
	c.axigenBack(30*time.Second, map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "carol": slapd.CarolPassword})
}

// FIXED (failed 5 of 7 runs; 8 of 8 pass): a cluster's password modify now
// waits until no earlier identity change at its DN through another gateway
// is on its way, then reads its target again (clusterorder.go).
//
// Swaps of alice and bob through tmp, the renames through two gateways,
// while the third sets passwords (password modify, an extended operation:
// no post-read) of uid=alice and uid=bob as fast as it can. That gateway
// reads its target before relaying; between its read and its relay the
// other gateways may have moved another person onto the DN. Once the
// writes stop, Axigen's password of each account must be one the
// directory binds that account's entry with.
func TestAttackClusterPasswordsRacingSwapsThroughOtherGateways(t *testing.T) {
	passwordsRacingSwaps(t, false, "extop")
}

// FIXED (failed 2 of 4 runs): a cluster's gateway now asserts the entry
// it read on the write it relays (RFC 4528 on entryUUID): the directory
// refuses a write whose DN holds another entry by then, answered busy.
//
// The same with the password set by a modify (replace userPassword), which
// the gateway may read back after the write (post-read).
func TestAttackClusterPasswordModifiesRacingSwapsThroughOtherGateways(t *testing.T) {
	passwordsRacingSwaps(t, false, "modify")
}

// HELD (4 of 4 runs): a later record of the entry delivers its whole state.
//
// The same with phone numbers: a phone change that lands on the entry
// moved onto the DN meanwhile must still reach that entry's account.
func TestAttackClusterPhonesRacingSwapsThroughOtherGateways(t *testing.T) {
	passwordsRacingSwaps(t, false, "phone")
}

// FIXED (failed 1 of 4 runs; 8 of 8 pass): as above.
//
// The same with Axigen down during the writes: every record is delivered
// once the directory has settled, so a delivery's own reads and binds do
// not race the renames; only the write path's attribution of each
// password to an entry is tested.
func TestAttackClusterPasswordsRacingSwapsWhileAxigenIsDown(t *testing.T) {
	passwordsRacingSwaps(t, true, "extop")
}

// FIXED (extop failed 3 of 3 runs; 4 of 4 pass): the same, with the third
// gateway's link to slapd slow (each request held 20 ms): its read of
// uid=alice and its relay of the password are far apart, and the swaps
// through the others fall between them every few writes. Without the
// journal's ordering (clusterorder.go) the race is lost by chance only on
// a loaded machine. The modify is held by the assertion alone.
func TestClusterPasswordsRacingSwapsOverASlowLink(t *testing.T) {
	for _, how := range []string{"extop", "modify"} {
		t.Run(how, func(t *testing.T) {
			passwordsRacingSwapsWith(t, clusterOptions{Nodes: 3, Users: 1, SlowUpstream: 20 * time.Millisecond}, false, how)
		})
	}
}

// passwordsRacingSwaps: how is "extop" (password modify), "modify"
// (replace userPassword) or "phone" (replace telephoneNumber).
//
// The password variants failed: a password sent to uid=alice by the third
// gateway, which read uid=alice as alice's entry, lands on bob's entry,
// moved onto uid=alice by the other gateways before the relay (nothing
// ties the relayed write to the entry read: no assertion control). Its
// record is alice's: the delivery finds that alice's entry does not hold
// it ("a record's password is not sent: the directory no longer holds
// it"), and bob's entry has no record of it. Once the writes stop, the
// directory binds bob's entry with a password Axigen never got (Axigen's
// bob keeps bob-pw, which the directory no longer takes: the old password
// still opens the mailbox). Phone changes heal: a later record of the
// entry delivers its whole state.
func passwordsRacingSwaps(t *testing.T, axigenDown bool, how string) {
	passwordsRacingSwapsWith(t, clusterOptions{Nodes: 3, Users: 1}, axigenDown, how)
}

// passwordsRacingSwapsWith is passwordsRacingSwaps on a cluster made with
// opts; the writer goes through its third node.
func passwordsRacingSwapsWith(t *testing.T, opts clusterOptions, axigenDown bool, how string) {
	c := newClusterEnv(t, opts)
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(axigenDown); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan int)
	var acked []string // the passwords the directory took, in order
	go func() {
		conn := c.adminConn(c.members()[2])
		n := 0
		for k := 0; ; k++ {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			uid := []string{"alice", "bob"}[k%2]
			pw := fmt.Sprintf("race-%s-%d", uid, k)
			var err error
			switch how {
			case "extop":
				_, err = conn.PasswordModify(ldap.NewPasswordModifyRequest(userDN(uid), "", pw))
			case "modify":
				m := ldap.NewModifyRequest(userDN(uid), nil)
				m.Replace("userPassword", []string{pw})
				err = conn.Modify(m)
			default:
				pw = fmt.Sprintf("+1 555 %d", 100000+k)
				m := ldap.NewModifyRequest(userDN(uid), nil)
				m.Replace("telephoneNumber", []string{pw})
				err = conn.Modify(m)
			}
			if err == nil {
				n++
				acked = append(acked, pw)
			} else if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) && !ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) {
				t.Errorf("password of %s: %v", uid, err)
			}
		}
	}()
	for i := range 30 {
		for s, step := range [][2]string{{"alice", "tmp"}, {"bob", "alice"}, {"tmp", "bob"}} {
			mustRename(t, g[(i+s)%2], userDN(step[0]), "uid="+step[1], true, "")
		}
	}
	close(stop)
	t.Logf("%d writes (%s) taken during the swaps", <-done, how)
	if err := c.e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	c.converged(30 * time.Second)
	c.checkPasswords()
	if t.Failed() {
		// Which acknowledged password each entry holds now, and Axigen's.
		direct, err := c.e.dir.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer direct.Close()
		for _, uid := range []string{"alice", "bob"} {
			held := "none of them"
			for i := len(acked) - 1; i >= 0; i-- {
				if direct.Bind(userDN(uid), acked[i]) == nil {
					held = fmt.Sprintf("%s (the %dth of %d acknowledged)", acked[i], i+1, len(acked))
					break
				}
			}
			a, _ := c.e.sim.Account(mirrorDomain, uid)
			t.Logf("uid=%s (cn %q) binds with %s; Axigen's %s has %q", uid,
				c.e.directoryEntry(userDN(uid), "cn").GetAttributeValue("cn"), held, uid, a.Password)
		}
	}
}

// HELD (2 of 2 runs).
//
// The name freed in the middle of a rotation is taken by a newcomer added
// through another gateway, who is deleted through a third before bob takes
// the name: alice -> tmp, add uid=alice (newcomer), delete uid=alice, bob ->
// alice, tmp -> bob, then a newcomer again at uid=tmp; phone changes
// between; all while Axigen is down.
func TestAttackClusterRotationWithNewcomerInTheFreedName(t *testing.T) {
	c, g := axigenDownCluster(t)
	mustRename(t, g[0], userDN("alice"), "uid=tmp", true, "")
	if err := g[1].Add(accountAdd(userDN("alice"), "alice")); err != nil {
		t.Fatalf("add a newcomer at uid=alice: %v", err)
	}
	adminModify(t, g[0], userDN("alice"), "telephoneNumber", "+1 555 7801")
	if err := g[2].Del(ldap.NewDelRequest(userDN("alice"), nil)); err != nil {
		t.Fatalf("delete the newcomer: %v", err)
	}
	mustRename(t, g[0], userDN("bob"), "uid=alice", true, "")
	adminModify(t, g[1], userDN("alice"), "telephoneNumber", "+1 555 7802")
	mustRename(t, g[1], userDN("tmp"), "uid=bob", true, "")
	if err := g[2].Add(accountAdd(userDN("tmp"), "tmp")); err != nil {
		t.Fatalf("add a newcomer at uid=tmp: %v", err)
	}
	c.axigenBack(30*time.Second, map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword, "tmp": "pw-tmp", "carol": slapd.CarolPassword})
}

// FIXED (failed 4 of 4 runs, as the cluster did; and without an outage
// too: the move back in renamed Axigen's alice, bob's mailbox by then, to
// bob). A delivery now takes a record whose DN was out of the bases as
// naming no account (previous name none), and an entry whose next rename
// moved it from outside the bases as out of them as of the record.
//
// The control of TestAttackClusterRotationThroughOutsideTheBases: the same
// writes through a lone gateway (deliveries named by the next record's
// Name, Journal.NameAfter), with Axigen down while they are made, and up
// (each delivered in its time).
func TestAttackLoneRotationThroughOutsideTheBases(t *testing.T) {
	for _, down := range []bool{true, false} {
		t.Run(fmt.Sprintf("axigen-down=%v", down), func(t *testing.T) { loneRotationThroughOutsideTheBases(t, down) })
	}
}

func loneRotationThroughOutsideTheBases(t *testing.T, down bool) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	outside := "ou=outside," + mirrorSuffix
	conn, err := e.dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ou := ldap.NewAddRequest(outside, nil)
	ou.Attribute("objectClass", []string{"organizationalUnit"})
	ou.Attribute("ou", []string{"outside"})
	if err := conn.Add(ou); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(down); err != nil {
		t.Fatal(err)
	}
	adminModify(t, admin, userDN("alice"), "telephoneNumber", "+1 555 7001")
	mustRename(t, admin, userDN("alice"), "uid=alice", true, outside)
	adminModify(t, admin, userDN("bob"), "telephoneNumber", "+1 555 7002")
	mustRename(t, admin, userDN("bob"), "uid=alice", true, "")
	adminModify(t, admin, userDN("alice"), "telephoneNumber", "+1 555 7003")
	mustRename(t, admin, "uid=alice,"+outside, "uid=bob", true, mirrorAccountBase)
	adminModify(t, admin, userDN("bob"), "telephoneNumber", "+1 555 7004")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(30*time.Second, false)
	if err := e.checkMirrored(false); err != nil {
		e.logAccounts(t)
		t.Errorf("Axigen does not equal the directory: %v", err)
	}
	for name, pw := range map[string]string{"bob": slapd.AlicePassword, "alice": slapd.BobPassword} {
		if a, ok := e.sim.Account(mirrorDomain, name); !ok || a.Password != pw {
			t.Errorf("Axigen's %s has password %q, want %q", name, a.Password, pw)
		}
	}
}

// axigenDownCluster is a 3-node cluster, converged, with an admin
// connection to each member, and Axigen down.
func axigenDownCluster(t *testing.T) (*clusterEnv, []*ldap.Conn) {
	t.Helper()
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	if err := c.e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	return c, g
}

// axigenBack brings Axigen back, waits up to d for the cluster to
// converge, and checks whose mailbox each account is (want: name ->
// the password only that person's mailbox has).
func (c *clusterEnv) axigenBack(d time.Duration, want map[string]string) {
	c.t.Helper()
	if err := c.e.sim.SetDown(false); err != nil {
		c.t.Fatal(err)
	}
	c.converged(d)
	c.wantMailboxes(want)
}
