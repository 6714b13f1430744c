package e2e

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// An account's whole life, made with ldap-utils through the gateway by the
// admin, is mirrored into Axigen: ldapadd creates it with its contact info
// and plaintext password, ldapmodify changes and clears contact fields,
// ldappasswd sets its password, ldapmodrdn renames it (with and without
// deleting the old RDN value) and ldapdelete removes it.
func TestMirrorAccountLifecycle(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})

	e.asAdmin(`dn: uid=dave,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: dave
cn: Dave Dent
sn: Dent
givenName: Dave
displayName: DD
mail: dave@example.com
telephoneNumber: +1 555 0200
mobile: +1 555 0201
homePhone: +1 555 0202
homePostalAddress: 1 Home Street$Springfield
postalAddress: 2 Office Road$Shelbyville
userPassword: dave-pw-1
`, "ldapadd")
	wantContact := map[string]string{
		"firstName": "Dave", "lastName": "Dent", "nickName": "DD", "businessEmail": "dave@example.com",
		"phone": "+1 555 0200", "mobilePhone": "+1 555 0201", "homePhone": "+1 555 0202",
		"homeAddress": "1 Home Street$Springfield", "businessAddress": "2 Office Road$Shelbyville",
	}
	e.waitAccount("dave", "created with its contact info and password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "dave-pw-1" && maps.Equal(a.Contact, wantContact)
	})

	e.asAdmin(`dn: uid=dave,ou=people,dc=example,dc=com
changetype: modify
replace: telephoneNumber
telephoneNumber: +1 555 0299
-
delete: mobile
`, "ldapmodify")
	wantContact["phone"] = "+1 555 0299"
	delete(wantContact, "mobilePhone")
	e.waitAccount("dave", "new phone, no mobile", func(a axigensim.AccountState, ok bool) bool {
		return ok && maps.Equal(a.Contact, wantContact)
	})

	// The password extended operation: slapd stores a hash, so the checker
	// learns the password from the test.
	e.asAdmin("", "ldappasswd", "-s", "dave-pw-2", userDN("dave"))
	e.setKnownPassword("dave", "dave-pw-2")
	e.waitAccount("dave", "password from ldappasswd", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "dave-pw-2"
	})

	// Rename deleting the old RDN value.
	e.asAdmin("", "ldapmodrdn", "-r", userDN("dave"), "uid=david")
	e.setKnownPassword("david", "dave-pw-2")
	e.waitAccount("david", "renamed from dave, same contact info and password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Name == "david" && a.Password == "dave-pw-2" && maps.Equal(a.Contact, wantContact)
	})
	if _, ok := e.sim.Account(mirrorDomain, "dave"); ok {
		t.Errorf("account dave still exists after its rename to david")
	}

	// Rename keeping the old RDN value: the entry has uid david and dave2,
	// and its name is the one in its DN.
	e.asAdmin("", "ldapmodrdn", userDN("david"), "uid=dave2")
	if en := e.directoryEntry(userDN("dave2"), "uid"); en == nil || len(en.GetAttributeValues("uid")) != 2 {
		t.Fatalf("slapd should hold both uid values after ldapmodrdn without -r: %v", en)
	}
	e.setKnownPassword("dave2", "dave-pw-2")
	e.waitAccount("dave2", "renamed from david", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Name == "dave2" && a.Password == "dave-pw-2" && maps.Equal(a.Contact, wantContact)
	})
	if _, ok := e.sim.Account(mirrorDomain, "david"); ok {
		t.Errorf("account david still exists after its rename to dave2")
	}
	e.waitMirrored(10*time.Second, false)

	e.asAdmin("", "ldapdelete", userDN("dave2"))
	e.waitAccount("dave2", "removed", func(_ axigensim.AccountState, ok bool) bool { return !ok })
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
	if n := len(e.sim.Accounts(mirrorDomain)); n != 3 {
		t.Errorf("Axigen holds %d accounts, want alice, bob and carol", n)
	}
}

// A groupOfNames's life is mirrored into an Axigen group whose members are
// the members' mail addresses: creation, member add and remove, rename
// with ldapmodrdn and deletion.
func TestMirrorGroupLifecycle(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})

	e.asAdmin(`dn: cn=team,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: team
member: uid=alice,ou=people,dc=example,dc=com
member: uid=bob,ou=people,dc=example,dc=com
`, "ldapadd")
	members := func(want ...string) func(axigensim.GroupState, bool) bool {
		return func(g axigensim.GroupState, ok bool) bool { return ok && equalFoldSets(g.Members, want) }
	}
	e.waitGroup("team", "created with alice and bob", members("alice@example.com", "bob@example.com"))

	e.asAdmin(`dn: cn=team,ou=groups,dc=example,dc=com
changetype: modify
add: member
member: uid=carol,ou=people,dc=example,dc=com
`, "ldapmodify")
	e.waitGroup("team", "carol added", members("alice@example.com", "bob@example.com", "carol@example.com"))

	e.asAdmin(`dn: cn=team,ou=groups,dc=example,dc=com
changetype: modify
delete: member
member: uid=bob,ou=people,dc=example,dc=com
`, "ldapmodify")
	e.waitGroup("team", "bob removed", members("alice@example.com", "carol@example.com"))

	e.asAdmin("", "ldapmodrdn", "-r", groupDN("team"), "cn=squad")
	e.waitGroup("squad", "renamed from team", members("alice@example.com", "carol@example.com"))
	if _, ok := e.sim.Group(mirrorDomain, "team"); ok {
		t.Errorf("group team still exists after its rename to squad")
	}
	e.waitMirrored(10*time.Second, false)

	// A member's new address reaches the groups listing it.
	e.asAdmin(`dn: uid=alice,ou=people,dc=example,dc=com
changetype: modify
replace: mail
mail: alice.liddell@example.com
`, "ldapmodify")
	e.waitGroup("squad", "alice's new address", members("alice.liddell@example.com", "carol@example.com"))
	e.waitGroup("staff", "alice's new address", members("alice.liddell@example.com", "bob@example.com"))

	e.asAdmin("", "ldapdelete", groupDN("squad"))
	e.waitGroup("squad", "removed", func(_ axigensim.GroupState, ok bool) bool { return !ok })
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
	if names := groupNames(e.sim.Groups(mirrorDomain)); names != "admins,staff" {
		t.Errorf("Axigen groups are %s, want admins,staff", names)
	}
}

func groupNames(gs []axigensim.GroupState) string {
	var names []string
	for _, g := range gs {
		names = append(names, g.Name)
	}
	return strings.Join(names, ",")
}

// A groupOfUniqueNames is a group too: its uniqueMember values (with or
// without the optional #'…'B suffix) become member addresses.
func TestMirrorUniqueMemberGroup(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	e.asAdmin(`dn: cn=board,ou=groups,dc=example,dc=com
objectClass: groupOfUniqueNames
cn: board
uniqueMember: uid=alice,ou=people,dc=example,dc=com
uniqueMember: uid=carol,ou=people,dc=example,dc=com#'0101'B
`, "ldapadd")
	e.waitGroup("board", "alice and carol", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"alice@example.com", "carol@example.com"})
	})
	e.asAdmin(`dn: cn=board,ou=groups,dc=example,dc=com
changetype: modify
add: uniqueMember
uniqueMember: uid=bob,ou=people,dc=example,dc=com
-
delete: uniqueMember
uniqueMember: uid=alice,ou=people,dc=example,dc=com
`, "ldapmodify")
	e.waitGroup("board", "bob in, alice out", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"bob@example.com", "carol@example.com"})
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}
