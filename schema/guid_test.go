package schema

import (
	"bytes"
	"testing"
)

// ParseGUID undoes FormatGUID, so a journal's textual key finds its entry
// by objectGUID again; braces and upper case (as Windows tools print
// GUIDs) are accepted, anything else is refused.
func TestParseGUID(t *testing.T) {
	stored := []byte{0x40, 0xfc, 0x29, 0x6b, 0x47, 0xca, 0x67, 0x10, 0xb3, 0x1d, 0x00, 0xdd, 0x01, 0x06, 0x62, 0xda}
	for _, in := range []string{
		"6b29fc40-ca47-1067-b31d-00dd010662da",
		"{6B29FC40-CA47-1067-B31D-00DD010662DA}",
	} {
		got, err := ParseGUID(in)
		if err != nil || !bytes.Equal(got, stored) {
			t.Errorf("ParseGUID(%q) = % x, %v; want % x", in, got, err, stored)
		}
	}
	for i := range 256 {
		b := bytes.Repeat([]byte{byte(i)}, 16)
		b[0], b[15] = byte(255-i), byte(i*7)
		s, err := FormatGUID(b)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseGUID(s)
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("ParseGUID(FormatGUID(% x)) = % x, %v", b, back, err)
		}
	}
	for _, bad := range []string{"", "6b29fc40ca471067b31d00dd010662da", "6b29fc40-ca47-1067-b31d-00dd010662dz",
		"{6b29fc40-ca47-1067-b31d-00dd010662da", "6b29fc40-ca47-1067-b31d-00dd010662da0"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) accepted it", bad)
		}
	}
}
