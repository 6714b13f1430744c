package store

import (
	"slices"
	"testing"
)

// TestRekeyTokensIsOrderTokens: the tokens the index derives for a record
// whose entry key changed (a Commit naming it) are those orderTokens
// makes from the record itself, DNs spelled differently and renames
// included, and the tokens they were derived from stay as they were.
func TestRekeyTokensIsOrderTokens(t *testing.T) {
	records := []Record{
		{DN: "uid=a,ou=People,dc=example,dc=org"},
		{DN: "UID=a, ou=people,dc=example,dc=org", EntryKey: "old"},
		{DN: "uid=a,ou=people,dc=example,dc=org", NewDN: "uid=b,ou=people,dc=example,dc=org"},
		{DN: "uid=a,ou=people,dc=example,dc=org", NewDN: "UID=A,ou=people,dc=example,dc=org", EntryKey: "old"},
		{DN: "cn=k:x,ou=groups,dc=example,dc=org", EntryKey: "k:y"},
	}
	for _, r := range records {
		before := orderTokens(&r)
		kept := slices.Clone(before)
		for _, key := range []string{"", "old", "new", "k:x"} {
			want := r
			want.EntryKey = key
			if got := rekeyTokens(before, key); !slices.Equal(got, orderTokens(&want)) {
				t.Errorf("%+v with key %q: %q, want %q", r, key, got, orderTokens(&want))
			}
			if !slices.Equal(before, kept) {
				t.Fatalf("%+v: rekeyTokens changed its input to %q", r, before)
			}
		}
	}
}
