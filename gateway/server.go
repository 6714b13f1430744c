// Package gateway is ldapgate's LDAP front end: listeners, TLS, client
// sessions and the message relay to the upstream directory.
//
// The relay frames each LDAPMessage, reads only its envelope (message ID,
// operation) and forwards the bytes to the session's own upstream
// connection, so every control, extended operation, intermediate response
// and referral passes through untouched. Only binds (to know who the session
// is), StartTLS (which the gateway terminates) and the writes an Interceptor
// must see are decoded. The split follows net/http: Server owns listeners
// and limits, Interceptor is the handler-like extension point.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// Config holds a Server's settings. Zero values take the defaults below.
type Config struct {
	// Dialer opens each session's upstream connection. Required.
	Dialer Dialer
	// TLS serves ldaps:// listeners and StartTLS; nil disables both.
	TLS *tls.Config
	// Interceptor sees decoded writes; nil relays them untouched.
	Interceptor Interceptor
	// Observer, when set, hears about every finished operation.
	Observer Observer
	// Local serves the gateway's own subtree (cn=changelog, cn=monitor);
	// zero means there is none and every request goes upstream.
	Local LocalDirectory
	// ConfidentialityRequired refuses binds with credentials and writes on
	// connections without TLS.
	ConfidentialityRequired bool

	MaxMessageSize int // bytes; default 16 MiB
	MaxConnections int // default 4096
	// MaxConnsPerAddress bounds the client connections open at once from
	// one IP address (default 256; negative: no per-address limit), so
	// that one address cannot take the whole of MaxConnections.
	MaxConnsPerAddress int
	MaxOpsPerConn      int           // outstanding operations per session; default 256
	IdleTimeout        time.Duration // 0 disables
	OpTimeout          time.Duration // upstream silence with a non-search op pending; 0 disables
	HandshakeTimeout   time.Duration // TLS handshakes; default 10s
	// StallTimeout bounds how long a client may take to finish sending a
	// message it has begun (default 1m; negative: only IdleTimeout).
	StallTimeout time.Duration
	// WriteTimeout bounds how long a client may leave the gateway's
	// answers unread: a write to it that makes no progress (64 KiB) for
	// between half of it and all of it ends the session (default 1m;
	// negative: none). Until the
	// session's answers are read past, the answers behind them on its
	// upstream connection are not, and an intercepted write among them
	// keeps holding what its Completion releases.
	WriteTimeout time.Duration
	// EarlyDials bounds the upstream connections opened when a client is
	// accepted, before its first request, that are still dialling or not
	// yet used, across all sessions (default 32; negative disables early
	// dials). Sessions beyond it dial at their first request.
	EarlyDials int
	// SpareConns bounds the upstream connections kept, reset to
	// anonymous, after their sessions ended cleanly, for new sessions to
	// use instead of dialling (default 32; negative disables). Each waits
	// at most 2 s for a session.
	SpareConns int
	// MaxBindFailures failed binds from one client address within
	// BindFailureWindow make the gateway refuse its binds for the rest of
	// the window (result 53). 0 disables the limit.
	MaxBindFailures   int
	BindFailureWindow time.Duration

	Logger *slog.Logger
}

// LocalDirectory routes reads under some suffixes to an in-process server
// (the gateway's own subtree, served with gldap) instead of the upstream.
type LocalDirectory struct {
	// Suffixes are the DNs whose subtrees are answered locally.
	Suffixes []string
	// Dial opens a connection to the local server for one session. A
	// connection with an Answer method (see localAnswerer) answers itself
	// the requests its server cannot take.
	Dial func(ctx context.Context) (net.Conn, error)
	// Allow decides whether a session may read the subtree; nil allows all.
	Allow func(SessionInfo) bool
}

// Defaults for Config.
const (
	DefaultMaxMessageSize   = 16 << 20
	DefaultMaxConnections   = 4096
	DefaultMaxConnsPerAddr  = 256
	DefaultMaxOpsPerConn    = 256
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultStallTimeout     = time.Minute
	DefaultWriteTimeout     = time.Minute
	DefaultEarlyDials       = 32
	DefaultSpareConns       = 32
)

