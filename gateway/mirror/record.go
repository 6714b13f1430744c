package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// What the prepare step journals: the record of an allowed write.

// record builds the journal record of an allowed write (prepare); groups
// are those of an account being deleted.
func (m *Mirror) record(w *write, groups []string) (*store.Record, error) {
	mp := m.mapping()
	req, kind, cur := w.req, w.kind, w.entry
	rec := &store.Record{
		Time:       time.Now(),
		Actor:      w.who.dn,
		ClientAddr: w.who.addr,
		Kind:       store.KindAccount,
		DN:         w.target,
		NewDN:      w.newDN,
	}
	if kind == schema.KindGroup {
		rec.Kind = store.KindGroup
	}
	if cur != nil {
		key, err := m.entryKey(*cur)
		if err != nil {
			return nil, err
		}
		rec.EntryKey = key
		rec.Name = m.mapping().EntryName(*cur, kind)
		rec.MayTake = mayTake(mp, w.req, *cur, kind, rec.Name)
	}
	var notes []string
	secret := func(attr string, value []byte) {
		pw, ok, reason := mp.PlaintextPassword(attr, value)
		switch {
		case ok && len(rec.Secret) == 0:
			rec.Secret = []byte(pw)
		case !ok:
			notes = append(notes, "password not mirrored: "+reason)
		}
	}
	change := func(op, attr string, values [][]byte) store.Change {
		c := store.Change{Op: op, Attr: attr}
		switch mp.AttrClass(attr, kind) {
		case schema.AttrPassword:
			// A password change that names the old password (AD's delete of
			// the old unicodePwd, then add of the new) sets only the new one.
			if op == "add" || op == "replace" {
				for _, v := range values {
					secret(attr, v)
				}
			}
			// The values are never kept; that there were some is, for
			// passwordChangeOf (a delete of named values removes those
			// only, a replace with some sets the password).
			if len(values) > 0 {
				c.Values = []string{passwordValuesNamed}
			}
		case schema.AttrOther:
			// Values Axigen does not use are not kept (they may be large or
			// binary); the attribute name stays for the audit trail.
		default:
			for _, v := range values {
				c.Values = append(c.Values, string(v))
			}
		}
		return c
	}
	switch req.Op {
	case gateway.OpAdd:
		rec.Op = store.OpAdd
		for _, a := range req.Attributes {
			rec.Changes = append(rec.Changes, change("add", a.Type, a.Values))
		}
	case gateway.OpModify:
		rec.Op = store.OpModify
		for _, c := range req.Changes {
			rec.Changes = append(rec.Changes, change(c.Op.String(), c.Type, c.Values))
		}
	case gateway.OpDelete:
		rec.Op = store.OpDelete
		rec.Groups = groups
	case gateway.OpModifyDN:
		rec.Op = store.OpRename
		if w.newDN == "" {
			return nil, fmt.Errorf("cannot work out the new DN of %s", w.target)
		}
	case gateway.OpPasswordModify:
		rec.Op = store.OpPassword
		if len(req.NewPassword) > 0 {
			rec.Secret = append([]byte(nil), req.NewPassword...)
		}
	}
	rec.Note = strings.Join(notes, "; ")
	return rec, nil
}

// mayTake lists the names (store.Record.MayTake) a write may reveal:
// every name the entry cur's name attribute gives, read before the write,
// when the write can change which of its values names the entry — a
// delete or replace of values of the name attribute (the next value, or
// one the directory orders first, becomes the name), or a modify DN that
// drops the old RDN's value or whose new RDN is not of the name attribute
// (the name is the RDN's value, when it is one of several: schema's
// naming, and then the first value). The write's own values (added, set,
// the new RDN's) are ordered by already (DeliveryNames), and so is name,
// the entry's name before the write: neither is listed, so a record that
// reveals nothing else carries none. Every value is listed, not the name
// the gateway works out the write leaves (checkNameFree's): the directory
// orders the values, and a superset only orders two records that need
// not be. Such a write always has its entry read before it (classify;
// unreadKind reads the target of any write to the name attribute), so
// the values are known; the names are worked out here, once, before the
// record is journaled, and every node of a cluster orders the record by
// the same names.
func mayTake(mp *schema.Mapping, req *gateway.WriteRequest, cur schema.Entry, kind schema.Kind, name string) []string {
	attr := nameAttributeOf(mp, kind)
	if attr == "" {
		return nil
	}
	reveals := false
	switch req.Op {
	case gateway.OpModify:
		for _, c := range req.Changes {
			if mp.SameAttribute(c.Type, attr) && (c.Op == gateway.ModDelete || c.Op == gateway.ModReplace) {
				reveals = true
			}
		}
	case gateway.OpModifyDN:
		reveals = req.DeleteOldRDN
		avas, err := schema.FirstRDN(req.NewRDN)
		if err != nil || !slices.ContainsFunc(avas, func(a schema.AVA) bool { return mp.SameAttribute(a.Type, attr) }) {
			reveals = true
		}
	}
	if !reveals {
		return nil
	}
	var out []string
	for desc, values := range cur.Attrs {
		if !mp.SameAttribute(desc, attr) {
			continue
		}
		for _, v := range values {
			n := mp.EntryName(schema.Entry{Attrs: map[string][]string{attr: {v}}}, kind)
			if n == "" || strings.EqualFold(n, name) || slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, n) }) {
				continue
			}
			out = append(out, n)
		}
	}
	// The attribute's descriptions come in map order: the names do not.
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return out
}

// passwordValuesNamed stands, in a record, for the values of a password
// change, which are never kept.
const passwordValuesNamed = "(values not kept)"

// entryKey renders the entry's stable key as text.
func (m *Mirror) entryKey(e schema.Entry) (string, error) {
	v, ok := e.First(m.mapping().KeyAttribute())
	if !ok {
		return "", nil
	}
	if m.mapping().KeyFormat() == schema.KeyGUID {
		return schema.FormatGUID([]byte(v))
	}
	return v, nil
}

// keyOf reads an entry's stable key, or "" when it cannot (delivery then
// finds the entry by its DN).
func (m *Mirror) keyOf(ctx context.Context, dn string) string {
	e, err := m.cfg.Directory.Read(ctx, dn, []string{m.mapping().KeyAttribute()})
	if err != nil || e == nil {
		return ""
	}
	key, _ := m.entryKey(*e)
	return key
}

// changedAttributes lists the attributes a record changes, for the audit log.
func changedAttributes(rec *store.Record) []string {
	out := make([]string, 0, len(rec.Changes))
	for _, c := range rec.Changes {
		out = append(out, c.Op+":"+c.Attr)
	}
	return out
}
