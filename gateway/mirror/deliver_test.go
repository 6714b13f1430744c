package mirror

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// A modify is left to a delivery of an earlier record of its entry only
// when delivering the entry's state is all it needs.
func TestCoveredModifies(t *testing.T) {
	ad, err := schema.NewMapping(schema.Config{
		Dialect:     schema.ActiveDirectory,
		AccountBase: schema.DNList{"cn=Users,dc=corp,dc=example,dc=com"},
		GroupBase:   schema.DNList{"cn=Users,dc=corp,dc=example,dc=com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{}
	m.policy.Store(&Policy{Mapping: ad})
	modify := func(attrs ...string) *store.Record {
		r := &store.Record{Op: store.OpModify, Kind: store.KindAccount}
		for _, a := range attrs {
			r.Changes = append(r.Changes, store.Change{Op: "replace", Attr: a})
		}
		return r
	}
	withSecret := modify("unicodePwd")
	withSecret.Secret = []byte("n3w")
	tests := []struct {
		name string
		rec  *store.Record
		want bool
	}{
		{"phone", modify("telephoneNumber"), true},
		{"names and phone", modify("givenName", "sn", "telephoneNumber"), true},
		{"disabling", modify("telephoneNumber", "userAccountControl"), false},
		{"new mail: groups list it", modify("mail"), false},
		{"password", withSecret, false},
		{"rename", &store.Record{Op: store.OpRename, Kind: store.KindAccount}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.covered(tt.rec); got != tt.want {
				t.Fatalf("covered = %v, want %v", got, tt.want)
			}
		})
	}
}

// Finding 8: a record of a password change keeps whether it named values,
// never the values: a delete of one value is told from a delete of all.
func TestRecordPasswordValuesNamedNotKept(t *testing.T) {
	mp, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{"ou=people,dc=example,dc=com"}})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{}
	m.policy.Store(&Policy{Mapping: mp})
	dn := "uid=alice,ou=people,dc=example,dc=com"
	req := &gateway.WriteRequest{Op: gateway.OpModify, DN: dn, Changes: []gateway.Modification{
		{Op: gateway.ModDelete, Attribute: gateway.Attribute{Type: "userPassword", Values: [][]byte{[]byte("{SSHA}old-hash")}}},
		{Op: gateway.ModDelete, Attribute: gateway.Attribute{Type: "userPassword"}},
	}}
	rec, err := m.record(&write{req: req, target: dn, kind: schema.KindAccount}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Changes) != 2 || !slices.Equal(rec.Changes[0].Values, []string{passwordValuesNamed}) || len(rec.Changes[1].Values) != 0 {
		t.Fatalf("changes %+v; want the first marked as naming values, the second not", rec.Changes)
	}
	if strings.Contains(fmt.Sprint(rec), "old-hash") {
		t.Fatal("the record holds the password value")
	}
	rec.Changes = rec.Changes[:1]
	if got := m.passwordChangeOf(rec); got != passwordKept {
		t.Fatalf("a delete of one value: %v, want kept", got)
	}
}
