// Package axigensim is an in-memory Axigen administration CLI server that
// behaves as docs/axigen-cli.md describes: a banner, prompts with no
// line break, login with maxAuthErrors, closing after maxErrors, contexts joined by '-', COMMIT, DONE
// and BACK, "+OK:"/"-ERR:" status lines, SHOW and LIST output. It holds
// accounts and groups per domain, records a transcript of every session, and
// injects faults (latency, refused connections, dropped connections,
// -ERR answers) for tests. The protocol forms the document leaves open are
// kept together in format.go.
//
// It is a real TCP server, one goroutine per session: clients under test
// talk to it exactly as they would to Axigen.
package axigensim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Addr is the listen address; "127.0.0.1:0" when empty.
	Addr string
	// TLS, when set, makes the listener speak TLS.
	TLS *tls.Config
	// Admins maps administrator names to passwords: who may log in.
	Admins map[string]string
	// Domains are created empty at start.
	Domains []string
	// MaxAuthErrors is how many failed logins close a connection (3 when 0).
	MaxAuthErrors int
	// MaxErrors is how many -ERR answers to a logged-in session's commands
	// close it after the last one (10 when 0).
	MaxErrors int
	// Logger receives one debug record per command, passwords masked.
	Logger *slog.Logger
}

// AccountState is an account as the simulator holds it.
type AccountState struct {
	Name     string
	Password string
	// Contact holds every ContactInfo field that is not empty.
	Contact map[string]string
	// LDAPID and LDAPDN are "Associated LDAP ID"/"Associated LDAP DN". The
	// CLI document shows them in SHOW RegistryInformation but names no
	// command that sets them (Axigen's own LDAP connector does), so the
	// simulator lets only tests set them, with SetAssociation.
	LDAPID string
	LDAPDN string
	// Services are the services the account's Limits set for it (SET
	// services); nil when it inherits them (all on, or RESET services).
	Services []string
	// Enabled reports whether the account may log in or receive mail: it
	// inherits its services or keeps one of loginServices (derived from
	// Services at every COMMIT and PutAccount).
	Enabled bool
}

// GroupState is a group as the simulator holds it.
type GroupState struct {
	Name    string
	Members []string // in the order they were added
}

type domainState struct {
	name     string
	accounts map[string]*AccountState // keyed by lower-case name
	groups   map[string]*GroupState   // keyed by lower-case name
	// settings are the domain's own settings a SET in its context changed
	// and a COMMIT saved (a real domain context has many: the simulator
	// keeps any name), so that a test sees a SET that ran in the domain's
	// context instead of an account's.
	settings map[string]string
}

type failRule struct {
	re      *regexp.Regexp
	errText string
	skip    int  // matching commands still run before the rule fires
	once    bool // the rule goes once it has fired
}

// Server is the simulator. Create it with New, then Start it.
type Server struct {
	opts Options
	log  *slog.Logger

	mu          sync.Mutex
	addr        string // fixed at the first Start so that SetDown(false) reuses it
	ln          net.Listener
	extra       []*labelled // listeners added with Listen
	closed      bool
	down        bool
	latency     time.Duration
	dropAfter   int // commands still answered before a drop; <0 off
	failRules   []failRule
	domains     map[string]*domainState
	transcripts []*Transcript
	conns       map[net.Conn]struct{}
	done        chan struct{} // closed by Close, ends latency waits
	onAccount   func(domain string, a AccountState)
	commands    []Command
	changes     uint64 // changes numbered so far (Change.Seq)

	wg sync.WaitGroup
}

// labelled is a further listener on the same state, whose sessions carry
// its label.
type labelled struct {
	label string
	addr  string // fixed at Listen, reused by SetDown(false)
	ln    net.Listener
}

// New returns a Server that is not yet listening.
func New(opts Options) *Server {
	if opts.MaxAuthErrors <= 0 {
		opts.MaxAuthErrors = defaultMaxAuthErrors
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = defaultMaxErrors
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:      opts,
		log:       log,
		dropAfter: -1,
		domains:   map[string]*domainState{},
		conns:     map[net.Conn]struct{}{},
		done:      make(chan struct{}),
	}
	for _, d := range opts.Domains {
		s.AddDomain(d)
	}
	return s
}

