package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

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
// the entry that comes back (same entry key, or the same name) gets it
// back, enabled; one still absent after DeleteAfter is removed.

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
	// of Postmaster.
	Protected []string
	// SweepInterval is how often Sweep looks for expired accounts
	// (DeleteAfter/4, between 100ms and 1m, when 0).
	SweepInterval time.Duration
}

func (d Deletes) action() AccountDeleteAction {
	if d.OnAccountDelete == "" {
		return DeleteDisables
	}
	return d.OnAccountDelete
}

// protects reports whether the account name is protected.
func (d Deletes) protects(name string) bool {
	return strings.EqualFold(name, Postmaster) ||
		slices.ContainsFunc(d.Protected, func(p string) bool { return strings.EqualFold(p, name) })
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
	if rec.Actor == expiryActor && m.cfg.Journal != nil {
		held, ok, err := m.cfg.Journal.Disabled(name)
		if err != nil {
			return fmt.Errorf("read disabled account %s: %w", name, err)
		}
		if !ok || held.Reason != store.DisabledGone {
			m.auditAccount("kept", name, "no longer waiting for removal", "seq", rec.Seq)
			return nil
		}
		action, reason = DeleteRemoves, fmt.Sprintf("absent from the directory since %s (delete-after %s)",
			held.Since.UTC().Format(time.RFC3339), del.DeleteAfter)
	}
	if action != DeleteIgnored && del.protects(name) {
		m.auditAccount("kept", name, "protected account: not "+pastTense(action)+" although "+reason, "seq", rec.Seq)
		return nil
	}
	switch action {
	case DeleteIgnored:
		m.auditAccount("kept", name, reason+" (onAccountDelete=ignore)", "seq", rec.Seq)
		return nil
	case DeleteRemoves:
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
	_, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, name, false)
	if err != nil {
		return classify(err)
	}
	if !found {
		return m.forgetDisabled(ctx, name)
	}
	if err := m.holdDisabled(ctx, rec, name); err != nil {
		return err
	}
	m.auditAccount("disabled", name, reason, "seq", rec.Seq, "deleteAfter", del.DeleteAfter.String())
	return nil
}

