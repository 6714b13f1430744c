package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/loopback"
)

// fakeUpstream is a minimal directory: every bind, search and modify succeeds,
// except that the gateway's reset (an anonymous bind) is answered by
// onReset, which may write several messages in one TCP segment (cork).
type fakeUpstream struct {
	ln     net.Listener
	tlsCfg *tls.Config

	mu               sync.Mutex
	accepted, closed int
	resets           int

	onReset func(c *corkConn, w func([]byte), n int)
}

// corkConn holds writes while corked, so that several messages (TLS
// records) leave in one write.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *corkConn) cork() { c.mu.Lock(); c.corked = true; c.mu.Unlock() }

func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	_, _ = c.Conn.Write(c.buf)
	c.buf = nil
}

func startFakeUpstream(t *testing.T, tlsCfg *tls.Config, onReset func(c *corkConn, w func([]byte), n int)) *fakeUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUpstream{ln: ln, tlsCfg: tlsCfg, onReset: onReset}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			f.count(func() { f.accepted++ })
			go f.serve(raw)
		}
	}()
	return f
}

func (f *fakeUpstream) count(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
}

func (f *fakeUpstream) counts() (accepted, closed, resets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted, f.closed, f.resets
}

func (f *fakeUpstream) serve(raw net.Conn) {
	defer f.count(func() { f.closed++ })
	defer raw.Close()
	cc := &corkConn{Conn: raw}
	var conn net.Conn = cc
	if f.tlsCfg != nil {
		conn = tls.Server(cc, f.tlsCfg)
	}
	var wmu sync.Mutex
	w := func(b []byte) { wmu.Lock(); _, _ = conn.Write(b); wmu.Unlock() }
	r := ldapwire.NewReader(conn, 1<<20)
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		switch m.Op {
		case ldapwire.TagBindRequest:
			b, _ := decodeBind(m.OpContent)
			if b.name == "" && len(b.password) == 0 && f.onReset != nil {
				var n int
				f.count(func() { f.resets++; n = f.resets })
				f.onReset(cc, w, n)
				continue
			}
			w(encodeResponse(m.ID, ldapwire.TagBindResponse, 0, "", "", ""))
		case ldapwire.TagSearchRequest:
			w(encodeResponse(m.ID, ldapwire.TagSearchDone, 0, "", "", ""))
		case ldapwire.TagModifyRequest:
			w(encodeResponse(m.ID, ldapwire.TagModifyResponse, 0, "", "", ""))
		case ldapwire.TagUnbindRequest:
			return
		}
	}
}

type fakeDialer struct {
	addr string
	tls  *tls.Config
}

func (d fakeDialer) Dial(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil || d.tls == nil {
		return c, err
	}
	tc := tls.Client(c, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func serveGateway(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv, "ldap://" + ln.Addr().String()
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not synchronisation
	}
}

// oneSession binds, searches and ends with an unbind, as a connection-per-
// operation client does.
func oneSession(t *testing.T, url string) {
	t.Helper()
	c, err := ldap.DialURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(5 * time.Second)
	if err := c.Bind("cn=alice", "secret"); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if _, err := c.Search(ldap.NewSearchRequest("dc=example", ldap.ScopeBaseObject, 0, 0, 0, false, "(objectClass=*)", nil, nil)); err != nil {
		t.Fatalf("search: %v", err)
	}
	if err := c.Unbind(); err != nil {
		t.Fatalf("unbind: %v", err)
	}
}

func answerReset(id int64, code int) []byte {
	return encodeResponse(id, ldapwire.TagBindResponse, code, "", "", "")
}

// TestSpareResetAnswers proves that only a successful reset, with nothing
// after it, makes a spare; that the next session then reuses it; and that
// a directory refusing anonymous binds is not asked again.
func TestSpareResetAnswers(t *testing.T) {
	notice := ldapwire.Notice(ldap.LDAPResultUnavailable, "going away")
	cases := []struct {
		name       string
		answer     func(c *corkConn, w func([]byte))
		kept       bool
		resetsLeft bool // later sessions are still reset
	}{
		{"success", func(_ *corkConn, w func([]byte)) { w(answerReset(1, 0)) }, true, true},
		{"refused", func(_ *corkConn, w func([]byte)) { w(answerReset(1, ldap.LDAPResultInappropriateAuthentication)) }, false, false},
		{"busy", func(_ *corkConn, w func([]byte)) { w(answerReset(1, ldap.LDAPResultBusy)) }, false, true},
		{"wrong message ID", func(_ *corkConn, w func([]byte)) { w(answerReset(2, 0)) }, false, true},
		{"notice instead", func(_ *corkConn, w func([]byte)) { w(notice) }, false, true},
		{"success then a notice", func(c *corkConn, w func([]byte)) {
			c.cork()
			w(answerReset(1, 0))
			w(notice)
			c.uncork()
		}, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeUpstream(t, nil, func(c *corkConn, w func([]byte), n int) {
				if n == 1 {
					tc.answer(c, w)
					return
				}
				w(answerReset(1, 0))
			})
			srv, url := serveGateway(t, Config{Dialer: fakeDialer{addr: f.ln.Addr().String()}, EarlyDials: -1})
			oneSession(t, url)
			waitUntil(t, 5*time.Second, "the first reset settled", func() bool {
				_, closed, resets := f.counts()
				return resets == 1 && srv.Stats().UpstreamConns == 0 && (srv.Stats().SpareConns == 1 || closed == 1)
			})
			if got := srv.Stats().SpareConns == 1; got != tc.kept {
				t.Fatalf("kept as a spare: %v, want %v", got, tc.kept)
			}
			oneSession(t, url)
			waitUntil(t, 5*time.Second, "the second session ended", func() bool { return srv.Stats().UpstreamConns == 0 })
			accepted, _, resets := f.counts()
			wantAccepted := 2
			if tc.kept {
				wantAccepted = 1
			}
			if accepted != wantAccepted {
				t.Errorf("the directory accepted %d connections, want %d", accepted, wantAccepted)
			}
			if got := resets == 2; got != tc.resetsLeft {
				t.Errorf("resets after two sessions: %d (later sessions reset: %v, want %v)", resets, got, tc.resetsLeft)
			}
			waitUntil(t, 5*time.Second, "no reset left registered", func() bool { return resetsRegistered(srv) == 0 })
		})
	}
}

