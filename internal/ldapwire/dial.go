package ldapwire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/internal/deadline"
	"github.com/ldapgate/ldapgate/internal/rawsock"
)

// Endpoint is a directory server to dial: a parsed ldap:// or ldaps://
// URL and how to secure the connection.
type Endpoint struct {
	// URL is the URL as configured.
	URL string
	// Address is host:port, the port defaulted from the scheme.
	Address string
	// TLS is set for ldaps://: TLS from the first byte.
	TLS bool
	// StartTLS upgrades an ldap:// connection before it is used.
	StartTLS bool
	// TLSConfig configures ldaps:// and StartTLS; nil means the system
	// roots, and an empty ServerName the URL's host.
	TLSConfig *tls.Config
	// RawSyscalls makes Dial wrap the TCP connection with rawsock (under
	// TLS too), for a connection carrying short exchanges, where raw
	// system calls save most of the runtime's wake-ups. A rawsock.Conn
	// takes one reader and one writer at a time, so only a connection that
	// stays with one owner should be dialled so; the relay, which hands
	// upstream connections from session to session, wraps them per session
	// instead.
	RawSyscalls bool
}

// ParseURL checks a directory URL (ldap://host[:port] or
// ldaps://host[:port], no DN path) and fills in the default port.
func ParseURL(raw string) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("directory URL %q: %w", raw, err)
	}
	e := Endpoint{URL: raw}
	switch strings.ToLower(u.Scheme) {
	case "ldap":
		e.Address = withDefaultPort(u.Host, "389")
	case "ldaps":
		e.Address = withDefaultPort(u.Host, "636")
		e.TLS = true
	default:
		return Endpoint{}, fmt.Errorf("directory URL %q: scheme must be ldap or ldaps", raw)
	}
	if u.Hostname() == "" {
		return Endpoint{}, fmt.Errorf("directory URL %q: no host", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return Endpoint{}, fmt.Errorf("directory URL %q: a URL path is not allowed", raw)
	}
	return e, nil
}

func withDefaultPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// tlsConfig is the configuration of this endpoint's TLS: at least TLS 1.2,
// verifying the URL's host unless told another name.
func (e Endpoint) tlsConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.TLSConfig != nil {
		cfg = e.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(e.Address)
		cfg.ServerName = host
	}
	return cfg
}

// startTLSAnswerLimit bounds the answer to StartTLS, a bare LDAPResult.
const startTLSAnswerLimit = 64 << 10

// Dial connects to the endpoint with TLS set up as configured; timeout
// bounds the whole of it (TCP, StartTLS, handshake), as does ctx. After
// StartTLS the connection has used message ID 1, whose answer has come.
func (e Endpoint) Dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	if e.Address == "" {
		return nil, errors.New("endpoint not parsed with ParseURL")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", e.Address)
	if err != nil {
		return nil, err
	}
	if e.RawSyscalls {
		conn = rawsock.Wrap(conn)
	}
	switch {
	case e.TLS:
		tc := tls.Client(conn, e.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case e.StartTLS:
		tc, err := e.startTLS(ctx, conn, timeout)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("StartTLS: %w", err)
		}
		return tc, nil
	}
	return conn, nil
}

// startTLS runs the StartTLS extended operation on a fresh connection,
// before anything else uses it, so that message ID 1 cannot collide, and
// then shakes hands.
func (e Endpoint) startTLS(ctx context.Context, conn net.Conn, timeout time.Duration) (net.Conn, error) {
	disarm, err := deadline.Arm(ctx, conn, timeout)
	if err == nil {
		err = askStartTLS(conn)
	}
	var tc *tls.Conn
	if err == nil {
		tc = tls.Client(conn, e.tlsConfig())
		if err = tc.HandshakeContext(ctx); err != nil {
			err = fmt.Errorf("TLS handshake: %w", err)
		}
	}
	disarm()
	if err != nil {
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return tc, nil
}

// askStartTLS sends the StartTLS request and checks its answer.
func askStartTLS(conn net.Conn) error {
	if _, err := conn.Write(AppendMessage(nil, 1, AppendExtendedRequest(nil, OIDStartTLS, nil))); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	r := NewReader(conn, startTLSAnswerLimit)
	m, err := r.Next()
	if err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	if m.ID != 1 || m.Op != TagExtendedResponse {
		return fmt.Errorf("answered by message %d, op 0x%02x", m.ID, m.Op)
	}
	res, err := DecodeResult(m.OpContent)
	if err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	if res.Code != 0 {
		return fmt.Errorf("the directory refused it: result %d %s", res.Code, res.Diagnostic)
	}
	if r.Buffered() > 0 {
		// Nothing may come before the TLS handshake: bytes that did were
		// injected in plain text, as a forged answer to what follows.
		return errors.New("data after the StartTLS answer")
	}
	return nil
}
