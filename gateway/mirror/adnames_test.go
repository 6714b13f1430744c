package mirror

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
)

// Issue 16, item 7: the bind names AD takes besides a DN resolve to the
// entry the directory itself authenticates, checked against a real Samba
// AD DC: a down-level name only in the domain's NetBIOS name, a UPN by
// userPrincipalName first and only then as sAMAccountName@the domain's
// DNS (or NetBIOS) name. A name of another domain, or of a UPN suffix
// that is no domain, is no one, even where part of it is a local
// account's name: OTHER\alice and alice@suffix.example are never alice,
// and alice@other.example is mallory, whose explicit UPN it is. For each
// name the gateway resolves, the DC accepts a bind with the password of
// that entry; for each it does not, the DC refuses alice's.
func TestADLogonNamesResolveAsTheDirectoryDoes(t *testing.T) {
	if err := samba.Installed(); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the Samba AD DC needs root (a loopback address of its own, ports 389/636)")
	}
	dc := samba.StartT(t, samba.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := dc.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	people := "OU=People," + dc.BaseDN
	mustAdd := func(a *ldap.AddRequest) {
		t.Helper()
		if err := admin.Add(a); err != nil {
			t.Fatalf("add %s: %v", a.DN, err)
		}
	}
	ou := ldap.NewAddRequest(people, nil)
	ou.Attribute("objectClass", []string{"top", "organizationalUnit"})
	mustAdd(ou)
	passwords := map[string]string{}
	user := func(cn, sam, upn string) string {
		dn := "CN=" + cn + "," + people
		a := ldap.NewAddRequest(dn, nil)
		a.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
		a.Attribute("sAMAccountName", []string{sam})
		if upn != "" {
			a.Attribute("userPrincipalName", []string{upn})
		}
		pw := "Pw-" + sam + "-0!x"
		a.Attribute("unicodePwd", []string{string(schema.EncodeUnicodePwd(pw))})
		a.Attribute("userAccountControl", []string{"512"})
		mustAdd(a)
		passwords[schema.CanonicalDN(dn)] = pw
		return dn
	}
	alice := user("Alice Archer", "alice", "")
	mallory := user("Mallory Mint", "mallory", "alice@other.example")
	carol := user("Carol Cooper", "carol", "carol.c@example.test")
	// A UPN suffix the forest lists (for explicit UPNs): no implicit one.
	suffixes := ldap.NewModifyRequest("CN=Partitions,CN=Configuration,"+dc.BaseDN, nil)
	suffixes.Add("uPNSuffixes", []string{"suffix.example"})
	if err := admin.Modify(suffixes); err != nil {
		t.Fatalf("add a uPNSuffix: %v", err)
	}
	// Two entries with one UPN, when the DC lets them be: a name that is
	// not one entry's is no one's.
	dup := user("Dan Dup", "dan", "dup@example.test")
	ambiguous := true
	second := ldap.NewAddRequest("CN=Dora Dup,"+people, nil)
	second.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	second.Attribute("sAMAccountName", []string{"dora"})
	second.Attribute("userPrincipalName", []string{"dup@example.test"})
	if err := admin.Add(second); err != nil {
		t.Logf("the DC refuses a second entry with one UPN (%v): dup@example.test names dan alone", err)
		ambiguous = false
	}

	mp, err := schema.NewMapping(schema.Config{Dialect: schema.ActiveDirectory, AccountBase: schema.DNList{people}})
	if err != nil {
		t.Fatal(err)
	}
	directory := NewDirectory(DirectoryConfig{URLs: []string{dc.LDAPSURL}, TLS: dc.TLSConfig(),
		ServiceDN: dc.AdminDN, ServicePassword: dc.AdminPassword, Timeout: 10 * time.Second})
	defer directory.Close()
	pool := axigen.NewPool(axigen.Config{Addr: "127.0.0.1:1"}, 1) // never used: nothing is delivered
	defer pool.Close()
	m, err := New(Config{Mapping: mp, Axigen: axigen.NewClient(pool), Directory: directory, Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		want string // "": no one
	}{
		{`EXAMPLE\alice`, alice},
		{`example\ALICE`, alice},
		{`OTHER\alice`, ""},
		{`example.test\alice`, ""},
		{`\alice`, ""},
		{`EXAMPLE\`, ""},
		{"alice@example.test", alice},
		{"ALICE@Example.Test", alice},
		{"alice@EXAMPLE", alice},
		{"alice@other.example", mallory},
		{"alice@suffix.example", ""},
		{"mallory@example.test", mallory},
		{"mallory@other.example", ""},
		{"carol.c@example.test", carol},
		{"carol@example.test", carol},
		{"nobody@example.test", ""},
		{"alice@", ""},
		{"@example.test", ""},
	}
	if ambiguous {
		tests = append(tests, struct{ name, want string }{"dup@example.test", ""})
	} else {
		tests = append(tests, struct{ name, want string }{"dup@example.test", dup})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sure, err := m.identity(ctx, tt.name)
			switch {
			case err != nil:
				t.Fatalf("identity: %v", err)
			case tt.want == "" && sure:
				t.Fatalf("identity %q, sure; want no one", got)
			case tt.want != "" && (!sure || !schema.EqualDN(got, tt.want)):
				t.Fatalf("identity %q (sure %v), want %s", got, sure, tt.want)
			}
			// What the DC says of the same name.
			pw := passwords[schema.CanonicalDN(alice)]
			if tt.want != "" {
				pw = passwords[schema.CanonicalDN(tt.want)]
			}
			c, err := dc.Dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Bind(tt.name, pw)
			switch {
			case tt.want != "" && err != nil:
				t.Errorf("the DC refuses %s with the password of %s: %v", tt.name, tt.want, err)
			case tt.want == "" && err == nil:
				t.Errorf("the DC accepts %s with alice's password, the gateway names no one", tt.name)
			}
		})
	}
}
