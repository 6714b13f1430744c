// Routing the upstream's answers back to the client, matched against the
// table of outstanding operations, and what happens when they never come.

package gateway

import (
	"errors"
	"os"
	"slices"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// relayUpstream copies the upstream's messages to the client until the
// upstream connection ends, or is parked among the spares.
func (s *session) relayUpstream(up *upstreamConn) {
	handedOver := false
	defer func() {
		switch {
		case handedOver:
		case up.parking.Load():
			// Parked while this goroutine was not waiting for the reset's
			// answer (it was failing, or writing to a client that left).
			s.srv.spares.settle(up.conn, up.route, false)
			s.srv.recycle([]*ldapwire.Reader{up.r}, nil)
		default:
			up.conn.Close()
		}
	}()
	s.mu.Lock()
	local := up == s.local
	s.mu.Unlock()
	for {
		m, err := up.r.Next()
		if up.parking.Load() {
			s.settleReset(up, m, err) // the spares keep or close the connection
			handedOver = true
			s.srv.recycle([]*ldapwire.Reader{up.r}, nil)
			return
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !s.opTimedOut(up) {
				continue
			}
			s.upstreamLost(up, err)
			return
		}
		if m.ID == 0 && local {
			// The subtree server ending the connection: the session
			// loses only the subtree's operations.
			s.upstreamLost(up, errLocalNotice)
			return
		}
		if m.ID == 0 {
			// An unsolicited notification, most often the directory's own
			// Notice of Disconnection: pass it on and end the session,
			// unless no request has used the connection yet.
			s.mu.Lock()
			if s.unusedLocked(up) {
				s.releaseEarlyLocked()
				s.up = nil
				s.mu.Unlock()
				return
			}
			s.closing = true
			pending := s.ops.drain()
			s.wakeLocked()
			s.mu.Unlock()
			s.writeClient(m.Raw, true)
			// The directory is ending the connection: no answer is coming.
			s.completeUnanswered(pending, "ldapgate: the upstream directory ended the connection"+OutcomeUnknown)
			s.close()
			return
		}
		var op pendingOp
		var found bool
		var released []releasedOp
		if ldapwire.IsFinal(m.Op) {
			s.mu.Lock()
			op, released, found = s.ops.finish(m.ID, m.Op, local)
			if found {
				if op.after != nil {
					s.completing++
					s.wakeLocked()
				}
				s.completing += len(released)
				if op.timed() || len(released) > 0 {
					s.resetOpTimerLocked(up)
				}
				if op.tag == ldapwire.TagBindRequest {
					s.noteBindLocked(m, op)
				}
			}
			s.mu.Unlock()
		}
		if len(released) > 0 {
			// Before the client hears of the bind, as for any Completion.
			s.completeReleased(released, "ldapgate: the directory abandoned the operation when the client bound again"+OutcomeUnknown)
			s.mu.Lock()
			s.completing -= len(released)
			s.mu.Unlock()
		}
		if found && s.srv.cfg.Observer != nil {
			code, _ := ldapwire.ResultCode(m.OpContent)
			s.srv.cfg.Observer.OperationDone(ldapwire.OpName(op.tag), code, time.Since(op.start))
		}
		if found && op.after != nil {
			res, err := decodeResult(m, op.passwordModify)
			if err != nil {
				res = Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: unreadable upstream response: " + err.Error(), Unanswered: true}
			}
			op.after(s.ctx, res)
			// Before the client can see the answer, and so unbind.
			s.mu.Lock()
			s.completing--
			s.mu.Unlock()
		}
		raw := m.Raw
		if found && slices.Contains(op.strip, OIDAssertion) {
			if r, err := ldapwire.DecodeResult(m.OpContent); err == nil && r.Code == ldap.LDAPResultAssertionFailed {
				raw = ldapwire.Response(m.ID, m.Op, ldapwire.Result{Code: ldap.LDAPResultBusy, Diagnostic: assertionRefused})
				op.strip = nil
			}
		}
		if found && len(op.strip) > 0 {
			// The controls the interceptor asked for are not the client's.
			if raw, err = withoutControls(m, op.strip); err != nil {
				raw = m.Raw // unreadable controls: decodeResult said so to the Completion
			}
		}
		// A client that has gone gets nothing more, but the answers to its
		// intercepted writes are still read until the session closes the
		// upstream connection (close waits for them).
		_ = s.writeClient(raw, up.r.Buffered() == 0)
		up.r.Release()
	}
}

// assertionRefused answers a write whose appended assertion (OIDAssertion)
// the directory found false.
const assertionRefused = "ldapgate: the entry at this DN is no longer the one the gateway checked the write against " +
	"(renamed or replaced meanwhile, through another gateway or directly); the write was not made; try again"

// resetOpTimerLocked restarts the op timeout after progress, or clears it.
func (s *session) resetOpTimerLocked(up *upstreamConn) {
	if s.srv.cfg.OpTimeout <= 0 || up != s.up {
		return
	}
	if s.ops.watching() {
		_ = up.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.OpTimeout))
	} else {
		_ = up.conn.SetReadDeadline(time.Time{})
	}
}

