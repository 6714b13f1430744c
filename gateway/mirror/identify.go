package mirror

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/schema"
)

// What the identify step needs: the DN behind the name a session bound with.

// identity turns the name a session bound with into its entry's DN. AD
// accepts a userPrincipalName (user@domain) and a down-level name
// (DOMAIN\user); anything else is taken as the DN it is. Answers are
// remembered for a few minutes.
func (m *Mirror) identity(ctx context.Context, name string) (string, error) {
	// Filters to try in turn: an account without an explicit
	// userPrincipalName still binds as sAMAccountName@domain.
	var filters []string
	switch {
	case name == "" || strings.Contains(name, "="):
		return name, nil
	case strings.Contains(name, `\`):
		filters = []string{"(sAMAccountName=" + ldap.EscapeFilter(name[strings.LastIndex(name, `\`)+1:]) + ")"}
	case strings.Contains(name, "@"):
		filters = []string{"(userPrincipalName=" + ldap.EscapeFilter(name) + ")",
			"(sAMAccountName=" + ldap.EscapeFilter(name[:strings.LastIndex(name, "@")]) + ")"}
	default:
		return name, nil
	}
	m.idMu.Lock()
	c, ok := m.identities[strings.ToLower(name)]
	m.idMu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.dn, nil
	}
	var e *schema.Entry
	for _, f := range filters {
		found, err := m.cfg.Directory.Find(ctx, namingContexts(m.mapping()), f, []string{"1.1"})
		if err != nil {
			return "", err
		}
		if found != nil {
			e = found
			break
		}
	}
	if e == nil {
		return name, nil // no such entry: compared as given, it matches no DN
	}
	m.idMu.Lock()
	if m.identities == nil || len(m.identities) > 10000 {
		m.identities = map[string]cachedIdentity{}
	}
	m.identities[strings.ToLower(name)] = cachedIdentity{dn: e.DN, expires: time.Now().Add(5 * time.Minute)}
	m.idMu.Unlock()
	return e.DN, nil
}

type cachedIdentity struct {
	dn      string
	expires time.Time
}

// namingContexts are the domain roots above the account bases (the DC=
// part), where users and administrators alike live.
func namingContexts(mp *schema.Mapping) []string {
	var out []string
	for _, base := range mp.Config().AccountBase {
		dn, err := ldap.ParseDN(base)
		if err != nil {
			continue
		}
		i := 0
		for i < len(dn.RDNs) && !(len(dn.RDNs[i].Attributes) == 1 && strings.EqualFold(dn.RDNs[i].Attributes[0].Type, "dc")) {
			i++
		}
		root := (&ldap.DN{RDNs: dn.RDNs[i:]}).String()
		if i == len(dn.RDNs) {
			root = base
		}
		if !slices.Contains(out, root) {
			out = append(out, root)
		}
	}
	return out
}
