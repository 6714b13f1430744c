package mirror

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
)

// Writes on their way: the gateway serialises its own writes over the
// subtrees that modify DNs move.
//
// A modify DN moves its entry's whole subtree in one operation, and what
// the gateway judges of it (movedSubtree: which accounts and groups lie
// below; classify: what each write's target is) it reads before relaying
// it. A write below the entry made on another connection in between (an
// add under a unit outside the bases, relayed unjudged, while the unit is
// moved into the account base) would land unseen by that read: an account
// in the base never judged, journaled or mirrored. So, from its check until
// the directory's answer, a modify DN holds the subtrees below its entry's
// old and new DNs: any write through this gateway whose target or new DN is
// below either is answered busy (51), and a modify DN with a write on its
// way below its old or new DN is answered busy. A modify DN that takes its
// entry into, out of or between the bases holds the entry itself too (at
// its old and new DN): a write to it, judged by its scope before the move,
// would be made to an entry of another scope (a unit outside the bases
// given an account's classes, unjudged, while moved into the base).
//
// A write that may change its entry's identity — a modify DN, an add, a
// delete, or a modify of an attribute that names, keys or classifies the
// entry (classify's identityChange) — is never on its way together with
// another write to the same entry (at any of its DNs): it waits for those on their way, and
// writes to the entry wait for it, up to holdPatience, then are answered
// busy. Each write reads its target after it holds it (a read made before
// an identity change ended is made again), so the name a record found
// (store.Record.Name) is the one the entry had right after the write
// before it in its history, and a delivery can name the account as of its
// record (store.Journal.NameAfter). Two renames of one account, or a rename
// and a modify of it, are made one after the other, in the journal's order.
//
// Writes made to the directory directly, or through another gateway, are
// not seen.
//
// Most writes are modifies of leaf entries, and modify DNs are rare: every
// write adds its DNs to a map, and only while a modify DN is on its way
// does a write look at its DNs' ancestors (one map lookup each); a modify
// DN looks at every write on its way.

// onWay is the registry of the writes on their way to the directory, by
// the canonical DNs they name (target, and a modify DN's new DN). The
// DNs are classify's canonical identities, whose ',' separate RDNs only
// (a ',' in a value is escaped \2c): a DN is below another exactly when it
// ends with ',' and that one. The zero value is ready to use.
type onWay struct {
	mu sync.Mutex
	// writes counts, by DN, the writes on their way naming it (several
	// modifies of one entry may be on their way together).
	writes map[string]int
	// moves counts, by DN, the modify DNs on their way from or to it,
	// which hold what is below it; entries those of them that hold the
	// entry at that DN too.
	moves, entries map[string]int
	// exclusive counts, by DN, the writes on their way that may change
	// their entry's identity: no other write to the DN goes with them.
	exclusive map[string]int
	// freed, when not nil, is closed at the next release: writes wait on
	// it for the holds in their way.
	freed chan struct{}
	// changesEnded counts the modify DNs and other identity changes
	// answered: a write that read its target before it held its DNs reads
	// it again when one ended in between (what was at its DN may have
	// moved away, or been renamed). Atomic: every write reads it, and need
	// not wait for the lock.
	changesEnded atomic.Uint64
}

// onWayHold is what a write holds in onWay, until release.
type onWayHold struct {
	dns                     []string
	move, entire, exclusive bool
}

// holdPatience bounds how long a write waits for the writes to its entry
// that an identity change must not go with: each is on its way to the
// directory, and normally answered within milliseconds.
const holdPatience = 10 * time.Second

// hold is take, waiting up to patience (or ctx) while what stands in the
// way is only writes an identity change must not go with; a modify DN in
// the way answers at once. waited says it waited in vain. flush (nil: none)
// runs before the first wait: what the write waits for may be an earlier
// request of its own session, relayed but not sent yet.
func (o *onWay) hold(ctx context.Context, dns []string, move, entire, exclusive bool, patience time.Duration, flush func()) (h onWayHold, blocker string, waited, ok bool) {
	var deadline <-chan time.Time
	for {
		h, blocker, wait, ok := o.take(dns, move, entire, exclusive)
		if ok || wait == nil {
			return h, blocker, false, ok
		}
		if deadline == nil {
			if flush != nil {
				flush()
			}
			t := time.NewTimer(patience)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-wait:
		case <-deadline:
			return onWayHold{}, blocker, true, false
		case <-ctx.Done():
			return onWayHold{}, blocker, true, false
		}
	}
}

