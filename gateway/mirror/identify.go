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

// identity turns the name a session bound with into its entry's canonical
// DN (schema.ExactDN); sure is false when neither the gateway nor the
// directory can tell which entry the name means, and the session is then
// no one in particular: not an admin, an owner or Axigen's connector. AD
// accepts a userPrincipalName (user@domain) and a down-level name
// (DOMAIN\user), resolved as AD does (logonName, adnames.go); a DN whose
// spelling the gateway is unsure of is read (resolveDN). Answers are
// remembered for a few minutes.
func (m *Mirror) identity(ctx context.Context, name string) (dn string, sure bool, err error) {
	logon := false
	switch {
	case name == "":
		return "", true, nil
	case strings.Contains(name, "="), strings.HasPrefix(name, "<"):
		if c, err := m.mapping().ExactDN(name); err == nil {
			return c, true, nil
		}
	case strings.Contains(name, `\`), strings.Contains(name, "@"):
		logon = true
	default:
		return name, false, nil
	}
	m.idMu.Lock()
	c, ok := m.identities[name]
	m.idMu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.dn, true, nil
	}
	var found string
	if logon {
		if found, err = m.logonName(ctx, name); err != nil {
			return "", false, err
		}
	} else {
		e, err := m.cfg.Directory.Read(ctx, name, dnAttributes)
		if err != nil && !isInvalidDN(err) {
			return "", false, err
		}
		if e != nil {
			found = entryIdentity(*e)
		}
	}
	if found == "" {
		return name, false, nil // no such entry, or not one: it matches no DN
	}
	m.idMu.Lock()
	if m.identities == nil || len(m.identities) > 10000 {
		m.identities = map[string]cachedIdentity{}
	}
	m.identities[name] = cachedIdentity{dn: found, expires: time.Now().Add(5 * time.Minute)}
	m.idMu.Unlock()
	return found, true, nil
}

// dnAttributes are what the directory names an entry by: OpenLDAP's
// entryDN, AD's distinguishedName.
var dnAttributes = []string{"entryDN", "distinguishedName"}

// entryIdentity is the canonical DN of an entry the directory returned:
// its entryDN or distinguishedName, else the DN of the search result. It
// is the directory's own spelling, so CanonicalDN's best effort is the
// identity every other spelling resolves to.
func entryIdentity(e schema.Entry) string {
	for _, a := range dnAttributes {
		if v, ok := e.First(a); ok {
			return schema.CanonicalDN(v)
		}
	}
	return schema.CanonicalDN(e.DN)
}

// isInvalidDN reports the directory's invalidDNSyntax (34).
func isInvalidDN(err error) bool { return ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax) }

// resolveDN is the canonical identity of the entry dn names: schema.ExactDN
// when the gateway is sure of it; otherwise what the directory says, read
// with the service identity (the entry, with attrs, is returned too). ok is
// false when the directory has no entry by that name (or says it is no DN:
// invalid is then true).
func (m *Mirror) resolveDN(ctx context.Context, dn string, attrs []string) (canon string, e *schema.Entry, ok, invalid bool, err error) {
	if c, err := m.mapping().ExactDN(dn); err == nil {
		return c, nil, true, false, nil
	}
	e, err = m.cfg.Directory.Read(ctx, dn, append(slices.Clone(attrs), dnAttributes...))
	if isInvalidDN(err) {
		return "", nil, false, true, nil
	}
	if err != nil || e == nil {
		return "", nil, false, false, err
	}
	return entryIdentity(*e), e, true, false, nil
}

type cachedIdentity struct {
	dn      string
	expires time.Time
}

// namingContexts are the domain roots above the account bases (the DC=
// part), where users and administrators alike live.
func namingContexts(mp *schema.Mapping) []string {
	var out []string
	for _, base := range mp.AccountBases() {
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