// Start listens and serves in the background until ctx ends or Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("axigensim: server closed")
	}
	if s.ln != nil {
		return errors.New("axigensim: already started")
	}
	if err := s.listenLocked(s.opts.Addr); err != nil {
		return err
	}
	s.addr = s.ln.Addr().String()
	// Not counted in wg: Close waits for wg, and this goroutine calls Close.
	go func() {
		select {
		case <-ctx.Done():
			s.Close()
		case <-s.done:
		}
	}()
	return nil
}

func (s *Server) listenLocked(addr string) error {
	ln, err := s.serveLocked(addr, "")
	if err != nil {
		return err
	}
	s.ln = ln
	return nil
}

// serveLocked listens on addr and accepts sessions labelled label.
func (s *Server) serveLocked(addr, label string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("axigensim: listen %s: %w", addr, err)
	}
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.wg.Add(1)
	go s.acceptLoop(ln, label)
	return ln, nil
}

// Listen adds a listener on a new loopback port that serves the same
// accounts and groups, and returns its address. Its sessions' transcripts
// and commands carry label, so that a test with several clients (the
// gateways of a cluster, each given its own address) can tell which one
// sent what. It needs a started server; Close and SetDown act on it too.
func (s *Server) Listen(label string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ln == nil {
		return "", errors.New("axigensim: Listen needs a started server")
	}
	if s.down {
		return "", errors.New("axigensim: Listen while the server is down")
	}
	ln, err := s.serveLocked("127.0.0.1:0", label)
	if err != nil {
		return "", err
	}
	l := &labelled{label: label, addr: ln.Addr().String(), ln: ln}
	s.extra = append(s.extra, l)
	return l.addr, nil
}

// Addr returns the address the server listens on ("host:port").
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops listening, cuts every session and waits for them to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.done)
	s.cutLocked()
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// cutLocked closes the listener and every connection.
func (s *Server) cutLocked() {
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
	for _, l := range s.extra {
		if l.ln != nil {
			l.ln.Close()
			l.ln = nil
		}
	}
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) acceptLoop(ln net.Listener, label string) {
	defer s.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return // listener closed (Close or SetDown)
		}
		s.mu.Lock()
		if s.closed || s.down {
			s.mu.Unlock()
			conn.Close()
			continue
		}
		t := &Transcript{ID: len(s.transcripts) + 1, Label: label}
		s.transcripts = append(s.transcripts, t)
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.log.Debug("axigen-sim session opened", "session", t.ID, "label", label, "remote", conn.RemoteAddr().String())
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
				s.log.Debug("axigen-sim session closed", "session", t.ID)
			}()
			newSession(s, conn, t).serve()
		}()
	}
}

// SetLatency delays every answer (and the banner) by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// OnAccountCommit makes every committed account change call fn (nil: none)
// with the account as saved, from the committing session's goroutine, after
// the change is visible to Account. Tests that time deliveries wait on it
// instead of polling the simulator.
func (s *Server) OnAccountCommit(fn func(domain string, a AccountState)) {
	s.mu.Lock()
	s.onAccount = fn
	s.mu.Unlock()
}

// SetDown(true) stops listening, so that new connections are refused, and
// cuts every session; SetDown(false) listens again on the same address.
func (s *Server) SetDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.down == down {
		return nil
	}
	s.down = down
	if down {
		s.cutLocked()
		return nil
	}
	if err := s.listenLocked(s.addr); err != nil {
		return err
	}
	for _, l := range s.extra {
		ln, err := s.serveLocked(l.addr, l.label)
		if err != nil {
			return err
		}
		l.ln = ln
	}
	return nil
}

// DropAfter makes the server answer n more commands (over all sessions),
// then cut the connection that sends the next one, without running it.
// A negative n turns the fault off. It fires once.
func (s *Server) DropAfter(n int) {
	s.mu.Lock()
	s.dropAfter = n
	s.mu.Unlock()
}

// FailMatching makes every command line matching re (secrets included in
// what is matched) fail with "-ERR: errText" without running. Rules stay
// until ClearFaults.
func (s *Server) FailMatching(re *regexp.Regexp, errText string) {
	s.mu.Lock()
	s.failRules = append(s.failRules, failRule{re: re, errText: errText})
	s.mu.Unlock()
}

// FailNth makes the command after the first skip lines matching re (over
// all sessions) fail with "-ERR: errText" without running, once: a refused
// COMMIT of one account among several, say.
func (s *Server) FailNth(re *regexp.Regexp, skip int, errText string) {
	s.mu.Lock()
	s.failRules = append(s.failRules, failRule{re: re, errText: errText, skip: skip, once: true})
	s.mu.Unlock()
}

