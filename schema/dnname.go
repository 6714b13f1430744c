package schema

// NameInDN is the Axigen name an entry of kind has at dn when its name
// attribute names it in its DN (uid=alice for accounts named by uid,
// cn=staff for groups named by cn): the first RDN's value of that
// attribute, which is the name EntryName gives (naming: the RDN's value
// wins among several). ok is false when the name is not in the DN (another
// attribute names the entry, or accounts are named by their address) or
// the DN does not parse. A cluster's delivery names accounts by the DNs the
// directory renamed them from (store.Journal.RenameAfter).
func (m *Mapping) NameInDN(dn string, kind Kind) (name string, ok bool) {
	attr := m.cfg.NameAttribute
	switch kind {
	case KindGroup:
		attr = m.cfg.GroupNameAttribute
	case KindAccount:
		if m.cfg.NameFromAddress {
			return "", false
		}
	default:
		return "", false
	}
	avas, err := FirstRDN(dn)
	if err != nil {
		return "", false
	}
	for _, ava := range avas {
		if m.SameAttribute(ava.Type, attr) && ava.Value != "" {
			return ava.Value, true
		}
	}
	return "", false
}
