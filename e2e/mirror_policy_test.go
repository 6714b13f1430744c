package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/store"
)

// The default policy, through ldap-utils: a user bound as itself changes its
// own phone and password (both mirrored); its attempts to change its mail,
// rename itself, change another user's phone, delete another user, create
// an account or change a group's members are refused by the gateway with
// result 50 and a diagnostic naming the rule, reach neither slapd nor the
// journal; the admin may make the same changes, and they are mirrored.
func TestMirrorPolicyOwnerAndAdmin(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	alice := userDN("alice")

	// Allowed to the owner.
	e.mustTool(`dn: uid=alice,ou=people,dc=example,dc=com
changetype: modify
replace: telephoneNumber
telephoneNumber: +1 555 7777
`, "ldapmodify", alice, slapd.AlicePassword)
	e.waitAccount("alice", "her own phone change", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7777"
	})
	e.mustTool("", "ldappasswd", alice, slapd.AlicePassword, "-a", slapd.AlicePassword, "-s", "alice-new-pw")
	e.setKnownPassword("alice", "alice-new-pw")
	e.waitAccount("alice", "her own password change", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "alice-new-pw"
	})
	const alicePW = "alice-new-pw"

	refused := []struct {
		name, rule, tool, input string
		args                    []string
		// unchanged checks slapd directly.
		unchanged func(e *mirrorEnv)
	}{
		{
			name: "own mail", rule: "account mail address (login and group membership): admin only", tool: "ldapmodify",
			input: "dn: " + alice + "\nchangetype: modify\nreplace: mail\nmail: queen@example.com\n",
			unchanged: func(e *mirrorEnv) {
				if got := e.directoryEntry(alice, "mail").GetAttributeValue("mail"); got != "alice@example.com" {
					e.t.Errorf("slapd's mail of alice is %q", got)
				}
			},
		},
		{
			name: "own name", rule: "rename account: admin only", tool: "ldapmodrdn",
			args: []string{"-r", alice, "uid=queen"},
			unchanged: func(e *mirrorEnv) {
				if e.directoryEntry(alice) == nil || e.directoryEntry(userDN("queen")) != nil {
					e.t.Errorf("slapd renamed alice")
				}
			},
		},
		{
			name: "another user's phone", rule: "contact info: admin or the account's owner", tool: "ldapmodify",
			input: "dn: " + userDN("bob") + "\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 6666\n",
			unchanged: func(e *mirrorEnv) {
				if got := e.directoryEntry(userDN("bob"), "telephoneNumber").GetAttributeValue("telephoneNumber"); got != "+1 555 0102" {
					e.t.Errorf("slapd's phone of bob is %q", got)
				}
			},
		},
		{
			name: "another user's deletion", rule: "delete account: admin only", tool: "ldapdelete",
			args: []string{userDN("bob")},
			unchanged: func(e *mirrorEnv) {
				if e.directoryEntry(userDN("bob")) == nil {
					e.t.Errorf("slapd deleted bob")
				}
			},
		},
		{
			name: "another user's password", rule: "password: admin or the account's owner", tool: "ldappasswd",
			args: []string{"-s", "stolen-pw", userDN("bob")},
			unchanged: func(e *mirrorEnv) {
				if got := e.directoryEntry(userDN("bob"), "userPassword").GetAttributeValue("userPassword"); got != slapd.BobPassword {
					e.t.Errorf("slapd's password of bob changed to %q", got)
				}
			},
		},
		{
			name: "account creation", rule: "create account: admin only", tool: "ldapadd",
			input: "dn: " + userDN("eve") + "\nobjectClass: inetOrgPerson\nuid: eve\ncn: Eve\nsn: Eve\nmail: eve@example.com\nuserPassword: eve-pw\n",
			unchanged: func(e *mirrorEnv) {
				if e.directoryEntry(userDN("eve")) != nil {
					e.t.Errorf("slapd holds eve")
				}
			},
		},
		{
			name: "group membership", rule: "group membership: admin only", tool: "ldapmodify",
			input: "dn: " + groupDN("admins") + "\nchangetype: modify\nadd: member\nmember: " + alice + "\n",
			unchanged: func(e *mirrorEnv) {
				if got := e.directoryEntry(groupDN("admins"), "member").GetAttributeValues("member"); len(got) != 1 {
					e.t.Errorf("slapd's admins group has members %v", got)
				}
			},
		},
	}
	for _, c := range refused {
		t.Run("refused "+c.name, func(t *testing.T) {
			e := e.forT(t)
			r := e.tool(c.input, c.tool, alice, alicePW, c.args...)
			// ldappasswd exits 1 on any error; the others exit with the result code.
			wantExit := 50
			if c.tool == "ldappasswd" {
				wantExit = 1
			}
			if r.Code != wantExit {
				t.Errorf("%s exited %d, want %d (insufficient access):\n%s", c.tool, r.Code, wantExit, r.Out)
			}
			if !strings.Contains(r.Out, "Insufficient access") || !strings.Contains(r.Out, `"`+c.rule+`"`) {
				t.Errorf("%s printed no insufficient-access error naming rule %q:\n%s", c.tool, c.rule, r.Out)
			}
			c.unchanged(e)
		})
	}

	// The admin may make the same changes.
	e.asAdmin("dn: "+alice+"\nchangetype: modify\nreplace: mail\nmail: queen@example.com\n", "ldapmodify")
	e.asAdmin("dn: "+userDN("bob")+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 6666\n", "ldapmodify")
	e.asAdmin("dn: "+userDN("eve")+"\nobjectClass: inetOrgPerson\nuid: eve\ncn: Eve\nsn: Eve\nmail: eve@example.com\nuserPassword: eve-pw\n", "ldapadd")
	e.asAdmin("dn: "+groupDN("admins")+"\nchangetype: modify\nadd: member\nmember: "+alice+"\n", "ldapmodify")
	e.waitAccount("eve", "created by the admin", func(a axigensim.AccountState, ok bool) bool { return ok && a.Password == "eve-pw" })
	e.waitGroup("admins", "alice added by the admin", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"queen@example.com", "carol@example.com"})
	})
	e.waitMirrored(20*time.Second, false)

	// The refused writes left no trace in the journal: alice's own records
	// are exactly her phone and her password.
	e.waitDrained(10*time.Second, false)
	e.stop()
	if e.journalMissing() {
		return
	}
	recs := e.journalRecords()
	var byAlice []store.Record
	for _, r := range recs {
		if strings.EqualFold(r.Actor, alice) {
			byAlice = append(byAlice, r)
		}
	}
	if len(byAlice) != 2 || byAlice[0].Op != store.OpModify || byAlice[1].Op != store.OpPassword {
		t.Errorf("journal records made by alice: %+v; want her phone modify then her password", byAlice)
	}
	for _, r := range byAlice {
		for _, c := range r.Changes {
			if !strings.EqualFold(c.Attr, "telephoneNumber") {
				t.Errorf("journal record %d by alice changes %s", r.Seq, c.Attr)
			}
		}
	}
	for _, dn := range []string{userDN("eve"), userDN("bob"), groupDN("admins")} {
		for _, r := range recordsAbout(recs, dn) {
			if !strings.EqualFold(r.Actor, mirrorAdminDN) {
				t.Errorf("journal record %d about %s made by %s, want only the admin's", r.Seq, dn, r.Actor)
			}
		}
	}
	for _, r := range recs {
		if r.State != store.StateDelivered {
			t.Errorf("journal record %d (%s %s) is %s, want delivered", r.Seq, r.Op, r.DN, r.State)
		}
	}
}

