package mirror

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// ResyncOptions tune a resync.
type ResyncOptions struct {
	// DryRun plans the commands without sending any.
	DryRun bool
	// RemoveExtra removes Axigen groups the directory lacks, and applies
	// the delete action (Config.Deletes: disable by default) to such
	// accounts, never to protected ones.
	RemoveExtra bool
	// Workers compare and apply entries in parallel (default 8).
	Workers int
	// Progress, when set, hears how far the resync has come.
	Progress func(done, total int)
	// Pending lists the journal's records not delivered yet (prepared,
	// committed or dead) of the gateway that mirrors these entries; nil:
	// the Mirror's own journal, when it has one (serve's resync). Each
	// such record brings its entry to Axigen in its turn, under the names
	// of its turn (a rename waiting for Axigen): the resync leaves its
	// entry alone, and never counts a name it involves as extra. Applied
	// out of turn, the entry's current name would make a second account
	// beside the one its rename is to carry over (the mailbox), and
	// RemoveExtra would disable or remove that one.
	Pending func(ctx context.Context) ([]*store.Record, error)
}

// ResyncReport says what a resync found and did.
type ResyncReport struct {
	Accounts, Groups int // entries in the directory
	Changed          int // entries whose Axigen state needed commands
	// Plans are the command lists of the changed entries, in DN order.
	Plans []*axigen.Plan
	// Failed lists entries that could not be brought in line, with why.
	Failed []string
	// Incomplete lists entries brought in line but for values Axigen
	// cannot take (written in the directory behind the gateway's back),
	// left out as a delivery leaves them out: Axigen keeps its own.
	Incomplete []string
	// Pending lists the entries left to journal records not delivered yet
	// (ResyncOptions.Pending), with the record.
	Pending []string
	// Extra are Axigen accounts and groups the directory does not have;
	// Removed says whether they were acted upon (RemoveExtra, not DryRun).
	ExtraAccounts, ExtraGroups []string
	Removed                    bool
	// Locked are the accounts disabled or locked in the directory (the
	// mapping's disabled attribute), protected ones aside: disabled in
	// Axigen unless DryRun.
	Locked []string
	// Unlocked are the accounts the table of disabled accounts holds
	// because their entry was locked and whose entry is no longer (a
	// ppolicy lock expires inside the directory): enabled unless DryRun.
	// Resync enables no other account.
	Unlocked []string
	// ExtraActions say, with RemoveExtra, what was (with DryRun: would
	// be) done to each extra account, and why.
	ExtraActions []ExtraAction
}

// ExtraAction is what a resync with RemoveExtra does to an account Axigen
// has and the directory does not.
type ExtraAction struct {
	Account string
	// Action is "disable", "remove" or "keep".
	Action string
	Reason string
}

type resyncItem struct {
	kind  schema.Kind
	entry schema.Entry
}

