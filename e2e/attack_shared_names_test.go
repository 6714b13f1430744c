package e2e

// Attacks on two changes of one day. First, checkNameFree
// (gateway/mirror/values.go): a write giving an account a group's name, or
// a group an account's, is refused (19), since both are addresses of the
// domain in Axigen; accounts and groups share the per-gateway name claims
// (a second racing write giving one name is busy, 51). Tried: case
// differences, escaped RDN characters, multi-valued names, modifies (not
// renames) of the name attribute, racing adds of both kinds, names taken
// from the mail address, renames keeping a name, entries outside the bases
// and moves into them, and entries that already share a name in the
// directory. Second, refreshGroups (gateway/mirror/deliver.go): a member's
// delivery that re-applies its groups fails and is retried while one of
// them has a write on its way; tried with that write held for long (a
// proxy in front of slapd keeps it from the directory), its client gone,
// a small --max-attempts, many members, and a crash while it is held.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// writeHoldProxy forwards TCP to the directory. Once armed with a marker,
// a connection that sends a write (add, modify or modify DN) carrying it
// is held: that write, and what follows it on the connection, waits (not
// lost) until release forwards it, or cut closes the connection without
// sending it. Armed for answers (armAnswer), the write goes to slapd and
// the directory's answers on that connection wait instead. The gateway's
// own reads (searches, even ones whose filter holds the marker) pass: only
// the client's write is held.
type writeHoldProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	cond    *sync.Cond
	marker  []byte
	answers bool // hold the answers, not the write
	gen     int  // arming generation: a connection is held for one arming
	holding bool
	cut     bool
	held    int // connections held so far
}

// proxyConn is one connection through the proxy; mu is the proxy's.
type proxyConn struct {
	heldGen   int // the arming that held it, or -1
	answerGen int // the arming that holds its answers, or -1
}

func newWriteHoldProxy(t *testing.T, target string) *writeHoldProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &writeHoldProxy{ln: ln, target: target}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { ln.Close(); p.release() })
	go func() {
		for {
			cl, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				cl.Close()
				continue
			}
			pc := &proxyConn{heldGen: -1, answerGen: -1}
			go p.answer(pc, cl, up)
			go p.forward(pc, cl, up)
		}
	}()
	return p
}

// forward copies what the gateway sends towards slapd, holding it as armed.
func (p *writeHoldProxy) forward(pc *proxyConn, cl, up net.Conn) {
	defer up.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := cl.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			p.mu.Lock()
			if p.holding && pc.heldGen != p.gen && pc.answerGen != p.gen && p.marker != nil && bytes.Contains(chunk, p.marker) && isWriteOp(chunk) {
				if p.answers {
					pc.answerGen = p.gen
				} else {
					pc.heldGen = p.gen
				}
				p.held++
				p.cond.Broadcast()
			}
			for p.holding && pc.heldGen == p.gen && !p.cut {
				p.cond.Wait()
			}
			cut := p.cut && pc.heldGen == p.gen
			p.mu.Unlock()
			if cut {
				cl.Close()
				return
			}
			if _, werr := up.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// answer copies slapd's answers to the gateway, holding them as armed.
func (p *writeHoldProxy) answer(pc *proxyConn, cl, up net.Conn) {
	defer cl.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.holding && pc.answerGen == p.gen && !p.cut {
				p.cond.Wait()
			}
			cut := p.cut && pc.answerGen == p.gen
			p.mu.Unlock()
			if cut {
				up.Close()
				return
			}
			if _, werr := cl.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// isWriteOp reports whether b begins with an LDAPMessage whose operation
// is an add, modify or modify DN request.
func isWriteOp(b []byte) bool {
	if len(b) < 2 || b[0] != 0x30 {
		return false
	}
	i := 1
	l := int(b[i])
	i++
	if l&0x80 != 0 {
		i += l & 0x7f
	}
	if i+2 > len(b) || b[i] != 0x02 {
		return false
	}
	i += 2 + int(b[i+1])
	if i >= len(b) {
		return false
	}
	switch b[i] {
	case 0x66, 0x68, 0x6c: // modify, add, modify DN
		return true
	}
	return false
}

func (p *writeHoldProxy) addr() string { return p.ln.Addr().String() }

// arm holds the next connection sending a write that carries marker.
func (p *writeHoldProxy) arm(marker string) { p.arming(marker, false) }

// armAnswer lets the next write that carries marker through, and holds the
// directory's answers on its connection.
func (p *writeHoldProxy) armAnswer(marker string) { p.arming(marker, true) }

func (p *writeHoldProxy) arming(marker string, answers bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	p.marker, p.answers, p.holding, p.cut = []byte(marker), answers, true, false
}

// release forwards what is held.
func (p *writeHoldProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holding = false
	p.cond.Broadcast()
}

// cutHeld closes the held connections without sending what they hold.
func (p *writeHoldProxy) cutHeld() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.cond.Broadcast()
}

// waitHeld waits until n connections have been held since the proxy began.
func (p *writeHoldProxy) waitHeld(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d writes held by the proxy", n), func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.held < n {
			return fmt.Errorf("%d held", p.held)
		}
		return nil
	})
}

