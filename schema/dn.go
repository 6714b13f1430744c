package schema

import (
	"cmp"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// This file is the project's one notion of "the same DN". Policy, journal
// ordering, caches and the gateway's own subtree all compare DNs through it,
// so that no two parts of the gateway can disagree about which entry a
// spelling names.

// CanonicalDN is the form all spellings of one DN share: attribute types by
// their canonical names (aliases and OIDs folded, "0.9.2342.19200300.100.1.1"
// and "UID" both "uid"), escapes decoded and re-encoded one way, blanks
// around separators dropped, types and values without case, and the values
// of a multi-valued RDN sorted. A DN that does not parse is only
// lower-cased, so it still groups with its own exact spelling.
func CanonicalDN(dn string) string {
	return canonicalDN(dn, commonTypeName)
}

// EqualDN reports whether a and b name the same entry by CanonicalDN's
// rules. A DN that does not parse is equal to nothing, itself included.
func EqualDN(a, b string) bool {
	ca, oka := parseCanonical(a, commonTypeName)
	cb, okb := parseCanonical(b, commonTypeName)
	return oka && okb && ca == cb
}

// commonTypeName folds the attribute-type names both dialects share; the
// one name they disagree on (streetAddress) names no entry in practice.
func commonTypeName(t string) string { return canonicalName(aliases{}, t) }

func canonicalDN(dn string, typeName func(string) string) string {
	if c, ok := parseCanonical(dn, typeName); ok {
		return c
	}
	return strings.ToLower(dn)
}

func parseCanonical(dn string, typeName func(string) string) (string, bool) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return "", false
	}
	for _, rdn := range parsed.RDNs {
		for _, ava := range rdn.Attributes {
			ava.Type = typeName(ava.Type)
			ava.Value = strings.ToLower(ava.Value)
		}
		slices.SortFunc(rdn.Attributes, func(a, b *ldap.AttributeTypeAndValue) int {
			return cmp.Or(strings.Compare(a.Type, b.Type), strings.Compare(a.Value, b.Value))
		})
	}
	return parsed.String(), true
}
