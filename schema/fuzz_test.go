package schema

import (
	"strings"
	"testing"
)

// breaksLine reports values that could end or split an Axigen CLI line.
func breaksLine(s string) bool { return strings.ContainsAny(s, "\r\n\x00") }

var fuzzFields = append([]string{FieldName, FieldGroupName, FieldPassword, FieldMember, FieldLDAPID, FieldDN}, ContactFields...)

func FuzzValidateValue(f *testing.F) {
	for _, s := range []string{"John", "a\nb", "a\rb", "\x00", "x@example.com", "1 Main St$Town", "\xff", "a\u2028b"} {
		f.Add(uint8(0), s)
		f.Add(uint8(4), s)
	}
	f.Fuzz(func(t *testing.T, which uint8, value string) {
		field := fuzzFields[int(which)%len(fuzzFields)]
		if err := ValidateValue(field, value); err == nil && breaksLine(value) {
			t.Fatalf("ValidateValue(%s, %q) accepted a line break or NUL", field, value)
		}
	})
}

func FuzzAccountState(f *testing.F) {
	f.Add("john", "John", "+1 555", "1 Main St$Town", "pw", []byte{1})
	f.Add("jo\nhn", "J\r", "\x00", "a\nb", "p\nw", []byte{0})
	m := openLDAPMapping(f)
	f.Fuzz(func(t *testing.T, name, given, phone, addr, pw string, key []byte) {
		e := Entry{DN: "uid=x,ou=People,dc=example,dc=com", Attrs: map[string][]string{
			"uid": {name}, "entryUUID": {string(key)}, "givenName": {given},
			"telephoneNumber": {phone}, "postalAddress": {addr}, "userPassword": {pw},
			"sn": {given + phone}, "mail": {name + "@example.com"},
		}}
		acct, err := m.AccountState(e)
		if err != nil {
			return
		}
		values := []string{acct.Name, acct.LDAPID, acct.DN, acct.Password}
		for _, v := range acct.Contact {
			values = append(values, v)
		}
		for _, v := range values {
			if breaksLine(v) {
				t.Fatalf("AccountState passed %q through", v)
			}
		}
	})
}

// FuzzCanonicalDN checks the DN canonicaliser never panics and that a form
// it is sure of is stable: canonical again is itself, and equal to the
// spelling it came from.
func FuzzCanonicalDN(f *testing.F) {
	for _, s := range []string{
		"uid=bob,ou=people,dc=example,dc=com", "uid=bob,2.5.4.11=people,dc=example,dc=com",
		`uid=bob,ou="people",dc=example,dc=com`, `uid=\62ob,ou=people,dc=example,dc=com\00`,
		"cn=a+sn=b;dc=x", "<GUID=1234>", `cn=" a , b "`, `cn=\20\20x\20`, "uid=#04026869", "", " ",
		"organizationalUnitName = x ,DC=y", "cn=\xff\xfe", `cn="`, `cn=a\`, "cn=a+", ",", "=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		canon := CanonicalDN(dn)
		exact, err := ExactDN(dn)
		if err != nil {
			return
		}
		if exact != canon {
			t.Fatalf("ExactDN(%q) = %q but CanonicalDN = %q", dn, exact, canon)
		}
		again, err := ExactDN(exact)
		if err != nil || again != exact {
			t.Fatalf("ExactDN(ExactDN(%q)) = %q, %v; want %q", dn, again, err, exact)
		}
		if !EqualDN(dn, exact) {
			t.Fatalf("EqualDN(%q, %q) = false", dn, exact)
		}
		if p, _, ok := ParentDN(dn); ok && p != "" && !UnderDN(p, dn) {
			t.Fatalf("%q is not under its parent %q", dn, p)
		}
	})
}
