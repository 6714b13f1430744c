package e2e

import (
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// adScenarios are TestActiveDirectory's parts, in order.
func adScenarios() []adScenario {
	return []adScenario{
		{"AccountLifecycle", adAccountLifecycle},
		{"GroupLifecycle", adGroupLifecycle},
		{"Policy", adPolicy},
		{"PolicyBindNames", adPolicyBindNames},
		{"PolicyForeignBindNames", adPolicyForeignBindNames},
		{"PolicyDNForms", adPolicyDNForms},
		{"DisableEnable", adDisableEnable},
		{"ProvisioningSequence", adProvisioningSequence},
		{"StartTLSUpstream", adStartTLSUpstream},
		{"AxigenOutage", adAxigenOutage},
		{"RenameBeforeDelivery", adRenameBeforeDelivery},
		{"Crash", adCrash},
		{"DirSync", adDirSync},
		{"PagedResults", adPagedResults},
	}
}

// An AD account's whole life, made through the gateway by the admin, is
// mirrored into Axigen: ldapadd creates it enabled with its contact info
// and a unicodePwd (base64 in LDIF, as AD clients send it); go-ldap
// modifies contact fields and resets the password; a new sAMAccountName
// renames it in Axigen; modrdn of its CN and a move to another OU keep
// its Axigen account; deletion removes it. Every journal record of the
// entry carries its objectGUID, and no password reaches the log.
func adAccountLifecycle(t *testing.T, dc *samba.Server) {
	audit := filepath.Join(t.TempDir(), "audit.log")
	e := newADEnv(t, dc, adOptions{Extra: []string{"--audit-log", audit}})
	const pw1, pw2 = "Dave-Passw0rd-1!", "Dave-Passw0rd-2!"
	daveDN := adUserDN("Dave Dent")

	e.mustAD(`dn: `+daveDN+`
changetype: add
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: user
sAMAccountName: dave
givenName: Dave
sn: Dent
displayName: DD
mail: dave@example.com
telephoneNumber: +1 555 0200
mobile: +1 555 0201
homePhone: +1 555 0202
otherTelephone: +1 555 0203
streetAddress: 2 Office Road
unicodePwd:: `+base64.StdEncoding.EncodeToString(schema.EncodeUnicodePwd(pw1))+`
userAccountControl: 512
`, "ldapmodify")
	e.setKnownPassword("dave", pw1)
	wantContact := map[string]string{
		"firstName": "Dave", "lastName": "Dent", "nickName": "DD", "businessEmail": "dave@example.com",
		"phone": "+1 555 0200", "mobilePhone": "+1 555 0201", "homePhone": "+1 555 0202",
		"businessPhone": "+1 555 0203", "businessAddress": "2 Office Road",
	}
	e.waitAccount("dave", "created with its contact info and unicodePwd", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == pw1 && maps.Equal(a.Contact, wantContact)
	})
	guid := e.guidOf(daveDN)

	admin := e.asAdmin()
	e.modify(admin, daveDN, func(m *ldap.ModifyRequest) {
		m.Replace("telephoneNumber", []string{"+1 555 0299"})
		m.Delete("mobile", nil)
	})
	wantContact["phone"] = "+1 555 0299"
	delete(wantContact, "mobilePhone")
	e.waitAccount("dave", "new phone, no mobile", func(a axigensim.AccountState, ok bool) bool {
		return ok && maps.Equal(a.Contact, wantContact)
	})

	// An administrator's password reset: replace unicodePwd.
	e.modify(admin, daveDN, func(m *ldap.ModifyRequest) {
		m.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(pw2))})
	})
	e.setKnownPassword("dave", pw2)
	e.waitAccount("dave", "password reset", func(a axigensim.AccountState, ok bool) bool { return ok && a.Password == pw2 })

	// The account name is sAMAccountName: changing it renames the account.
	e.modify(admin, daveDN, func(m *ldap.ModifyRequest) { m.Replace("sAMAccountName", []string{"david"}) })
	e.setKnownPassword("david", pw2)
	e.waitAccount("david", "renamed from dave, same contact info and password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == pw2 && maps.Equal(a.Contact, wantContact)
	})
	if _, ok := e.sim.Account(mirrorDomain, "dave"); ok {
		t.Error("account dave still exists after sAMAccountName became david")
	}

	// A new CN and a move to another OU change the DN, not the name.
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(daveDN, "CN=David Dent", true, "")); err != nil {
		t.Fatalf("modrdn: %v", err)
	}
	staff := "OU=Staff," + adPeople
	ou := ldap.NewAddRequest(staff, nil)
	ou.Attribute("objectClass", []string{"top", "organizationalUnit"})
	if err := admin.Add(ou); err != nil {
		t.Fatalf("add %s: %v", staff, err)
	}
	movedDN := "CN=David Dent," + staff
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(adUserDN("David Dent"), "CN=David Dent", true, staff)); err != nil {
		t.Fatalf("move: %v", err)
	}
	e.modify(admin, movedDN, func(m *ldap.ModifyRequest) { m.Replace("telephoneNumber", []string{"+1 555 0300"}) })
	wantContact["phone"] = "+1 555 0300"
	e.waitAccount("david", "moved, then a new phone", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == pw2 && maps.Equal(a.Contact, wantContact)
	})
	if got := e.guidOf(movedDN); got != guid {
		t.Fatalf("objectGUID changed on rename: %s, was %s", got, guid)
	}
	e.waitAD(20 * time.Second)

	if err := admin.Del(ldap.NewDelRequest(movedDN, nil)); err != nil {
		t.Fatalf("delete: %v", err)
	}
	e.waitAccount("david", "removed", func(_ axigensim.AccountState, ok bool) bool { return !ok })
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
	e.requireNoSecretInLog(pw1, pw2)
	if b, err := os.ReadFile(audit); err != nil || !strings.Contains(string(b), "unicodePwd") {
		t.Errorf("audit log: %v; want records naming unicodePwd:\n%s", err, b)
	} else if strings.Contains(string(b), pw1) || strings.Contains(string(b), pw2) {
		t.Error("the audit log contains a password")
	}

	// One history for the entry, keyed by its objectGUID.
	e.stop()
	var recs []store.Record
	for _, r := range e.journalRecords() {
		for _, dn := range []string{daveDN, adUserDN("David Dent"), movedDN} {
			if schema.EqualDN(r.DN, dn) {
				recs = append(recs, r)
				break
			}
		}
	}
	if len(recs) < 7 {
		t.Fatalf("journal holds %d records about dave, want at least 7: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Op == store.OpAdd {
			continue // the add has no key yet: the entry did not exist
		}
		if !strings.EqualFold(r.EntryKey, guid) {
			t.Errorf("record %d (%s %s) is keyed %q, want the objectGUID %s", r.Seq, r.Op, r.DN, r.EntryKey, guid)
		}
		if len(r.Secret) > 0 {
			t.Errorf("record %d still holds a password after delivery", r.Seq)
		}
	}
}