// TestSpareResetUnanswered proves that a session ends at once, whether or
// not the directory answers the reset, and that Shutdown closes a
// connection whose reset is still unanswered instead of waiting for it.
func TestSpareResetUnanswered(t *testing.T) {
	f := startFakeUpstream(t, nil, func(*corkConn, func([]byte), int) {}) // never answers
	srv, url := serveGateway(t, Config{Dialer: fakeDialer{addr: f.ln.Addr().String()}, EarlyDials: -1})
	oneSession(t, url)
	// Well under resetTimeout (5 s): the session does not wait for it.
	waitUntil(t, 2*time.Second, "the session ended", func() bool {
		_, _, resets := f.counts()
		return resets == 1 && srv.Stats().Connections == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	waitUntil(t, 2*time.Second, "the resetting connection closed", func() bool {
		_, closed, _ := f.counts()
		return closed == 1
	})
}

// resetsRegistered counts the connections the spares hold as being reset.
func resetsRegistered(srv *Server) int {
	srv.spares.mu.Lock()
	defer srv.spares.mu.Unlock()
	return len(srv.spares.reset)
}

// blockingCompletion intercepts every write with a Completion that waits
// for release.
type blockingCompletion struct{ entered, release chan struct{} }

func (h *blockingCompletion) Intercept(context.Context, SessionInfo, *WriteRequest) (Completion, *Result) {
	return func(context.Context, Result) {
		close(h.entered)
		<-h.release
	}, nil
}

// TestSpareNotWhileACompletionRuns proves that a client that unbinds while
// the Completion of its write still runs (it did not wait for the answer)
// does not get its connection reset: the session is not over until the
// Completion has run, and the directory gets the client's unbind.
func TestSpareNotWhileACompletionRuns(t *testing.T) {
	f := startFakeUpstream(t, nil, func(_ *corkConn, w func([]byte), _ int) { w(answerReset(1, 0)) })
	h := &blockingCompletion{entered: make(chan struct{}), release: make(chan struct{})}
	srv, url := serveGateway(t, Config{Dialer: fakeDialer{addr: f.ln.Addr().String()}, EarlyDials: -1, Interceptor: h})
	c, err := ldap.DialURL(url)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bind("cn=alice", "secret"); err != nil {
		t.Fatal(err)
	}
	go func() {
		mr := ldap.NewModifyRequest("cn=x,dc=example", nil)
		mr.Replace("description", []string{"y"})
		_ = c.Modify(mr)
	}()
	<-h.entered
	_ = c.Unbind()
	waitUntil(t, 5*time.Second, "the directory saw the session end", func() bool {
		_, closed, _ := f.counts()
		return closed == 1
	})
	close(h.release)
	waitUntil(t, 5*time.Second, "the session ended", func() bool {
		return srv.Stats().Connections == 0 && srv.Stats().UpstreamConns == 0
	})
	if _, _, resets := f.counts(); resets != 0 || srv.Stats().SpareConns != 0 || resetsRegistered(srv) != 0 {
		t.Errorf("the connection was reset for reuse (%d resets, %d spares) while a Completion ran", resets, srv.Stats().SpareConns)
	}
}

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestSpareTLSUpstream proves reuse over a TLS upstream, and that a message
// read into the TLS connection's own buffer along with the reset's answer
// (where neither the relay's reader nor a peek at the socket sees it)
// keeps the connection from being reused.
func TestSpareTLSUpstream(t *testing.T) {
	f := startFakeUpstream(t, selfSignedTLS(t), func(c *corkConn, w func([]byte), n int) {
		if n == 2 {
			c.cork()
			w(answerReset(1, 0))
			w(ldapwire.Notice(ldap.LDAPResultUnavailable, "going away"))
			c.uncork()
			return
		}
		w(answerReset(1, 0))
	})
	srv, url := serveGateway(t, Config{
		Dialer:     fakeDialer{addr: f.ln.Addr().String(), tls: &tls.Config{InsecureSkipVerify: true}},
		EarlyDials: -1,
	})
	settled := func(resets int) {
		t.Helper()
		waitUntil(t, 5*time.Second, "the reset settled", func() bool {
			_, _, n := f.counts()
			return n == resets && srv.Stats().UpstreamConns == 0
		})
	}
	oneSession(t, url)
	settled(1)
	oneSession(t, url) // reuses the spare; its reset is followed by a notice
	settled(2)
	if accepted, _, _ := f.counts(); accepted != 1 {
		t.Fatalf("the directory accepted %d connections for two sessions, want 1", accepted)
	}
	oneSession(t, url) // must not get the notice
	if accepted, _, _ := f.counts(); accepted != 2 {
		t.Errorf("the directory accepted %d connections, want 2: the connection with a notice waiting was reused", accepted)
	}
}

// closedByGateway reports whether the directory's end sees the connection
// closed.
func closedByGateway(t *testing.T, d net.Conn) bool {
	t.Helper()
	_ = d.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := d.Read(make([]byte, 1))
	return errors.Is(err, io.EOF)
}

func kept(p *spareConns, c net.Conn, route string) {
	p.resetting(c)
	p.settle(c, route, true)
}

func TestSpareConnsPool(t *testing.T) {
	t.Run("taken only for its route", func(t *testing.T) {
		p := newSpareConns(4, time.Minute)
		g, d := loopback.Pair(t)
		kept(p, g, "ldap://a")
		if c := p.take("ldap://b"); c != nil {
			t.Fatal("a spare to another upstream was taken")
		}
		if !closedByGateway(t, d) || p.len() != 0 {
			t.Error("a spare to an upstream no longer preferred was not closed")
		}
	})
	t.Run("newest first", func(t *testing.T) {
		p := newSpareConns(4, time.Minute)
		g1, _ := loopback.Pair(t)
		g2, _ := loopback.Pair(t)
		kept(p, g1, "")
		kept(p, g2, "")
		if c := p.take(""); c != g2 {
			t.Error("the newest spare was not taken first")
		}
	})
	t.Run("full", func(t *testing.T) {
		p := newSpareConns(1, time.Minute)
		g1, _ := loopback.Pair(t)
		g2, d2 := loopback.Pair(t)
		kept(p, g1, "")
		kept(p, g2, "")
		if !closedByGateway(t, d2) || p.len() != 1 {
			t.Error("a spare beyond the bound was kept")
		}
	})
	t.Run("closed by the directory", func(t *testing.T) {
		p := newSpareConns(4, time.Minute)
		g, d := loopback.Pair(t)
		kept(p, g, "")
		d.Close()
		waitUntil(t, 2*time.Second, "the spare sees the close", func() bool { return !quietSocket(g) })
		if c := p.take(""); c != nil {
			t.Error("a spare the directory closed was taken")
		}
	})
	t.Run("data waiting", func(t *testing.T) {
		p := newSpareConns(4, time.Minute)
		g, d := loopback.Pair(t)
		kept(p, g, "")
		_, _ = d.Write(ldapwire.Notice(ldap.LDAPResultUnavailable, "going away"))
		waitUntil(t, 2*time.Second, "the notice arrives", func() bool { return !quietSocket(g) })
		if c := p.take(""); c != nil {
			t.Error("a spare with a message waiting was taken")
		}
	})
	t.Run("reaped after the hold", func(t *testing.T) {
		p := newSpareConns(4, 20*time.Millisecond)
		g, d := loopback.Pair(t)
		kept(p, g, "")
		waitUntil(t, 2*time.Second, "the spare is reaped", func() bool { return p.len() == 0 })
		if !closedByGateway(t, d) {
			t.Error("a reaped spare was not closed")
		}
	})
	t.Run("close", func(t *testing.T) {
		p := newSpareConns(4, time.Minute)
		g1, d1 := loopback.Pair(t)
		g2, d2 := loopback.Pair(t)
		kept(p, g1, "")
		if !p.resetting(g2) {
			t.Fatal("resetting refused")
		}
		p.close()
		if !closedByGateway(t, d1) || !closedByGateway(t, d2) {
			t.Error("close left a spare or a resetting connection open")
		}
		g3, d3 := loopback.Pair(t)
		if p.resetting(g3) {
			t.Error("a closed pool accepts resets")
		}
		p.settle(g3, "", true)
		if !closedByGateway(t, d3) {
			t.Error("a closed pool kept a connection")
		}
	})
}
