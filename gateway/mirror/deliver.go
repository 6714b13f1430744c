package mirror

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// deliverer is the journal's view of the mirror, the deliver step: the
// journal's workers hand it each settled record (store.Deliverer) and ask
// which later records a delivery takes along (store.Coverer).
type deliverer struct{ m *Mirror }

var (
	_ store.Deliverer      = deliverer{}
	_ store.Coverer        = deliverer{}
	_ store.BatchDeliverer = deliverer{}
)

// Deliver delivers one record and tells the audit log and the observer.
func (d deliverer) Deliver(ctx context.Context, rec *store.Record) error {
	start := time.Now()
	err := d.m.deliver(ctx, rec)
	d.report(rec, err, start)
	return err
}

// MaxBatch is the most records DeliverBatch takes at once (Config.Batch).
func (d deliverer) MaxBatch() int { return d.m.cfg.Batch }

// DeliverBatch delivers records of different entries: each is prepared as
// Deliver's (the directory read, the password check...), then the accounts
// among them are applied to Axigen together (axigen.Client.ApplyAccounts:
// one session, shared round trips), and each delivery ends on its own.
// Each record has its own outcome, audit line and observation.
func (d deliverer) DeliverBatch(ctx context.Context, recs []*store.Record) []error {
	return d.deliverBatch(ctx, recs, nil)
}

// deliverBatch is DeliverBatch; guard, when set, is asked before each
// record's delivery begins.
func (d deliverer) deliverBatch(ctx context.Context, recs []*store.Record, guard func(context.Context) error) []error {
	m := d.m
	start := time.Now()
	errs := make([]error, len(recs))
	var applies []*accountApply
	var at []int              // the record of each apply
	refused := map[int]bool{} // not delivered at all: the guard said no
	for i, rec := range recs {
		if guard != nil {
			if err := guard(ctx); err != nil {
				errs[i], refused[i] = notLeading(err), true
				continue
			}
		}
		a, err := m.prepareDelivery(ctx, rec)
		if err != nil || a == nil {
			errs[i] = err
			continue
		}
		applies, at = append(applies, a), append(at, i)
	}
	if len(applies) > 0 {
		reqs := make([]axigen.AccountApply, len(applies))
		for k, a := range applies {
			reqs[k] = a.request()
		}
		res := m.cfg.Axigen.ApplyAccounts(ctx, m.cfg.Domain, reqs)
		for k, a := range applies {
			errs[at[k]] = m.finish(ctx, a, res[k].Plan, res[k].Err)
		}
	}
	for i, rec := range recs {
		if !refused[i] {
			d.report(rec, errs[i], start)
		}
	}
	return errs
}

// report tells the audit log and the observer what a delivery of rec,
// begun at start, came to.
func (d deliverer) report(rec *store.Record, err error, start time.Time) {
	m := d.m
	incomplete := store.IsIncomplete(err)
	if m.cfg.Observer != nil {
		observed := err
		if incomplete {
			observed = nil // delivered: what it left out is in the record
		}
		m.cfg.Observer.DeliveryDone(string(rec.Kind), observed)
	}
	switch {
	case incomplete:
		m.cfg.Audit.Info("delivery", "seq", rec.Seq, "outcome", "delivered", "attempt", rec.Attempts+1,
			"ms", time.Since(start).Milliseconds(), "skipped", err.Error())
	case err != nil:
		m.cfg.Audit.Info("delivery", "seq", rec.Seq, "outcome", "failed", "attempt", rec.Attempts+1,
			"retryable", !store.IsPermanent(err), "error", err.Error())
		m.log.Warn("delivery to Axigen failed", "seq", rec.Seq, "dn", rec.DN, "attempt", rec.Attempts+1, "err", err)
	default:
		m.cfg.Audit.Info("delivery", "seq", rec.Seq, "outcome", "delivered", "attempt", rec.Attempts+1,
			"ms", time.Since(start).Milliseconds())
	}
}

// Covers reports whether delivering an earlier record of the same entry
// delivers this one too.
func (d deliverer) Covers(rec *store.Record) bool { return d.m.covered(rec) }

