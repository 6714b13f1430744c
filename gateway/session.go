package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/rawsock"
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

// pendingOp is an operation relayed upstream and not yet finished.
type pendingOp struct {
	tag            byte
	start          time.Time
	local          bool // answered by the gateway's own subtree
	bindDN         string
	saslMechanism  string
	passwordModify bool
	after          Completion
}

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

// session relays one client connection. The reading goroutine (run) owns
// the client reader and the upstream writer; the upstream goroutine owns the
// upstream reader. Writes to the client are shared and go through cmu.
type session struct {
	srv    *Server
	id     uint64
	ctx    context.Context
	cancel context.CancelFunc
	remote string

	client net.Conn
	cr     *ldapwire.Reader

	cmu sync.Mutex
	cw  *bufio.Writer

	mu            sync.Mutex
	up            *upstreamConn
	local         *upstreamConn // connection to the gateway's own subtree server
	pending       map[int64]pendingOp
	timedOps      int // pending ops other than searches, watched by the op timeout
	boundDN       string
	saslMechanism string
	tls           bool
	closing       bool
	// completing counts answers whose Completion (op.after) is running
	// or about to: the session is not over until the client has them.
	completing int

	// An early dial (see dialEarly): dialing is closed once it has ended,
	// with the connection in up or the failure in dialErr; earlyHeld says
	// the connection counts against the server's budget of early dials
	// (in flight, or open and not yet used by a request).
	dialing   chan struct{}
	dialErr   error
	earlyHeld bool
	earlyDrop *time.Timer

	slots     chan struct{}
	closeOnce sync.Once
	// reusable says the session has done nothing that could leave state
	// on its upstream connection beyond its bind (see park); owned by the
	// reading goroutine.
	reusable bool
	// owned by the reading goroutine: the idle timeout's bookkeeping
	readDeadline, lastRead time.Time
	// pooled buffers handed back to the Server once the session is over
	readers []*ldapwire.Reader
	writers []*bufio.Writer
	relays  []chan struct{} // closed when each relaying goroutine ends
}

func newSession(srv *Server, id uint64, conn net.Conn, isTLS bool) *session {
	ctx, cancel := context.WithCancel(srv.baseCtx)
	s := &session{
		srv:      srv,
		id:       id,
		ctx:      ctx,
		cancel:   cancel,
		remote:   conn.RemoteAddr().String(),
		client:   conn,
		pending:  make(map[int64]pendingOp),
		tls:      isTLS,
		slots:    make(chan struct{}, srv.cfg.MaxOpsPerConn),
		reusable: true,
	}
	s.cr, s.cw = s.buffers(conn)
	s.lastRead = time.Now()
	return s
}

// buffers gives a connection pooled I/O buffers, remembered for recycle.
func (s *session) buffers(conn net.Conn) (*ldapwire.Reader, *bufio.Writer) {
	rw := rawsock.Wrap(conn)
	r, w := s.srv.reader(rw), s.srv.writer(rw)
	s.mu.Lock()
	s.readers = append(s.readers, r)
	s.writers = append(s.writers, w)
	s.mu.Unlock()
	return r, w
}

// recycle hands the session's buffers back; call it only once every
// goroutine of the session has ended.
func (s *session) recycle() {
	s.srv.recycle(s.readers, s.writers)
	s.readers, s.writers = nil, nil
}

func (s *session) log() *slog.Logger {
	return s.srv.log.With("session", s.id, "client", s.remote)
}

// run reads client messages until the session ends.
func (s *session) run() {
	defer s.close()
	s.dialEarly()
	for {
		m, err := s.readClient()
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.park()
			}
			s.clientReadFailed(err)
			return
		}
		if !s.handle(m) {
			return
		}
	}
}

