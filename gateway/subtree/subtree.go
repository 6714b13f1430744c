// Package subtree serves the gateway's own read-only directory: cn=changelog
// (the journal's records as entries, in the spirit of
// draft-good-ldap-changelog) and cn=ldapgate,cn=monitor (connections,
// operations, upstream health, delivery backlog). The monitor lives below
// cn=monitor rather than at it so that OpenLDAP's own cn=Monitor stays
// reachable through the gateway.
//
// Entries (all read-only, objectClass extensibleObject):
//
//	cn=changelog                      firstChangeNumber, lastChangeNumber
//	changeNumber=N,cn=changelog       changeNumber, targetDN, changeType (add, modify,
//	                                  delete, modrdn), changeTime, changes (LDIF; a
//	                                  password shows as "(password)"), newRDN,
//	                                  newSuperior and newDN of a rename, entryKind,
//	                                  entryKey, actor, clientAddress, deliveryState,
//	                                  deliveryAttempts, lastError, nextAttempt,
//	                                  deliveredAt, secretState, note
//	cn=connections,cn=ldapgate,cn=monitor       currentConnections, totalConnections, rejectedConnections
//	cn=operations,cn=ldapgate,cn=monitor        requests
//	cn=upstream,cn=ldapgate,cn=monitor          upstreamConnections, spareConnections,
//	                                  upstreamFailures, upstreamsUp, upstreamsDown
//	cn=upstreamN,cn=upstream,cn=ldapgate,cn=monitor  upstreamURL, status (up, down), since, lastError
//	cn=journal,cn=ldapgate,cn=monitor           backlog, prepared, committed, delivered, dead,
//	                                  inFlight, oldestPendingSeconds,
//	                                  oldestPendingChangeNumber, lastChangeNumber
//
// Searches take any scope and filter (extensible matches are Undefined),
// the paged results control, size and time limits and attribute lists. A
// search of cn=changelog's children streams from the journal, a page of
// records at a time (store.Journal.Range), so its memory does not depend
// on the journal's length; one bounded by changeNumber reads only those
// records, so a follower polling (changeNumber>=N) stays cheap. The paged
// results cookie is a position in the journal, not an offset in a list.
//
// The entries are served with gldap on a loopback port that only the
// gateway can use: each connection opened by Dial first binds with a
// one-time token that the server issued to itself, so another local process
// that finds the port reads nothing, and a token seen by a stranger who
// took the port first is useless. The server proves itself in turn (its
// bind answer carries an HMAC of the token under a key only this process
// has), so a process that took the port receives no query. The relay (gateway.Config.Local) checks
// who may read before it routes a request here; this server trusts it.
//
// gldap closes a connection on Compare, Abandon and some filters (see
// docs/architecture.md, "Libraries"), which would end the client's whole
// session. So the connection Dial hands the gateway (a *Conn) has an
// Answer method the session asks first: it answers Compare, stops the
// search an Abandon names, refuses writes and filters gldap cannot
// decode, and leaves only searches to gldap.
package subtree

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jimlambrt/gldap"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/store"
)

// Suffixes are the DNs the subtree answers for; the gateway routes reads
// under them here (gateway.LocalDirectory.Suffixes).
func Suffixes() []string { return []string{changelogDN, monitorDN} }

// Config holds what the subtree shows.
type Config struct {
	// Journal is shown as cn=changelog. Required.
	Journal *store.Journal
	// GatewayStats returns the relay's counters for cn=monitor; nil shows zeros.
	GatewayStats func() gateway.Stats
	// UpstreamHealth returns each upstream's state for cn=monitor
	// (gateway.UpstreamSet.Health); nil shows none.
	UpstreamHealth func() []gateway.UpstreamHealth
	// Cluster, on a clustered gateway, returns the node's state for
	// cn=cluster,cn=ldapgate,cn=monitor as attribute values (role, term,
	// indexes, each node's lag, the fence); nil: no such entry.
	Cluster func() map[string][]string
	// Logger receives the server's warnings (nil: discarded).
	Logger *slog.Logger
	// SearchTimeLimit caps how long one search request runs, whatever
	// time limit the client asks for, none included: a walk of a long
	// journal whose filter matches little cannot hold a connection and a
	// core for ever. The search then ends with timeLimitExceeded (3); a
	// paged search gets the cap per page. 0 means DefaultSearchTimeLimit;
	// negative, no cap.
	SearchTimeLimit time.Duration
}

// DefaultSearchTimeLimit is Config.SearchTimeLimit's default.
const DefaultSearchTimeLimit = 60 * time.Second