// ClearFaults removes latency, drop and -ERR faults (not SetDown).
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.latency = 0
	s.dropAfter = -1
	s.failRules = nil
	s.mu.Unlock()
}

// Transcripts returns every session's transcript, oldest first.
func (s *Server) Transcripts() []*Transcript {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Transcript(nil), s.transcripts...)
}

// Transcript returns the transcript of session id (from 1), or nil.
func (s *Server) Transcript(id int) *Transcript {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id < 1 || id > len(s.transcripts) {
		return nil
	}
	return s.transcripts[id-1]
}

// SessionCount is the number of sessions accepted so far.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.transcripts)
}

// AddDomain creates an empty domain (no-op when it exists).
func (s *Server) AddDomain(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(name)
	if _, ok := s.domains[key]; !ok {
		s.domains[key] = &domainState{name: name, accounts: map[string]*AccountState{}, groups: map[string]*GroupState{}}
	}
}

// Account returns a copy of an account's state.
func (s *Server) Account(domain, name string) (AccountState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return AccountState{}, false
	}
	a := d.accounts[strings.ToLower(name)]
	if a == nil {
		return AccountState{}, false
	}
	return a.clone(), true
}

// DomainSettings returns a copy of the settings SET in the domain's own
// context and saved with COMMIT (values as sent, passwords included).
func (s *Server) DomainSettings(domain string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return nil
	}
	return maps.Clone(d.settings)
}

// Accounts returns copies of a domain's accounts, sorted by name.
func (s *Server) Accounts(domain string) []AccountState {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return nil
	}
	out := make([]AccountState, 0, len(d.accounts))
	for _, a := range d.accounts {
		out = append(out, a.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Group returns a copy of a group's state.
func (s *Server) Group(domain, name string) (GroupState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return GroupState{}, false
	}
	g := d.groups[strings.ToLower(name)]
	if g == nil {
		return GroupState{}, false
	}
	return g.clone(), true
}

// Groups returns copies of a domain's groups, sorted by name.
func (s *Server) Groups(domain string) []GroupState {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return nil
	}
	out := make([]GroupState, 0, len(d.groups))
	for _, g := range d.groups {
		out = append(out, g.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutAccount stores an account directly (test set-up), replacing any
// account of the same name. It reports false when the domain is unknown.
func (s *Server) PutAccount(domain string, a AccountState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return false
	}
	c := a.clone()
	c.Enabled = servesLogins(c.Services)
	d.accounts[strings.ToLower(a.Name)] = &c
	return true
}

// PutGroup stores a group directly (test set-up).
func (s *Server) PutGroup(domain string, g GroupState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return false
	}
	c := g.clone()
	d.groups[strings.ToLower(g.Name)] = &c
	return true
}

// SetAssociation sets an account's "Associated LDAP ID" and "DN", as
// Axigen's LDAP connector would (the CLI document shows no command for it).
func (s *Server) SetAssociation(domain, name, ldapID, ldapDN string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.domains[strings.ToLower(domain)]
	if d == nil {
		return false
	}
	a := d.accounts[strings.ToLower(name)]
	if a == nil {
		return false
	}
	a.LDAPID, a.LDAPDN = ldapID, ldapDN
	return true
}

func (a *AccountState) clone() AccountState {
	c := *a
	c.Services = slices.Clone(a.Services)
	c.Contact = make(map[string]string, len(a.Contact))
	for k, v := range a.Contact {
		if v != "" {
			c.Contact[k] = v
		}
	}
	return c
}

func (g *GroupState) clone() GroupState {
	c := *g
	c.Members = append([]string(nil), g.Members...)
	return c
}

// faultFor decides, under the lock, what happens to one incoming command:
// drop the connection, fail it with an -ERR text, or run it.
func (s *Server) faultFor(line string) (drop bool, errText string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropAfter == 0 {
		s.dropAfter = -1
		return true, "", false
	}
	if s.dropAfter > 0 {
		s.dropAfter--
	}
	for i := range s.failRules {
		r := &s.failRules[i]
		if !r.re.MatchString(line) {
			continue
		}
		if r.skip > 0 {
			r.skip--
			continue
		}
		text := r.errText
		if r.once {
			s.failRules = append(s.failRules[:i], s.failRules[i+1:]...)
		}
		return false, text, true
	}
	return false, "", false
}

// wait applies the configured latency; it returns false when the server is
// closing.
func (s *Server) wait() bool {
	s.mu.Lock()
	d := s.latency
	s.mu.Unlock()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}