// readClient waits for the next client message. A client that stays silent
// for the idle timeout is disconnected, unless it still has operations
// outstanding (a persistent search is not idle). The read deadline moves
// only when less than half of it is left, so most messages change no timer.
func (s *session) readClient() (ldapwire.Message, error) {
	idle := s.srv.cfg.IdleTimeout
	if idle <= 0 {
		return s.cr.Next()
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
		busy := len(s.pending) > 0
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
	switch m.Op {
	case ldapwire.TagUnbindRequest:
		if s.park() {
			return false
		}
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
		name, _, _, err := decodeExtended(m.OpContent)
		if err != nil {
			s.notice(ldap.LDAPResultProtocolError, "ldapgate: malformed extended request: "+err.Error())
			return false
		}
		switch name {
		case ldapwire.OIDStartTLS:
			return s.startTLS(m)
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
	return s.forward(m, pendingOp{tag: m.Op, local: true})
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
	if op, ok := s.pending[target]; ok {
		// The directory sends nothing more for an abandoned operation, so
		// stop waiting for it here too.
		s.finishLocked(target, op)
	}
	s.mu.Unlock()
	for _, c := range []*upstreamConn{up, s.localConn()} {
		if c != nil {
			if _, err := c.w.Write(m.Raw); err == nil && s.cr.Buffered() == 0 {
				_ = c.w.Flush()
			}
		}
	}
	return true
}

func (s *session) localConn() *upstreamConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.local
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
	op := pendingOp{tag: m.Op, bindDN: b.name}
	if !b.simple {
		s.reusable = false // a SASL exchange may be left half done
		if !saslWithoutSecurityLayer[b.mechanism] {
			s.respond(m, ldap.LDAPResultAuthMethodNotSupported, fmt.Sprintf(
				"ldapgate: SASL mechanism %s is not relayed: it may negotiate a security layer or bind to the gateway's own TLS channel; use a simple bind or SASL PLAIN over TLS", b.mechanism))
			return true
		}
		op.saslMechanism = b.mechanism
	}
	anonymous := b.simple && len(b.password) == 0
	if blocked, wait := s.srv.binds.blocked(s.remote, time.Now()); blocked && !anonymous {
		s.log().Warn("bind refused: too many failed binds from this address")
		s.respond(m, ldap.LDAPResultUnwillingToPerform, fmt.Sprintf(
			"ldapgate: too many failed binds from this address; try again in %s", wait.Round(time.Second)))
		return true
	}
	if s.srv.cfg.ConfidentialityRequired && !isTLS && !anonymous {
		s.respond(m, ldap.LDAPResultConfidentialityRequired,
			"ldapgate: binding requires a TLS-protected connection; use StartTLS or ldaps://")
		return true
	}
	return s.forward(m, op)
}

// write handles the operations interception may see.
func (s *session) write(m ldapwire.Message) bool {
	s.mu.Lock()
	isTLS := s.tls
	info := SessionInfo{ID: s.id, RemoteAddr: s.remote, BoundDN: s.boundDN, SASLMechanism: s.saslMechanism, TLS: s.tls}
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
	return s.forward(m, op)
}

// forward relays a request upstream, registering it as pending when it
// expects an answer.
func (s *session) forward(m ldapwire.Message, op pendingOp) bool {
	expectsAnswer := ldapwire.ResponseTag(m.Op) != 0
	if expectsAnswer && !s.acquireSlot() {
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
			<-s.slots
		}
		s.srv.stats.upstreamErrors.Add(1)
		s.log().Warn("no upstream directory reachable", "err", err)
		s.failOp(m.ID, op, "ldapgate: no upstream directory reachable", false)
		return true
	}
	if expectsAnswer {
		s.mu.Lock()
		if s.up != up && s.local != up {
			// The upstream was lost while we dialled or waited.
			s.mu.Unlock()
			<-s.slots
			s.failOp(m.ID, op, "ldapgate: the upstream directory connection was lost", false)
			return false
		}
		if _, dup := s.pending[m.ID]; dup {
			s.mu.Unlock()
			<-s.slots
			s.notice(ldap.LDAPResultProtocolError, fmt.Sprintf("ldapgate: message ID %d is already in use", m.ID))
			return false
		}
		op.start = time.Now()
		s.pending[m.ID] = op
		if op.timed() {
			s.timedOps++
			if s.timedOps == 1 && s.srv.cfg.OpTimeout > 0 {
				_ = up.conn.SetReadDeadline(time.Now().Add(s.srv.cfg.OpTimeout))
			}
		}
		s.mu.Unlock()
	}
	if _, err := up.w.Write(m.Raw); err != nil {
		return false
	}
	if s.cr.Buffered() == 0 || up.w.Buffered() > 16<<10 {
		if err := up.w.Flush(); err != nil {
			return false
		}
	}
	s.cr.Release()
	return true
}

// acquireSlot bounds the operations outstanding on this session. When the
// bound is reached the client's next request waits (backpressure) instead of
// failing; buffered requests are flushed first so their answers can free a slot.
func (s *session) acquireSlot() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
	}
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up != nil {
		_ = up.w.Flush()
	}
	select {
	case s.slots <- struct{}{}:
		return true
	case <-s.ctx.Done():
		return false
	}
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
			s.mu.Unlock()
			s.writeClient(m.Raw, true)
			s.close()
			return
		}
		var op pendingOp
		var found bool
		if ldapwire.IsFinal(m.Op) {
			s.mu.Lock()
			op, found = s.pending[m.ID]
			if found {
				if op.after != nil {
					s.completing++
				}
				s.finishLocked(m.ID, op)
				if op.timed() {
					s.resetOpTimerLocked(up)
				}
				if op.tag == ldapwire.TagBindRequest {
					s.noteBindLocked(m, op)
				}
			}
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
		if !s.writeClient(m.Raw, up.r.Buffered() == 0) {
			return
		}
		up.r.Release()
	}
}

