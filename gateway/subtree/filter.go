package subtree

import (
	"fmt"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/ldapgate/ldapgate/schema"
)

// truth is the three-valued result of a filter (RFC 4511 section 4.5.1.7):
// an assertion about an attribute the server cannot judge is Undefined,
// which NOT leaves Undefined and a search treats as not matching.
type truth int8

const (
	undefined truth = iota
	isFalse
	isTrue
)

func boolTruth(b bool) truth {
	if b {
		return isTrue
	}
	return isFalse
}

// compileFilter turns the filter string gldap hands over into the BER tree
// that matches evaluates.
func compileFilter(filter string) (*ber.Packet, error) {
	if strings.TrimSpace(filter) == "" {
		filter = "(objectClass=*)"
	}
	p, err := ldap.CompileFilter(filter)
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", filter, err)
	}
	return p, nil
}

// matches evaluates a compiled filter against an entry. Every attribute
// of the subtree is a case-ignore string, or an integer, or a DN, so the
// matching rules are chosen from the values themselves.
func matches(f *ber.Packet, e *entry) bool { return eval(f, e) == isTrue }

func eval(f *ber.Packet, e *entry) truth {
	if f.ClassType != ber.ClassContext {
		return undefined
	}
	switch f.Tag {
	case ldap.FilterAnd:
		result := isTrue
		for _, c := range f.Children {
			switch eval(c, e) {
			case isFalse:
				return isFalse
			case undefined:
				result = undefined
			}
		}
		return result
	case ldap.FilterOr:
		result := isFalse
		for _, c := range f.Children {
			switch eval(c, e) {
			case isTrue:
				return isTrue
			case undefined:
				result = undefined
			}
		}
		return result
	case ldap.FilterNot:
		if len(f.Children) != 1 {
			return undefined
		}
		switch eval(f.Children[0], e) {
		case isTrue:
			return isFalse
		case isFalse:
			return isTrue
		}
		return undefined
	case ldap.FilterPresent:
		_, ok := e.get(f.Data.String())
		return boolTruth(ok)
	case ldap.FilterEqualityMatch, ldap.FilterApproxMatch, ldap.FilterGreaterOrEqual, ldap.FilterLessOrEqual:
		if len(f.Children) != 2 {
			return undefined
		}
		values, ok := e.get(f.Children[0].Data.String())
		if !ok {
			return isFalse
		}
		want := f.Children[1].Data.String()
		result := isFalse
		for _, v := range values {
			c, ok := compareValues(v, want)
			if !ok {
				// An integer attribute asked about a value that is no
				// integer (changeNumber<=abc): the assertion is invalid
				// for the attribute's syntax, so Undefined.
				result = undefined
				continue
			}
			switch {
			case f.Tag == ldap.FilterGreaterOrEqual && c >= 0,
				f.Tag == ldap.FilterLessOrEqual && c <= 0,
				(f.Tag == ldap.FilterEqualityMatch || f.Tag == ldap.FilterApproxMatch) && (c == 0 || isDN(v, want)):
				return isTrue
			}
		}
		return result
	case ldap.FilterSubstrings:
		if len(f.Children) != 2 {
			return undefined
		}
		values, ok := e.get(f.Children[0].Data.String())
		if !ok {
			return isFalse
		}
		for _, v := range values {
			if substringsMatch(strings.ToLower(v), f.Children[1].Children) {
				return isTrue
			}
		}
		return isFalse
	}
	// Extensible matches name rules this server does not implement.
	return undefined
}

// compareValues orders an entry's value against an assertion value: as
// integers when the entry's value is one (of any length: a change number
// asked for beyond 2^64 is still a number, larger than every one there
// is), otherwise as case-folded strings (which also orders GeneralizedTime
// correctly). ok is false when the entry's value is an integer and the
// assertion's is not: they cannot be compared.
func compareValues(v, assertion string) (c int, ok bool) {
	if isInteger(v) {
		if !isInteger(assertion) {
			return 0, false
		}
		return compareIntegers(v, assertion), true
	}
	return strings.Compare(strings.ToLower(v), strings.ToLower(assertion)), true
}

// isInteger reports whether s is an INTEGER of RFC 4517: an optional minus
// sign and decimal digits.
func isInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// compareIntegers orders two values isInteger accepts, whatever their
// length.
func compareIntegers(a, b string) int {
	negA, negB := strings.HasPrefix(a, "-"), strings.HasPrefix(b, "-")
	a = strings.TrimLeft(strings.TrimPrefix(a, "-"), "0")
	b = strings.TrimLeft(strings.TrimPrefix(b, "-"), "0")
	if a == "" {
		negA = false // -0 is 0
	}
	if b == "" {
		negB = false
	}
	if negA != negB {
		if negA {
			return -1
		}
		return 1
	}
	c := len(a) - len(b)
	if c == 0 {
		c = strings.Compare(a, b)
	}
	switch {
	case c < 0 && !negA, c > 0 && negA:
		return -1
	case c == 0:
		return 0
	}
	return 1
}

func substringsMatch(v string, parts []*ber.Packet) bool {
	for i, p := range parts {
		s := strings.ToLower(p.Data.String())
		switch p.Tag {
		case ldap.FilterSubstringsInitial:
			if i != 0 || !strings.HasPrefix(v, s) {
				return false
			}
			v = v[len(s):]
		case ldap.FilterSubstringsAny:
			k := strings.Index(v, s)
			if k < 0 {
				return false
			}
			v = v[k+len(s):]
		case ldap.FilterSubstringsFinal:
			if i != len(parts)-1 || !strings.HasSuffix(v, s) {
				return false
			}
			v = ""
		default:
			return false
		}
	}
	return true
}

// isDN compares two values as DNs, so that targetDN=UID=Alice,OU=People,...
// finds the entry however the client spells it; a value without "=" is no DN.
func isDN(a, b string) bool {
	return strings.Contains(a, "=") && strings.Contains(b, "=") && schema.EqualDN(a, b)
}