// covered reports whether delivering an earlier record of the same entry
// delivers this modify too: delivery applies the entry's state, except for
// what a change does by itself — disabling the account scrambles its
// password, a new address refreshes its groups.
//
// A record taken along drops its entry's image (images.forget): the
// delivery then reads the entry, after the record was committed, so that
// the state it delivers holds the record's write whatever the images knew
// (an image served while a later write was committed delivered the earlier
// state and settled the later record with it: TestRelayInterceptedWriteFinishes
// under load).
func (m *Mirror) covered(rec *store.Record) bool {
	ok := rec.Op == store.OpModify && len(rec.Secret) == 0 && !m.touchesDisabled(rec) && !m.touchesAddress(rec) &&
		m.passwordChangeOf(rec) == passwordKept
	if ok {
		m.images.forget(rec.DN)
	}
	return ok
}

// deliver brings Axigen in line with the directory's current state of the
// record's entry. It is idempotent: replays and retries are harmless.
func (m *Mirror) deliver(ctx context.Context, rec *store.Record) error {
	a, err := m.prepareDelivery(ctx, rec)
	if err != nil || a == nil {
		return err
	}
	res := m.cfg.Axigen.ApplyAccounts(ctx, m.cfg.Domain, []axigen.AccountApply{a.request()})
	return m.finish(ctx, a, res[0].Plan, res[0].Err)
}

// request is the apply of a's account. An account whose entry was added
// before this record is expected to exist in Axigen (its reads then go
// with its LIST: axigen.AccountApply.Exists).
func (a *accountApply) request() axigen.AccountApply {
	return axigen.AccountApply{Desired: a.desired, PreviousName: a.previous, Exists: a.rec.Op != store.OpAdd}
}

// accountApply is a delivery prepared up to the apply of its account to
// Axigen (prepareDelivery), with what its end (finish) needs.
type accountApply struct {
	rec           *store.Record
	entry         schema.Entry
	desired       schema.Account
	previous      string
	disabled      *store.DisabledAccount
	pc            passwordChange
	delivered     bool // the record's password is sent
	replaced      bool
	passwordWaits bool
	skipped       []*schema.ValueError
}