// Stats are the Server's running counters.
type Stats struct {
	Connections      int64 // open client sessions
	UpstreamConns    int64 // open upstream connections in use by sessions, or being reset after one
	SpareConns       int64 // open upstream connections waiting for a session
	Accepted         int64
	Rejected         int64 // connections refused by the connection limit
	Requests         int64
	UpstreamFailures int64
}

type counters struct {
	connections, upstreamConns, accepted, rejected, requests, upstreamErrors atomic.Int64
}

// Server relays LDAP sessions to an upstream directory.
type Server struct {
	cfg   Config
	log   *slog.Logger
	stats counters

	baseCtx context.Context
	stop    context.CancelFunc
	nextID  atomic.Uint64
	connSem chan struct{}
	// rejecting holds a place per ldaps:// client being turned away
	// (turnAway).
	rejecting chan struct{}
	perAddr   addrCounts
	binds     *bindLimiter
	// earlyDials counts the sessions' early upstream dials in flight or
	// unused (Config.EarlyDials).
	earlyDials atomic.Int64
	spares     *spareConns // nil when disabled
	local      []*ldap.DN
	closed     atomic.Bool

	localMu    sync.Mutex
	localKnown map[string]bool // isLocal's answers by DN

	// readers and writers recycle the sessions' I/O buffers: a connection
	// per operation (bind, search, unbind) must not pay for fresh ones.
	readers, writers sync.Pool

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	wg        sync.WaitGroup
}

