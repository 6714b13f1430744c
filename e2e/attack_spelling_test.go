package e2e

// Attacks on the write path's policy and the journal: attribute, DN and
// identity spellings, binds between writes, values a CLI line could take
// for syntax, secrets under other spellings.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const spellingExt = "uid=ext,ou=contacts,dc=example,dc=com"

// spellingExtEnv: a group (partners) whose members are alice and an entry
// outside the account and group bases (ext), with a valid mail.
func spellingExtEnv(t *testing.T) *mirrorEnv {
	t.Helper()
	e := newAttackEnv(t, "", []string{
		"dn: ou=contacts,dc=example,dc=com\nobjectClass: organizationalUnit\nou: contacts\n",
		"dn: " + spellingExt + "\nobjectClass: inetOrgPerson\nuid: ext\ncn: Ext\nsn: Person\nmail: ext@example.com\nuserPassword: ext-pw\n",
		"dn: cn=partners," + mirrorGroupBase + "\nobjectClass: groupOfNames\ncn: partners\nmember: " + userDN("alice") + "\nmember: " + spellingExt + "\n",
	})
	e.waitMirrored(20*time.Second, false)
	return e
}

// memberOf (the memberof overlay's back-link) written on a member entry,
// by carol (a directory administrator, no gateway admin) and by the admin:
// were slapd to apply it to the group it names, group membership would
// change unjudged (memberOf is "anything else" to the policy). Handled:
// slapd refuses it (no user modification); nothing changes.
func TestAttackSpellingMemberOfWriteChangesNoGroup(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	for _, who := range [][2]string{{userDN("carol"), slapd.CarolPassword}, {mirrorAdminDN, e.dir.RootPW}} {
		c := bindConn(t, e.gw.URL, who[0], who[1])
		m := ldap.NewModifyRequest(userDN("carol"), nil)
		m.Add("memberOf", []string{groupDN("staff")})
		err := c.Modify(m)
		t.Logf("modify carol's memberOf as %s: %v", who[0], err)
		if got := e.directoryEntry(groupDN("staff"), "member").GetAttributeValues("member"); len(got) != 2 {
			t.Errorf("a memberOf write by %s changed staff's membership: %v", who[0], got)
		}
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}

// Attribute descriptions spelled every way slapd might take them, by bob
// (self: slapd lets him write his mail) and carol (a directory
// administrator, no gateway admin: slapd lets her write everything).
// Whatever slapd applies must have been allowed by the policy; none of
// these may leave slapd changed in an admin-only (or owner-only) way.
func TestAttackSpellingAttributeSpellings(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	type try struct {
		who    *ldap.Conn
		whoN   string
		dn     string
		attr   string
		op     string
		values []string
	}
	var tries []try
	for _, a := range []string{"OID.0.9.2342.19200300.100.1.3", "oid.0.9.2342.19200300.100.1.3", "0.9.2342.19200300.100.1.3;x-a",
		"rfc822Mailbox;lang-en", "mail;binary", " mail", "mail ", "MAIL;LANG-EN", "mail;lang-en;lang-fr", "0.9.2342.19200300.100.1.03", "mail;"} {
		tries = append(tries, try{bob, "bob", userDN("bob"), a, "replace", []string{"boss@example.com"}})
	}
	for _, a := range []string{"OID.2.5.4.20", "telephonenumber;lang-en", "OID.2.5.4.35", "userPassword;binary", "2.5.4.35;x-a", "OID.0.9.2342.19200300.100.1.1"} {
		tries = append(tries, try{carol, "carol", userDN("alice"), a, "replace", []string{"carolwashere"}})
	}
	for _, a := range []string{"OID.2.5.4.31", "member;lang-en", "2.5.4.31;x-a", "OID.2.5.4.3", "cn;lang-en", "2.5.4.50"} {
		tries = append(tries, try{carol, "carol", groupDN("staff"), a, "add", []string{userDN("carol")}})
	}
	for _, tr := range tries {
		m := ldap.NewModifyRequest(tr.dn, nil)
		if tr.op == "add" {
			m.Add(tr.attr, tr.values)
		} else {
			m.Replace(tr.attr, tr.values)
		}
		err := tr.who.Modify(m)
		t.Logf("%s %s %q on %s: %v", tr.whoN, tr.op, tr.attr, tr.dn, err)
		if err == nil {
			t.Errorf("FINDING? %s %s %q on %s was accepted", tr.whoN, tr.op, tr.attr, tr.dn)
		}
	}
	t.Logf("bob: %v", e.directoryEntry(userDN("bob")).Attributes)
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}

// Passwords under other spellings, refused ones, and passwords that reach
// the gateway as search filters or compares: none in the debug log or the
// journal listing.
func TestAttackSpellingNoSecretUnderOtherSpellings(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "debug"})
	secrets := []string{}
	secret := func(what string) string {
		s := fmt.Sprintf("Zz%dSecret%s", len(secrets), what)
		secrets = append(secrets, s)
		return s
	}
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	a := accountAdd(userDN("zed"), "zed")
	a.Attribute("2.5.4.35", []string{secret("oidadd")})
	if err := admin.Add(a); err != nil {
		t.Logf("add zed with 2.5.4.35: %v", err)
	}
	for _, attr := range []string{"userPassword;x-a", "USERPASSWORD", "2.5.4.35;lang-en", "userPassword;binary"} {
		m := ldap.NewModifyRequest(userDN("bob"), nil)
		m.Replace(attr, []string{secret("mod")})
		t.Logf("bob %s: %v", attr, bob.Modify(m))
		m = ldap.NewModifyRequest(userDN("bob"), nil)
		m.Replace(attr, []string{secret("bad") + "\x01"})
		t.Logf("bob %s with a control char: %v", attr, bob.Modify(m))
		m = ldap.NewModifyRequest(userDN("alice"), nil)
		m.Replace(attr, []string{secret("refused")})
		t.Logf("bob on alice's %s: %v", attr, bob.Modify(m))
	}
	if _, err := admin.PasswordModify(ldap.NewPasswordModifyRequest(userDN("bob"), "", "bob-reset-pw")); err != nil {
		t.Fatalf("admin resets bob's password: %v", err)
	}
	bobPW := secret("exop")
	if _, err := bob.PasswordModify(ldap.NewPasswordModifyRequest("", "bob-reset-pw", bobPW)); err != nil {
		t.Fatalf("bob's exop: %v", err)
	}
	e.setKnownPassword("bob", bobPW)
	_, err := bob.PasswordModify(ldap.NewPasswordModifyRequest("", bobPW, secret("exopbad")+"\n"))
	t.Logf("bob's exop with a line break: %v", err)
	_, err = bob.PasswordModify(ldap.NewPasswordModifyRequest("", secret("wrongold"), secret("exopnew")))
	t.Logf("bob's exop with a wrong old password: %v", err)
	_, err = bob.PasswordModify(ldap.NewPasswordModifyRequest("dn:"+userDN("bob"), bobPW, secret("exopdn")))
	t.Logf("bob's exop naming dn:...: %v", err)
	_, err = bob.PasswordModify(ldap.NewPasswordModifyRequest("u:bob", bobPW, secret("exopu")))
	t.Logf("bob's exop naming u:bob: %v", err)
	_, err = admin.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(userPassword="+secret("filter")+")", nil, nil))
	t.Logf("search by password: %v", err)
	ok, err := admin.Compare(userDN("alice"), "userPassword", secret("compare"))
	t.Logf("compare: %v %v", ok, err)
	e.waitDrained(20*time.Second, true)
	e.waitMirrored(20*time.Second, false)
	e.stop()
	log := e.logTail(1 << 30)
	out := e.journal("ls", "--limit", "0", "--json").Out
	for _, s := range secrets {
		if strings.Contains(log, s) {
			i := strings.Index(log, s)
			t.Errorf("secret %s in the gateway log: ...%s...", s, log[max(0, i-300):min(len(log), i+100)])
		}
		if strings.Contains(out, s) {
			t.Errorf("secret %s in journal ls", s)
		}
	}
}

