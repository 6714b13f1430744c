package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
)

// What decide checks of the values a mirrored write gives Axigen: the same
// rules (schema.ValidateValue, through the mapping) that delivery applies
// when it turns the entry into Axigen's state, and that are at least as
// strict as what the Axigen client refuses to send (axigen.CheckValue: its
// length limit, controls, invalid UTF-8; names with blanks). A value that
// would fail there is refused at the write, so it never becomes a dead
// letter that holds up the entry's later changes.

// checkValues returns the constraintViolation (19) answer to a write that
// gives Axigen a value it cannot take, naming the attribute, the Axigen
// field and the limit; nil when every value fits.
func (m *Mirror) checkValues(w *write) *gateway.Result {
	mp := m.mapping()
	var err error
	check := func(attr string, values [][]byte) {
		if err == nil {
			err = m.checkAttribute(mp, w.kind, attr, values)
		}
	}
	switch w.req.Op {
	case gateway.OpAdd:
		if e := schema.ValidateValue(schema.FieldDN, w.req.DN); e != nil {
			err = e
		}
		for _, a := range w.req.Attributes {
			check(a.Type, a.Values)
		}
		if err == nil {
			err = mp.CheckName(addedEntry(w.req), w.kind)
		}
	case gateway.OpModify:
		for _, c := range w.req.Changes {
			if c.Op != gateway.ModDelete {
				check(c.Type, c.Values)
			}
		}
		if e, touched := m.nameAfterModify(w); err == nil && touched {
			err = mp.CheckName(e, w.kind)
		}
	case gateway.OpModifyDN:
		if e := schema.ValidateValue(schema.FieldDN, w.newDN); e != nil {
			err = e
		}
		// The new RDN's values are the entry's (its name's, when it names
		// the entry by the name attribute). It is read as the gateway reads
		// DNs: go-ldap's parser refuses a quoted value slapd takes, which
		// let `uid="a b"` past this check.
		avas, e := schema.FirstRDN(w.req.NewRDN)
		if e != nil {
			err = &schema.ValueError{Attr: "RDN", Field: schema.FieldDN,
				Reason: "the gateway cannot read the new RDN " + quoteDN(w.req.NewRDN) + ": " + e.Error()}
			break
		}
		for _, ava := range avas {
			check(ava.Type, [][]byte{[]byte(ava.Value)})
		}
		if e, ok := m.nameAfterRename(w, avas); err == nil && ok {
			err = mp.CheckName(e, w.kind)
		}
	case gateway.OpPasswordModify:
		if len(w.req.NewPassword) > 0 {
			if e := schema.ValidateValue(schema.FieldPassword, string(w.req.NewPassword)); e != nil {
				err = e
			}
		}
	}
	if err == nil {
		return nil
	}
	var ve *schema.ValueError
	if errors.As(err, &ve) {
		ve.DN = w.target
		if ve.Reason == "missing" {
			ve.Reason = "missing: the change would leave the entry without a name for Axigen"
		}
	}
	return &gateway.Result{Code: ldap.LDAPResultConstraintViolation,
		Diagnostic: "ldapgate: Axigen cannot take this value, so the change is not made: " + err.Error()}
}

// checkAttribute checks the values of one attribute by what Axigen makes
// of it: contact fields, the account or group name, a password.
func (m *Mirror) checkAttribute(mp *schema.Mapping, kind schema.Kind, attr string, values [][]byte) error {
	named := func(field string, v []byte) error {
		if len(v) == 0 {
			return nil // the directory answers an empty value itself
		}
		if err := schema.ValidateValue(field, string(v)); err != nil {
			var ve *schema.ValueError
			if errors.As(err, &ve) {
				ve.Attr = attr
			}
			return err
		}
		return nil
	}
	if mail := mp.MemberMailAttribute(); kind == schema.KindAccount && mail != "" && mp.SameAttribute(attr, mail) {
		// The address is also what the account's groups list in Axigen,
		// which takes a plain local@domain only: a businessEmail Axigen
		// takes ("Alice <alice@example.com>") made every later change of
		// the account and of its groups a dead letter.
		for _, v := range values {
			if err := named(schema.FieldMember, v); err != nil {
				return err
			}
		}
	}
	switch mp.AttrClass(attr, kind) {
	case schema.AttrPassword:
		for _, v := range values {
			if err := mp.CheckPassword(attr, v); err != nil {
				return err
			}
		}
	case schema.AttrContact:
		for _, field := range mp.ContactFieldsOf(attr) {
			for _, v := range values {
				if err := named(field, v); err != nil {
					return err
				}
			}
		}
	case schema.AttrName:
		// A name attribute with several values is named by its RDN's
		// value, which delivery checks; one value is the name.
		if len(values) != 1 || mp.Config().NameFromAddress {
			return nil
		}
		field := schema.FieldName
		if kind == schema.KindGroup {
			field = schema.FieldGroupName
		}
		return named(field, values[0])
	}
	return nil
}

