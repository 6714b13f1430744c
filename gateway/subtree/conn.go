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
		op, err := decodeOp(m)
		if err != nil || len(op.Children) < 8 {
			return refusal(m, ldap.LDAPResultProtocolError, "ldapgate: malformed search request"), true
		}
		// gldap rebuilds the filter as text and drops the connection when
		// it cannot (extensible matches with :dn:, for one).
		if _, err := ldap.DecompileFilter(op.Children[6]); err != nil {
			return refusal(m, ldap.LDAPResultUnwillingToPerform, "ldapgate: this filter is not supported in the gateway's subtree"), true
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
		if compareValues(v, value) == 0 || isDN(v, value) || strings.EqualFold(v, value) {
			return ldap.LDAPResultCompareTrue, "", ""
		}
	}
	return ldap.LDAPResultCompareFalse, "", ""
}
