package mirror

import (
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// forgetUnder drops an entry and everything below it, and nothing else
// (not a sibling whose RDN ends like it).
func TestEntryCacheForgetUnder(t *testing.T) {
	c := newEntryCache(time.Minute, 100)
	now := time.Now()
	for _, dn := range []string{"ou=a,dc=x", "uid=dan,ou=a,dc=x", "uid=eve,ou=b,ou=a,dc=x", "ou=ba,dc=x", "uid=x\\2cou=a,ou=c,dc=x"} {
		_, gen := c.get(dn, now)
		c.put(dn, &schema.Entry{DN: dn}, gen, now)
	}
	c.forgetUnder("ou=a,dc=x")
	for dn, want := range map[string]bool{"ou=a,dc=x": false, "uid=dan,ou=a,dc=x": false, "uid=eve,ou=b,ou=a,dc=x": false,
		"ou=ba,dc=x": true, "uid=x\\2cou=a,ou=c,dc=x": true} {
		if e, _ := c.get(dn, now); (e != nil) != want {
			t.Errorf("%s cached: %v, want %v", dn, e != nil, want)
		}
	}
}
