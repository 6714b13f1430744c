// A session's connections to the directory (and to the gateway's own
// subtree): dialled early or on first use, and parked among the spares
// when the session ends cleanly.

package gateway

import (
	"bufio"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// upstreamConn is a session's own connection to the directory.
type upstreamConn struct {
	conn  net.Conn
	route string // the upstream's name, for spareConns
	r     *ldapwire.Reader
	w     *bufio.Writer
	// parking says the session has ended and sent resetBind: the next
	// message is its answer, and the connection then goes to the spares.
	parking atomic.Bool
	done    chan struct{} // closed when its relaying goroutine ends
}

func (s *session) localConn() *upstreamConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
}

// connAnswerer gives the connection's localAnswerer, if it is one.
func (up *upstreamConn) connAnswerer() (localAnswerer, bool) {
	if up == nil {
		return nil, false
	}
	a, ok := up.conn.(localAnswerer)
	return a, ok
}

// upstream returns the session's upstream connection: the one dialled
// early if there is one, else dialled now.
func (s *session) upstream() (*upstreamConn, error) {
	s.mu.Lock()
	up, dialing := s.up, s.dialing
	if up != nil {
		s.releaseEarlyLocked()
	}
	s.mu.Unlock()
	if up != nil {
		return up, nil
	}
	if dialing != nil {
		select {
		case <-dialing:
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		}
		s.mu.Lock()
		up, err := s.up, s.dialErr
		s.dialing, s.dialErr = nil, nil
		if up != nil {
			s.releaseEarlyLocked()
		}
		s.mu.Unlock()
		if up != nil {
			return up, nil
		}
		if err != nil {
			// The request gets the early dial's failure rather than a
			// second wait for an unreachable directory; later requests
			// dial again.
			return nil, err
		}
	}
	return s.connect(false)
}

// dialEarly starts dialling the upstream as soon as the client is
// accepted, like a byte pipe would, so that the dial overlaps the client's
// first request instead of following it; a connection per operation (bind,
// search, unbind) then waits for one dial less. Silent clients must not
// cost upstream connections, so the server allows only cfg.EarlyDials of
// these connections in flight or unused at once (beyond that, sessions
// dial at their first request), and an early connection still unused
// after earlyDialHold is closed.
func (s *session) dialEarly() {
	budget := int64(s.srv.cfg.EarlyDials)
	if budget <= 0 {
		return
	}
	if s.srv.earlyDials.Add(1) > budget {
		s.srv.earlyDials.Add(-1)
		return
	}
	dialed, done := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.earlyHeld = true
	s.dialing = dialed
	s.relays = append(s.relays, done)
	s.mu.Unlock()
	go func() {
		defer close(done)
		growStack()
		up, err := s.open(false)
		s.mu.Lock()
		if err == nil && s.closing {
			err = errClosing
		}
		if err == nil {
			s.up = up
			up.done = done
			if s.earlyHeld {
				s.earlyDrop = time.AfterFunc(earlyDialHold, func() { s.dropEarly(up) })
			}
		} else {
			s.dialErr = err
			s.releaseEarlyLocked()
		}
		close(dialed)
		s.mu.Unlock()
		if err != nil {
			if up != nil {
				up.conn.Close()
			}
			return
		}
		s.srv.stats.upstreamConns.Add(1)
		defer s.srv.stats.upstreamConns.Add(-1)
		s.relayUpstream(up)
	}()
}

// earlyDialHold is how long an early upstream connection waits for its
// client's first request before it is closed.
const earlyDialHold = time.Second

var errClosing = errors.New("session is closing")

// releaseEarlyLocked gives the session's early dial back to the server's
// budget: its connection is in use, or gone.
func (s *session) releaseEarlyLocked() {
	if !s.earlyHeld {
		return
	}
	s.earlyHeld = false
	s.srv.earlyDials.Add(-1)
	if s.earlyDrop != nil {
		s.earlyDrop.Stop()
		s.earlyDrop = nil
	}
}

// dropEarly closes an early connection its client has not used, so that it
// neither holds the budget nor stays open upstream for a silent client. The
// session dials again at its first request.
func (s *session) dropEarly(up *upstreamConn) {
	s.mu.Lock()
	if !s.earlyHeld || s.up != up {
		s.mu.Unlock()
		return
	}
	s.releaseEarlyLocked()
	s.up = nil
	s.mu.Unlock()
	up.conn.Close() // its relaying goroutine ends quietly: up is no longer s.up
}

// unusedLocked reports whether up is an early connection no request has
// used: losing it loses the client nothing.
func (s *session) unusedLocked(up *upstreamConn) bool {
	return s.earlyHeld && s.up == up
}

// localUpstream returns the session's connection to the gateway's own
// subtree server, dialling it on first use.
func (s *session) localUpstream() (*upstreamConn, error) {
	if c := s.localConn(); c != nil {
		return c, nil
	}
	return s.connect(true)
}

// open gives the session a connection with buffers: to the gateway's own
// subtree server, or to the upstream, a spare one if the server holds one.
func (s *session) open(local bool) (*upstreamConn, error) {
	var conn net.Conn
	var route string
	var err error
	rd, routed := s.srv.cfg.Dialer.(RoutingDialer)
	if !local && s.srv.spares != nil {
		if routed {
			route = rd.Route()
		}
		conn = s.srv.spares.take(route)
	}
	switch {
	case conn != nil:
	case !local && routed:
		conn, route, err = rd.DialRoute(s.ctx)
	case local:
		conn, err = s.srv.cfg.Local.Dial(s.ctx)
	default:
		conn, err = s.srv.cfg.Dialer.Dial(s.ctx)
	}
	if err != nil {
		return nil, err
	}
	up := &upstreamConn{conn: conn, route: route}
	up.r, up.w = s.buffers(conn)
	return up, nil
}

