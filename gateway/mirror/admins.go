package mirror

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// Admins is the one definition of "admin" (docs/architecture.md, "Who may
// change what"): a bound DN in its list, or a member of its group in the
// directory. The write path's decide step and the gateway's own subtree
// (cn=changelog, cn=monitor) both ask it.
type Admins struct {
	// dns are the listed admins' canonical DNs (those that parse: one
	// that does not is equal to no DN), worked out once, not per write.
	dns   []string
	group string
	dir   *Directory
	ttl   time.Duration

	mu      sync.Mutex
	members map[string]bool // canonical DNs of the group's members
	expires time.Time
}

// NewAdmins returns the admin check for the listed DNs and the members of
// group, read through dir (with the service identity) and remembered for
// ttl. Without a group, dir may be nil.
func NewAdmins(dns []string, group string, dir *Directory, ttl time.Duration) *Admins {
	// EqualDN(a, b) is "both parse and their canonical forms are the
	// same" (EqualDN(a, a): a parses), so comparing canonical forms is
	// the same check.
	var canon []string
	for _, dn := range dns {
		if schema.EqualDN(dn, dn) {
			canon = append(canon, schema.CanonicalDN(dn))
		}
	}
	return &Admins{dns: canon, group: group, dir: dir, ttl: ttl}
}

// IsAdmin reports whether dn may make every change. An anonymous session
// (dn empty) never may; a nil Admins knows no admin. The error says the
// group could not be read: the caller decides whether that refuses.
func (a *Admins) IsAdmin(ctx context.Context, dn string) (bool, error) {
	if a == nil || dn == "" {
		return false, nil
	}
	// The write path's DNs are canonical already (identify): most calls
	// end at a string comparison (a canonical form parses back as
	// itself), the others parse dn once.
	if slices.Contains(a.dns, dn) {
		return true, nil
	}
	canon := ""
	if schema.EqualDN(dn, dn) { // it parses: equal to an admin's by its canonical form
		canon = schema.CanonicalDN(dn)
		if slices.Contains(a.dns, canon) {
			return true, nil
		}
	}
	if a.group == "" {
		return false, nil
	}
	members, err := a.groupMembers(ctx)
	if err != nil {
		return false, err
	}
	if canon == "" {
		canon = schema.CanonicalDN(dn)
	}
	return members[canon], nil
}

func (a *Admins) groupMembers(ctx context.Context) (map[string]bool, error) {
	if a.dir == nil {
		return nil, errors.New("no directory to read the admin group from")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.members != nil && time.Now().Before(a.expires) {
		return a.members, nil
	}
	e, err := a.dir.Read(ctx, a.group, []string{"member", "uniqueMember"})
	if err != nil {
		return nil, err
	}
	members := map[string]bool{}
	if e != nil {
		for _, v := range e.Get("member") {
			members[schema.CanonicalDN(v)] = true
		}
		// A uniqueMember value may carry the optional UID, which names
		// the same entry: the groups the mirror follows read it so too.
		for _, v := range e.Get("uniqueMember") {
			members[schema.CanonicalDN(schema.UniqueMemberDN(v))] = true
		}
	}
	a.members, a.expires = members, time.Now().Add(a.ttl)
	return members, nil
}
