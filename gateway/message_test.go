package gateway

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// searchRequest encodes a real search request with go-ldap's own encoder,
// so the reader is tested on what clients actually send.
func searchRequest(t testing.TB, id int64) []byte {
	t.Helper()
	filter, err := ldap.CompileFilter("(uid=alice)")
	if err != nil {
		t.Fatal(err)
	}
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "id"))
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 3, nil, "search")
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "dc=example,dc=com", ""))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 2, ""))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, ""))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, ""))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 0, ""))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, ""))
	op.AppendChild(filter)
	op.AppendChild(ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attrs"))
	msg.AppendChild(op)
	ctl := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "controls")
	ctl.AppendChild(ldap.NewControlPaging(100).Encode())
	msg.AppendChild(ctl)
	return msg.Bytes()
}

func TestReaderFramesPipelinedMessages(t *testing.T) {
	var stream bytes.Buffer
	for id := int64(1); id <= 50; id++ {
		stream.Write(searchRequest(t, id))
	}
	mr := newMessageReader(&stream, 1<<20)
	for id := int64(1); id <= 50; id++ {
		m, err := mr.next()
		if err != nil {
			t.Fatalf("message %d: %v", id, err)
		}
		if m.id != id || m.op != tagSearchRequest || m.controls == nil {
			t.Fatalf("message %d: got id %d op 0x%02x controls %v", id, m.id, m.op, m.controls != nil)
		}
		ctls, err := decodeControls(m.controls)
		if err != nil || len(ctls) != 1 || ctls[0].OID != ldap.ControlTypePaging {
			t.Fatalf("controls: %v %+v", err, ctls)
		}
	}
	if _, err := mr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
}

func TestReaderRejectsBadInput(t *testing.T) {
	good := searchRequest(t, 7)
	tests := []struct {
		name    string
		input   []byte
		limit   int
		wantErr func(error) bool
	}{
		{"wrong outer tag", append([]byte{0x31}, good[1:]...), 1 << 20, isProtocolError},
		{"indefinite length", []byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00}, 1 << 20, isProtocolError},
		{"length of 9 octets", []byte{0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 1 << 20, isProtocolError},
		{"over the size limit", good, len(good) - 3, func(err error) bool { return errors.Is(err, ErrMessageTooLarge) }},
		{"huge declared length", []byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff}, 16 << 20, func(err error) bool { return errors.Is(err, ErrMessageTooLarge) }},
		{"truncated body", good[:len(good)-5], 1 << 20, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"truncated header", good[:1], 1 << 20, func(err error) bool { return errors.Is(err, io.ErrUnexpectedEOF) }},
		{"message ID not an integer", []byte{0x30, 0x05, 0x04, 0x01, 0x01, 0x42, 0x00}, 1 << 20, isProtocolError},
		{"negative message ID", []byte{0x30, 0x05, 0x02, 0x01, 0xff, 0x42, 0x00}, 1 << 20, isProtocolError},
		{"message ID of 5 octets", []byte{0x30, 0x09, 0x02, 0x05, 1, 2, 3, 4, 5, 0x42, 0x00}, 1 << 20, isProtocolError},
		{"no protocolOp", []byte{0x30, 0x03, 0x02, 0x01, 0x01}, 1 << 20, isProtocolError},
		{"op length past the end", []byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x63, 0x7f}, 1 << 20, isProtocolError},
		{"trailing garbage after controls", append(append([]byte{0x30, 0x09}, 0x02, 0x01, 0x01, 0x42, 0x00, 0xa0, 0x00), 0x04, 0x00), 1 << 20, isProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mr := newMessageReader(bytes.NewReader(tt.input), tt.limit)
			_, err := mr.next()
			if err == nil || !tt.wantErr(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// FuzzMessageReader feeds arbitrary bytes to the reader and the decoders:
// they may reject the input but must never panic, loop, or hand back a
// message whose parts lie outside what was read.
func FuzzMessageReader(f *testing.F) {
	f.Add(searchRequest(f, 1))
	f.Add([]byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x42, 0x00})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x02, 0x4a, 0x07, 'c', 'n', '=', 'x', ',', 'o', 'k'})
	f.Add(encodeResponse(3, tagModifyResponse, 0, "", "ok", ""))
	f.Add(encodeNotice(2, "bye"))
	f.Add(encodeExtendedRequest(4, OIDPasswordModify))
	f.Fuzz(func(t *testing.T, data []byte) {
		mr := newMessageReader(bytes.NewReader(data), 1<<16)
		for i := 0; i < 64; i++ {
			m, err := mr.next()
			if err != nil {
				return
			}
			if !bytes.Contains(data, m.raw) || len(m.opContent) > len(m.raw) {
				t.Fatalf("message parts outside the input")
			}
			_, _ = decodeWrite(m)
			_, _ = decodeBind(m.opContent)
			_, _ = decodeResult(m, true)
			_, _, _, _ = decodeExtended(m.opContent)
			_, _ = decodeControls(m.controls)
		}
	})
}

func TestBindLimiter(t *testing.T) {
	l := newBindLimiter(3, time.Minute)
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if b, _ := l.blocked("10.0.0.1:5000", now); b {
			t.Fatalf("blocked after %d failures", i)
		}
		l.failed("10.0.0.1:5000", now)
	}
	if b, wait := l.blocked("10.0.0.1:6000", now.Add(10*time.Second)); !b || wait != 50*time.Second {
		t.Fatalf("after 3 failures: blocked=%v wait=%v, want blocked for 50s (any port of the same host)", b, wait)
	}
	if b, _ := l.blocked("10.0.0.2:5000", now); b {
		t.Fatal("another address is blocked too")
	}
	if b, _ := l.blocked("10.0.0.1:5000", now.Add(time.Minute)); b {
		t.Fatal("still blocked after the window")
	}
}
