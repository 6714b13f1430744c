// Reading the client's messages and acting on each: relaying it, answering
// it from the gateway, or ending the session on a protocol error.

package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// readClient waits for the next client message. A client that stays silent
// for the idle timeout is disconnected, unless it still has operations
// outstanding (a persistent search is not idle). The read deadline moves
// only when less than half of it is left, so most messages change no timer.
//
// A client that has begun a message must finish it within the stall
// timeout (or the idle timeout, if sooner): the deadline moves to it only
// when the message is not wholly buffered yet.
func (s *session) readClient() (ldapwire.Message, error) {
	idle, stall := s.srv.cfg.IdleTimeout, s.srv.cfg.StallTimeout
	if idle <= 0 {
		if stall <= 0 {
			return s.cr.Next()
		}
		if err := s.cr.Wait(); err != nil {
			return ldapwire.Message{}, err
		}
		if s.cr.Complete() {
			return s.cr.Next()
		}
		_ = s.client.SetReadDeadline(time.Now().Add(stall))
		m, err := s.cr.Next()
		_ = s.client.SetReadDeadline(time.Time{})
		return m, err
	}
	if now := time.Now(); s.readDeadline.Sub(now) < idle/2 {
		s.readDeadline = now.Add(idle)
		_ = s.client.SetReadDeadline(s.readDeadline)
	}
	for s.cr.Buffered() == 0 {
		err := s.cr.Wait()
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return ldapwire.Message{}, err
		}
		s.mu.Lock()
		busy := s.ops.len() > 0
		s.mu.Unlock()
		next := s.lastRead.Add(idle)
		if busy {
			next = time.Now().Add(idle)
		} else if !time.Now().Before(next) {
			return ldapwire.Message{}, errIdle
		}
		s.readDeadline = next
		_ = s.client.SetReadDeadline(next)
	}
	if stall > 0 && !s.cr.Complete() {
		// Whichever comes first: the idle timeout bounds a stall too.
		if d := time.Now().Add(stall); d.Before(s.readDeadline) {
			s.readDeadline = d
			_ = s.client.SetReadDeadline(d)
		}
	}
	m, err := s.cr.Next()
	s.lastRead = time.Now()
	return m, err
}

var errIdle = errors.New("idle timeout")

func (s *session) clientReadFailed(err error) {
	var pe *ldapwire.ProtocolError
	switch {
	case errors.Is(err, io.EOF):
	case errors.Is(err, errIdle):
		s.log().Debug("closing idle session")
		s.notice(ldap.LDAPResultUnavailable, "ldapgate: session idle for too long")
	case errors.As(err, &pe):
		s.log().Info("protocol error from client", "reason", pe.Reason)
		s.notice(ldap.LDAPResultProtocolError, "ldapgate: "+pe.Reason)
	case errors.Is(err, ldapwire.ErrMessageTooLarge):
		s.log().Info("client message too large", "err", err)
		s.notice(ldap.LDAPResultProtocolError, "ldapgate: "+err.Error())
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.log().Info("client stalled in the middle of a message")
		s.notice(ldap.LDAPResultProtocolError, "ldapgate: incomplete message")
	default:
		s.log().Debug("client connection ended", "err", err)
	}
}