// newHeldEnv is newAttackEnv with the gateway's upstream through a
// writeHoldProxy.
func newHeldEnv(t *testing.T, ldif []string, extra ...string) (*mirrorEnv, *writeHoldProxy) {
	t.Helper()
	e, root := newEnv(t)
	e.dir = slapd.StartT(t, slapd.Options{LDIF: ldif})
	px := newWriteHoldProxy(t, strings.TrimPrefix(e.dir.URL, "ldap://"))
	e.startMirroring(root, mirrorSetup{
		dialect: schema.OpenLDAP, accountBase: mirrorAccountBase, groupBase: mirrorGroupBase,
		serviceDN: mirrorAdminDN, servicePW: e.dir.RootPW,
		upstream: []string{"--upstream", "ldap://" + px.addr()},
		logLevel: "info", extra: extra,
	}, e.seed)
	// Registered after the gateway's stop: runs before it, so that a held
	// write never keeps the gateway from stopping.
	t.Cleanup(px.release)
	return e, px
}

// sharedNames lists the names Axigen (the simulator) holds both as an
// account and as a group: the real server holds one address per name.
func (e *mirrorEnv) sharedNames() []string {
	var out []string
	for _, a := range e.sim.Accounts(mirrorDomain) {
		for _, g := range e.sim.Groups(mirrorDomain) {
			if strings.EqualFold(a.Name, g.Name) {
				out = append(out, a.Name)
			}
		}
	}
	return out
}

// dirShared lists the names the directory gives both an account and a
// group (as the mapping names them).
func (e *mirrorEnv) dirShared(t *testing.T) []string {
	t.Helper()
	st, err := e.directoryState()
	if err != nil {
		t.Fatalf("read the directory: %v", err)
	}
	var out []string
	for _, a := range st.Accounts {
		for _, g := range st.Groups {
			if strings.EqualFold(a.Name, g.Name) {
				out = append(out, a.Name)
			}
		}
	}
	return out
}

// groupAdd is an add of a groupOfNames at dn with the cn values and members.
func groupAdd(dn string, cns []string, members ...string) *ldap.AddRequest {
	a := ldap.NewAddRequest(dn, nil)
	a.Attribute("objectClass", []string{"groupOfNames"})
	a.Attribute("cn", cns)
	a.Attribute("member", members)
	return a
}

