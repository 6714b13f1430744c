package mirror

import (
	"context"
	"fmt"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

// Password modifies racing identity changes across a cluster's gateways.
//
// A lone gateway serialises its own writes to an entry (onway.go); the
// gateways of a cluster do not see each other's writes on their way. A
// modify, a delete or a rename carries an assertion of the entry the
// gateway read (assert.go), which the directory checks in the operation
// itself. The password modify extended operation cannot carry one on
// slapd (it refuses a critical assertion there, 12, and ignores a
// non-critical one): a password sent to a DN that another gateway's rename
// gave another entry between this gateway's read and its relay landed on
// that other entry, while the record named the first, whose delivery found
// no such password and sent none
// (TestAttackClusterPasswordsRacingSwapsThroughOtherGateways).
//
// So the journal orders them: every gateway has applied, once its Prepare
// returns, every record the leader sequenced before its own
// (store.Journal.PreparedBefore). A password modify (or a modify setting a
// password, on a directory without assertions) waits until no earlier
// add, delete or rename at its DN (from it or to it) is still on its way,
// then reads its target again: if the DN holds another entry by then (or
// none), the write is not relayed (busy, 51, as for a failed assertion;
// noSuchObject when the entry is gone). An add, a delete or a rename waits
// until no earlier write setting a password at its DNs is on its way. Of two such
// writes, the later one sees the earlier one, so one always waits for the
// other: the password lands on the entry its record names.
//
// Writes made to the directory directly, and identity changes that are not
// journaled (of entries that are neither accounts nor groups, Axigen's own
// connector's), are not seen.

// awaitEarlierWrites makes a write of a cluster's gateway, prepared as
// w.rec, wait for the earlier writes through other gateways it must not
// race (see above). An answer means the write is not to be relayed: the
// caller aborts its record.
func (m *Mirror) awaitEarlierWrites(ctx context.Context, w *write) *gateway.Result {
	j := m.cfg.Journal
	if !j.Replicated() || w.rec == nil {
		return nil
	}
	mp := m.mapping()
	at := func(dn string) bool {
		return dn != "" && (mp.EqualDN(dn, w.target) || (w.newDN != "" && mp.EqualDN(dn, w.newDN)))
	}
	var match func(store.PreparedWrite) bool
	password := m.unassertedPassword(w)
	switch w.req.Op {
	case gateway.OpAdd, gateway.OpDelete, gateway.OpModifyDN:
		match = func(p store.PreparedWrite) bool { return p.Password && at(p.DN) }
	default:
		if !password {
			return nil
		}
		match = func(p store.PreparedWrite) bool { return p.Identity && (at(p.DN) || at(p.NewDN)) }
	}
	if answer := m.awaitPrepared(ctx, w, match); answer != nil {
		return answer
	}
	if !password || w.rec.EntryKey == "" {
		return nil
	}
	if answer := m.sameEntryStill(ctx, w); answer != nil {
		return answer
	}
	// What the read showed holds until the next identity change: sent
	// behind the client's next requests, the write reached the directory
	// long after it (TestAttackClusterOrderBufferedExopRacingUnitSwaps).
	w.req.SendNow = true
	return nil
}

// unassertedPassword says w sets the password of an entry it read, with
// nothing the directory checks to tie it to that entry: the password
// modify extended operation (slapd ignores the gateway's assertion there),
// or a modify when the directory does not support assertions.
func (m *Mirror) unassertedPassword(w *write) bool {
	if w.entry == nil || w.asserted {
		return false
	}
	return w.req.Op == gateway.OpPasswordModify || (w.req.Op == gateway.OpModify && len(w.rec.Secret) > 0)
}

// awaitPrepared waits, up to holdPatience, until no record sequenced before
// w's that match takes is still prepared.
func (m *Mirror) awaitPrepared(ctx context.Context, w *write, match func(store.PreparedWrite) bool) *gateway.Result {
	var deadline <-chan time.Time
	for {
		found, changed := m.cfg.Journal.PreparedBefore(w.rec.Seq, match)
		if !found {
			return nil
		}
		if deadline == nil {
			if w.flush != nil {
				w.flush() // what it waits for may be its own session's, not sent yet
			}
			t := time.NewTimer(holdPatience)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-changed:
		case <-deadline:
			return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
				"ldapgate: a write through another gateway of the cluster that may give %s another entry (or take a password to it) is still on its way after %s; try again",
				quoteDN(w.target), holdPatience)}
		case <-ctx.Done():
			return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: "ldapgate: the write was given up while it waited for another gateway's write to the same entry: " + ctx.Err().Error()}
		}
	}
}

// sameEntryStill reads a password modify's target again, once no earlier
// identity change at its DN is on its way: an answer when the DN no longer
// holds the entry the write was judged and journaled by.
func (m *Mirror) sameEntryStill(ctx context.Context, w *write) *gateway.Result {
	e, err := m.cfg.Directory.Read(ctx, w.target, []string{m.mapping().KeyAttribute()})
	if err != nil {
		m.log.Warn("cannot read again the entry a password modify targets", "dn", w.target, "err", err)
		return unreachable("cannot read the target entry again to check the change")
	}
	if e == nil {
		return &gateway.Result{Code: ldap.LDAPResultNoSuchObject, Diagnostic: fmt.Sprintf(
			"ldapgate: %s was deleted or renamed while this change was checked", quoteDN(w.target))}
	}
	key, err := m.entryKey(*e)
	if err != nil || key != w.rec.EntryKey {
		return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
			"ldapgate: %s was given another entry (by a rename, a delete or an add) while this change was checked; try again", quoteDN(w.target))}
	}
	return nil
}