// internalBindDN is the identity each connection binds with, its
// password a one-time token.
const internalBindDN = "cn=ldapgate-subtree"

// Server is the running subtree server.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	addr    string // 127.0.0.1:port once started
	ldap    *gldap.Server
	runDone chan struct{}
	closed  bool
	// proofKey proves the server to the gateway: a successful token bind
	// carries proof(token) as its diagnostic, which only this process can
	// compute, so a process that took the loopback port cannot pass for
	// the subtree server and receive the admins' queries.
	proofKey []byte
	tokens   map[string]bool // issued and not yet used
	authed   map[int]bool    // gldap connection IDs that presented a token
	// byToken tells authenticate which gldap connection presented its
	// token, so that its Conn can name that connection's searches.
	byToken map[string]int
	// running holds a stop flag per search in progress, by gldap
	// connection and message ID: an Abandon sets it (Conn.Answer).
	running  map[searchKey]*atomic.Bool
	conns    map[*Conn]struct{} // open connections handed to the gateway
	stopOnce sync.Once
}

// New checks cfg and returns a Server to Start.
func New(cfg Config) (*Server, error) {
	if cfg.Journal == nil {
		return nil, errors.New("subtree: no journal to serve as cn=changelog")
	}
	if cfg.GatewayStats == nil {
		cfg.GatewayStats = func() gateway.Stats { return gateway.Stats{} }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SearchTimeLimit == 0 {
		cfg.SearchTimeLimit = DefaultSearchTimeLimit
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("subtree: proof key: %w", err)
	}
	return &Server{
		cfg:      cfg,
		proofKey: key,
		log:      cfg.Logger.With("component", "subtree"),
		tokens:   make(map[string]bool),
		authed:   make(map[int]bool),
		byToken:  make(map[string]int),
		running:  make(map[searchKey]*atomic.Bool),
		conns:    make(map[*Conn]struct{}),
	}, nil
}

// Start runs the gldap server on a loopback port and returns once it
// answers. The server runs until Close; ctx bounds only the start.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("subtree: start after close")
	}
	if s.ldap != nil {
		s.mu.Unlock()
		return errors.New("subtree: already started")
	}
	s.mu.Unlock()
	const attempts = 5
	var lastErr error
	for range attempts {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("subtree: start: %w", err)
		}
		lastErr = s.startOnce(ctx)
		if lastErr == nil {
			return nil
		}
		s.log.Debug("subtree server did not start; trying another port", "err", lastErr)
	}
	return fmt.Errorf("subtree: start: %w", lastErr)
}

// startOnce runs gldap on a port the OS just had free. gldap cannot serve
// a listener of ours, so the port is probed, released and taken again by
// gldap; if someone else takes it in between, the token bind fails and the
// caller tries again.
func (s *Server) startOnce(ctx context.Context) error {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("find a loopback port: %w", err)
	}
	addr := probe.Addr().String()
	probe.Close()

	srv, err := gldap.NewServer(gldap.WithLogger(hclog.New(&hclog.LoggerOptions{
		Name:   "gldap",
		Level:  hclog.Warn,
		Output: logWriter{s.log},
	})), gldap.WithOnClose(s.forgetConn))
	if err != nil {
		return fmt.Errorf("create gldap server: %w", err)
	}
	mux, err := s.routes()
	if err == nil {
		err = srv.Router(mux)
	}
	if err != nil {
		return fmt.Errorf("gldap routes: %w", err)
	}
	runErr := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr <- srv.Run(addr)
	}()
	s.mu.Lock()
	s.ldap, s.addr, s.runDone = srv, addr, done
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-runErr:
			s.reset(srv)
			if err == nil {
				err = errors.New("gldap stopped")
			}
			return err
		case <-ctx.Done():
			s.reset(srv)
			return ctx.Err()
		case <-tick.C:
		}
		if !srv.Ready() {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := s.Dial(pctx)
		cancel()
		if err == nil {
			c.Close()
			s.log.Debug("subtree server listening", "addr", addr)
			return nil
		}
		if time.Now().After(deadline) {
			s.reset(srv)
			return fmt.Errorf("gldap on %s does not answer: %w", addr, err)
		}
	}
}

// reset forgets a gldap server that failed to start.
func (s *Server) reset(srv *gldap.Server) {
	_ = srv.Stop()
	s.mu.Lock()
	done := s.runDone
	s.ldap, s.addr, s.runDone = nil, "", nil
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Close closes every connection and stops the server.
func (s *Server) Close() error {
	var err error
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		srv, done := s.ldap, s.runDone
		conns := make([]*Conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		// gldap's Stop waits for its connections, so they go first.
		for _, c := range conns {
			c.Close()
		}
		if srv != nil {
			if serr := srv.Stop(); serr != nil {
				err = fmt.Errorf("subtree: stop: %w", serr)
			}
			<-done
		}
	})
	return err
}