// The password modify operation's userIdentity spelled every way: carol
// (a directory administrator, no gateway admin: slapd lets her write every
// password) may change none of alice's; bob (the owner) may change his own
// whatever the spelling, and Axigen gets it.
func TestAttackSpellingPasswordModifyIdentitySpellings(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	spell := func(uid string) []string {
		hex := fmt.Sprintf("%x", uid)
		return []string{
			userDN(uid),
			strings.ToUpper(userDN(uid)),
			"0.9.2342.19200300.100.1.1=" + uid + ",2.5.4.11=people,dc=example,dc=com",
			fmt.Sprintf("uid=#04%02x%s,ou=people,dc=example,dc=com", len(uid), hex),
			fmt.Sprintf("uid=#0c%02x%s,ou=people,dc=example,dc=com", len(uid), hex),
			"uid=" + uid + ",ou=people,dc=example,dc=com\\00",
			"uid=" + uid + " , ou=people ; dc=example,dc=com",
			`uid="` + uid + `",ou=people,dc=example,dc=com`,
			"uid=" + uid + "+uid=" + uid + ",ou=people,dc=example,dc=com",
			"uid=" + uid + ",ou=people,dc=example,dc=com ",
			" uid=" + uid + ",ou=people,dc=example,dc=com",
			"UserID=" + uid + ",organizationalUnitName=people,dc=example,dc=com",
			"uid=" + uid + "\\20,ou=people,dc=example,dc=com",
		}
	}
	for i, id := range spell("alice") {
		_, err := carol.PasswordModify(ldap.NewPasswordModifyRequest(id, "", fmt.Sprintf("carol-set-%d", i)))
		t.Logf("carol sets %q: %v", id, err)
		if err == nil {
			t.Errorf("carol (no gateway admin) changed the password of %q", id)
		}
	}
	direct, err := e.dir.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.Bind(userDN("alice"), slapd.AlicePassword); err != nil {
		t.Errorf("alice's password changed in slapd: %v", err)
	}
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	cur := slapd.BobPassword
	for i, id := range spell("bob") {
		pw := fmt.Sprintf("bob-own-%d", i)
		_, err := bob.PasswordModify(ldap.NewPasswordModifyRequest(id, cur, pw))
		t.Logf("bob sets %q: %v", id, err)
		if err == nil {
			cur = pw
			e.setKnownPassword("bob", pw)
		}
		if err := direct.Bind(userDN("bob"), cur); err != nil {
			t.Errorf("after %q slapd does not take bob's password %q: %v", id, cur, err)
		}
		e.waitDrained(20*time.Second, false)
		if a, _ := e.sim.Account(mirrorDomain, "bob"); a.Password != cur {
			t.Errorf("after %q: Axigen has bob's password %q, slapd %q", id, a.Password, cur)
		}
	}
	e.waitMirrored(15*time.Second, false)
}

