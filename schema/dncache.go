package schema

import "sync"

// The write path asks about the same few DNs many times per write (the
// target, the writer, the service identity, the admins): is it exact, is it
// equal to that one, is it under a base. A parse costs a microsecond or
// more and a dozen allocations, so each Mapping keeps the parses of the DNs
// it was asked about lately. A Mapping is built per policy, so a new policy
// starts with an empty cache; there is no cache outside a Mapping.

// dnCacheSize bounds each of the cache's two generations: 2 × 4096 DNs,
// each a few hundred bytes at most (dnCacheMaxLen).
const dnCacheSize = 4096

// dnCacheMaxLen is the longest DN the cache keeps: longer ones are parsed
// each time (rare, and they would make the bound a bound on count only).
const dnCacheMaxLen = 512

// dnCache remembers parses by spelling, in two generations: lookups look
// in the current one, then in the previous one (moving a hit over); when
// the current one is full it becomes the previous one and the older one is
// dropped. So the DNs in use stay, whatever passes through, and memory is
// bounded. Safe for concurrent use.
type dnCache struct {
	mu        sync.Mutex
	cur, prev map[string]parsedDN
}

// parsedDN is one parse: the name, or why the spelling is not a DN.
type parsedDN struct {
	name dnName
	err  error
}

// parse is parseDN, remembered.
func (c *dnCache) parse(dn string) (dnName, error) {
	if len(dn) > dnCacheMaxLen {
		return parseDN(dn)
	}
	c.mu.Lock()
	p, ok := c.cur[dn]
	if !ok {
		if p, ok = c.prev[dn]; ok {
			c.putLocked(dn, p)
		}
	}
	c.mu.Unlock()
	if ok {
		return p.name, p.err
	}
	name, err := parseDN(dn)
	if err == nil && name.canon == "" {
		// Built once here rather than by each String of the cached parse.
		name.canon = name.String()
	}
	c.mu.Lock()
	c.putLocked(dn, parsedDN{name, err})
	c.mu.Unlock()
	return name, err
}

func (c *dnCache) putLocked(dn string, p parsedDN) {
	if len(c.cur) >= dnCacheSize {
		c.prev, c.cur = c.cur, nil
	}
	if c.cur == nil {
		c.cur = make(map[string]parsedDN, dnCacheSize/4)
	}
	c.cur[dn] = p
}

// ExactDN is the package's ExactDN, through the mapping's DN cache.
func (m *Mapping) ExactDN(dn string) (string, error) {
	p, err := m.dns.parse(dn)
	if err != nil {
		return "", &DNError{DN: dn, Reason: err.Error()}
	}
	if p.unsure != "" {
		return "", &DNError{DN: dn, Reason: p.unsure}
	}
	return p.String(), nil
}

// CanonicalDN is the package's CanonicalDN, through the mapping's DN
// cache: the types that name entries fold the same way in both dialects
// (streetAddress, the one they disagree on, is left to the directory).
func (m *Mapping) CanonicalDN(dn string) string {
	p, err := m.dns.parse(dn)
	if err != nil {
		return CanonicalDN(dn)
	}
	return p.String()
}

// EqualDN is the package's EqualDN, through the mapping's DN cache.
func (m *Mapping) EqualDN(a, b string) bool {
	pa, erra := m.dns.parse(a)
	if erra != nil {
		return false
	}
	if a == b {
		return true
	}
	pb, errb := m.dns.parse(b)
	return errb == nil && pa.equal(pb)
}

// UnderDN is the package's UnderDN, through the mapping's DN cache.
func (m *Mapping) UnderDN(base, dn string) bool {
	b, errb := m.dns.parse(base)
	d, errd := m.dns.parse(dn)
	return errb == nil && errd == nil && d.under(b)
}
