package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// What happens to an Axigen account when its directory entry goes away
// (docs/architecture.md, "Deletes, disabling and the grace period").
//
// A directory delete is easy to make by mistake (a mistyped ldapdelete, a
// bad LDIF import, an OU move) and an Axigen REMOVE Account destroys the
// mailbox at once, so by default the account is only disabled: it keeps
// its mail and can no longer log in or receive. The gateway remembers it
// in the journal's table of disabled accounts (store.DisabledAccount):
// the entry that comes back (same entry key; the same name only when the
// key is unknown) gets it back, enabled; another entry never does (heldFor);
// one still absent after DeleteAfter is removed (Sweep).

// AccountDeleteAction says what a directory delete, or a move out of the
// account base, does to the entry's Axigen account.
type AccountDeleteAction string

// The actions.
const (
	// DeleteDisables keeps the account and its mail, disabled (default).
	DeleteDisables AccountDeleteAction = "disable"
	// DeleteRemoves removes the account and its mail (REMOVE Account).
	DeleteRemoves AccountDeleteAction = "delete"
	// DeleteIgnored leaves the account as it is.
	DeleteIgnored AccountDeleteAction = "ignore"
)

// ParseAccountDeleteAction reads a setting's value ("" is the default).
func ParseAccountDeleteAction(s string) (AccountDeleteAction, error) {
	switch a := AccountDeleteAction(strings.ToLower(strings.TrimSpace(s))); a {
	case "":
		return DeleteDisables, nil
	case DeleteDisables, DeleteRemoves, DeleteIgnored:
		return a, nil
	}
	return "", fmt.Errorf("%q is not disable, delete or ignore", s)
}

// Postmaster is the account every Axigen domain has: always protected.
const Postmaster = "postmaster"

