package schema

import (
	"encoding/hex"
	"fmt"
)

// FormatGUID renders a binary objectGUID as the canonical GUID string,
// lowercase without braces ("6b29fc40-ca47-1067-b31d-00dd010662da"), the
// form entryUUID takes too. AD stores a GUID in its packet representation
// (MS-DTYP 2.3.4.2): Data1, Data2 and Data3 little-endian, Data4 as is, so
// the first three groups are byte-reversed relative to the stored octets.
func FormatGUID(b []byte) (string, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("objectGUID is %d bytes, want 16", len(b))
	}
	ordered := []byte{
		b[3], b[2], b[1], b[0],
		b[5], b[4],
		b[7], b[6],
		b[8], b[9],
		b[10], b[11], b[12], b[13], b[14], b[15],
	}
	h := hex.EncodeToString(ordered)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32], nil
}

// ParseGUID is the inverse of FormatGUID: it turns the canonical GUID
// string (with or without braces, any case) back into the 16 octets AD
// stores, for matching objectGUID in a search filter.
func ParseGUID(s string) ([]byte, error) {
	t := s
	if len(t) == 38 && t[0] == '{' && t[37] == '}' {
		t = t[1:37]
	}
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return nil, fmt.Errorf("%q is not a GUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	}
	ordered, err := hex.DecodeString(t[0:8] + t[9:13] + t[14:18] + t[19:23] + t[24:36])
	if err != nil {
		return nil, fmt.Errorf("%q is not a GUID: %w", s, err)
	}
	o := ordered
	return []byte{
		o[3], o[2], o[1], o[0],
		o[5], o[4],
		o[7], o[6],
		o[8], o[9],
		o[10], o[11], o[12], o[13], o[14], o[15],
	}, nil
}
