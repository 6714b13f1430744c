package mirror

// The write path, one step after another (docs/architecture.md, "The write
// path"), the way a slapd overlay takes an operation and passes it on:
//
//	identify → classify → decide → prepare → relay (the gateway's) → settle → deliver
//
// Intercept runs the steps up to prepare on the session's reading
// goroutine; the gateway relays the write and calls the Completion that
// Intercept returned, which settles the journal record on the directory's
// answer; Run's workers deliver settled records to Axigen. Each step is one
// method below that fills in its part of a write. A step that answers the
// client itself (a refusal, an unreachable directory) returns that answer,
// and the write goes no further.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// write is one intercepted write on its way through the steps.
type write struct {
	req *gateway.WriteRequest
	// groupHold holds the groups a write outside the bases journals
	// records of (memberGroupRecords), until its answer.
	groupHold onWayHold
	// flush sends what the session relayed before this write and still
	// buffers (gateway.SessionInfo.Flush), before the write waits for one.
	flush func()

	// identify
	who writer

	// classify
	target string // the canonical identity of the entry the write names
	newDN  string // the canonical DN a rename gives it
	noOp   bool   // the directory will not apply it (the no-op control)

	// refused is the answer to a control identify could not honour; decide
	// gives it only to writes to accounts and groups.
	refused *gateway.Result
	entry   *schema.Entry // the target before the change; nil for an add
	kind    schema.Kind   // KindNone: relayed with no journal record
	stale   []string      // canonical DNs whose cached entries the write makes stale
	// unread: the target was not read (postread.go); kind is what its DN
	// makes it if it is an account or group at all, and the directory's
	// post-read on the write itself tells which it is.
	unread bool
	gen    uint64 // the entry cache's generation before an unread write
	// scoped: the write names an entry of the account or group bases
	// (images.go follows it); image: it asks for its entry's image.
	scoped, image bool
	iw            imageWrite

	// decide
	verdict decision
	audit   *slog.Logger // the write's audit lines, with who, what and where

	// claim is the name the write gives an account or group, held from
	// decide until the directory answers (values.go).
	claim string
	// hold is the DNs the write holds from classify until the directory
	// answers, against modify DNs racing it (onway.go).
	hold onWayHold

	// prepare
	rec *store.Record // prepared, on disk
	// asserted: the write carries the gateway's critical assertion of the
	// entry it read (assert.go), which the directory checks.
	asserted bool
}

// writer is who makes a write.
type writer struct {
	// dn is the canonical DN the write is made as: the bound DN (an AD
	// user@domain or DOMAIN\user resolved), or the identity a proxied
	// authorization control names; "" when anonymous.
	dn string
	// sure is false when neither the gateway nor the directory can tell
	// which entry dn is: the writer is then no admin, owner or connector.
	sure  bool
	bound string // the bound DN as the session bound, when a proxied identity writes
	addr  string // the client's address
	// axigen: Axigen's own connector, which may write what Axigen's
	// "Axigen to LDAP" synchronisation writes; never mirrored back.
	axigen bool
	// sasl is the mechanism of a session's SASL bind: whom it
	// authenticated only the directory knows (sure is false).
	sasl string
}

// actor names the writer in a refusal.
func (wr writer) actor() string {
	switch {
	case wr.sasl != "" && wr.dn == "":
		return "a session bound with SASL " + wr.sasl + " (an identity only the directory knows; the gateway judges simple binds)"
	case wr.dn == "":
		return "an anonymous session"
	}
	return wr.dn
}

// Intercept implements gateway.Interceptor: the write path up to the relay.
func (m *Mirror) Intercept(ctx context.Context, s gateway.SessionInfo, req *gateway.WriteRequest) (gateway.Completion, *gateway.Result) {
	if m.cfg.Journal == nil {
		return nil, &gateway.Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: mirroring is not set up (no journal)"}
	}
	w := &write{req: req, flush: s.Flush}
	done, answer := m.intercept(ctx, w, s)
	if done == nil {
		// Not relayed (or relayed with no Completion, which holds nothing):
		// the DNs the write held are free.
		m.onWay.release(w.hold)
		m.onWay.release(w.groupHold)
	}
	return done, answer
}