// Resync compares every account and group in the directory with Axigen and
// applies the differences (or, with DryRun, only plans them). It is how an
// existing directory and an existing Axigen are brought into agreement, and
// the backstop for anything the write path could not see.
func (m *Mirror) Resync(ctx context.Context, opts ResyncOptions) (*ResyncReport, error) {
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	mp := m.mapping()
	cfg := mp.Config()
	accounts, err := m.cfg.Directory.SearchAll(ctx, cfg.AccountBase, classFilter(cfg.AccountClasses), mp.AccountAttributes())
	if err != nil {
		return nil, err
	}
	var groups []schema.Entry
	if len(cfg.GroupBase) > 0 {
		if groups, err = m.cfg.Directory.SearchAll(ctx, cfg.GroupBase, classFilter(cfg.GroupClasses), mp.GroupAttributes()); err != nil {
			return nil, err
		}
	}

	// Member addresses come from the accounts already read; only members
	// outside the account subtree cost a directory read.
	mailAttr := mp.MemberMailAttribute()
	mails := map[string]string{}
	var items []resyncItem
	for _, e := range accounts {
		if mp.ClassifyEntry(e) != schema.KindAccount {
			continue
		}
		items = append(items, resyncItem{schema.KindAccount, e})
		if v, ok := e.First(mailAttr); ok {
			mails[schema.CanonicalDN(e.DN)] = v
		}
	}
	for _, e := range groups {
		if mp.ClassifyEntry(e) == schema.KindGroup {
			items = append(items, resyncItem{schema.KindGroup, e})
		}
	}
	resolve := m.memberAddress(ctx)
	cached := func(dn string) (string, bool, error) {
		if v, ok := mails[schema.CanonicalDN(dn)]; ok {
			return v, true, nil
		}
		return resolve(dn)
	}

	rep := &ResyncReport{}
	pending, err := m.resyncPending(ctx, opts)
	if err != nil {
		return nil, err
	}
	type result struct {
		dn   string
		plan *axigen.Plan
		err  error
		name string
		// rawName is the entry's name attribute as read, when it has one.
		rawName string
		kind    schema.Kind
		// locked: an account disabled or locked in the directory, disabled
		// in Axigen by lockPlan (empty when it already was); unlocked: one
		// held for its lock and no longer locked, enabled by lockPlan.
		locked, unlocked bool
		lockPlan         *axigen.Plan
		// skipped: values left out (desiredAccount).
		skipped []*schema.ValueError
		// skippedGone: the entry was gone (or no longer of its kind) when
		// read again just before its apply.
		skippedGone bool
		// pending: the journal record the entry is left to.
		pending *pendingRef
	}
	results := make([]result, len(items))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		done int
		next = make(chan int)
	)
	for w := 0; w < opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				it := items[i]
				r := result{dn: it.entry.DN, kind: it.kind}
				if ref, ok := pending.holds(m, it.entry); ok {
					// Its journal record brings it, in its turn.
					r.name, r.pending = mp.EntryName(it.entry, it.kind), &ref
					results[i] = r
					m.resyncDone(&mu, &done, len(items), opts)
					continue
				}
				if !opts.DryRun {
					// Read again now: the search at the start is minutes old
					// by the end of a large directory, and applying it would
					// take back what the gateway delivered meanwhile.
					fresh, gone, err := m.resyncReread(ctx, it)
					switch {
					case err != nil:
						r.err = err
						results[i] = r
						m.resyncDone(&mu, &done, len(items), opts)
						continue
					case gone:
						// Deleted, moved or no longer of its kind meanwhile:
						// its journal record brings Axigen along. Its name is
						// still seen, never taken for an extra one.
						r.name, r.skippedGone = mp.EntryName(it.entry, it.kind), true
						results[i] = r
						m.resyncDone(&mu, &done, len(items), opts)
						continue
					}
					it.entry = *fresh
				}
				if it.kind == schema.KindAccount {
					// The name is seen even when the entry cannot be mapped:
					// its account is never taken for an extra one.
					if v, ok := it.entry.First(mp.NameAttribute()); ok {
						r.rawName = v
					}
					desired, skipped, err := m.desiredAccount(it.entry)
					r.skipped = skipped
					if err == nil {
						r.name = desired.Name
						err = m.heldForOther(it.entry, desired.Name)
					}
					if err == nil {
						// A password is set only on creation: Axigen cannot
						// show one back, so setting it again would never end.
						desired.InitialPassword, desired.Password = desired.Password, ""
						if desired.Disabled {
							desired.InitialPassword = "" // created with a random password
						}
						if opts.DryRun {
							r.plan, err = m.cfg.Axigen.PlanAccount(ctx, m.cfg.Domain, desired, "")
						} else {
							r.plan, err = m.cfg.Axigen.ApplyAccount(ctx, m.cfg.Domain, desired, "")
						}
						r.locked = desired.Disabled && !m.cfg.Deletes.protects(desired.Name)
						if err == nil {
							// Locks the directory makes, and ends, by itself
							// (ppolicy after failed binds) reach the gateway
							// only this way.
							r.unlocked, r.lockPlan, err = m.resyncLock(ctx, it.entry, desired, r.locked, opts.DryRun)
						}
					}
					r.err = err
				} else {
					desired, err := mp.GroupState(it.entry, cached)
					if err == nil {
						r.name = desired.Name
						if opts.DryRun {
							r.plan, err = m.cfg.Axigen.PlanGroup(ctx, m.cfg.Domain, desired, "")
						} else {
							r.plan, err = m.cfg.Axigen.ApplyGroup(ctx, m.cfg.Domain, desired, "")
						}
					}
					r.err = err
				}
				results[i] = r
				m.resyncDone(&mu, &done, len(items), opts)
			}
		}()
	}
	for i := range items {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	seenAccounts, seenGroups := map[string]bool{}, map[string]bool{}
	for _, r := range results {
		if r.kind == schema.KindAccount {
			rep.Accounts++
			seenAccounts[strings.ToLower(r.name)] = true
			if r.rawName != "" {
				seenAccounts[strings.ToLower(strings.TrimSpace(r.rawName))] = true
			}
		} else {
			rep.Groups++
			seenGroups[strings.ToLower(r.name)] = true
		}
		if r.pending != nil {
			rep.Pending = append(rep.Pending, fmt.Sprintf("%s: %s", r.dn, r.pending))
			continue
		}
		if r.skippedGone {
			continue
		}
		switch {
		case r.err != nil:
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", r.dn, r.err))
		case len(r.skipped) > 0:
			rep.Incomplete = append(rep.Incomplete, fmt.Sprintf("%s: %v", r.dn, skippedValues(r.skipped)))
		}
		switch {
		case r.err != nil:
		case r.plan != nil && !r.plan.Empty():
			rep.Changed++
			rep.Plans = append(rep.Plans, r.plan)
			if r.lockPlan != nil && !r.lockPlan.Empty() {
				rep.Plans = append(rep.Plans, r.lockPlan)
			}
		case r.lockPlan != nil && !r.lockPlan.Empty():
			rep.Changed++
			rep.Plans = append(rep.Plans, r.lockPlan)
		}
		if r.err == nil && r.locked {
			rep.Locked = append(rep.Locked, r.name)
		}
		if r.err == nil && r.unlocked {
			rep.Unlocked = append(rep.Unlocked, r.name)
		}
	}
	// The names of the records waiting now (some may have come while the
	// resync ran) are not extra: their deliveries give or take them.
	if pending, err = m.resyncPending(ctx, opts); err != nil {
		return nil, err
	}
	for n := range pending.accounts {
		seenAccounts[n] = true
	}
	for n := range pending.groups {
		seenGroups[n] = true
	}
	existing, err := m.cfg.Axigen.ListAccounts(ctx, m.cfg.Domain)
	if err != nil {
		return nil, err
	}
	extra, err := m.stillExtra(ctx, schema.KindAccount, unseen(existing, seenAccounts))
	if err != nil {
		return nil, err
	}
	rep.ExtraAccounts = append(rep.ExtraAccounts, extra...)
	if len(cfg.GroupBase) > 0 {
		axGroups, err := m.cfg.Axigen.ListGroups(ctx, m.cfg.Domain)
		if err != nil {
			return nil, err
		}
		extra, err := m.stillExtra(ctx, schema.KindGroup, unseen(axGroups, seenGroups))
		if err != nil {
			return nil, err
		}
		rep.ExtraGroups = append(rep.ExtraGroups, extra...)
	}
	sort.Strings(rep.ExtraAccounts)
	sort.Strings(rep.ExtraGroups)
	sort.Strings(rep.Failed)
	sort.Strings(rep.Pending)
	sort.Strings(rep.Incomplete)
	sort.Strings(rep.Locked)
	sort.Strings(rep.Unlocked)
	if opts.RemoveExtra {
		rep.ExtraActions = m.extraActions(rep.ExtraAccounts)
	}
	if opts.RemoveExtra && !opts.DryRun {
		for _, a := range rep.ExtraActions {
			if err := m.actOnExtra(ctx, a); err != nil {
				rep.Failed = append(rep.Failed, fmt.Sprintf("%s account %s: %v", a.Action, a.Account, err))
			}
		}
		for _, g := range rep.ExtraGroups {
			if _, err := m.cfg.Axigen.DeleteGroup(ctx, m.cfg.Domain, g); err != nil {
				rep.Failed = append(rep.Failed, fmt.Sprintf("remove group %s: %v", g, err))
			}
		}
		rep.Removed = true
	}
	return rep, nil
}

