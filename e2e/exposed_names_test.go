package e2e

// A write that reveals an Axigen name (the next value of the name
// attribute becomes the entry's name) waits for the record of the entry
// giving that name up. Found by attack B (its FINDING tests
// TestZZBDeletedFirstUIDExposesANameBeingGivenUp and
// TestZZBGroupRDNChangeExposesANameBeingGivenUp); these are those tests,
// waiting for the point where the revealing record had its chance to go
// first rather than for the divergence.

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// revealerHadItsChance waits until the revealing record (revealer) is
// committed, and then until the record giving the name up (giver) failed
// once more in Axigen with the injected fault (faultText) — the revealer
// was ready meanwhile, and a worker free — or the revealer was delivered.
func revealerHadItsChance(t *testing.T, e *mirrorEnv, revealer func(store.Record) bool, giver string, faultText string) {
	t.Helper()
	find := func(state string, match func(store.Record) bool) (store.Record, bool) {
		for _, r := range runningRecords(t, e.dataDir, state) {
			if match(r) {
				return r, true
			}
		}
		return store.Record{}, false
	}
	isGiver := func(r store.Record) bool { return r.Op == store.OpRename && schema.EqualDN(r.DN, giver) }
	waitFor(t, 30*time.Second, "the revealing record committed", func() error {
		if _, ok := find("committed", revealer); ok {
			return nil
		}
		if _, ok := find("delivered", revealer); ok {
			return nil
		}
		return errNotYet
	})
	before := -1
	if r, ok := find("committed", isGiver); ok {
		before = r.Attempts
	}
	waitFor(t, 30*time.Second, "the giver's record failed again, or the revealing record delivered", func() error {
		if _, ok := find("delivered", revealer); ok {
			return nil
		}
		r, ok := find("committed", isGiver)
		if !ok {
			return fmt.Errorf("the giver's record is not committed any more")
		}
		if r.Attempts > before && strings.Contains(r.LastError, faultText) {
			return nil
		}
		return errNotYet
	})
}

// cn=multi has uids m1 and carol (its Axigen name is m1); carol is
// another account. The admin renames carol to carol2, then deletes
// multi's uid m1: multi's name becomes carol, free in the directory by
// then. multi's record must wait for carol's rename: delivered first
// (Axigen briefly unreachable, carol2's SET name failing a while), it
// found carol's Axigen account by the name carol and gave it multi's
// state, which carol's rename then took to carol2; multi's own account
// stayed m1.
func TestDeletedFirstUIDExposesANameBeingGivenUp(t *testing.T) {
	const multi = "cn=multi," + mirrorAccountBase
	e := newAttackEnv(t, "", []string{
		"dn: " + multi + "\nobjectClass: inetOrgPerson\ncn: multi\nsn: multi\nuid: m1\nuid: carol\nmail: m1@example.com\ntelephoneNumber: +1 555 7777\nuserPassword: m1-pw\n",
	})
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(userDN("carol"), "uid=carol2", true, "")); err != nil {
		t.Fatalf("rename carol to carol2: %v", err)
	}
	m := ldap.NewModifyRequest(multi, nil)
	m.Delete("uid", []string{"m1"})
	if err := admin.Modify(m); err != nil {
		t.Fatalf("delete multi's uid m1: %v", err)
	}
	const fault = "try again later"
	e.sim.FailMatching(regexp.MustCompile(`(?i)^SET name "?carol2`), fault)
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	revealerHadItsChance(t, e, func(r store.Record) bool { return r.Op == store.OpModify && schema.EqualDN(r.DN, multi) },
		userDN("carol"), fault)
	e.sim.ClearFaults()
	e.waitDrained(60*time.Second, false)
	for _, a := range e.sim.Accounts(mirrorDomain) {
		t.Logf("Axigen account %s: password %q mail %q phone %q", a.Name, a.Password, a.Contact["businessEmail"], a.Contact["phone"])
	}
	e.waitMirrored(10*time.Second, false)
}

// cn=g1 has cns g1 and staff (its Axigen name is g1, its RDN's); staff is
// another group. The admin renames staff to staff2, then renames g1 to
// ou=g1, dropping the old RDN value: g1's name becomes staff. g1's record
// must wait for staff's rename: delivered first, it updated Axigen's
// staff group, which staff's rename then took to staff2; g1's own Axigen
// group was never renamed.
func TestGroupRDNChangeExposesANameBeingGivenUp(t *testing.T) {
	const g1 = "cn=g1," + mirrorGroupBase
	e := newAttackEnv(t, "", []string{
		"dn: " + g1 + "\nobjectClass: groupOfNames\ncn: g1\ncn: staff\nmember: " + userDN("carol") + "\n",
	})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=staff2", true, "")); err != nil {
		t.Fatalf("rename staff to staff2: %v", err)
	}
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(g1, "ou=g1", true, "")); err != nil {
		t.Fatalf("rename cn=g1 to ou=g1: %v", err)
	}
	const fault = "try again later"
	e.sim.FailMatching(regexp.MustCompile(`(?i)^SET name "?staff2`), fault)
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	revealerHadItsChance(t, e, func(r store.Record) bool { return r.Op == store.OpRename && schema.EqualDN(r.DN, g1) },
		groupDN("staff"), fault)
	e.sim.ClearFaults()
	e.waitDrained(60*time.Second, false)
	for _, g := range e.sim.Groups(mirrorDomain) {
		t.Logf("Axigen group %s: %v", g.Name, g.Members)
	}
	e.waitMirrored(10*time.Second, false)
}
