package mirror

import (
	"strings"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// entryCache remembers, for a short time, what the write path read of an
// entry to classify a write: its object classes, stable key and name. A
// burst of writes to one entry (a provisioning script setting attributes
// one modify at a time, a user changing phone then password) then costs the
// directory one read, not one per write, and the client one round trip
// less. Writes the gateway sees that could change those values drop the
// entry (forget); what changes them behind the gateway's back is seen once
// the entry expires.
type entryCache struct {
	ttl   time.Duration
	limit int

	mu      sync.Mutex
	entries map[string]cachedEntry // by normalised DN
	// held keeps DNs out of the cache until a time: a write to them went
	// unanswered, so the directory may apply it at any moment.
	held map[string]time.Time
	// gen counts forgets: a read begun before one must not be stored, since
	// it may have seen the entry before the forgotten write changed it.
	gen uint64
}

type cachedEntry struct {
	entry   *schema.Entry
	expires time.Time
}

func newEntryCache(ttl time.Duration, limit int) *entryCache {
	return &entryCache{ttl: ttl, limit: limit, entries: map[string]cachedEntry{}, held: map[string]time.Time{}}
}

// get returns a fresh cached entry, or nil and the generation a read made
// now must present to put.
func (c *entryCache) get(dn string, now time.Time) (*schema.Entry, uint64) {
	if c.ttl <= 0 {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[dn]; ok {
		if now.Before(e.expires) {
			return e.entry, c.gen
		}
		delete(c.entries, dn)
	}
	return nil, c.gen
}

// put stores an entry read at generation gen, unless a forget came since.
func (c *entryCache) put(dn string, e *schema.Entry, gen uint64, now time.Time) {
	if c.ttl <= 0 || e == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if until, ok := c.held[dn]; ok {
		if now.Before(until) {
			return
		}
		delete(c.held, dn)
	}
	if len(c.entries) >= c.limit {
		c.evictLocked(now)
	}
	c.entries[dn] = cachedEntry{entry: e, expires: now.Add(c.ttl)}
}

// evictLocked drops the expired entries, or every entry when none has
// expired: the cache is a shortcut, and a full one is rare enough that
// starting over costs less than keeping an eviction order.
func (c *entryCache) evictLocked(now time.Time) {
	for dn, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, dn)
		}
	}
	if len(c.entries) >= c.limit {
		clear(c.entries)
	}
}

// generation is the count of forgets so far: an entry learnt after it (an
// unread write's post-read) is stored only if no forget came between.
func (c *entryCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// forget drops the entries of the given DNs ("" ignored).
func (c *entryCache) forget(dns ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, dn := range dns {
		if dn != "" {
			delete(c.entries, dn)
		}
	}
}

// forgetUnder drops the entries of the given DNs and of every DN below
// them: a modify DN moves its entry's whole subtree, and an entry read at
// a DN below it would otherwise be taken, for the rest of its time, for
// the one the move has put there.
func (c *entryCache) forgetUnder(dns ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for key := range c.entries {
		for _, dn := range dns {
			// Canonical DNs escape every ',' inside a value: a suffix
			// after a ',' is a parent.
			if dn != "" && (key == dn || strings.HasSuffix(key, ","+dn)) {
				delete(c.entries, key)
				break
			}
		}
	}
}

// hold forgets the DNs and keeps them out of the cache for one TTL from now.
func (c *entryCache) hold(now time.Time, dns ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for dn, until := range c.held {
		if !now.Before(until) {
			delete(c.held, dn)
		}
	}
	for _, dn := range dns {
		if dn != "" {
			delete(c.entries, dn)
			c.held[dn] = now.Add(c.ttl)
		}
	}
}

// forgetAll drops every entry (the mapping changed).
func (c *entryCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}
