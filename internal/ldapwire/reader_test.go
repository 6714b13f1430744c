package ldapwire

import (
	"bytes"
	"errors"
	"io"
	"testing"

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
	mr := NewReader(&stream, 1<<20)
	for id := int64(1); id <= 50; id++ {
		m, err := mr.Next()
		if err != nil {
			t.Fatalf("message %d: %v", id, err)
		}
		if m.ID != id || m.Op != TagSearchRequest || m.Controls == nil {
			t.Fatalf("message %d: got id %d op 0x%02x controls %v", id, m.ID, m.Op, m.Controls != nil)
		}
		if !bytes.Contains(m.Controls, []byte(ldap.ControlTypePaging)) {
			t.Fatalf("message %d: controls %x lack the paging control", id, m.Controls)
		}
	}
	if _, err := mr.Next(); !errors.Is(err, io.EOF) {
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
			mr := NewReader(bytes.NewReader(tt.input), tt.limit)
			_, err := mr.Next()
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

// A message declared at the size limit whose bytes do not come must not
// reserve the limit: the buffer grows with what arrives.
func TestReaderGrowsWithArrivingBytes(t *testing.T) {
	const limit = 16 << 20
	stalled := []byte{0x30, 0x84, 0x01, 0x00, 0x00, 0x00, 0x02} // 16 MiB declared, one byte sent
	r := NewReader(bytes.NewReader(stalled), limit)
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Next: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := r.Retained(); got > 64<<10 {
		t.Fatalf("a stalled message of 16 MiB declared holds %d bytes", got)
	}

	// A large message that does arrive, in small pieces, is read whole.
	body := bytes.Repeat([]byte{'x'}, 3<<20)
	var msg []byte
	msg = AppendMessage(msg, 7, AppendTLV(nil, TagModifyRequest, AppendTLV(nil, TagOctetString, body)))
	r = NewReader(io.MultiReader(bytes.NewReader(msg[:100]), bytes.NewReader(msg[100:])), limit)
	m, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != 7 || !bytes.Equal(m.Raw, msg) {
		t.Fatalf("message read as id %d, %d bytes; want id 7, %d bytes", m.ID, len(m.Raw), len(msg))
	}
}

func TestReaderComplete(t *testing.T) {
	msg := searchRequest(t, 7)
	big := AppendMessage(nil, 8, AppendTLV(nil, TagModifyRequest, make([]byte, 300)))
	cases := []struct {
		name string
		data []byte
		want bool
	}{
		{"whole message", msg, true},
		{"all but the last byte", msg[:len(msg)-1], false},
		{"tag only", msg[:1], false},
		{"long form length cut", big[:3], false},
		{"long form, whole", big, true},
		{"not a sequence", []byte{0x04, 0x01}, true},
	}
	for _, tc := range cases {
		r := NewReader(bytes.NewReader(tc.data), 1<<20)
		_ = r.Wait()
		if got := r.Complete(); got != tc.want {
			t.Errorf("%s: Complete %v, want %v", tc.name, got, tc.want)
		}
	}
}