// handle acts on one client message and reports whether the session goes on.
func (s *session) handle(m ldapwire.Message) bool {
	if !ldapwire.IsRequest(m.Op) {
		s.notice(ldap.LDAPResultProtocolError, fmt.Sprintf("ldapgate: 0x%02x is not an LDAP request", m.Op))
		return false
	}
	if m.ID == 0 {
		s.notice(ldap.LDAPResultProtocolError, "ldapgate: message ID 0 is reserved for unsolicited notifications")
		return false
	}
	s.srv.stats.requests.Add(1)
	if m.Controls != nil {
		s.reusable = false
	}
	if m.Op != ldapwire.TagAbandonRequest && m.Op != ldapwire.TagUnbindRequest && !s.awaitBind() {
		return false
	}
	switch m.Op {
	case ldapwire.TagUnbindRequest:
		if s.park() {
			return false
		}
		// The directory abandons what is outstanding on an unbind: the
		// intercepted writes get their answers first.
		s.flushRelayed()
		s.awaitWrites()
		s.mu.Lock()
		up := s.up
		s.closing = true
		s.mu.Unlock()
		if up != nil {
			_, _ = up.w.Write(m.Raw)
			_ = up.w.Flush()
		}
		return false
	case ldapwire.TagAbandonRequest:
		return s.abandon(m)
	case ldapwire.TagBindRequest:
		return s.bind(m)
	case ldapwire.TagExtendedRequest:
		name, value, _, err := decodeExtended(m.OpContent)
		if err != nil {
			s.notice(ldap.LDAPResultProtocolError, "ldapgate: malformed extended request: "+err.Error())
			return false
		}
		switch name {
		case ldapwire.OIDStartTLS:
			return s.startTLS(m)
		case ldapwire.OIDCancel:
			if answered, goOn := s.cancelAwaited(m, value); answered {
				return goOn
			}
			s.reusable = false
		case ldapwire.OIDPasswordModify:
			return s.write(m)
		case ldapwire.OIDWhoAmI:
		default:
			s.reusable = false // transactions and others keep state on the connection
		}
		return s.forward(m, pendingOp{tag: m.Op})
	case ldapwire.TagAddRequest, ldapwire.TagModifyRequest, ldapwire.TagDelRequest, ldapwire.TagModDNRequest:
		if len(s.srv.local) > 0 && s.srv.isLocal(targetDN(m)) {
			s.respond(m, ldap.LDAPResultUnwillingToPerform, "ldapgate: the gateway's own subtree is read-only")
			return true
		}
		return s.write(m)
	case ldapwire.TagSearchRequest, ldapwire.TagCompareRequest:
		if len(s.srv.local) > 0 && s.srv.isLocal(targetDN(m)) {
			return s.routeLocal(m)
		}
	}
	return s.forward(m, pendingOp{tag: m.Op})
}

// targetDN reads the DN an operation is aimed at: the first element of
// search, compare, add, modify, delete and modify DN requests.
func targetDN(m ldapwire.Message) []byte {
	if m.Op == ldapwire.TagDelRequest {
		return m.OpContent
	}
	tag, content, _, err := ldapwire.Next(m.OpContent)
	if err != nil || tag != ldapwire.TagOctetString {
		return nil
	}
	return content
}

// routeLocal hands a read of the gateway's own subtree to its server, for
// the identities allowed to see it.
func (s *session) routeLocal(m ldapwire.Message) bool {
	s.mu.Lock()
	info := SessionInfo{ID: s.id, RemoteAddr: s.remote, BoundDN: s.boundDN, SASLMechanism: s.saslMechanism, TLS: s.tls}
	s.mu.Unlock()
	ld := s.srv.cfg.Local
	if ld.Allow != nil && !ld.Allow(info) {
		s.respond(m, ldap.LDAPResultInsufficientAccessRights, "ldapgate: the gateway's own subtree is readable by its admin identities only")
		return true
	}
	if s.answerLocal(m) {
		return true
	}
	return s.forward(m, pendingOp{tag: m.Op, local: true})
}

// localAnswerer is a connection to the local server (LocalDirectory.Dial)
// that answers itself the requests its server cannot take. The subtree's
// connections are: gldap drops a connection on Compare or Abandon.
type localAnswerer interface {
	// Answer returns handled false for a request to relay to the server;
	// otherwise reply is the whole answer, nil when the request has none.
	Answer(m ldapwire.Message) (reply []byte, handled bool)
}

// answerLocal lets the local connection answer a request its server
// cannot take, and reports whether it did.
func (s *session) answerLocal(m ldapwire.Message) bool {
	s.mu.Lock()
	_, inUse := s.ops.lookup(m.ID)
	s.mu.Unlock()
	if inUse {
		return false // forward refuses the reused ID
	}
	c, err := s.localUpstream()
	if err != nil {
		return false // forward reports the failure
	}
	a, ok := c.connAnswerer()
	if !ok {
		return false
	}
	reply, handled := a.Answer(m)
	if !handled {
		return false
	}
	if reply != nil {
		s.writeClient(reply, true)
		if r, err := ldapwire.Parse(reply); err == nil {
			code, _ := ldapwire.ResultCode(r.OpContent)
			s.observe(m.Op, code, time.Time{})
		}
	}
	return true
}