// intercept is Intercept's steps; a write that holds DNs (w.hold) and is
// relayed always has a Completion, which releases them.
func (m *Mirror) intercept(ctx context.Context, w *write, s gateway.SessionInfo) (gateway.Completion, *gateway.Result) {
	req := w.req
	if answer := m.identify(ctx, w, s); answer != nil {
		return nil, answer
	}
	if answer := m.classify(ctx, w); answer != nil {
		return nil, answer
	}
	if w.kind == schema.KindNone {
		// Not an account or group: relayed unjudged, with records of the
		// groups that list it when the write changes what they list.
		return m.relayMember(ctx, w)
	}
	if w.unread && !m.kindFree(ctx, w) {
		// The verdict depends on what the entry is: read it.
		if answer := m.readTarget(ctx, w); answer != nil {
			return nil, answer
		}
		if w.kind == schema.KindNone {
			return m.relayMember(ctx, w)
		}
	}
	if answer := m.decide(ctx, w); answer != nil {
		return nil, answer
	}
	if !w.verdict.mirror {
		m.claims.release(w.claim)  // a no-op or Axigen's own: no name given
		return m.relayAsIs(w), nil // allowed, and nothing Axigen holds changes
	}
	if answer := m.prepare(ctx, w); answer != nil {
		m.claims.release(w.claim)
		return nil, answer
	}
	if c, ok := m.entryAssertion(ctx, w); ok {
		req.Append = append(req.Append, c)
		w.asserted = c.Critical
	}
	if answer := m.awaitEarlierWrites(ctx, w); answer != nil {
		// Not relayed: the record goes.
		m.claims.release(w.claim)
		m.settleInBackground(context.WithoutCancel(ctx), "abort", w.rec.Seq, func(ctx context.Context) error {
			return m.cfg.Journal.Abort(ctx, w.rec.Seq)
		})
		w.audit.Info("decision", "decision", "refused", "rule", "racing another gateway's write", "diagnostic", answer.Diagnostic)
		return nil, answer
	}
	switch {
	case m.wantsImage(ctx, w):
		// The directory says, with its answer, what the entry is now:
		// delivery need not read it (images.go).
		w.image = true
		req.Append = append(req.Append, m.attrLists().imageCtl)
	case w.unread:
		// The directory says, with its answer, what the entry is.
		req.Append = append(req.Append, m.postReadControl())
	}
	m.beginRelay(w)
	// relay: the gateway sends the write to the directory and hands its
	// answer to settle before the client hears it.
	return func(ctx context.Context, res gateway.Result) { m.settle(ctx, w, res) }, nil
}

// identify names the writer: the entry the session bound as (AD lets users
// bind as user@domain or DOMAIN\user; the policy needs the DN), or the one
// a proxied authorization control asks the directory to write as, and
// whether it is Axigen's own connector. Whether the writer is an admin, or
// the owner of the entry, is asked by decide, for the writes the policy
// judges.
func (m *Mirror) identify(ctx context.Context, w *write, s gateway.SessionInfo) *gateway.Result {
	name := s.BoundDN
	authz, proxied, answer := proxiedIdentity(w.req.Controls)
	switch {
	case answer != nil:
		w.refused = answer
	case proxied:
		name = authz
	}
	dn, sure, err := m.identity(ctx, name)
	if err != nil {
		m.log.Warn("cannot resolve the bound identity", "err", err)
		return unreachable("cannot resolve the bound identity to check the change")
	}
	w.who = writer{dn: dn, sure: sure, addr: s.RemoteAddr}
	if s.SASLMechanism != "" && !proxied {
		// A SASL bind leaves no DN with the session (BoundDN is empty): the
		// writer is not anonymous but someone the gateway cannot name. As
		// anonymous, its own password change (a password modify naming no
		// entry) was relayed unjudged and never reached Axigen.
		w.who = writer{sure: false, addr: s.RemoteAddr, sasl: s.SASLMechanism}
	}
	if proxied && answer == nil {
		w.who.bound = s.BoundDN
	}
	axigenDN := m.pol().AxigenBindDN
	w.who.axigen = sure && axigenDN != "" && dn != "" && m.mapping().EqualDN(dn, axigenDN)
	return nil
}