// connect dials a connection (the upstream's, or the local subtree's) and
// starts relaying its answers.
func (s *session) connect(local bool) (*upstreamConn, error) {
	up, err := s.open(local)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		up.conn.Close()
		return nil, errClosing
	}
	if local {
		s.local = up
	} else {
		s.up = up
	}
	done := make(chan struct{})
	up.done = done
	s.relays = append(s.relays, done)
	s.mu.Unlock()
	if !local {
		s.srv.stats.upstreamConns.Add(1)
	}
	go func() {
		defer close(done)
		if !local {
			defer s.srv.stats.upstreamConns.Add(-1)
		}
		s.relayUpstream(up)
	}()
	return up, nil
}

// resetBind is an anonymous simple bind with message ID 1. A bind ends
// whatever authentication the connection had (RFC 4511 section 4.2.1), so
// a connection that answers it with success is anonymous again.
var resetBind = ldapwire.AppendMessage(nil, 1, ldapwire.AppendBindRequest(nil, "", nil))

// resetTimeout bounds the wait for resetBind's answer; the connection is
// closed if it does not come.
const resetTimeout = 5 * time.Second

// park ends the session's use of its upstream connection by resetting it
// for another session (see spareConns), when that is safe, and reports
// whether it did; otherwise the caller ends the session as usual and the
// connection is closed. The reset is then the server's business: the
// session ends at once, without waiting for its answer, and the spares
// close the connection if the server shuts down meanwhile.
//
// Safe means nothing the directory keeps per connection, other than the
// bind, can be left from this session: no operation outstanding (nor an
// answer whose Completion still runs: the session is not over), none
// abandoned (the directory may still be winding it down), no request
// control (paged results and sync searches keep state between requests),
// no SASL bind (an exchange may be half done) and no extended operation
// other than WhoAmI and password modify (transactions keep state). The
// anonymous bind then ends the session's authentication; only a success
// puts the connection among the spares (a directory that refuses
// anonymous binds gets its connections closed, as before).
func (s *session) park() bool {
	if !s.reusable || s.srv.closed.Load() {
		return false
	}
	s.mu.Lock()
	up := s.up
	if up == nil || up.done == nil || s.ops.len() > 0 || s.completing > 0 || s.closing || !s.srv.spares.resetting(up.conn) {
		s.mu.Unlock()
		return false
	}
	s.closing = true
	s.up = nil // close() leaves it to its relaying goroutine
	s.releaseEarlyLocked()
	// The relaying goroutine outlives the session: wait() must not wait
	// for it, and recycle() must not take its reader (it hands it back).
	// The writer stays the session's: only this goroutine uses it.
	s.relays = slices.DeleteFunc(s.relays, func(d chan struct{}) bool { return d == up.done })
	s.readers = slices.DeleteFunc(s.readers, func(r *ldapwire.Reader) bool { return r == up.r })
	up.parking.Store(true)
	s.mu.Unlock()
	_ = up.conn.SetReadDeadline(time.Now().Add(resetTimeout))
	if _, err := up.w.Write(resetBind); err != nil || up.w.Flush() != nil {
		up.conn.Close() // its relaying goroutine ends on the error
	}
	return true
}

// settleReset takes the first message (or error) on a parking connection,
// the answer to resetBind, and hands the connection to the spares, which
// keep it if the reset succeeded and nothing else came, else close it.
func (s *session) settleReset(up *upstreamConn, m ldapwire.Message, err error) {
	code, ok := ldapwire.ResultCode(m.OpContent)
	reset := err == nil && m.ID == 1 && m.Op == ldapwire.TagBindResponse && ok
	if reset && refusesAnonymous(code) {
		// The directory refuses anonymous binds (slapd's "disallow
		// bind_anon", for one): stop asking it after every session, until
		// the gateway restarts. Other failures (busy, unavailable) only
		// cost this connection.
		if s.srv.spares.refuse() {
			res, _ := decodeResult(m, false)
			s.srv.log.Warn("the directory refused the anonymous bind that resets an upstream connection for the next client; upstream connections will not be reused",
				"result", code, "diagnostic", res.Diagnostic)
		}
	}
	clean := reset && code == ldap.LDAPResultSuccess && up.r.Buffered() == 0 &&
		up.conn.SetReadDeadline(time.Time{}) == nil
	s.srv.spares.settle(up.conn, up.route, clean)
}

// refusesAnonymous tells the result codes by which a directory refuses
// anonymous binds as a matter of policy.
func refusesAnonymous(code int) bool {
	switch code {
	case ldap.LDAPResultInappropriateAuthentication, ldap.LDAPResultUnwillingToPerform,
		ldap.LDAPResultConfidentialityRequired, ldap.LDAPResultInsufficientAccessRights,
		ldap.LDAPResultAuthMethodNotSupported, ldap.LDAPResultStrongAuthRequired:
		return true
	}
	return false
}

// growStack grows the calling goroutine's stack to what a dial needs in one
// step, while the stack is still shallow and cheap to copy. Left to itself,
// a new goroutine's stack doubles from 2 KiB several times during the dial,
// copying the deeper stack each time: 3-7% of the gateway's CPU time when
// clients open a connection per operation.
//
//go:noinline
func growStack() {
	var frame [dialStackSize]byte
	keepFrame(frame[:])
}

// dialStackSize is about what a dial's call chain uses (net.Dialer through
// the socket system calls); the stack the runtime allocates for it is the
// next power of two above.
const dialStackSize = 6 << 10

//go:noinline
func keepFrame([]byte) {}