// opTimedOut reports whether a read timeout on the upstream means an
// operation went unanswered for the op timeout (rather than a stale deadline).
func (s *session) opTimedOut(up *upstreamConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops.watching() {
		return true
	}
	_ = up.conn.SetReadDeadline(time.Time{})
	return false
}

// upstreamLost ends the session after its upstream connection failed: every
// outstanding operation gets unavailable, then the client a Notice of
// Disconnection, since its bind state is gone with the connection.
func (s *session) upstreamLost(up *upstreamConn, err error) {
	s.mu.Lock()
	if s.unusedLocked(up) {
		s.releaseEarlyLocked()
		s.up = nil
	}
	if s.up != up && s.local != up {
		s.mu.Unlock()
		return
	}
	if s.local == up {
		s.localLostLocked(up, err)
		return
	}
	closing := s.closing
	pending := s.ops.drain()
	s.wakeLocked()
	s.mu.Unlock()
	reason := "ldapgate: the upstream directory closed the connection"
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason = "ldapgate: the upstream directory did not answer within the operation timeout"
	case errors.Is(err, ldapwire.ErrMessageTooLarge):
		// The directory is fine; its answer (a large entry, say) is over
		// the limit, and the rest of the stream cannot be read without it.
		reason = "ldapgate: an answer of the upstream directory exceeds the gateway's message size limit (--max-message-size)"
	}
	if closing {
		// The client has gone or unbound: only the Completions of its
		// writes still need to know.
		s.completeUnanswered(pending, reason+OutcomeUnknown)
		return
	}
	s.log().Warn("upstream connection lost", "err", err, "outstanding", len(pending))
	s.srv.stats.upstreamErrors.Add(1)
	for id, op := range pending {
		// The request reached the directory: say that its fate is unknown,
		// so that a client does not take a write for undone.
		s.failOp(id, op, reason+OutcomeUnknown, true)
	}
	s.notice(ldap.LDAPResultUnavailable, reason)
	s.close()
}

// errLocalNotice is the loss of the subtree's connection by a notice.
var errLocalNotice = errors.New("the subtree server sent a notice of disconnection")

// localLostLocked handles the loss of the connection to the gateway's own
// subtree server: only the operations sent on it fail; those on the
// directory's connection, writes among them, go on, and the next read of
// the subtree dials it again. Called with mu held; it releases it.
func (s *session) localLostLocked(up *upstreamConn, err error) {
	s.local = nil
	closing := s.closing
	pending := s.ops.drainLocal()
	s.mu.Unlock()
	up.conn.Close()
	if closing {
		return
	}
	s.log().Warn("connection to the gateway's own subtree lost", "err", err, "outstanding", len(pending))
	for id, op := range pending {
		s.failOp(id, op, "ldapgate: the gateway's own subtree server closed the connection", true)
	}
}

// completeReleased tells the Completions of operations released without
// their answer that the outcome is unknown (the mirror resolves it by
// reading the entry back); the client gets nothing for them, as from the
// directory.
func (s *session) completeReleased(released []releasedOp, reason string) {
	for _, r := range released {
		if r.op.after != nil {
			r.op.after(s.ctx, Result{Code: ldap.LDAPResultUnavailable, Diagnostic: reason, Unanswered: true})
		}
	}
}

// OutcomeUnknown ends the diagnostic of an operation that reached the
// directory but whose answer was lost with the upstream connection.
const OutcomeUnknown = "; the operation may or may not have been applied"

// completeUnanswered tells the Completions of operations the directory
// will never answer that their outcome is unknown; the client hears
// nothing (it has gone, or is being told otherwise).
func (s *session) completeUnanswered(pending map[int64]pendingOp, reason string) {
	for _, op := range pending {
		// A bind the directory never judged is no failed guess.
		s.srv.binds.settle(op.bindTicket, false)
		if op.after != nil {
			op.after(s.ctx, Result{Code: ldap.LDAPResultUnavailable, Diagnostic: reason, Unanswered: true})
		}
	}
}

// failOp answers an operation the upstream will never answer. sent tells
// whether the request reached the upstream, whose outcome is then unknown.
// An operation the client abandoned gets no answer, but its Completion
// still learns the outcome is unknown.
func (s *session) failOp(id int64, op pendingOp, reason string, sent bool) {
	s.srv.binds.settle(op.bindTicket, false) // a bind the directory never judged is no failed guess
	if op.after != nil {
		op.after(s.ctx, Result{Code: ldap.LDAPResultUnavailable, Diagnostic: reason, Unanswered: sent})
	}
	if tag := ldapwire.ResponseTag(op.tag); tag != 0 && !op.abandoned {
		s.writeClient(encodeResponse(id, tag, ldap.LDAPResultUnavailable, "", reason, ""), true)
		s.observe(op.tag, ldap.LDAPResultUnavailable, op.start)
	}
}
