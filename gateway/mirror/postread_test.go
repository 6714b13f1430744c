package mirror

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// lobby is an entry of the account base that is not an account: a role
// with a phone number, which the mapping mirrors for accounts.
const lobbyLDIF = `dn: cn=lobby,ou=people,dc=example,dc=com
objectClass: organizationalRole
cn: lobby
telephoneNumber: +1 555 0100
`

// relayAsDirectory does what the gateway's relay does with an intercepted
// write: it sends it to the directory, with the controls Intercept
// appended, as the bound identity (here the root DN), and hands the answer,
// with its controls, to the Completion.
func relayAsDirectory(t testing.TB, dir *slapd.Server, req *gateway.WriteRequest) gateway.Result {
	t.Helper()
	conn, err := dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var ctls []ldap.Control
	for _, c := range req.Append {
		ctls = append(ctls, ldap.NewControlString(c.OID, c.Critical, string(c.Value)))
	}
	mod := ldap.NewModifyRequest(req.DN, ctls)
	for _, c := range req.Changes {
		var vals []string
		for _, v := range c.Values {
			vals = append(vals, string(v))
		}
		mod.Replace(c.Type, vals)
	}
	res, err := conn.ModifyWithResult(mod)
	if err != nil {
		t.Fatalf("the directory refuses the modify: %v", err)
	}
	out := gateway.Result{Code: ldap.LDAPResultSuccess}
	for _, c := range res.Controls {
		if cs, ok := c.(*ldap.ControlString); ok {
			out.Controls = append(out.Controls, gateway.Control{OID: cs.ControlType, Value: []byte(cs.ControlValue), HasValue: true})
		}
	}
	return out
}

// readAttr reads one value of an entry straight from slapd.
func readAttr(t *testing.T, dir *slapd.Server, dn, attr string) string {
	t.Helper()
	conn, err := dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read %s of %s: %v", attr, dn, err)
	}
	return res.Entries[0].GetAttributeValue(attr)
}

// searchCounter relays the Mirror's own directory connections to slapd
// and counts the searches they send.
type searchCounter struct {
	ln       net.Listener
	searches atomic.Int64
}

func newSearchCounter(t *testing.T, dir *slapd.Server) *searchCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &searchCounter{ln: ln}
	t.Cleanup(func() { ln.Close() })
	upstream := strings.TrimPrefix(dir.URL, "ldap://")
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				conn.Close()
				continue
			}
			go func() {
				defer up.Close()
				r := ldapwire.NewReader(conn, 1<<20)
				for {
					m, err := r.Next()
					if err != nil {
						return
					}
					if m.Op == ldapwire.TagSearchRequest {
						c.searches.Add(1)
					}
					if _, err := up.Write(m.Raw); err != nil {
						return
					}
				}
			}()
			go func() { defer conn.Close(); _, _ = io.Copy(conn, up) }()
		}
	}()
	return c
}

func (c *searchCounter) url() string { return "ldap://" + c.ln.Addr().String() }

// An admin's change of an account's contact info is judged and journaled
// without reading the account: the directory's post-read on the write
// itself says what the entry is and gives the record its key. The
// directory serves no search for it, and the record is committed under
// the account's entryUUID.
func TestUnreadWriteIsKeyedByThePostRead(t *testing.T) {
	rig := newPipelineRig(t)
	counter := newSearchCounter(t, rig.dir)
	rig.dirURL = counter.url()
	m, j, audit := rig.mirror(t)
	ctx := context.Background()
	alice := pipeUser("alice")
	if _, err := m.cfg.Directory.SupportsControl(ctx, oidPostRead); err != nil { // read once, before counting
		t.Fatal(err)
	}
	before := counter.searches.Load()
	req := replace(alice, "telephoneNumber", "+1 555 0199")
	done, answer := intercept(ctx, m, pipeAdminDN, req)
	if answer != nil || done == nil {
		t.Fatalf("Intercept: %+v, Completion %v", answer, done != nil)
	}
	if len(req.Append) != 1 || req.Append[0].OID != oidPostRead {
		t.Fatalf("appended controls %+v, want the post-read", req.Append)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 || prepared[0].EntryKey != "" {
		t.Fatalf("prepared %+v, %v; want one record without a key yet", prepared, err)
	}
	res := relayAsDirectory(t, rig.dir, req)
	done(ctx, res)
	m.Close()
	if n := counter.searches.Load() - before; n != 0 {
		t.Errorf("the gateway sent the directory %d searches for the write, want none", n)
	}
	rec, err := j.Get(prepared[0].Seq)
	if err != nil || rec.State != store.StateCommitted {
		t.Fatalf("record: %+v, %v; want committed", rec, err)
	}
	if want := readAttr(t, rig.dir, alice, "entryUUID"); rec.EntryKey != want {
		t.Errorf("record keyed %q, want alice's entryUUID %q", rec.EntryKey, want)
	}
	assertDecisions(t, decisions(t, audit), []string{"allowed"})
}

// An admin's change of a mirrored attribute of an entry of the account
// base that is no account is journaled unread, as an account's, and the
// record is dropped once the directory's answer shows what the entry is:
// relayed, not mirrored, as when it is read first.
func TestUnreadWriteToANonAccountIsDropped(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: []string{lobbyLDIF}})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	req := replace("cn=lobby,ou=people,"+pipeSuffix, "telephoneNumber", "+1 555 0111")
	done, answer := intercept(ctx, m, pipeAdminDN, req)
	if answer != nil || done == nil {
		t.Fatalf("Intercept: %+v, Completion %v", answer, done != nil)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 {
		t.Fatalf("prepared: %d, %v; want 1", len(prepared), err)
	}
	done(ctx, relayAsDirectory(t, rig.dir, req))
	m.Close()
	if rec, err := j.Get(prepared[0].Seq); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record: %+v, %v; want it dropped", rec, err)
	}
}

