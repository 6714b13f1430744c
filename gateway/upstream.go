package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Upstream is one directory server the gateway relays to.
type Upstream struct {
	// URL is ldap://host[:port] or ldaps://host[:port].
	URL string
	// StartTLS upgrades an ldap:// connection before any client traffic.
	StartTLS bool
	// TLS configures ldaps:// and StartTLS; nil means the system roots and
	// the URL's host name.
	TLS *tls.Config

	address string
	tls     bool
}

// ParseUpstream checks an upstream URL and fills in the default port.
func ParseUpstream(raw string, startTLS bool, tlsConfig *tls.Config) (Upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Upstream{}, fmt.Errorf("upstream %q: %w", raw, err)
	}
	up := Upstream{URL: raw, StartTLS: startTLS, TLS: tlsConfig}
	switch strings.ToLower(u.Scheme) {
	case "ldap":
		up.address = withDefaultPort(u.Host, "389")
	case "ldaps":
		if startTLS {
			return Upstream{}, fmt.Errorf("upstream %q: StartTLS cannot be used with ldaps://", raw)
		}
		up.address = withDefaultPort(u.Host, "636")
		up.tls = true
	default:
		return Upstream{}, fmt.Errorf("upstream %q: scheme must be ldap or ldaps", raw)
	}
	if u.Hostname() == "" {
		return Upstream{}, fmt.Errorf("upstream %q: no host", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return Upstream{}, fmt.Errorf("upstream %q: a URL path is not allowed", raw)
	}
	return up, nil
}

func withDefaultPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

func (u Upstream) tlsConfig() *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if u.TLS != nil {
		cfg = u.TLS.Clone()
	}
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(u.address)
		cfg.ServerName = host
	}
	return cfg
}

// dial opens a connection to this upstream, with TLS set up as configured.
func (u Upstream) dial(ctx context.Context, timeout time.Duration, maxMessage int) (net.Conn, error) {
	if u.address == "" {
		return nil, errors.New("upstream not parsed with ParseUpstream")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.address)
	if err != nil {
		return nil, err
	}
	switch {
	case u.tls:
		tc := tls.Client(conn, u.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case u.StartTLS:
		tc, err := u.startTLS(ctx, conn, maxMessage)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return conn, nil
}

// startTLS runs the StartTLS extended operation on a fresh connection, before
// any client message uses it, so message ID 1 cannot collide.
func (u Upstream) startTLS(ctx context.Context, conn net.Conn, maxMessage int) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
		defer conn.SetDeadline(time.Time{})
	}
	req := encodeExtendedRequest(1, OIDStartTLS)
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("StartTLS request: %w", err)
	}
	// Unbuffered so that no TLS bytes are swallowed by a plaintext reader.
	mr := &messageReader{r: bufio.NewReaderSize(conn, 16), limit: maxMessage}
	m, err := mr.next()
	if err != nil {
		return nil, fmt.Errorf("StartTLS response: %w", err)
	}
	res, err := decodeResult(m, false)
	if err != nil || m.op != tagExtendedResponse {
		return nil, errors.New("StartTLS response is malformed")
	}
	if res.Code != 0 {
		return nil, fmt.Errorf("upstream refused StartTLS: result %d %s", res.Code, res.Diagnostic)
	}
	if mr.buffered() > 0 {
		return nil, errors.New("upstream sent data after the StartTLS response")
	}
	tc := tls.Client(conn, u.tlsConfig())
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake after StartTLS: %w", err)
	}
	return tc, nil
}

// Dialer chooses an upstream for each new session.
type Dialer interface {
	Dial(ctx context.Context) (net.Conn, error)
}

// A RoutingDialer is a Dialer that names the upstream of each connection,
// so that the Server reuses a spare connection only while its upstream is
// the one a new dial would choose (after a failover, sessions go back to
// the preferred upstream as soon as it is healthy). UpstreamSet is one.
type RoutingDialer interface {
	Dialer
	// DialRoute is Dial, also naming the upstream connected to.
	DialRoute(ctx context.Context) (net.Conn, string, error)
	// Route names the upstream Dial would try first now.
	Route() string
}