func (s *session) abandon(m ldapwire.Message) bool {
	s.reusable = false // the directory may still be winding the operation down
	target, err := ldapwire.ParseInt(m.OpContent)
	if err != nil {
		s.notice(ldap.LDAPResultProtocolError, "ldapgate: malformed abandon request")
		return false
	}
	s.mu.Lock()
	up := s.up
	op, _ := s.ops.lookup(target)
	released, _ := s.ops.abandon(target)
	s.mu.Unlock()
	if released != nil {
		s.completeReleased([]releasedOp{*released}, "ldapgate: abandoned and never answered by the directory"+OutcomeUnknown)
	}
	if op.awaited() {
		// An intercepted write always finishes: the directory is not asked
		// to abandon it, so its answer comes and settles its journal record.
		// The client, which abandoned it, may ignore that answer.
		return true
	}
	for _, c := range []*upstreamConn{up, s.localConn()} {
		if a, ok := c.connAnswerer(); ok {
			if _, handled := a.Answer(m); handled {
				continue
			}
		}
		if c != nil {
			if _, err := c.w.Write(m.Raw); err == nil && s.cr.Buffered() == 0 {
				_ = c.w.Flush()
			}
		}
	}
	return true
}

// cancelAwaited answers a Cancel (RFC 3909) itself when the operation it
// names is not one the directory should cancel: an intercepted write gets
// cannotCancel (the gateway needs the directory's final answer to settle
// its journal record, and a cancelled write may end with no answer at
// all), and an ID with nothing outstanding (or abandoned) noSuchOperation,
// since whatever the directory still holds of an answered operation is
// not the client's to cancel (slapd's Cancel of an operation whose answer
// has just been sent can hold one of its threads for good). It reports
// whether it answered, and if so whether the session goes on; a Cancel of
// an outstanding operation of another kind, or a malformed one, is
// relayed.
func (s *session) cancelAwaited(m ldapwire.Message, value []byte) (answered, goOn bool) {
	tag, content, _, err := ldapwire.Next(value)
	if err != nil || tag != ldapwire.TagSequence {
		return false, true // the directory answers a malformed Cancel
	}
	tag, content, _, err = ldapwire.Next(content)
	if err != nil || tag != ldapwire.TagInteger {
		return false, true
	}
	target, err := ldapwire.ParseInt(content)
	if err != nil {
		return false, true
	}
	s.mu.Lock()
	op, found := s.ops.lookup(target)
	_, idInUse := s.ops.lookup(m.ID)
	s.mu.Unlock()
	code, diagnostic := ldap.LDAPResultCannotCancel, "ldapgate: a write to an account or group is not cancelled once relayed; its result follows"
	switch {
	case found && op.awaited():
	case !found || op.abandoned:
		code, diagnostic = ldap.LDAPResultNoSuchOperation, "ldapgate: no such operation outstanding"
	default:
		return false, true
	}
	if idInUse {
		s.notice(ldap.LDAPResultProtocolError, fmt.Sprintf("ldapgate: message ID %d is already in use", m.ID))
		return true, false
	}
	s.writeClient(encodeResponse(m.ID, ldapwire.TagExtendedResponse, code, "", diagnostic, ""), true)
	s.observe(m.Op, code, time.Time{})
	return true, true
}

// write handles the operations interception may see.
func (s *session) write(m ldapwire.Message) bool {
	s.mu.Lock()
	isTLS := s.tls
	info := SessionInfo{ID: s.id, RemoteAddr: s.remote, BoundDN: s.boundDN, SASLMechanism: s.saslMechanism, TLS: s.tls, Flush: s.flushFn}
	s.mu.Unlock()
	if s.srv.cfg.ConfidentialityRequired && !isTLS {
		s.respond(m, ldap.LDAPResultConfidentialityRequired,
			"ldapgate: writes require a TLS-protected connection; use StartTLS or ldaps://")
		return true
	}
	op := pendingOp{tag: m.Op}
	hook := s.srv.cfg.Interceptor
	if hook == nil {
		return s.forward(m, op)
	}
	req, err := decodeWrite(m)
	if err != nil {
		s.respond(m, ldap.LDAPResultProtocolError, "ldapgate: "+err.Error())
		return true
	}
	if req == nil {
		return s.forward(m, op)
	}
	after, refuse := hook.Intercept(s.ctx, info, req)
	if refuse != nil {
		s.respond(m, refuse.Code, refuse.Diagnostic)
		return true
	}
	op.after = after
	op.passwordModify = req.Op == OpPasswordModify
	op.sendNow = req.SendNow
	if len(req.Append) > 0 {
		for _, c := range req.Append {
			op.strip = append(op.strip, c.OID)
		}
		m.Raw = withControls(m, req.Append)
	}
	return s.forward(m, op)
}