// mustAD runs an ldap-utils tool as the Administrator through the gateway.
func (e *adEnv) mustAD(stdin, name string, args ...string) toolResult {
	e.t.Helper()
	r := e.adTool(stdin, name, adAdmin, e.dc.AdminPassword, args...)
	if r.Code != 0 {
		e.t.Fatalf("%s %v exited %d:\n%s\ninput:\n%s", name, args, r.Code, r.Out, stdin)
	}
	return r
}

// An AD group's life: created with members (DNs in member, mirrored as
// their mail addresses), a member added and removed, renamed by
// sAMAccountName, a member account deleted (it leaves the group in AD and
// in Axigen), the group deleted.
func adGroupLifecycle(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	admin := e.asAdmin()
	members := func(want ...string) func(axigensim.GroupState, bool) bool {
		return func(g axigensim.GroupState, ok bool) bool { return ok && equalFoldSets(g.Members, want) }
	}
	add := ldap.NewAddRequest(adGroupDN("Sales Team"), nil)
	add.Attribute("objectClass", []string{"top", "group"})
	add.Attribute("sAMAccountName", []string{"sales"})
	add.Attribute("member", []string{adUserDN("Alice Archer"), adUserDN("Bob Baker")})
	if err := admin.Add(add); err != nil {
		t.Fatalf("add group: %v", err)
	}
	e.waitGroup("sales", "created with alice and bob", members("alice@example.com", "bob@example.com"))

	e.modify(admin, adGroupDN("Sales Team"), func(m *ldap.ModifyRequest) {
		m.Add("member", []string{adUserDN("Carol Cooper")})
	})
	e.waitGroup("sales", "carol added", members("alice@example.com", "bob@example.com", "carol@example.com"))
	e.modify(admin, adGroupDN("Sales Team"), func(m *ldap.ModifyRequest) {
		m.Delete("member", []string{adUserDN("Alice Archer")})
	})
	e.waitGroup("sales", "alice removed", members("bob@example.com", "carol@example.com"))

	e.modify(admin, adGroupDN("Sales Team"), func(m *ldap.ModifyRequest) { m.Replace("sAMAccountName", []string{"sellers"}) })
	e.waitGroup("sellers", "renamed from sales", members("bob@example.com", "carol@example.com"))
	if _, ok := e.sim.Group(mirrorDomain, "sales"); ok {
		t.Error("group sales still exists after its rename")
	}

	// AD removes a deleted account from its groups; Axigen follows.
	if err := admin.Del(ldap.NewDelRequest(adUserDN("Bob Baker"), nil)); err != nil {
		t.Fatalf("delete bob: %v", err)
	}
	e.waitGroup("sellers", "bob gone with his account", members("carol@example.com"))
	e.waitGroup("team", "bob gone with his account", members("alice@example.com"))
	e.waitAD(20 * time.Second)

	if err := admin.Del(ldap.NewDelRequest(adGroupDN("Sales Team"), nil)); err != nil {
		t.Fatalf("delete group: %v", err)
	}
	e.waitGroup("sellers", "removed", func(_ axigensim.GroupState, ok bool) bool { return !ok })
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
}