// classify finds what the write is about: the canonical identity of its
// target (a password modify without a DN targets the writer) and of a
// rename's new DN, asking the directory when the spelling leaves the
// gateway unsure (resolveDN), and holds them until the directory answers
// (onway.go: busy while a modify DN it would race is on its way);
// outside the account and group bases it stops there. Otherwise it drops
// the cached entries the write makes stale, whoever writes, and reads the
// target (from the entry cache when a write read it lately) to tell an
// account, a group, or neither. A write whose target it cannot identify
// is refused: it is never relayed unjudged.
func (m *Mirror) classify(ctx context.Context, w *write) *gateway.Result {
	req, mp := w.req, m.mapping()
	raw := req.DN
	if req.Op == gateway.OpPasswordModify && raw == "" {
		if !w.who.sure {
			return &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: "ldapgate: the gateway cannot tell which entry this session is bound as, " +
				"so it cannot judge a change of its own password; name the entry in the request"}
		}
		if w.who.dn == "" {
			return nil // anonymous: the directory answers
		}
		raw = w.who.dn
	}
	var cur *schema.Entry
	changesEnded := m.onWay.ended() // before cur may be read (targetIdentity)
	if req.Op == gateway.OpAdd {
		// The entry does not exist yet: its parent does.
		target, answer := m.childIdentity(ctx, raw, "", "the new entry")
		if answer != nil {
			return answer
		}
		w.target = target
	} else {
		target, e, answer := m.targetIdentity(ctx, raw, "the entry")
		if answer != nil {
			return answer
		}
		w.target, cur = target, e
	}
	if req.Op == gateway.OpModifyDN {
		renamed := renamedDN(&gateway.WriteRequest{DN: w.target, NewRDN: req.NewRDN})
		newDN, answer := m.childIdentity(ctx, renamed, req.NewSuperior, "the new name")
		if answer != nil {
			return answer
		}
		w.newDN = newDN
	}
	// Held before anything below the target is read (movedSubtree) or the
	// target is (readTarget), until the directory answers: a modify DN
	// racing the write would change what those reads show (onway.go).
	changes := m.identityChange(req, w.target, w.newDN)
	if answer := m.holdDNs(ctx, w, changes != nil); answer != nil {
		return answer
	}
	if cur != nil && m.onWay.ended() != changesEnded {
		cur = nil // read before a modify DN or a rename ended, perhaps of its entry: read again
	}
	if req.Op == gateway.OpModifyDN {
		if answer := m.movedSubtree(ctx, w); answer != nil {
			return answer
		}
		// Whatever its scope, a move changes the DNs below it, which the
		// entry cache knows entries by.
		m.entries.forgetUnder(m.mapping().CanonicalDN(w.target), m.mapping().CanonicalDN(w.newDN))
	}
	if answer := m.transactionWrite(w); answer != nil {
		return answer
	}
	inScope := func(dn string) bool { return dn != "" && (mp.UnderAccountBase(dn) || mp.UnderGroupBase(dn)) }
	if !inScope(w.target) && !inScope(w.newDN) {
		return nil
	}
	w.scoped = true
	// A write that may change what classifies its entry drops the entry
	// from the cache now, and again once the directory has it.
	if w.stale = changes; w.stale != nil {
		if req.Op == gateway.OpModifyDN {
			m.entries.forgetUnder(w.stale...) // the entries below move too
		} else {
			m.entries.forget(w.stale...)
		}
	}
	if req.Op == gateway.OpAdd {
		w.kind = mp.Classify(w.target, attributeValues(mp, req.Attributes, "objectClass"))
		return nil
	}
	if cur == nil {
		if kind := m.unreadKind(ctx, w); kind != schema.KindNone {
			w.kind, w.unread, w.gen = kind, true, m.entries.generation()
			return nil
		}
	}
	w.entry = cur
	return m.readTarget(ctx, w)
}

