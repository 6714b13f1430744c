package subtree

import (
	"errors"
	"net"
	"strings"
	"sync"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// maxFrame bounds one message of the token bind; the subtree's requests
// are small.
const maxFrame = 1 << 20

// Conn is a gateway session's connection to the subtree: the loopback
// connection to gldap, authenticated with a token, and Answer for the
// requests gldap would drop the connection over. The session asks Answer
// first and relays to gldap only what it leaves.
type Conn struct {
	net.Conn
	srv    *Server
	connID int // gldap's ID of this connection, which names its searches
	once   sync.Once
}

// Close closes the connection and forgets it.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.Conn.Close()
		c.srv.dropConn(c)
	})
	return err
}

// Answer answers a request itself when gldap cannot take it: a compare
// (from the subtree's entries), an abandon (the search it names stops),
// a bind or a write (refused: the gateway authenticates
// its clients, and the subtree is read-only), a malformed search or one
// whose filter gldap cannot decode. It returns handled false for a search
// gldap serves; reply is nil for a request that gets no response.
func (c *Conn) Answer(m ldapwire.Message) (reply []byte, handled bool) {
	switch m.Op {
	case ldapwire.TagSearchRequest:
		if code, msg := checkSearch(m); code != ldap.LDAPResultSuccess {
			return refusal(m, code, msg), true
		}
		return nil, false
	case ldapwire.TagCompareRequest:
		code, matched, msg := c.srv.compare(m)
		return ldapwire.Response(m.ID, ldapwire.TagCompareResponse, ldapwire.Result{Code: code, MatchedDN: matched, Diagnostic: msg}), true
	case ldapwire.TagBindRequest:
		return refusal(m, ldap.LDAPResultUnwillingToPerform, "ldapgate: bind is not available here"), true
	case ldapwire.TagModifyRequest, ldapwire.TagAddRequest, ldapwire.TagDelRequest, ldapwire.TagModDNRequest, ldapwire.TagExtendedRequest:
		return refusal(m, ldap.LDAPResultUnwillingToPerform, "ldapgate: the gateway's own subtree is read-only"), true
	case ldapwire.TagAbandonRequest:
		// gldap would drop the connection; the search it names stops
		// sending (searches of cn=changelog may walk a long journal).
		if target, err := ldapwire.ParseInt(m.OpContent); err == nil {
			c.srv.stopSearch(searchKey{conn: c.connID, msg: target})
		}
		return nil, true
	}
	// Unbind and anything else that has no response.
	return nil, true
}

// checkSearch reads a search request as gldap will, and returns the
// result to refuse it with when gldap could not take it: gldap drops the
// connection over any search it cannot decode (and its control decoding
// asserts types unchecked), which the session would see as the subtree
// connection lost. It returns success for a search gldap can serve.
func checkSearch(m ldapwire.Message) (code int, msg string) {
	p, err := ber.DecodePacketErr(m.Raw)
	if err != nil || len(p.Children) < 2 {
		return ldap.LDAPResultProtocolError, "ldapgate: malformed search request"
	}
	op := p.Children[1]
	if len(op.Children) < 8 {
		return ldap.LDAPResultProtocolError, "ldapgate: malformed search request"
	}
	fields := []struct {
		tag  ber.Tag
		name string
	}{
		{ber.TagOctetString, "baseObject"}, {ber.TagEnumerated, "scope"}, {ber.TagEnumerated, "derefAliases"},
		{ber.TagInteger, "sizeLimit"}, {ber.TagInteger, "timeLimit"}, {ber.TagBoolean, "typesOnly"},
	}
	for i, f := range fields {
		if !isUniversal(op.Children[i], ber.TypePrimitive, f.tag) || !decodedAs(op.Children[i], f.tag) {
			return ldap.LDAPResultProtocolError, "ldapgate: malformed search request: bad " + f.name
		}
	}
	// gldap rebuilds the filter as text and drops the connection when
	// it cannot (extensible matches with :dn:, for one).
	if _, err := ldap.DecompileFilter(op.Children[6]); err != nil {
		return ldap.LDAPResultUnwillingToPerform, "ldapgate: this filter is not supported in the gateway's subtree"
	}
	attrs := op.Children[7]
	if !isUniversal(attrs, ber.TypeConstructed, ber.TagSequence) {
		return ldap.LDAPResultProtocolError, "ldapgate: malformed search request: bad attributes"
	}
	for _, a := range attrs.Children {
		if !isUniversal(a, ber.TypePrimitive, ber.TagOctetString) {
			return ldap.LDAPResultProtocolError, "ldapgate: malformed search request: an attribute is not an OCTET STRING"
		}
	}
	if len(p.Children) > 2 {
		ctls := p.Children[2]
		if ctls.ClassType != ber.ClassContext || ctls.TagType != ber.TypeConstructed || ctls.Tag != 0 {
			return ldap.LDAPResultProtocolError, "ldapgate: malformed controls"
		}
		for _, c := range ctls.Children {
			if msg := checkControl(c); msg != "" {
				return ldap.LDAPResultProtocolError, "ldapgate: malformed control: " + msg
			}
		}
	}
	return ldap.LDAPResultSuccess, ""
}

