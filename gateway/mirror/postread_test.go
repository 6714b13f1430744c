package mirror

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
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
func relayAsDirectory(t *testing.T, dir *slapd.Server, req *gateway.WriteRequest) gateway.Result {
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

// searchCount is how many searches slapd has completed (cn=Monitor).
func searchCount(t *testing.T, dir *slapd.Server) int {
	t.Helper()
	conn, err := dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, err := conn.Search(ldap.NewSearchRequest("cn=Search,cn=Operations,cn=Monitor", ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"monitorOpCompleted"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read slapd's search count: %v", err)
	}
	n, err := strconv.Atoi(res.Entries[0].GetAttributeValue("monitorOpCompleted"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// An admin's change of an account's contact info is judged and journaled
// without reading the account: the directory's post-read on the write
// itself says what the entry is and gives the record its key. The
// directory serves no search for it, and the record is committed under
// the account's entryUUID.
func TestUnreadWriteIsKeyedByThePostRead(t *testing.T) {
	rig := newPipelineRig(t)
	m, j, audit := rig.mirror(t)
	ctx := context.Background()
	alice := pipeUser("alice")
	if _, err := m.cfg.Directory.SupportsControl(ctx, oidPostRead); err != nil { // read once, before counting
		t.Fatal(err)
	}
	before := searchCount(t, rig.dir)
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
	after := searchCount(t, rig.dir) // the test's own monitor read counts one
	done(ctx, res)
	m.Close()
	if n := searchCount(t, rig.dir) - after - 1; after-before-1 != 0 || n != 0 {
		t.Errorf("the directory served %d searches before the answer and %d after it, want none", after-before-1, n)
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
