package schema

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// This file is the project's one notion of "the same DN". Policy, journal
// ordering, caches and the gateway's own subtree all compare DNs through it,
// so that no two parts of the gateway can disagree about which entry a
// spelling names.
//
// The canonical form is computed the way slapd computes a DN's normalised
// form: attribute types by their primary names (every name and OID of the
// types slapd's core, cosine, inetorgperson and nis schemas define folds to
// one: "2.5.4.11", "organizationalUnitName" and "OU" are all "ou"), RDN
// separators ',' or ';', blanks around separators and '=' dropped, escapes
// (\62, \,) and quoted values ("people") decoded, and each value normalised
// by its type's equality rule (caseIgnoreMatch, caseIgnoreIA5Match: case
// folded, leading and trailing blanks dropped, inner runs of blanks one
// blank), the values of a multi-valued RDN sorted.
//
// The gateway is sure of that form only where it knows the rule exactly:
// types its table knows with a case-ignoring rule, and values of printable
// ASCII. Anything else (a type it does not know, an integer or telephone
// number type, a value with a NUL, a control or a non-ASCII character,
// slapd folds by Unicode compatibility, a BER "#..." value, Active
// Directory's <GUID=...>, <SID=...> and extended forms) is "unsure":
// ExactDN returns a *DNError, and the caller asks the directory which entry
// the spelling names.

// DNError says why ExactDN cannot give a DN's canonical form. Only the
// directory can then say which entry, if any, the DN names.
type DNError struct {
	DN     string
	Reason string
}

func (e *DNError) Error() string { return fmt.Sprintf("DN %q: %s", e.DN, e.Reason) }

// ErrUnsureDN matches (errors.Is) every *DNError.
var ErrUnsureDN = errors.New("the DN's canonical form is unsure")

// Is makes errors.Is(err, ErrUnsureDN) true for a *DNError.
func (e *DNError) Is(target error) bool { return target == ErrUnsureDN }

// ExactDN returns dn's canonical form when the gateway is sure it is the
// form the directory computes (see above), or a *DNError saying why not.
// The empty DN (the root DSE) is "".
func ExactDN(dn string) (string, error) {
	p, err := parseDN(dn)
	if err != nil {
		return "", &DNError{DN: dn, Reason: err.Error()}
	}
	if p.unsure != "" {
		return "", &DNError{DN: dn, Reason: p.unsure}
	}
	return p.String(), nil
}

// CanonicalDN is dn's canonical form, best effort: an unsure DN (see
// ExactDN) still gets types folded and values lower-cased, and a DN that
// does not parse is only lower-cased, so it still groups with its own
// exact spelling. Use ExactDN where being wrong lets a write past the
// policy.
func CanonicalDN(dn string) string {
	p, err := parseDN(dn)
	if err != nil {
		return strings.ToLower(dn)
	}
	return p.String()
}

// EqualDN reports whether a and b name the same entry by CanonicalDN's
// rules. A DN that does not parse is equal to nothing, itself included.
func EqualDN(a, b string) bool {
	if a == b {
		// One spelling is one entry, if it parses at all.
		_, err := parseDN(a)
		return err == nil
	}
	pa, erra := parseDN(a)
	pb, errb := parseDN(b)
	return erra == nil && errb == nil && pa.equal(pb)
}

// ParentDN splits dn into its first RDN and its parent ("" for a
// single-RDN DN), both spelled as given (blanks around the separator
// dropped), so that either can be resolved by the directory when unsure;
// ok is false when dn does not parse or is the root DSE.
func ParentDN(dn string) (parent, rdn string, ok bool) {
	p, err := parseDN(dn)
	if err != nil || len(p.rdns) == 0 {
		return "", "", false
	}
	rest := strings.TrimLeft(dn[p.firstEnd:], " ")
	if rest != "" {
		rest = strings.TrimLeft(rest[1:], " ") // the ',' or ';'
	}
	return rest, strings.TrimSpace(dn[:p.firstEnd]), true
}