// Members of the --admin-group are admins: carol (in cn=admins) may create
// an account and change group membership; bob, who is not, may not.
func TestMirrorPolicyAdminGroup(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{Extra: []string{"--admin-group", groupDN("admins")}})
	carol, bob := userDN("carol"), userDN("bob")
	hank := "dn: " + userDN("hank") + "\nobjectClass: inetOrgPerson\nuid: hank\ncn: Hank\nsn: Hill\nmail: hank@example.com\nuserPassword: hank-pw\n"

	r := e.tool(hank, "ldapadd", bob, slapd.BobPassword)
	if r.Code != 50 || !strings.Contains(r.Out, `"create account: admin only"`) {
		t.Errorf("bob's ldapadd exited %d, want 50 naming the create-account rule:\n%s", r.Code, r.Out)
	}
	if e.directoryEntry(userDN("hank")) != nil {
		t.Fatal("slapd holds hank after bob's refused add")
	}

	e.mustTool(hank, "ldapadd", carol, slapd.CarolPassword)
	e.waitAccount("hank", "created by carol, an admin through the group", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "hank-pw"
	})
	e.mustTool("dn: "+groupDN("staff")+"\nchangetype: modify\nadd: member\nmember: "+userDN("hank")+"\n", "ldapmodify", carol, slapd.CarolPassword)
	e.waitGroup("staff", "hank added by carol", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"alice@example.com", "bob@example.com", "hank@example.com"})
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}