// pendingRecords is what a resync knows of the journal's records not
// delivered yet: the entries they bring (by key, and by DN for a record
// without one), and the names they involve (DeliveryNames), lower-cased.
type pendingRecords struct {
	keys, dns        map[string]pendingRef
	accounts, groups map[string]bool
}

// pendingRef names the record a resync leaves an entry to.
type pendingRef struct {
	seq  uint64
	dead bool
}

// String is how the report names the record.
func (p pendingRef) String() string {
	if p.dead {
		return fmt.Sprintf("journal record %d, dead: delivered only once retried (ldapgate journal retry %d), or drop it", p.seq, p.seq)
	}
	return fmt.Sprintf("journal record %d", p.seq)
}

// resyncPending lists the records not delivered yet (opts.Pending, or
// the Mirror's journal).
func (m *Mirror) resyncPending(ctx context.Context, opts ResyncOptions) (pendingRecords, error) {
	p := pendingRecords{keys: map[string]pendingRef{}, dns: map[string]pendingRef{}, accounts: map[string]bool{}, groups: map[string]bool{}}
	list := opts.Pending
	if list == nil && m.cfg.Journal != nil {
		list = func(context.Context) ([]*store.Record, error) {
			return m.cfg.Journal.List(store.Filter{States: []store.State{store.StatePrepared, store.StateCommitted, store.StateDead}})
		}
	}
	if list == nil {
		return p, nil
	}
	recs, err := list(ctx)
	if err != nil {
		return p, fmt.Errorf("list the journal's records not delivered yet: %w", err)
	}
	mp := m.mapping()
	names := DeliveryNames(mp)
	for _, r := range recs {
		if r.State != store.StatePrepared && r.State != store.StateCommitted && r.State != store.StateDead {
			continue
		}
		ref := pendingRef{seq: r.Seq, dead: r.State == store.StateDead}
		if r.EntryKey != "" {
			p.keys[strings.ToLower(r.EntryKey)] = ref
		}
		for _, dn := range []string{r.DN, r.NewDN} {
			if dn != "" {
				p.dns[mp.CanonicalDN(dn)] = ref
			}
		}
		into := p.accounts
		if r.Kind == store.KindGroup {
			into = p.groups
		}
		for _, n := range names(r) {
			into[strings.ToLower(n)] = true
		}
	}
	return p, nil
}

