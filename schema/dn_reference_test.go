package schema

// The DN parser as it was before it was made to allocate less (issue 19),
// kept to check, by fuzzing, that the faster one gives the same answers.

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func (d dnName) refString() string {
	parts := make([]string, len(d.rdns))
	for i, r := range d.rdns {
		parts[i] = strings.Join(r, "+")
	}
	return strings.Join(parts, ",")
}

// refParser walks a DN string (RFC 4514, with the leniencies slapd keeps
// from LDAPv2: ';' between RDNs, blanks around separators, quoted values).
type refParser struct {
	s      string
	i      int
	unsure string
}

func refParseDN(dn string) (dnName, error) {
	p := &refParser{s: dn}
	var out dnName
	p.blanks()
	if p.i == len(p.s) {
		return out, nil // the root DSE
	}
	if p.s[p.i] == '<' {
		// AD's <GUID=...>, <SID=...>, <WKGUID=...>: only the directory knows.
		return dnName{unsure: "an extended DN form (<GUID=...>, <SID=...>) that only the directory resolves"}, nil
	}
	for {
		rdn, err := p.rdn()
		if err != nil {
			return dnName{}, err
		}
		out.rdns = append(out.rdns, rdn)
		if len(out.rdns) == 1 {
			out.firstEnd = p.i
		}
		p.blanks()
		if p.i == len(p.s) {
			break
		}
		if c := p.s[p.i]; c != ',' && c != ';' {
			return dnName{}, fmt.Errorf("unexpected %q at byte %d", c, p.i)
		}
		p.i++
		p.blanks()
	}
	out.unsure = p.unsure
	return out, nil
}

func (p *refParser) blanks() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *refParser) setUnsure(why string) {
	if p.unsure == "" {
		p.unsure = why
	}
}

// rdn reads one RDN: type=value pairs joined by '+', sorted.
func (p *refParser) rdn() ([]string, error) {
	var avas []string
	types := map[string]bool{}
	for {
		typ, rule, err := p.attrType()
		if err != nil {
			return nil, err
		}
		p.blanks()
		if p.i == len(p.s) || p.s[p.i] != '=' {
			return nil, fmt.Errorf("no '=' after the attribute type at byte %d", p.i)
		}
		p.i++
		p.blanks()
		raw, err := p.value()
		if err != nil {
			return nil, err
		}
		if types[typ] {
			p.setUnsure("an RDN that names " + typ + " twice")
		}
		types[typ] = true
		avas = append(avas, typ+"="+refEscapeValue(p.normalize(typ, rule, raw)))
		p.blanks()
		if p.i < len(p.s) && p.s[p.i] == '+' {
			p.i++
			p.blanks()
			continue
		}
		slices.Sort(avas)
		return avas, nil
	}
}

// attrType reads a descr or numeric OID and returns its canonical name and
// the matching rule of its values.
func (p *refParser) attrType() (string, matchRule, error) {
	start := p.i
	for p.i < len(p.s) && (isAlnum(p.s[p.i]) || p.s[p.i] == '-' || p.s[p.i] == '.') {
		p.i++
	}
	t := p.s[start:p.i]
	if !isKeystring(t) && !validNumericOID(t) {
		return "", 0, fmt.Errorf("invalid attribute type %q at byte %d", t, start)
	}
	lt := strings.ToLower(t)
	if dt, ok := dnTypes[lt]; ok {
		if dt.match == matchOther {
			p.setUnsure("values of " + dt.name + " compare by a rule the gateway does not apply")
		}
		return dt.name, dt.match, nil
	}
	p.setUnsure("attribute type " + t + " is not in the gateway's schema")
	return canonicalName(aliases{}, lt), matchOther, nil
}

// value reads an attribute value (string, quoted string or #hex) and
// returns its bytes, unescaped.
func (p *refParser) value() (string, error) {
	if p.i < len(p.s) && p.s[p.i] == '#' {
		p.setUnsure("a BER-encoded (#...) value")
		start := p.i
		p.i++
		for p.i < len(p.s) && isHex(p.s[p.i]) {
			p.i++
		}
		return p.s[start:p.i], nil
	}
	if p.i < len(p.s) && p.s[p.i] == '"' {
		p.i++
		var b strings.Builder
		for {
			if p.i == len(p.s) {
				return "", errors.New("unterminated quoted value")
			}
			c := p.s[p.i]
			switch c {
			case '"':
				p.i++
				return b.String(), nil
			case '\\':
				// slapd does not decode hex pairs inside quotes (RFC 1779
				// has none): only the directory can say what they mean.
				p.setUnsure("an escape inside a quoted value")
				r, err := p.escape()
				if err != nil {
					return "", err
				}
				b.WriteByte(r)
			default:
				b.WriteByte(c)
				p.i++
			}
		}
	}
	var b strings.Builder
	trail := 0 // unescaped blanks at the end, which are not part of the value
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch c {
		case ',', ';', '+':
			return b.String()[:b.Len()-trail], nil
		case '\\':
			r, err := p.escape()
			if err != nil {
				return "", err
			}
			b.WriteByte(r)
			trail = 0
			continue
		case '"', '<', '>', '=':
			// Allowed unescaped by some parsers, refused by others.
			p.setUnsure(fmt.Sprintf("an unescaped %q in a value", c))
		}
		if c == ' ' {
			trail++
		} else {
			trail = 0
		}
		b.WriteByte(c)
		p.i++
	}
	return b.String()[:b.Len()-trail], nil
}

