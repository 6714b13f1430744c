// Bind state: which binds are relayed, and the identity a session has
// after its last bind.

package gateway

import (
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// saslWithoutSecurityLayer lists the SASL mechanisms that never negotiate a
// security layer, so their bytes can be relayed as they are. A mechanism
// that may wrap the connection afterwards (GSSAPI, DIGEST-MD5) or binds to
// the TLS channel or certificate the gateway terminates (EXTERNAL, *-PLUS)
// cannot work through a relay and is refused.
var saslWithoutSecurityLayer = map[string]bool{
	"PLAIN": true, "ANONYMOUS": true, "CRAM-MD5": true, "LOGIN": true,
	"SCRAM-SHA-1": true, "SCRAM-SHA-256": true, "SCRAM-SHA-512": true,
	"OAUTHBEARER": true,
}

func (s *session) bind(m ldapwire.Message) bool {
	b, err := decodeBind(m.OpContent)
	if err != nil {
		s.respond(m, ldap.LDAPResultProtocolError, "ldapgate: malformed bind request: "+err.Error())
		return true
	}
	s.mu.Lock()
	isTLS := s.tls
	s.mu.Unlock()
	anonymous := b.simple && len(b.password) == 0
	op := pendingOp{tag: m.Op, bindDN: b.name}
	if anonymous {
		// A name with an empty password is an unauthenticated bind (RFC
		// 4513 section 5.1.2): the name is not proved, so the session never
		// takes it as its identity, whatever the directory answers.
		op.bindDN = ""
	}
	if !b.simple {
		s.reusable = false // a SASL exchange may be left half done
		if !saslWithoutSecurityLayer[b.mechanism] {
			s.respond(m, ldap.LDAPResultAuthMethodNotSupported, fmt.Sprintf(
				"ldapgate: SASL mechanism %s is not relayed: it may negotiate a security layer or bind to the gateway's own TLS channel; use a simple bind or SASL PLAIN over TLS", b.mechanism))
			return true
		}
		op.saslMechanism = b.mechanism
	}
	if s.srv.cfg.ConfidentialityRequired && !isTLS && !anonymous {
		s.respond(m, ldap.LDAPResultConfidentialityRequired,
			"ldapgate: binding requires a TLS-protected connection; use StartTLS or ldaps://")
		return true
	}
	if !anonymous {
		ticket, ok, busy, wait := s.srv.binds.admitWait(s.ctx, s.remote)
		if busy {
			s.log().Warn("bind refused: too many binds from this address awaiting the directory's answer")
			s.respond(m, ldap.LDAPResultBusy,
				"ldapgate: too many binds from this address are awaiting the directory's answer; try again")
			return true
		}
		if !ok {
			s.log().Warn("bind refused: too many failed binds from this address")
			s.respond(m, ldap.LDAPResultUnwillingToPerform, fmt.Sprintf(
				"ldapgate: too many failed binds from this address; try again in %s", wait.Round(time.Second)))
			return true
		}
		op.bindTicket = ticket
	}
	// A bind makes the directory abandon what is outstanding (RFC 4511
	// section 4.2.1 lets it): the intercepted writes get their answers
	// first.
	s.flushRelayed()
	s.awaitWrites()
	return s.forward(m, op)
}

// noteBindLocked records the session's identity after a bind completes.
// A failed bind leaves the session anonymous (RFC 4511 section 4.2.1).
func (s *session) noteBindLocked(m ldapwire.Message, op pendingOp) {
	code, ok := ldapwire.ResultCode(m.OpContent)
	s.boundDN, s.saslMechanism = "", ""
	s.srv.binds.settle(op.bindTicket, ok && code == ldap.LDAPResultInvalidCredentials)
	if ok && code == ldap.LDAPResultSuccess {
		if op.saslMechanism != "" {
			s.saslMechanism = op.saslMechanism
		} else {
			s.boundDN = op.bindDN
		}
	}
}