// UnderDN reports whether dn lies strictly below base, both compared in
// canonical form (best effort, as CanonicalDN). A DN that does not parse
// is under nothing.
func UnderDN(base, dn string) bool {
	b, errb := parseDN(base)
	d, errd := parseDN(dn)
	return errb == nil && errd == nil && d.under(b)
}

// dnName is a parsed DN: its RDNs, most specific first, each a sorted list
// of canonical "type=value" strings. It is never changed once parsed, so
// parses are shared (Mapping's DN cache).
type dnName struct {
	rdns     [][]string
	unsure   string // why the canonical form is not sure; "" when it is
	firstEnd int    // byte offset where the first RDN ends in the input
	// canon is the canonical form when the input was spelled so already
	// (most DNs the gateway handles: its own canonical forms, the
	// directory's), which String then need not build; "" otherwise.
	canon string
}

func (d dnName) String() string {
	if d.canon != "" {
		return d.canon
	}
	n := 0
	for _, r := range d.rdns {
		for _, ava := range r {
			n += len(ava) + 1
		}
	}
	var b strings.Builder
	b.Grow(n)
	for i, r := range d.rdns {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, ava := range r {
			if j > 0 {
				b.WriteByte('+')
			}
			b.WriteString(ava)
		}
	}
	return b.String()
}

// equal reports whether d and o have the same canonical form: values are
// escaped there, so the RDNs are equal exactly when the strings are.
func (d dnName) equal(o dnName) bool {
	if d.canon != "" && o.canon != "" {
		return d.canon == o.canon
	}
	return slices.EqualFunc(d.rdns, o.rdns, slices.Equal)
}

// under reports whether d lies strictly below base.
func (d dnName) under(base dnName) bool {
	n := len(base.rdns)
	if len(d.rdns) <= n {
		return false
	}
	for i, r := range base.rdns {
		if !slices.Equal(d.rdns[len(d.rdns)-n+i], r) {
			return false
		}
	}
	return true
}

// dnParser walks a DN string (RFC 4514, with the leniencies slapd keeps
// from LDAPv2: ';' between RDNs, blanks around separators, quoted values).
type dnParser struct {
	s      string
	i      int
	unsure string
	avas   []string // the pairs of the RDNs read so far (parseDN)
}

func parseDN(dn string) (dnName, error) {
	p := &dnParser{s: dn}
	var out dnName
	p.blanks()
	if p.i == len(p.s) {
		return out, nil // the root DSE
	}
	if p.s[p.i] == '<' {
		// AD's <GUID=...>, <SID=...>, <WKGUID=...>: only the directory knows.
		return dnName{unsure: "an extended DN form (<GUID=...>, <SID=...>) that only the directory resolves"}, nil
	}
	// The RDNs' pairs share one array, and the RDN list one more: sized by
	// the separators (an escaped one overcounts), a DN costs two
	// allocations besides the pairs that are not spelled canonically.
	seps := 1 + strings.Count(dn, ",") + strings.Count(dn, ";")
	p.avas = make([]string, 0, seps+strings.Count(dn, "+"))
	out.rdns = make([][]string, 0, seps)
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
	if spelledCanonically(dn, out.rdns) {
		out.canon = dn
	}
	return out, nil
}

// spelledCanonically reports whether dn is the canonical string of rdns,
// compared piece by piece rather than built.
func spelledCanonically(dn string, rdns [][]string) bool {
	i := 0
	for k, r := range rdns {
		for j, ava := range r {
			if k > 0 || j > 0 {
				sep := byte(',')
				if j > 0 {
					sep = '+'
				}
				if i >= len(dn) || dn[i] != sep {
					return false
				}
				i++
			}
			if len(dn)-i < len(ava) || dn[i:i+len(ava)] != ava {
				return false
			}
			i += len(ava)
		}
	}
	return i == len(dn) && i > 0
}

func (p *dnParser) blanks() {
	for p.i < len(p.s) && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *dnParser) setUnsure(why string) {
	if p.unsure == "" {
		p.unsure = why
	}
}

