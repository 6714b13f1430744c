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
