package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// A group is listed in Axigen by its members' addresses (memberMailAttribute),
// read from each member's entry at the group's delivery. A member that is
// no account (an entry outside the bases, a contact, say) is judged by no
// policy, and its writes are relayed with no record of their own; yet its
// mail change, delete or rename changes what its groups list. Such a write
// through the gateway journals one group record for each group of the
// group base that lists the entry (memberGroupRecords): prepared before the
// write is relayed, committed on the directory's success, aborted on its
// failure, resolved (committed) when its outcome is unknown, as any record.
// A group record delivers the group's current state, so a record whose
// write did not happen delivers nothing new.

// memberGroupsMax bounds the group records one write journals for the
// groups its entry is a member of. A write whose entry is a member of more
// is refused (unwillingToPerform), as a write the gateway cannot journal is
// not made: journaling some would leave the others stale in Axigen until a
// resync, with nothing telling which. The entry can leave some of its
// groups first (group writes are journaled one by one).
const memberGroupsMax = 256

// changesMemberAddress reports whether w, a write to an entry that is no
// account or group, may change what a group lists for the entry: a
// modify of the member mail attribute, a delete, a modify DN (groups may
// list its new DN already), an add with a mail (groups may list its DN
// already). The
// directory decides whether the writer may make it; a no-op it does not
// apply.
//
// Axigen's own writes are never mirrored back, against a loop (Axigen
// writes an account's value, the gateway delivers it to Axigen, whose
// sync writes it again), except its change of such an entry's mail.
// Axigen holds no object for the entry, only the address its groups
// list, which nothing else would correct; and the group records cannot
// start a loop: their delivery changes only the groups' member addresses,
// and Axigen writing a group back is refused (judgeConnector), writing an
// account is not mirrored, and the entry itself Axigen has nothing of to
// write (were it to write the same mail again, the groups' records would
// find Axigen's groups as the directory has them, and send nothing). Its
// delete or rename of such an entry stays unmirrored, as its other writes.
func (m *Mirror) changesMemberAddress(w *write) bool {
	if w.target == "" {
		return false
	}
	if w.who.dn == "" && w.who.sasl == "" {
		// An anonymous session: directories refuse its writes, and
		// journaling (then aborting) a record per group for each of them
		// would let anyone make the gateway write up to memberGroupsMax
		// records per request.
		return false
	}
	if noOp, _ := checkControls(w.req.Controls); noOp {
		return false
	}
	switch w.req.Op {
	case gateway.OpDelete, gateway.OpModifyDN:
		return !w.who.axigen
	case gateway.OpAdd:
		// A group may list the DN before the entry exists (a dangling
		// member, skipped for want of an address): the entry added with
		// a mail gives it one.
		mail := m.mapping().MemberMailAttribute()
		return !w.who.axigen && mail != "" && len(attributeValues(m.mapping(), w.req.Attributes, mail)) > 0
	case gateway.OpModify:
		mp := m.mapping()
		mail := mp.MemberMailAttribute()
		if mail == "" {
			return false
		}
		for _, c := range w.req.Changes {
			if mp.SameAttribute(c.Type, mail) {
				return true
			}
		}
	}
	return false
}

// relayMember relays a write with no record of its own (relayAsIs) and,
// when it may change what groups list for its entry (changesMemberAddress),
// journals a record for each of those groups first and settles them on
// the directory's answer.
func (m *Mirror) relayMember(ctx context.Context, w *write) (gateway.Completion, *gateway.Result) {
	if !m.changesMemberAddress(w) {
		return m.relayAsIs(w), nil
	}
	recs, answer := m.memberGroupRecords(ctx, w)
	if answer != nil {
		return nil, answer
	}
	done := m.relayAsIs(w)
	if len(recs) == 0 {
		return done, nil
	}
	return func(ctx context.Context, res gateway.Result) {
		if done != nil {
			done(ctx, res)
		}
		m.onWay.release(w.groupHold)
		m.settleGroupRecords(ctx, recs, res)
	}, nil
}