// Deletes is how the mirror treats accounts whose entries go away.
type Deletes struct {
	// OnAccountDelete is the action ("" means DeleteDisables).
	OnAccountDelete AccountDeleteAction
	// DeleteAfter, with DeleteDisables, removes an account still absent
	// from the directory this long after it was disabled; 0 never.
	DeleteAfter time.Duration
	// Protected names accounts never removed, disabled or renamed, on top
	// of Postmaster (compared ignoring case and surrounding blanks).
	Protected []string
	// SweepInterval is how often Sweep looks for expired accounts
	// (DeleteAfter/4, between 100ms and 1m, when 0).
	SweepInterval time.Duration
	// MaxRemovalsPerSweep bounds the removals one sweep journals
	// (DefaultMaxRemovalsPerSweep when 0): a clock jumping forward cannot
	// remove every disabled account at once.
	MaxRemovalsPerSweep int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultMaxRemovalsPerSweep is Deletes.MaxRemovalsPerSweep's default.
const DefaultMaxRemovalsPerSweep = 10

func (d Deletes) action() AccountDeleteAction {
	if d.OnAccountDelete == "" {
		return DeleteDisables
	}
	return d.OnAccountDelete
}

func (d Deletes) now() time.Time {
	if d.Now != nil {
		return d.Now().UTC()
	}
	return time.Now().UTC()
}

// removes reports whether accounts disabled for a delete are removed at
// the end of a grace period with these settings.
func (d Deletes) removes() bool { return d.action() == DeleteDisables && d.DeleteAfter > 0 }

func (d Deletes) maxRemovalsPerSweep() int {
	if d.MaxRemovalsPerSweep > 0 {
		return d.MaxRemovalsPerSweep
	}
	return DefaultMaxRemovalsPerSweep
}

// protects reports whether the account name is protected.
func (d Deletes) protects(name string) bool {
	name = strings.TrimSpace(name)
	return strings.EqualFold(name, Postmaster) ||
		slices.ContainsFunc(d.Protected, func(p string) bool { return strings.EqualFold(strings.TrimSpace(p), name) })
}

// CheckProtected refuses a protected account name that cannot be an
// account's: empty, or with blanks inside.
func CheckProtected(names []string) error {
	for _, n := range names {
		t := strings.TrimSpace(n)
		if t == "" || strings.ContainsFunc(t, unicode.IsSpace) {
			return fmt.Errorf("protected account %q is not an account name (empty or with blanks)", n)
		}
	}
	return nil
}

func (d Deletes) sweepInterval() time.Duration {
	if d.SweepInterval > 0 {
		return d.SweepInterval
	}
	return min(max(d.DeleteAfter/4, 100*time.Millisecond), time.Minute)
}

// expiryActor is the actor of the journal records that remove an account
// whose grace period is over (Sweep): the delivery step removes rather
// than disables for them.
const expiryActor = "ldapgate: delete-after"

// auditAccount writes the audit line of a change (or a refusal to change)
// of an account's life: action is disabled, enabled, renamed, removing
// (the grace is over), removed or kept.
func (m *Mirror) auditAccount(action, name, reason string, args ...any) {
	m.cfg.Audit.Info("account", append([]any{"action", action, "account", name, "reason", reason}, args...)...)
}

// retire applies the delete action to the account name, whose entry (rec's)
// is gone from the account base for reason.
func (m *Mirror) retire(ctx context.Context, rec *store.Record, name, reason string) error {
	del := m.cfg.Deletes
	action := del.action()
	if rec.Actor == expiryActor {
		why, due, err := m.removalDue(rec, name)
		if err != nil {
			return err
		}
		if !due {
			m.auditAccount("kept", name, why, "seq", rec.Seq)
			return nil
		}
		action, reason = DeleteRemoves, why
	}
	if action != DeleteIgnored && del.protects(name) {
		m.auditAccount("kept", name, "protected account: not "+pastTense(action)+" although "+reason, "seq", rec.Seq)
		return nil
	}
	if action == DeleteIgnored {
		m.auditAccount("kept", name, reason+" (onAccountDelete=ignore)", "seq", rec.Seq)
		return nil
	}
	if rec.Actor != expiryActor {
		// A late delete (retried, or of an entry whose name another entry
		// took since, at another DN) must not take the account from the
		// entry that has the name now.
		other, err := m.otherHolder(ctx, rec, name)
		if err != nil {
			return err
		}
		if other != nil {
			// Unless that entry's own add or rename waits for this delete
			// (waitForEarlierDelete): then the account is still rec's.
			otherKey, _ := m.entryKey(*other)
			waiting, err := m.pendingAfter(otherKey, rec.Seq)
			if err != nil {
				return err
			}
			if !waiting {
				m.auditAccount("kept", name, fmt.Sprintf("%s, but another entry (%s) has the name now", reason, other.DN), "seq", rec.Seq)
				return nil
			}
		}
		// Nor the account of another entry that the table holds: an entry
		// refused a held name (heldFor) never had that account.
		held, ok, err := m.disabledRow(name)
		if err != nil {
			return err
		}
		if ok && held.EntryKey != "" && rec.EntryKey != "" && !strings.EqualFold(held.EntryKey, rec.EntryKey) {
			m.auditAccount("kept", name, fmt.Sprintf("%s, but the account is held for another entry (key %s)", reason, held.EntryKey), "seq", rec.Seq)
			return nil
		}
	}
	if action == DeleteRemoves {
		p, err := m.cfg.Axigen.DeleteAccount(ctx, m.cfg.Domain, name)
		if err != nil {
			return classify(err)
		}
		if err := m.forgetDisabled(ctx, name); err != nil {
			return err
		}
		if !p.Empty() { // a replay finds it gone: said once
			m.auditAccount("removed", name, reason, "seq", rec.Seq)
		}
		return nil
	}
	// The row first: a crash before the disable leaves a row that a replay
	// or the entry's return finds.
	if err := m.holdDisabled(ctx, rec, name); err != nil {
		return err
	}
	p, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, name, false)
	if err != nil {
		return classify(err)
	}
	if !found {
		return m.forgetDisabled(ctx, name)
	}
	if p != nil && !p.Empty() {
		m.auditAccount("disabled", name, reason, "seq", rec.Seq, "deleteAfter", del.DeleteAfter.String())
	}
	return nil
}