// resetBind is an anonymous simple bind with message ID 1. A bind ends
// whatever authentication the connection had (RFC 4511 section 4.2.1), so
// a connection that answers it with success is anonymous again.
var resetBind = []byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00}

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
	if up == nil || up.done == nil || len(s.pending) > 0 || s.completing > 0 || s.closing || !s.srv.spares.resetting(up.conn) {
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

// noteBindLocked records the session's identity after a bind completes.
// A failed bind leaves the session anonymous (RFC 4511 section 4.2.1).
func (s *session) noteBindLocked(m ldapwire.Message, op pendingOp) {
	code, ok := ldapwire.ResultCode(m.OpContent)
	s.boundDN, s.saslMechanism = "", ""
	if ok && code == ldap.LDAPResultInvalidCredentials {
		s.srv.binds.failed(s.remote, time.Now())
	}
	if ok && code == ldap.LDAPResultSuccess {
		if op.saslMechanism != "" {
			s.saslMechanism = op.saslMechanism
		} else {
			s.boundDN = op.bindDN
		}
	}
}

// finishLocked forgets a pending operation and frees its slot.
func (s *session) finishLocked(id int64, op pendingOp) {
	delete(s.pending, id)
	if op.timed() {
		s.timedOps--
	}
	<-s.slots
}

// resetOpTimerLocked restarts the op timeout after progress, or clears it.
func (s *session) resetOpTimerLocked(up *upstreamConn) {
	if s.srv.cfg.OpTimeout <= 0 || up != s.up {
		return
	}
	if s.timedOps > 0 {
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
	if s.timedOps > 0 {
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
	closing := s.closing
	pending := s.pending
	s.pending = make(map[int64]pendingOp)
	s.timedOps = 0
	s.mu.Unlock()
	if closing {
		return
	}
	reason := "ldapgate: the upstream directory closed the connection"
	if errors.Is(err, os.ErrDeadlineExceeded) {
		reason = "ldapgate: the upstream directory did not answer within the operation timeout"
	}
	s.log().Warn("upstream connection lost", "err", err, "outstanding", len(pending))
	s.srv.stats.upstreamErrors.Add(1)
	for id, op := range pending {
		// The request reached the directory: say that its fate is unknown,
		// so that a client does not take a write for undone.
		s.failOp(id, op, reason+OutcomeUnknown, true)
		<-s.slots
	}
	s.notice(ldap.LDAPResultUnavailable, reason)
	s.close()
}

// OutcomeUnknown ends the diagnostic of an operation that reached the
// directory but whose answer was lost with the upstream connection.
const OutcomeUnknown = "; the operation may or may not have been applied"

// failOp answers an operation the upstream will never answer. sent tells
// whether the request reached the upstream, whose outcome is then unknown.
func (s *session) failOp(id int64, op pendingOp, reason string, sent bool) {
	if op.after != nil {
		op.after(s.ctx, Result{Code: ldap.LDAPResultUnavailable, Diagnostic: reason, Unanswered: sent})
	}
	if tag := ldapwire.ResponseTag(op.tag); tag != 0 {
		s.writeClient(encodeResponse(id, tag, ldap.LDAPResultUnavailable, "", reason, ""), true)
		s.observe(op.tag, ldap.LDAPResultUnavailable, op.start)
	}
}

// observe reports an operation the gateway answered itself.
func (s *session) observe(tag byte, code int, start time.Time) {
	if obs := s.srv.cfg.Observer; obs != nil {
		var elapsed time.Duration
		if !start.IsZero() {
			elapsed = time.Since(start)
		}
		obs.OperationDone(ldapwire.OpName(tag), code, elapsed)
	}
}

// respond answers a request with a result of the gateway's own.
func (s *session) respond(m ldapwire.Message, code int, diagnostic string) {
	if tag := ldapwire.ResponseTag(m.Op); tag != 0 {
		s.writeClient(encodeResponse(m.ID, tag, code, "", diagnostic, ""), true)
		s.observe(m.Op, code, time.Time{})
	}
}

// notice sends a Notice of Disconnection; the caller then ends the session.
func (s *session) notice(code int, diagnostic string) {
	s.writeClient(ldapwire.Notice(code, diagnostic), true)
}

// writeClient writes one message to the client, flushing when asked to.
func (s *session) writeClient(raw []byte, flush bool) bool {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.cw == nil {
		return false
	}
	_, err := s.cw.Write(raw)
	if err == nil && (flush || s.cw.Buffered() > 16<<10) {
		err = s.cw.Flush()
	}
	if err != nil {
		s.cw = nil
		s.closeConns()
		return false
	}
	return true
}

// startTLS answers a StartTLS request and upgrades the client connection.
func (s *session) startTLS(m ldapwire.Message) bool {
	s.mu.Lock()
	already, busy := s.tls, len(s.pending) > 0
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
	s.readDeadline = time.Time{} // set again on the TLS connection
	s.mu.Lock()
	s.client = tc
	s.tls = true
	s.mu.Unlock()
	return true
}

// close ends the session: both connections close, the upstream goroutine
// ends, outstanding completions learn that their outcome is unknown.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.releaseEarlyLocked()
		pending := s.pending
		s.pending = make(map[int64]pendingOp)
		s.mu.Unlock()
		for _, op := range pending {
			if op.after != nil {
				op.after(s.ctx, Result{Code: ldap.LDAPResultUnavailable, Diagnostic: "ldapgate: session closed before the directory answered", Unanswered: true})
			}
		}
		s.cmu.Lock()
		if s.cw != nil {
			_ = s.cw.Flush()
			s.cw = nil
		}
		s.cmu.Unlock()
		s.closeConns()
		s.cancel()
	})
}

func (s *session) closeConns() {
	s.mu.Lock()
	up, local, client := s.up, s.local, s.client
	s.mu.Unlock()
	if up != nil {
		up.conn.Close()
	}
	if local != nil {
		local.conn.Close()
	}
	client.Close()
}

// wait blocks until the session's relaying goroutines have ended.
func (s *session) wait() {
	s.mu.Lock()
	relays := s.relays
	s.mu.Unlock()
	for _, done := range relays {
		<-done
	}
}

// timed reports whether the op timeout watches the operation: searches may
// legitimately run for ever, and the local subtree is in-process.
func (op pendingOp) timed() bool { return op.tag != ldapwire.TagSearchRequest && !op.local }

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
