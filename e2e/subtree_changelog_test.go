package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// requireSubtree skips until serve wires the gateway's own subtree in:
// without it, cn=monitor is slapd's own and has no cn=journal.
func requireSubtree(t *testing.T, e *mirrorEnv) {
	t.Helper()
	r := e.tool("", "ldapsearch", mirrorAdminDN, e.dir.RootPW, "-LLL", "-b", "cn=journal,cn=ldapgate,cn=monitor", "-s", "base", "1.1")
	if r.Code == 32 {
		t.Skip("the gateway does not serve cn=changelog/cn=monitor yet (serve.go must call newSubtree)")
	}
}

// The journal as cn=changelog and the counters as cn=monitor, read with
// ldapsearch through the gateway's own listener by its admin: every
// mirrored write is there with its change number, target, type and
// delivery state, and no password ever is.
func TestSubtreeChangelogAndMonitorThroughTheListener(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	requireSubtree(t, e)

	e.asAdmin(`dn: uid=erin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: erin
cn: Erin Example
sn: Example
mail: erin@example.com
userPassword: erin-secret-pw-1
`, "ldapadd")
	e.asAdmin(`dn: uid=erin,ou=people,dc=example,dc=com
changetype: modify
replace: telephoneNumber
telephoneNumber: +1 555 0300
`, "ldapmodify")
	e.asAdmin("", "ldappasswd", "-s", "erin-secret-pw-2", userDN("erin"))
	e.asAdmin(`dn: uid=erin,ou=people,dc=example,dc=com
changetype: modrdn
newrdn: uid=erin2
deleteoldrdn: 1
`, "ldapmodify")
	e.asAdmin("", "ldapdelete", userDN("erin2"))
	e.setKnownPassword("erin", "erin-secret-pw-2")

	var out string
	waitFor(t, 20*time.Second, "five delivered changes in cn=changelog", func() error {
		r := e.tool("", "ldapsearch", mirrorAdminDN, e.dir.RootPW, "-LLL", "-o", "ldif-wrap=no",
			"-b", "cn=changelog", "(targetDN=uid=erin*)")
		if r.Code != 0 {
			return fmt.Errorf("ldapsearch exit %d: %s", r.Code, r.Out)
		}
		out = r.Out
		if n := strings.Count(out, "deliveryState: delivered"); n != 5 {
			return fmt.Errorf("%d delivered:\n%s", n, out)
		}
		return nil
	})
	for _, want := range []string{"changeType: add", "changeType: modify", "changeType: modrdn", "changeType: delete",
		"targetDN: uid=erin,ou=people,dc=example,dc=com", "newRDN: uid=erin2", "actor: " + mirrorAdminDN,
		"deliveryAttempts: 1", "changeNumber: ", "secretState: erased"} {
		if !strings.Contains(out, want) {
			t.Errorf("cn=changelog lacks %q:\n%s", want, out)
		}
	}
	// The same read with go-ldap, which decodes the multi-line (base64)
	// changes: the passwords show as a placeholder, never themselves.
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	res, err := admin.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(targetDN=uid=erin*)", nil, nil))
	if err != nil || len(res.Entries) != 5 {
		t.Fatalf("go-ldap read of cn=changelog: %v", err)
	}
	placeholders := 0
	for _, en := range res.Entries {
		for _, a := range en.Attributes {
			for _, v := range a.Values {
				if strings.Contains(v, "erin-secret-pw") {
					t.Fatalf("a password is readable in %s %s: %q", en.DN, a.Name, v)
				}
			}
		}
		placeholders += strings.Count(en.GetAttributeValue("changes"), "userPassword: (password)")
	}
	if placeholders != 2 { // the add and ldappasswd
		t.Errorf("%d password placeholders in the changes, want 2", placeholders)
	}

	// The root's range and a base read of one change.
	r := e.asAdmin("", "ldapsearch", "-LLL", "-b", "cn=changelog", "-s", "base", "lastChangeNumber")
	last := ""
	for _, l := range lines(r.Out) {
		if v, ok := strings.CutPrefix(l, "lastChangeNumber: "); ok {
			last = v
		}
	}
	if last == "" {
		t.Fatalf("no lastChangeNumber:\n%s", r.Out)
	}
	r = e.asAdmin("", "ldapsearch", "-LLL", "-b", "changeNumber="+last+",cn=changelog", "-s", "base", "changeType")
	if !strings.Contains(r.Out, "changeType: delete") {
		t.Errorf("the last change is not the delete:\n%s", r.Out)
	}
	r = e.tool("", "ldapcompare", mirrorAdminDN, e.dir.RootPW, "changeNumber="+last+",cn=changelog", "changeType:delete")
	if r.Code != 6 {
		t.Errorf("ldapcompare changeType:delete: exit %d %s", r.Code, r.Out)
	}

	// cn=monitor: this ldapsearch is a connection, nothing is pending.
	r = e.asAdmin("", "ldapsearch", "-LLL", "-b", "cn=ldapgate,cn=monitor", "(objectClass=*)")
	// This ldapsearch and the go-ldap connection above are open.
	for _, want := range []string{"dn: cn=connections,cn=ldapgate,cn=monitor", "currentConnections: 2\n", "requests: ",
		"upstreamFailures: 0", "dn: cn=journal,cn=ldapgate,cn=monitor", "backlog: 0", "dead: 0",
		"dn: cn=upstream1,cn=upstream,cn=ldapgate,cn=monitor", "upstreamURL: " + e.dir.URL, "status: up", "upstreamsUp: 1"} {
		if !strings.Contains(r.Out, want) {
			t.Errorf("cn=monitor lacks %q:\n%s", want, r.Out)
		}
	}

	// Only the admin reads it; nobody writes it.
	alice := e.tool("", "ldapsearch", userDN("alice"), "alice-pw", "-LLL", "-b", "cn=changelog", "1.1")
	if alice.Code != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("alice reading cn=changelog: exit %d %s", alice.Code, alice.Out)
	}
	anon := runTool(t, "", "ldapsearch", "-x", "-H", e.gw.URL, "-LLL", "-b", "cn=ldapgate,cn=monitor", "1.1")
	if anon.Code != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("anonymous reading cn=monitor: exit %d %s", anon.Code, anon.Out)
	}
	del := e.tool("", "ldapdelete", mirrorAdminDN, e.dir.RootPW, "changeNumber="+last+",cn=changelog")
	if del.Code != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("deleting a change: exit %d %s", del.Code, del.Out)
	}
	e.requireAlive()
}

