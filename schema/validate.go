package schema

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Field names ValidateValue knows besides the contact fields (ContactFields).
const (
	FieldName      = "name"      // account name: the local part of its address
	FieldGroupName = "groupName" // group name: also a local part in Axigen
	FieldPassword  = "password"
	FieldMember    = "member" // a group member's e-mail address
	FieldLDAPID    = "ldapID" // the entry's stable key, as text
	FieldDN        = "dn"
)

// Limits, in characters (runes), on what ldapgate sends to Axigen. Axigen
// documents none of them, so they are chosen to fit every real value while
// keeping one absurd value from becoming an absurd CLI line.
const (
	// MaxLocalPart follows RFC 5321's limit on a local part.
	MaxLocalPart = 64
	// MaxAddress is RFC 5321's practical limit on a forward path.
	MaxAddress = 254
	// MaxShortValue bounds names, nicknames, phone numbers and e-mail
	// addresses in the contact info.
	MaxShortValue = 255
	// MaxPostalAddress bounds home and business addresses.
	MaxPostalAddress = 1024
	// MaxPassword bounds passwords.
	MaxPassword = 256
	// MaxLDAPID bounds the stable key (a UUID needs 36).
	MaxLDAPID = 255
	// MaxDN bounds the Associated LDAP DN.
	MaxDN = 2048
)

// ValueError reports a value ldapgate will not send to Axigen. It names the
// directory attribute and the Axigen field; it never contains the value
// itself, which may be a password.
type ValueError struct {
	Attr   string // directory attribute, when known
	Field  string // Axigen field (see ContactFields and the Field* constants)
	DN     string // entry the value came from, when known
	Reason string
}

func (e *ValueError) Error() string {
	var b strings.Builder
	switch {
	case e.Attr != "" && e.Field != "":
		fmt.Fprintf(&b, "attribute %s (Axigen %s)", e.Attr, e.Field)
	case e.Attr != "":
		fmt.Fprintf(&b, "attribute %s", e.Attr)
	default:
		fmt.Fprintf(&b, "Axigen %s", e.Field)
	}
	if e.DN != "" {
		fmt.Fprintf(&b, " of %q", e.DN)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// fieldRule is how one Axigen field is checked.
type fieldRule struct {
	max   int
	check func(string) string // extra check; returns a reason or ""
}

var contactMax = map[string]int{
	"firstName": MaxShortValue, "lastName": MaxShortValue, "nickName": MaxShortValue,
	"personalEmail": MaxShortValue, "businessEmail": MaxShortValue,
	"phone": MaxShortValue, "mobilePhone": MaxShortValue, "homePhone": MaxShortValue,
	"businessPhone": MaxShortValue,
	"homeAddress":   MaxPostalAddress, "businessAddress": MaxPostalAddress,
}

func ruleFor(field string) (fieldRule, bool) {
	switch field {
	case FieldName, FieldGroupName:
		return fieldRule{max: MaxLocalPart, check: checkLocalPart}, true
	case FieldPassword:
		return fieldRule{max: MaxPassword}, true
	case FieldMember:
		return fieldRule{max: MaxAddress, check: checkAddress}, true
	case FieldLDAPID:
		return fieldRule{max: MaxLDAPID}, true
	case FieldDN:
		return fieldRule{max: MaxDN}, true
	}
	if n, ok := contactMax[field]; ok {
		return fieldRule{max: n}, true
	}
	return fieldRule{}, false
}

// ValidateValue checks that value can be sent to Axigen as field, and
// returns a *ValueError saying why not otherwise. It never changes a value:
// a value Axigen cannot take is refused, not cleaned.
//
// Every field refuses invalid UTF-8, the empty string, control characters
// (C0 including TAB, CR, LF and NUL; DEL; C1 including NEL) and the Unicode
// line and paragraph separators, since any of them could end a CLI line or
// be mangled on the way. Lengths are counted in characters against the Max*
// limits. Account and group names must be what Axigen takes as a local
// part: ASCII letters, digits and . _ - +, no leading, trailing or doubled
// dot. Group members must be plain ASCII addresses local@domain.
//
// Postal addresses keep LDAP's "$" line separators (RFC 4517 PostalAddress):
// '$' is printable, so the value goes to Axigen as the directory stores it
// rather than being rewritten.
func ValidateValue(field, value string) error {
	rule, ok := ruleFor(field)
	if !ok {
		return &ValueError{Field: field, Reason: "unknown Axigen field"}
	}
	if reason := checkText(value, rule.max); reason != "" {
		return &ValueError{Field: field, Reason: reason}
	}
	if rule.check != nil {
		if reason := rule.check(value); reason != "" {
			return &ValueError{Field: field, Reason: reason}
		}
	}
	return nil
}

// checkText applies the rules every field shares.
func checkText(value string, max int) string {
	if value == "" {
		return "empty value"
	}
	if !utf8.ValidString(value) {
		return "not valid UTF-8"
	}
	n := 0
	for i, r := range value {
		if name := forbiddenRune(r); name != "" {
			return fmt.Sprintf("contains %s at byte %d; Axigen cannot take it and ldapgate does not alter values", name, i)
		}
		n++
	}
	if n > max {
		return fmt.Sprintf("%d characters, longer than the limit of %d", n, max)
	}
	return ""
}

// forbiddenRune names r when no value may contain it.
func forbiddenRune(r rune) string {
	switch {
	case r == 0:
		return "a NUL character"
	case r == '\r':
		return "a line break (CR)"
	case r == '\n':
		return "a line break (LF)"
	case r == 0x85, r == 0x2028, r == 0x2029:
		return fmt.Sprintf("a line break (U+%04X)", r)
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return fmt.Sprintf("a control character (U+%04X)", r)
	}
	return ""
}

func isLocalPartByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '+'
}

// checkLocalPart enforces the conservative local-part syntax Axigen's account
// and group names take.
func checkLocalPart(s string) string {
	for i := 0; i < len(s); i++ {
		if !isLocalPartByte(s[i]) {
			return fmt.Sprintf("character %q at byte %d is not allowed in a name (letters, digits and . _ - + only)", rune(s[i]), i)
		}
	}
	if s[0] == '.' || s[len(s)-1] == '.' {
		return "a name may not start or end with a dot"
	}
	if strings.Contains(s, "..") {
		return "a name may not contain two dots in a row"
	}
	return ""
}

// checkAddress accepts local@domain with an ASCII dot-atom local part and a
// domain of LDH labels. Quoted local parts and internationalised addresses
// are refused: Axigen's group addresses are plain.
func checkAddress(s string) string {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "not an e-mail address (want local@domain)"
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > MaxLocalPart {
		return fmt.Sprintf("local part longer than %d characters", MaxLocalPart)
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),:;<>@[\]`, c) >= 0 {
			return fmt.Sprintf("character %q at byte %d is not allowed in an address's local part", rune(c), i)
		}
	}
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return "misplaced dot in the address's local part"
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("invalid domain %q", domain)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Sprintf("invalid domain %q", domain)
			}
		}
	}
	return ""
}
