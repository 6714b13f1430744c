package mirror

import (
	"context"
	"strings"
	"time"

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
func (m *Mirror) dropStale(dns []string, res gateway.Result) {
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
