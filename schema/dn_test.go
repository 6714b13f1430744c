package schema

import (
	"errors"
	"testing"
)

func TestCanonicalDNFoldsSpellings(t *testing.T) {
	want := CanonicalDN("uid=bob,ou=people,dc=example,dc=com")
	same := []string{
		"UID=Bob,OU=People,DC=Example,DC=Com",
		"uid=bob, ou=people, dc=example, dc=com",
		"userid=bob,ou=people,dc=example,dc=com",
		"0.9.2342.19200300.100.1.1=bob,ou=people,dc=example,dc=com",
		`uid=\62ob,ou=people,dc=example,dc=com`,
	}
	for _, dn := range same {
		if got := CanonicalDN(dn); got != want {
			t.Errorf("CanonicalDN(%q) = %q, want %q", dn, got, want)
		}
		if !EqualDN(dn, "uid=bob,ou=people,dc=example,dc=com") {
			t.Errorf("EqualDN(%q, bob) = false", dn)
		}
	}
	if CanonicalDN("cn=a+sn=b,dc=x") != CanonicalDN("SN=B + CN=A,dc=x") {
		t.Error("a multi-valued RDN's order must not matter")
	}
	for _, pair := range [][2]string{
		{"uid=bob,dc=x", "uid=bobby,dc=x"},
		{"uid=bob,dc=x", "cn=bob,dc=x"},
		{"bad", "bad"},
		{"uid=bob,dc=x", "uid=bob,dc=x,dc=y"},
	} {
		if EqualDN(pair[0], pair[1]) {
			t.Errorf("EqualDN(%q, %q) = true", pair[0], pair[1])
		}
	}
}

// The spellings slapd resolves to bob's entry (issue 16), each with the
// canonical form ExactDN must be sure of, or unsure.
func TestExactDNSpellings(t *testing.T) {
	const bob = "uid=bob,ou=people,dc=example,dc=com"
	sure := []string{
		bob,
		"uid=bob,2.5.4.11=people,dc=example,dc=com",
		"uid=bob,organizationalUnitName=people,dc=example,dc=com",
		"uid=bob,ou=people,domainComponent=example,dc=com",
		"uid=bob,ou=people,0.9.2342.19200300.100.1.25=example,dc=com",
		`uid=bob,ou="people",dc=example,dc=com`,
		`uid="bob",ou=people,dc=example,dc=com`,
		`uid=\62ob,ou=people,dc=example,dc=com`,
		`uid=bob\20,ou=people,dc=example,dc=com`,
		`uid=\20bob,ou=people,dc=example,dc=com`,
		"uid = bob , ou = people ; dc=example;dc=com",
		" UID=BOB,OU=PEOPLE,DC=EXAMPLE,DC=COM ",
		"userid=bob,ou=people,dc=example,dc=com",
	}
	for _, dn := range sure {
		got, err := ExactDN(dn)
		if err != nil || got != bob {
			t.Errorf("ExactDN(%q) = %q, %v; want %q", dn, got, err, bob)
		}
	}
	unsure := []string{
		`uid=bob,ou=people,dc=example,dc=com\00`,   // slapd's IA5 rule stops at the NUL
		"uid=\uff42ob,ou=people,dc=example,dc=com", // fullwidth b: slapd folds it to b
		"<GUID=6b29fc40-ca47-1067-b31d-00dd010662da>",
		"<SID=S-1-5-21-1-2-3-1104>;CN=bob,CN=Users,DC=example,DC=com",
		"uid=#0403626f62,ou=people,dc=example,dc=com",
		"x-unknown=bob,ou=people,dc=example,dc=com",
		"uidNumber=1000,ou=people,dc=example,dc=com",  // integerMatch: 01000 is 1000
		"streetAddress=x,ou=people,dc=example,dc=com", // street in OpenLDAP, its own type in AD
		"uid=bob+uid=bobby,ou=people,dc=example,dc=com",
		"uid=a=b,ou=people,dc=example,dc=com",
		"uid=,ou=people,dc=example,dc=com",
	}
	for _, dn := range unsure {
		if got, err := ExactDN(dn); !errors.Is(err, ErrUnsureDN) {
			t.Errorf("ExactDN(%q) = %q, %v; want an unsure DN", dn, got, err)
		}
	}
	for _, dn := range []string{"uid=bob,", "uid", "=bob", `uid=b\zob`, `uid="bob`, "oid.2.5.4.3=x", "uid=bob\\"} {
		if _, err := ExactDN(dn); err == nil {
			t.Errorf("ExactDN(%q) accepted an invalid DN", dn)
		}
		if EqualDN(dn, dn) {
			t.Errorf("EqualDN(%q, itself) = true for an invalid DN", dn)
		}
	}
	if got, err := ExactDN(""); got != "" || err != nil {
		t.Errorf(`ExactDN("") = %q, %v`, got, err)
	}
}

func TestUnderAndParentDN(t *testing.T) {
	base := "ou=people,dc=example,dc=com"
	for dn, want := range map[string]bool{
		"uid=bob,2.5.4.11=People,DC=example,dc=com": true,
		`uid=bob,ou="people",dc=example,dc=com`:     true,
		`uid=a\,ou=people,dc=example,dc=com`:        false, // an escaped comma is a value, not a separator
		"ou=people,dc=example,dc=com":               false,
		"uid=bob,ou=people,dc=example,dc=org":       false,
	} {
		if got := UnderDN(base, dn); got != want {
			t.Errorf("UnderDN(%q) = %v, want %v", dn, got, want)
		}
	}
	parent, rdn, ok := ParentDN(` uid = \62ob , 2.5.4.11=people,dc=example,dc=com`)
	if !ok || CanonicalDN(parent) != base || parent != "2.5.4.11=people,dc=example,dc=com" || rdn != `uid = \62ob` {
		t.Errorf("ParentDN = %q, %q, %v", parent, rdn, ok)
	}
}

// Found by the property test against slapd (e2e): slapd leaves escapes
// inside a quoted value undecoded, so the gateway must not be sure of them.
func TestExactDNEscapeInsideQuotesIsUnsure(t *testing.T) {
	if got, err := ExactDN(`ou="g\72oups",dc=example,dc=com`); !errors.Is(err, ErrUnsureDN) {
		t.Errorf("ExactDN = %q, %v; want unsure", got, err)
	}
}
