package mirror

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

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
// given an account's classes, unjudged, while moved into the base). A
// rename that keeps its entry in its scope does not: writes to the entry
// are judged alike under either DN, and the journal orders them (two
// renames of one account, or a rename and a modify of it, race as before).
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
	// movesEnded counts the modify DNs answered: a write that read its
	// target before it held its DNs reads it again when a modify DN ended
	// in between (what was at its DN may have moved away). Atomic: every
	// write reads it, and need not wait for the lock.
	movesEnded atomic.Uint64
}

// onWayHold is what a write holds in onWay, until release.
type onWayHold struct {
	dns          []string
	move, entire bool
}

// take holds dns (canonical, "" ignored) for a write on its way. move says
// the write is a modify DN, dns its old and new DN, and entire that it
// holds its entry too, not only what is below it. It returns the hold, or
// ok false and the DN that stands in the way: a modify DN on its way above
// one of dns (or at it, holding its entry), or, for a move, a write on its
// way below one of dns (or at it, when either holds the entry).
func (o *onWay) take(dns []string, move, entire bool) (h onWayHold, blocker string, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.moves) > 0 {
		for _, dn := range dns {
			if dn == "" {
				continue
			}
			if o.entries[dn] > 0 {
				return onWayHold{}, dn, false
			}
			if at, found := o.moveAboveLocked(dn); found {
				return onWayHold{}, at, false
			}
		}
	}
	if move {
		// Rare: every write on its way is looked at.
		for w := range o.writes {
			for _, dn := range dns {
				if dn != "" && (below(w, dn) || (entire && w == dn)) {
					return onWayHold{}, w, false
				}
			}
		}
	}
	if o.writes == nil {
		o.writes, o.moves, o.entries = map[string]int{}, map[string]int{}, map[string]int{}
	}
	h = onWayHold{move: move, entire: move && entire}
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
	}
	return h, "", true
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
	}
	if h.move {
		o.movesEnded.Add(1)
	}
}

// ended is the count of modify DNs answered so far.
func (o *onWay) ended() uint64 { return o.movesEnded.Load() }

// below reports whether the canonical DN dn lies strictly below base.
func below(dn, base string) bool {
	return len(dn) > len(base) && dn[len(dn)-len(base)-1] == ',' && strings.HasSuffix(dn, base)
}

// holdDNs holds the DNs a write names (its target, a modify DN's new DN)
// until the directory answers it, or answers it busy (51) while a write
// it would race is on its way.
func (m *Mirror) holdDNs(w *write) *gateway.Result {
	move := w.req.Op == gateway.OpModifyDN
	// A move that changes its entry's scope holds the entry itself too.
	mp := m.mapping()
	scope := func(dn string) [2]bool { return [2]bool{mp.UnderAccountBase(dn), mp.UnderGroupBase(dn)} }
	entire := move && scope(w.target) != scope(w.newDN)
	h, blocker, ok := m.onWay.take([]string{w.target, w.newDN}, move, entire)
	if ok {
		w.hold = h
		return nil
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
