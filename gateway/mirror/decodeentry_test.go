package mirror

import (
	"maps"
	"slices"
	"testing"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/schema"
)

// encodeEntry is a SearchResultEntry's content for e, attributes in the
// order given.
func encodeEntry(dn string, attrs [][2]any) []byte {
	var list []byte
	for _, a := range attrs {
		var vals []byte
		for _, v := range a[1].([]string) {
			vals = ldapwire.AppendTLV(vals, tagOctetString, []byte(v))
		}
		attr := ldapwire.AppendTLV(nil, tagOctetString, []byte(a[0].(string)))
		attr = ldapwire.AppendTLV(attr, tagSet, vals)
		list = ldapwire.AppendTLV(list, tagSequence, attr)
	}
	out := ldapwire.AppendTLV(nil, tagOctetString, []byte(dn))
	return ldapwire.AppendTLV(out, tagSequence, list)
}

// TestDecodeEntry: names, values (none, one, several, empty, binary) and
// the DN come back as sent; a value changed in one attribute is not seen
// in another; malformed entries are refused.
func TestDecodeEntry(t *testing.T) {
	content := encodeEntry("uid=a,ou=people,dc=example,dc=com", [][2]any{
		{"objectClass", []string{"top", "person", "inetOrgPerson"}},
		{"uid", []string{"a"}},
		{"jpegPhoto", []string{"\x00\xff\x10"}},
		{"description", []string{""}},
		{"seeAlso", []string{}},
		{"mail", []string{"a@example.com", "b@example.com"}},
	})
	e, err := decodeEntry(content)
	if err != nil {
		t.Fatal(err)
	}
	want := schema.Entry{DN: "uid=a,ou=people,dc=example,dc=com", Attrs: map[string][]string{
		"objectClass": {"top", "person", "inetOrgPerson"}, "uid": {"a"}, "jpegPhoto": {"\x00\xff\x10"},
		"description": {""}, "seeAlso": {}, "mail": {"a@example.com", "b@example.com"},
	}}
	if e.DN != want.DN || !maps.EqualFunc(e.Attrs, want.Attrs, slices.Equal) {
		t.Fatalf("decoded %+v, want %+v", e, want)
	}
	if e.Attrs["seeAlso"] == nil {
		t.Error("an attribute without values decodes as nil, not empty")
	}
	e.Attrs["uid"] = append(e.Attrs["uid"], "x")
	if e.Attrs["jpegPhoto"][0] != "\x00\xff\x10" {
		t.Error("appending to one attribute's values changed another's")
	}
	content[len(content)-1] = 'X' // the bytes decoded from may be reused
	if e.Attrs["mail"][1] != "b@example.com" {
		t.Error("a value shares the bytes it was decoded from")
	}
	for _, bad := range [][]byte{
		nil, {tagOctetString, 1, 'a'},
		ldapwire.AppendTLV(ldapwire.AppendTLV(nil, tagOctetString, []byte("cn=x")), tagSequence, []byte{tagSequence, 2, tagOctetString, 0}),
		ldapwire.AppendTLV(ldapwire.AppendTLV(nil, tagOctetString, []byte("cn=x")), tagSequence,
			ldapwire.AppendTLV(nil, tagSequence, append(ldapwire.AppendTLV(nil, tagOctetString, []byte("cn")), tagSet, 3, 0x02, 1, 0))),
	} {
		if _, err := decodeEntry(bad); err == nil {
			t.Errorf("decodeEntry(%x) accepted a malformed entry", bad)
		}
	}
}

func BenchmarkDecodeEntry(b *testing.B) {
	content := encodeEntry("uid=user00001,ou=people,dc=example,dc=com", [][2]any{
		{"objectClass", []string{"top", "person", "organizationalPerson", "inetOrgPerson"}},
		{"uid", []string{"user00001"}}, {"entryUUID", []string{"0b6b5d4e-8c8e-103f-8f0e-6d1c3c1b2a10"}},
		{"givenName", []string{"User"}}, {"sn", []string{"00001"}}, {"displayName", []string{"v123"}},
		{"mail", []string{"user00001@example.com"}}, {"telephoneNumber", []string{"+1 555 0001"}},
		{"userPassword", []string{"pw-user00001"}}, {"entryCSN", []string{"20261207181500.123456Z#000000#000#000000"}},
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEntry(content); err != nil {
			b.Fatal(err)
		}
	}
}
