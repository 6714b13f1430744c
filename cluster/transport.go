package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// One TCP port per node carries two kinds of connection: Raft's own
// (hashicorp/raft's NetworkTransport) and the gateway's RPC (forwarded
// proposals, status, membership). The dialler says which with the first
// byte it writes, inside TLS when the cluster has it.
const (
	kindRaft byte = 'R'
	kindRPC  byte = 'P'
)

// handshakeTimeout bounds an accepted connection's TLS handshake and its
// first byte, so that a silent client cannot hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

// TLSConfig is the mutual-TLS configuration of a cluster node, for its
// listener and its dialler alike: it presents the node's certificate
// (certFile, keyFile: PEM) and accepts a peer, client or server, only if
// the peer's certificate chains to the CA in caFile (PEM), TLS 1.2 or
// later.
//
// The peer's names are not checked: every certificate the CA signed is a
// member of the cluster. Peers are often dialled by IP address, and a
// node's certificate then serves both as server and as client, so the
// trust is the CA's: give the cluster a CA of its own, not one that signs
// other services' certificates. For the same reason the certificate's
// extended key usage is not checked (a certificate issued for servers only
// also works as the client's).
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("cluster TLS: load the node's certificate: %w", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster TLS: read the CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("cluster TLS: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// Both ends verify the other in VerifyConnection, against the CA
		// alone (see above): the standard checks would compare the
		// dialled host with the server's names, and demand the client
		// extended key usage.
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true,
		VerifyConnection:   verifyPeer(pool),
	}, nil
}

// verifyPeer accepts a connection whose peer presented a certificate
// chain that leads to a CA of pool.
func verifyPeer(pool *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("cluster TLS: the peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("cluster TLS: the peer's certificate is not signed by the cluster's CA: %w", err)
		}
		return nil
	}
}

// IsLoopback reports whether addr (host:port) names this machine's
// loopback interface: an address plain TCP may use.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkPlain refuses a cluster without TLS unless every address is on
// loopback: the cluster port carries the journal, secrets included.
func checkPlain(addrs ...string) error {
	for _, a := range addrs {
		if !IsLoopback(a) {
			return fmt.Errorf("cluster: %s is not a loopback address: a cluster reached over the network needs mutual TLS (--cluster-tls-cert, --cluster-tls-key, --cluster-ca)", a)
		}
	}
	return nil
}

// mux is a node's cluster port: it accepts connections (with TLS when
// configured), reads each one's first byte and hands Raft's to the Raft
// transport (through raftStream) and the RPC's to serve. It also dials
// the other nodes' ports.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config
	log       *slog.Logger
	serve     func(net.Conn) // an RPC connection, after its first byte

	raftConns chan net.Conn
	quit      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	// isolated: tests cut the node off (see export_test.go): no dial, no
	// accept, and every open connection is closed.
	isolated atomic.Bool
	mu       sync.Mutex
	conns    map[*trackedConn]struct{}
}

func newMux(ln net.Listener, advertise string, tlsConf *tls.Config, log *slog.Logger) (*mux, error) {
	m := &mux{ln: ln, tls: tlsConf, log: log, raftConns: make(chan net.Conn), quit: make(chan struct{}), conns: map[*trackedConn]struct{}{}}
	m.advertise = ln.Addr()
	if advertise != "" {
		if _, _, err := net.SplitHostPort(advertise); err != nil {
			return nil, fmt.Errorf("cluster: advertised address %s: %w", advertise, err)
		}
		m.advertise = tcpAddr(advertise)
	}
	return m, nil
}

// tcpAddr is an address as the peer list spells it.
type tcpAddr string

func (tcpAddr) Network() string  { return "tcp" }
func (a tcpAddr) String() string { return string(a) }

// start accepts connections until close.
func (m *mux) start(serve func(net.Conn)) {
	m.serve = serve
	m.wg.Add(1)
	go m.accept()
}

func (m *mux) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.quit:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			m.log.Warn("cluster port: accept", "err", err)
			time.Sleep(50 * time.Millisecond) // pacing: out of file descriptors
			continue
		}
		if m.isolated.Load() {
			c.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.route(c)
		}()
	}
}

