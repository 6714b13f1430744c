package schema

import "testing"

func TestNameInDN(t *testing.T) {
	m, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=people,dc=example,dc=com"}, GroupBase: DNList{"ou=groups,dc=example,dc=com"}})
	if err != nil {
		t.Fatal(err)
	}
	byMail, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=people,dc=example,dc=com"}, GroupBase: DNList{"ou=groups,dc=example,dc=com"}, NameAttribute: "mail", NameFromAddress: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		m    *Mapping
		dn   string
		kind Kind
		want string
		ok   bool
	}{
		{m, "uid=alice,ou=people,dc=example,dc=com", KindAccount, "alice", true},
		{m, "UID=Alice+cn=Alice L,ou=people,dc=example,dc=com", KindAccount, "Alice", true},
		{m, "0.9.2342.19200300.100.1.1=bob,ou=people,dc=example,dc=com", KindAccount, "bob", true},
		{m, "uid=#04036a6f65,ou=people,dc=example,dc=com", KindAccount, "joe", true},
		{m, "cn=Alice L,ou=people,dc=example,dc=com", KindAccount, "", false},
		{m, "cn=staff,ou=groups,dc=example,dc=com", KindGroup, "staff", true},
		{m, "ou=staff,ou=groups,dc=example,dc=com", KindGroup, "", false},
		{m, "uid=alice,ou=people,dc=example,dc=com", KindNone, "", false},
		{m, "uid alice,ou=people,dc=example,dc=com", KindAccount, "", false},
		{byMail, "mail=alice@example.com,ou=people,dc=example,dc=com", KindAccount, "", false},
	}
	for _, tt := range tests {
		got, ok := tt.m.NameInDN(tt.dn, tt.kind)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NameInDN(%q, %v) = %q, %v; want %q, %v", tt.dn, tt.kind, got, ok, tt.want, tt.ok)
		}
	}
}
