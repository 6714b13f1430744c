package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
)

// What the classify step needs: the entry a write names, read from the
// directory or the entry cache, and the cache entries a write makes stale.

// readEntry reads what classifies a write's target (nil: no such entry),
// from the cache when a write read it lately.
func (m *Mirror) readEntry(ctx context.Context, dn string) (*schema.Entry, error) {
	norm := m.mapping().CanonicalDN(dn)
	e, gen := m.entries.get(norm, time.Now())
	if e != nil {
		return e, nil
	}
	e, err := m.cfg.Directory.Read(ctx, dn, m.readAttributes())
	if err != nil {
		return nil, err
	}
	m.entries.put(norm, e, gen, time.Now())
	return e, nil
}

// identityChange returns the canonical DNs whose cached entries a write
// makes stale, or nil: those it deletes, renames or adds, and those whose
// object classes, key or name attributes it modifies.
func (m *Mirror) identityChange(req *gateway.WriteRequest, target, newDN string) []string {
	mp := m.mapping()
	canonical := func(dn string) string {
		if dn == "" {
			return ""
		}
		return mp.CanonicalDN(dn)
	}
	switch req.Op {
	case gateway.OpAdd, gateway.OpDelete, gateway.OpModifyDN:
		return []string{canonical(target), canonical(newDN)}
	case gateway.OpModify:
		read := m.readAttributes()
		for _, c := range req.Changes {
			for _, a := range read {
				if a != "" && mp.SameAttribute(c.Type, a) {
					return []string{canonical(target)}
				}
			}
		}
	}
	return nil
}

// dropStale drops a write's stale cache entries once the directory has
// answered it, whoever made it and whether or not it is mirrored.
func (m *Mirror) dropStale(dns []string, subtree bool, res gateway.Result) {
	if subtree {
		// A modify DN moved what lies below too; reads of it made while
		// the move was on its way may have cached the old state.
		m.entries.forgetUnder(dns...)
	}
	if res.Unanswered {
		// The directory may still apply it: keep those entries out of the
		// cache as long as one read could stay in it.
		m.entries.hold(time.Now(), dns...)
		return
	}
	m.entries.forget(dns...)
}

// readAttributes is what the gateway reads of an entry before a write
// (shared: not to be modified).
func (m *Mirror) readAttributes() []string { return m.attrLists().read }

func dedupFold(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		k := strings.ToLower(s)
		if s == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

// renamedDN is the DN a modify DN request gives its entry, as spelled
// (classify resolves each part to its canonical identity).
func renamedDN(req *gateway.WriteRequest) string {
	parent := req.NewSuperior
	if parent == "" {
		var ok bool
		if parent, _, ok = schema.ParentDN(req.DN); !ok {
			return ""
		}
	}
	if parent == "" {
		return req.NewRDN
	}
	return req.NewRDN + "," + parent
}

func attributeValues(mp *schema.Mapping, attrs []gateway.Attribute, name string) []string {
	var out []string
	for _, a := range attrs {
		if mp.SameAttribute(a.Type, name) {
			for _, v := range a.Values {
				out = append(out, string(v))
			}
		}
	}
	return out
}

// movedSubtree refuses a modify DN that would carry accounts or groups
// below its entry into, out of or between the account and group bases (or
// rename a base, or an entry above one): the directory moves a whole
// subtree in one operation (back-mdb renames non-leaf entries), and the
// gateway would see one write, of an organizational unit it does not
// judge, for every account it creates or takes out of scope. A directory
// administrator who is no gateway admin could so create accounts the
// policy refuses her, unjournaled and never in Axigen. A move that keeps
// every entry below it under the same bases is left alone: no account
// changes scope.
func (m *Mirror) movedSubtree(ctx context.Context, w *write) *gateway.Result {
	mp := m.mapping()
	from, to := w.target, w.newDN
	if from == "" || to == "" {
		return nil
	}
	bases := append(mp.AccountBases(), mp.GroupBases()...)
	touches, same := false, true
	for _, b := range bases {
		above := func(dn string) bool { return mp.EqualDN(dn, b) || mp.UnderDN(dn, b) }
		if above(from) || above(to) {
			touches, same = true, false
			break
		}
		inFrom, inTo := mp.UnderDN(b, from), mp.UnderDN(b, to)
		touches = touches || inFrom || inTo
		same = same && inFrom == inTo
	}
	if !touches || same {
		return nil
	}
	var terms []string
	cfg := mp.Config()
	for _, c := range append(slices.Clone(cfg.AccountClasses), cfg.GroupClasses...) {
		terms = append(terms, "(objectClass="+ldap.EscapeFilter(c)+")")
	}
	if len(terms) == 0 {
		return nil
	}
	below, more, err := m.cfg.Directory.Below(ctx, w.target, "(|"+strings.Join(terms, "")+")", 3)
	if err != nil {
		m.log.Warn("cannot read what a modify DN moves", "dn", w.target, "err", err)
		return unreachable("cannot read the entries below " + quoteDN(w.target) + " to check the move")
	}
	if len(below) == 0 {
		return nil
	}
	list := strings.Join(below, "; ")
	if more {
		list += "; and more"
	}
	return &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
		"ldapgate: this modify DN of %s would move the accounts or groups below it (%s) into, out of or between the account and group bases in one operation, "+
			"which the gateway cannot judge and mirror entry by entry; move (or add, or delete) those entries one at a time",
		quoteDN(w.target), list)}
}
