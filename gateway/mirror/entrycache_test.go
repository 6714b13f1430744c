package mirror

import (
	"slices"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
)

func TestEntryCache(t *testing.T) {
	t0 := time.Unix(1000, 0)
	entry := &schema.Entry{DN: "uid=a,ou=people,dc=example,dc=com"}
	const dn = "uid=a,ou=people,dc=example,dc=com"

	t.Run("a stored entry is reused until it expires", func(t *testing.T) {
		c := newEntryCache(10*time.Second, 10)
		_, gen := c.get(dn, t0)
		c.put(dn, entry, gen, t0)
		if got, _ := c.get(dn, t0.Add(9*time.Second)); got != entry {
			t.Fatalf("fresh entry: got %v", got)
		}
		if got, _ := c.get(dn, t0.Add(10*time.Second)); got != nil {
			t.Fatalf("expired entry still served: %v", got)
		}
	})
	t.Run("a read begun before a forget is not stored", func(t *testing.T) {
		c := newEntryCache(10*time.Second, 10)
		_, gen := c.get(dn, t0)
		c.forget("uid=other,dc=example,dc=com") // any write that changes identity
		c.put(dn, entry, gen, t0)
		if got, _ := c.get(dn, t0); got != nil {
			t.Fatalf("read racing a forget was stored")
		}
	})
	t.Run("forget and forgetAll drop entries", func(t *testing.T) {
		c := newEntryCache(10*time.Second, 10)
		_, gen := c.get(dn, t0)
		c.put(dn, entry, gen, t0)
		c.put("b", entry, gen, t0)
		c.forget(dn, "")
		if got, _ := c.get(dn, t0); got != nil {
			t.Fatal("forgotten entry served")
		}
		_, gen = c.get("b", t0)
		c.put("b", entry, gen, t0)
		c.forgetAll()
		if got, _ := c.get("b", t0); got != nil {
			t.Fatal("entry served after forgetAll")
		}
	})
	t.Run("a held DN is not stored until its hold ends", func(t *testing.T) {
		c := newEntryCache(10*time.Second, 10)
		_, gen := c.get(dn, t0)
		c.put(dn, entry, gen, t0)
		c.hold(t0, dn)
		if got, _ := c.get(dn, t0); got != nil {
			t.Fatal("held entry served")
		}
		_, gen = c.get(dn, t0.Add(9*time.Second))
		c.put(dn, entry, gen, t0.Add(9*time.Second))
		if got, _ := c.get(dn, t0.Add(9*time.Second)); got != nil {
			t.Fatal("entry stored while held")
		}
		_, gen = c.get(dn, t0.Add(10*time.Second))
		c.put(dn, entry, gen, t0.Add(10*time.Second))
		if got, _ := c.get(dn, t0.Add(10*time.Second)); got != entry {
			t.Fatal("entry not stored once the hold ended")
		}
	})
	t.Run("the cache stays within its limit", func(t *testing.T) {
		c := newEntryCache(10*time.Second, 3)
		for i, name := range []string{"a", "b", "c", "d", "e"} {
			_, gen := c.get(name, t0)
			c.put(name, entry, gen, t0.Add(time.Duration(i)*time.Second))
			if len(c.entries) > 3 {
				t.Fatalf("%d entries, limit 3", len(c.entries))
			}
		}
		if got, _ := c.get("e", t0.Add(5*time.Second)); got != entry {
			t.Fatal("the latest entry is not served")
		}
	})
	t.Run("a negative ttl disables it", func(t *testing.T) {
		c := newEntryCache(-1, 10)
		_, gen := c.get(dn, t0)
		c.put(dn, entry, gen, t0)
		if got, _ := c.get(dn, t0); got != nil {
			t.Fatal("disabled cache served an entry")
		}
	})
}

func TestIdentityChange(t *testing.T) {
	m := testMirror(t)
	const target = "uid=a,ou=people,dc=example,dc=com"
	tests := []struct {
		name   string
		req    *gateway.WriteRequest
		newDN  string
		forget []string
	}{
		{"phone", modify("telephoneNumber"), "", nil},
		{"phone and password", modify("telephoneNumber", "userPassword"), "", nil},
		{"object classes", modify("telephoneNumber", "objectclass"), "", []string{target}},
		{"name attribute", modify("UID"), "", []string{target}},
		{"mail by an alias", modify("rfc822Mailbox"), "", []string{target}},
		{"key attribute", modify("entryUUID"), "", []string{target}},
		{"delete", &gateway.WriteRequest{Op: gateway.OpDelete, DN: target}, "", []string{target, ""}},
		{"rename", &gateway.WriteRequest{Op: gateway.OpModifyDN, DN: target}, "uid=b,ou=people,dc=example,dc=com",
			[]string{target, "uid=b,ou=people,dc=example,dc=com"}},
		{"password modify", &gateway.WriteRequest{Op: gateway.OpPasswordModify, DN: target}, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := m.identityChange(tt.req, target, tt.newDN)
			if !slices.Equal(got, tt.forget) {
				t.Fatalf("identityChange = %q, want %q", got, tt.forget)
			}
		})
	}
}