// The default policy with AD's attributes: alice, bound as herself (by
// DN), changes her phone and her password (AD's change form: delete the
// old unicodePwd, add the new), both mirrored; her attempts to change her
// mail, her sAMAccountName, her userAccountControl, bob's phone, or the
// group's members are refused with 50 naming the rule and reach neither
// AD nor Axigen.
func adPolicy(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	aliceDN := adUserDN("Alice Archer")
	alice := e.gwConn(aliceDN, "Alice-Passw0rd!")
	e.modify(alice, aliceDN, func(m *ldap.ModifyRequest) { m.Replace("telephoneNumber", []string{"+1 555 7777"}) })
	e.waitAccount("alice", "her own phone change", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7777"
	})
	const newPW = "Alice-N3w-Passw0rd!"
	e.modify(alice, aliceDN, func(m *ldap.ModifyRequest) {
		m.Delete("unicodePwd", []string{string(schema.EncodeUnicodePwd("Alice-Passw0rd!"))})
		m.Add("unicodePwd", []string{string(schema.EncodeUnicodePwd(newPW))})
	})
	e.setKnownPassword("alice", newPW)
	e.waitAccount("alice", "her own password change", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == newPW
	})

	refused := []struct {
		name, rule, dn string
		build          func(m *ldap.ModifyRequest)
		attr, want     string
	}{
		{"own mail", "account mail address", aliceDN,
			func(m *ldap.ModifyRequest) { m.Replace("mail", []string{"queen@example.com"}) }, "mail", "alice@example.com"},
		{"own account name", "rename account: admin only", aliceDN,
			func(m *ldap.ModifyRequest) { m.Replace("sAMAccountName", []string{"queen"}) }, "sAMAccountName", "alice"},
		{"own userAccountControl", "account enable/disable: admin only", aliceDN,
			func(m *ldap.ModifyRequest) { m.Replace("userAccountControl", []string{"66048"}) }, "userAccountControl", "512"},
		{"another user's phone", "contact info: admin or the account's owner", adUserDN("Bob Baker"),
			func(m *ldap.ModifyRequest) { m.Replace("telephoneNumber", []string{"+1 555 6666"}) }, "telephoneNumber", "+1 555 0102"},
		{"the group's members", "group membership: admin only", adGroupDN("Team"),
			func(m *ldap.ModifyRequest) { m.Add("member", []string{adUserDN("Carol Cooper")}) }, "member", ""},
	}
	for _, r := range refused {
		m := ldap.NewModifyRequest(r.dn, nil)
		r.build(m)
		err := alice.Modify(m)
		if ldapCode(err) != ldap.LDAPResultInsufficientAccessRights || !strings.Contains(err.Error(), r.rule) {
			t.Errorf("%s: got %v, want 50 naming %q", r.name, err, r.rule)
			continue
		}
		if r.want != "" {
			if got := e.dcEntry(r.dn, r.attr).GetAttributeValue(r.attr); got != r.want {
				t.Errorf("%s: AD's %s is %q, want it unchanged (%q)", r.name, r.attr, got, r.want)
			}
		}
	}
	if got := e.dcEntry(adGroupDN("Team"), "member").GetAttributeValues("member"); len(got) != 2 {
		t.Errorf("Team has %d members in AD, want 2", len(got))
	}
	// The same changes are the admin's to make.
	admin := e.asAdmin()
	e.modify(admin, adUserDN("Bob Baker"), func(m *ldap.ModifyRequest) { m.Replace("telephoneNumber", []string{"+1 555 6666"}) })
	e.modify(admin, adGroupDN("Team"), func(m *ldap.ModifyRequest) { m.Add("member", []string{adUserDN("Carol Cooper")}) })
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
	e.requireNoSecretInLog("Alice-Passw0rd!", newPW)
}

