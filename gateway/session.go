package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/rawsock"
)

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
	// cwConn is the connection cw writes to, whose write deadline bounds
	// each write (Config.WriteTimeout); cwDeadline is that deadline.
	cwConn     net.Conn
	cwDeadline time.Time

	mu            sync.Mutex
	up            *upstreamConn
	local         *upstreamConn // connection to the gateway's own subtree server
	ops           *opTable
	boundDN       string
	saslMechanism string
	tls           bool
	closing       bool
	// completing counts answers whose Completion (op.after) is running
	// or about to: the session is not over until the client has them.
	completing int
	// settled, when not nil, is closed (and reset) by the next change that
	// may leave no intercepted write awaiting its answer (awaitWrites).
	settled chan struct{}

	// An early dial (see dialEarly): dialing is closed once it has ended,
	// with the connection in up or the failure in dialErr; earlyHeld says
	// the connection counts against the server's budget of early dials
	// (in flight, or open and not yet used by a request).
	dialing   chan struct{}
	dialErr   error
	earlyHeld bool
	earlyDrop *time.Timer

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
	// flushFn is flushRelayed, made once for SessionInfo.Flush rather than
	// a method value per write.
	flushFn func()
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
		ops:      newOpTable(srv.cfg.MaxOpsPerConn),
		tls:      isTLS,
		reusable: true,
	}
	s.cr, s.cw = s.buffers(conn)
	s.cwConn = conn
	s.lastRead = time.Now()
	s.flushFn = s.flushRelayed
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
		if s.cr.Buffered() == 0 {
			// Nothing more from the client at hand: what was relayed
			// goes out now, even when the last request was one the
			// gateway answered itself.
			s.flushRelayed()
		}
		m, err := s.readClient()
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.park()
			}
			s.clientReadFailed(err)
			return
		}
		if !s.handle(m) {
			// What was relayed before the session ended still goes out:
			// the directory's answers to it settle intercepted writes.
			s.flushRelayed()
			return
		}
	}
}

// flushRelayed sends the requests buffered for the directory and for the
// subtree server.
func (s *session) flushRelayed() {
	s.mu.Lock()
	up, local := s.up, s.local
	s.mu.Unlock()
	for _, c := range []*upstreamConn{up, local} {
		if c != nil && c.w.Buffered() > 0 {
			_ = c.w.Flush()
		}
	}
}

// clientProbeInterval is how often the reading goroutine, waiting for
// room in the table or for a bind's answer, checks that the client is
// still there.
const clientProbeInterval = time.Second

// clientPresent reports whether the client connection is still open, by
// a short read that consumes nothing; the reading goroutine calls it
// while it waits, so that a client gone meanwhile ends the session.
func (s *session) clientPresent() bool {
	if s.cr.Buffered() > 0 {
		return true
	}
	_ = s.client.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	err := s.cr.Wait()
	_ = s.client.SetReadDeadline(s.readDeadline)
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}

// awaitBind holds a request that arrives while a bind is outstanding
// until the bind is answered: RFC 4511 section 4.2.1 forbids clients to
// send one, and the gateway would judge it (interception, the subtree's
// access check) against the identity the bind is replacing. It reports
// false if the session ends meanwhile.
func (s *session) awaitBind() bool {
	s.mu.Lock()
	done := s.ops.binding()
	s.mu.Unlock()
	if done == nil {
		return true
	}
	s.flushRelayed()
	tick := time.NewTicker(clientProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return true
		case <-s.ctx.Done():
			return false
		case <-tick.C:
			if !s.clientPresent() {
				return false
			}
		}
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
	// In pieces, the deadline renewed as each goes: WriteTimeout bounds a
	// client that reads nothing, not one reading a large answer slowly.
	var err error
	for len(raw) > 0 && err == nil {
		n := min(len(raw), clientWriteChunk)
		s.armWriteLocked()
		_, err = s.cw.Write(raw[:n])
		raw = raw[n:]
	}
	if err == nil && (flush || s.cw.Buffered() > 16<<10) {
		s.armWriteLocked()
		err = s.cw.Flush()
	}
	if err != nil {
		// The client is gone: the reading goroutine sees it and ends the
		// session, which still waits for the answers to intercepted writes
		// on the upstream connection (close).
		s.cw = nil
		s.mu.Lock()
		client := s.client
		s.mu.Unlock()
		client.Close()
		return false
	}
	return true
}

// clientWriteChunk is the most written to a client under one write
// deadline.
const clientWriteChunk = 64 << 10

// armWriteLocked renews the client connection's write deadline before a
// write (cmu held): a client that leaves its answers unread for
// WriteTimeout loses its session, as one gone would. Renewed only once
// half of it has passed, so that a stream of small answers does not pay
// for a timer change each.
func (s *session) armWriteLocked() {
	t := s.srv.cfg.WriteTimeout
	if t <= 0 {
		return
	}
	now := time.Now()
	if s.cwDeadline.Sub(now) >= t/2 {
		return
	}
	s.cwDeadline = now.Add(t)
	_ = s.cwConn.SetWriteDeadline(s.cwDeadline)
}

// close ends the session. The client connection closes at once; the
// upstream connection stays open until every intercepted write on it has
// its final answer (awaitWrites), so that each one's Completion commits or
// aborts on the directory's word rather than guessing. Then both
// connections close, the upstream goroutine ends, and any operation still
// outstanding learns that its outcome is unknown.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.releaseEarlyLocked()
		client := s.client
		s.mu.Unlock()
		s.cmu.Lock()
		if s.cw != nil {
			s.armWriteLocked()
			_ = s.cw.Flush()
			s.cw = nil
		}
		s.cmu.Unlock()
		client.Close()
		s.awaitWrites()
		s.mu.Lock()
		pending := s.ops.drain()
		s.wakeLocked()
		s.mu.Unlock()
		s.completeUnanswered(pending, "ldapgate: session closed before the directory answered")
		s.closeConns()
		s.cancel()
	})
}

// awaitWrites waits until no intercepted write of the session awaits the
// directory's final answer (its Completion may still run): the answers arrive on
// the upstream goroutine, or the upstream connection is lost (upstreamLost
// drains the table). The op timeout bounds the wait, since it watches
// these writes even abandoned (default awaitLimit without one); so does
// the end of the server. It must not be called on the upstream goroutine.
func (s *session) awaitWrites() {
	limit := s.srv.cfg.OpTimeout
	if limit <= 0 {
		limit = awaitLimit
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.ops.awaitingAnswers() == 0 || s.up == nil {
			s.mu.Unlock()
			return
		}
		if s.settled == nil {
			s.settled = make(chan struct{})
		}
		ch := s.settled
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			s.log().Warn("the directory did not answer an intercepted write in time; its outcome is unknown")
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// awaitLimit bounds awaitWrites when no op timeout is set.
const awaitLimit = 2 * time.Minute

// wakeLocked wakes awaitWrites after a change that may have settled the
// session's last intercepted write.
func (s *session) wakeLocked() {
	if s.settled != nil {
		close(s.settled)
		s.settled = nil
	}
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