// take holds dns (canonical, "" ignored) for a write on its way. move says
// the write is a modify DN, dns its old and new DN, and entire that it
// holds its entry too, not only what is below it; exclusive that it may
// change its entry's identity. It returns the hold, or ok false and the DN
// that stands in the way: a modify DN on its way above one of dns (or at
// it, holding its entry), or, for a move, a write on its way below one of
// dns (or at it, when either holds the entry); or, with wait (closed at
// the next release), a write at one of dns when either is exclusive.
func (o *onWay) take(dns []string, move, entire, exclusive bool) (h onWayHold, blocker string, wait <-chan struct{}, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.moves) > 0 {
		for _, dn := range dns {
			if dn == "" {
				continue
			}
			if o.entries[dn] > 0 {
				return onWayHold{}, dn, nil, false
			}
			if at, found := o.moveAboveLocked(dn); found {
				return onWayHold{}, at, nil, false
			}
		}
	}
	if move {
		// Rare: every write on its way is looked at.
		for w := range o.writes {
			for _, dn := range dns {
				if dn != "" && (below(w, dn) || (entire && w == dn)) {
					return onWayHold{}, w, nil, false
				}
			}
		}
	}
	for _, dn := range dns {
		if dn != "" && (o.exclusive[dn] > 0 || (exclusive && o.writes[dn] > 0)) {
			if o.freed == nil {
				o.freed = make(chan struct{})
			}
			return onWayHold{}, dn, o.freed, false
		}
	}
	if o.writes == nil {
		o.writes, o.moves, o.entries, o.exclusive = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	}
	h = onWayHold{move: move, entire: move && entire, exclusive: exclusive}
	for _, dn := range dns {
		if dn == "" {
			continue
		}
		h.dns = append(h.dns, dn)
		o.writes[dn]++
		if h.move {
			o.moves[dn]++
		}
		if h.entire {
			o.entries[dn]++
		}
		if h.exclusive {
			o.exclusive[dn]++
		}
	}
	return h, "", nil, true
}

// moveAboveLocked finds a modify DN on its way from or to an ancestor of
// dn.
func (o *onWay) moveAboveLocked(dn string) (string, bool) {
	for s := dn; ; {
		i := strings.IndexByte(s, ',')
		if i < 0 {
			return "", false
		}
		s = s[i+1:]
		if o.moves[s] > 0 {
			return s, true
		}
	}
}

// release drops a hold (the zero hold is ignored).
func (o *onWay) release(h onWayHold) {
	if len(h.dns) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	drop := func(m map[string]int, dn string) {
		if m[dn]--; m[dn] <= 0 {
			delete(m, dn)
		}
	}
	for _, dn := range h.dns {
		drop(o.writes, dn)
		if h.move {
			drop(o.moves, dn)
		}
		if h.entire {
			drop(o.entries, dn)
		}
		if h.exclusive {
			drop(o.exclusive, dn)
		}
	}
	if h.move || h.exclusive {
		o.changesEnded.Add(1)
	}
	if o.freed != nil {
		close(o.freed)
		o.freed = nil
	}
}

// ended is the count of modify DNs and identity changes answered so far.
func (o *onWay) ended() uint64 { return o.changesEnded.Load() }

// below reports whether the canonical DN dn lies strictly below base.
func below(dn, base string) bool {
	return len(dn) > len(base) && dn[len(dn)-len(base)-1] == ',' && strings.HasSuffix(dn, base)
}

// holdDNs holds the DNs a write names (its target, a modify DN's new DN)
// until the directory answers it, or answers it busy (51) while a write
// it would race is on its way (after waiting, up to holdPatience, for
// writes to its entry an identity change must not go with). identity
// says the write may change its entry's identity (identityChange).
func (m *Mirror) holdDNs(ctx context.Context, w *write, identity bool) *gateway.Result {
	move := w.req.Op == gateway.OpModifyDN
	// A move that changes its entry's scope holds the entry itself too.
	mp := m.mapping()
	scope := func(dn string) [2]bool { return [2]bool{mp.UnderAccountBase(dn), mp.UnderGroupBase(dn)} }
	entire := move && scope(w.target) != scope(w.newDN)
	// An add or a delete gives its DN another entry, or none: a write to
	// the DN judged by what it read before would land on the new entry
	// (a password modify pipelined after a delete and a re-add landed on
	// the newcomer while its record named the entry deleted:
	// TestAttackLoneOrderPipelinedExopDeleteAddExop).
	exclusive := move || w.req.Op == gateway.OpAdd || w.req.Op == gateway.OpDelete || (w.req.Op == gateway.OpModify && identity)
	h, blocker, waited, ok := m.onWay.hold(ctx, []string{w.target, w.newDN}, move, entire, exclusive, holdPatience, w.flush)
	if ok {
		w.hold = h
		return nil
	}
	if waited {
		return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
			"ldapgate: a write to %s that may change its name (or one this write, which may, must not go with) is still on its way to the directory; try again once it is answered",
			quoteDN(blocker))}
	}
	if move {
		return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
			"ldapgate: a write to %s is on its way to the directory, below the entry this modify DN moves or its new DN (or a modify DN above them); try again once it is answered",
			quoteDN(blocker))}
	}
	return &gateway.Result{Code: ldap.LDAPResultBusy, Diagnostic: fmt.Sprintf(
		"ldapgate: a modify DN of %s (or to it) is on its way to the directory, and this write is below it (or to the entry it moves into or out of the bases); try again once it is answered",
		quoteDN(blocker))}
}