// userAccountControl: an account the admin disables in AD (the
// ACCOUNTDISABLE bit, 514) keeps its Axigen account, address, contact
// info, group membership and mail, but can no longer log in to Axigen:
// its Axigen password is replaced by a random one. Enabling it with a
// password reset in the same change (the usual AD way) restores login
// with the new password.
func adDisableEnable(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	admin := e.asAdmin()
	bobDN := adUserDN("Bob Baker")
	e.modify(admin, bobDN, func(m *ldap.ModifyRequest) { m.Replace("userAccountControl", []string{"514"}) })
	e.waitAccount("bob", "disabled: kept, with a password no one knows", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password != "" && a.Password != "Bob-Passw0rd!" && a.Contact["phone"] == "+1 555 0102"
	})
	e.waitGroup("team", "bob still a member", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"alice@example.com", "bob@example.com"})
	})
	e.waitAD(20 * time.Second)

	const bobPW = "Bob-Back-Passw0rd!"
	e.modify(admin, bobDN, func(m *ldap.ModifyRequest) {
		m.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(bobPW))})
		m.Replace("userAccountControl", []string{"512"})
	})
	e.setKnownPassword("bob", bobPW)
	e.waitAccount("bob", "enabled with a new password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == bobPW
	})
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
	e.requireNoSecretInLog(bobPW)
}

// AD's provisioning sequence, as New-ADUser and most tools run it: the
// account is created (AD makes it disabled, 546), gets its unicodePwd in a
// second change, and is enabled in a third. The password arrives while
// the account is disabled; Axigen must still end up with it once the
// account is enabled, not with the random one a disabled account gets.
func adProvisioningSequence(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	admin := e.asAdmin()
	const erinPW = "Erin-Passw0rd!"
	erinDN := adUserDN("Erin Evans")
	add := ldap.NewAddRequest(erinDN, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	add.Attribute("sAMAccountName", []string{"erin"})
	add.Attribute("mail", []string{"erin@example.com"})
	if err := admin.Add(add); err != nil {
		t.Fatalf("add erin: %v", err)
	}
	if uac := e.dcEntry(erinDN, "userAccountControl").GetAttributeValue("userAccountControl"); uac != "546" {
		t.Fatalf("AD created erin with userAccountControl %s, want 546 (disabled)", uac)
	}
	e.modify(admin, erinDN, func(m *ldap.ModifyRequest) {
		m.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(erinPW))})
	})
	// The password arrives while the account is still disabled (the
	// enabling comes later, as when another admin or a workflow does it):
	// it waits in the journal, and erin may not log in to Axigen yet.
	waitFor(t, 20*time.Second, "the password record waiting for the enabling", func() error {
		for _, r := range runningRecords(t, e.dataDir, "committed") {
			if strings.Contains(r.LastError, "waits in the journal until the account is enabled") {
				return nil
			}
		}
		return fmt.Errorf("no record waits")
	})
	if a, ok := e.sim.Account(mirrorDomain, "erin"); !ok || a.Password == erinPW {
		t.Errorf("erin, disabled in AD, in Axigen: %+v (want the account, without the password set in AD)", a)
	}
	e.modify(admin, erinDN, func(m *ldap.ModifyRequest) { m.Replace("userAccountControl", []string{"512"}) })
	e.setKnownPassword("erin", erinPW)
	e.waitAccount("erin", "provisioned, enabled, with the password set while disabled", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == erinPW
	})
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
	e.requireNoSecretInLog(erinPW)
}

