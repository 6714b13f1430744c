package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// Issue 16, item 7: a bind name of another domain is never a local
// account's. alice@other.example is mallory's explicit UPN, so the DC
// accepts it with mallory's password: the gateway judges mallory (she may
// change her own phone, not alice's; the audit names her). With alice's
// password, OTHERDOMAIN\alice, alice@other.example and alice@suffix.example
// (a UPN suffix the forest lists, which makes no implicit UPN) are refused
// by the DC, and the session is anonymous to the gateway too: alice's
// phone cannot be changed through them. The right forms work
// (adPolicyBindNames).
func adPolicyForeignBindNames(t *testing.T, dc *samba.Server) {
	audit := filepath.Join(t.TempDir(), "audit.log")
	mallory := adUser{"Mallory Mint", "mallory", "Mallory", "Mint", "Mallory-Passw0rd!", "+1 555 0104"}
	e := newADEnv(t, dc, adOptions{ExtraUsers: []adUser{mallory}, UPNs: map[string]string{"mallory": "alice@other.example"},
		Extra: []string{"--audit-log", audit}})
	aliceDN, malloryDN := adUserDN("Alice Archer"), adUserDN(mallory.CN)
	dcAdmin := e.dcConn()
	defer dcAdmin.Close()
	suffixes := ldap.NewModifyRequest("CN=Partitions,CN=Configuration,"+adBase, nil)
	suffixes.Add("uPNSuffixes", []string{"suffix.example"})
	if err := dcAdmin.Modify(suffixes); err != nil {
		t.Fatalf("add a uPNSuffix: %v", err)
	}
	phone := func(dn, v string) *ldap.ModifyRequest {
		m := ldap.NewModifyRequest(dn, nil)
		m.Replace("telephoneNumber", []string{v})
		return m
	}

	m := e.gwConn("alice@other.example", mallory.Password)
	if err := m.Modify(phone(aliceDN, "+1 555 6666")); ldapCode(err) != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("mallory bound as alice@other.example changes alice's phone: %v, want 50", err)
	}
	if err := m.Modify(phone(malloryDN, "+1 555 6667")); err != nil {
		t.Errorf("mallory bound as alice@other.example changes her own phone: %v", err)
	} else {
		e.waitAccount("mallory", "her own phone", func(a axigensim.AccountState, ok bool) bool {
			return ok && a.Contact["phone"] == "+1 555 6667"
		})
	}
	m.Close()

	for _, name := range []string{`OTHERDOMAIN\alice`, "alice@other.example", "alice@suffix.example"} {
		c, err := ldap.DialURL(e.gw.URL, ldap.DialWithTLSConfig(testPKI.TLSConfig()))
		if err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(30 * time.Second)
		if err := c.Bind(name, "Alice-Passw0rd!"); ldapCode(err) != ldap.LDAPResultInvalidCredentials {
			t.Errorf("bind as %s with alice's password: %v, want the DC's invalidCredentials (49)", name, err)
		}
		if err := c.Modify(phone(aliceDN, "+1 555 7777")); err == nil {
			t.Errorf("after a refused bind as %s, alice's phone changes", name)
		}
		c.Close()
	}
	if got := e.dcEntry(aliceDN, "telephoneNumber").GetAttributeValue("telephoneNumber"); got != "+1 555 0101" {
		t.Errorf("AD's phone of alice is %q", got)
	}

	// The audit names mallory as the writer of both of her changes, and
	// alice as the writer of nothing.
	b, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	mallorys := map[string]int{} // decision -> count
	for _, line := range lines(string(b)) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "decision" {
			continue
		}
		actor, _ := rec["actor"].(string)
		decision, _ := rec["decision"].(string)
		switch {
		case strings.EqualFold(actor, malloryDN):
			mallorys[decision]++
		case strings.Contains(strings.ToLower(actor), "alice"):
			t.Errorf("a decision names alice as the writer: %s", line)
		}
	}
	if mallorys["refused"] != 1 || mallorys["allowed"] != 1 {
		t.Errorf("mallory's audit decisions %v; want one refused and one allowed:\n%s", mallorys, b)
	}
	e.waitAD(20 * time.Second)
}
