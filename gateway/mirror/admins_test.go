package mirror

import (
	"context"
	"testing"
)

// The admin list matches a DN however it is spelt; an anonymous session is
// never an admin; an admin group that cannot be read is an error, not a no.
func TestAdminsByList(t *testing.T) {
	ctx := context.Background()
	admins := NewAdmins([]string{"cn=admin,dc=example,dc=com"}, "", nil, 0)
	for _, tt := range []struct {
		dn   string
		want bool
	}{
		{"cn=admin,dc=example,dc=com", true},
		{"CN=Admin, DC=example, DC=com", true},
		{"cn=admin,dc=example,dc=org", false},
		{"uid=alice,ou=people,dc=example,dc=com", false},
		{"", false},
	} {
		if got, err := admins.IsAdmin(ctx, tt.dn); err != nil || got != tt.want {
			t.Errorf("IsAdmin(%q) = %v, %v; want %v", tt.dn, got, err, tt.want)
		}
	}
	var none *Admins
	if got, err := none.IsAdmin(ctx, "cn=admin,dc=example,dc=com"); got || err != nil {
		t.Errorf("a nil Admins: %v, %v; want no admin", got, err)
	}
	withGroup := NewAdmins(nil, "cn=admins,ou=groups,dc=example,dc=com", nil, 0)
	if got, err := withGroup.IsAdmin(ctx, "uid=carol,ou=people,dc=example,dc=com"); got || err == nil {
		t.Errorf("a group with no directory to read it from: %v, %v; want an error", got, err)
	}
}
