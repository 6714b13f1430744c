package ldapwire

// The encoders of the messages the project writes itself: its own answers,
// the Notice of Disconnection, and the few requests it sends to a
// directory (bind, search, extended). Each appends to b and returns the
// extended slice, so that a caller can reuse one buffer.

// AppendMessage appends an LDAPMessage with message ID id holding op, an
// encoded protocolOp.
func AppendMessage(b []byte, id int64, op []byte) []byte {
	var idBuf [10]byte
	idEnc := AppendInt(idBuf[:0], TagInteger, id)
	b = append(b, TagSequence)
	b = AppendLength(b, len(idEnc)+len(op))
	b = append(b, idEnc...)
	return append(b, op...)
}

// AppendResult appends a response protocolOp of tag respTag carrying r's
// LDAPResult, and for an extended response r's responseName and value.
func AppendResult(b []byte, respTag byte, r Result) []byte {
	var c []byte
	c = AppendInt(c, TagEnumerated, int64(r.Code))
	c = AppendTLV(c, TagOctetString, []byte(r.MatchedDN))
	c = AppendTLV(c, TagOctetString, []byte(r.Diagnostic))
	if len(r.Referrals) > 0 {
		var refs []byte
		for _, uri := range r.Referrals {
			refs = AppendTLV(refs, TagOctetString, []byte(uri))
		}
		c = AppendTLV(c, tagReferral, refs)
	}
	if respTag == TagExtendedResponse {
		if r.ResponseName != "" {
			c = AppendTLV(c, tagResponseName, []byte(r.ResponseName))
		}
		if r.HasValue {
			c = AppendTLV(c, tagResponseValue, r.ResponseValue)
		}
	}
	return AppendTLV(b, respTag, c)
}

// Response is a whole LDAPMessage answering message id with r.
func Response(id int64, respTag byte, r Result) []byte {
	return AppendMessage(nil, id, AppendResult(nil, respTag, r))
}

// Notice is a Notice of Disconnection (RFC 4511 section 4.4.1): an
// unsolicited extended response with message ID 0.
func Notice(code int, diagnostic string) []byte {
	return Response(0, TagExtendedResponse, Result{Code: code, Diagnostic: diagnostic, ResponseName: OIDNoticeOfDisconnection})
}

// AppendBindRequest appends a version 3 simple BindRequest protocolOp.
func AppendBindRequest(b []byte, dn string, password []byte) []byte {
	var c []byte
	c = AppendInt(c, TagInteger, 3)
	c = AppendTLV(c, TagOctetString, []byte(dn))
	c = AppendTLV(c, tagSimpleAuth, password)
	return AppendTLV(b, TagBindRequest, c)
}

// AppendExtendedRequest appends an ExtendedRequest protocolOp; a nil value
// is left out.
func AppendExtendedRequest(b []byte, name string, value []byte) []byte {
	c := AppendTLV(nil, tagRequestName, []byte(name))
	if value != nil {
		c = AppendTLV(c, tagRequestValue, value)
	}
	return AppendTLV(b, TagExtendedRequest, c)
}

// Search scopes and alias dereferencing (RFC 4511 section 4.5.1).
const (
	ScopeBase       = 0
	ScopeOneLevel   = 1
	ScopeSubtree    = 2
	DerefNever      = 0
	DerefAlways     = 3
	noAttributesOID = "1.1"
)

// SearchRequest is the content of a SearchRequest, its filter already
// encoded (FilterEqual, FilterPresent, or go-ldap's CompileFilter).
type SearchRequest struct {
	Base         string
	Scope        int
	DerefAliases int
	SizeLimit    int
	TimeLimit    int
	TypesOnly    bool
	Filter       []byte
	Attributes   []string
}

// AppendSearchRequest appends a SearchRequest protocolOp.
func AppendSearchRequest(b []byte, s SearchRequest) []byte {
	var c []byte
	c = AppendTLV(c, TagOctetString, []byte(s.Base))
	c = AppendInt(c, TagEnumerated, int64(s.Scope))
	c = AppendInt(c, TagEnumerated, int64(s.DerefAliases))
	c = AppendInt(c, TagInteger, int64(s.SizeLimit))
	c = AppendInt(c, TagInteger, int64(s.TimeLimit))
	typesOnly := byte(0)
	if s.TypesOnly {
		typesOnly = 0xff
	}
	c = AppendTLV(c, TagBoolean, []byte{typesOnly})
	c = append(c, s.Filter...)
	var attrs []byte
	for _, a := range s.Attributes {
		attrs = AppendTLV(attrs, TagOctetString, []byte(a))
	}
	c = AppendTLV(c, TagSequence, attrs)
	return AppendTLV(b, TagSearchRequest, c)
}

// FilterEqual encodes the filter (attr=value).
func FilterEqual(attr, value string) []byte {
	f := AppendTLV(nil, TagOctetString, []byte(attr))
	f = AppendTLV(f, TagOctetString, []byte(value))
	return AppendTLV(nil, 0xa3, f) // [3] equalityMatch
}

// FilterPresent encodes the filter (attr=*).
func FilterPresent(attr string) []byte {
	return AppendTLV(nil, 0x87, []byte(attr)) // [7] present
}

// RootDSESearch is a base search of the root DSE asking for no attributes:
// the cheapest question that proves a server speaks LDAP.
func RootDSESearch(id int64) []byte {
	return AppendMessage(nil, id, AppendSearchRequest(nil, SearchRequest{
		Filter: FilterPresent("objectClass"), Attributes: []string{noAttributesOID},
	}))
}