// wantCode fails unless err has code; for a refusal (code != 0) the
// diagnostic must be the gateway's and hold parts.
func wantCode(t *testing.T, what string, err error, code int, parts ...string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if code == 0 {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	wantRefused(t, what, err, code, parts...)
}

const sharedContacts = "ou=contacts," + mirrorSuffix

// sharedNamesLDIF: an account named a+b (an escaped RDN), an account named
// by cn with two uids (its name is the first, cnp1), a group cnp2, a group
// named by its cn though its RDN is a description (pair9), a sub-unit of
// the account base, and, outside the bases, a groupOfNames dave, an
// account-class entry outacct and a contact carol.
func sharedNamesLDIF() []string {
	return []string{
		"dn: uid=a\\+b," + mirrorAccountBase + "\nobjectClass: inetOrgPerson\nuid: a+b\ncn: A B\nsn: B\nmail: a+b@example.com\nuserPassword: pw-ab\n",
		"dn: cn=Multi," + mirrorAccountBase + "\nobjectClass: inetOrgPerson\ncn: Multi\nsn: M\nuid: cnp1\nuid: cnp2\nmail: cnp1@example.com\nuserPassword: pw-cnp1\n",
		"dn: ou=sub," + mirrorAccountBase + "\nobjectClass: organizationalUnit\nou: sub\n",
		"dn: " + groupDN("cnp2") + "\nobjectClass: groupOfNames\ncn: cnp2\nmember: " + userDN("bob") + "\n",
		"dn: description=g9," + mirrorGroupBase + "\nobjectClass: groupOfNames\ncn: pair9\ndescription: g9\nmember: " + userDN("alice") + "\n",
		"dn: " + sharedContacts + "\nobjectClass: organizationalUnit\nou: contacts\n",
		"dn: cn=dave," + sharedContacts + "\nobjectClass: groupOfNames\ncn: dave\nmember: " + userDN("alice") + "\n",
		"dn: uid=outacct," + sharedContacts + "\nobjectClass: inetOrgPerson\nuid: outacct\ncn: Out\nsn: Out\nmail: outacct@example.com\n",
		"dn: uid=carol," + sharedContacts + "\nobjectClass: inetOrgPerson\nuid: carol\ncn: Carol Contact\nsn: Contact\nmail: carol.contact@partner.org\n",
	}
}

// Spellings and shapes of one name shared by an account and a group, each
// write through the gateway, one at a time. Refused (19, the gateway's
// diagnostic): a group Bob beside account bob; a group whose RDN is BOB
// with cn [zz1, BOB]; a group whose RDN spells bob in hex escapes; a group
// a+b beside account a+b (escaped RDN); an account Staff; carol renamed
// to STAFF; admins renamed to Alice; a modify (not a rename) of the cn of
// a group named by another RDN to bob; a modify deleting the first uid of
// an account named by cn, whose name becomes a group's (cnp2), and one
// replacing its uid with staff. Allowed: names held only by entries
// outside the bases; a value of the other kind's name added beside the
// RDN's (the name stays); renames changing only case. Moves into the
// bases of entries whose name is taken (a groupOfNames dave beside account
// dave, an account outacct beside group outacct, a second carol in a
// sub-unit) must be refused as the renames are. Afterwards the directory
// and Axigen hold no name twice, and Axigen equals the directory.
func TestAttackSharedNamesSpellingsAndShapes(t *testing.T) {
	e := newAttackEnv(t, "", sharedNamesLDIF())
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	const other = "both addresses of the domain"

	wantCode(t, "group Bob beside account bob", admin.Add(groupAdd(groupDN("Bob"), []string{"Bob"}, userDN("alice"))), 19, other)
	wantCode(t, "group cn=BOB with cn [zz1, BOB]", admin.Add(groupAdd(groupDN("BOB"), []string{"zz1", "BOB"}, userDN("alice"))), 19, other)
	wantCode(t, `group cn=\62\6f\62 (bob in hex escapes)`, admin.Add(groupAdd(`cn=\62\6f\62,`+mirrorGroupBase, []string{"bob"}, userDN("alice"))), 19, other)
	wantCode(t, `group cn=a\+b beside account a+b`, admin.Add(groupAdd(`cn=a\+b,`+mirrorGroupBase, []string{"a+b"}, userDN("alice"))), 19, other)
	wantCode(t, "account Staff beside group staff", admin.Add(accountAdd(userDN("Staff"), "Staff")), 19, other)
	wantCode(t, "carol renamed to STAFF", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("carol"), "uid=STAFF", true, "")), 19, other)
	wantCode(t, "admins renamed to Alice", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("admins"), "cn=Alice", true, "")), 19, other)
	m := ldap.NewModifyRequest("description=g9,"+mirrorGroupBase, nil)
	m.Replace("cn", []string{"bob"})
	wantCode(t, "the cn of group pair9 (RDN description=g9) replaced by bob", admin.Modify(m), 19, other)
	m = ldap.NewModifyRequest("cn=Multi,"+mirrorAccountBase, nil)
	m.Delete("uid", []string{"cnp1"})
	wantCode(t, "account cnp1 (cn=Multi, uid [cnp1 cnp2]) loses uid cnp1: named cnp2, a group's name", admin.Modify(m), 19, other)
	m = ldap.NewModifyRequest("cn=Multi,"+mirrorAccountBase, nil)
	m.Replace("uid", []string{"staff"})
	wantCode(t, "account cnp1 (cn=Multi) gets uid staff", admin.Modify(m), 19, other)

	// Allowed: names held only outside the bases, values beside the RDN.
	wantCode(t, "group outacct (an account-class entry outside the bases has the name)", admin.Add(groupAdd(groupDN("outacct"), []string{"outacct"}, userDN("bob"))), 0)
	wantCode(t, "account dave (a groupOfNames outside the bases has the name)", admin.Add(accountAdd(userDN("dave"), "dave")), 0)
	m = ldap.NewModifyRequest(groupDN("staff"), nil)
	m.Add("cn", []string{"carol"})
	wantCode(t, "group staff gets a second cn carol (its name stays staff)", admin.Modify(m), 0)
	m = ldap.NewModifyRequest(userDN("alice"), nil)
	m.Add("uid", []string{"admins"})
	wantCode(t, "account alice gets a second uid admins (her name stays alice)", admin.Modify(m), 0)
	wantCode(t, "staff renamed to Staff (case only)", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=Staff", true, "")), 0)
	wantCode(t, "bob renamed to Bob (case only)", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("bob"), "uid=Bob", true, "")), 0)
	wantCode(t, "Bob moved to ou=sub of the account base (his name kept)", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("Bob"), "uid=Bob", true, "ou=sub,"+mirrorAccountBase)), 0)
	wantCode(t, "alice (uid [alice admins]) renamed to cn=Alice Liddell dropping uid alice: named admins, a group's name",
		admin.ModifyDN(ldap.NewModifyDNRequest(userDN("alice"), "cn=Alice Liddell", true, "")), 19, other)

	// Moves into the bases of entries whose name is taken.
	wantCode(t, "groupOfNames dave moved from the contacts into the group base (account dave exists)",
		admin.ModifyDN(ldap.NewModifyDNRequest("cn=dave,"+sharedContacts, "cn=dave", true, mirrorGroupBase)), 19, other)
	wantCode(t, "account-class outacct moved from the contacts into the account base (group outacct exists)",
		admin.ModifyDN(ldap.NewModifyDNRequest("uid=outacct,"+sharedContacts, "uid=outacct", true, mirrorAccountBase)), 19, other)
	wantCode(t, "contact carol moved into ou=sub of the account base (account carol exists)",
		admin.ModifyDN(ldap.NewModifyDNRequest("uid=carol,"+sharedContacts, "uid=carol", true, "ou=sub,"+mirrorAccountBase)), 19, "carol")

	for _, dn := range []string{groupDN("Bob"), `cn=a\+b,` + mirrorGroupBase, userDN("Staff"), userDN("STAFF"), groupDN("Alice")} {
		if e.directoryEntry(dn, "cn") != nil {
			t.Errorf("the directory has %s, which the gateway refused", dn)
		}
	}
	if en := e.directoryEntry("cn=Multi,"+mirrorAccountBase, "uid"); en == nil || len(en.GetAttributeValues("uid")) != 2 {
		t.Errorf("cn=Multi's uids after the refused modifies: %v", en)
	}
	e.waitDrained(20*time.Second, false)
	if shared := e.dirShared(t); len(shared) > 0 {
		t.Errorf("the directory now names both an account and a group %v: the gateway let a write give one name to both", shared)
	}
	for _, dn := range []string{groupDN("dave"), userDN("outacct"), "uid=carol,ou=sub," + mirrorAccountBase} {
		if e.directoryEntry(dn, "cn") != nil {
			t.Errorf("the directory has %s: an entry was moved into the bases under a name another account or group has", dn)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for e.checkMirrored(false) != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
	if err := e.checkMirrored(false); err != nil {
		t.Errorf("Axigen differs from the directory: %v", err)
	}
	if shared := e.sharedNames(); len(shared) > 0 {
		t.Errorf("Axigen holds %v both as accounts and as groups (the real server holds one address per name)", shared)
	}
	if a, ok := e.sim.Account(mirrorDomain, "carol"); ok && (a.Password != slapd.CarolPassword || a.Contact["lastName"] != "Danvers") {
		t.Errorf("Axigen's carol (uid=carol,ou=people's mailbox) now has the moved contact's state: %+v", a)
	}
	e.logAccounts(t)
	for _, g := range e.sim.Groups(mirrorDomain) {
		t.Logf("Axigen group %s: %v", g.Name, g.Members)
	}
	e.requireAlive()
	if crash := e.logCrash(4000); crash != "" {
		t.Errorf("gateway log shows a crash:\n%s", crash)
	}
}

// An account twin and a group twin made directly in the directory (no
// gateway refused them). Legitimate writes to either through the gateway
// must not be refused because the other exists: the account's phone and
// password, a replace of its uid with the same value, the group's
// members, description and cn (same value), a case-only rename of the
// group, and a rename of the account to a free name. Once the account is
// twin2, renaming it back to twin is refused (the group has the name).
// Axigen follows each.
func TestAttackSharedNamesTwinsMadeBehindTheGateway(t *testing.T) {
	e := newAttackEnv(t, "", []string{
		"dn: " + userDN("twin") + "\nobjectClass: inetOrgPerson\nuid: twin\ncn: Twin\nsn: Twin\nmail: twin@example.com\nuserPassword: pw-twin\n",
		"dn: " + groupDN("twin") + "\nobjectClass: groupOfNames\ncn: twin\nmember: " + userDN("alice") + "\n",
	})
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	const newPW = "Twin-New-Pw-4411"
	wantCode(t, "twin's phone", modifyOne(admin, userDN("twin"), "telephoneNumber", "+1 555 4411"), 0)
	_, err := admin.PasswordModify(ldap.NewPasswordModifyRequest(userDN("twin"), "", newPW))
	wantCode(t, "twin's password (password modify)", err, 0)
	if err == nil {
		e.setKnownPassword("twin", newPW)
	}
	wantCode(t, "twin's uid replaced by twin", modifyOne(admin, userDN("twin"), "uid", "twin"), 0)
	m := ldap.NewModifyRequest(groupDN("twin"), nil)
	m.Add("member", []string{userDN("bob")})
	wantCode(t, "bob added to group twin", admin.Modify(m), 0)
	wantCode(t, "group twin's description", modifyOne(admin, groupDN("twin"), "description", "the twin group"), 0)
	wantCode(t, "group twin's cn replaced by twin", modifyOne(admin, groupDN("twin"), "cn", "twin"), 0)
	wantCode(t, "group twin renamed to Twin (case only)", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("twin"), "cn=Twin", true, "")), 0)
	wantCode(t, "account twin renamed to twin2 (free)", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("twin"), "uid=twin2", true, "")), 0)
	wantCode(t, "account twin2 renamed back to twin (group Twin has the name)",
		admin.ModifyDN(ldap.NewModifyDNRequest(userDN("twin2"), "uid=twin", true, "")), 19, "both addresses of the domain")
	e.waitDrained(20*time.Second, false)
	e.waitAccount("twin2", "the twin's mailbox, renamed, with its new password and phone", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == newPW && a.Contact["phone"] == "+1 555 4411"
	})
	e.waitGroup("twin", "alice and bob", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"alice@example.com", "bob@example.com"})
	})
	e.waitMirrored(20*time.Second, false)
	e.noSecretsInLog(t, e.dir.RootPW, newPW, "pw-twin")
}