// The name a write leaves its entry: an account or group whose name
// attribute a write empties (a modify deleting its values, a rename
// dropping the old RDN's value when the new RDN names the entry by
// another attribute) or fills with a first value Axigen cannot take has
// no name Axigen can take, and its delivery would fail for good with the
// change in the directory. So decide works the name out from the entry
// as the write leaves it (schema.Mapping.CheckName, what delivery maps).

// addedEntry is the entry an add creates, as far as its name goes.
func addedEntry(req *gateway.WriteRequest) schema.Entry {
	e := schema.Entry{DN: req.DN, Attrs: map[string][]string{}}
	for _, a := range req.Attributes {
		for _, v := range a.Values {
			e.Attrs[a.Type] = append(e.Attrs[a.Type], string(v))
		}
	}
	return e
}

// nameAttributeOf is the attribute that names an entry of kind.
func nameAttributeOf(mp *schema.Mapping, kind schema.Kind) string {
	if kind == schema.KindGroup {
		return mp.GroupNameAttribute()
	}
	return mp.NameAttribute()
}

// nameValues copies e with only its name attribute's values (under one
// description), so that a write's changes can be applied to them.
func nameValues(mp *schema.Mapping, e schema.Entry, attr string) (schema.Entry, []string) {
	var values []string
	for desc, v := range e.Attrs {
		if mp.SameAttribute(desc, attr) && !strings.Contains(desc, ";") {
			values = append(values, v...)
		}
	}
	return schema.Entry{DN: e.DN, Attrs: map[string][]string{}}, values
}

// sameName compares two values of a name attribute as the directory does
// (case and blanks ignored: uid, cn, mail and sAMAccountName alike).
func sameName(a, b string) bool {
	return strings.EqualFold(strings.Join(strings.Fields(a), " "), strings.Join(strings.Fields(b), " "))
}

func withoutName(values []string, drop string) []string {
	out := values[:0:0]
	for _, v := range values {
		if !sameName(v, drop) {
			out = append(out, v)
		}
	}
	return out
}

// nameAfterModify is the entry (its name attribute) as a modify leaves
// it, and whether the modify touches the name at all; only a modify of an
// entry read before it (w.entry) is worked out.
func (m *Mirror) nameAfterModify(w *write) (schema.Entry, bool) {
	mp := m.mapping()
	attr := nameAttributeOf(mp, w.kind)
	if w.entry == nil || attr == "" {
		return schema.Entry{}, false
	}
	e, values := nameValues(mp, *w.entry, attr)
	touched := false
	for _, c := range w.req.Changes {
		if !mp.SameAttribute(c.Type, attr) {
			continue
		}
		if strings.Contains(c.Type, ";") {
			// A tagged value (uid;lang-fr) is a subtype of its own: the
			// name is read from the attribute without options.
			continue
		}
		touched = true
		switch c.Op {
		case gateway.ModReplace:
			values = nil
			fallthrough
		case gateway.ModAdd:
			for _, v := range c.Values {
				if !contains(values, string(v)) {
					values = append(values, string(v))
				}
			}
		case gateway.ModDelete:
			if len(c.Values) == 0 {
				values = nil
			}
			for _, v := range c.Values {
				values = withoutName(values, string(v))
			}
		}
	}
	e.Attrs[attr] = values
	return e, touched
}

// nameAfterRename is the entry (its name attribute) as a modify DN to the
// new RDN avas leaves it: the new RDN's values are added, and with
// deleteoldrdn the old RDN's are removed.
func (m *Mirror) nameAfterRename(w *write, avas []schema.AVA) (schema.Entry, bool) {
	mp := m.mapping()
	attr := nameAttributeOf(mp, w.kind)
	if w.entry == nil || attr == "" {
		return schema.Entry{}, false
	}
	e, values := nameValues(mp, *w.entry, attr)
	if w.req.DeleteOldRDN {
		old, err := schema.FirstRDN(w.entry.DN)
		if err != nil {
			return schema.Entry{}, false
		}
		for _, ava := range old {
			if mp.SameAttribute(ava.Type, attr) {
				values = withoutName(values, ava.Value)
			}
		}
	}
	for _, ava := range avas {
		if mp.SameAttribute(ava.Type, attr) && !contains(values, ava.Value) {
			values = append(values, ava.Value)
		}
	}
	e.DN = w.req.NewRDN
	e.Attrs[attr] = values
	return e, true
}

func contains(values []string, v string) bool {
	for _, x := range values {
		if sameName(x, v) {
			return true
		}
	}
	return false
}

// resultingEntry is the entry (its DN and name attribute) as an add,
// rename or modify of the name leaves it; ok is false for a write that
// names the entry as before, or whose entry was not read.
func (m *Mirror) resultingEntry(w *write) (e schema.Entry, ok bool) {
	switch w.req.Op {
	case gateway.OpAdd:
		return addedEntry(w.req), true
	case gateway.OpModify:
		return m.nameAfterModify(w)
	case gateway.OpModifyDN:
		avas, err := schema.FirstRDN(w.req.NewRDN)
		if err != nil {
			return schema.Entry{}, false
		}
		return m.nameAfterRename(w, avas)
	}
	return schema.Entry{}, false
}

