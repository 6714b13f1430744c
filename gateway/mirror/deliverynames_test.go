package mirror

import (
	"slices"
	"testing"

	"github.com/ldapgate/ldapgate/gateway"
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
		{"a delete of the first uid: the names the write may reveal too",
			uid, store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: dn("cn=multi"), Name: "m1", MayTake: []string{"carol"},
				Changes: []store.Change{{Op: "delete", Attr: "uid", Values: []string{"m1"}}}},
			[]string{"m1", "carol"}},
		{"a group's rename to another attribute's RDN: the names it may reveal",
			uid, store.Record{Kind: store.KindGroup, Op: store.OpRename, DN: gdn("cn=g1"), NewDN: gdn("ou=g1"), Name: "g1", MayTake: []string{"staff"}},
			[]string{"g1", "staff"}},
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

// TestMayTake: the names a write may reveal, listed in its record before
// it is journaled: every name of the entry's name attribute (but the one
// it has) when the write can change which value names the entry.
func TestMayTake(t *testing.T) {
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
	multi := schema.Entry{DN: "cn=multi,ou=people,dc=example,dc=com", Attrs: map[string][]string{
		"cn": {"multi"}, "uid": {"m1", "Carol", "dave"}, "mail": {"m1@example.com", "m2@example.com"}}}
	g1 := schema.Entry{DN: "cn=g1,ou=groups,dc=example,dc=com", Attrs: map[string][]string{"cn": {"g1", "staff"}, "uid": {"x"}}}
	mod := func(op gateway.ModOp, attr string, values ...string) *gateway.WriteRequest {
		c := gateway.Modification{Op: op, Attribute: gateway.Attribute{Type: attr}}
		for _, v := range values {
			c.Values = append(c.Values, []byte(v))
		}
		return &gateway.WriteRequest{Op: gateway.OpModify, Changes: []gateway.Modification{c}}
	}
	rename := func(rdn string, deleteOld bool) *gateway.WriteRequest {
		return &gateway.WriteRequest{Op: gateway.OpModifyDN, NewRDN: rdn, DeleteOldRDN: deleteOld}
	}
	for _, c := range []struct {
		what string
		mp   *schema.Mapping
		req  *gateway.WriteRequest
		e    schema.Entry
		kind schema.Kind
		name string
		want []string
	}{
		{"a delete of the first uid: the other uids", uid, mod(gateway.ModDelete, "uid", "m1"), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"through an alias", uid, mod(gateway.ModDelete, "userid", "m1"), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"a delete of the whole attribute", uid, mod(gateway.ModDelete, "uid"), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"a replace", uid, mod(gateway.ModReplace, "uid", "carol"), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"an add of a uid reveals none", uid, mod(gateway.ModAdd, "uid", "m3"), multi, schema.KindAccount, "m1", nil},
		{"a contact change reveals none", uid, mod(gateway.ModReplace, "telephoneNumber", "+1"), multi, schema.KindAccount, "m1", nil},
		{"a delete of another attribute reveals none", uid, mod(gateway.ModDelete, "mail", "m1@example.com"), multi, schema.KindAccount, "m1", nil},
		{"names from the address: the local parts", mail, mod(gateway.ModDelete, "mail", "m1@example.com"), multi, schema.KindAccount, "m1", []string{"m2"}},
		{"a rename to an RDN of another attribute", uid, rename("cn=multi2", false), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"a rename to a uid RDN, keeping the old RDN: none", uid, rename("uid=erin", false), multi, schema.KindAccount, "m1", nil},
		{"a rename to a uid RDN, deleting the old RDN: the others", uid, rename("uid=erin", true), multi, schema.KindAccount, "m1", []string{"Carol", "dave"}},
		{"a group's rename to an ou RDN", uid, rename("ou=g1", true), g1, schema.KindGroup, "g1", []string{"staff"}},
		{"a group's delete of a cn", uid, mod(gateway.ModDelete, "cn", "g1"), g1, schema.KindGroup, "g1", []string{"staff"}},
		{"a group's delete of a uid reveals none", uid, mod(gateway.ModDelete, "uid", "x"), g1, schema.KindGroup, "g1", nil},
		{"a password change reveals none", uid, &gateway.WriteRequest{Op: gateway.OpPasswordModify}, multi, schema.KindAccount, "m1", nil},
	} {
		if got := mayTake(c.mp, c.req, c.e, c.kind, c.name); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.what, got, c.want)
		}
	}
}