// removalDue decides, at delivery, whether an expiry record (Sweep) still
// removes the account: its row is still there, still for the record's
// entry and its removal, past its grace by the current settings. It says
// why either way.
func (m *Mirror) removalDue(rec *store.Record, name string) (why string, due bool, err error) {
	del := m.cfg.Deletes
	held, ok, err := m.disabledRow(name)
	if err != nil {
		return "", false, err
	}
	switch {
	case !ok || held.Reason != store.DisabledGone:
		return "no longer waiting for removal", false, nil
	case !del.removes():
		return fmt.Sprintf("removal cancelled: onAccountDelete=%s, deleteAfter %s", del.action(), del.DeleteAfter), false, nil
	case !strings.EqualFold(held.EntryKey, rec.EntryKey) || held.RemovalSeq != rec.Seq:
		return "removal cancelled: the account was disabled again since", false, nil
	case held.GraceFrom.IsZero() || del.now().Before(held.GraceFrom.Add(del.DeleteAfter)):
		return "removal cancelled: the grace is not over", false, nil
	}
	return fmt.Sprintf("absent from the directory since %s (delete-after %s)",
		held.Since.UTC().Format(time.RFC3339), del.DeleteAfter), true, nil
}

// otherHolder finds the entry, other than rec's, that has the account
// name in the directory now, if any.
func (m *Mirror) otherHolder(ctx context.Context, rec *store.Record, name string) (*schema.Entry, error) {
	e, err := m.findByName(ctx, name, m.mapping().Config().AccountBase, m.mapping().AccountAttributes())
	if err != nil || e == nil {
		return nil, err
	}
	if key, err := m.entryKey(*e); err == nil && key != "" && rec.EntryKey != "" && strings.EqualFold(key, rec.EntryKey) {
		return nil, nil // rec's own entry
	}
	return e, nil
}

// holdDisabled records in the journal that the gateway disabled name
// because rec's entry went away.
func (m *Mirror) holdDisabled(ctx context.Context, rec *store.Record, name string) error {
	if m.cfg.Journal == nil {
		return nil
	}
	del := m.cfg.Deletes
	held := store.DisabledAccount{Name: name, EntryKey: rec.EntryKey, DN: rec.DN, Reason: store.DisabledGone, Since: del.now(), Seq: rec.Seq}
	if rec.NewDN != "" {
		held.DN = rec.NewDN
	}
	old, ok, err := m.disabledRow(name)
	if err != nil {
		return err
	}
	sameEntry := ok && strings.EqualFold(old.EntryKey, rec.EntryKey)
	// A replay of the record that disabled it keeps its start: retries do
	// not stretch the grace; any other delete starts it again.
	if sameEntry && old.Reason == store.DisabledGone && old.Seq == rec.Seq {
		held.Since, held.GraceFrom, held.RemovalSeq = old.Since, old.GraceFrom, old.RemovalSeq
	} else if del.removes() {
		held.GraceFrom = held.Since
	}
	// A password made unknowable stays so until one is delivered.
	held.Scrambled = sameEntry && old.Scrambled
	return m.putDisabled(ctx, held)
}

func (m *Mirror) putDisabled(ctx context.Context, d store.DisabledAccount) error {
	if m.cfg.Journal == nil {
		return nil
	}
	return m.cfg.Journal.PutDisabled(ctx, d)
}

func (m *Mirror) disabledRow(name string) (store.DisabledAccount, bool, error) {
	if m.cfg.Journal == nil {
		return store.DisabledAccount{}, false, nil
	}
	d, ok, err := m.cfg.Journal.Disabled(name)
	if err != nil {
		return d, false, fmt.Errorf("read disabled account %s: %w", name, err)
	}
	return d, ok, nil
}

func pastTense(a AccountDeleteAction) string {
	if a == DeleteRemoves {
		return "removed"
	}
	return "disabled"
}

// forgetDisabled drops name from the table of disabled accounts.
func (m *Mirror) forgetDisabled(ctx context.Context, name string) error {
	if m.cfg.Journal == nil {
		return nil
	}
	return m.cfg.Journal.RemoveDisabled(ctx, name)
}

