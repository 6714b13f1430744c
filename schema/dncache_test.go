package schema

import (
	"fmt"
	"sync"
	"testing"
)

// TestMappingDNMatchesPackage: the Mapping's cached DN functions answer
// as the package's, first asked (a miss) and asked again (a hit), for
// canonical, other and unsure spellings and non-DNs.
func TestMappingDNMatchesPackage(t *testing.T) {
	mp := openLDAPMapping(t)
	dns := []string{
		"uid=bob,ou=people,dc=example,dc=com", "UID=Bob, OU=People, DC=Example, DC=Com", "uid=bob,ou=People,dc=example,dc=com",
		`uid=\62ob,ou=people,dc=example,dc=com`, "cn=a+sn=b;dc=x", "cn=b+cn=a,dc=x", "<GUID=1234>", `cn=" a , b ",dc=x`,
		"uid=#04026869,dc=x", "", " ", "x-unknown=1,dc=x", "cn=\xff,dc=x", `cn="`, `cn=a\`, "cn=a+", ",", "=",
		"ou=people,dc=example,dc=com", "dc=example,dc=com", "cn=a  b  ,dc=x",
	}
	for round := range 2 {
		for _, a := range dns {
			if got, want := mp.CanonicalDN(a), CanonicalDN(a); got != want {
				t.Errorf("round %d: CanonicalDN(%q) = %q, package says %q", round, a, got, want)
			}
			got, gotErr := mp.ExactDN(a)
			want, wantErr := ExactDN(a)
			if got != want || (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
				t.Errorf("round %d: ExactDN(%q) = %q, %v; package says %q, %v", round, a, got, gotErr, want, wantErr)
			}
			for _, b := range dns {
				if got, want := mp.EqualDN(a, b), EqualDN(a, b); got != want {
					t.Errorf("round %d: EqualDN(%q, %q) = %v, package says %v", round, a, b, got, want)
				}
				if got, want := mp.UnderDN(a, b), UnderDN(a, b); got != want {
					t.Errorf("round %d: UnderDN(%q, %q) = %v, package says %v", round, a, b, got, want)
				}
			}
		}
	}
}

// TestMappingDNCacheBounded: however many DNs pass through, the cache
// holds at most two generations, and the DNs in use stay in it.
func TestMappingDNCacheBounded(t *testing.T) {
	mp := openLDAPMapping(t)
	const hot = "cn=service,dc=example,dc=com"
	for i := range 5 * dnCacheSize {
		dn := fmt.Sprintf("uid=user%05d,ou=people,dc=example,dc=com", i)
		if got := mp.CanonicalDN(dn); got != dn {
			t.Fatalf("CanonicalDN(%q) = %q", dn, got)
		}
		_ = mp.CanonicalDN(hot)
	}
	c := &mp.dns
	c.mu.Lock()
	n := len(c.cur) + len(c.prev)
	_, hotKept := c.cur[hot]
	c.mu.Unlock()
	if n > 2*dnCacheSize {
		t.Errorf("the cache holds %d parses, more than 2 × %d", n, dnCacheSize)
	}
	if !hotKept {
		t.Errorf("the DN asked about all along is not in the cache's current generation")
	}
	long := "cn=" + string(make([]byte, dnCacheMaxLen)) + ",dc=x"
	_ = mp.CanonicalDN(long)
	c.mu.Lock()
	_, cur := c.cur[long]
	_, prev := c.prev[long]
	c.mu.Unlock()
	if cur || prev {
		t.Errorf("a DN longer than %d bytes was kept", dnCacheMaxLen)
	}
}

// TestMappingDNCacheConcurrent: goroutines asking about overlapping DNs
// (under -race) get the package's answers.
func TestMappingDNCacheConcurrent(t *testing.T) {
	mp := openLDAPMapping(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				dn := fmt.Sprintf("UID=User%05d, ou=people,dc=example,dc=com", (i*7+g)%(dnCacheSize+500))
				want := CanonicalDN(dn)
				if got := mp.CanonicalDN(dn); got != want {
					t.Errorf("CanonicalDN(%q) = %q, want %q", dn, got, want)
					return
				}
				if !mp.EqualDN(dn, want) || !mp.UnderAccountBase(dn) {
					t.Errorf("%q: not equal to its canonical form, or not under the account base", dn)
					return
				}
			}
		}()
	}
	wg.Wait()
}