// holds reports whether a record not delivered yet brings e (by its key,
// or its DN), and which.
func (p pendingRecords) holds(m *Mirror, e schema.Entry) (pendingRef, bool) {
	if len(p.keys) == 0 && len(p.dns) == 0 {
		return pendingRef{}, false
	}
	if key, err := m.entryKey(e); err == nil && key != "" {
		if ref, ok := p.keys[strings.ToLower(key)]; ok {
			return ref, true
		}
	}
	ref, ok := p.dns[m.mapping().CanonicalDN(e.DN)]
	return ref, ok
}

// classFilter matches entries having any of the object classes.
func classFilter(classes []string) string {
	if len(classes) == 0 {
		return "(objectClass=*)"
	}
	var b strings.Builder
	b.WriteString("(|")
	for _, c := range classes {
		fmt.Fprintf(&b, "(objectClass=%s)", c)
	}
	b.WriteString(")")
	return b.String()
}

// unseen lists the names that seen (keyed in lower case) does not hold.
func unseen(names []string, seen map[string]bool) []string {
	var out []string
	for _, n := range names {
		if !seen[strings.ToLower(n)] {
			out = append(out, n)
		}
	}
	return out
}

// extraActions decides, by the delete action and the protected accounts,
// what a resync with RemoveExtra does to each extra account.
func (m *Mirror) extraActions(names []string) []ExtraAction {
	del := m.cfg.Deletes
	out := make([]ExtraAction, 0, len(names))
	for _, name := range names {
		a := ExtraAction{Account: name, Reason: "not in the directory"}
		switch {
		case del.protects(name):
			a.Action, a.Reason = "keep", "protected account"
		case del.action() == DeleteIgnored:
			a.Action, a.Reason = "keep", "not in the directory (onAccountDelete=ignore)"
		case del.action() == DeleteRemoves:
			a.Action = "remove"
		default:
			a.Action = "disable"
		}
		out = append(out, a)
	}
	return out
}

// heldForOther refuses to bring an account in line with an entry when the
// table of disabled accounts holds it for another entry (a deleted
// person's mailbox): the write path does the same (heldFor).
func (m *Mirror) heldForOther(e schema.Entry, name string) error {
	held, ok, err := m.disabledRow(name)
	if err != nil || !ok {
		return err
	}
	key, _ := m.entryKey(e)
	if held.EntryKey != "" && key != "" && !strings.EqualFold(held.EntryKey, key) {
		return fmt.Errorf("account %s is held, disabled since %s, for another entry (key %s, was %s): left alone",
			held.Name, held.Since.UTC().Format(time.RFC3339), held.EntryKey, held.DN)
	}
	return nil
}

