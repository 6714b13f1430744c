package mirror

import (
	"errors"

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
	case gateway.OpModify:
		for _, c := range w.req.Changes {
			if c.Op != gateway.ModDelete {
				check(c.Type, c.Values)
			}
		}
	case gateway.OpModifyDN:
		if e := schema.ValidateValue(schema.FieldDN, w.newDN); e != nil {
			err = e
		}
		// The new RDN's value of the name attribute is the new name.
		if rdn, e := ldap.ParseDN(w.req.NewRDN); e == nil && len(rdn.RDNs) == 1 {
			for _, ava := range rdn.RDNs[0].Attributes {
				check(ava.Type, [][]byte{[]byte(ava.Value)})
			}
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
