package schema

import (
	"slices"
	"testing"
)

// FirstRDN reads the values a client gives an RDN as slapd stores them:
// quoted, escaped, BER-encoded, multi-valued.
func TestFirstRDN(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []AVA
	}{
		{"uid=bob,ou=people", []AVA{{"uid", "bob"}}},
		{`uid="c c"`, []AVA{{"uid", "c c"}}},
		{` UID = " c c " `, []AVA{{"uid", " c c "}}},
		{`uid=\63\20c`, []AVA{{"uid", "c c"}}},
		{"userid=a+cn=B  C ,dc=x", []AVA{{"uid", "a"}, {"cn", "B  C"}}},
		{"0.9.2342.19200300.100.1.1=#0403632063", []AVA{{"uid", "c c"}}},
		{"uid=#0c03626f62", []AVA{{"uid", "bob"}}},
	} {
		got, err := FirstRDN(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("FirstRDN(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"uid=#0203", "uid=#04", "uid=#040463", "uid=#zz", "=x", "uid"} {
		if got, err := FirstRDN(bad); err == nil {
			t.Errorf("FirstRDN(%q) = %q, want an error", bad, got)
		}
	}
}
