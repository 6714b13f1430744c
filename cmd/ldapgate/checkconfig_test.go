package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/schema"
)

// TestCheckConfigNamesUnmappedContactFields: check-config says which of the
// eleven contact fields the dialect's defaults leave alone, and how to map
// one; a field mapped by the site is not named.
func TestCheckConfigNamesUnmappedContactFields(t *testing.T) {
	cases := []struct {
		sc   schema.Config
		want []string
	}{
		{schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{"ou=people,dc=example,dc=com"}}, []string{"personalEmail", "businessPhone"}},
		{schema.Config{Dialect: schema.ActiveDirectory, AccountBase: schema.DNList{"cn=Users,dc=example,dc=com"}}, []string{"personalEmail"}},
		{schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{"ou=people,dc=example,dc=com"},
			Contact: map[string]string{"personalEmail": "otherMailbox"}}, []string{"businessPhone"}},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		noteUnmappedContact(tc.sc, &out)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != len(tc.want) {
			t.Errorf("%s %v: %q, want notes for %v", tc.sc.Dialect, tc.sc.Contact, out.String(), tc.want)
			continue
		}
		for i, f := range tc.want {
			if !strings.HasPrefix(lines[i], "note  contact field "+f+" is not mirrored") || !strings.Contains(lines[i], "mirror.schema.contact."+f) {
				t.Errorf("%s: line %q, want a note on %s", tc.sc.Dialect, lines[i], f)
			}
		}
	}
}
