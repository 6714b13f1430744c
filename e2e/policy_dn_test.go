package e2e

// Issue 16: the write path cannot be fooled by a DN's spelling. Every
// spelling slapd resolves to an account is judged, journaled and mirrored
// as that account; checked against real slapd, the journal (cn=changelog)
// and the Axigen simulator.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

const (
	policyAxigenDN = "cn=axigen,dc=example,dc=com"
	policyAxigenPW = "axigen-ldap-pw"
)

// dnSpelling spells the account DN uid=<uid>,ou=people,dc=example,dc=com
// another way slapd takes.
type dnSpelling struct {
	name  string
	spell func(uid string) string
}

var dnSpellings = []dnSpelling{
	{"plain", func(uid string) string { return join("uid="+uid, "ou=people,dc=example,dc=com") }},
	{"OID type of ou", func(uid string) string { return join("uid="+uid, "2.5.4.11=people,dc=example,dc=com") }},
	{"aliases", func(uid string) string {
		return join("userid="+uid, "organizationalUnitName=people,domainComponent=example,dc=com")
	}},
	{"OIDs everywhere", func(uid string) string {
		return join("0.9.2342.19200300.100.1.1="+uid, "2.5.4.11=people,0.9.2342.19200300.100.1.25=example,0.9.2342.19200300.100.1.25=com")
	}},
	{"quoted value", func(uid string) string { return join(`uid="`+uid+`"`, `ou="people",dc=example,dc=com`) }},
	{"hex escapes", func(uid string) string {
		return join(fmt.Sprintf(`uid=\%02x%s`, uid[0], uid[1:]), `ou=peopl\65,dc=example,dc=com`)
	}},
	{"blanks, case and semicolons", func(uid string) string {
		return join("UID = "+strings.ToUpper(uid)+" ", " OU=People ; DC=Example , DC=COM")
	}},
	{"trailing NUL", func(uid string) string { return join("uid="+uid, `ou=people,dc=example,dc=com\00`) }},
}

func join(rdn, parent string) string { return rdn + "," + parent }

// parent is the spelling's ou=people alone.
func (s dnSpelling) parent() string {
	full := s.spell("x")
	_, rest, _ := strings.Cut(full, ",")
	return strings.TrimSpace(rest)
}

type policyOp string

const (
	opContact   policyOp = "modify contact"
	opMail      policyOp = "modify mail"
	opDelete    policyOp = "delete"
	opRename    policyOp = "modrdn"
	opMove      policyOp = "modrdn with new superior"
	opAdd       policyOp = "add"
	idAnonymous          = "anonymous"
	idOwner              = "owner"
	idOther              = "other user"
	idAdmin              = "admin"
	idAxigen             = "Axigen's identity"
)

// The default policy: what each identity may do to an account.
func policyAllows(id string, op policyOp) (allowed, mirrored bool) {
	switch id {
	case idAdmin:
		return true, true
	case idOwner:
		return op == opContact, op == opContact
	case idAxigen:
		return op == opContact, false
	}
	return false, false
}