// escape reads \X (a special character) or \HH (a hex byte).
func (p *refParser) escape() (byte, error) {
	if p.i+1 >= len(p.s) {
		return 0, errors.New("a trailing backslash")
	}
	c := p.s[p.i+1]
	if isHex(c) {
		if p.i+2 >= len(p.s) || !isHex(p.s[p.i+2]) {
			return 0, fmt.Errorf("a bad hex escape at byte %d", p.i)
		}
		p.i += 3
		return unhex(c)<<4 | unhex(p.s[p.i-1]), nil
	}
	if strings.IndexByte(` "#+,;<=>\`, c) < 0 {
		return 0, fmt.Errorf("a bad escape at byte %d", p.i)
	}
	p.i += 2
	return c, nil
}

// normalize applies the value's equality rule: both case-ignoring rules
// fold case and insignificant blanks. A value the gateway cannot be sure
// of is marked unsure and only lower-cased.
func (p *refParser) normalize(typ string, rule matchRule, v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			p.setUnsure("a value of " + typ + " with a control or non-ASCII character, which the directory folds by its own Unicode rules")
			return strings.ToLower(v)
		}
	}
	if rule == matchOther {
		return strings.ToLower(v)
	}
	v = strings.Join(strings.Fields(strings.ToLower(v)), " ")
	if v == "" {
		p.setUnsure("an empty value of " + typ)
	}
	return v
}

// escapeValue renders a normalised value for the canonical string: every
// character that could separate or end a value, and every byte outside
// printable ASCII, as \HH, so that the canonical form is one string per DN
// and parses back as RFC 4514.
func refEscapeValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		special := strings.IndexByte(`"+,;<>\=`, c) >= 0 || c < 0x20 || c > 0x7e ||
			(c == '#' && i == 0) || (c == ' ' && (i == 0 || i == len(v)-1))
		if special {
			fmt.Fprintf(&b, `\%02x`, c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// FuzzDNParserMatchesReference: the parser gives what the reference gives
// (the canonical string, whether the DN is unsure, the first RDN's end),
// or fails where it fails, for any input.
func FuzzDNParserMatchesReference(f *testing.F) {
	for _, s := range []string{
		"uid=bob,ou=people,dc=example,dc=com", "UID = Bob , OU=People;DC=Example", `uid=\62ob,ou=people,dc=example,dc=com\00`,
		"cn=a+sn=b;dc=x", "cn=a+cn=b", "<GUID=1234>", `cn=" a , b "`, `cn=\20\20x\20`, "uid=#04026869", "", " ",
		"organizationalUnitName = x ,DC=y", "cn=\xff\xfe", `cn="`, `cn=a\`, "cn=a+", ",", "=", "cn=a  b  ,dc=x",
		`cn=a\,b  ,dc=x`, "cn=a=b", "cn= x", "cn=x ", "cn=#", "cn=a\\2Cb", "x-y=1", "1.2.3=a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		got, err := parseDN(dn)
		want, refErr := refParseDN(dn)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("parseDN(%q) error %v, reference %v", dn, err, refErr)
		}
		if err != nil {
			return
		}
		if got.String() != want.refString() || got.unsure != want.unsure || got.firstEnd != want.firstEnd {
			t.Fatalf("parseDN(%q) = %q unsure %q end %d; reference %q unsure %q end %d",
				dn, got.String(), got.unsure, got.firstEnd, want.refString(), want.unsure, want.firstEnd)
		}
		if got.canon != "" && got.canon != dn {
			t.Fatalf("parseDN(%q) takes %q as the spelling of its canonical form", dn, got.canon)
		}
		if !got.equal(want) {
			t.Fatalf("parseDN(%q) is not equal to the reference's parse", dn)
		}
	})
}