// heldFor finds the row of the table of disabled accounts that an entry
// in the account base (again), with key, named name, takes up: its own
// (by key), else the one of its name. A row of the name held for another
// known key goes to an entry re-added under that name (an add: the usual
// repair of a mistaken delete, which gives the entry a new entryUUID), with
// handover set: the caller makes the old Axigen password unknowable unless
// the add brought a plaintext one, so the held mailbox opens only with the
// new entry's password. It never goes to an existing entry renamed onto
// the name (errHeldForAnother: that entry has an account of its own). If
// the account is gone from Axigen by now (the operator removed it), the
// row goes.
func (m *Mirror) heldFor(ctx context.Context, rec *store.Record, key, name, dn string) (held *store.DisabledAccount, handover bool, err error) {
	if m.cfg.Journal == nil {
		return nil, false, nil
	}
	byKey, okKey, err := m.cfg.Journal.DisabledByKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("read disabled accounts: %w", err)
	}
	byName, okName, err := m.disabledRow(name)
	if err != nil {
		return nil, false, err
	}
	if okName && !(okKey && strings.EqualFold(byKey.Name, byName.Name)) {
		other := byName.EntryKey != "" && key != "" && !strings.EqualFold(byName.EntryKey, key)
		if other || okKey {
			_, present, err := m.cfg.Axigen.ReadAccount(ctx, m.cfg.Domain, byName.Name)
			if err != nil {
				return nil, false, classify(err)
			}
			switch {
			case !present:
				if err := m.forgetDisabled(ctx, byName.Name); err != nil {
					return nil, false, err
				}
			case other && !okKey && rec.Op == store.OpAdd:
				m.auditAccount("handed over", byName.Name, fmt.Sprintf(
					"entry re-added under the name of a deleted one: the held account (entry key %s, %s) goes to the new entry (key %s, %s); its old password no longer opens it",
					byName.EntryKey, byName.DN, key, dn), "seq", rec.Seq)
				return &byName, true, nil
			default:
				return nil, false, m.heldForAnother(rec, byName, key, dn)
			}
		} else {
			return &byName, false, nil // a row without a key (or an entry without one): by name
		}
	}
	if okKey {
		return &byKey, false, nil
	}
	return nil, false, nil
}

// waitForEarlierDelete keeps an add or rename that gives an entry (key)
// the name of an earlier entry whose delete (or move out, or rename) is
// journaled but not delivered yet: delivered first, the newcomer would
// take over the earlier entry's account before the delete could hold it
// (heldFor). The retryable error lets the delete go first (retire then
// holds the account: the newcomer's record is still pending).
func (m *Mirror) waitForEarlierDelete(rec *store.Record, key, name string) error {
	if key == "" || (rec.Op != store.OpAdd && rec.Op != store.OpRename) {
		return nil
	}
	pending, err := m.pendingRecords()
	if err != nil {
		return err
	}
	for _, p := range pending {
		if p.Seq < rec.Seq && p.Kind == store.KindAccount && (p.Op == store.OpDelete || p.Op == store.OpRename) &&
			p.Actor != expiryActor && strings.EqualFold(p.Name, name) && p.EntryKey != "" && !strings.EqualFold(p.EntryKey, key) {
			return fmt.Errorf("account %s: waiting for record %d (the delete or move of the earlier entry of that name) to be delivered first", name, p.Seq)
		}
	}
	return nil
}

// pendingAfter reports whether a record of the entry with key, later than
// seq, waits for delivery.
func (m *Mirror) pendingAfter(key string, seq uint64) (bool, error) {
	if key == "" {
		return false, nil
	}
	pending, err := m.pendingRecords()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(pending, func(p *store.Record) bool {
		return p.Seq > seq && strings.EqualFold(p.EntryKey, key)
	}), nil
}

// pendingRecords lists the journal's records not delivered yet (nor dead).
func (m *Mirror) pendingRecords() ([]*store.Record, error) {
	if m.cfg.Journal == nil {
		return nil, nil
	}
	pending, err := m.cfg.Journal.List(store.Filter{States: []store.State{store.StatePrepared, store.StateCommitted}})
	if err != nil {
		return nil, fmt.Errorf("list pending records: %w", err)
	}
	return pending, nil
}