func TestPolicyDNSpellings(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{
		LDIF:     []string{"dn: " + policyAxigenDN + "\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: axigen\nuserPassword: " + policyAxigenPW + "\n"},
		Extra:    []string{"--axigen-bind-dn", policyAxigenDN},
		LogLevel: "info",
	})
	ctx := context.Background()
	// The directory lets Axigen's identity write everything (member of
	// cn=admins): only the gateway's policy holds it back.
	root, err := e.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	m := ldap.NewModifyRequest(groupDN("admins"), nil)
	m.Add("member", []string{policyAxigenDN})
	if err := root.Modify(m); err != nil {
		t.Fatalf("make Axigen's identity a directory admin: %v", err)
	}

	ops := []policyOp{opContact, opMail, opDelete, opRename, opMove, opAdd}
	ids := []string{idAnonymous, idOwner, idOther, idAdmin, idAxigen}
	type tcase struct {
		spelling dnSpelling
		op       policyOp
		id       string
		uid      string // the account the case works on, fresh for each
	}
	var cases []tcase
	for _, s := range dnSpellings {
		for _, op := range ops {
			for _, id := range ids {
				if id == idOwner && op == opAdd {
					continue // an entry that does not exist yet has no owner
				}
				cases = append(cases, tcase{s, op, id, fmt.Sprintf("p%03d", len(cases))})
			}
		}
	}
	// Every account a case works on exists, in slapd and in Axigen,
	// before the cases start: created by the admin through the gateway.
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer admin.Close()
	for _, c := range cases {
		if c.op == opAdd {
			continue
		}
		if err := admin.Add(accountAdd(userDN(c.uid), c.uid)); err != nil {
			t.Fatalf("create %s: %v", c.uid, err)
		}
	}
	waitFor(t, 60*time.Second, "the case accounts in Axigen", func() error {
		for _, c := range cases {
			if _, ok := e.sim.Account(mirrorDomain, c.uid); !ok && c.op != opAdd {
				return fmt.Errorf("%s not yet in Axigen", c.uid)
			}
		}
		return nil
	})

	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s/%s", c.spelling.name, c.op, c.id), func(t *testing.T) {
			e := e.forT(t)
			conn := policyConn(t, e, c.id, c.uid)
			defer conn.Close()
			target := c.spelling.spell(c.uid)
			before := changelogCount(t, e, c.uid)
			phone, mail := "+1 555 9"+c.uid[1:], c.uid+"-new@example.com"
			var err error
			switch c.op {
			case opContact:
				m := ldap.NewModifyRequest(target, nil)
				m.Replace("telephoneNumber", []string{phone})
				err = conn.Modify(m)
			case opMail:
				m := ldap.NewModifyRequest(target, nil)
				m.Replace("mail", []string{mail})
				err = conn.Modify(m)
			case opDelete:
				err = conn.Del(ldap.NewDelRequest(target, nil))
			case opRename:
				err = conn.ModifyDN(ldap.NewModifyDNRequest(target, "uid="+c.uid+"r", true, ""))
			case opMove:
				err = conn.ModifyDN(ldap.NewModifyDNRequest(target, "uid="+c.uid+"r", true, c.spelling.parent()))
			case opAdd:
				err = conn.Add(accountAdd(target, c.uid))
			}
			allowed, mirrored := policyAllows(c.id, c.op)
			code := resultCode(err)
			switch {
			case allowed && code != 0:
				t.Fatalf("%s of %q as %s: result %d (%v), want success", c.op, target, c.id, code, err)
			case !allowed && (code != ldap.LDAPResultInsufficientAccessRights || !strings.Contains(err.Error(), "ldapgate: policy rule")):
				t.Fatalf("%s of %q as %s: %v, want the gateway's refusal (50)", c.op, target, c.id, err)
			}

			// The directory's state.
			dn, renamed := userDN(c.uid), userDN(c.uid+"r")
			entry := e.directoryEntry(dn, "telephoneNumber", "mail")
			switch c.op {
			case opContact:
				if got := entry.GetAttributeValue("telephoneNumber"); (got == phone) != allowed {
					t.Errorf("slapd's phone of %s is %q (allowed: %v)", c.uid, got, allowed)
				}
			case opMail:
				if got := entry.GetAttributeValue("mail"); (got == mail) != allowed {
					t.Errorf("slapd's mail of %s is %q (allowed: %v)", c.uid, got, allowed)
				}
			case opDelete, opAdd:
				if (entry != nil) != (allowed == (c.op == opAdd)) {
					t.Errorf("slapd holds %s: %v (allowed %s: %v)", c.uid, entry != nil, c.op, allowed)
				}
			case opRename, opMove:
				if moved := e.directoryEntry(renamed); (moved != nil) != allowed || (entry != nil) == allowed {
					t.Errorf("slapd holds %s: %v, %s: %v (allowed: %v)", c.uid, entry != nil, c.uid+"r", moved != nil, allowed)
				}
			}

			// The journal: one record about the account when mirrored, none otherwise.
			want := before
			if mirrored {
				want++
			}
			if got := changelogCount(t, e, c.uid); got != want {
				t.Errorf("cn=changelog holds %d records about %s, want %d", got, c.uid, want)
			}

			// Axigen: the change when mirrored, nothing otherwise.
			if mirrored {
				e.waitAccount(simName(c.op, c.uid), string(c.op), func(a axigensim.AccountState, ok bool) bool {
					switch c.op {
					case opContact:
						return ok && a.Contact["phone"] == phone
					case opMail:
						return ok && a.Contact["businessEmail"] == mail
					case opDelete:
						return !ok
					}
					return ok
				})
			} else {
				a, ok := e.sim.Account(mirrorDomain, c.uid)
				switch {
				case ok != (c.op != opAdd):
					t.Errorf("Axigen holds %s: %v", c.uid, ok)
				case ok && (a.Contact["phone"] == phone || a.Contact["businessEmail"] == mail):
					t.Errorf("Axigen got the change of %s: %+v", c.uid, a.Contact)
				}
				if _, ok := e.sim.Account(mirrorDomain, c.uid+"r"); ok {
					t.Errorf("Axigen holds %sr", c.uid)
				}
			}
			if c.id == idAxigen && allowed {
				// Axigen made that change itself: in real life it has it
				// already. The simulator has not; put the directory back.
				m := ldap.NewModifyRequest(dn, nil)
				m.Replace("telephoneNumber", []string{"+1 555 0000"})
				if err := root.Modify(m); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// Whatever was refused, allowed or mirrored, Axigen and the directory agree.
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(30*time.Second, false)
}

