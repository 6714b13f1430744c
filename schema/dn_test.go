package schema

import "testing"

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
