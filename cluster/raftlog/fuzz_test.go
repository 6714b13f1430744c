package raftlog

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// FuzzRecordDecode feeds the record decoder, the torn-tail search and
// rule and the stable file's parser
// arbitrary bytes: none may panic, and a record that decodes encodes
// back to the same bytes (nothing in a checked record is ignored).
func FuzzRecordDecode(f *testing.F) {
	for _, l := range []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("hello"), AppendedAt: time.Unix(1_700_000_000, 5).UTC()},
		{Index: 1 << 40, Term: 9, Type: raft.LogConfiguration, Extensions: []byte{1, 2, 3}},
		{Index: 7},
	} {
		f.Add(appendRecord(nil, l, 0))
		f.Add(appendRecord(nil, l, 3)[:20])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeRecord(b, &l); err == nil {
			_, batch := recordIndex(b)
			if again := appendRecord(nil, &l, batch); !bytes.Equal(again, b) {
				t.Fatalf("decoded %+v re-encodes as %x, not %x", l, again, b)
			}
		}
		parseStable(append([]byte(stableMagic), b...), map[string][]byte{})
		laterBatch(b, 0)
		tornLogWrite(b, 0, 0)
		if len(b) > 8 {
			laterBatch(b[8:], uint64(b[0]))
			tornLogWrite(b[8:], int64(b[1])<<8, uint64(b[0]))
		}
	})
}