// memberGroupRecords journals, prepared, a record of each group of the
// group base that lists w's entry as a member now (before the write: a
// delete or rename's refint changes the groups with it). None when no
// group lists it. A write whose groups cannot be read, or cannot all be
// journaled, is refused: it is not made.
//
// The groups are held (onWay) from before their names are read for the
// records until the write is answered, as a write to each would be: a
// record's Name must be the one the group's record before it left
// (Journal.NameAfter), so a rename of a group, which goes alone, is never
// on its way meanwhile. A search made while a rename (or another identity
// change) ended is made again, once held.
func (m *Mirror) memberGroupRecords(ctx context.Context, w *write) ([]*store.Record, *gateway.Result) {
	var groups []schema.Entry
	for attempt := 0; ; attempt++ {
		ended := m.onWay.ended()
		var err error
		// A modify DN's new DN too: a group listing it already gains the
		// entry's address.
		if groups, err = m.memberGroups(ctx, w.target, w.newDN); err != nil {
			m.log.Warn("cannot list the groups of a member being changed", "dn", w.target, "err", err)
			return nil, unreachable("cannot read the groups that list " + quoteDN(w.target))
		}
		if len(groups) == 0 {
			return nil, nil
		}
		if len(groups) > memberGroupsMax {
			break // refused below
		}
		answer := m.holdGroups(ctx, w, groups)
		if answer != nil {
			return nil, answer
		}
		if m.onWay.ended() == ended || attempt == 2 {
			// Three identity changes in a row between a search and its
			// hold: the names may still be a step behind, which only
			// orders the records by one more name.
			break
		}
		m.onWay.release(w.groupHold)
		w.groupHold = onWayHold{}
	}
	if slices.ContainsFunc(w.req.Controls, func(c gateway.Control) bool { return c.OID == oidTxnSpec }) {
		// The directory's answer to a write in a transaction says only that
		// it is queued: the group records would be settled (and delivered)
		// before the transaction applies the change.
		return nil, &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
			"ldapgate: the %s control (%s) is refused on this write: %s is a member of %d groups, whose lists in Axigen it changes, "+
				"and a transaction applies the write only at its end", writeControls[oidTxnSpec].name, oidTxnSpec, quoteDN(w.target), len(groups))}
	}
	if len(groups) > memberGroupsMax {
		m.log.Warn("write refused: its entry is a member of more groups than one write journals",
			"dn", w.target, "op", w.req.Op.String(), "groups", len(groups), "max", memberGroupsMax)
		return nil, &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
			"ldapgate: %s is a member of %d groups; this change of it changes what each lists in Axigen, "+
				"and the gateway journals at most %d groups for one write; remove it from some groups first",
			quoteDN(w.target), len(groups), memberGroupsMax)}
	}
	mp := m.mapping()
	note := fmt.Sprintf("member %s: %s", w.target, w.req.Op.String())
	if w.newDN != "" {
		note += " to " + w.newDN
	}
	recs := make([]*store.Record, len(groups))
	for i, g := range groups {
		key, err := m.entryKey(g)
		if err != nil {
			return nil, &gateway.Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: " + err.Error()}
		}
		recs[i] = &store.Record{
			Time:       time.Now(),
			Actor:      w.who.dn,
			ClientAddr: w.who.addr,
			Kind:       store.KindGroup,
			Op:         store.OpModify,
			DN:         g.DN,
			EntryKey:   key,
			Name:       mp.EntryName(g, schema.KindGroup),
			Note:       note,
		}
	}
	if answer := m.prepareAll(ctx, recs, w.target); answer != nil {
		return nil, answer
	}
	seqs := make([]uint64, len(recs))
	for i, r := range recs {
		seqs[i] = r.Seq
	}
	audit := m.cfg.Audit
	if w.who.axigen {
		// The one write of Axigen's connector that is mirrored
		// (changesMemberAddress): say so, as decide's audit does.
		audit = audit.With("connector", "axigen")
	}
	audit.Info("member's groups journaled", "actor", w.who.dn, "client", w.who.addr, "op", w.req.Op.String(),
		"dn", w.target, "groups", len(recs), "seqs", seqs)
	return recs, nil
}

// holdGroups holds the DNs of groups (in w.groupHold) as writes to them
// would, or answers busy (holdDNs).
func (m *Mirror) holdGroups(ctx context.Context, w *write, groups []schema.Entry) *gateway.Result {
	mp := m.mapping()
	dns := make([]string, len(groups))
	for i, g := range groups {
		dns[i] = mp.CanonicalDN(g.DN)
	}
	h, blocker, _, ok := m.onWay.hold(ctx, dns, false, false, false, holdPatience, w.flush)
	if !ok {
		return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
			"ldapgate: a change of the group %s (its name, or a modify DN above it) is on its way to the directory, and this write changes what it lists; try again once it is answered",
			quoteDN(blocker))}
	}
	w.groupHold = h
	return nil
}