// modifyOne replaces attr of dn with value.
func modifyOne(c *ldap.Conn, dn, attr, value string) error {
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace(attr, []string{value})
	return c.Modify(m)
}

// Names claimed by writes on their way. The add of account race1 is held
// on its way to the directory (a proxy keeps it from slapd): meanwhile a
// group add of race1, of RACE1 and a rename of admins to race1 are busy
// (51, the gateway's diagnostic); released, the add is made and a group
// race1 is then refused (19). A held add whose client disconnects keeps
// its claim until the directory answers, and gives it up then. An add the
// directory refuses gives its claim up. Then eight rounds of an account
// add and a group add of one name, racing on two connections: one is
// made, the other refused (19 or 51), never both. Axigen ends equal to
// the directory, with no name held twice.
func TestAttackSharedNamesClaimsAcrossKinds(t *testing.T) {
	e, px := newHeldEnv(t, nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	holder := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)

	px.arm("HOLD-CLAIM-race1")
	added := make(chan error, 1)
	go func() {
		a := accountAdd(userDN("race1"), "race1")
		a.Attribute("description", []string{"HOLD-CLAIM-race1"})
		added <- holder.Add(a)
	}()
	px.waitHeld(t, 1)
	const busy = "accounts and groups share names"
	wantCode(t, "group race1 while account race1's add is on its way", admin.Add(groupAdd(groupDN("race1"), []string{"race1"}, userDN("alice"))), 51, busy)
	wantCode(t, "group RACE1 while account race1's add is on its way", admin.Add(groupAdd(groupDN("RACE1"), []string{"RACE1"}, userDN("alice"))), 51, busy)
	wantCode(t, "admins renamed to race1 while account race1's add is on its way", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("admins"), "cn=race1", true, "")), 51, busy)
	px.release()
	select {
	case err := <-added:
		wantCode(t, "account race1's add, released", err, 0)
	case <-time.After(15 * time.Second):
		t.Fatal("account race1's add not answered 15 s after its release")
	}
	wantCode(t, "group race1 once account race1 is made", admin.Add(groupAdd(groupDN("race1"), []string{"race1"}, userDN("alice"))), 19, "both addresses of the domain")

	// The held add's client goes away.
	px.arm("HOLD-CLAIM-leak1")
	gone := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	goneDone := make(chan error, 1)
	go func() {
		a := accountAdd(userDN("leak1"), "leak1")
		a.Attribute("description", []string{"HOLD-CLAIM-leak1"})
		goneDone <- gone.Add(a)
	}()
	px.waitHeld(t, 2)
	gone.Close()
	<-goneDone
	err := admin.Add(groupAdd(groupDN("leak1"), []string{"leak1"}, userDN("alice")))
	t.Logf("group leak1 while the held add's client is gone: %v", err)
	if err == nil {
		t.Errorf("group leak1 made while account leak1's add was on its way")
	} else if resultCode(err) != ldap.LDAPResultBusy {
		t.Errorf("group leak1 while account leak1's add is on its way: %v, want busy (51)", err)
	}
	px.release()
	e.waitDrained(20*time.Second, false)
	leakMade := e.directoryEntry(userDN("leak1"), "uid") != nil
	t.Logf("account leak1 made by the directory after its client left: %v", leakMade)
	err = admin.Add(groupAdd(groupDN("leak1"), []string{"leak1"}, userDN("alice")))
	if leakMade {
		wantCode(t, "group leak1 after account leak1 was made", err, 19, "both addresses of the domain")
	} else {
		wantCode(t, "group leak1 after account leak1's add came to nothing", err, 0)
	}

	// An add the directory refuses (no sn: objectClassViolation) frees its claim.
	a := ldap.NewAddRequest(userDN("leak2"), nil)
	a.Attribute("objectClass", []string{"inetOrgPerson"})
	a.Attribute("uid", []string{"leak2"})
	a.Attribute("cn", []string{"Leak Two"})
	a.Attribute("mail", []string{"leak2@example.com"})
	err = admin.Add(a)
	t.Logf("account leak2 without sn: %v", err)
	if err == nil {
		t.Fatalf("the directory took an inetOrgPerson without sn")
	}
	wantCode(t, "group leak2 after account leak2's add was refused by the directory",
		admin.Add(groupAdd(groupDN("leak2"), []string{"leak2"}, userDN("alice"))), 0)

	// Racing adds of both kinds, no proxy hold.
	other := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := range 8 {
		name := fmt.Sprintf("rr%d", i)
		var wg sync.WaitGroup
		var accErr, grpErr error
		wg.Add(2)
		go func() { defer wg.Done(); accErr = admin.Add(accountAdd(userDN(name), name)) }()
		go func() {
			defer wg.Done()
			grpErr = other.Add(groupAdd(groupDN(name), []string{name}, userDN("alice")))
		}()
		wg.Wait()
		accMade := e.directoryEntry(userDN(name), "uid") != nil
		grpMade := e.directoryEntry(groupDN(name), "cn") != nil
		t.Logf("%s: account %v (made %v), group %v (made %v)", name, accErr, accMade, grpErr, grpMade)
		if accMade && grpMade {
			t.Errorf("%s: both the account and the group were made", name)
		}
		for what, err := range map[string]error{"account": accErr, "group": grpErr} {
			if c := resultCode(err); c != 0 && c != ldap.LDAPResultConstraintViolation && c != ldap.LDAPResultBusy {
				t.Errorf("%s: the %s add: %v, want success, 19 or 51", name, what, err)
			}
		}
		if (accErr == nil) != accMade || (grpErr == nil) != grpMade {
			t.Errorf("%s: the answers (account %v, group %v) differ from the directory (account %v, group %v)", name, accErr, grpErr, accMade, grpMade)
		}
		if !accMade && !grpMade {
			t.Errorf("%s: neither add was made (one must win)", name)
		}
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	if shared := e.sharedNames(); len(shared) > 0 {
		t.Errorf("Axigen holds %v both as accounts and as groups", shared)
	}
	e.requireAlive()
	e.noSecretsInLog(t, e.dir.RootPW, "pw-race1", "pw-leak1")
}