// rdn reads one RDN: type=value pairs joined by '+', sorted.
func (p *dnParser) rdn() ([]string, error) {
	first := len(p.avas)
	for {
		start := p.i
		typ, rule, raw, _, err := p.ava()
		if err != nil {
			return nil, err
		}
		// Canonical type names hold no '=': "typ=" starts only its own AVAs.
		if slices.ContainsFunc(p.avas[first:], func(a string) bool { return len(a) > len(typ) && a[len(typ)] == '=' && a[:len(typ)] == typ }) {
			p.setUnsure("an RDN that names " + typ + " twice")
		}
		value := escapeValue(p.normalize(typ, rule, raw))
		// A pair spelled as its canonical form is taken from the input
		// as it is: most are, and building it again cost an allocation.
		if seg := p.s[start:p.i]; len(seg) == len(typ)+1+len(value) && seg[:len(typ)] == typ && seg[len(typ)] == '=' && seg[len(typ)+1:] == value {
			p.avas = append(p.avas, seg)
		} else {
			p.avas = append(p.avas, typ+"="+value)
		}
		p.blanks()
		if p.i < len(p.s) && p.s[p.i] == '+' {
			p.i++
			p.blanks()
			continue
		}
		avas := p.avas[first:len(p.avas):len(p.avas)]
		if len(avas) > 1 {
			slices.Sort(avas)
		}
		return avas, nil
	}
}

// ava reads one type=value pair of an RDN: the type's canonical name and
// matching rule, the value as written (escapes undone), and whether it is
// a "#..." BER value.
func (p *dnParser) ava() (typ string, rule matchRule, raw string, ber bool, err error) {
	if typ, rule, err = p.attrType(); err != nil {
		return "", 0, "", false, err
	}
	p.blanks()
	if p.i == len(p.s) || p.s[p.i] != '=' {
		return "", 0, "", false, fmt.Errorf("no '=' after the attribute type at byte %d", p.i)
	}
	p.i++
	p.blanks()
	ber = p.i < len(p.s) && p.s[p.i] == '#'
	if raw, err = p.value(); err != nil {
		return "", 0, "", false, err
	}
	return typ, rule, raw, ber, nil
}

