package ldapwire

import "fmt"

// LDAP protocolOp tags (RFC 4511 section 4.2 onwards), as the single
// identifier octet they have on the wire: class APPLICATION, constructed or
// primitive, tag number.
const (
	TagBindRequest      = 0x60
	TagBindResponse     = 0x61
	TagUnbindRequest    = 0x42
	TagSearchRequest    = 0x63
	TagSearchEntry      = 0x64
	TagSearchDone       = 0x65
	TagSearchReference  = 0x73
	TagModifyRequest    = 0x66
	TagModifyResponse   = 0x67
	TagAddRequest       = 0x68
	TagAddResponse      = 0x69
	TagDelRequest       = 0x4a
	TagDelResponse      = 0x6b
	TagModDNRequest     = 0x6c
	TagModDNResponse    = 0x6d
	TagCompareRequest   = 0x6e
	TagCompareResponse  = 0x6f
	TagAbandonRequest   = 0x50
	TagExtendedRequest  = 0x77
	TagExtendedResponse = 0x78
	TagIntermediate     = 0x79
)

// Universal and context tags of the elements inside messages.
const (
	TagBoolean     = 0x01
	TagInteger     = 0x02
	TagOctetString = 0x04
	TagEnumerated  = 0x0a
	TagSequence    = 0x30
	TagSet         = 0x31
	// TagControls is the [0] Controls element of an LDAPMessage.
	TagControls = 0xa0
)

// Extended operation OIDs the project recognises.
const (
	OIDStartTLS              = "1.3.6.1.4.1.1466.20037"
	OIDPasswordModify        = "1.3.6.1.4.1.4203.1.11.1"
	OIDWhoAmI                = "1.3.6.1.4.1.4203.1.11.3"
	OIDNoticeOfDisconnection = "1.3.6.1.4.1.1466.20036"
	OIDCancel                = "1.3.6.1.1.8" // RFC 3909
)

// ResponseTag gives the response protocolOp that ends a request, or 0 for
// requests that get no response (unbind, abandon).
func ResponseTag(requestTag byte) byte {
	switch requestTag {
	case TagBindRequest:
		return TagBindResponse
	case TagSearchRequest:
		return TagSearchDone
	case TagModifyRequest:
		return TagModifyResponse
	case TagAddRequest:
		return TagAddResponse
	case TagDelRequest:
		return TagDelResponse
	case TagModDNRequest:
		return TagModDNResponse
	case TagCompareRequest:
		return TagCompareResponse
	case TagExtendedRequest:
		return TagExtendedResponse
	}
	return 0
}

// OpName names a request protocolOp for logs, metrics and diagnostics.
func OpName(tag byte) string {
	switch tag {
	case TagBindRequest:
		return "bind"
	case TagUnbindRequest:
		return "unbind"
	case TagSearchRequest:
		return "search"
	case TagModifyRequest:
		return "modify"
	case TagAddRequest:
		return "add"
	case TagDelRequest:
		return "delete"
	case TagModDNRequest:
		return "modifyDN"
	case TagCompareRequest:
		return "compare"
	case TagAbandonRequest:
		return "abandon"
	case TagExtendedRequest:
		return "extended"
	}
	return fmt.Sprintf("op 0x%02x", tag)
}

// IsRequest reports whether a client may send tag as its protocolOp.
func IsRequest(tag byte) bool {
	switch tag {
	case TagBindRequest, TagUnbindRequest, TagSearchRequest, TagModifyRequest,
		TagAddRequest, TagDelRequest, TagModDNRequest, TagCompareRequest,
		TagAbandonRequest, TagExtendedRequest:
		return true
	}
	return false
}

// IsFinal reports whether a response protocolOp ends its operation.
// Search entries, references and intermediate responses do not.
func IsFinal(tag byte) bool {
	switch tag {
	case TagSearchEntry, TagSearchReference, TagIntermediate:
		return false
	}
	return true
}