// Account names taken from the mail address (nameAttribute: mail,
// nameFromAddress). Refused (19): a group bob and a group Alice beside
// those accounts; an account whose mail is admins@example.com; alice's
// mail changed to staff@… and to Staff@Example.COM; an account whose mail
// is BOB@example.com (another bob); admins renamed to carol. Allowed:
// alice's mail changed to alice2@example.com; then a group alice (the
// name is free), after which an account with mail alice@example.com is
// refused. Axigen ends with accounts and groups of distinct names.
func TestAttackSharedNamesFromAddress(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(cfg, []byte("mirror:\n  schema:\n    nameAttribute: mail\n    nameFromAddress: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newAttackEnv(t, "", nil, "--config", cfg)
	mp, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{mirrorAccountBase},
		GroupBase: schema.DNList{mirrorGroupBase}, NameAttribute: "mail", NameFromAddress: true})
	if err != nil {
		t.Fatal(err)
	}
	e.mapping = mp // the checker names accounts as the gateway does
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	const other = "both addresses of the domain"
	wantCode(t, "group bob beside account bob@example.com", admin.Add(groupAdd(groupDN("bob"), []string{"bob"}, userDN("alice"))), 19, other)
	wantCode(t, "group Alice beside account alice@example.com", admin.Add(groupAdd(groupDN("Alice"), []string{"Alice"}, userDN("bob"))), 19, other)
	a := accountAdd(userDN("zed"), "zed")
	a.Attributes[4].Vals = []string{"admins@example.com"}
	wantCode(t, "account zed with mail admins@example.com beside group admins", admin.Add(a), 19, other)
	wantCode(t, "alice's mail changed to staff@example.com", modifyOne(admin, userDN("alice"), "mail", "staff@example.com"), 19, other)
	wantCode(t, "alice's mail changed to Staff@Example.COM", modifyOne(admin, userDN("alice"), "mail", "Staff@Example.COM"), 19, other)
	a = accountAdd(userDN("bob2"), "bob2")
	a.Attributes[4].Vals = []string{"BOB@example.com"}
	wantCode(t, "account bob2 with mail BOB@example.com beside account bob", admin.Add(a), 19, "bob")
	wantCode(t, "admins renamed to carol", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("admins"), "cn=carol", true, "")), 19, other)
	wantCode(t, "alice's mail changed to alice2@example.com", modifyOne(admin, userDN("alice"), "mail", "alice2@example.com"), 0)
	e.waitAccount("alice2", "alice's mailbox under her new address's name", func(_ axigensim.AccountState, ok bool) bool { return ok })
	wantCode(t, "group alice once alice's address is alice2@", admin.Add(groupAdd(groupDN("alice"), []string{"alice"}, userDN("bob"))), 0)
	a = accountAdd(userDN("alice3"), "alice3")
	a.Attributes[4].Vals = []string{"alice@example.com"}
	wantCode(t, "account alice3 with mail alice@example.com beside group alice", admin.Add(a), 19, other)
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	if shared := e.sharedNames(); len(shared) > 0 {
		t.Errorf("Axigen holds %v both as accounts and as groups", shared)
	}
}