// Issue 16's bypass, as reported: bob changes his own mail through
// uid=bob,2.5.4.11=people,... (and the other spellings slapd resolves to
// him). The gateway refuses each; slapd, the journal and Axigen keep his
// address.
func TestPolicyBobCannotChangeHisMailThroughAnotherSpelling(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	defer bob.Close()
	for _, s := range dnSpellings {
		m := ldap.NewModifyRequest(s.spell("bob"), nil)
		m.Replace("mail", []string{"boss@example.com"})
		err := bob.Modify(m)
		if resultCode(err) != ldap.LDAPResultInsufficientAccessRights || !strings.Contains(err.Error(), "account mail address") {
			t.Errorf("bob's mail through %q (%s): %v, want the gateway's refusal (50) naming the mail rule", s.spell("bob"), s.name, err)
		}
	}
	if got := e.directoryEntry(userDN("bob"), "mail").GetAttributeValue("mail"); got != "bob@example.com" {
		t.Errorf("slapd's mail of bob is %q", got)
	}
	if got := changelogCount(t, e, "bob"); got != 0 {
		t.Errorf("cn=changelog holds %d records about bob", got)
	}
	// bob's next own write (his phone) is mirrored, and with it nothing he
	// was refused.
	m := ldap.NewModifyRequest(userDN("bob"), nil)
	m.Replace("telephoneNumber", []string{"+1 555 2424"})
	if err := bob.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.waitAccount("bob", "his phone", func(a axigensim.AccountState, ok bool) bool { return ok && a.Contact["phone"] == "+1 555 2424" })
	if a, _ := e.sim.Account(mirrorDomain, "bob"); a.Contact["businessEmail"] != "bob@example.com" {
		t.Errorf("Axigen's address of bob is %q", a.Contact["businessEmail"])
	}
	e.waitMirrored(20*time.Second, false)
}

// The gateway's canonical form of a DN equals slapd's own (entryDN, read
// with a base search) for every generated spelling slapd accepts and the
// gateway claims to be sure of; and a spelling the gateway is sure names
// an entry, slapd finds. Spellings the gateway is unsure of are resolved
// by the directory at the write (TestPolicyDNSpellings).
func TestPolicyCanonicalDNMatchesSlapd(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{})
	c, err := dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	entries := []string{userDN("bob"), userDN("alice"), groupDN("staff"), mirrorAccountBase, "cn=Bob Builder," + mirrorAccountBase}
	add := ldap.NewAddRequest(entries[len(entries)-1], nil)
	add.Attribute("objectClass", []string{"person"})
	add.Attribute("sn", []string{"Builder"})
	if err := c.Add(add); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(16, 2026))
	var sure, accepted, total int
	for range 1500 {
		orig := entries[rng.IntN(len(entries))]
		spelling := respell(rng, orig)
		total++
		exact, exactErr := schema.ExactDN(spelling)
		res, err := c.Search(ldap.NewSearchRequest(spelling, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", []string{"entryDN"}, nil))
		var found string
		switch {
		case err == nil && len(res.Entries) == 1:
			accepted++
			found = res.Entries[0].GetAttributeValue("entryDN")
		case err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) && !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax):
			t.Fatalf("base search of %q: %v", spelling, err)
		}
		if exactErr != nil {
			continue
		}
		sure++
		if found != "" && exact != schema.CanonicalDN(found) {
			t.Errorf("%q: the gateway is sure it is %q, slapd's entryDN is %q", spelling, exact, found)
		}
		if found == "" && exact == schema.CanonicalDN(orig) {
			t.Errorf("%q: the gateway is sure it is %q, slapd finds no entry (%v)", spelling, exact, err)
		}
	}
	t.Logf("%d spellings: slapd accepted %d, the gateway was sure of %d", total, accepted, sure)
	if sure < total/3 || accepted < total/2 {
		t.Errorf("the generator is off: %d sure, %d accepted of %d", sure, accepted, total)
	}
}