// resyncLock disables an account locked in the directory, remembering it
// (with the journal) as held for its lock, and enables one the table holds
// for a lock its entry no longer has; with dryRun it only says so.
func (m *Mirror) resyncLock(ctx context.Context, e schema.Entry, desired schema.Account, locked, dryRun bool) (unlocked bool, p *axigen.Plan, err error) {
	held, ok, err := m.disabledRow(desired.Name)
	if err != nil {
		return false, nil, err
	}
	key, _ := m.entryKey(e)
	ours := ok && held.Reason == store.DisabledLocked && !held.Scrambled &&
		(held.EntryKey == "" || key == "" || strings.EqualFold(held.EntryKey, key))
	switch {
	case locked && !dryRun:
		if !ok {
			row := store.DisabledAccount{Name: desired.Name, EntryKey: key, DN: e.DN, Reason: store.DisabledLocked, Since: m.cfg.Deletes.now()}
			if err := m.putDisabled(ctx, row); err != nil {
				return false, nil, err
			}
		}
		p, _, err = m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, desired.Name, false)
		return false, p, err
	case locked || !ours:
		return false, nil, nil
	case dryRun:
		return true, nil, nil
	}
	p, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, desired.Name, true)
	if err != nil {
		return false, nil, err
	}
	if err := m.forgetDisabled(ctx, desired.Name); err != nil {
		return false, nil, err
	}
	if found && p != nil && !p.Empty() {
		m.auditAccount("enabled", desired.Name, "resync: account no longer disabled or locked in the directory")
	}
	return true, p, nil
}

// actOnExtra carries out one extra account's action, with its audit line.
// A resync leaves the table of disabled accounts alone here: the command
// line's resync has no journal (serve holds it), and serve's own resync
// never acts on extra accounts.
func (m *Mirror) actOnExtra(ctx context.Context, a ExtraAction) error {
	switch a.Action {
	case "remove":
		if _, err := m.cfg.Axigen.DeleteAccount(ctx, m.cfg.Domain, a.Account); err != nil {
			return err
		}
		if err := m.forgetDisabled(ctx, a.Account); err != nil {
			return err
		}
		m.auditAccount("removed", a.Account, "resync: "+a.Reason)
	case "disable":
		_, found, err := m.cfg.Axigen.SetAccountEnabled(ctx, m.cfg.Domain, a.Account, false)
		if err != nil || !found {
			return err
		}
		m.auditAccount("disabled", a.Account, "resync: "+a.Reason)
	default:
		m.auditAccount("kept", a.Account, "resync: "+a.Reason)
	}
	return nil
}

// resyncDone counts one item of a resync done, for its progress report.
func (m *Mirror) resyncDone(mu *sync.Mutex, done *int, total int, opts ResyncOptions) {
	mu.Lock()
	defer mu.Unlock()
	*done++
	if opts.Progress != nil {
		opts.Progress(*done, total)
	}
}

// resyncReread reads an item's entry again just before the resync applies
// it; gone reports one deleted, moved out of its base or no longer of its
// kind since the resync's search. A write made between this read and the
// apply can still be taken back by the apply, until the entry's next
// write or resync: the window is the apply's, not the whole run's.
func (m *Mirror) resyncReread(ctx context.Context, it resyncItem) (e *schema.Entry, gone bool, err error) {
	mp := m.mapping()
	attrs := mp.AccountAttributes()
	if it.kind == schema.KindGroup {
		attrs = mp.GroupAttributes()
	}
	if e, err = m.cfg.Directory.Read(ctx, it.entry.DN, attrs); err != nil {
		return nil, false, fmt.Errorf("read again before its apply: %w", err)
	}
	if e == nil || mp.ClassifyEntry(*e) != it.kind {
		return nil, true, nil
	}
	e.DN = it.entry.DN
	return e, false, nil
}

// stillExtra keeps, of the names Axigen holds that the resync's search did
// not see, those no entry of the kind has in the directory now: one added
// (through the gateway, whose delivery put it in Axigen) while the resync
// ran is not extra.
func (m *Mirror) stillExtra(ctx context.Context, kind schema.Kind, names []string) ([]string, error) {
	if len(names) == 0 {
		return names, nil
	}
	mp := m.mapping()
	attr, bases := mp.NameAttribute(), mp.AccountBases()
	if kind == schema.KindGroup {
		attr, bases = mp.GroupNameAttribute(), mp.GroupBases()
	}
	if attr == "" || (kind == schema.KindAccount && mp.NameFromAddress()) {
		return names, nil // named from another attribute: the search stands
	}
	var out []string
	for _, n := range names {
		e, err := m.cfg.Directory.Find(ctx, bases, fmt.Sprintf("(%s=%s)", attr, ldap.EscapeFilter(n)), []string{"objectClass"})
		if err != nil {
			return nil, fmt.Errorf("check extra %s %s in the directory: %w", kind, n, err)
		}
		if e == nil || mp.ClassifyEntry(*e) != kind {
			out = append(out, n)
		}
	}
	return out, nil
}