// prepareDelivery does a record's delivery up to the apply of its account to
// Axigen, which it returns; nil when the delivery needed none (a group, an
// entry gone) and is over, err saying how it went.
func (m *Mirror) prepareDelivery(ctx context.Context, rec *store.Record) (*accountApply, error) {
	// The bases and attributes alone, not Config(): it copies the whole
	// configuration, a dozen slices and a map, and this runs per record.
	mp := m.mapping()
	kind, bases, attrs := schema.KindAccount, mp.AccountBases(), mp.AccountAttributes()
	if rec.Kind == store.KindGroup {
		kind, bases, attrs = schema.KindGroup, mp.GroupBases(), mp.GroupAttributes()
	}
	e, err := m.current(ctx, rec, bases, attrs)
	if err != nil {
		return nil, err
	}
	gone := "entry deleted in the directory"
	if e != nil && mp.ClassifyEntry(*e) != kind {
		e = nil // moved out of scope or no longer an account/group
		gone = "entry moved out of the account base or no longer an account"
	}
	inBases := mp.UnderAccountBase
	if kind == schema.KindGroup {
		inBases = mp.UnderGroupBase
	}
	// The entry's next rename, not delivered yet: the DN it moved the
	// entry from is the DN the entry had once this record's write (and
	// those its delivery takes along) were made. Asked once the entry is
	// read.
	nextDN, nextWaiting, nextRename := m.cfg.Journal.RenameAfter(rec.Seq)
	if e != nil && nextRename && !inBases(nextDN) {
		// As of this record the entry was out of the bases (a move out,
		// and a later one back in, not delivered yet): its account goes
		// now, as it went had the move out been delivered in its time;
		// read as it is now, the entry would be mirrored onto the account
		// this record's name has, which a later rename of another entry
		// may be due to take (TestAttackLoneRotationThroughOutsideTheBases).
		if nextWaiting {
			return nil, store.Postpone(fmt.Errorf("a move of %s is on its way to the directory: whether the %s is in the bases as of this change is known once it is settled", quoteDN(nextDN), kind))
		}
		e = nil
		gone = "entry moved out of the bases (and back in by a change not delivered yet)"
	}
	if e == nil && kind == schema.KindAccount && rec.Actor == expiryActor && rec.EntryKey == "" {
		// An account held without a key (disabled by a resync) goes to an
		// entry of its name that came before its grace ended.
		if e, err = m.findByName(ctx, rec.Name, bases, attrs); err != nil {
			return nil, err
		}
	}
	previous, secret := rec.Name, string(rec.Secret)
	if rec.DN != "" && !inBases(rec.DN) {
		// The write found the entry out of the bases (a move in): the
		// name it read was no account's or group's name in Axigen, and
		// the account of that name, if any, is another entry's (an entry
		// moved out, another renamed onto its name, then the first moved
		// back in under the second's old name: renamed from its name, the
		// other entry's mailbox went to the first).
		previous = ""
	}
	replaced := e != nil && m.replaced(rec, *e)
	if replaced {
		// The record's entry is gone and another holds its DN (current):
		// that one is mirrored under its own name, never renamed from the
		// gone entry's account nor given the gone entry's new password, and
		// the gone entry's account goes unless the newcomer has its name.
		if rec.Name != "" && !strings.EqualFold(rec.Name, m.mapping().EntryName(*e, kind)) {
			if err := m.removeOrRetire(ctx, kind, rec, "entry replaced by another at its DN"); err != nil {
				return nil, err
			}
		}
		previous, secret = "", ""
	}
	if e == nil {
		if rec.Name != "" {
			if err := m.removeOrRetire(ctx, kind, rec, gone); err != nil {
				return nil, err
			}
		}
		if kind == schema.KindAccount {
			// Groups still naming the gone entry lose its address; those
			// the directory already cleaned (refint) were noted at the delete.
			if err := m.refreshGroups(ctx, rec.Groups); err != nil {
				return nil, err
			}
			return nil, m.refreshGroupsOf(ctx, rec.DN, rec.NewDN)
		}
		return nil, nil
	}
	// A later record of the entry, not delivered yet, may have given it
	// the name it has now: that name is the later record's to give, in its
	// turn among the records of the names involved (DeliveryNames). As of
	// this record (and those its delivery takes along) the account or group
	// has the name the next record found (an entry swapping names with
	// another through a third, delivered after an outage: each delivery
	// would otherwise take over the other's account under the name the
	// entry has now). The write path keeps that name exact: a write that
	// can change an entry's name is never on its way together with another
	// write to the entry (onWay).
	//
	// That hold is per gateway: in a cluster, writes to one entry through
	// two gateways race, a record's Name may be stale, and a delivery named
	// by it took a rename back or made a second, empty account beside the
	// mailbox (TestAttackClusterRenameRacesWritesAcrossGateways). A
	// cluster's delivery names the account or group by the DN its entry's
	// next rename moved it from, where the name is the DN's (uid=alice for
	// an account named by uid): that DN is the directory's own word, and
	// renames of one entry are journaled in the directory's order
	// (Journal.RenameAfter). A rename still on its way is waited for;
	// elsewhere (an account named by its mail) the entry's current name
	// stands (TestClusterRotationOfThreeWhileAxigenIsDown).
	asOf := ""
	if !replaced {
		if !m.cfg.Journal.Replicated() {
			asOf, _ = m.cfg.Journal.NameAfter(rec.Seq)
		} else if nextRename {
			name, inDN := m.mapping().NameInDN(nextDN, kind)
			switch {
			case inDN && nextWaiting:
				return nil, store.Postpone(fmt.Errorf("a rename of %s is on its way to the directory: the %s's name as of this change is known once it is settled", quoteDN(nextDN), kind))
			case inDN:
				asOf = name
			}
		}
	}
	if kind == schema.KindGroup {
		return nil, m.applyGroup(ctx, *e, previous, asOf)
	}
	desired, skipped, err := m.desiredAccount(*e)
	if err != nil {
		return nil, err
	}
	if asOf != "" {
		desired.Name = asOf
	}
	// The directory's plaintext password seeds a new account; the record's
	// password is what this change set.
	desired.InitialPassword, desired.Password = desired.Password, secret
	superseded := false
	if secret != "" && !desired.Disabled {
		// Two password writes to one entry may reach the directory in
		// another order than the journal's (two sessions, two gateways of
		// a cluster, a gateway frozen between its journal and its relay):
		// the password the directory holds is the last word. One it no
		// longer holds is not sent; the record that set the current one
		// carries it. (A disabled account's bind proves nothing: its
		// password waits, below.)
		ok, err := m.cfg.Directory.CheckPassword(ctx, e.DN, secret)
		if err == nil && !ok && rec.EntryKey != "" {
			// The entry may have been renamed since it was read (a rename
			// racing the password): the bind went to a DN it no longer
			// has. Found again by its key at another DN, the password is
			// confirmed there.
			if now, rerr := m.current(ctx, rec, bases, attrs); rerr == nil && now != nil && !mp.EqualDN(now.DN, e.DN) {
				ok, err = m.cfg.Directory.CheckPassword(ctx, now.DN, secret)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("confirm the record's password with the directory: %w", err)
		}
		if !ok {
			m.cfg.Audit.Info("password not sent", "seq", rec.Seq, "dn", e.DN, "reason", "the directory no longer holds it: a later change replaced it")
			m.log.Info("a record's password is not sent: the directory no longer holds it", "seq", rec.Seq, "dn", e.DN)
			secret, desired.Password, superseded = "", "", true
		}
	}
	key := m.keyFor(rec, *e)
	disabled, handover, err := m.heldFor(ctx, rec, key, desired.Name, e.DN)
	if err != nil {
		return nil, err
	}
	if handover {
		// The held mailbox goes to the re-added entry: the old password
		// must not open it. The add's own plaintext password replaces it;
		// without one, nobody's does.
		desired.InitialPassword = ""
		if desired.Password == "" {
			if desired.Password, err = unknowablePassword(); err != nil {
				return nil, err
			}
		}
	}
	if disabled == nil {
		if err := m.waitForEarlierDelete(rec, key, desired.Name); err != nil {
			return nil, err
		}
	}
	if disabled != nil && disabled.Reason == store.DisabledGone && previous == "" {
		// The entry is back (same key, or a row without one): its old
		// account, and mailbox, is renamed if need be and enabled again
		// below.
		previous = disabled.Name
	}
	if previous != "" && !strings.EqualFold(previous, desired.Name) && m.cfg.Deletes.protects(previous) {
		m.auditAccount("kept", previous, "protected account: not renamed to "+desired.Name, "seq", rec.Seq)
		previous = ""
	}
	if desired.Disabled && m.cfg.Deletes.protects(desired.Name) {
		// Nor is a protected account locked out by a new password.
		m.auditAccount("kept", desired.Name, "protected account: not disabled although disabled or locked in the directory", "seq", rec.Seq)
		desired.Disabled = false
	}
	pc := m.passwordChangeOf(rec)
	if superseded {
		pc = passwordKept // as far as this record goes: a later one set it
	}
	if pc == passwordSet && !replaced && m.replacedByHashes(rec) {
		// The directory holds only values the gateway could not send (a
		// hash): Axigen's password is no longer one it takes, and must not
		// go on opening the mailbox after a reset meant to shut it. As for
		// values deleted by name: a plaintext value the entry has is sent,
		// else Axigen's password is withdrawn until one is delivered.
		pc = passwordValuesDeleted
	}
	delivered := secret != ""
	if pc == passwordValuesDeleted {
		// The directory took back values by name; what it holds now is
		// the password. A plaintext value left is sent (the entry's, as
		// read now); with none (or the account disabled), Axigen's is
		// withdrawn, since it may be one the directory no longer takes.
		if desired.InitialPassword != "" && !desired.Disabled {
			desired.Password, delivered, pc = desired.InitialPassword, true, passwordSet
		} else {
			pc = passwordWithdrawn
		}
	}
	passwordWaits := false
	switch {
	case desired.Disabled:
		// A disabled directory account keeps its Axigen account, mail and
		// groups; settleEnabled disables it in Axigen, and its password
		// becomes one nobody knows, so that enabling it by hand in Axigen
		// does not bring the old one back. A password set while it is
		// disabled (AD's provisioning: create disabled, set the password,
		// enable) waits in the journal until it is enabled.
		desired.InitialPassword = ""
		passwordWaits = desired.Password != ""
		desired.Password = ""
		if rec.Op == store.OpAdd || m.touchesDisabled(rec) || pc.removes() {
			if desired.Password, err = unknowablePassword(); err != nil {
				return nil, err
			}
		}
	case pc.removes() && !m.cfg.Deletes.protects(desired.Name):
		// A removed password is removed in Axigen too: no later path (a
		// rename, a move back, a re-add with a hash) brings it back; only a
		// password delivered through the gateway enables the account again.
		desired.InitialPassword = ""
		if desired.Password, err = unknowablePassword(); err != nil {
			return nil, err
		}
	}
	return &accountApply{rec: rec, entry: *e, desired: desired, previous: previous, disabled: disabled, pc: pc,
		delivered: delivered, replaced: replaced, passwordWaits: passwordWaits, skipped: skipped}, nil
}

// finish ends a delivery prepareDelivery left at the apply of its account, which
// sent plan or failed with err.
func (m *Mirror) finish(ctx context.Context, a *accountApply, plan *axigen.Plan, err error) error {
	rec := a.rec
	if err != nil {
		return classify(err)
	}
	if renamedAccount(plan) {
		m.auditAccount("renamed", a.desired.Name, "name changed in the directory", "from", a.previous, "seq", rec.Seq)
	}
	if err := m.settleEnabled(ctx, rec, a.desired, a.disabled, a.pc, a.delivered); err != nil {
		return err
	}
	if m.touchesAddress(rec) || a.replaced {
		if err := m.refreshGroupsOf(ctx, rec.DN, rec.NewDN, a.entry.DN); err != nil {
			return err
		}
	}
	if a.passwordWaits {
		return errPasswordHeld
	}
	return skippedValues(a.skipped)
}

// desiredAccount is the state Axigen should hold for the account entry e,
// less the values Axigen cannot take. Delivery sends the entry's whole
// state, so one such value (written in the directory behind the gateway's
// back: through the gateway it is refused at the write, values.go) would
// otherwise fail every later delivery of the entry, a password reset's
// included. A contact attribute with such a value is left out, and every
// Axigen field mapped from it stays as Axigen has it (neither set nor
// cleared); so is the directory's plaintext password (the record's own
// password, checked at the write, is sent). skipped names what was left
// out, for the record (skippedValues). The account's name, DN and key
// cannot be left out: without them there is no account to deliver to, and
// their error is permanent.
func (m *Mirror) desiredAccount(e schema.Entry) (desired schema.Account, skipped []*schema.ValueError, err error) {
	mp := m.mapping()
	for {
		desired, err = mp.AccountState(e)
		var ve *schema.ValueError
		if err == nil || !errors.As(err, &ve) || !skippable(ve) || len(skipped) > len(e.Attrs) {
			break
		}
		skipped = append(skipped, ve)
		e = withoutAttribute(mp, e, ve.Attr)
	}
	if err != nil {
		return schema.Account{}, skipped, permanentIfValue(err)
	}
	for _, ve := range skipped {
		for _, field := range mp.ContactFieldsOf(ve.Attr) {
			delete(desired.Contact, field) // left alone: not cleared
		}
	}
	return desired, skipped, nil
}

// skippable reports whether delivery may leave out the attribute ve is
// about and deliver the rest: a contact field, or a password the
// directory holds.
func skippable(ve *schema.ValueError) bool {
	return ve.Attr != "" && (ve.Field == schema.FieldPassword || slices.Contains(schema.ContactFields, ve.Field))
}

// withoutAttribute is e without attr under any of its names.
func withoutAttribute(mp *schema.Mapping, e schema.Entry, attr string) schema.Entry {
	out := schema.Entry{DN: e.DN, Attrs: make(map[string][]string, len(e.Attrs))}
	for name, values := range e.Attrs {
		if !mp.SameAttribute(name, attr) {
			out.Attrs[name] = values
		}
	}
	return out
}

// skippedValues is the outcome of a delivery that left out skipped
// (desiredAccount): delivered, with what it left out kept in the record
// (store.Incomplete) for `ldapgate journal` and the audit log; nil when
// nothing was left out.
func skippedValues(skipped []*schema.ValueError) error {
	if len(skipped) == 0 {
		return nil
	}
	what := make([]string, len(skipped))
	for i, ve := range skipped {
		what[i] = ve.Error()
	}
	return store.Incomplete(fmt.Errorf("not sent: %s (Axigen keeps its own value; correct the one in the directory); the rest was delivered",
		strings.Join(what, "; ")))
}

// errPasswordHeld keeps a record with a password in the journal, retried
// with backoff, while its account is disabled in the directory; the next
// attempt after the account is enabled sets the password. `ldapgate journal
// retry N` applies it at once.
var errPasswordHeld = errors.New("the account is disabled in the directory: its new password waits in the journal until the account is enabled")

// current reads the entry a record is about: by its stable key when known
// (it survives renames), else by its latest DN. An entry gone by its key
// but with another in its place at the record's DN was replaced (deleted
// and added again, the directory's own clients need not go through the
// gateway): Axigen follows the entry that is there now, rather than losing
// the account that the DN still names. A delete's record is about the
// entry it deleted only.
func (m *Mirror) current(ctx context.Context, rec *store.Record, bases []string, attrs []string) (*schema.Entry, error) {
	if e := m.accountImage(rec); e != nil {
		return e, nil // the write brought the entry's state (images.go)
	}
	mp := m.mapping()
	if rec.EntryKey != "" {
		value := ldap.EscapeFilter(rec.EntryKey)
		if mp.KeyFormat() == schema.KeyGUID {
			raw, err := schema.ParseGUID(rec.EntryKey)
			if err != nil {
				return nil, store.Permanent(fmt.Errorf("journal record's entry key: %w", err))
			}
			value = escapeFilterBytes(raw)
		}
		e, err := m.cfg.Directory.Find(ctx, bases, fmt.Sprintf("(%s=%s)", mp.KeyAttribute(), value), attrs)
		if e != nil || err != nil || rec.Op == store.OpDelete {
			return e, err
		}
	}
	dn := rec.DN
	if rec.NewDN != "" {
		dn = rec.NewDN
	}
	return m.cfg.Directory.Read(ctx, dn, attrs)
}

// replaced reports whether e, read for rec, is another entry than rec's:
// found at rec's DN after its key found nothing (current).
func (m *Mirror) replaced(rec *store.Record, e schema.Entry) bool {
	if rec.EntryKey == "" {
		return false
	}
	key, err := m.entryKey(e)
	return err == nil && key != "" && !strings.EqualFold(key, rec.EntryKey)
}

// removeOrRetire handles the Axigen object of an entry that left the
// directory's scope for reason: a group (no mailbox) is removed, an
// account gets the configured delete action (retire).
func (m *Mirror) removeOrRetire(ctx context.Context, kind schema.Kind, rec *store.Record, reason string) error {
	if kind == schema.KindGroup {
		_, err := m.cfg.Axigen.DeleteGroup(ctx, m.cfg.Domain, rec.Name)
		return classify(err)
	}
	return m.retire(ctx, rec, rec.Name, reason)
}

// keyFor is the stable key of the entry a record delivers.
func (m *Mirror) keyFor(rec *store.Record, e schema.Entry) string {
	if key, err := m.entryKey(e); err == nil && key != "" {
		return key
	}
	return rec.EntryKey
}

// findByName finds the account entry named name in the account base.
func (m *Mirror) findByName(ctx context.Context, name string, bases, attrs []string) (*schema.Entry, error) {
	if name == "" || m.mapping().NameFromAddress() {
		return nil, nil
	}
	filter := fmt.Sprintf("(%s=%s)", m.mapping().NameAttribute(), ldap.EscapeFilter(name))
	e, err := m.cfg.Directory.Find(ctx, bases, filter, attrs)
	if err != nil || e == nil || m.mapping().ClassifyEntry(*e) != schema.KindAccount {
		return nil, err
	}
	return e, nil
}

func (m *Mirror) applyGroup(ctx context.Context, e schema.Entry, previousName, name string) error {
	desired, err := m.mapping().GroupState(e, m.memberAddress(ctx))
	if err != nil {
		return permanentIfValue(err)
	}
	if name != "" {
		desired.Name = name // as of the record delivered (prepareDelivery)
	}
	for _, sk := range desired.Skipped {
		m.log.Info("group member not mirrored", "group", e.DN, "member", sk.DN, "reason", sk.Reason)
	}
	_, err = m.cfg.Axigen.ApplyGroup(ctx, m.cfg.Domain, desired, previousName)
	return classify(err)
}

// memberAddress resolves a member DN to its mail address.
func (m *Mirror) memberAddress(ctx context.Context) schema.MemberResolver {
	mailAttr := m.mapping().MemberMailAttribute()
	return func(dn string) (string, bool, error) {
		e, err := m.cfg.Directory.Read(ctx, dn, []string{mailAttr})
		if err != nil || e == nil {
			return "", false, err
		}
		v, ok := e.First(mailAttr)
		return v, ok, nil
	}
}

// touchesDisabled reports whether a record changes the attribute that
// disables the account.
func (m *Mirror) touchesDisabled(rec *store.Record) bool {
	mp := m.mapping()
	for _, c := range rec.Changes {
		if mp.AttrClass(c.Attr, schema.KindAccount) == schema.AttrDisabled {
			return true
		}
	}
	return false
}

// unknowablePassword is a random password nobody is told.
func unknowablePassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// touchesAddress reports whether a record may change the address the
// account has as a group member.
func (m *Mirror) touchesAddress(rec *store.Record) bool {
	if rec.Op == store.OpRename || rec.Op == store.OpAdd {
		return true
	}
	mp := m.mapping()
	for _, c := range rec.Changes {
		if mp.SameAttribute(c.Attr, mp.MemberMailAttribute()) {
			return true
		}
	}
	return false
}

// refreshGroupsOf re-applies every group that lists one of dns as a member, since
// the member's address is part of the group's state in Axigen.
func (m *Mirror) refreshGroupsOf(ctx context.Context, dns ...string) error {
	groups, err := m.groupsOf(ctx, dns...)
	if err != nil {
		return err
	}
	return m.refreshGroups(ctx, groups)
}

// groupsOf lists the groups that name one of dns as a member now (a
// uniqueMember value with a UID included: memberFilter).
func (m *Mirror) groupsOf(ctx context.Context, dns ...string) ([]string, error) {
	bases := m.mapping().GroupBases()
	if len(bases) == 0 {
		return nil, nil
	}
	filter := m.memberFilter(dns...)
	if filter == "" {
		return nil, nil
	}
	return m.cfg.Directory.FindAll(ctx, bases, filter)
}

// refreshGroups re-applies the groups at dns as the directory has them now.
func (m *Mirror) refreshGroups(ctx context.Context, groups []string) error {
	for _, g := range groups {
		if err := m.refreshGroup(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

// refreshGroupReads bounds how often refreshGroup reads a group again
// because a rename was answered meanwhile.
const refreshGroupReads = 5

// refreshGroup re-applies the group at dn as the directory has it now,
// unless a record of it waits.
func (m *Mirror) refreshGroup(ctx context.Context, dn string) error {
	for range refreshGroupReads {
		// A rename answered between the read and the check of the waiting
		// records below may have been delivered in between too: the name
		// read is then gone from Axigen already, and applying it made the
		// group again under it, left behind (TestAttackNamesSwapsRacing
		// WritesOfTheSameEntries, once the gateway delivered faster). Such
		// a read is made again.
		ended := m.onWay.ended()
		e, err := m.cfg.Directory.Read(ctx, dn, m.mapping().GroupAttributes())
		if err != nil {
			return err
		}
		if e == nil || m.mapping().ClassifyEntry(*e) != schema.KindGroup {
			return nil
		}
		key, err := m.entryKey(*e)
		if err == nil && m.cfg.Journal.Waiting(key) {
			// A record of the group waits: its delivery brings the group as
			// it is then, under the name in its turn. Applied now, outside
			// the group's records' order, a group renamed since would be
			// created anew under its new name, and the old one left behind.
			return nil
		}
		if m.onWay.ended() != ended {
			continue
		}
		if err == nil && m.cfg.Journal.Settling(key) {
			// A write of the group is on its way (a rename the directory may
			// have made, committed a moment from now): applied now, the
			// group could be made under a name not its turn yet. Nor can it
			// be skipped: the write may fail, and nothing would then bring
			// this member's change. The delivery is tried again, as often as
			// it takes (the attempt is not counted: the write is settled
			// within --op-timeout, or as an orphan).
			return store.Postpone(fmt.Errorf("group %s has a write on its way to the directory: its members are brought to Axigen once that write is settled", quoteDN(dn)))
		}
		return m.applyGroup(ctx, *e, "", "")
	}
	// Renames keep coming: the record's delivery is tried again later.
	return store.Postpone(fmt.Errorf("group %s: renames kept being answered while it was read to refresh its members", quoteDN(dn)))
}

// permanentIfValue marks errors about values Axigen cannot take as
// permanent: retrying cannot help, the record becomes a dead letter.
func permanentIfValue(err error) error {
	var ve *schema.ValueError
	if errors.As(err, &ve) {
		return store.Permanent(err)
	}
	return err
}

// classify turns Axigen client errors into what the journal needs to know:
// whether a retry can help.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch axigen.KindOf(err) {
	case axigen.KindUnsafeValue, axigen.KindConflict:
		return store.Permanent(err)
	}
	return err
}