// A write whose verdict depends on what the entry is (a user changing
// another's phone: refused for an account, the directory's to judge
// otherwise) has its entry read first, and is refused.
func TestKindDependentWriteIsRead(t *testing.T) {
	rig := newPipelineRig(t)
	m, j, audit := rig.mirror(t)
	ctx := context.Background()
	req := replace(pipeUser("alice"), "telephoneNumber", "+1 555 0666")
	_, answer := intercept(ctx, m, pipeUser("bob"), req)
	wantAnswer(t, answer, ldap.LDAPResultInsufficientAccessRights, ruleContact)
	if len(req.Append) != 0 {
		t.Errorf("appended %+v to a refused write", req.Append)
	}
	assertNoRecordEver(t, j)
	assertDecisions(t, decisions(t, audit), []string{"refused"})
}

// deliveredPhone runs the Mirror's delivery until Axigen's alice has
// phone, or fails the test.
func deliveredPhone(t *testing.T, m *Mirror, rig *pipelineRig, phone string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	delivering := make(chan error, 1)
	go func() { delivering <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-delivering; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a, ok := rig.sim.Account(pipeDomain, "alice"); ok && a.Contact["phone"] == phone {
			return
		}
		if time.Now().After(deadline) {
			a, _ := rig.sim.Account(pipeDomain, "alice")
			t.Fatalf("Axigen's alice has phone %q, want %q", a.Contact["phone"], phone)
		}
		time.Sleep(10 * time.Millisecond) // polling interval for the simulator's state
	}
}

// The service identity's change of an account is delivered from the
// entry's state its write brought back: the gateway sends the directory
// no search for the write, nor for its delivery.
func TestImageServesTheDelivery(t *testing.T) {
	rig := newPipelineRig(t)
	rig.sim.PutAccount(pipeDomain, axigensim.AccountState{Name: "alice", Contact: map[string]string{"phone": "+1 555 0101"}})
	counter := newSearchCounter(t, rig.dir)
	rig.dirURL = counter.url()
	m, _, _ := rig.mirror(t)
	ctx := context.Background()
	if _, err := m.cfg.Directory.SupportsControl(ctx, oidPostRead); err != nil {
		t.Fatal(err)
	}
	before := counter.searches.Load()
	req := replace(pipeUser("alice"), "telephoneNumber", "+1 555 0177")
	done, answer := intercept(ctx, m, pipeAdminDN, req)
	if answer != nil || done == nil {
		t.Fatalf("Intercept: %+v, Completion %v", answer, done != nil)
	}
	done(ctx, relayAsDirectory(t, rig.dir, req))
	deliveredPhone(t, m, rig, "+1 555 0177")
	if n := counter.searches.Load() - before; n != 0 {
		t.Errorf("the gateway sent the directory %d searches for the write and its delivery, want none", n)
	}
}

