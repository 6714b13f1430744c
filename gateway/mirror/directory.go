package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/schema"
)

// DirectoryConfig says how the gateway reaches the directory as itself.
type DirectoryConfig struct {
	// URLs are tried in order; the first that answers is used.
	URLs []string
	// StartTLS upgrades ldap:// connections; TLS configures it and ldaps://.
	StartTLS bool
	TLS      *tls.Config
	// ServiceDN and ServicePassword are the gateway's own bind identity:
	// it reads entries to mirror and admin group members with it.
	ServiceDN       string
	ServicePassword string
	// Timeout bounds connecting and each request.
	Timeout time.Duration
	// PoolSize is how many service connections are kept open.
	PoolSize int
}

// Directory is the gateway's own client of the directory, with small pools
// of connections bound as the service identity: its own (readConn) for
// reads of one entry, go-ldap's for the rest.
type Directory struct {
	cfg   DirectoryConfig
	pool  chan *ldap.Conn
	reads chan *readConn
	urls  atomic.Pointer[[]string]
	// controls is the root DSE's supportedControl, once read (nil: not yet).
	controls atomic.Pointer[[]string]
}

// NewDirectory returns a Directory; it connects lazily.
func NewDirectory(cfg DirectoryConfig) *Directory {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 4
	}
	d := &Directory{cfg: cfg, pool: make(chan *ldap.Conn, cfg.PoolSize), reads: make(chan *readConn, cfg.PoolSize)}
	d.SetURLs(cfg.URLs)
	return d
}

// SetURLs replaces the directory URLs for connections opened from now on.
func (d *Directory) SetURLs(urls []string) {
	u := append([]string(nil), urls...)
	d.urls.Store(&u)
	d.controls.Store(nil) // another directory may support other controls
}

// SupportsControl reports whether the directory lists the control oid in
// its root DSE's supportedControl; the list is read once (again after
// SetURLs).
func (d *Directory) SupportsControl(ctx context.Context, oid string) (bool, error) {
	ctls := d.controls.Load()
	if ctls == nil {
		e, err := d.Read(ctx, "", []string{"supportedControl"})
		if err != nil {
			return false, err
		}
		var list []string
		if e != nil {
			list = e.Get("supportedControl")
		}
		ctls = &list
		d.controls.Store(ctls)
	}
	return slices.Contains(*ctls, oid), nil
}

// Close closes the pooled connections.
func (d *Directory) Close() {
	for {
		select {
		case c := <-d.pool:
			c.Close()
		case c := <-d.reads:
			c.close()
		default:
			return
		}
	}
}

// dial connects to the first directory that answers, without binding.
func (d *Directory) dial(ctx context.Context) (*ldap.Conn, error) {
	var errs []error
	for _, u := range *d.urls.Load() {
		dialer := ldap.DialWithDialer(&net.Dialer{Timeout: d.cfg.Timeout})
		opts := []ldap.DialOpt{dialer}
		if d.cfg.TLS != nil {
			opts = append(opts, ldap.DialWithTLSConfig(d.cfg.TLS))
		}
		c, err := ldap.DialURL(u, opts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		c.SetTimeout(d.cfg.Timeout)
		if d.cfg.StartTLS && strings.HasPrefix(strings.ToLower(u), "ldap://") {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12}
			if d.cfg.TLS != nil {
				cfg = d.cfg.TLS.Clone()
			}
			if cfg.ServerName == "" {
				// The name to verify is the URL's host, as for ldaps://.
				if pu, err := url.Parse(u); err == nil {
					cfg.ServerName = pu.Hostname()
				}
			}
			if err := c.StartTLS(cfg); err != nil {
				c.Close()
				errs = append(errs, fmt.Errorf("%s: StartTLS: %w", u, err))
				continue
			}
		}
		return c, nil
	}
	if len(errs) == 0 {
		return nil, errors.New("no directory URL configured")
	}
	return nil, errors.Join(errs...)
}

// with runs fn on a pooled service connection, replacing a broken one once.
func (d *Directory) with(ctx context.Context, fn func(*ldap.Conn) error) error {
	for attempt := 0; ; attempt++ {
		var c *ldap.Conn
		select {
		case c = <-d.pool:
		default:
			var err error
			if c, err = d.dial(ctx); err != nil {
				return fmt.Errorf("connect to the directory: %w", err)
			}
			if err := c.Bind(d.cfg.ServiceDN, d.cfg.ServicePassword); err != nil {
				c.Close()
				return fmt.Errorf("bind as the service DN %s: %w", d.cfg.ServiceDN, err)
			}
		}
		err := fn(c)
		if err != nil && attempt == 0 && (c.IsClosing() || ldap.IsErrorWithCode(err, ldap.ErrorNetwork)) {
			c.Close()
			continue
		}
		select {
		case d.pool <- c:
		default:
			c.Close()
		}
		return err
	}
}

