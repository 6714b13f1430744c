package e2e

// An entry outside the account and group bases that a group of the group
// base lists as a member: writes through the gateway that change what the
// group lists for it (its mail, its deletion) reach the group in Axigen.

import (
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

const (
	outsideContacts = "ou=contacts,dc=example,dc=com"
	outsideExt      = "uid=ext," + outsideContacts
	outsidePartners = "cn=partners," + mirrorGroupBase
)

// outsideExtLDIF: an entry outside the bases (a contact) with a mail,
// member of a group in the group base together with alice.
func outsideExtLDIF() []string {
	return []string{
		"dn: " + outsideContacts + "\nobjectClass: organizationalUnit\nou: contacts\n",
		"dn: " + outsideExt + "\nobjectClass: inetOrgPerson\nuid: ext\ncn: Ext\nsn: Person\nmail: ext@example.com\nuserPassword: ext-pw\n",
		"dn: " + outsidePartners + "\nobjectClass: groupOfNames\ncn: partners\nmember: " + userDN("alice") + "\nmember: " + outsideExt + "\n",
	}
}

// The gateway admin changes, through the gateway, the mail of an entry
// outside the bases that a group lists: the group is journaled and
// re-applied, and Axigen's group lists the new address.
func TestMemberOutsideTheBasesChangesMail(t *testing.T) {
	e := newAttackEnv(t, "", outsideExtLDIF())
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	m := ldap.NewModifyRequest(outsideExt, nil)
	m.Replace("mail", []string{"ext.new@example.com"})
	if err := admin.Modify(m); err != nil {
		t.Fatalf("admin changing ext's mail through the gateway: %v", err)
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(10*time.Second, false)
}

// The gateway admin deletes, through the gateway, an entry outside the
// bases that a group lists; slapd (memberof-refint) drops it from the
// group, and so does Axigen's group.
func TestMemberOutsideTheBasesDeleted(t *testing.T) {
	e := newAttackEnv(t, "", outsideExtLDIF())
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := admin.Del(ldap.NewDelRequest(outsideExt, nil)); err != nil {
		t.Fatalf("admin deleting ext through the gateway: %v", err)
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(10*time.Second, false)
}