// Another writer's change of the entry while the service identity's is
// on its way leaves no image: the delivery reads the entry, and Axigen
// gets both changes.
func TestAnotherWriterDropsTheImage(t *testing.T) {
	rig := newPipelineRig(t)
	m, _, _ := rig.mirror(t)
	ctx := context.Background()
	alice := pipeUser("alice")
	svc := replace(alice, "telephoneNumber", "+1 555 0188")
	doneSvc, answer := intercept(ctx, m, pipeAdminDN, svc)
	if answer != nil || doneSvc == nil {
		t.Fatalf("Intercept: %+v", answer)
	}
	own := replace(alice, "displayName", "Ally")
	doneOwn, answer := intercept(ctx, m, alice, own)
	if answer != nil || doneOwn == nil {
		t.Fatalf("Intercept of the owner's write: %+v", answer)
	}
	// The directory applies the owner's write after the service's, and
	// answers the service's last: its image lacks the owner's change.
	resSvc := relayAsDirectory(t, rig.dir, svc)
	resOwn := relayAsDirectory(t, rig.dir, own)
	doneOwn(ctx, resOwn)
	doneSvc(ctx, resSvc)
	deliveredPhone(t, m, rig, "+1 555 0188")
	waitFor := time.Now().Add(10 * time.Second)
	for {
		a, _ := rig.sim.Account(pipeDomain, "alice")
		if a.Contact["nickName"] == "Ally" && a.Contact["phone"] == "+1 555 0188" {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("Axigen's alice: %+v, want both changes", a.Contact)
		}
		time.Sleep(10 * time.Millisecond) // polling interval for the simulator's state
	}
}

// A write near the directory's limit on a message's size gets no control
// from the gateway, which could push it over (the directory would drop the
// connection): its entry is read first, as before post-reads, by the
// owner's and by the service identity's write alike.
func TestLargeWriteGetsNoAppendedControl(t *testing.T) {
	rig := newPipelineRig(t)
	m, _, _ := rig.mirror(t)
	ctx := context.Background()
	alice := pipeUser("alice")
	for _, bound := range []string{alice, pipeAdminDN} {
		req := replace(alice, "telephoneNumber", "+1 555 0123")
		req.Changes = append(req.Changes, replace(alice, "description", strings.Repeat("d", appendLimit)).Changes...)
		done, answer := intercept(ctx, m, bound, req)
		if answer != nil || done == nil {
			t.Fatalf("Intercept as %s: %+v", bound, answer)
		}
		if len(req.Append) != 0 {
			t.Errorf("as %s: appended %d controls to a write of %d bytes", bound, len(req.Append), appendLimit)
		}
		done(ctx, relayAsDirectory(t, rig.dir, req))
	}
}

