package mirror

import (
	"context"
	"slices"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/schema"
)

// Writes judged without reading their entry first.
//
// classify reads the entry a write targets to tell an account, a group or
// neither, and the record of a mirrored write keeps the entry's key and
// name. That read costs the directory about a quarter of the write itself,
// and a round trip. It is needed only when the verdict depends on what the
// entry is. A modify that changes nothing that classifies its entry
// (object classes, key, name), by a writer the policy allows to make that
// change to an account or a group alike (an admin; the owner of contact
// info), under one base only (so the entry is of that base's kind or of
// none), is judged the same whatever the entry is. Such a write is judged
// and journaled without the read, as of the base's kind; it goes to the
// directory with RFC 4527's post-read control, and the entry as the write
// left it comes back with the directory's answer, in the same operation:
// the entry the write changed, not one read a moment before. settle then
// commits the record with the entry's key, or drops it when the entry is
// not of that kind after all (an entry of the base that is not an account:
// the write is relayed but not mirrored, as when it is read first).
//
// When the post-read does not come back whole (a directory that ignores
// the control; a writer whose access hides objectClass or the key from
// it), or says the entry is not of the base's kind, the gateway reads the
// entry itself, as the service identity, at settle; delivery reads it
// again before it writes to Axigen, and checks what it is. A writer that
// the policy would refuse for one kind and not the other has its entry
// read first, as always.

// RFC 4527's read entry controls.
const (
	oidPreRead  = "1.3.6.1.1.13.1"
	oidPostRead = "1.3.6.1.1.13.2"
)

// unreadKind returns the kind an unread write to w.target is judged as, or
// KindNone when its entry must be read first.
func (m *Mirror) unreadKind(ctx context.Context, w *write) schema.Kind {
	req, mp := w.req, m.mapping()
	if req.Op != gateway.OpModify || w.stale != nil || w.who.axigen || w.refused != nil {
		return schema.KindNone
	}
	if slices.ContainsFunc(req.Controls, func(c gateway.Control) bool { return c.OID == oidPreRead || c.OID == oidPostRead }) {
		return schema.KindNone // the client's own read entry control: not ours to take
	}
	if !appendable(req) {
		return schema.KindNone
	}
	if e, _ := m.entries.get(mp.CanonicalDN(w.target), time.Now()); e != nil {
		return schema.KindNone // read lately: the cache tells
	}
	// The record must name the entry's account or group as it was before
	// the write (delivery renames from it); the post-read tells that name
	// only when the write leaves it as it was.
	if slices.ContainsFunc(req.Changes, func(c gateway.Modification) bool {
		return mp.SameAttribute(c.Type, mp.NameAttribute()) || mp.SameAttribute(c.Type, mp.GroupNameAttribute())
	}) {
		return schema.KindNone
	}
	kind := schema.KindNone
	switch account, group := mp.UnderAccountBase(w.target), mp.UnderGroupBase(w.target); {
	case account && !group:
		kind = schema.KindAccount
	case group && !account:
		kind = schema.KindGroup
	default:
		return schema.KindNone
	}
	if ok, err := m.cfg.Directory.SupportsControl(ctx, oidPostRead); err != nil || !ok {
		return schema.KindNone
	}
	return kind
}

// appendLimit bounds the size of the requests the gateway adds a control
// to. The directory drops the connection of a client whose message is
// over its limit (slapd's sockbuf_max_incoming_auth, 16 MiB - 1 by
// default, about the gateway's own --max-message-size): a write just
// under it, which the directory takes from the client, must not be pushed
// over it by the gateway's control. A write this large costs the directory
// far more than the read the control spares.
const appendLimit = 64 << 10

// appendable reports whether req is small enough for the gateway to add a
// control to it (appendLimit).
func appendable(req *gateway.WriteRequest) bool {
	n := len(req.DN)
	for _, c := range req.Changes {
		n += len(c.Type) + 16
		for _, v := range c.Values {
			n += len(v) + 8
		}
	}
	for _, c := range req.Controls {
		n += len(c.OID) + len(c.Value) + 16
	}
	return n <= appendLimit
}

// kindFree reports whether an unread write's verdict is the same whether
// its entry is of w.kind or of no kind (decide's steps, without their
// audit lines): allowed either way.
func (m *Mirror) kindFree(ctx context.Context, w *write) bool {
	if _, answer := checkControls(w.req.Controls); answer != nil {
		return false // refused for accounts and groups only
	}
	admin := false
	if w.who.sure {
		var err error
		if admin, err = m.IsAdmin(ctx, w.who.dn); err != nil {
			return false // decide, after the read, says why
		}
	}
	owner := w.who.sure && w.who.dn != "" && m.mapping().EqualDN(w.who.dn, w.target)
	d := m.judge(w.kind, w.req, admin, owner)
	if d.refuse != "" {
		return false
	}
	// The values Axigen would get are checked for the kind only.
	return !d.mirror || m.checkValues(w) == nil
}

// postReadControl asks the directory for what classifies the entry, as the
// write leaves it.
func (m *Mirror) postReadControl() gateway.Control { return m.attrLists().readCtl }

// postReadEntry is the entry of a post-read response control among
// controls, or nil.
func postReadEntry(controls []gateway.Control) *schema.Entry {
	for _, c := range controls {
		if c.OID != oidPostRead {
			continue
		}
		tag, content, _, err := ldapwire.Next(c.Value)
		if err != nil || tag != tagSearchEntry {
			return nil
		}
		e, err := decodeEntry(content)
		if err != nil {
			return nil
		}
		return &e
	}
	return nil
}

// settleUnread commits the record of an unread write the directory made,
// with its entry's key, or drops it when the entry is not of the kind its
// DN suggested; it reads the entry when the answer's post-read cannot tell.
func (m *Mirror) settleUnread(ctx context.Context, w *write, res gateway.Result) error {
	mp, j, rec := m.mapping(), m.cfg.Journal, w.rec
	e := postReadEntry(res.Controls)
	kind := schema.KindNone
	if e != nil {
		e.DN = w.target
		if _, ok := e.First(mp.KeyAttribute()); ok && len(e.ObjectClasses()) > 0 {
			kind = mp.Classify(w.target, e.ObjectClasses())
			if kind == w.kind {
				m.entries.put(mp.CanonicalDN(w.target), e, w.gen, time.Now())
			}
		}
	}
	if kind != w.kind {
		// Not whole, or another kind: the service identity's view decides.
		var err error
		if e, err = m.cfg.Directory.Read(ctx, w.target, m.readAttributes()); err != nil || e == nil {
			// Gone already, or unreadable: delivery reads the entry by its
			// DN and checks what it is.
			return j.Commit(ctx, rec.Seq, "")
		}
		kind = mp.Classify(w.target, e.ObjectClasses())
	}
	if kind != w.kind {
		m.cfg.Audit.Info("not mirrored", "seq", rec.Seq, "dn", w.target, "reason", "the entry is no "+w.kind.String())
		return j.Abort(ctx, rec.Seq)
	}
	key, err := m.entryKey(*e)
	if err != nil {
		key = ""
	}
	// The write left the name as it was (unreadKind): the post-read's is
	// the name before it, which delivery renames from.
	return j.CommitNamed(ctx, rec.Seq, key, mp.EntryName(*e, kind))
}