// route handshakes an accepted connection, reads its kind and passes it on.
func (m *mux) route(raw net.Conn) {
	c := m.track(raw)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	var conn net.Conn = c
	if m.tls != nil {
		tc := tls.Server(c, m.tls)
		if err := tc.Handshake(); err != nil {
			m.log.Warn("cluster port: refused a connection", "remote", raw.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		conn = tc
	}
	var kind [1]byte
	if _, err := io.ReadFull(conn, kind[:]); err != nil {
		conn.Close()
		return
	}
	c.SetDeadline(time.Time{})
	switch kind[0] {
	case kindRaft:
		select {
		case m.raftConns <- conn:
		case <-m.quit:
			conn.Close()
		}
	case kindRPC:
		m.serve(conn)
	default:
		m.log.Warn("cluster port: unknown connection kind", "remote", raw.RemoteAddr().String(), "kind", kind[0])
		conn.Close()
	}
}

// dial connects to another node's cluster port for kind.
func (m *mux) dial(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	if m.isolated.Load() {
		return nil, fmt.Errorf("dial %s: isolated by the test", addr)
	}
	return dialKind(ctx, addr, m.tls, kind, m.track)
}

// dialKind connects to a cluster port at addr, with TLS when tlsConf is
// set, and writes kind. wrap, when set, wraps the TCP connection.
func dialKind(ctx context.Context, addr string, tlsConf *tls.Config, kind byte, wrap func(net.Conn) *trackedConn) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var c net.Conn = raw
	if wrap != nil {
		c = wrap(raw)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if tlsConf != nil {
		conf := tlsConf
		if conf.ServerName == "" && !conf.InsecureSkipVerify {
			// A configuration of the caller's own, verifying names: the
			// dialled host is the name to verify.
			conf = conf.Clone()
			conf.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// close stops accepting, closes the listener and every connection.
func (m *mux) close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.quit)
		err = m.ln.Close()
		m.closeAll()
		m.wg.Wait()
	})
	return err
}

// isolate cuts the node off the network, or connects it again (tests).
func (m *mux) isolate(on bool) {
	m.isolated.Store(on)
	if on {
		m.closeAll()
	}
}

func (m *mux) closeAll() {
	m.mu.Lock()
	conns := make([]*trackedConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// trackedConn is a connection the mux closes when it closes or the node
// is isolated.
type trackedConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

func (m *mux) track(c net.Conn) *trackedConn {
	t := &trackedConn{Conn: c, m: m}
	m.mu.Lock()
	m.conns[t] = struct{}{}
	m.mu.Unlock()
	return t
}

func (t *trackedConn) Close() error {
	t.once.Do(func() {
		t.m.mu.Lock()
		delete(t.m.conns, t)
		t.m.mu.Unlock()
	})
	return t.Conn.Close()
}

// raftStream is the mux as Raft's stream layer.
type raftStream struct{ m *mux }

var _ raft.StreamLayer = raftStream{}

func (s raftStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftConns:
		return c, nil
	case <-s.m.quit:
		return nil, net.ErrClosed
	}
}

func (s raftStream) Close() error { return s.m.close() }

// Addr is the address the other nodes reach this one at: the one in the
// peer list, which a listener on all interfaces does not know.
func (s raftStream) Addr() net.Addr { return s.m.advertise }

func (s raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.m.dial(ctx, string(addr), kindRaft)
}

// raftLogger passes hashicorp/raft's messages to slog.
func raftLogger(log *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, Output: io.Discard})
	l.RegisterSink(slogSink{log})
	return l
}

type slogSink struct{ log *slog.Logger }

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	l := slog.LevelDebug
	switch {
	case level >= hclog.Error:
		l = slog.LevelError
	case level == hclog.Warn:
		l = slog.LevelWarn
	case level == hclog.Info:
		l = slog.LevelInfo
	}
	for i, a := range args {
		// Raft formats some values with hclog.Fmt, which slog would print
		// as the slice of the format and its arguments.
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	s.log.Log(context.Background(), l, msg, append(args, "logger", name)...)
}