// BUG (mirror, seen through cn=changelog): an added account's record never
// gets its entryUUID. The store fills EntryKey in at Commit, but the mirror
// commits with an empty key (gateway/mirror/mirror.go, j.Commit(ctx,
// rec.Seq, "")), so the add's changelog entry has no entryKey while every
// later change of the same entry has one, and the journal keys the add's
// history by DN only.
func TestSubtreeChangelogAddCarriesEntryKey(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	requireSubtree(t, e)
	e.asAdmin("dn: uid=fred,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: fred\ncn: Fred\nsn: F\nmail: fred@example.com\n", "ldapadd")
	uuid := e.directoryEntry(userDN("fred"), "entryUUID").GetAttributeValue("entryUUID")
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	var got string
	waitFor(t, 20*time.Second, "the add delivered", func() error {
		res, err := admin.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
			"(&(changeType=add)(targetDN="+userDN("fred")+"))", []string{"entryKey", "deliveryState"}, nil))
		if err != nil || len(res.Entries) != 1 {
			return fmt.Errorf("the add in cn=changelog: %v", err)
		}
		if st := res.Entries[0].GetAttributeValue("deliveryState"); st != "delivered" {
			return fmt.Errorf("state %s", st)
		}
		got = res.Entries[0].GetAttributeValue("entryKey")
		return nil
	})
	if got != uuid {
		t.Errorf("the delivered add's entryKey is %q, want the entry's entryUUID %q", got, uuid)
	}
}
