package e2e

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
)

// dirSyncEntry is one entry of a DirSync answer: its DN and attributes
// (values in order, as AD sent them).
type dirSyncEntry struct {
	DN    string
	Attrs map[string][]string
}

func (d dirSyncEntry) String() string {
	names := make([]string, 0, len(d.Attrs))
	for n := range d.Attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(d.DN)
	for _, n := range names {
		fmt.Fprintf(&b, "\n  %s: %q", n, d.Attrs[n])
	}
	return b.String()
}

// dirSync runs DirSync searches from the domain root, as Axigen's AD
// connector does, until AD says there is no more data; it returns the
// entries (by lower-case DN) and the last cookie.
func dirSync(t *testing.T, c *ldap.Conn, cookie []byte) (map[string]dirSyncEntry, []byte) {
	t.Helper()
	out := map[string]dirSyncEntry{}
	for range 100 {
		req := ldap.NewSearchRequest(adBase, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=*)", nil, []ldap.Control{ldap.NewRequestControlDirSync(0, 0, cookie)})
		res, err := c.Search(req)
		if err != nil {
			t.Fatalf("DirSync search: %v", err)
		}
		for _, en := range res.Entries {
			d := dirSyncEntry{DN: en.DN, Attrs: map[string][]string{}}
			for _, a := range en.Attributes {
				for _, v := range a.ByteValues {
					d.Attrs[strings.ToLower(a.Name)] = append(d.Attrs[strings.ToLower(a.Name)], string(v))
				}
			}
			out[strings.ToLower(en.DN)] = d
		}
		ctl, ok := ldap.FindControl(res.Controls, ldap.ControlTypeDirSync).(*ldap.ControlDirSync)
		if !ok {
			t.Fatalf("DirSync answer without a DirSync control: %v", res.Controls)
		}
		cookie = ctl.Cookie
		if ctl.Flags == 0 { // no more data
			return out, cookie
		}
	}
	t.Fatal("DirSync never said it had no more data")
	return nil, nil
}

