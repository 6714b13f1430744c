package mirror

import (
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// DeliveryNames returns the journal's store.Options.DeliveryNames for the
// mapping mp: the Axigen account names an account record's delivery may
// touch, or the group names a group record's may, worked out from the
// record as the write path journaled it. The journal delivers the records
// sharing one in sequence order, though their entries differ: an entry
// that takes the name another entry gives up (a rename through the name
// attribute or the RDN, a delete) must not reach Axigen first, or it would
// update the account (its password included) or the group (its members)
// the other entry still holds there, which that entry's late rename would
// then carry off.
//
// The names are: the account's or group's name before the write
// (Record.Name, from the entry the write path read; a record prepared
// before its entry was read learns it at Commit, and the journal then
// orders it by it too), the values a write adds to or sets in the name
// attribute of its kind (an add's, a modify's; the directory refuses an
// add without its RDN's values), and the name-attribute values of the RDN
// of a rename's new DN (and of the old DN, or a delete's, when the entry
// was not read), and the names a write may reveal (Record.MayTake: the
// other values of the name attribute, when the write can change which of
// them names the entry: deleting the first uid of several names the entry
// by the next, which another entry may be giving up). A superset does no harm beyond ordering two records that
// need not be. The journal keeps an account's names and a group's apart.
func DeliveryNames(mp *schema.Mapping) func(r *store.Record) []string {
	return func(r *store.Record) []string {
		var kind schema.Kind
		switch r.Kind {
		case store.KindAccount:
			kind = schema.KindAccount
		case store.KindGroup:
			kind = schema.KindGroup
		default:
			return nil
		}
		var names []string
		if r.Name != "" {
			names = append(names, r.Name)
		}
		name := func(attr, value string) {
			if mp.AttrClass(attr, kind) != schema.AttrName {
				return
			}
			if n := mp.EntryName(schema.Entry{Attrs: map[string][]string{attr: {value}}}, kind); n != "" {
				names = append(names, n)
			}
		}
		// The names the write may reveal (a delete of the name attribute's
		// value that named the entry, a rename dropping the RDN's value or
		// naming it by another attribute), listed before it was journaled.
		names = append(names, r.MayTake...)
		for _, c := range r.Changes {
			if c.Op == "add" || c.Op == "replace" {
				for _, v := range c.Values {
					name(c.Attr, v)
				}
			}
		}
		rdn := func(dn string) {
			parsed, err := ldap.ParseDN(dn)
			if err != nil || len(parsed.RDNs) == 0 {
				return
			}
			for _, ava := range parsed.RDNs[0].Attributes {
				name(ava.Type, ava.Value)
			}
		}
		switch r.Op {
		case store.OpRename:
			rdn(r.NewDN)
			if r.Name == "" {
				rdn(r.DN)
			}
		case store.OpDelete:
			// Read before the delete, the entry gave the name; else the
			// RDN's is the best guess left.
			if r.Name == "" {
				rdn(r.DN)
			}
		}
		return names
	}
}