// respell spells dn another way: each type by a name, alias or OID in any
// case, each value with case changes, escapes, quotes and blanks, the
// separators ',' or ';' with blanks; now and then a NUL or a character
// slapd folds (fullwidth), which the gateway must leave to the directory.
func respell(rng *rand.Rand, dn string) string {
	typeSpellings := map[string][]string{
		"uid": {"uid", "UID", "userid", "userID", "0.9.2342.19200300.100.1.1"},
		"ou":  {"ou", "OU", "organizationalUnitName", "2.5.4.11"},
		"dc":  {"dc", "DC", "domainComponent", "0.9.2342.19200300.100.1.25"},
		"cn":  {"cn", "CN", "commonName", "2.5.4.3"},
	}
	rdns := strings.Split(dn, ",")
	var b strings.Builder
	for i, rdn := range rdns {
		typ, val, _ := strings.Cut(rdn, "=")
		if i > 0 {
			b.WriteString([]string{",", ";", " , ", ", ", " ;"}[rng.IntN(5)])
		}
		names := typeSpellings[typ]
		b.WriteString(names[rng.IntN(len(names))])
		b.WriteString([]string{"=", " = ", "= "}[rng.IntN(3)])
		var v strings.Builder
		for j := 0; j < len(val); j++ {
			ch := val[j]
			if rng.IntN(4) == 0 {
				ch = flipCase(ch)
			}
			switch {
			case ch == ' ' && rng.IntN(2) == 0:
				v.WriteString(`  `) // a run of blanks inside
			case rng.IntN(6) == 0:
				fmt.Fprintf(&v, `\%02x`, ch)
			default:
				v.WriteByte(ch)
			}
		}
		value := v.String()
		switch rng.IntN(12) {
		case 0:
			value = `"` + value + `"`
		case 1:
			value = `\20` + value + `\20`
		case 2:
			value += `\00`
		case 3:
			value = strings.Replace(value, "o", "\uff4f", 1) // fullwidth o
		case 4:
			value += "  " // unescaped trailing blanks
		}
		b.WriteString(value)
	}
	return b.String()
}

func flipCase(c byte) byte {
	switch {
	case c >= 'a' && c <= 'z':
		return c - 'a' + 'A'
	case c >= 'A' && c <= 'Z':
		return c - 'A' + 'a'
	}
	return c
}

// accountAdd is the add of an account uid at dn.
func accountAdd(dn, uid string) *ldap.AddRequest {
	a := ldap.NewAddRequest(dn, nil)
	a.Attribute("objectClass", []string{"inetOrgPerson"})
	a.Attribute("uid", []string{uid})
	a.Attribute("cn", []string{"Case " + uid})
	a.Attribute("sn", []string{uid})
	a.Attribute("mail", []string{uid + "@example.com"})
	a.Attribute("telephoneNumber", []string{"+1 555 0000"})
	a.Attribute("userPassword", []string{"pw-" + uid})
	return a
}