// NewServer checks cfg and returns a Server ready to Serve.
func NewServer(cfg Config) (*Server, error) {
	var localSuffixes []*ldap.DN
	if cfg.Dialer == nil {
		return nil, errors.New("gateway: no upstream dialer configured")
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnsPerAddress == 0 {
		cfg.MaxConnsPerAddress = DefaultMaxConnsPerAddr
	}
	if cfg.MaxOpsPerConn <= 0 {
		cfg.MaxOpsPerConn = DefaultMaxOpsPerConn
	}
	if cfg.EarlyDials == 0 {
		cfg.EarlyDials = DefaultEarlyDials
	}
	if cfg.SpareConns == 0 {
		cfg.SpareConns = DefaultSpareConns
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Local.Suffixes) > 0 && cfg.Local.Dial == nil {
		return nil, errors.New("gateway: local subtree configured without a server to dial")
	}
	for _, sfx := range cfg.Local.Suffixes {
		dn, err := ldap.ParseDN(sfx)
		if err != nil {
			return nil, fmt.Errorf("gateway: local suffix %q: %w", sfx, err)
		}
		localSuffixes = append(localSuffixes, dn)
	}
	if cfg.BindFailureWindow <= 0 {
		cfg.BindFailureWindow = time.Minute
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		baseCtx:    ctx,
		stop:       cancel,
		connSem:    make(chan struct{}, cfg.MaxConnections),
		rejecting:  make(chan struct{}, maxRejecting),
		perAddr:    addrCounts{limit: cfg.MaxConnsPerAddress, open: make(map[string]int)},
		binds:      newBindLimiter(cfg.MaxBindFailures, cfg.BindFailureWindow),
		spares:     newSpareConns(cfg.SpareConns, spareHold),
		local:      localSuffixes,
		localKnown: make(map[string]bool),
		listeners:  make(map[net.Listener]struct{}),
		sessions:   make(map[*session]struct{}),
	}, nil
}

// reader returns a message reader on r with recycled buffers.
func (s *Server) reader(r io.Reader) *ldapwire.Reader {
	if mr, _ := s.readers.Get().(*ldapwire.Reader); mr != nil {
		mr.Reset(r)
		return mr
	}
	return ldapwire.NewReader(r, s.cfg.MaxMessageSize)
}

// writer returns a buffered writer on w with a recycled buffer.
func (s *Server) writer(w io.Writer) *bufio.Writer {
	bw, _ := s.writers.Get().(*bufio.Writer)
	if bw == nil {
		return bufio.NewWriterSize(w, ioBufferSize)
	}
	bw.Reset(w)
	return bw
}

// recycle takes back buffers no goroutine uses any more.
func (s *Server) recycle(rs []*ldapwire.Reader, ws []*bufio.Writer) {
	for _, mr := range rs {
		mr.Reset(nil)
		s.readers.Put(mr)
	}
	for _, w := range ws {
		w.Reset(nil)
		s.writers.Put(w)
	}
}

// isLocal reports whether dn lies in the gateway's own subtree. Answers
// for short DNs are remembered: clients aim most requests at the same few
// bases, and parsing a DN costs more than relaying the request.
func (s *Server) isLocal(dn []byte) bool {
	if len(s.local) == 0 || len(dn) == 0 {
		return false
	}
	if len(dn) > localCacheKeyMax {
		return s.parseLocal(string(dn))
	}
	s.localMu.Lock()
	local, known := s.localKnown[string(dn)]
	s.localMu.Unlock()
	if known {
		return local
	}
	local = s.parseLocal(string(dn))
	s.localMu.Lock()
	if len(s.localKnown) >= localCacheEntries {
		clear(s.localKnown)
	}
	s.localKnown[string(dn)] = local
	s.localMu.Unlock()
	return local
}

// The isLocal cache holds at most localCacheEntries DNs of at most
// localCacheKeyMax bytes each (2 MiB), whatever clients send.
const (
	localCacheEntries = 4096
	localCacheKeyMax  = 512
)

func (s *Server) parseLocal(dn string) bool {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return false
	}
	for _, sfx := range s.local {
		if sfx.EqualFold(parsed) || sfx.AncestorOfFold(parsed) {
			return true
		}
	}
	return false
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:      s.stats.connections.Load(),
		UpstreamConns:    s.stats.upstreamConns.Load(),
		SpareConns:       int64(s.spares.len()),
		Accepted:         s.stats.accepted.Load(),
		Rejected:         s.stats.rejected.Load(),
		Requests:         s.stats.requests.Load(),
		UpstreamFailures: s.stats.upstreamErrors.Load(),
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("gateway: server closed")

// Serve accepts ldap:// connections (StartTLS available when TLS is set).
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts ldaps:// connections: TLS from the first byte.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.cfg.TLS == nil {
		return errors.New("gateway: ldaps listener needs a TLS certificate")
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.closed.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("gateway: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		s.stats.accepted.Add(1)
		addr := clientOf(conn.RemoteAddr().String())
		if !s.perAddr.take(addr) {
			s.stats.rejected.Add(1)
			s.turnAway(conn, implicitTLS, "ldapgate: too many connections from this address; try again later")
			continue
		}
		select {
		case s.connSem <- struct{}{}:
		default:
			s.perAddr.give(addr)
			s.stats.rejected.Add(1)
			s.turnAway(conn, implicitTLS, "ldapgate: too many connections; try again later")
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.perAddr.give(addr)
			s.serveConn(conn, implicitTLS)
		}()
	}
}

// Turning a client away over a connection limit must not cost what the
// limits bound. On ldap:// the busy notice is written at once (a few bytes
// into a fresh socket's empty buffer never wait). On ldaps:// the client is
// owed a TLS handshake first: at most maxRejecting of them run at once, each
// for at most rejectHandshake, and beyond that a client is closed without a
// word; otherwise a flood of connections that never begin their handshake,
// each held for the whole handshake time-out, would run the gateway out of
// descriptors whatever the limits say.
const (
	maxRejecting    = 64
	rejectHandshake = 2 * time.Second
)

