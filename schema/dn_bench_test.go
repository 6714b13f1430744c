package schema

import (
	"fmt"
	"testing"
)

// The write path compares and places DNs several times per write: these
// measure one call each, with the allocations it makes.
func BenchmarkDN(b *testing.B) {
	const (
		dn    = "uid=user01234,ou=people,dc=example,dc=com"
		other = "UID=User01234, OU=People, DC=Example, DC=Com"
	)
	mp, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=people,dc=example,dc=com"}, GroupBase: DNList{"ou=groups,dc=example,dc=com"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("CanonicalDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = CanonicalDN(dn)
		}
	})
	b.Run("ExactDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = ExactDN(dn)
		}
	})
	b.Run("EqualDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = EqualDN(dn, other)
		}
	})
	b.Run("UnderAccountBase", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = mp.UnderAccountBase(dn)
		}
	})
	b.Run("Classify", func(b *testing.B) {
		b.ReportAllocs()
		classes := []string{"top", "inetOrgPerson"}
		for b.Loop() {
			_ = mp.Classify(dn, classes)
		}
	})
}

// BenchmarkMappingDN: the same calls through a Mapping, whose DN cache
// holds the DNs asked about lately (the write path asks about a write's
// target several times, and about the writer and the service identity on
// every write).
func BenchmarkMappingDN(b *testing.B) {
	const (
		dn    = "uid=user01234,ou=people,dc=example,dc=com"
		other = "UID=User01234, OU=People, DC=Example, DC=Com"
	)
	mp, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=people,dc=example,dc=com"}, GroupBase: DNList{"ou=groups,dc=example,dc=com"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("CanonicalDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = mp.CanonicalDN(dn)
		}
	})
	b.Run("ExactDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = mp.ExactDN(dn)
		}
	})
	b.Run("EqualDN", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = mp.EqualDN(dn, other)
		}
	})
	b.Run("Classify", func(b *testing.B) {
		b.ReportAllocs()
		classes := []string{"top", "inetOrgPerson"}
		for b.Loop() {
			_ = mp.Classify(dn, classes)
		}
	})
	// Each DN once: every call a miss, the cache turning over.
	b.Run("CanonicalDNMiss", func(b *testing.B) {
		b.ReportAllocs()
		dns := make([]string, 3*dnCacheSize)
		for i := range dns {
			dns[i] = fmt.Sprintf("uid=user%05d,ou=people,dc=example,dc=com", i)
		}
		i := 0
		for b.Loop() {
			_ = mp.CanonicalDN(dns[i%len(dns)])
			i++
		}
	})
}
