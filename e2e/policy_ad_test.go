package e2e

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/samba"
)

// Issue 16, AD's forms: <GUID=…>, <SID=…> and the extended DN
// (<GUID=…>;<SID=…>;CN=…) name the entry AD means, and the gateway judges
// that entry: alice may not change her own mail through any of them, may
// change her phone (mirrored), and the admin's change through <GUID=…> is
// mirrored as the account it names.
func adPolicyDNForms(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	aliceDN, bobDN := adUserDN("Alice Archer"), adUserDN("Bob Baker")
	guid, sid := e.guidOf(aliceDN), e.sidOf(aliceDN)
	forms := []string{
		"<GUID=" + guid + ">",
		"<SID=" + sid + ">",
		"<GUID=" + guid + ">;<SID=" + sid + ">;" + aliceDN,
		strings.ToLower(aliceDN),
	}
	alice := e.gwConn(aliceDN, "Alice-Passw0rd!")
	dcAdmin := e.dcConn()
	defer dcAdmin.Close()
	for _, dn := range forms {
		// What the DC itself makes of the form, on a harmless attribute.
		probe := ldap.NewModifyRequest(dn, nil)
		probe.Replace("description", []string{"probe"})
		dcCode := resultCode(dcAdmin.Modify(probe))
		m := ldap.NewModifyRequest(dn, nil)
		m.Replace("mail", []string{"queen@example.com"})
		err := alice.Modify(m)
		switch {
		case dcCode == 0 && (ldapCode(err) != ldap.LDAPResultInsufficientAccessRights || !strings.Contains(err.Error(), "account mail address")):
			t.Errorf("alice's own mail through %q: %v, want 50 naming the mail rule", dn, err)
		case dcCode != 0 && ldapCode(err) != dcCode:
			t.Errorf("alice's own mail through %q: %v; the DC answers that form %d, the gateway must too", dn, err, dcCode)
		}
	}
	if got := e.dcEntry(aliceDN, "mail").GetAttributeValue("mail"); got != "alice@example.com" {
		t.Errorf("AD's mail of alice is %q", got)
	}
	e.modify(alice, "<SID="+sid+">", func(m *ldap.ModifyRequest) { m.Replace("telephoneNumber", []string{"+1 555 8181"}) })
	e.waitAccount("alice", "her own phone through <SID=…>", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 8181"
	})
	admin := e.asAdmin()
	e.modify(admin, "<GUID="+e.guidOf(bobDN)+">", func(m *ldap.ModifyRequest) { m.Replace("mail", []string{"robert@example.com"}) })
	e.waitAccount("bob", "the admin's change through <GUID=…>", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["businessEmail"] == "robert@example.com"
	})
	e.waitAD(20 * time.Second)
	e.waitDrained(20*time.Second, false)
}

// sidOf is the entry's objectSid in its string form (S-1-5-21-…).
func (e *adEnv) sidOf(dn string) string {
	e.t.Helper()
	en := e.dcEntry(dn, "objectSid")
	if en == nil {
		e.t.Fatalf("%s does not exist", dn)
	}
	b := en.GetRawAttributeValue("objectSid")
	if len(b) < 8 || len(b) != 8+4*int(b[1]) {
		e.t.Fatalf("objectSid of %s is %d bytes", dn, len(b))
	}
	var auth uint64
	for _, c := range b[2:8] {
		auth = auth<<8 | uint64(c)
	}
	s := fmt.Sprintf("S-%d-%d", b[0], auth)
	for i := 0; i < int(b[1]); i++ {
		s += fmt.Sprintf("-%d", binary.LittleEndian.Uint32(b[8+4*i:]))
	}
	return s
}