// attrType reads a descr or numeric OID and returns its canonical name and
// the matching rule of its values.
func (p *dnParser) attrType() (string, matchRule, error) {
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

// isKeystring: a letter, then letters, digits and hyphens (RFC 4512).
func isKeystring(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

func validNumericOID(s string) bool {
	if s == "" {
		return false
	}
	for _, n := range strings.Split(s, ".") {
		if n == "" || (len(n) > 1 && n[0] == '0') {
			return false
		}
		for i := 0; i < len(n); i++ {
			if n[i] < '0' || n[i] > '9' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// value reads an attribute value (string, quoted string or #hex) and
// returns its bytes, unescaped.
func (p *dnParser) value() (string, error) {
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
	// Most values have no escape: they are a piece of the input as it is.
	start, trail := p.i, 0
scan:
	for p.i < len(p.s) {
		switch c := p.s[p.i]; c {
		case ',', ';', '+':
			return p.s[start : p.i-trail], nil
		case '\\':
			break scan
		case '"', '<', '>', '=':
			p.setUnsure(fmt.Sprintf("an unescaped %q in a value", c))
			trail = 0
		case ' ':
			trail++
		default:
			trail = 0
		}
		p.i++
	}
	if p.i == len(p.s) {
		return p.s[start : p.i-trail], nil
	}
	var b strings.Builder
	b.WriteString(p.s[start:p.i])
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
func (p *dnParser) escape() (byte, error) {
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

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// normalize applies the value's equality rule: both case-ignoring rules
// fold case and insignificant blanks. A value the gateway cannot be sure
// of is marked unsure and only lower-cased.
func (p *dnParser) normalize(typ string, rule matchRule, v string) string {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			p.setUnsure("a value of " + typ + " with a control or non-ASCII character, which the directory folds by its own Unicode rules")
			return strings.ToLower(v)
		}
	}
	if rule == matchOther {
		return strings.ToLower(v)
	}
	if isFolded(v) {
		return v // lower case already, with single inner blanks and none around
	}
	v = strings.Join(strings.Fields(strings.ToLower(v)), " ")
	if v == "" {
		p.setUnsure("an empty value of " + typ)
	}
	return v
}

// isFolded reports whether v is as normalize leaves a printable ASCII
// value: no upper case, no blank at either end, no two blanks in a row.
func isFolded(v string) bool {
	if v == "" || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'A' && c <= 'Z' || c == ' ' && v[i-1] == ' ' {
			return false
		}
	}
	return true
}

// escapeValue renders a normalised value for the canonical string: every
// character that could separate or end a value, and every byte outside
// printable ASCII, as \HH, so that the canonical form is one string per DN
// and parses back as RFC 4514.
func escapeValue(v string) string {
	special := func(i int) bool {
		c := v[i]
		return strings.IndexByte(`"+,;<>\=`, c) >= 0 || c < 0x20 || c > 0x7e ||
			(c == '#' && i == 0) || (c == ' ' && (i == 0 || i == len(v)-1))
	}
	i := 0
	for i < len(v) && !special(i) {
		i++
	}
	if i == len(v) {
		return v // nothing to escape, as in most DNs
	}
	var b strings.Builder
	b.WriteString(v[:i])
	for ; i < len(v); i++ {
		if special(i) {
			fmt.Fprintf(&b, `\%02x`, v[i])
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// matchRule is how values of an attribute type compare in a DN.
type matchRule uint8

const (
	// matchOther: a rule the gateway does not apply (integer, telephone
	// number, case-exact, ...): only the directory can compare.
	matchOther matchRule = iota
	matchCaseIgnore
	matchCaseIgnoreIA5
)

type dnType struct {
	name  string
	match matchRule
}

// AVA is one attribute-value pair of an RDN as a client wrote it: the
// type's canonical name and the value decoded (escapes, quotes and a BER
// string's encoding undone) but not normalised.
type AVA struct {
	Type, Value string
}

// FirstRDN returns the pairs of dn's first RDN, parsed as ExactDN parses
// it (quoted values, escapes, blanks and the other forms slapd takes), so
// that a check of the value a write gives an RDN sees the value the
// directory stores. A "#..." value is decoded when it is a BER string
// (OCTET STRING, UTF8String, PrintableString, IA5String, T61String); any
// other BER value is an error, since only the directory could read it.
func FirstRDN(dn string) ([]AVA, error) {
	p := &dnParser{s: dn}
	p.blanks()
	var out []AVA
	for {
		typ, _, v, ber, err := p.ava()
		if err != nil {
			return nil, err
		}
		if ber {
			if v, err = berString(v[1:]); err != nil {
				return nil, err
			}
		}
		out = append(out, AVA{Type: typ, Value: v})
		p.blanks()
		if p.i < len(p.s) && p.s[p.i] == '+' {
			p.i++
			p.blanks()
			continue
		}
		return out, nil
	}
}

// berString decodes the hex of a "#..." DN value holding one BER string.
func berString(hexValue string) (string, error) {
	b := make([]byte, 0, len(hexValue)/2)
	if len(hexValue)%2 != 0 {
		return "", errors.New("a BER value with an odd number of hex digits")
	}
	for i := 0; i < len(hexValue); i += 2 {
		if !isHex(hexValue[i]) || !isHex(hexValue[i+1]) {
			return "", errors.New("a BER value that is not hex")
		}
		b = append(b, unhex(hexValue[i])<<4|unhex(hexValue[i+1]))
	}
	if len(b) < 2 {
		return "", errors.New("a BER value too short to hold a string")
	}
	switch b[0] {
	case 0x04, 0x0c, 0x13, 0x14, 0x16:
	default:
		return "", fmt.Errorf("a BER value of tag 0x%02x, not a string", b[0])
	}
	n, body := int(b[1]), b[2:]
	if n >= 0x80 {
		k := n & 0x7f
		if k == 0 || k > 3 || len(body) < k {
			return "", errors.New("a BER value with a bad length")
		}
		n = 0
		for _, c := range body[:k] {
			n = n<<8 | int(c)
		}
		body = body[k:]
	}
	if n != len(body) {
		return "", errors.New("a BER value whose length does not match its content")
	}
	return string(body), nil
}
