package mirror

import (
	"slices"
	"testing"

	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// TestDeliveryNames: the account or group names a record's delivery may
// touch, by which the journal orders the records of different entries.
func TestDeliveryNames(t *testing.T) {
	base := schema.DNList{"ou=people,dc=example,dc=com"}
	groups := schema.DNList{"ou=groups,dc=example,dc=com"}
	uid, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: base, GroupBase: groups})
	if err != nil {
		t.Fatal(err)
	}
	mail, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: base, NameAttribute: "mail", NameFromAddress: true})
	if err != nil {
		t.Fatal(err)
	}
	dn := func(rdn string) string { return rdn + ",ou=people,dc=example,dc=com" }
	gdn := func(rdn string) string { return rdn + ",ou=groups,dc=example,dc=com" }
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
		{"a group's modify of its name attribute: the old name and the new",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpModify, DN: gdn("ou=A"), Name: "staff",
				Changes: []store.Change{{Op: "replace", Attr: "cn", Values: []string{"team"}}, {Op: "replace", Attr: "uid", Values: []string{"x"}}}},
			[]string{"staff", "team"}},
		{"a group's member change: its name alone",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpModify, DN: gdn("cn=staff"), Name: "staff",
				Changes: []store.Change{{Op: "add", Attr: "member", Values: []string{dn("uid=bob")}}}},
			[]string{"staff"}},
		{"a group's add: its name attribute's values, through an alias",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpAdd, DN: gdn("ou=B"),
				Changes: []store.Change{{Op: "add", Attr: "commonName", Values: []string{"team"}}, {Op: "add", Attr: "ou", Values: []string{"B"}}}},
			[]string{"team"}},
		{"a group's rename through the RDN",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpRename, DN: gdn("cn=staff"), NewDN: gdn("cn=squad"), Name: "staff"},
			[]string{"staff", "squad"}},
		{"a group's rename, not read: both RDNs",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpRename, DN: gdn("cn=staff"), NewDN: gdn("cn=squad")},
			[]string{"squad", "staff"}},
		{"a group's delete, not read: its RDN's",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpDelete, DN: gdn("cn=staff")},
			[]string{"staff"}},
		{"a group's uid is no name, an account's cn none either",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("uid=bob"), Name: "bob",
				Changes: []store.Change{{Op: "replace", Attr: "cn", Values: []string{"staff"}}}},
			[]string{"bob"}},
	} {
		if got := DeliveryNames(c.mp)(&c.rec); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.what, got, c.want)
		}
	}
}