// heldForAnother is the permanent failure of a write whose entry would take
// the account of another (a deleted person's mailbox, held disabled), with
// the audit line saying so.
func (m *Mirror) heldForAnother(rec *store.Record, held store.DisabledAccount, key, dn string) error {
	del := m.cfg.Deletes
	until := "it is kept until removed by hand (deleteAfter is 0)"
	if del.removes() && !held.GraceFrom.IsZero() {
		until = "its grace ends at " + held.GraceFrom.Add(del.DeleteAfter).UTC().Format(time.RFC3339) + ", when the gateway removes it"
	} else if del.removes() {
		until = fmt.Sprintf("its grace (%s) starts at the next sweep", del.DeleteAfter)
	}
	holder := held.EntryKey
	if holder == "" {
		holder = "unknown"
	}
	msg := fmt.Sprintf("account %s is held, disabled since %s, for the entry with key %s (was %s), not for %s (key %s); %s. "+
		"To give the name to this entry: remove the old account (REMOVE Account in Axigen, or wait for the grace), then `ldapgate journal retry %d`; or give the entry another name",
		held.Name, held.Since.UTC().Format(time.RFC3339), holder, held.DN, dn, key, until, rec.Seq)
	m.auditAccount("kept", held.Name, "held for another entry: "+msg, "seq", rec.Seq, "holderKey", held.EntryKey, "entryKey", key)
	return store.Permanent(errors.New(msg))
}

// passwordChange says what a record does to the entry's password.
type passwordChange int

const (
	passwordKept passwordChange = iota
	passwordSet
	passwordRemoved
	// passwordValuesDeleted: values deleted by name, none added. The
	// directory no longer takes them, and Axigen's password may be one of
	// them: delivery sends a plaintext value the entry has left, or
	// withdraws Axigen's (passwordWithdrawn) when none is left in clear.
	passwordValuesDeleted
	// passwordWithdrawn: what delivery makes of passwordValuesDeleted when
	// the entry has no plaintext password left: as passwordRemoved.
	passwordWithdrawn
)

// removes reports whether the change leaves Axigen's account with a
// password nobody knows, disabled until a password is delivered.
func (pc passwordChange) removes() bool { return pc == passwordRemoved || pc == passwordWithdrawn }

// passwordChangeOf reads a record's password changes. A record never
// holds password values (record.go): a change that named some holds
// passwordValuesNamed instead (records from before that, nothing: a
// replace that set a value left it in Secret or, for a value the gateway
// cannot mirror, a note). The password is removed only when the modify
// clears every password attribute of the mapping (deletes all its values,
// or replaces them with none) and adds or replaces none; adding a new one
// and deleting the old sets one; clearing AD's userPassword while
// unicodePwd stays keeps it. Deleting values by name alone leaves the
// entry with a password or none, which only the entry tells at delivery
// (passwordValuesDeleted): the value deleted may be the one Axigen has,
// and a password the directory took back must not go on opening the
// mailbox.
func (m *Mirror) passwordChangeOf(rec *store.Record) passwordChange {
	set := len(rec.Secret) > 0 || rec.Op == store.OpPassword
	hadValues := len(rec.Secret) > 0 || rec.SecretState != store.SecretNone || strings.Contains(rec.Note, passwordNotMirroredNote)
	mp := m.mapping()
	var cleared []string
	deleted := false // values deleted by name
	for _, c := range rec.Changes {
		if mp.AttrClass(c.Attr, schema.KindAccount) != schema.AttrPassword {
			continue
		}
		named := len(c.Values) > 0
		switch {
		case c.Op == "add" || (c.Op == "replace" && (named || hadValues)):
			set = true
		case c.Op == "replace" || (c.Op == "delete" && !named):
			cleared = append(cleared, c.Attr)
		case c.Op == "delete":
			deleted = true
		}
	}
	switch {
	case set:
		return passwordSet
	case len(cleared) == 0 && !deleted:
		return passwordKept
	}
	for _, a := range mp.Config().PasswordAttributes {
		if !slices.ContainsFunc(cleared, func(c string) bool { return mp.SameAttribute(c, a) }) {
			if deleted {
				return passwordValuesDeleted
			}
			return passwordKept
		}
	}
	return passwordRemoved
}

// passwordNotMirroredNote starts the note record.go leaves for a password
// value it could not mirror (a hash).
const passwordNotMirroredNote = "password not mirrored"

