package mirror

import (
	"context"
	"fmt"
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