// Read returns the entry at dn with the given attributes, or nil when
// there is none.
func (d *Directory) Read(ctx context.Context, dn string, attrs []string) (*schema.Entry, error) {
	return d.searchOne(ctx, dn, ldap.ScopeBaseObject, "(objectClass=*)", attrs)
}

// Find returns the one entry matching filter under any of bases, or nil.
func (d *Directory) Find(ctx context.Context, bases []string, filter string, attrs []string) (*schema.Entry, error) {
	for _, base := range bases {
		e, err := d.searchOne(ctx, base, ldap.ScopeWholeSubtree, filter, attrs)
		if err != nil || e != nil {
			return e, err
		}
	}
	return nil, nil
}

// FindAll returns the DNs of the entries matching filter under bases.
func (d *Directory) FindAll(ctx context.Context, bases []string, filter string) ([]string, error) {
	entries, err := d.SearchAll(ctx, bases, filter, []string{"1.1"})
	if err != nil {
		return nil, err
	}
	dns := make([]string, len(entries))
	for i, e := range entries {
		dns[i] = e.DN
	}
	return dns, nil
}

// SearchAll returns every entry matching filter under bases, with attrs,
// reading in pages so no size limit cuts it short.
func (d *Directory) SearchAll(ctx context.Context, bases []string, filter string, attrs []string) ([]schema.Entry, error) {
	var out []schema.Entry
	for _, base := range bases {
		err := d.with(ctx, func(c *ldap.Conn) error {
			res, err := c.SearchWithPaging(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
				0, 0, false, filter, attrs, nil), 1000)
			if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, e := range res.Entries {
				out = append(out, toEntry(e))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("search %s for %s: %w", base, filter, err)
		}
	}
	return out, nil
}

// withRead runs fn on a pooled readConn, replacing a broken one once.
func (d *Directory) withRead(ctx context.Context, fn func(*readConn) error) error {
	for attempt := 0; ; attempt++ {
		var c *readConn
		select {
		case c = <-d.reads:
		default:
			var err error
			if c, err = d.dialRead(ctx); err != nil {
				return err
			}
		}
		err := fn(c)
		if c.broken != nil {
			c.close()
			if attempt == 0 && ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
				continue // a pooled connection the directory had closed
			}
			return err
		}
		select {
		case d.reads <- c:
		default:
			c.close()
		}
		return err
	}
}

func (d *Directory) searchOne(ctx context.Context, base string, scope int, filter string, attrs []string) (*schema.Entry, error) {
	var out *schema.Entry
	err := d.withRead(ctx, func(c *readConn) error {
		entries, err := c.search(ctx, base, scope, 2, filter, attrs)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(entries) > 1 {
			return fmt.Errorf("%d entries match %s under %s", len(entries), filter, base)
		}
		if len(entries) == 1 {
			out = &entries[0]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", base, err)
	}
	return out, nil
}

// Below returns the DNs of up to limit entries strictly below dn that
// match filter (more may exist: more is true then); none when dn does not
// exist.
func (d *Directory) Below(ctx context.Context, dn, filter string, limit int) (dns []string, more bool, err error) {
	err = d.withRead(ctx, func(c *readConn) error {
		// One more than limit, as the entry dn itself may match.
		entries, err := c.search(ctx, dn, ldap.ScopeWholeSubtree, limit+2, filter, []string{"1.1"})
		switch {
		case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
			return nil
		case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
			more = true
		case err != nil:
			return err
		}
		for _, e := range entries {
			if schema.EqualDN(e.DN, dn) {
				continue
			}
			if len(dns) == limit {
				more = true
				break
			}
			dns = append(dns, e.DN)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("search below %s: %w", dn, err)
	}
	return dns, more, nil
}

// CheckPassword reports whether dn binds with password, on a connection of
// its own so the service connections keep their identity.
func (d *Directory) CheckPassword(ctx context.Context, dn, password string) (bool, error) {
	c, err := d.dial(ctx)
	if err != nil {
		return false, fmt.Errorf("connect to the directory: %w", err)
	}
	defer c.Close()
	err = c.Bind(dn, password)
	if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		return false, nil
	}
	return err == nil, err
}

func toEntry(e *ldap.Entry) schema.Entry {
	out := schema.Entry{DN: e.DN, Attrs: make(map[string][]string, len(e.Attributes))}
	for _, a := range e.Attributes {
		vals := make([]string, len(a.ByteValues))
		for i, v := range a.ByteValues {
			vals[i] = string(v)
		}
		out.Attrs[a.Name] = vals
	}
	return out
}

// escapeFilterBytes escapes every byte, for matching binary values such as
// objectGUID in a filter.
func escapeFilterBytes(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "\\%02x", c)
	}
	return sb.String()
}