// replacedByHashes reports whether a record set the entry's password only
// with values the gateway could not send (pre-hashed, as slappasswd prints
// them or an LDIF import carries them) and took values away: a replace
// naming values, or values added with a delete (named values, or all) or a
// clearing replace in the same modify — the usual "delete the old, add
// the new". It has no secret and never had one. Axigen's password may be
// one the directory took away. An added hash alone leaves the other
// values, Axigen's among them, as they were.
func (m *Mirror) replacedByHashes(rec *store.Record) bool {
	if len(rec.Secret) > 0 || rec.SecretState != store.SecretNone || rec.Op != store.OpModify ||
		!strings.Contains(rec.Note, passwordNotMirroredNote) {
		return false
	}
	mp := m.mapping()
	added, removed := false, false
	for _, c := range rec.Changes {
		if mp.AttrClass(c.Attr, schema.KindAccount) != schema.AttrPassword {
			continue
		}
		switch {
		case c.Op == "replace" && len(c.Values) > 0:
			return true
		case c.Op == "add" && len(c.Values) > 0:
			added = true
		case c.Op == "delete" || c.Op == "replace":
			removed = true
		}
	}
	return added && removed
}

// settleEnabled brings the account's enabled state in Axigen in line with
// the directory's entry after its state was applied. The gateway disables
// an account whose entry is locked (desired.Disabled) or whose password
// was removed (pc), and remembers it in the table of disabled accounts;
// it enables again only an account that table holds (held): one held
// because its entry was gone or locked once the entry is back or unlocked,
// one whose password was made unknowable only once a password is
// delivered (delivered). An account disabled by anyone else (an Axigen
// admin, a resync from the command line) is never enabled.
func (m *Mirror) settleEnabled(ctx context.Context, rec *store.Record, a schema.Account, held *store.DisabledAccount, pc passwordChange, delivered bool) error {
	locked := a.Disabled
	if held == nil && pc == passwordKept && !(locked && (m.touchesDisabled(rec) || rec.Op == store.OpAdd || rec.Op == store.OpRename)) {
		return nil
	}
	needsPassword := pc.removes() || (held != nil && held.Scrambled && !delivered)
	enabled := !locked && !needsPassword
	reason := "entry in the directory"
	switch {
	case pc == passwordRemoved:
		reason = "password removed in the directory"
	case pc == passwordWithdrawn:
		reason = "password values deleted in the directory, none left in clear to send: Axigen's may have been one of them"
	case locked:
		reason = "account disabled or locked in the directory"
	case needsPassword:
		reason = "password removed in the directory, none set since"
	case held != nil && held.Reason == store.DisabledGone:
		reason = "entry back in the directory"
	case held != nil && held.Reason == store.DisabledLocked:
		reason = "account no longer disabled or locked in the directory"
	case held != nil:
		reason = "password set again in the directory"
	}
	if enabled {
		if held == nil {
			return nil
		}
		p, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, a.Name, true)
		if err != nil {
			return classify(err)
		}
		if err := m.forgetDisabled(ctx, held.Name); err != nil {
			return err
		}
		if found && p != nil && !p.Empty() {
			m.auditAccount("enabled", a.Name, reason, "seq", rec.Seq)
		}
		return nil
	}
	if m.cfg.Deletes.protects(a.Name) {
		m.auditAccount("kept", a.Name, "protected account: not disabled although "+reason, "seq", rec.Seq)
		return nil
	}
	row := store.DisabledAccount{Name: a.Name, EntryKey: rec.EntryKey, DN: a.DN, Reason: store.DisabledLocked,
		Since: m.cfg.Deletes.now(), Seq: rec.Seq, Scrambled: needsPassword}
	if needsPassword {
		row.Reason = store.DisabledNoPassword
	}
	if held != nil && held.Reason == row.Reason && held.Scrambled == row.Scrambled {
		row.Since = held.Since
	}
	if held != nil && !strings.EqualFold(held.Name, a.Name) {
		if err := m.forgetDisabled(ctx, held.Name); err != nil {
			return err
		}
	}
	// The row first (intent): a crash before the disable leaves one a
	// replay finds.
	if err := m.putDisabled(ctx, row); err != nil {
		return err
	}
	p, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, a.Name, false)
	if err != nil {
		return classify(err)
	}
	if !found {
		return m.forgetDisabled(ctx, a.Name)
	}
	if p != nil && !p.Empty() {
		m.auditAccount("disabled", a.Name, reason, "seq", rec.Seq)
	}
	return nil
}