// checkNameFree refuses (19) a write that gives an account or group the
// Axigen name of another entry of its kind, or of an entry of the other
// kind: Axigen has one account (one group) per name, and delivery applied
// the newcomer's state to the account the other entry has — a second
// "uid=alice" added in another unit of the account base took over alice's
// mailbox with its own password; a rename onto carol's name overwrote her
// contact info and left the renamed account behind. And an account and a
// group are both addresses of the domain (name@domain): Axigen cannot hold
// both under one name, so the second could never be delivered. The
// directory is asked (the account and group bases, their name attributes)
// for entries that name the same account or group; only adds, renames and
// modifies of the name ask. Two such writes racing each other through
// this gateway are held apart by the claim on the name; through another
// gateway, or made directly, only the directory's own uniqueness (slapd's
// unique overlay, AD's sAMAccountName) holds.
func (m *Mirror) checkNameFree(ctx context.Context, w *write) *gateway.Result {
	e, ok := m.resultingEntry(w)
	if !ok {
		return nil
	}
	mp := m.mapping()
	name := mp.EntryName(e, w.kind)
	if name == "" {
		return nil
	}
	if w.entry != nil && mp.ClassifyEntry(*w.entry) == w.kind && strings.EqualFold(mp.EntryName(*w.entry, w.kind), name) {
		// The name the entry has already, as an account (group) already:
		// not one this write gives. An entry moved into the bases from
		// outside them, its name kept, is given it now.
		return nil
	}
	cfg := mp.Config()
	what := w.kind.String()
	classTerms := func(classes []string) string {
		var terms []string
		for _, c := range classes {
			terms = append(terms, "(objectClass="+ldap.EscapeFilter(c)+")")
		}
		return "(|" + strings.Join(terms, "") + ")"
	}
	accountValue := ldap.EscapeFilter(name)
	if cfg.NameFromAddress {
		accountValue += "@*"
	}
	filter := "(|(&" + classTerms(cfg.AccountClasses) + "(" + mp.NameAttribute() + "=" + accountValue + "))" +
		"(&" + classTerms(cfg.GroupClasses) + "(" + mp.GroupNameAttribute() + "=" + ldap.EscapeFilter(name) + ")))"
	bases := mp.AccountBases()
	for _, b := range mp.GroupBases() {
		if !slices.ContainsFunc(bases, func(a string) bool { return mp.EqualDN(a, b) }) {
			bases = append(bases, b)
		}
	}
	// The directory cannot show a write still on its way: two writes
	// giving one name, racing each other, would both pass the search. The
	// name is claimed before the search, so that a write that gave it and
	// was answered between the two is in what the search shows (claimed
	// after, the second of two racing adds passed: two entries of one
	// name, TestAttackWriteRacingAddsOfOneName). Accounts and groups share
	// the claims, as they share the names.
	key := "name:" + strings.ToLower(name)
	if !m.claims.take(key) {
		return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
			"ldapgate: another write giving the %s name %q is on its way to the directory (or one giving it to the other kind: accounts and groups share names); try again once it is answered", what, name)}
	}
	found, err := m.cfg.Directory.SearchAll(ctx, bases, filter, m.readAttributes())
	if err != nil {
		m.claims.release(key)
		m.log.Warn("cannot look for another entry with an account or group name", "name", name, "err", err)
		return unreachable("cannot check that no other entry has the name " + fmt.Sprintf("%q", name))
	}
	for _, other := range found {
		kind := mp.ClassifyEntry(other)
		if mp.EqualDN(other.DN, w.target) || (kind != schema.KindAccount && kind != schema.KindGroup) ||
			!strings.EqualFold(mp.EntryName(other, kind), name) {
			continue
		}
		m.claims.release(key)
		if kind != w.kind {
			return &gateway.Result{Code: ldap.LDAPResultConstraintViolation, Diagnostic: fmt.Sprintf(
				"ldapgate: the name %q is already that of the %s %s in Axigen, and an account and a group are both addresses of the domain (one per name), so the change of %s is not made; give it another name",
				name, kind, quoteDN(other.DN), quoteDN(w.target))}
		}
		return &gateway.Result{Code: ldap.LDAPResultConstraintViolation, Diagnostic: fmt.Sprintf(
			"ldapgate: the %s name %q is already that of %s in Axigen (one %s per name), so the change of %s is not made; give it another name",
			what, name, quoteDN(other.DN), what, quoteDN(w.target))}
	}
	w.claim = key
	return nil
}

// nameClaims are the account and group names that allowed writes on their
// way to the directory give (checkNameFree), until the directory answers.
type nameClaims struct {
	mu sync.Mutex
	m  map[string]bool
}

// take claims key; false when a write on its way holds it.
func (c *nameClaims) take(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[key] {
		return false
	}
	if c.m == nil {
		c.m = map[string]bool{}
	}
	c.m[key] = true
	return true
}

// release drops a claim ("" ignored).
func (c *nameClaims) release(key string) {
	if key == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}
