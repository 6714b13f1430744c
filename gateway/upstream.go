package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
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

	endpoint ldapwire.Endpoint
}

// ParseUpstream checks an upstream URL and fills in the default port.
func ParseUpstream(raw string, startTLS bool, tlsConfig *tls.Config) (Upstream, error) {
	ep, err := ldapwire.ParseURL(raw)
	if err != nil {
		return Upstream{}, fmt.Errorf("upstream: %w", err)
	}
	if ep.TLS && startTLS {
		return Upstream{}, fmt.Errorf("upstream %q: StartTLS cannot be used with ldaps://", raw)
	}
	ep.StartTLS, ep.TLSConfig = startTLS, tlsConfig
	return Upstream{URL: raw, StartTLS: startTLS, TLS: tlsConfig, endpoint: ep}, nil
}

// dial opens a connection to this upstream, with TLS set up as configured.
func (u Upstream) dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	return u.endpoint.Dial(ctx, timeout)
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
