package mirror

import (
	"context"
	"fmt"
	"strings"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
)

// ResyncReport says what a resync found and did.
type ResyncReport struct {
	Accounts, Groups int // entries in the directory
	Changed          int // entries whose Axigen state needed commands
	// Plans are the command lists of the changed entries.
	Plans []*axigen.Plan
	// Failed lists entries that could not be brought in line, with why.
	Failed []string
	// Extra are Axigen accounts and groups the directory does not have.
	ExtraAccounts, ExtraGroups []string
}

// Resync compares every account and group in the directory with Axigen and
// applies the differences (or, with dryRun, only plans them). It is the
// backstop for anything the write path could not see.
func (m *Mirror) Resync(ctx context.Context, dryRun bool, progress func(done, total int)) (*ResyncReport, error) {
	mp := m.cfg.Mapping
	cfg := mp.Config()
	rep := &ResyncReport{}
	accountDNs, err := m.cfg.Directory.FindAll(ctx, cfg.AccountBase, classFilter(cfg.AccountClasses))
	if err != nil {
		return nil, err
	}
	var groupDNs []string
	if len(cfg.GroupBase) > 0 {
		if groupDNs, err = m.cfg.Directory.FindAll(ctx, cfg.GroupBase, classFilter(cfg.GroupClasses)); err != nil {
			return nil, err
		}
	}
	total := len(accountDNs) + len(groupDNs)
	seenAccounts, seenGroups := map[string]bool{}, map[string]bool{}
	done := 0
	step := func() {
		done++
		if progress != nil {
			progress(done, total)
		}
	}
	for _, dn := range accountDNs {
		e, err := m.cfg.Directory.Read(ctx, dn, mp.AccountAttributes())
		if err != nil {
			return nil, err
		}
		if e == nil || mp.ClassifyEntry(*e) != schema.KindAccount {
			step()
			continue
		}
		rep.Accounts++
		desired, err := mp.AccountState(*e)
		if err != nil {
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", dn, err))
			step()
			continue
		}
		seenAccounts[strings.ToLower(desired.Name)] = true
		var plan *axigen.Plan
		if dryRun {
			plan, err = m.cfg.Axigen.PlanAccount(ctx, m.cfg.Domain, desired, "")
		} else {
			plan, err = m.cfg.Axigen.ApplyAccount(ctx, m.cfg.Domain, desired, "")
		}
		m.noteResync(rep, dn, plan, err)
		step()
	}
	for _, dn := range groupDNs {
		e, err := m.cfg.Directory.Read(ctx, dn, mp.GroupAttributes())
		if err != nil {
			return nil, err
		}
		if e == nil || mp.ClassifyEntry(*e) != schema.KindGroup {
			step()
			continue
		}
		rep.Groups++
		desired, err := mp.GroupState(*e, m.memberAddress(ctx))
		if err != nil {
			rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", dn, err))
			step()
			continue
		}
		seenGroups[strings.ToLower(desired.Name)] = true
		var plan *axigen.Plan
		if dryRun {
			plan, err = m.cfg.Axigen.PlanGroup(ctx, m.cfg.Domain, desired, "")
		} else {
			plan, err = m.cfg.Axigen.ApplyGroup(ctx, m.cfg.Domain, desired, "")
		}
		m.noteResync(rep, dn, plan, err)
		step()
	}
	accounts, err := m.cfg.Axigen.ListAccounts(ctx, m.cfg.Domain)
	if err != nil {
		return nil, err
	}
	for _, a := range accounts {
		if !seenAccounts[strings.ToLower(a)] {
			rep.ExtraAccounts = append(rep.ExtraAccounts, a)
		}
	}
	if len(cfg.GroupBase) > 0 {
		groups, err := m.cfg.Axigen.ListGroups(ctx, m.cfg.Domain)
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			if !seenGroups[strings.ToLower(g)] {
				rep.ExtraGroups = append(rep.ExtraGroups, g)
			}
		}
	}
	return rep, nil
}

func (m *Mirror) noteResync(rep *ResyncReport, dn string, plan *axigen.Plan, err error) {
	if err != nil {
		rep.Failed = append(rep.Failed, fmt.Sprintf("%s: %v", dn, err))
		return
	}
	if plan != nil && !plan.Empty() {
		rep.Changed++
		rep.Plans = append(rep.Plans, plan)
	}
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