// A directory that ignores the post-read (Active Directory, a proxy, a
// slapd whose ACLs hide the entry from the writer) answers the write with
// no post-read, or one without what classifies the entry: the unread
// write's record is settled on the service identity's read all the same —
// committed under the account's key, dropped for an entry that is no
// account — and the gateway's control never reaches the client.
func TestUnreadWriteSettledWithoutThePostRead(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: []string{lobbyLDIF}})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	alice, lobby := pipeUser("alice"), "cn=lobby,ou=people,"+pipeSuffix
	partial := gateway.Control{OID: oidPostRead, HasValue: true, Value: ldapwire.AppendTLV(nil, tagSearchEntry,
		append(ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(alice)), ldapwire.AppendTLV(nil, ldapwire.TagSequence, nil)...))}
	cases := []struct {
		name, dn  string
		controls  []gateway.Control
		committed bool
	}{
		{"an account, no post-read", alice, nil, true},
		{"an account, an empty post-read", alice, []gateway.Control{partial}, true},
		{"no account, no post-read", lobby, nil, false},
		{"no account, an empty post-read", lobby, []gateway.Control{partial}, false},
	}
	for _, c := range cases {
		req := replace(c.dn, "telephoneNumber", "+1 555 0142")
		done, answer := intercept(ctx, m, pipeAdminDN, req)
		if answer != nil || done == nil || len(req.Append) != 1 {
			t.Fatalf("%s: Intercept %+v, Completion %v, appended %d", c.name, answer, done != nil, len(req.Append))
		}
		prepared, err := j.Prepared()
		if err != nil || len(prepared) != 1 {
			t.Fatalf("%s: prepared %d, %v", c.name, len(prepared), err)
		}
		req.Append = nil // the directory ignores it
		relayAsDirectory(t, rig.dir, req)
		done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess, Controls: c.controls})
		m.Close() // waits for the settling
		// The write held its entry until its commit named the record (no
		// rename in between), and not a moment longer.
		if len(m.onWay.writes) != 0 {
			t.Errorf("%s: settled, the registry still holds %v", c.name, m.onWay.writes)
		}
		rec, err := j.Get(prepared[0].Seq)
		switch {
		case c.committed && (err != nil || rec.State != store.StateCommitted || rec.EntryKey != readAttr(t, rig.dir, alice, "entryUUID")):
			t.Errorf("%s: record %+v, %v; want it committed under alice's entryUUID", c.name, rec, err)
		case !c.committed && !errors.Is(err, store.ErrNotFound):
			t.Errorf("%s: record %+v, %v; want it dropped", c.name, rec, err)
		}
		if c.committed {
			if err := j.Drop(ctx, rec.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// lobbyWithPasswordLDIF is an entry of the account base that is no account
// but can bind: a role with a password.
const lobbyWithPasswordLDIF = `dn: cn=lobby,ou=people,dc=example,dc=com
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: lobby
telephoneNumber: +1 555 0100
userPassword: lobby-pw
`

// The owner shortcut (a write judged without reading its entry) under
// odd spellings and odd owners: the owner is judged on the canonical
// identity of the bound DN and of the target; a user is never the owner of
// another's entry through a respelling; an "owner" bound as an entry of
// the base that is no account has its write, its password included,
// dropped from the journal once the directory's answer shows what the
// entry is; deletes and renames are always read first.
func TestUnreadShortcutEdges(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: []string{lobbyWithPasswordLDIF}})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	lobby := "cn=lobby,ou=people," + pipeSuffix
	pw := func(dn, value string) *gateway.WriteRequest {
		req := replace(dn, "telephoneNumber", "+1 555 0155")
		req.Changes = append(req.Changes, replace(dn, "userPassword", value).Changes...)
		return req
	}
	cases := []struct {
		name, bound string
		req         *gateway.WriteRequest
		code        int    // the gateway's answer; 0: relayed
		appended    bool   // with the gateway's post-read
		key         string // the committed record's key; "": none kept
	}{
		{"bob, bound in capitals, his own phone through an OID type", "UID=BOB,OU=People,DC=example,DC=com",
			replace("uid=bob,2.5.4.11=people,dc=example,dc=com", "telephoneNumber", "+1 555 0150"), 0, true, pipeUser("bob")},
		{"carol, bound through an OID type, her own phone", "0.9.2342.19200300.100.1.1=carol,ou=people,dc=example,dc=com",
			replace(pipeUser("carol"), "telephoneNumber", "+1 555 0151"), 0, true, pipeUser("carol")},
		{"bob, bound in capitals, alice's phone through an OID type", "UID=BOB,OU=People,DC=example,DC=com",
			replace("uid=alice,2.5.4.11=people,dc=example,dc=com", "telephoneNumber", "+1 555 0152"), 50, false, ""},
		{"bob, alice's phone through an escaped spelling", pipeUser("bob"),
			replace(`uid=\61lice,ou=people,dc=example,dc=com`, "telephoneNumber", "+1 555 0153"), 50, false, ""},
		{"the lobby, its own phone and password", lobby, pw(lobby, "lobby-new-pw"), 0, true, ""},
		{"the admin deletes bob", pipeAdminDN, &gateway.WriteRequest{Op: gateway.OpDelete, DN: pipeUser("bob")}, 0, false, pipeUser("bob")},
	}
	for _, c := range cases {
		var key string
		if c.key != "" {
			key = readAttr(t, rig.dir, c.key, "entryUUID")
		}
		done, answer := intercept(ctx, m, c.bound, c.req)
		switch {
		case c.code != 0 && (answer == nil || answer.Code != c.code):
			t.Fatalf("%s: answer %+v, want %d", c.name, answer, c.code)
		case c.code != 0:
			continue
		case answer != nil || done == nil:
			t.Fatalf("%s: answer %+v, Completion %v", c.name, answer, done != nil)
		}
		if got := len(c.req.Append) > 0; got != c.appended {
			t.Errorf("%s: appended %+v", c.name, c.req.Append)
		}
		prepared, err := j.Prepared()
		if err != nil || len(prepared) != 1 {
			t.Fatalf("%s: prepared %d, %v", c.name, len(prepared), err)
		}
		var res gateway.Result
		if c.req.Op == gateway.OpModify {
			c.req.DN = schema.CanonicalDN(c.req.DN)
			res = relayAsDirectory(t, rig.dir, c.req)
		} else {
			conn, err := rig.dir.AdminConn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := conn.Del(ldap.NewDelRequest(c.req.DN, nil)); err != nil {
				t.Fatal(err)
			}
			conn.Close()
		}
		done(ctx, res)
		m.Close()
		rec, err := j.Get(prepared[0].Seq)
		switch {
		case key == "" && !errors.Is(err, store.ErrNotFound):
			t.Errorf("%s: record %+v, %v; want it dropped", c.name, rec, err)
		case key != "" && (err != nil || rec.State != store.StateCommitted || rec.EntryKey != key):
			t.Errorf("%s: record %+v, %v; want it committed under %s", c.name, rec, err, key)
		case key != "":
			if err := j.Drop(ctx, rec.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}