// groupLists waits up to d until Axigen's group name lists addr.
func (e *mirrorEnv) groupLists(name, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		g, ok := e.sim.Group(mirrorDomain, name)
		if ok && slices.ContainsFunc(g.Members, func(m string) bool { return strings.EqualFold(m, addr) }) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Axigen group %s: %+v (present %v), not listing %s", name, g, ok, addr)
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// logRecords logs every record of the running gateway's journal.
func (e *mirrorEnv) logRecords(t *testing.T, when string) {
	t.Helper()
	var recs []store.Record
	if err := adminJSON(e.dataDir, "/journal/records?limit=0", 5*time.Second, &recs); err != nil {
		t.Logf("journal records %s: %v", when, err)
		return
	}
	for _, r := range recs {
		t.Logf("%s: seq %d %s %s %s state %v attempts %d lastError %q", when, r.Seq, r.Kind, r.Op, r.DN, r.State, r.Attempts, r.LastError)
	}
}

// recordsIn lists the running gateway's records in state whose DN is dn.
func (e *mirrorEnv) recordsIn(t *testing.T, state, dn string) []store.Record {
	return recordsAbout(runningRecords(t, e.dataDir, state), dn)
}

// A member's mail change while a write of its group is held on its way to
// the directory for more than ten seconds (a proxy keeps it from slapd;
// its client disconnects meanwhile), with --max-attempts 3. The group
// write replaces staff's cn with staff2: the gateway reads staff first
// (a change of its name), so its record carries the group's key, and
// alice's delivery, which must re-apply staff, finds that write on its
// way and is put off (tried again every second). The directory then refuses the write
// (the RDN's value cannot go: 67), its record is aborted, and only
// alice's own delivery can bring her new address to staff. The put-off
// must not use up her attempts into a dead letter, and Axigen's staff
// must end listing her new address.
func TestAttackSharedNamesMemberPutOffPastMaxAttempts(t *testing.T) {
	// Mostly waiting (a grace, a hold past holdPatience): alongside the
	// other tests that mostly wait, at the end of the package's run.
	t.Parallel()
	e, px := newHeldEnv(t, nil, "--max-attempts", "3")
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	grouper := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	px.arm("staff2")
	groupDone := make(chan error, 1)
	go func() { groupDone <- modifyOne(grouper, groupDN("staff"), "cn", "staff2") }()
	px.waitHeld(t, 1)
	waitFor(t, 10*time.Second, "staff's record prepared", func() error {
		if len(e.recordsIn(t, "prepared", groupDN("staff"))) == 0 {
			return errNotYet
		}
		return nil
	})
	grouper.Close() // the group write's client vanishes
	t.Logf("the group write's client, closed: %v", <-groupDone)
	held := time.Now()
	wantCode(t, "alice's mail change while staff's write is on its way", modifyOne(admin, userDN("alice"), "mail", "alice.new@example.com"), 0)
	// Held past ten seconds, or until alice's record is dead.
	var dead []store.Record
	for time.Since(held) < 11*time.Second {
		if dead = e.recordsIn(t, "dead", userDN("alice")); len(dead) > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling interval, not synchronisation
	}
	e.logRecords(t, fmt.Sprintf("while staff's write is held (%v)", time.Since(held)))
	for _, r := range dead {
		t.Errorf("alice's record %d became a dead letter %v into staff's write's hold, after %d attempts, none of them failing in Axigen or the directory: %s",
			r.Seq, time.Since(held), r.Attempts, r.LastError)
	}
	px.release()
	e.waitDrained(30*time.Second, true)
	e.logRecords(t, "after the release")
	if en := e.directoryEntry(groupDN("staff"), "cn"); en == nil || en.GetAttributeValue("cn") != "staff" {
		t.Errorf("staff in the directory after the refused cn change: %v", en)
	}
	if err := e.groupLists("staff", "alice.new@example.com", 15*time.Second); err != nil {
		t.Errorf("alice's new address never reached staff in Axigen, though the directory's staff lists her and her change was acknowledged: %v", err)
	}
	if st, err := e.runningStats(); err == nil && st.Dead > 0 {
		t.Errorf("journal: %d dead letters (%+v)", st.Dead, st)
	}
	if err := e.checkMirrored(false); err != nil {
		t.Errorf("Axigen differs from the directory: %v", err)
	}
}

// Many members wait on one busy group: six members of staff change their
// mail (one is then renamed, one deleted) while a rename of staff to
// staffheld is held on its way for ten seconds; then the gateway is
// killed with the rename still held (the proxy drops it: never made) and
// started again. Every member's change must reach Axigen's staff, with no
// dead letter, within a short time of the restart.
func TestAttackSharedNamesManyMembersPutOffAcrossACrash(t *testing.T) {
	// Mostly waiting (a grace, a hold past holdPatience): alongside the
	// other tests that mostly wait, at the end of the package's run.
	t.Parallel()
	e, px := newHeldEnv(t, nil)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	members := []string{"alice", "bob"}
	for i := range 4 {
		uid := fmt.Sprintf("mm%d", i)
		if err := admin.Add(accountAdd(userDN(uid), uid)); err != nil {
			t.Fatal(err)
		}
		members = append(members, uid)
	}
	m := ldap.NewModifyRequest(groupDN("staff"), nil)
	for _, uid := range members[2:] {
		m.Add("member", []string{userDN(uid)})
	}
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)

	grouper := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	px.arm("cn=staffheld")
	go func() { _ = grouper.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=staffheld", true, "")) }()
	px.waitHeld(t, 1)
	waitFor(t, 10*time.Second, "staff's record prepared", func() error {
		if len(e.recordsIn(t, "prepared", groupDN("staff"))) == 0 {
			return errNotYet
		}
		return nil
	})
	held := time.Now()
	want := map[string]bool{}
	for _, uid := range members {
		addr := uid + ".new@example.com"
		wantCode(t, uid+"'s mail change while staff's rename is held", modifyOne(admin, userDN(uid), "mail", addr), 0)
		want[addr] = true
	}
	wantCode(t, "mm0 renamed to mm0r", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("mm0"), "uid=mm0r", true, "")), 0)
	wantCode(t, "mm1 deleted", admin.Del(ldap.NewDelRequest(userDN("mm1"), nil)), 0)
	delete(want, "mm1.new@example.com")
	// The members' deliveries put off (store.Postpone: tried again, the
	// attempts not counted).
	waitFor(t, 15*time.Second, "the members' deliveries put off", func() error {
		n := 0
		for _, r := range runningRecords(t, e.dataDir, "committed") {
			if r.Kind == store.KindAccount && strings.Contains(r.LastError, "on its way") {
				if r.Attempts != 0 {
					t.Errorf("record %d put off with %d attempts counted, want none", r.Seq, r.Attempts)
				}
				n++
			}
		}
		if n < 5 {
			return fmt.Errorf("%d records put off", n)
		}
		return nil
	})
	for time.Since(held) < 10*time.Second {
		time.Sleep(200 * time.Millisecond) // the hold's length is the attack, not synchronisation
	}
	e.logRecords(t, "before the crash")
	e.kill()
	px.cutHeld()
	restart := time.Now()
	e.start()
	e.waitDrained(40*time.Second, false)
	t.Logf("drained %v after the restart", time.Since(restart))
	e.waitGroup("staff", "every member's new address", func(g axigensim.GroupState, ok bool) bool {
		if !ok || len(g.Members) != len(want) {
			return false
		}
		for _, m := range g.Members {
			if !want[strings.ToLower(m)] {
				return false
			}
		}
		return true
	})
	if d := time.Since(restart); d > 25*time.Second {
		t.Errorf("the members' changes reached Axigen %v after the restart", d)
	}
	if e.directoryEntry(groupDN("staffheld"), "cn") != nil {
		t.Errorf("the dropped rename of staff was made in the directory")
	}
	if _, ok := e.sim.Group(mirrorDomain, "staffheld"); ok {
		t.Errorf("Axigen has a group staffheld, a rename the directory never made")
	}
	e.waitMirrored(20*time.Second, false)
	if crash := e.logCrash(4000); crash != "" {
		t.Errorf("gateway log shows a crash:\n%s", crash)
	}
}

