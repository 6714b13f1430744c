package schema

import "strings"

// Entry is a directory entry as schema sees it, independent of any LDAP
// library: its DN and its attributes. Values are raw octets held in Go
// strings, so binary attributes such as objectGUID or unicodePwd survive
// unchanged (go-ldap's EntryAttribute.ByteValues converted with string()).
type Entry struct {
	DN    string
	Attrs map[string][]string
}

// Get returns the values of attr. LDAP attribute descriptions are
// case-insensitive, so the lookup is too. A stored description carrying the
// ";binary" transfer option counts as attr itself (it only says how the value
// travels); any other option (language tags, AD's ";range=") makes it a
// different description that Get does not return, because those values are a
// subtype or a fragment, not the attribute's value set. An exact,
// option-free match wins over a ";binary" one.
func (e Entry) Get(attr string) []string {
	want := baseName(attr)
	// Most entries come from the directory spelled as asked: an exact,
	// option-free name is found without a walk over every attribute.
	if values, ok := e.Attrs[want]; ok {
		return values
	}
	var binary []string
	for name, values := range e.Attrs {
		base, opts, hasOpts := strings.Cut(name, ";")
		if !strings.EqualFold(base, want) {
			continue
		}
		switch {
		case !hasOpts:
			return values
		case strings.EqualFold(opts, "binary"):
			binary = values
		}
	}
	return binary
}

// First returns the first non-empty value of attr. Several values mapped
// to one single-valued Axigen field are resolved this way: the first one
// in the order the directory returned them, which is deterministic for a
// given entry state.
func (e Entry) First(attr string) (string, bool) {
	for _, v := range e.Get(attr) {
		if v != "" {
			return v, true
		}
	}
	return "", false
}

// ObjectClasses returns the entry's objectClass values.
func (e Entry) ObjectClasses() []string { return e.Get("objectClass") }

// splitOptions splits an attribute description "type;opt1;opt2" into its
// type and options.
func splitOptions(desc string) (string, []string) {
	parts := strings.Split(desc, ";")
	return parts[0], parts[1:]
}

// baseName is the attribute type of a description, without options.
func baseName(desc string) string {
	base, _, _ := strings.Cut(desc, ";")
	return base
}

// hasOption reports whether any stored description of attr (by base name)
// carries an option starting with prefix, e.g. AD's "range=".
func (e Entry) hasOption(attr, prefix string) bool {
	for name := range e.Attrs {
		base, opts := splitOptions(name)
		if !strings.EqualFold(base, attr) {
			continue
		}
		for _, o := range opts {
			if len(o) >= len(prefix) && strings.EqualFold(o[:len(prefix)], prefix) {
				return true
			}
		}
	}
	return false
}