// readTarget reads the entry a write targets (w.entry, when classify has
// it already) and classifies it: an account, a group or neither.
func (m *Mirror) readTarget(ctx context.Context, w *write) *gateway.Result {
	mp, cur := m.mapping(), w.entry
	w.unread = false
	if cur == nil {
		var err error
		if cur, err = m.readEntry(ctx, w.target); err != nil {
			m.log.Warn("cannot read the entry a write targets", "dn", w.target, "err", err)
			return unreachable("cannot read the target entry to check the change")
		}
	}
	if cur == nil {
		// Answered here, not relayed: relayed unjudged, the write would
		// land on an entry made or renamed to this DN in the meantime
		// through another gateway of a cluster (or behind the gateway's
		// back), with no judgement and no record — a password so set
		// never reached Axigen. The directory would answer noSuchObject
		// now; a client that tries again once the entry is there is
		// judged as any write to it.
		return &gateway.Result{Code: ldap.LDAPResultNoSuchObject, Diagnostic: fmt.Sprintf(
			"ldapgate: there is no entry %s in the directory (as the gateway's service identity reads it)", quoteDN(w.target))}
	}
	w.entry = cur
	w.kind = mp.Classify(w.target, cur.ObjectClasses())
	if w.kind == schema.KindNone && w.newDN != "" {
		w.kind = mp.Classify(w.newDN, cur.ObjectClasses())
	}
	return nil
}

// targetIdentity is the canonical identity of an existing entry the write
// names (and the entry, when the directory had to be asked). A spelling
// the gateway is unsure of that names no entry the directory shows it is
// refused: noSuchObject, or invalidDNSyntax as the directory says.
func (m *Mirror) targetIdentity(ctx context.Context, raw, what string) (string, *schema.Entry, *gateway.Result) {
	canon, e, ok, invalid, err := m.resolveDN(ctx, raw, m.readAttributes())
	switch {
	case err != nil:
		m.log.Warn("cannot resolve the DN a write names", "dn", raw, "err", err)
		return "", nil, unreachable("cannot ask the directory which entry " + quoteDN(raw) + " names")
	case invalid:
		return "", nil, &gateway.Result{Code: ldap.LDAPResultInvalidDNSyntax,
			Diagnostic: "ldapgate: " + quoteDN(raw) + " is not a DN the directory takes"}
	case !ok:
		return "", nil, &gateway.Result{Code: ldap.LDAPResultNoSuchObject, Diagnostic: fmt.Sprintf(
			"ldapgate: %s %s is spelled in a form the gateway can only check with the directory, and the directory shows no such entry",
			what, quoteDN(raw))}
	}
	if e != nil {
		e.DN = canon
	}
	return canon, e, nil
}

// childIdentity is the canonical DN of an entry a write creates or renames
// to: rdn's canonical form under its parent's identity (superior, when
// given, else the parent in dn). The parent must be one the gateway can
// identify; the new RDN itself is compared best effort (CanonicalDN),
// which is enough to place it, since its parent decides its scope.
func (m *Mirror) childIdentity(ctx context.Context, dn, superior, what string) (string, *gateway.Result) {
	parent, rdn, ok := schema.ParentDN(dn)
	if !ok {
		return "", &gateway.Result{Code: ldap.LDAPResultInvalidDNSyntax,
			Diagnostic: "ldapgate: " + what + " " + quoteDN(dn) + " is not a DN the gateway can parse"}
	}
	if superior != "" {
		parent = superior
	}
	canonRDN := m.mapping().CanonicalDN(rdn)
	if parent == "" {
		return canonRDN, nil
	}
	canonParent, _, answer := m.targetIdentity(ctx, parent, "the parent of "+what)
	if answer != nil {
		return "", answer
	}
	return canonRDN + "," + canonParent, nil
}

// quoteDN quotes a DN for a diagnostic, cut short when very long.
func quoteDN(dn string) string {
	if len(dn) > 256 {
		dn = dn[:256] + "..."
	}
	return fmt.Sprintf("%q", dn)
}