// A DirSync client through the gateway gets a cookie, then, with it, only
// the changes made afterwards (through the gateway or directly in AD),
// exactly as a client of AD itself does: same entries, same attributes,
// same values, deletions included.
func adDirSync(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{})
	viaGW := e.asAdmin()
	direct := e.dcConn()
	defer direct.Close()

	fullGW, cookieGW := dirSync(t, viaGW, nil)
	fullDC, cookieDC := dirSync(t, direct, nil)
	if len(cookieGW) == 0 || len(fullGW) < 10 {
		t.Fatalf("initial DirSync through the gateway: %d entries, cookie of %d bytes", len(fullGW), len(cookieGW))
	}
	if len(fullGW) != len(fullDC) {
		t.Errorf("initial DirSync: %d entries through the gateway, %d directly", len(fullGW), len(fullDC))
	}
	for dn, d := range fullDC {
		if g, ok := fullGW[dn]; !ok || g.String() != d.String() {
			t.Errorf("initial DirSync differs for %s:\ngateway: %v\ndirect:  %v", dn, g, d)
		}
	}

	// Changes after the cookies: two through the gateway, two directly.
	admin := e.asAdmin()
	e.modify(admin, adUserDN("Alice Archer"), func(m *ldap.ModifyRequest) {
		m.Replace("telephoneNumber", []string{"+1 555 1111"})
	})
	if err := admin.Del(ldap.NewDelRequest(adUserDN("Carol Cooper"), nil)); err != nil {
		t.Fatalf("delete carol: %v", err)
	}
	e.modify(direct, adUserDN("Bob Baker"), func(m *ldap.ModifyRequest) {
		m.Replace("telephoneNumber", []string{"+1 555 2222"})
	})
	frank := adUser{"Frank Fisher", "frank", "Frank", "Fisher", "Frank-Passw0rd!", "+1 555 0106"}
	if err := direct.Add(frank.add(adPeople)); err != nil {
		t.Fatalf("add frank: %v", err)
	}
	e.waitDrained(20*time.Second, false)

	incGW, _ := dirSync(t, viaGW, cookieGW)
	incDC, _ := dirSync(t, direct, cookieDC)
	strip := func(m map[string]dirSyncEntry) {
		// Binds (the gateway's own service connections, the clients')
		// may update these on the Administrator's entry in between.
		for dn, d := range m {
			delete(d.Attrs, "lastlogontimestamp")
			if len(d.Attrs) <= 1 && strings.Contains(dn, "cn=administrator,") {
				delete(m, dn)
			}
		}
	}
	strip(incGW)
	strip(incDC)
	var dns []string
	for dn := range incGW {
		dns = append(dns, dn)
	}
	sort.Strings(dns)
	t.Logf("incremental DirSync through the gateway: %d entries: %v", len(incGW), dns)
	if len(incGW) != len(incDC) {
		t.Errorf("incremental DirSync: %d entries through the gateway, %d directly", len(incGW), len(incDC))
	}
	for dn, d := range incDC {
		if g, ok := incGW[dn]; !ok || g.String() != d.String() {
			t.Errorf("incremental DirSync differs for %s:\ngateway: %v\ndirect:  %v", dn, g, d)
		}
	}
	has := func(dnPrefix string, check func(d dirSyncEntry) bool) {
		for dn, d := range incGW {
			if strings.HasPrefix(dn, strings.ToLower(dnPrefix)) && check(d) {
				return
			}
		}
		t.Errorf("incremental DirSync has no change of %s", dnPrefix)
	}
	has(strings.ToLower(adUserDN("Alice Archer")), func(d dirSyncEntry) bool {
		return slices.Equal(d.Attrs["telephonenumber"], []string{"+1 555 1111"})
	})
	has(strings.ToLower(adUserDN("Bob Baker")), func(d dirSyncEntry) bool {
		return slices.Equal(d.Attrs["telephonenumber"], []string{"+1 555 2222"})
	})
	has(strings.ToLower(adUserDN("Frank Fisher")), func(d dirSyncEntry) bool {
		return slices.Equal(d.Attrs["samaccountname"], []string{"frank"})
	})
	has("cn=carol cooper\\0adel:", func(d dirSyncEntry) bool {
		return slices.Equal(d.Attrs["isdeleted"], []string{"TRUE"})
	})
	for dn, d := range incGW {
		for _, untouched := range []string{adGroupDN("Team"), adPeople, adGroups} {
			if dn == strings.ToLower(untouched) {
				t.Errorf("incremental DirSync returns %s, which did not change", d.DN)
			}
		}
	}
	// Only what changed: alice's entry carries her phone (and AD's
	// bookkeeping), not her name or mail.
	if a, ok := incGW[strings.ToLower(adUserDN("Alice Archer"))]; ok {
		for _, attr := range []string{"mail", "givenname", "samaccountname"} {
			if _, has := a.Attrs[attr]; has {
				t.Errorf("incremental DirSync returns alice's unchanged %s", attr)
			}
		}
		if _, has := a.Attrs["objectguid"]; !has {
			t.Error("incremental DirSync entry of alice lacks objectGUID")
		}
	}
	// The changes made through the gateway reached Axigen too; those made
	// directly in AD did not (that is resync's job).
	e.waitAccount("alice", "new phone", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 1111"
	})
	e.waitAccount("carol", "removed", func(_ axigensim.AccountState, ok bool) bool { return !ok })
}

// Paged results (1.2.840.113556.1.4.319) over 40 AD accounts, through the
// gateway, with a page size smaller than the result: the pages come back
// with their cookies, and the entries equal a direct paged search's.
func adPagedResults(t *testing.T, dc *samba.Server) {
	e := newADEnv(t, dc, adOptions{Users: 40, LogLevel: "info"})
	paged := func(c *ldap.Conn) ([]string, int) {
		var dns []string
		ctl := ldap.NewControlPaging(7)
		pages := 0
		for {
			res, err := c.Search(ldap.NewSearchRequest(adPeople, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
				"(&(objectClass=user)(objectCategory=person))", []string{"sAMAccountName", "objectGUID"}, []ldap.Control{ctl}))
			if err != nil {
				t.Fatalf("paged search, page %d: %v", pages+1, err)
			}
			pages++
			for _, en := range res.Entries {
				guid, err := schema.FormatGUID(en.GetRawAttributeValue("objectGUID"))
				if err != nil {
					t.Fatal(err)
				}
				dns = append(dns, strings.ToLower(en.DN)+" "+en.GetAttributeValue("sAMAccountName")+" "+guid)
			}
			resp, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
			if !ok || len(resp.Cookie) == 0 {
				return dns, pages
			}
			ctl.SetCookie(resp.Cookie)
		}
	}
	gotGW, pagesGW := paged(e.asAdmin())
	direct := e.dcConn()
	defer direct.Close()
	gotDC, pagesDC := paged(direct)
	if len(gotGW) != 43 || pagesGW < 7 {
		t.Errorf("through the gateway: %d entries in %d pages, want 43 in at least 7", len(gotGW), pagesGW)
	}
	if !slices.Equal(gotGW, gotDC) || pagesGW != pagesDC {
		t.Errorf("paged results differ: %d entries in %d pages through the gateway, %d in %d directly",
			len(gotGW), pagesGW, len(gotDC), pagesDC)
	}
}
