package subtree

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// maxFrame bounds one message; the subtree's requests are small.
const maxFrame = 1 << 20

// shim sits between a gateway session and gldap: it reads the session's
// requests whole, passes searches to gldap and answers what gldap would
// answer by dropping the connection.
type shim struct {
	srv  *Server
	up   net.Conn // to gldap
	down net.Conn // the gateway's pipe

	wmu  sync.Mutex // whole messages to down
	once sync.Once
}

func newShim(srv *Server, up, down net.Conn) *shim {
	return &shim{srv: srv, up: up, down: down}
}

func (sh *shim) close() {
	sh.once.Do(func() {
		sh.up.Close()
		sh.down.Close()
		sh.srv.dropShim(sh)
	})
}

// writeDown sends one whole message to the gateway.
func (sh *shim) writeDown(raw []byte) error {
	sh.wmu.Lock()
	defer sh.wmu.Unlock()
	_, err := sh.down.Write(raw)
	return err
}

// responses copies gldap's answers to the gateway, message by message so
// that the shim's own answers never land inside one.
func (sh *shim) responses() {
	defer sh.close()
	r := ldapwire.NewReader(sh.up, 64<<20)
	var batch []byte
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		// gldap flushes every entry; what has already arrived goes on in
		// one write, since each write to the pipe is a hand-over.
		batch = append(batch[:0], m.Raw...)
		for r.Buffered() > 0 && len(batch) < 64<<10 {
			if m, err = r.Next(); err != nil {
				break
			}
			batch = append(batch, m.Raw...)
		}
		if sh.writeDown(batch) != nil || err != nil {
			return
		}
	}
}

// requests reads the gateway's requests and acts on each.
func (sh *shim) requests() {
	defer sh.close()
	r := ldapwire.NewReader(sh.down, maxFrame)
	for {
		m, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				sh.srv.log.Debug("subtree connection ended", "err", err)
			}
			return
		}
		if !sh.handle(m) {
			return
		}
	}
}

// handle acts on one request and reports whether the connection goes on.
func (sh *shim) handle(m ldapwire.Message) bool {
	id := m.ID
	var op *ber.Packet
	if m.Op == ldapwire.TagSearchRequest || m.Op == ldapwire.TagCompareRequest {
		p, err := ber.DecodePacketErr(m.Raw)
		if err != nil || len(p.Children) < 2 {
			return false
		}
		op = p.Children[1]
	}
	switch m.Op {
	case ldapwire.TagSearchRequest:
		if len(op.Children) < 8 {
			return sh.answer(id, ldapwire.TagSearchDone, ldap.LDAPResultProtocolError, "", "ldapgate: malformed search request")
		}
		// gldap rebuilds the filter as text and drops the connection when
		// it cannot (extensible matches with :dn:, for one).
		if _, err := ldap.DecompileFilter(op.Children[6]); err != nil {
			return sh.answer(id, ldapwire.TagSearchDone, ldap.LDAPResultUnwillingToPerform, "",
				"ldapgate: this filter is not supported in the gateway's subtree")
		}
		_, err := sh.up.Write(m.Raw)
		return err == nil
	case ldapwire.TagCompareRequest:
		code, matched, msg := sh.compare(op)
		return sh.answer(id, ldapwire.TagCompareResponse, code, matched, msg)
	case ldapwire.TagAbandonRequest:
		// Searches here end at once; there is nothing to abandon.
		return true
	case ldapwire.TagUnbindRequest:
		return false
	case ldapwire.TagBindRequest:
		// The gateway authenticates its clients; a bind here is not theirs.
		return sh.answer(id, ldapwire.TagBindResponse, ldap.LDAPResultUnwillingToPerform, "", "ldapgate: bind is not available here")
	case ldapwire.TagModifyRequest, ldapwire.TagAddRequest, ldapwire.TagDelRequest, ldapwire.TagModDNRequest, ldapwire.TagExtendedRequest:
		return sh.answer(id, ldapwire.ResponseTag(m.Op), ldap.LDAPResultUnwillingToPerform, "", "ldapgate: the gateway's own subtree is read-only")
	}
	// Requests that have no response: nothing to say.
	return true
}

// compare answers a compare request from the subtree's entries.
func (sh *shim) compare(op *ber.Packet) (code int, matched, msg string) {
	if len(op.Children) < 2 || len(op.Children[1].Children) < 2 {
		return ldap.LDAPResultProtocolError, "", "ldapgate: malformed compare request"
	}
	dn := op.Children[0].Data.String()
	attr := op.Children[1].Children[0].Data.String()
	value := op.Children[1].Children[1].Data.String()
	e, err := sh.srv.lookup(dn)
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

// answer writes an LDAPResult of the shim's own.
func (sh *shim) answer(id int64, tag byte, code int, matched, msg string) bool {
	return sh.writeDown(ldapwire.Response(id, tag, ldapwire.Result{Code: code, MatchedDN: matched, Diagnostic: msg})) == nil
}