// turnAway tells a client over a connection limit why it is turned away,
// if it can do so cheaply, and closes its connection.
func (s *Server) turnAway(conn net.Conn, implicitTLS bool, diagnostic string) {
	if !implicitTLS {
		_ = conn.SetWriteDeadline(time.Now().Add(rejectHandshake))
		_, _ = conn.Write(ldapwire.Notice(ldap.LDAPResultBusy, diagnostic))
		conn.Close()
		return
	}
	select {
	case s.rejecting <- struct{}{}:
	default:
		conn.Close()
		return
	}
	go func() {
		defer func() { <-s.rejecting }()
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(min(s.cfg.HandshakeTimeout, rejectHandshake)))
		tc := tls.Server(conn, s.cfg.TLS)
		if tc.Handshake() != nil {
			return
		}
		_, _ = tc.Write(ldapwire.Notice(ldap.LDAPResultBusy, diagnostic))
	}()
}

// addrCounts counts the client connections open per IP address, up to a
// limit (none when it is negative).
type addrCounts struct {
	limit int
	mu    sync.Mutex
	open  map[string]int
}

// take counts one more connection from addr, unless addr is at the limit.
func (a *addrCounts) take(addr string) bool {
	if a.limit < 0 {
		return true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open[addr] >= a.limit {
		return false
	}
	a.open[addr]++
	return true
}

// give forgets one connection from addr.
func (a *addrCounts) give(addr string) {
	if a.limit < 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open[addr] <= 1 {
		delete(a.open, addr)
		return
	}
	a.open[addr]--
}

func (s *Server) serveConn(conn net.Conn, implicitTLS bool) {
	defer s.wg.Done()
	defer func() { <-s.connSem }()
	defer func() {
		// A bug in one session must not take the gateway down.
		if r := recover(); r != nil {
			s.log.Error("session panicked", "panic", r)
			conn.Close()
		}
	}()
	if implicitTLS {
		tc := tls.Server(conn, s.cfg.TLS)
		ctx, cancel := context.WithTimeout(s.baseCtx, s.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.log.Debug("TLS handshake failed", "client", conn.RemoteAddr().String(), "err", err)
			conn.Close()
			return
		}
		conn = tc
	}
	sess := newSession(s, s.nextID.Add(1), conn, implicitTLS)
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	s.stats.connections.Add(1)
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		s.stats.connections.Add(-1)
	}()
	sess.run()
	sess.wait()
	sess.recycle()
}

// Shutdown stops accepting, tells idle clients the server is going away,
// and waits for sessions with outstanding operations to finish until ctx
// ends; then it closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// Searches get a moment to finish; after it, sessions with only
	// searches left (persistent and sync searches never finish) are ended,
	// while writes keep the rest of the grace period.
	searchesEnd := time.Now().Add(searchGrace)
	for {
		s.closeIdle(time.Now().After(searchesEnd))
		select {
		case <-done:
			s.stop()
			s.spares.close()
			return nil
		case <-ctx.Done():
			s.stop()
			s.mu.Lock()
			for sess := range s.sessions {
				sess.notice(ldap.LDAPResultUnavailable, "ldapgate: the gateway is shutting down")
				sess.close()
			}
			s.mu.Unlock()
			<-done
			s.spares.close()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// searchGrace is how long Shutdown lets searches run before it ends the
// sessions that have nothing else outstanding.
const searchGrace = time.Second

// closeIdle ends sessions that have nothing outstanding, or, with
// searchesToo, nothing but searches.
// A session with an intercepted write awaiting its answer is not idle;
// should one start meanwhile, close waits for it, so the sessions are
// closed outside the server's lock.
func (s *Server) closeIdle(searchesToo bool) {
	s.mu.Lock()
	var idle []*session
	for sess := range s.sessions {
		sess.mu.Lock()
		if sess.ops.awaitingAnswers() == 0 && (sess.ops.len() == 0 || searchesToo && !sess.ops.watching()) {
			idle = append(idle, sess)
		}
		sess.mu.Unlock()
	}
	s.mu.Unlock()
	for _, sess := range idle {
		sess.notice(ldap.LDAPResultUnavailable, "ldapgate: the gateway is shutting down")
		sess.close()
	}
}