// policyConn is a connection to the gateway bound as the case's identity.
func policyConn(t *testing.T, e *mirrorEnv, id, uid string) *ldap.Conn {
	t.Helper()
	switch id {
	case idOwner:
		return bindConn(t, e.gw.URL, userDN(uid), "pw-"+uid)
	case idOther:
		return bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	case idAdmin:
		return bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	case idAxigen:
		return bindConn(t, e.gw.URL, policyAxigenDN, policyAxigenPW)
	}
	c, err := ldap.DialURL(e.gw.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// changelogCount counts the journal's records about account uid (its DN
// the record's target), read from the gateway's cn=changelog by the admin.
func changelogCount(t *testing.T, e *mirrorEnv, uid string) int {
	t.Helper()
	c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(targetDN="+ldap.EscapeFilter("uid="+uid+",")+"*)", []string{"targetDN"}, nil))
	if err != nil {
		t.Fatalf("read cn=changelog: %v", err)
	}
	n := 0
	for _, en := range res.Entries {
		if schema.EqualDN(en.GetAttributeValue("targetDN"), userDN(uid)) {
			n++
		}
	}
	return n
}

// simName is the Axigen account a mirrored case leaves: renamed ones have
// their new name.
func simName(op policyOp, uid string) string {
	if op == opRename || op == opMove {
		return uid + "r"
	}
	return uid
}

// resultCode is err's LDAP result code: 0 for no error, -1 for one that
// is not an LDAP result.
func resultCode(err error) int {
	if err == nil {
		return 0
	}
	return ldapCode(err)
}

// Controls on account writes, through the relay to real slapd: an unknown
// critical control and a transaction are refused by the gateway; a no-op
// is judged (refused for another user's account) and, allowed, leaves
// slapd, the journal and Axigen as they were; an unknown non-critical
// control does not stop a write from being mirrored.
func TestPolicyControlsOnWrites(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	alice := bindConn(t, e.gw.URL, userDN("alice"), slapd.AlicePassword)
	defer alice.Close()
	phone := func(value string, ctls ...ldap.Control) error {
		m := ldap.NewModifyRequest(userDN("alice"), ctls)
		m.Replace("telephoneNumber", []string{value})
		return alice.Modify(m)
	}
	if err := phone("+1 555 1201", ldap.NewControlString("1.2.3.4.5", true, "")); resultCode(err) != ldap.LDAPResultUnavailableCriticalExtension {
		t.Errorf("an unknown critical control: %v, want 12", err)
	}
	if err := phone("+1 555 1202", ldap.NewControlString("1.3.6.1.1.21.2", true, "txn-1")); resultCode(err) != ldap.LDAPResultUnwillingToPerform ||
		!strings.Contains(err.Error(), "RFC 5805") {
		t.Errorf("a transaction's write: %v, want 53 naming RFC 5805", err)
	}
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	defer bob.Close()
	m := ldap.NewModifyRequest(userDN("alice"), []ldap.Control{ldap.NewControlString("1.3.6.1.4.1.4203.1.10.2", true, "")})
	m.Replace("telephoneNumber", []string{"+1 555 1203"})
	if err := bob.Modify(m); resultCode(err) != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("bob's no-op of alice's phone: %v, want the policy's 50", err)
	}
	err := phone("+1 555 1204", ldap.NewControlString("1.3.6.1.4.1.4203.1.10.2", true, ""))
	// Debian's slapd is built without the no-op control and answers 12;
	// one built with it answers its noOperation code. Neither changes the
	// entry, and the gateway journals nothing.
	t.Logf("alice's no-op: %v", err)
	if got := e.directoryEntry(userDN("alice"), "telephoneNumber").GetAttributeValue("telephoneNumber"); got != "+1 555 0101" {
		t.Errorf("slapd's phone of alice is %q after refusals and a no-op", got)
	}
	if n := changelogCount(t, e, "alice"); n != 0 {
		t.Errorf("cn=changelog holds %d records about alice after refusals and a no-op", n)
	}
	if err := phone("+1 555 1205", ldap.NewControlString("1.2.3.4.5", false, "")); err != nil {
		t.Fatalf("a write with an unknown non-critical control: %v", err)
	}
	e.waitAccount("alice", "the write with a non-critical control", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 1205"
	})
	if n := changelogCount(t, e, "alice"); n != 1 {
		t.Errorf("cn=changelog holds %d records about alice, want the one allowed write", n)
	}
	e.waitMirrored(20*time.Second, false)
}