// Sweep removes the accounts disabled because their entry went away once
// they have been so for Deletes.DeleteAfter, until ctx ends. Each removal
// is a journal record (actor expiryActor), delivered like any other: the
// delivery step checks that the removal is still due (removalDue),
// removes the account and writes the audit line. Without a grace period,
// or with another action than disable, it returns at once.
func (m *Mirror) Sweep(ctx context.Context) error {
	del := m.cfg.Deletes
	if m.cfg.Journal == nil || !del.removes() {
		return nil
	}
	t := time.NewTicker(del.sweepInterval())
	defer t.Stop()
	for {
		if _, err := m.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("looking for accounts past their delete-after grace failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweepOnce journals a removal of each account whose grace is over, at
// most Deletes.MaxRemovalsPerSweep of them, unless its removal is already
// on its way or dead (the row remembers its record); a row of a protected
// account is dropped; a row whose grace has not started (disabled while
// deleteAfter was 0) starts it now.
func (m *Mirror) sweepOnce(ctx context.Context) (int, error) {
	del := m.cfg.Deletes
	now := del.now()
	held, err := m.cfg.Journal.DisabledAccounts()
	if err != nil {
		return 0, err
	}
	n, waiting := 0, 0
	for _, d := range held {
		if d.Reason != store.DisabledGone {
			continue
		}
		if del.protects(d.Name) {
			if err := m.forgetDisabled(ctx, d.Name); err != nil {
				return n, err
			}
			m.auditAccount("kept", d.Name, "protected account: never removed; forgotten by the grace", "since", d.Since.UTC().Format(time.RFC3339))
			continue
		}
		if d.GraceFrom.IsZero() {
			d.GraceFrom = now
			if err := m.putDisabled(ctx, d); err != nil {
				return n, err
			}
			continue
		}
		if now.Before(d.GraceFrom.Add(del.DeleteAfter)) {
			continue
		}
		if d.RemovalSeq != 0 {
			if rec, err := m.cfg.Journal.Get(d.RemovalSeq); err == nil && rec.State != store.StateDelivered {
				continue // pending, or dead: `ldapgate journal` shows it
			}
		}
		if n >= del.maxRemovalsPerSweep() {
			waiting++
			continue
		}
		if err := m.journalRemoval(ctx, d, now); err != nil {
			return n, err
		}
		n++
	}
	if waiting > 0 {
		m.log.Warn("accounts past their delete-after grace wait for the next sweep", "removing", n, "waiting", waiting,
			"maxRemovalsPerSweep", del.maxRemovalsPerSweep())
	}
	return n, nil
}

// journalRemoval journals the removal of d at the end of its grace; the
// row names the record before it can be delivered.
func (m *Mirror) journalRemoval(ctx context.Context, d store.DisabledAccount, now time.Time) error {
	dn := d.DN
	if dn == "" { // disabled by a resync: it never had an entry here
		dn = m.mapping().NameAttribute() + "=" + ldap.EscapeDN(d.Name)
		if bases := m.mapping().Config().AccountBase; len(bases) > 0 {
			dn += "," + bases[0]
		}
	}
	rec := &store.Record{
		Time: now, Actor: expiryActor, Kind: store.KindAccount, Op: store.OpDelete,
		DN: dn, EntryKey: d.EntryKey, Name: d.Name,
		Note: fmt.Sprintf("disabled since %s, delete-after %s: removing the account", d.Since.UTC().Format(time.RFC3339), m.cfg.Deletes.DeleteAfter),
	}
	seq, err := m.cfg.Journal.Prepare(ctx, rec)
	if err != nil {
		return err
	}
	d.RemovalSeq = seq
	if err := m.putDisabled(ctx, d); err != nil {
		return err
	}
	if err := m.cfg.Journal.Commit(ctx, seq, d.EntryKey); err != nil {
		return err
	}
	m.auditAccount("removing", d.Name, "delete-after expired", "seq", seq, "since", d.Since.UTC().Format(time.RFC3339))
	return nil
}

// createdAccount reports whether an account plan creates the account.
func createdAccount(p *axigen.Plan) bool {
	return p != nil && len(p.Commands) > 0 && strings.HasPrefix(p.Commands[0].String(), "ADD Account")
}

// renamedAccount reports whether an account plan renames the account.
func renamedAccount(p *axigen.Plan) bool {
	return p != nil && slices.ContainsFunc(p.Lines(), func(l string) bool { return strings.HasPrefix(l, "SET name ") })
}
