package mirror

import (
	"testing"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
)

func testMirror(t *testing.T) *Mirror {
	t.Helper()
	mp, err := schema.NewMapping(schema.Config{
		Dialect:     schema.OpenLDAP,
		AccountBase: schema.DNList{"ou=people,dc=example,dc=com"},
		GroupBase:   schema.DNList{"ou=groups,dc=example,dc=com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{cfg: Config{Mapping: mp}}
	m.policy.Store(&Policy{Mapping: mp})
	return m
}

func modify(attrs ...string) *gateway.WriteRequest {
	req := &gateway.WriteRequest{Op: gateway.OpModify}
	for _, a := range attrs {
		req.Changes = append(req.Changes, gateway.Modification{Op: gateway.ModReplace, Attribute: gateway.Attribute{Type: a, Values: [][]byte{[]byte("x")}}})
	}
	return req
}

func TestPolicy(t *testing.T) {
	m := testMirror(t)
	const (
		admin = "admin"
		owner = "owner"
		other = "other"
	)
	tests := []struct {
		name       string
		kind       schema.Kind
		req        *gateway.WriteRequest
		role       string
		wantRefuse string
		wantMirror bool
	}{
		{"admin creates an account", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpAdd}, admin, "", true},
		{"user creates an account", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpAdd}, other, ruleCreateAccount, false},
		{"owner deletes itself", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpDelete}, owner, ruleDeleteAccount, false},
		{"admin deletes", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpDelete}, admin, "", true},
		{"owner renames itself", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpModifyDN}, owner, ruleRenameAccount, false},
		{"owner changes the name attribute", schema.KindAccount, modify("uid"), owner, ruleRenameAccount, false},
		{"name attribute through its OID", schema.KindAccount, modify("0.9.2342.19200300.100.1.1"), owner, ruleRenameAccount, false},
		{"owner changes its phone", schema.KindAccount, modify("telephoneNumber"), owner, "", true},
		{"owner changes its password", schema.KindAccount, modify("userPassword"), owner, "", true},
		{"owner password modify", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpPasswordModify}, owner, "", true},
		{"other user's password modify", schema.KindAccount, &gateway.WriteRequest{Op: gateway.OpPasswordModify}, other, rulePassword, false},
		{"other user's phone", schema.KindAccount, modify("telephoneNumber"), other, ruleContact, false},
		{"owner changes its mail", schema.KindAccount, modify("mail"), owner, ruleAccountAddress, false},
		{"admin changes mail", schema.KindAccount, modify("mail"), admin, "", true},
		{"phone and mail together by the owner", schema.KindAccount, modify("telephoneNumber", "mail"), owner, ruleAccountAddress, false},
		{"unmapped attribute is the directory's business", schema.KindAccount, modify("description"), other, "", false},
		{"unmapped plus contact", schema.KindAccount, modify("description", "mobile"), owner, "", true},
		{"admin changes members", schema.KindGroup, modify("member"), admin, "", true},
		{"member of group changes members", schema.KindGroup, modify("member"), owner, ruleMembership, false},
		{"group rename by attribute", schema.KindGroup, modify("cn"), other, ruleRenameGroup, false},
		{"group create", schema.KindGroup, &gateway.WriteRequest{Op: gateway.OpAdd}, other, ruleCreateGroup, false},
		{"group delete by admin", schema.KindGroup, &gateway.WriteRequest{Op: gateway.OpDelete}, admin, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.judge(tt.kind, tt.req, tt.role == admin, tt.role == owner)
			if d.refuse != tt.wantRefuse || d.mirror != tt.wantMirror {
				t.Fatalf("got refuse=%q mirror=%v, want refuse=%q mirror=%v", d.refuse, d.mirror, tt.wantRefuse, tt.wantMirror)
			}
		})
	}
}

func TestRenamedDN(t *testing.T) {
	tests := []struct{ dn, newRDN, superior, want string }{
		{"uid=a,ou=people,dc=example,dc=com", "uid=b", "", "uid=b,ou=people,dc=example,dc=com"},
		{"uid=a,ou=people,dc=example,dc=com", "uid=a", "ou=staff,dc=example,dc=com", "uid=a,ou=staff,dc=example,dc=com"},
		{"cn=x\\,y,ou=groups,dc=example,dc=com", "cn=z", "", "cn=z,ou=groups,dc=example,dc=com"},
	}
	for _, tt := range tests {
		got := renamedDN(&gateway.WriteRequest{Op: gateway.OpModifyDN, DN: tt.dn, NewRDN: tt.newRDN, NewSuperior: tt.superior})
		if !schema.EqualDN(got, tt.want) {
			t.Errorf("renamedDN(%q, %q, %q) = %q, want %q", tt.dn, tt.newRDN, tt.superior, got, tt.want)
		}
	}
}