// holdDisabled records in the journal that the gateway disabled name
// because rec's entry went away.
func (m *Mirror) holdDisabled(ctx context.Context, rec *store.Record, name string) error {
	if m.cfg.Journal == nil {
		return nil
	}
	held := store.DisabledAccount{Name: name, EntryKey: rec.EntryKey, DN: rec.DN, Reason: store.DisabledGone, Since: time.Now().UTC()}
	if rec.NewDN != "" {
		held.DN = rec.NewDN
	}
	// A replayed delivery keeps the time the account was first disabled:
	// retries do not stretch the grace.
	if old, ok, err := m.cfg.Journal.Disabled(name); err != nil {
		return fmt.Errorf("read disabled account %s: %w", name, err)
	} else if ok && old.Reason == store.DisabledGone {
		held.Since = old.Since
	}
	return m.cfg.Journal.PutDisabled(ctx, held)
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

// heldFor finds the disabled account of an entry that is in the account
// base (again): by its entry key, else by its account name.
func (m *Mirror) heldFor(key, name string) (*store.DisabledAccount, error) {
	if m.cfg.Journal == nil {
		return nil, nil
	}
	held, ok, err := m.cfg.Journal.DisabledByKey(key)
	if err == nil && !ok {
		held, ok, err = m.cfg.Journal.Disabled(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read disabled accounts: %w", err)
	}
	if !ok {
		return nil, nil
	}
	return &held, nil
}

// passwordChange says what a record does to the entry's password.
type passwordChange int

const (
	passwordKept passwordChange = iota
	passwordSet
	passwordRemoved
)

// passwordChangeOf reads a record's password changes: the last one wins.
// A record never holds password values (record.go): a replace that set
// one left the password in Secret, or, for a value the gateway cannot
// mirror (pre-hashed), a note; a replace with neither had no value, and
// removed the password.
func (m *Mirror) passwordChangeOf(rec *store.Record) passwordChange {
	pc := passwordKept
	if len(rec.Secret) > 0 || rec.Op == store.OpPassword {
		pc = passwordSet
	}
	hadValues := len(rec.Secret) > 0 || rec.SecretState != store.SecretNone || strings.Contains(rec.Note, passwordNotMirroredNote)
	mp := m.mapping()
	for _, c := range rec.Changes {
		if mp.AttrClass(c.Attr, schema.KindAccount) != schema.AttrPassword {
			continue
		}
		switch {
		case c.Op == "delete" || (c.Op == "replace" && !hadValues):
			pc = passwordRemoved
		default:
			pc = passwordSet
		}
	}
	return pc
}

// passwordNotMirroredNote starts the note record.go leaves for a password
// value it could not mirror (a hash).
const passwordNotMirroredNote = "password not mirrored"

// settleEnabled brings the account's enabled state in Axigen in line with
// the directory's entry after its state was applied: enabled unless the
// entry is locked (desired.Disabled) or its password was removed; held is
// the account's row in the table of disabled accounts, if any; created
// says that the delivery has just created the account (enabled). It runs
// only for the records that can change that state; the others leave it as
// is. An add or a rename always checks it: the entry may come back to an
// account disabled by a resync, which the table does not hold.
func (m *Mirror) settleEnabled(ctx context.Context, rec *store.Record, a schema.Account, held *store.DisabledAccount, created bool) error {
	pc := m.passwordChangeOf(rec)
	if held == nil && pc == passwordKept && !m.touchesDisabled(rec) && rec.Op != store.OpAdd && rec.Op != store.OpRename {
		return nil
	}
	noPassword := pc == passwordRemoved ||
		(pc == passwordKept && held != nil && held.Reason == store.DisabledNoPassword)
	enabled := !a.Disabled && !noPassword
	if enabled && created && held == nil {
		return nil // a new account is enabled
	}
	reason := "entry in the directory"
	switch {
	case a.Disabled:
		reason = "account disabled or locked in the directory"
	case noPassword:
		reason = "password removed in the directory"
	case held != nil && held.Reason == store.DisabledGone:
		reason = "entry back in the directory"
	case held != nil:
		reason = "password set again in the directory"
	}
	if !enabled && m.cfg.Deletes.protects(a.Name) {
		m.auditAccount("kept", a.Name, "protected account: not disabled although "+reason, "seq", rec.Seq)
		return nil
	}
	p, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, a.Name, enabled)
	if err != nil {
		return classify(err)
	}
	if held != nil {
		if err := m.forgetDisabled(ctx, held.Name); err != nil {
			return err
		}
	}
	if found && noPassword && m.cfg.Journal != nil {
		d := store.DisabledAccount{Name: a.Name, EntryKey: rec.EntryKey, DN: a.DN, Reason: store.DisabledNoPassword, Since: time.Now().UTC()}
		if err := m.cfg.Journal.PutDisabled(ctx, d); err != nil {
			return err
		}
	}
	if found && p != nil && !p.Empty() {
		action := "enabled"
		if !enabled {
			action = "disabled"
		}
		m.auditAccount(action, a.Name, reason, "seq", rec.Seq)
	}
	return nil
}

// Sweep removes the accounts disabled because their entry went away once
// they have been so for Deletes.DeleteAfter, until ctx ends. Each removal
// is a journal record (actor expiryActor), delivered like any other: the
// delivery step checks that the entry is still absent, removes the
// account and writes the audit line. Without a grace period, or with
// another action than disable, it returns at once.
func (m *Mirror) Sweep(ctx context.Context) error {
	del := m.cfg.Deletes
	if m.cfg.Journal == nil || del.action() != DeleteDisables || del.DeleteAfter <= 0 {
		return nil
	}
	t := time.NewTicker(del.sweepInterval())
	defer t.Stop()
	queued := map[string]uint64{} // account name → its removal record
	for {
		if _, err := m.sweepOnce(ctx, time.Now(), queued); err != nil && ctx.Err() == nil {
			m.log.Warn("looking for accounts past their delete-after grace failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweepOnce journals a removal of each account disabled before now minus
// the grace period, unless one is already on its way (queued).
func (m *Mirror) sweepOnce(ctx context.Context, now time.Time, queued map[string]uint64) (int, error) {
	held, err := m.cfg.Journal.DisabledAccounts()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range held {
		if d.Reason != store.DisabledGone || now.Sub(d.Since) < m.cfg.Deletes.DeleteAfter {
			continue
		}
		key := strings.ToLower(d.Name)
		if seq, ok := queued[key]; ok {
			if rec, err := m.cfg.Journal.Get(seq); err == nil && (rec.State == store.StateCommitted || rec.State == store.StatePrepared) {
				continue
			}
		}
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
			return n, err
		}
		if err := m.cfg.Journal.Commit(ctx, seq, d.EntryKey); err != nil {
			return n, err
		}
		queued[key] = seq
		m.auditAccount("removing", d.Name, "delete-after expired", "seq", seq, "since", d.Since.UTC().Format(time.RFC3339))
		n++
	}
	return n, nil
}

// createdAccount reports whether an account plan creates the account.
func createdAccount(p *axigen.Plan) bool {
	return p != nil && len(p.Commands) > 0 && strings.HasPrefix(p.Commands[0].String(), "ADD Account")
}

// renamedAccount reports whether an account plan renames the account.
func renamedAccount(p *axigen.Plan) bool {
	return p != nil && slices.ContainsFunc(p.Lines(), func(l string) bool { return strings.HasPrefix(l, "SET name ") })
}