// decide applies the policy (policy.go) to an account or group write:
// first the request's controls (controls.go), then whether the writer is
// an admin (Admins), the entry's owner or Axigen's connector, and what the
// change touches; last, that every value Axigen is to receive is one it
// can take (values.go). A refused write is answered with the rule that
// refused it (insufficientAccessRights, 50; constraintViolation, 19, for
// a value; the control's code) and never reaches the directory. Every
// verdict is one audit line.
func (m *Mirror) decide(ctx context.Context, w *write) *gateway.Result {
	w.audit = m.auditOf(ctx, w)
	noOp, answer := checkControls(w.req.Controls)
	if w.refused != nil {
		answer = w.refused
	}
	if answer != nil {
		w.audit.Info("decision", "decision", "refused", "rule", "controls", "diagnostic", answer.Diagnostic)
		return answer
	}
	w.noOp = noOp
	admin := false
	if w.who.sure && !w.who.axigen {
		var err error
		if admin, err = m.IsAdmin(ctx, w.who.dn); err != nil {
			m.log.Warn("cannot check admin group membership", "err", err)
			return unreachable("cannot check the admin group")
		}
	}
	owner := w.who.sure && w.who.dn != "" && m.mapping().EqualDN(w.who.dn, w.target)
	if w.who.axigen {
		w.verdict = m.judgeConnector(w.kind, w.req)
	} else {
		w.verdict = m.judge(w.kind, w.req, admin, owner)
	}
	if w.verdict.refuse != "" {
		w.audit.Info("decision", "decision", "refused", "rule", w.verdict.refuse)
		return refusal(w.verdict.refuse, w.target, w.who.actor())
	}
	if w.verdict.mirror {
		if answer := m.checkValues(w); answer != nil {
			w.audit.Info("decision", "decision", "refused", "rule", "value Axigen cannot take", "diagnostic", answer.Diagnostic)
			return answer
		}
		if answer := m.checkNameFree(ctx, w); answer != nil {
			w.audit.Info("decision", "decision", "refused", "rule", "name of another entry", "diagnostic", answer.Diagnostic)
			return answer
		}
	}
	// Axigen's own writes are never mirrored back; nor is a no-op, which
	// the directory does not apply.
	if w.who.axigen || w.noOp {
		w.verdict.mirror = false
	}
	if !w.verdict.mirror {
		w.audit.Info("decision", "decision", "allowed", "mirrored", false)
	}
	return nil
}

// auditOf is the logger of a write's audit lines: the audit log with who,
// what and where. Its attributes are given in one With (each With copies
// the logger and encodes its attributes), and none when the audit log
// takes no lines (no --audit-log): that cost was the write path's alone.
func (m *Mirror) auditOf(ctx context.Context, w *write) *slog.Logger {
	if !m.cfg.Audit.Enabled(ctx, slog.LevelInfo) {
		return m.cfg.Audit
	}
	attrs := make([]any, 0, 20)
	attrs = append(attrs, "actor", w.who.dn, "client", w.who.addr, "op", w.req.Op.String(),
		"kind", w.kind.String(), "dn", w.target)
	if w.who.bound != "" {
		attrs = append(attrs, "boundAs", w.who.bound, "proxied", true)
	}
	if w.newDN != "" {
		attrs = append(attrs, "newDN", w.newDN)
	}
	if w.who.axigen {
		attrs = append(attrs, "connector", "axigen")
	}
	if w.who.sasl != "" {
		attrs = append(attrs, "sasl", w.who.sasl)
	}
	if w.unread {
		// The kind is the DN's; the directory's answer confirms it (settle).
		attrs = append(attrs, "entryRead", false)
	}
	return m.cfg.Audit.With(attrs...)
}

