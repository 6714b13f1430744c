package mirror

import (
	"slices"
	"testing"

	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// TestAccountNames: the account names a record's delivery may touch, by
// which the journal orders the records of different entries.
func TestAccountNames(t *testing.T) {
	base := schema.DNList{"ou=people,dc=example,dc=com"}
	uid, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: base})
	if err != nil {
		t.Fatal(err)
	}
	mail, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: base, NameAttribute: "mail", NameFromAddress: true})
	if err != nil {
		t.Fatal(err)
	}
	dn := func(rdn string) string { return rdn + ",ou=people,dc=example,dc=com" }
	for _, c := range []struct {
		what string
		mp   *schema.Mapping
		rec  store.Record
		want []string
	}{
		{"a modify of the name attribute: the old name and the new",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("cn=Ivy"), Name: "ivy",
				Changes: []store.Change{{Op: "replace", Attr: "uid", Values: []string{"ivy2"}}, {Op: "replace", Attr: "sn", Values: []string{"I"}}}},
			[]string{"ivy", "ivy2"}},
		{"through an alias, by its OID",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("cn=Ivy"), Name: "ivy",
				Changes: []store.Change{{Op: "add", Attr: "0.9.2342.19200300.100.1.1", Values: []string{"ivy3"}}, {Op: "delete", Attr: "uid", Values: []string{"ivy"}}}},
			[]string{"ivy", "ivy3"}},
		{"a contact change: the name alone",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("uid=bob"), Name: "bob",
				Changes: []store.Change{{Op: "replace", Attr: "telephoneNumber", Values: []string{"+1"}}}},
			[]string{"bob"}},
		{"an add: its name attribute's values",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpAdd, DN: dn("cn=Ivan New"),
				Changes: []store.Change{{Op: "add", Attr: "cn", Values: []string{"Ivan New"}}, {Op: "add", Attr: "uid", Values: []string{"ivy"}}}},
			[]string{"ivy"}},
		{"a rename through the RDN",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpRename, DN: dn("uid=bob"), NewDN: dn("uid=robert"), Name: "bob"},
			[]string{"bob", "robert"}},
		{"a rename of an entry not read: both RDNs",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpRename, DN: dn("uid=bob"), NewDN: dn("uid=robert")},
			[]string{"robert", "bob"}},
		{"a move whose RDN is not the name: the name",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpRename, DN: dn("cn=Ivy"), NewDN: "cn=Ivy,ou=former,dc=example,dc=com", Name: "ivy"},
			[]string{"ivy"}},
		{"a delete: the name it retires",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpDelete, DN: dn("cn=Ivy"), Name: "ivy"},
			[]string{"ivy"}},
		{"a delete of an entry not read: its RDN's",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpDelete, DN: dn("uid=bob")},
			[]string{"bob"}},
		{"names from the address: the local part",
			mail, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("uid=bob"), Name: "bob",
				Changes: []store.Change{{Op: "replace", Attr: "mail", Values: []string{"robert@example.com"}}, {Op: "replace", Attr: "uid", Values: []string{"x"}}}},
			[]string{"bob", "robert"}},
		{"a group: none",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpModify, DN: "cn=staff,ou=groups,dc=example,dc=com", Name: "staff",
				Changes: []store.Change{{Op: "replace", Attr: "cn", Values: []string{"team"}}}},
			nil},
	} {
		if got := AccountNames(c.mp)(&c.rec); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.what, got, c.want)
		}
	}
}