// Renames that change only the case of a name, and a swap of two account
// names through a third: Axigen ends as the directory.
func TestAttackSpellingCaseOnlyRenamesAndSwap(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	err := admin.ModifyDN(ldap.NewModifyDNRequest(userDN("alice"), "uid=Alice", true, ""))
	t.Logf("alice -> Alice: %v", err)
	err = admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=Staff", true, ""))
	t.Logf("staff -> Staff: %v", err)
	m := ldap.NewModifyRequest(userDN("bob"), nil)
	m.Replace("mail", []string{"Bob@Example.COM"})
	t.Logf("bob's mail in capitals: %v", admin.Modify(m))
	e.waitDrained(20*time.Second, false)
	t.Logf("directory: %v", e.directoryEntry(userDN("alice"), "uid").DN)
	for _, a := range e.sim.Accounts(mirrorDomain) {
		t.Logf("axigen account %+v", a.Name)
	}
	e.waitMirrored(15*time.Second, false)
	// swap bob and carol through tmp
	for _, r := range [][2]string{{"bob", "tmp"}, {"carol", "bob"}, {"tmp", "carol"}} {
		if err := admin.ModifyDN(ldap.NewModifyDNRequest(userDN(r[0]), "uid="+r[1], true, "")); err != nil {
			t.Fatalf("rename %s -> %s: %v", r[0], r[1], err)
		}
	}
	e.setKnownPassword("bob", slapd.CarolPassword)
	e.setKnownPassword("carol", slapd.BobPassword)
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}

