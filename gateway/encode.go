package gateway

import (
	ber "github.com/go-asn1-ber/asn1-ber"
)

// encodeResponse builds an LDAPMessage carrying an LDAPResult of the given
// response protocolOp. Extended responses may carry a responseName.
func encodeResponse(id int64, respTag byte, code int, matchedDN, diagnostic, responseName string) []byte {
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID"))
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(respTag&0x1f), nil, "protocolOp")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, matchedDN, "matchedDN"))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, diagnostic, "diagnosticMessage"))
	if respTag == tagExtendedResponse && responseName != "" {
		op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, responseName, "responseName"))
	}
	msg.AppendChild(op)
	return msg.Bytes()
}

// encodeNotice builds a Notice of Disconnection (RFC 4511 section 4.4.1): an
// unsolicited extended response with message ID 0.
func encodeNotice(code int, diagnostic string) []byte {
	return encodeResponse(0, tagExtendedResponse, code, "", diagnostic, OIDNoticeOfDisconnection)
}

// encodeExtendedRequest builds an ExtendedRequest with no value, for the
// gateway's own use of an upstream connection (StartTLS).
func encodeExtendedRequest(id int64, name string) []byte {
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID"))
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(tagExtendedRequest&0x1f), nil, "ExtendedRequest")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, name, "requestName"))
	msg.AppendChild(op)
	return msg.Bytes()
}