// forward relays a request upstream, registering it as pending when it
// expects an answer.
func (s *session) forward(m ldapwire.Message, op pendingOp) bool {
	expectsAnswer := ldapwire.ResponseTag(m.Op) != 0
	if expectsAnswer && !s.ops.reserve(s.ctx, s.flushRelayed, clientProbeInterval, s.clientPresent) {
		s.failOp(m.ID, op, "ldapgate: session closed", false)
		return false
	}
	var up *upstreamConn
	var err error
	if op.local {
		up, err = s.localUpstream()
	} else {
		up, err = s.upstream()
	}
	if err != nil {
		if expectsAnswer {
			s.ops.unreserve()
		}
		s.srv.stats.upstreamErrors.Add(1)
		s.log().Warn("no upstream directory reachable", "err", err)
		s.failOp(m.ID, op, "ldapgate: no upstream directory reachable", false)
		return true
	}
	if expectsAnswer {
		s.mu.Lock()
		if s.closing || (s.up != up && s.local != up) {
			// The session is ending (its table drained), or the upstream
			// was lost while we dialled, waited or intercepted.
			reason := "ldapgate: the upstream directory connection was lost"
			if s.closing {
				reason = "ldapgate: the session closed before the request was sent"
			}
			s.mu.Unlock()
			s.ops.unreserve()
			s.failOp(m.ID, op, reason, false)
			return false
		}
		op.start = time.Now()
		firstTimed, err := s.ops.add(m.ID, op)
		if err != nil {
			s.mu.Unlock()
			s.ops.unreserve()
			if op.after != nil {
				// Not relayed: the Completion hears so, or an intercepted
				// write's record would stay unsettled (and hold its entry).
				op.after(s.ctx, Result{Code: ldap.LDAPResultProtocolError,
					Diagnostic: fmt.Sprintf("ldapgate: message ID %d is already in use", m.ID)})
			}
			s.notice(ldap.LDAPResultProtocolError, fmt.Sprintf("ldapgate: message ID %d is already in use", m.ID))
			return false
		}
		if firstTimed && s.srv.cfg.OpTimeout > 0 {
			_ = up.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.OpTimeout))
		}
		s.mu.Unlock()
	}
	if _, err := up.w.Write(m.Raw); err != nil {
		return false
	}
	if s.cr.Buffered() == 0 || up.w.Buffered() > 16<<10 || op.sendNow {
		if err := up.w.Flush(); err != nil {
			return false
		}
	}
	s.cr.Release()
	return true
}

// startTLS answers a StartTLS request and upgrades the client connection.
func (s *session) startTLS(m ldapwire.Message) bool {
	s.mu.Lock()
	already, busy := s.tls, s.ops.len() > 0
	s.mu.Unlock()
	switch {
	case s.srv.cfg.TLS == nil:
		s.writeClient(encodeResponse(m.ID, ldapwire.TagExtendedResponse, ldap.LDAPResultUnavailable, "",
			"ldapgate: TLS is not configured on this listener", ldapwire.OIDStartTLS), true)
		return true
	case already:
		s.writeClient(encodeResponse(m.ID, ldapwire.TagExtendedResponse, ldap.LDAPResultOperationsError, "",
			"ldapgate: TLS is already established", ldapwire.OIDStartTLS), true)
		return true
	case busy || s.cr.Buffered() > 0:
		s.writeClient(encodeResponse(m.ID, ldapwire.TagExtendedResponse, ldap.LDAPResultOperationsError, "",
			"ldapgate: StartTLS requires that no other operation is outstanding", ldapwire.OIDStartTLS), true)
		return true
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.cw == nil {
		return false
	}
	s.armWriteLocked()
	if _, err := s.cw.Write(encodeResponse(m.ID, ldapwire.TagExtendedResponse, ldap.LDAPResultSuccess, "", "", ldapwire.OIDStartTLS)); err != nil {
		return false
	}
	if err := s.cw.Flush(); err != nil {
		return false
	}
	tc := tls.Server(s.client, s.srv.cfg.TLS)
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log().Info("StartTLS handshake failed", "err", err)
		return false
	}
	s.cr, s.cw = s.buffers(tc)
	s.cwConn, s.cwDeadline = tc, time.Time{} // the handshake left its own deadline
	s.readDeadline = time.Time{}             // set again on the TLS connection
	s.mu.Lock()
	s.client = tc
	s.tls = true
	s.mu.Unlock()
	return true
}