// The gateway reaches AD over plain LDAP upgraded with StartTLS, verifying
// the DC's certificate against --upstream-ca; password changes (which AD
// accepts only on an encrypted connection) are relayed and mirrored. The
// name checked in the certificate is --upstream-server-name when given,
// else the upstream URL's host (as `serve --help` documents).
func adStartTLSUpstream(t *testing.T, dc *samba.Server) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"explicit server name", []string{"--upstream-server-name", dc.Addr}},
		{"server name from the URL", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newADEnv(t, dc, adOptions{StartTLS: true, Extra: tc.extra, SkipSeed: tc.extra == nil})
			pw := "Carol-N3w-Passw0rd!"
			if tc.extra == nil {
				pw = "Carol-Oth3r-Passw0rd!"
			}
			admin := e.asAdmin()
			e.modify(admin, adUserDN("Carol Cooper"), func(m *ldap.ModifyRequest) {
				m.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(pw))})
			})
			e.setKnownPassword("carol", pw)
			e.waitAccount("carol", "password over StartTLS", func(a axigensim.AccountState, ok bool) bool { return ok && a.Password == pw })
			// The new password works in AD itself, through the gateway.
			e.gwConn(adUserDN("Carol Cooper"), pw).Close()
			e.waitAD(20 * time.Second)
		})
	}
}

// While Axigen refuses connections, writes to AD through the gateway all
// succeed for their clients; after a restart of the gateway on the same
// data folder and Axigen's return, the backlog is delivered and Axigen
// equals AD.
func adAxigenOutage(t *testing.T, dc *samba.Server) {
	const users, groups, writes = 20, 2, 200
	e := newADEnv(t, dc, adOptions{Users: users, Groups: groups, LogLevel: "info"})
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	admin := e.asAdmin()
	for i := range writes {
		switch {
		case i%40 == 39:
			op := ldap.AddAttribute
			if (i/40)%2 == 1 {
				op = ldap.DeleteAttribute
			}
			m := ldap.NewModifyRequest(adGroupDN(adGenGroup(0)), nil)
			if op == ldap.AddAttribute {
				m.Add("member", []string{adUserDN("Carol Cooper")})
			} else {
				m.Delete("member", []string{adUserDN("Carol Cooper")})
			}
			if err := admin.Modify(m); err != nil {
				t.Fatalf("write %d while Axigen is down: %v", i, err)
			}
		case i%10 == 9:
			u := adGenUser(i % users)
			pw := fmt.Sprintf("%s-%d", u.Password, i)
			e.modify(admin, adUserDN(u.CN), func(m *ldap.ModifyRequest) {
				m.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(pw))})
			})
			e.setKnownPassword(u.Sam, pw)
		default:
			u := adGenUser(i % users)
			e.modify(admin, adUserDN(u.CN), func(m *ldap.ModifyRequest) {
				m.Replace("telephoneNumber", []string{fmt.Sprintf("+1 555 8%06d", i)})
			})
		}
	}
	admin.Close()
	e.stop()
	if !e.journalMissing() {
		if st := e.journalStats(); st["committed"] != writes || st["delivered"] != 0 || st["dead"] != 0 {
			t.Errorf("journal stats with Axigen down: %v; want %d committed", st, writes)
		}
	}
	e.start()
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitAD(90 * time.Second)
	e.waitDrained(90*time.Second, false)
}