// The case the put-off is for, across a crash: staff is renamed to staff2
// and the directory makes it, but its answer is held (the record stays
// prepared); alice's mail changes meanwhile, and her delivery must not
// apply staff as the directory has it now (it would make staff2 beside
// staff). The gateway is killed before the answer comes, and started
// again: the rename is settled as after a crash, and Axigen must end with
// staff2 alone, listing alice's new address.
func TestAttackSharedNamesMemberWaitsForARenameAcrossACrash(t *testing.T) {
	e, px := newHeldEnv(t, nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	grouper := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	px.armAnswer("cn=staff2")
	go func() { _ = grouper.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=staff2", true, "")) }()
	px.waitHeld(t, 1)
	waitFor(t, 10*time.Second, "staff renamed in the directory, its record prepared", func() error {
		if e.directoryEntry(groupDN("staff2"), "cn") == nil || len(e.recordsIn(t, "prepared", groupDN("staff"))) == 0 {
			return errNotYet
		}
		return nil
	})
	wantCode(t, "alice's mail change while staff's rename awaits its answer", modifyOne(admin, userDN("alice"), "mail", "alice.new@example.com"), 0)
	waitFor(t, 10*time.Second, "alice's delivery put off", func() error {
		for _, r := range e.recordsIn(t, "committed", userDN("alice")) {
			if strings.Contains(r.LastError, "on its way") {
				return nil
			}
		}
		return errNotYet
	})
	if _, ok := e.sim.Group(mirrorDomain, "staff2"); ok {
		t.Errorf("Axigen has staff2 while the rename's record is prepared (made by a member's delivery)")
	}
	e.logRecords(t, "before the crash")
	e.kill()
	px.cutHeld()
	restart := time.Now()
	e.start()
	e.waitDrained(30*time.Second, false)
	t.Logf("drained %v after the restart", time.Since(restart))
	e.waitGroupMembers("staff2", "alice.new@example.com", "bob@example.com")
	if _, ok := e.sim.Group(mirrorDomain, "staff"); ok {
		t.Errorf("Axigen still has staff beside staff2")
	}
	e.waitMirrored(20*time.Second, false)
}
