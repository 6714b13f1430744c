package mirror

import (
	"testing"

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
