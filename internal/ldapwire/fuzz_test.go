package ldapwire

import (
	"bytes"
	"testing"
)

// FuzzMessageReader feeds arbitrary bytes to the Reader: it may refuse
// them but must never panic or loop, every message it frames must lie
// within what was read, and Parse must read the same envelope from the
// message's bytes alone. `go test` runs the seeds; `make soak` fuzzes.
func FuzzMessageReader(f *testing.F) {
	f.Add(searchRequest(f, 1))
	f.Add(AppendMessage(nil, 2, AppendBindRequest(nil, "cn=admin,dc=example,dc=com", []byte("secret"))))
	f.Add(Response(3, TagModifyResponse, Result{Code: 0, Diagnostic: "ok"}))
	f.Add(Notice(2, "bye"))
	f.Add(AppendMessage(nil, 4, AppendExtendedRequest(nil, OIDCancel, AppendTLV(nil, TagSequence, AppendInt(nil, TagInteger, 2)))))
	f.Add([]byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x42, 0x00})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x42, 0x00, 0x00, 0x00})
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x02, 0x4a, 0x07, 'c', 'n', '=', 'x', ',', 'o', 'k'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReaderSize(bytes.NewReader(data), 16, 1<<16)
		for range 64 {
			m, err := r.Next()
			if err != nil {
				return
			}
			if !bytes.Contains(data, m.Raw) || len(m.OpContent) > len(m.Raw) || len(m.Controls) > len(m.Raw) {
				t.Fatalf("message parts outside the input")
			}
			p, err := Parse(m.Raw)
			if err != nil || p.ID != m.ID || p.Op != m.Op || !bytes.Equal(p.OpContent, m.OpContent) || !bytes.Equal(p.Controls, m.Controls) {
				t.Fatalf("Parse disagrees with the Reader: %+v %v, reader %+v", p, err, m)
			}
			_, _ = ResultCode(m.OpContent)
			_, _ = DecodeResult(m.OpContent)
			r.Release()
		}
	})
}