// checkControl reads a Control (RFC 4511 section 4.1.11) as gldap's
// decodeControl will, and says what is wrong with it, or "".
func checkControl(c *ber.Packet) string {
	if !isUniversal(c, ber.TypeConstructed, ber.TagSequence) || len(c.Children) < 1 || len(c.Children) > 3 {
		return "not a SEQUENCE of controlType, criticality and controlValue"
	}
	if !isString(c.Children[0]) {
		return "controlType is not an OCTET STRING"
	}
	var value *ber.Packet
	switch len(c.Children) {
	case 2:
		// gldap tells criticality from the value by its type.
		if !isBoolean(c.Children[1]) {
			value = c.Children[1]
		}
	case 3:
		if !isBoolean(c.Children[1]) {
			return "criticality is not a BOOLEAN"
		}
		value = c.Children[2]
	}
	if value == nil {
		return ""
	}
	if !isString(value) {
		return "controlValue is not an OCTET STRING"
	}
	switch c.Children[0].Value.(string) {
	case ldap.ControlTypePaging:
		// realSearchControlValue ::= SEQUENCE { size INTEGER, cookie OCTET STRING }
		v, err := ber.DecodePacketErr(value.Data.Bytes())
		if err != nil || !isUniversal(v, ber.TypeConstructed, ber.TagSequence) || len(v.Children) < 2 ||
			!isUniversal(v.Children[0], ber.TypePrimitive, ber.TagInteger) || !decodedAs(v.Children[0], ber.TagInteger) ||
			!isString(v.Children[1]) {
			return "the paged results control's value is not a SEQUENCE of size and cookie"
		}
	case ldap.ControlTypeBeheraPasswordPolicy, ldap.ControlTypeVChuPasswordWarning:
		// Request controls without a value; gldap reads a response's.
		return "control " + c.Children[0].Value.(string) + " takes no value in a request"
	}
	return ""
}

func isUniversal(p *ber.Packet, typ ber.Type, tag ber.Tag) bool {
	return p.ClassType == ber.ClassUniversal && p.TagType == typ && p.Tag == tag
}

// decodedAs reports whether the BER decoder read p's value as its tag
// says (an INTEGER or ENUMERATED that fits an int64, a BOOLEAN), as gldap
// asserts.
func decodedAs(p *ber.Packet, tag ber.Tag) bool {
	switch tag {
	case ber.TagInteger, ber.TagEnumerated:
		_, ok := p.Value.(int64)
		return ok
	case ber.TagBoolean:
		_, ok := p.Value.(bool)
		return ok
	}
	return true
}

func isString(p *ber.Packet) bool {
	_, ok := p.Value.(string)
	return isUniversal(p, ber.TypePrimitive, ber.TagOctetString) && ok
}

func isBoolean(p *ber.Packet) bool {
	_, ok := p.Value.(bool)
	return isUniversal(p, ber.TypePrimitive, ber.TagBoolean) && ok
}

func refusal(m ldapwire.Message, code int, msg string) []byte {
	return ldapwire.Response(m.ID, ldapwire.ResponseTag(m.Op), ldapwire.Result{Code: code, Diagnostic: msg})
}

// decodeOp decodes a request's protocolOp as gldap and go-ldap see it.
func decodeOp(m ldapwire.Message) (*ber.Packet, error) {
	p, err := ber.DecodePacketErr(m.Raw)
	if err != nil {
		return nil, err
	}
	if len(p.Children) < 2 {
		return nil, errors.New("malformed request")
	}
	return p.Children[1], nil
}

// compare answers a compare request from the subtree's entries.
func (s *Server) compare(m ldapwire.Message) (code int, matched, msg string) {
	op, err := decodeOp(m)
	if err != nil || len(op.Children) < 2 || len(op.Children[1].Children) < 2 {
		return ldap.LDAPResultProtocolError, "", "ldapgate: malformed compare request"
	}
	dn := op.Children[0].Data.String()
	attr := op.Children[1].Children[0].Data.String()
	value := op.Children[1].Children[1].Data.String()
	e, err := s.lookup(dn)
	if err != nil {
		var se *searchError
		if errors.As(err, &se) {
			return se.code, se.matchedDN, se.msg
		}
		return ldap.LDAPResultOther, "", "ldapgate: " + err.Error()
	}
	values, ok := e.get(attr)
	if !ok {
		return ldap.LDAPResultNoSuchAttribute, "", ""
	}
	for _, v := range values {
		if c, ok := compareValues(v, value); ok && c == 0 || isDN(v, value) || strings.EqualFold(v, value) {
			return ldap.LDAPResultCompareTrue, "", ""
		}
	}
	return ldap.LDAPResultCompareFalse, "", ""
}