// prepare journals an allowed write before the directory sees it: a record
// in state prepared, on disk (fsync shared with concurrent writers) or, in
// a cluster, stored by a quorum of the gateways. A write that cannot be
// journaled is not made (52).
func (m *Mirror) prepare(ctx context.Context, w *write) *gateway.Result {
	// A deleted account leaves its groups inside the directory (refint)
	// with no write the gateway sees: note them, to re-apply at delivery.
	var groups []string
	if w.req.Op == gateway.OpDelete && w.kind == schema.KindAccount {
		var err error
		if groups, err = m.groupsOf(ctx, w.target); err != nil {
			m.log.Warn("cannot list the groups of an account being deleted", "dn", w.target, "err", err)
			return unreachable("cannot read the groups of the account")
		}
	}
	rec, err := m.record(w, groups)
	if err != nil {
		return &gateway.Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: " + err.Error()}
	}
	seq, err := m.cfg.Journal.Prepare(ctx, rec)
	if err != nil {
		m.log.Error("cannot journal a write; refusing it", "dn", w.target, "err", err)
		var unknown *store.UnknownPrepareError
		if errors.As(err, &unknown) {
			m.abortUnknown(ctx, unknown.Token, w.target)
		}
		return journalRefusal(err)
	}
	rec.Seq = seq
	w.rec = rec
	if w.audit.Enabled(ctx, slog.LevelInfo) { // the attributes' list is made for the line alone
		w.audit.Info("decision", "decision", "allowed", "mirrored", true, "seq", seq, "attributes", changedAttributes(rec))
	}
	return nil
}

// relayAsIs is the Completion of a write relayed with no journal record:
// it only drops the cache entries the write makes stale and releases the
// DNs the write holds (nil when there are none of either).
func (m *Mirror) relayAsIs(w *write) gateway.Completion {
	// Of the writes Axigen is not told of, those that change its entry's
	// kind, key or name, and Axigen's own, change what a delivery of the
	// entry would read: the images follow them (images.go).
	w.scoped = w.scoped && (w.stale != nil || w.who.axigen)
	m.beginRelay(w)
	if w.stale == nil && !w.scoped && len(w.hold.dns) == 0 {
		return nil
	}
	return func(_ context.Context, res gateway.Result) {
		if w.stale != nil {
			m.dropStale(w.stale, w.req.Op == gateway.OpModifyDN, res)
		}
		m.endRelay(w, res)
		// After the stale entries are dropped: a write let through now
		// reads what the directory holds.
		m.onWay.release(w.hold)
	}
}

// settle settles a journaled write on the directory's answer: commit on
// success, abort on a failure, resolve when the answer never came. This
// happens whatever the client does meanwhile. Commit and abort need not
// reach the disk before the client hears the answer: a record still
// prepared at the next start is settled as recovery does (resolve), so
// they run in the background and the client waits for one fsync
// (Prepare's), not two.
func (m *Mirror) settle(ctx context.Context, w *write, res gateway.Result) {
	rec, req := w.rec, w.req
	// The directory has the name now, or will not: its own search shows.
	m.claims.release(w.claim)
	m.cfg.Audit.Info("directory result", "seq", rec.Seq, "result", res.Code, "unanswered", res.Unanswered)
	if w.stale != nil {
		m.dropStale(w.stale, w.req.Op == gateway.OpModifyDN, res)
	}
	m.endRelay(w, res) // before the commit below makes the record deliverable
	if res.Code == ldap.LDAPResultAssertionFailed {
		// The entry at the DN is not the one read (entryAssertion): a
		// retry must read it again, not find it in the cache.
		m.entries.forget(m.mapping().CanonicalDN(w.target))
	}
	// A write journaled before its entry was read learns the entry's name
	// at its commit, from the directory's answer or, when that is not
	// whole, a read: it holds the entry until then, so that no rename of
	// it is made between the write and that read (the record's Name is the
	// name the next record's delivery names the account by).
	holdToCommit := w.unread && !res.Unanswered && res.Code == ldap.LDAPResultSuccess
	if !holdToCommit {
		m.onWay.release(w.hold)
	}
	// The journal must settle even if the client has gone.
	ctx = context.WithoutCancel(ctx)
	j := m.cfg.Journal
	background := func(what string, fn func() error) {
		m.settleInBackground(ctx, what, rec.Seq, func(context.Context) error { return fn() })
	}
	switch {
	case res.Unanswered:
		// The directory may or may not have made the change.
		m.settling.Add(1)
		go func() { defer m.settling.Done(); m.resolve(ctx, rec) }()
	case res.Code != ldap.LDAPResultSuccess:
		background("abort", func() error { return j.Abort(ctx, rec.Seq) })
	case req.Op == gateway.OpPasswordModify && len(req.NewPassword) == 0 && len(res.GeneratedPassword) > 0:
		// The directory chose the password: it exists nowhere else, so it is
		// journaled in a record of its own before the client hears of it.
		gen := *rec
		gen.Seq, gen.Secret, gen.Note = 0, res.GeneratedPassword, "password generated by the directory"
		seq, err := j.Prepare(ctx, &gen)
		if err != nil {
			// Not aborted by its token when its outcome is unknown: the
			// directory holds this password, and the orphan settling
			// confirms it by a bind and delivers it.
			m.log.Error("cannot journal a generated password", "dn", rec.DN, "err", err)
		} else {
			background("commit", func() error { return j.Commit(ctx, seq, "") })
		}
		background("abort", func() error { return j.Abort(ctx, rec.Seq) })
	case req.Op == gateway.OpAdd:
		// The new entry's stable key exists only now; the journal keeps its
		// history under it.
		background("commit", func() error { return j.Commit(ctx, rec.Seq, m.keyOf(ctx, rec.DN)) })
	case w.unread:
		// What the entry is, and its key, come with the answer.
		m.settleInBackgroundThen(ctx, "commit", rec.Seq, func(ctx context.Context) error { return m.settleUnread(ctx, w, res) },
			func() { m.onWay.release(w.hold) })
		return
	default:
		background("commit", func() error { return j.Commit(ctx, rec.Seq, "") })
	}
	if holdToCommit {
		// Settled by another branch (a generated password's): nothing
		// waits to name the record.
		m.onWay.release(w.hold)
	}
}

