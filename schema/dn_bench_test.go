package schema

import "testing"

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
