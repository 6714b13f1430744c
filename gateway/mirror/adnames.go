package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/schema"
)

// What Active Directory makes of a bind name that is no DN, so that the
// policy judges the account the directory authenticated, never another
// one that happens to share part of its name.
//
// AD takes two such names in a simple bind (Microsoft's "User Name
// Formats"; Samba's DC behaves alike, which the tests check):
//
//   - a down-level logon name, DOMAIN\user: DOMAIN is the NetBIOS name of
//     a domain (case ignored) and user that domain's sAMAccountName;
//   - a user principal name, user@suffix: first the account whose
//     userPrincipalName is exactly that (an explicit UPN, whatever its
//     suffix: uPNSuffixes only list what an administrator may assign);
//     when none has it, the implicit UPN sAMAccountName@domain, where
//     domain is the DNS name of the account's domain (or, as AD and Samba
//     also accept, its NetBIOS name). A suffix listed in uPNSuffixes is
//     not an implicit UPN: AD refuses alice@suffix when no account has
//     that explicit UPN.
//
// The domains are those of the account bases (namingContexts); their
// names are read from their crossRef objects in the configuration
// partition (CN=Partitions), once, and again after adDomainsTTL. A name in
// any other domain matches no entry here, so it is no one (identity's
// sure is false), even when the directory accepts the bind (a trusted
// domain's user): it never borrows a local account's rights. So is a name
// more than one entry answers to (AD refuses the bind too). Only the
// activedirectory dialect resolves such names.

// adDomain is one domain the account bases are in.
type adDomain struct {
	root    string // its naming context (DC=example,DC=test)
	netbios string // EXAMPLE
	dns     string // example.test
}

// adDomainCache remembers the domains of the account bases.
type adDomainCache struct {
	mu      sync.Mutex
	roots   []string // the naming contexts domains were read for
	domains []adDomain
	expires time.Time
}

// How long the domains read are kept; a failed or empty read (not AD, or
// a service DN that may not read the configuration partition) is retried
// sooner, and meanwhile no down-level name or UPN identifies anyone.
const (
	adDomainsTTL      = time.Hour
	adDomainsRetryTTL = time.Minute
)

// logonName is the canonical DN of the entry AD authenticates for name, a
// down-level logon name or a user principal name; "" when no single entry
// of the account bases' domains answers to it.
func (m *Mirror) logonName(ctx context.Context, name string) (string, error) {
	if m.mapping().Config().Dialect != schema.ActiveDirectory {
		return "", nil // OpenLDAP binds with DNs only
	}
	domains, err := m.adDomains(ctx)
	if err != nil {
		return "", err
	}
	if i := strings.IndexByte(name, '\\'); i >= 0 {
		prefix, user := name[:i], name[i+1:]
		d, ok := findDomain(domains, func(d adDomain) bool { return d.netbios != "" && strings.EqualFold(d.netbios, prefix) })
		if !ok || user == "" {
			return "", nil // another domain's, or no user
		}
		return m.onlyEntry(ctx, name, []string{d.root}, "(sAMAccountName="+ldap.EscapeFilter(user)+")")
	}
	at := strings.LastIndexByte(name, '@')
	user, suffix := name[:at], name[at+1:]
	if user == "" || suffix == "" {
		return "", nil
	}
	roots := make([]string, len(domains))
	for i, d := range domains {
		roots[i] = d.root
	}
	explicit, n, err := m.entriesNamed(ctx, roots, "(userPrincipalName="+ldap.EscapeFilter(name)+")")
	switch {
	case err != nil:
		return "", err
	case n == 1:
		return explicit, nil
	case n > 1:
		m.log.Warn("a bind name matches several entries' userPrincipalName: the session is no one to the policy", "name", name, "entries", n)
		return "", nil
	}
	d, ok := findDomain(domains, func(d adDomain) bool {
		return d.dns != "" && strings.EqualFold(d.dns, suffix) || d.netbios != "" && strings.EqualFold(d.netbios, suffix)
	})
	if !ok {
		return "", nil // another domain's UPN, which no local account has
	}
	return m.onlyEntry(ctx, name, []string{d.root}, "(sAMAccountName="+ldap.EscapeFilter(user)+")")
}

// onlyEntry is the identity of the one entry under bases that filter
// matches; "" when none does or several do (name is the bind name, for
// the log).
func (m *Mirror) onlyEntry(ctx context.Context, name string, bases []string, filter string) (string, error) {
	dn, n, err := m.entriesNamed(ctx, bases, filter)
	if n > 1 {
		m.log.Warn("a bind name matches several entries: the session is no one to the policy", "name", name, "entries", n)
		return "", nil
	}
	return dn, err
}

// entriesNamed counts the entries under bases that filter matches, and
// gives the identity of the first.
func (m *Mirror) entriesNamed(ctx context.Context, bases []string, filter string) (string, int, error) {
	if len(bases) == 0 {
		return "", 0, nil
	}
	entries, err := m.cfg.Directory.SearchAll(ctx, bases, filter, dnAttributes)
	if err != nil || len(entries) == 0 {
		return "", 0, err
	}
	return entryIdentity(entries[0]), len(entries), nil
}

func findDomain(domains []adDomain, match func(adDomain) bool) (adDomain, bool) {
	i := slices.IndexFunc(domains, match)
	if i < 0 {
		return adDomain{}, false
	}
	return domains[i], true
}

// adDomains are the domains of the account bases, read from the directory
// or remembered.
func (m *Mirror) adDomains(ctx context.Context) ([]adDomain, error) {
	roots := namingContexts(m.mapping())
	c := &m.domains
	c.mu.Lock()
	if slices.Equal(c.roots, roots) && time.Now().Before(c.expires) {
		d := c.domains
		c.mu.Unlock()
		return d, nil
	}
	c.mu.Unlock()
	domains, err := m.readADDomains(ctx, roots)
	if err != nil {
		return nil, err
	}
	ttl := adDomainsTTL
	if len(domains) < len(roots) {
		ttl = adDomainsRetryTTL
		m.log.Warn("the directory names no Active Directory domain for some account bases: down-level names (DOMAIN\\user) and UPNs there identify no one",
			"roots", roots, "found", len(domains))
	}
	c.mu.Lock()
	c.roots, c.domains, c.expires = roots, domains, time.Now().Add(ttl)
	c.mu.Unlock()
	return domains, nil
}

// readADDomains reads the NetBIOS and DNS names of the domains whose naming
// contexts are roots, from their crossRef objects.
func (m *Mirror) readADDomains(ctx context.Context, roots []string) ([]adDomain, error) {
	dse, err := m.cfg.Directory.Read(ctx, "", []string{"configurationNamingContext"})
	if err != nil {
		return nil, fmt.Errorf("read the root DSE: %w", err)
	}
	if dse == nil {
		return nil, nil
	}
	config, ok := dse.First("configurationNamingContext")
	if !ok {
		return nil, nil // not Active Directory
	}
	partitions := []string{"CN=Partitions," + config}
	var out []adDomain
	for _, root := range roots {
		e, err := m.cfg.Directory.Find(ctx, partitions,
			"(&(objectClass=crossRef)(nCName="+ldap.EscapeFilter(root)+"))", []string{"nETBIOSName", "dnsRoot"})
		if err != nil {
			return nil, fmt.Errorf("read the domain of %s: %w", root, err)
		}
		if e == nil {
			continue
		}
		d := adDomain{root: root}
		d.netbios, _ = e.First("nETBIOSName")
		d.dns, _ = e.First("dnsRoot")
		if d.netbios != "" || d.dns != "" {
			out = append(out, d)
		}
	}
	return out, nil
}