// A change queued for Axigen (Axigen is down) is followed by a rename of
// the entry's CN before it is delivered. Delivery must find the entry by
// its objectGUID (the stable key), not by the DN the change was made at:
// read by that old DN, the entry looks deleted and the account would be
// removed from Axigen and created again, losing its password (and, in a
// real Axigen, its mailbox).
func adRenameBeforeDelivery(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	admin := e.asAdmin()
	e.modify(admin, adUserDN("Alice Archer"), func(m *ldap.ModifyRequest) {
		m.Replace("telephoneNumber", []string{"+1 555 4242"})
	})
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(adUserDN("Alice Archer"), "CN=Alice Smith", true, "")); err != nil {
		t.Fatalf("modrdn: %v", err)
	}
	removed := false
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "both records delivered", func() error {
		if _, ok := e.sim.Account(mirrorDomain, "alice"); !ok {
			removed = true
		}
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.Prepared+st.Committed+st.InFlight > 0 {
			return errNotYet
		}
		return nil
	})
	a, ok := e.sim.Account(mirrorDomain, "alice")
	switch {
	case !ok:
		t.Fatal("alice's Axigen account is gone after a rename of her CN")
	case a.Password != "Alice-Passw0rd!":
		t.Errorf("alice's Axigen password changed (the account was removed and created again): the change made before "+
			"the rename was delivered by reading its old DN; removed seen: %v", removed)
	case a.Contact["phone"] != "+1 555 4242":
		t.Errorf("alice's phone in Axigen is %q", a.Contact["phone"])
	}
	e.waitAD(20 * time.Second)
}

// AD users bind by user principal name (alice@example.test) or down-level
// name (EXAMPLE\alice) as often as by DN, and so may Axigen's connector or
// an admin's tools. The policy must know such a session as the entry it
// authenticated: the Administrator by UPN is the admin; alice by UPN or
// down-level name is the owner of her entry and only of hers.
func adPolicyBindNames(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	admin := e.gwConn(dc.AdminUPN, dc.AdminPassword)
	m := ldap.NewModifyRequest(adUserDN("Bob Baker"), nil)
	m.Replace("telephoneNumber", []string{"+1 555 3333"})
	if err := admin.Modify(m); err != nil {
		t.Errorf("the Administrator bound by UPN changes bob's phone: %v", err)
	} else {
		e.waitAccount("bob", "phone changed by the admin bound by UPN", func(a axigensim.AccountState, ok bool) bool {
			return ok && a.Contact["phone"] == "+1 555 3333"
		})
	}
	for i, name := range []string{"alice@example.test", `EXAMPLE\alice`, `example\alice`, "alice@EXAMPLE"} {
		alice := e.gwConn(name, "Alice-Passw0rd!")
		phone := fmt.Sprintf("+1 555 444%d", i)
		own := ldap.NewModifyRequest(adUserDN("Alice Archer"), nil)
		own.Replace("telephoneNumber", []string{phone})
		if err := alice.Modify(own); err != nil {
			t.Errorf("alice bound as %s changes her own phone: %v", name, err)
		} else {
			e.waitAccount("alice", "phone changed by herself bound as "+name, func(a axigensim.AccountState, ok bool) bool {
				return ok && a.Contact["phone"] == phone
			})
		}
		other := ldap.NewModifyRequest(adUserDN("Carol Cooper"), nil)
		other.Replace("telephoneNumber", []string{"+1 555 9999"})
		if err := alice.Modify(other); ldapCode(err) != ldap.LDAPResultInsufficientAccessRights {
			t.Errorf("alice bound as %s changes carol's phone: got %v, want 50", name, err)
		}
		alice.Close()
	}
	// The gateway's own subtree knows a session as the policy does: the
	// Administrator by UPN or down-level name reads cn=changelog, alice by
	// hers may not.
	changelog := ldap.NewSearchRequest("cn=changelog", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"lastChangeNumber"}, nil)
	for _, name := range []string{dc.AdminUPN, `EXAMPLE\Administrator`} {
		c := e.gwConn(name, dc.AdminPassword)
		if res, err := c.Search(changelog); err != nil || len(res.Entries) != 1 {
			t.Errorf("the Administrator bound as %s reads cn=changelog: %v", name, err)
		}
		c.Close()
	}
	alice := e.gwConn("alice@example.test", "Alice-Passw0rd!")
	if _, err := alice.Search(changelog); ldapCode(err) != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("alice bound by UPN reads cn=changelog: %v, want 50", err)
	}
	alice.Close()
	e.waitAD(20 * time.Second)
}