// memberGroups reads the groups of the group base that list one of dns as a member
// now, with what their records need (key, name).
func (m *Mirror) memberGroups(ctx context.Context, dns ...string) ([]schema.Entry, error) {
	mp := m.mapping()
	bases := mp.GroupBases()
	if len(bases) == 0 {
		return nil, nil
	}
	filter := m.memberFilter(dns...)
	if filter == "" {
		return nil, nil
	}
	found, err := m.cfg.Directory.SearchAll(ctx, bases, filter, m.readAttributes())
	if err != nil {
		return nil, err
	}
	groups := found[:0]
	for _, e := range found {
		if mp.ClassifyEntry(e) == schema.KindGroup {
			groups = append(groups, e)
		}
	}
	return groups, nil
}

// memberFilter is the filter of the entries whose member attributes list
// one of dns, "" when there is nothing to search for: (attr=<dn>) for each
// member attribute and, for uniqueMember, (attr~=<dn>) as well.
//
// A uniqueMember value may carry the optional UID of RFC 4517's
// NameAndOptionalUID (<dn>#'0101'B), which GroupState strips to find the
// member. slapd's uniqueMemberMatch matches such a value only against an
// assertion carrying the same UID, and the UIDs a group lists a DN with
// are not known here, so (uniqueMember=<dn>) misses those groups. The
// approximate match of uniqueMember (it has no approximate rule of its
// own: slapd runs uniqueMemberMatch with its approximate flag) compares
// the DN part alone when the assertion carries no UID, as DNs
// (normalised: case, spaces, escaped characters), so it finds values with
// any UID, or none. It costs what the equality term does: with no
// approximate rule, back-mdb answers ~= from the attribute's equality
// index, whose keys are the DN without its UID.
//
// The equality term stays for a directory whose approximate match is
// something else: it then finds what it found before. A group a looser
// approximate match finds besides is one more group record, which
// delivers the group as the directory has it: nothing wrong in Axigen.
func (m *Mirror) memberFilter(dns ...string) string {
	mp := m.mapping()
	var terms []string
	seen := map[string]bool{}
	for _, dn := range dns {
		if dn == "" || seen[mp.CanonicalDN(dn)] {
			continue
		}
		seen[mp.CanonicalDN(dn)] = true
		value := ldap.EscapeFilter(dn)
		for _, a := range mp.MemberAttributes() {
			terms = append(terms, fmt.Sprintf("(%s=%s)", a, value))
			if mp.SameAttribute(a, "uniqueMember") {
				terms = append(terms, fmt.Sprintf("(%s~=%s)", a, value))
			}
		}
	}
	if len(terms) == 0 {
		return ""
	}
	return "(|" + strings.Join(terms, "") + ")"
}

// prepareAll prepares recs together (their fsyncs shared, as concurrent
// writers' are), setting each one's Seq. If any cannot be journaled, those
// that were are aborted (in the background) and the write is refused.
func (m *Mirror) prepareAll(ctx context.Context, recs []*store.Record, dn string) *gateway.Result {
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	for i, r := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, err := m.cfg.Journal.Prepare(ctx, r)
			r.Seq, errs[i] = seq, err
		}()
	}
	wg.Wait()
	var first error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if first == nil {
			first = err
		}
		var unknown *store.UnknownPrepareError
		if errors.As(err, &unknown) {
			m.abortUnknown(ctx, unknown.Token, recs[i].DN)
		}
	}
	if first == nil {
		return nil
	}
	m.log.Error("cannot journal the groups of a member being changed; refusing the write", "dn", dn, "err", first)
	for i, r := range recs {
		if errs[i] == nil {
			m.settleInBackground(context.WithoutCancel(ctx), "abort", r.Seq, func(ctx context.Context) error {
				return m.cfg.Journal.Abort(ctx, r.Seq)
			})
		}
	}
	return journalRefusal(first)
}

// settleGroupRecords settles the group records of a member's write on the
// directory's answer, as settle does a write's own record: commit on
// success, abort on a failure, resolve (here: commit, since a group record
// delivers the group as it is) when the answer never came.
func (m *Mirror) settleGroupRecords(ctx context.Context, recs []*store.Record, res gateway.Result) {
	ctx = context.WithoutCancel(ctx)
	j := m.cfg.Journal
	for _, rec := range recs {
		m.cfg.Audit.Info("directory result", "seq", rec.Seq, "result", res.Code, "unanswered", res.Unanswered)
		switch {
		case res.Unanswered:
			m.settling.Add(1)
			go func() { defer m.settling.Done(); m.resolve(ctx, rec) }()
		case res.Code != ldap.LDAPResultSuccess:
			m.settleInBackground(ctx, "abort", rec.Seq, func(ctx context.Context) error { return j.Abort(ctx, rec.Seq) })
		default:
			m.settleInBackground(ctx, "commit", rec.Seq, func(ctx context.Context) error { return j.Commit(ctx, rec.Seq, "") })
		}
	}
}