// settleInBackground runs fn, a commit or abort (what) of record seq, in
// the background, tried again as settleRetrying does; ctx must outlive the
// client's request. What still fails is settled as after a crash.
func (m *Mirror) settleInBackground(ctx context.Context, what string, seq uint64, fn func(context.Context) error) {
	m.settleInBackgroundThen(ctx, what, seq, fn, nil)
}

// settleInBackgroundThen is settleInBackground, running then (when not
// nil) once fn has succeeded or been given up.
func (m *Mirror) settleInBackgroundThen(ctx context.Context, what string, seq uint64, fn func(context.Context) error, then func()) {
	m.settling.Add(1)
	go func() {
		defer m.settling.Done()
		if then != nil {
			defer then()
		}
		if err := settleRetrying(ctx, &m.closing, func() error { return fn(ctx) }); err != nil {
			m.log.Error("cannot "+what+" a journal record; it will be settled as after a crash (at the next start, or in a cluster by the leader once it is --cluster-orphan-age old)", "seq", seq, "err", err)
		}
	}()
}

// abortUnknown aborts, in the background, the record of a refused write
// whose Prepare's outcome is unknown (a cluster's leader failed with it):
// the write is not relayed, but its record may be in the log, prepared,
// and would hold back the entry's later records until the leader settled
// it as an orphan (--cluster-orphan-age). The abort names the record by
// its Prepare's token, and is tried again as a commit is; what cannot be
// proposed within that time is still settled as an orphan.
func (m *Mirror) abortUnknown(ctx context.Context, tok store.PrepareToken, dn string) {
	ctx = context.WithoutCancel(ctx)
	m.settling.Add(1)
	go func() {
		defer m.settling.Done()
		err := settleRetrying(ctx, &m.closing, func() error { return m.cfg.Journal.AbortToken(ctx, tok) })
		if err != nil {
			m.log.Error("cannot abort the record of a refused write whose journaling may have happened; the leader settles it once it is --cluster-orphan-age old", "dn", dn, "token", tok.String(), "err", err)
			return
		}
		m.log.Info("aborted the record of a refused write whose journaling may have happened", "dn", dn, "token", tok.String())
	}()
}

// settleRetryFor bounds how long a commit or abort is tried again.
const settleRetryFor = 2 * time.Minute