// An --admin-group of class groupOfUniqueNames may list its members with
// the optional UID (RFC 4517: "<dn>#'0101'B"), as the groups the gateway
// mirrors may: carol so listed is an admin, and bob, listed only by a
// look-alike DN, is not.
func TestMirrorPolicyAdminGroupUniqueMemberWithUID(t *testing.T) {
	const admins = "cn=uadmins,dc=example,dc=com"
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: " + admins + "\nobjectClass: groupOfUniqueNames\ncn: uadmins\n" +
			"uniqueMember: UID=Carol, " + strings.TrimPrefix(userDN("carol"), "uid=carol,") + "#'0101'B\n" +
			"uniqueMember: " + userDN("bobby") + "#'1'B\n"},
		Extra: []string{"--admin-group", admins},
	})
	hank := "dn: " + userDN("hank") + "\nobjectClass: inetOrgPerson\nuid: hank\ncn: Hank\nsn: Hill\nmail: hank@example.com\nuserPassword: hank-pw\n"
	r := e.tool(hank, "ldapadd", userDN("bob"), slapd.BobPassword)
	if r.Code != 50 || !strings.Contains(r.Out, `"create account: admin only"`) {
		t.Errorf("bob's ldapadd exited %d, want 50 naming the create-account rule:\n%s", r.Code, r.Out)
	}
	e.mustTool(hank, "ldapadd", userDN("carol"), slapd.CarolPassword)
	e.waitAccount("hank", "created by carol, an admin through the group's uniqueMember with a UID", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "hank-pw"
	})
	e.waitDrained(10*time.Second, false)
}

// The owner may not change its mail through another name of the attribute
// either: rfc822Mailbox (its alias in OpenLDAP's schema) or its OID.
func TestMirrorPolicyMailAliases(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	alice := userDN("alice")
	const rule = `"account mail address (login and group membership): admin only"`
	for _, attr := range []string{"rfc822Mailbox", "0.9.2342.19200300.100.1.3"} {
		r := e.tool("dn: "+alice+"\nchangetype: modify\nreplace: "+attr+"\n"+attr+": queen@example.com\n",
			"ldapmodify", alice, slapd.AlicePassword)
		if r.Code != 50 || !strings.Contains(r.Out, rule) {
			t.Errorf("alice's change of her own %s: ldapmodify exited %d, want 50 naming rule %s:\n%s", attr, r.Code, rule, r.Out)
		}
		if got := e.directoryEntry(alice, "mail").GetAttributeValue("mail"); got != "alice@example.com" {
			t.Errorf("after alice's change of %s, slapd's mail of alice is %q", attr, got)
		}
	}
}