// Several binds on one connection between writes, a failed bind among
// them, and an add of an account that exists: each write is judged as the
// identity of the last bind (anonymous after a failed one), and Axigen
// ends as the directory.
func TestAttackSpellingBindsInterleavedWithWrites(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	c := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	mod := func(attr, v string) error {
		m := ldap.NewModifyRequest(userDN("bob"), nil)
		m.Replace(attr, []string{v})
		return c.Modify(m)
	}
	if err := mod("telephoneNumber", "+1 555 7001"); err != nil {
		t.Fatalf("bob's phone: %v", err)
	}
	if err := c.Bind(mirrorAdminDN, "wrong"); resultCode(err) != ldap.LDAPResultInvalidCredentials {
		t.Fatalf("wrong admin bind: %v", err)
	}
	wantRefused(t, "phone after a failed bind (anonymous)", mod("telephoneNumber", "+1 555 7002"), ldap.LDAPResultInsufficientAccessRights, "anonymous")
	if err := c.Bind(mirrorAdminDN, ""); err == nil {
		wantRefused(t, "mail after an unauthenticated bind as the admin", mod("mail", "b1@example.com"), ldap.LDAPResultInsufficientAccessRights)
	}
	if err := c.Bind(userDN("bob"), slapd.BobPassword); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "bob's mail", mod("mail", "b2@example.com"), ldap.LDAPResultInsufficientAccessRights, "account mail address")
	if err := c.Bind(mirrorAdminDN, e.dir.RootPW); err != nil {
		t.Fatal(err)
	}
	if err := mod("mail", "b3@example.com"); err != nil {
		t.Fatalf("admin's write of bob's mail: %v", err)
	}
	err := c.Add(accountAdd(userDN("alice"), "alice"))
	t.Logf("add of the existing alice: %v", err)
	if err == nil {
		t.Error("add of an existing account succeeded")
	}
	if err := c.Bind(userDN("bob"), slapd.BobPassword); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, "bob's mail again", mod("mail", "b4@example.com"), ldap.LDAPResultInsufficientAccessRights, "account mail address")
	if err := mod("telephoneNumber", "+1 555 7003"); err != nil {
		t.Fatalf("bob's phone again: %v", err)
	}
	if got := e.directoryEntry(userDN("bob"), "mail").GetAttributeValue("mail"); got != "b3@example.com" {
		t.Errorf("slapd's mail of bob: %q", got)
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
	e.requireAlive()
}

// The password modify operation's name spelled oddly: carol (no gateway
// admin; slapd lets her write every password) sets alice's password. The
// gateway intercepts only the exact OID; slapd must refuse every other.
func TestAttackSpellingPasswordModifyOddOIDs(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	for i, oid := range []string{"1.3.6.1.4.1.4203.1.11.1 ", " 1.3.6.1.4.1.4203.1.11.1", "1.3.6.1.4.1.4203.1.11.01",
		"1.3.6.1.4.1.4203.1.11.1\x00", "01.3.6.1.4.1.4203.1.11.1", "1.3.6.1.4.1.4203.1.11.1.0"} {
		v := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "passwd")
		v.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, userDN("alice"), "id"))
		v.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 2, fmt.Sprintf("carol-odd-%d", i), "new"))
		_, err := carol.Extended(ldap.NewExtendedRequest(oid, v))
		t.Logf("%q: %v", oid, err)
		if err == nil {
			t.Errorf("carol's password modify named %q was accepted", oid)
		}
	}
	direct, err := e.dir.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.Bind(userDN("alice"), slapd.AlicePassword); err != nil {
		t.Errorf("alice's password changed in slapd: %v", err)
	}
	e.requireAlive()
	e.waitMirrored(15*time.Second, false)
}

// Contact values an owner may write that a CLI line could mangle: each one
// Axigen takes must reach it byte for byte; one it cannot take is refused.
func TestAttackSpellingOddContactValues(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	for _, v := range []string{"  Bob  ", `\`, `a\"b`, `\\`, "😀 Bob", "Bob\u00a0B", "Bob\u2028B", "Bob\u2029B", "Bob\u0085B",
		"#bob", "bob;rm", "`bob`", "%s%n", "\"", "'", "\\n", "bob\\", "-bob", "bob\u200bb", "\ufeffbob", "Bob\u202eB", "b\u0301ob"} {
		m := ldap.NewModifyRequest(userDN("bob"), nil)
		m.Replace("displayName", []string{v})
		err := bob.Modify(m)
		if err != nil {
			t.Logf("%q: %v", v, err)
			continue
		}
		waitFor(t, 10*time.Second, fmt.Sprintf("Axigen's nickName %q", v), func() error {
			a, _ := e.sim.Account(mirrorDomain, "bob")
			if a.Contact["nickName"] != v {
				return fmt.Errorf("Axigen has %q", a.Contact["nickName"])
			}
			return nil
		})
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}