// settleRetrying runs a commit or abort, again while it fails for a reason
// that may pass: in a cluster, the leader it went to may have failed with
// the change on its way (a later leader may or may not have it), or there
// is no quorum for a while. Done twice, the second finds the record
// settled already (ErrState), which is success. What still fails, or is
// still being tried when the gateway stops (closing), is left prepared and
// settled as after a crash: by the next start of a lone gateway, by the
// cluster's leader once the record is --cluster-orphan-age old.
func settleRetrying(ctx context.Context, closing *atomic.Bool, fn func() error) error {
	deadline := time.Now().Add(settleRetryFor)
	wait := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn()
		switch {
		case err == nil:
			return nil
		case attempt > 0 && errors.Is(err, store.ErrState):
			return nil
		case errors.Is(err, store.ErrState), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrClosed),
			closing.Load(), time.Now().Add(wait).After(deadline):
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// resolve settles a record whose outcome is unknown (an unanswered write,
// or one left prepared by a crash): deliver it anyway, since delivery reads
// the directory's state; but a password is kept only if the directory
// accepts it (a bind with it).
func (m *Mirror) resolve(ctx context.Context, rec *store.Record) {
	j := m.cfg.Journal
	if len(rec.Secret) > 0 {
		dn := rec.DN
		if rec.NewDN != "" {
			dn = rec.NewDN
		}
		ok, err := m.cfg.Directory.CheckPassword(ctx, dn, string(rec.Secret))
		if err != nil {
			m.log.Warn("cannot confirm the password of an unsettled record; it stays prepared", "seq", rec.Seq, "err", err)
			return
		}
		if !ok {
			if err := j.Abort(ctx, rec.Seq); err != nil {
				m.log.Error("cannot drop an unconfirmed password record", "seq", rec.Seq, "err", err)
			}
			return
		}
	}
	if err := j.Commit(ctx, rec.Seq, ""); err != nil {
		m.log.Error("cannot commit an unsettled record", "seq", rec.Seq, "err", err)
	}
}

// Run is the deliver step: the journal's workers hand each committed
// record to the deliverer (deliver.go), which reads the entry's current
// state, maps it and applies it to Axigen; records of one entry in order,
// different entries in parallel, failures retried with backoff. It
// returns when ctx ends.
func (m *Mirror) Run(ctx context.Context) error {
	if m.cfg.Journal == nil {
		return errors.New("mirror: no journal to deliver from")
	}
	return m.cfg.Journal.Run(ctx, m.cfg.Workers, deliverer{m})
}

// journalRefusal is the answer to a write whose record the journal did not
// take: unavailable (52), the write is not relayed. A cluster without a
// quorum says so, for the client to try again later or elsewhere; so does
// one whose leader failed while it journaled the write.
func journalRefusal(err error) *gateway.Result {
	var unknown *store.UnknownPrepareError
	if errors.As(err, &unknown) {
		return &gateway.Result{Code: ldap.LDAPResultUnavailable,
			Diagnostic: "ldapgate: the gateway cluster's leader failed while the change was being journaled; the change is not made (try again): " + err.Error()}
	}
	if errors.Is(err, store.ErrUnavailable) {
		return &gateway.Result{Code: ldap.LDAPResultUnavailable,
			Diagnostic: "ldapgate: the gateway cluster has no quorum, so no change to accounts or groups can be journaled now; the change is not made (try again later): " + err.Error()}
	}
	return &gateway.Result{Code: ldap.LDAPResultUnavailable,
		Diagnostic: "ldapgate: the change cannot be journaled, so it is not made: " + err.Error()}
}

// refusal is the answer to a write the policy does not allow.
func refusal(rule, dn, actor string) *gateway.Result {
	return &gateway.Result{
		Code:       ldap.LDAPResultInsufficientAccessRights,
		Diagnostic: fmt.Sprintf("ldapgate: policy rule %q refuses this change of %s by %s", rule, dn, actor),
	}
}

// unreachable is the answer to a write the gateway cannot judge because
// the directory does not answer the gateway's own reads: unavailable (52).
func unreachable(what string) *gateway.Result {
	return &gateway.Result{Code: ldap.LDAPResultUnavailable,
		Diagnostic: "ldapgate: " + what + ": the directory is unreachable for the gateway"}
}