// Dial opens a connection to the subtree for one gateway session.
func (s *Server) Dial(ctx context.Context) (net.Conn, error) {
	s.mu.Lock()
	addr, closed := s.addr, s.closed
	s.mu.Unlock()
	if closed {
		return nil, errors.New("subtree: server closed")
	}
	if addr == "" {
		return nil, errors.New("subtree: server not started")
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("subtree: dial %s: %w", addr, err)
	}
	connID, err := s.authenticate(ctx, up)
	if err != nil {
		up.Close()
		return nil, err
	}
	c := &Conn{Conn: up, srv: s, connID: connID}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		up.Close()
		return nil, errors.New("subtree: server closed")
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return c, nil
}

// authenticate binds a fresh connection with a one-time token, and
// returns the gldap connection ID the server gave it.
func (s *Server) authenticate(ctx context.Context, c net.Conn) (int, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return 0, fmt.Errorf("subtree: token: %w", err)
	}
	token := hex.EncodeToString(buf)
	s.mu.Lock()
	s.tokens[token] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.tokens, token)
		delete(s.byToken, token)
		s.mu.Unlock()
	}()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = c.SetDeadline(deadline)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := c.Write(ldapwire.AppendMessage(nil, 1, ldapwire.AppendBindRequest(nil, internalBindDN, []byte(token)))); err != nil {
		return 0, fmt.Errorf("subtree: authenticate: %w", err)
	}
	m, err := ldapwire.NewReader(c, maxFrame).Next()
	if err != nil {
		return 0, fmt.Errorf("subtree: authenticate: %w", err)
	}
	res, err := ldapwire.DecodeResult(m.OpContent)
	if err != nil {
		return 0, fmt.Errorf("subtree: authenticate: malformed bind response: %w", err)
	}
	if m.ID != 1 || m.Op != ldapwire.TagBindResponse || res.Code != 0 {
		return 0, fmt.Errorf("subtree: authenticate: bind answered with result %d", res.Code)
	}
	if !hmac.Equal([]byte(res.Diagnostic), []byte(s.proof(token))) {
		return 0, errors.New("subtree: authenticate: the server on the loopback port did not prove it is the gateway's own")
	}
	s.mu.Lock()
	connID, known := s.byToken[token]
	s.mu.Unlock()
	if !known {
		return 0, errors.New("subtree: authenticate: the server did not see the token")
	}
	return connID, nil
}

// searchKey names a search in progress: its gldap connection and its
// message ID.
type searchKey struct {
	conn int
	msg  int64
}

// startSearch registers a search in progress and returns its stop flag and
// the function that forgets it.
func (s *Server) startSearch(k searchKey) (*atomic.Bool, func()) {
	stop := new(atomic.Bool)
	s.mu.Lock()
	s.running[k] = stop
	s.mu.Unlock()
	return stop, func() {
		s.mu.Lock()
		if s.running[k] == stop {
			delete(s.running, k)
		}
		s.mu.Unlock()
	}
}

// stopSearch stops the search k, if it is still running.
func (s *Server) stopSearch(k searchKey) {
	s.mu.Lock()
	stop := s.running[k]
	s.mu.Unlock()
	if stop != nil {
		stop.Store(true)
	}
}

// proof is what the server answers a valid token with: a MAC of the
// token under the server's key.
func (s *Server) proof(token string) string {
	mac := hmac.New(sha256.New, s.proofKey)
	mac.Write([]byte(token))
	return hex.EncodeToString(mac.Sum(nil))
}

// useToken consumes a token issued by authenticate.
func (s *Server) useToken(pw string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(pw)) == 1 {
			delete(s.tokens, t)
			return true
		}
	}
	return false
}

func (s *Server) forgetConn(id int) {
	s.mu.Lock()
	delete(s.authed, id)
	s.mu.Unlock()
}

func (s *Server) isAuthed(id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authed[id]
}

func (s *Server) dropConn(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// logWriter turns gldap's log lines into slog warnings.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if line != "" {
			w.log.Warn("gldap", "line", line)
		}
	}
	return len(p), nil
}

var _ io.Writer = logWriter{}

// parseChangeNumber reads N from the RDN value of changeNumber=N.
func parseChangeNumber(v string) (uint64, bool) {
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil && n > 0
}
