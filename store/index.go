package store

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// index is the in-memory view of the records not yet delivered, which
// decides what may be delivered next. It is the scheduler's, guarded by
// scheduler.mu.
//
// Ordering: every record belongs to the histories named by its order tokens
// (entry key, DNs). A committed record may be delivered when it is the
// oldest unfinished record of each of its histories and none of them has a
// delivery in flight. Prepared records count as unfinished (their outcome
// is not known yet); dead records do not (they no longer hold the line).
type index struct {
	recs   map[uint64]*entry
	queues map[string][]uint64 // token -> unfinished records, ascending
	busy   map[string]uint64   // token -> record being delivered
	ready  readyHeap
}

type entry struct {
	seq      uint64
	state    State
	tokens   []string
	key, dn  string // what the tokens were made of
	newDN    string
	time     time.Time // the record's time, for the backlog's age
	next     time.Time // next delivery attempt
	inflight bool
	// coverable: a modify without a secret, which a state-based delivery
	// of an earlier record of its entry delivers too.
	coverable bool
	inHeap    bool // on the ready heap, due at heapAt
	heapAt    time.Time
}

func newIndex() *index {
	return &index{recs: map[uint64]*entry{}, queues: map[string][]uint64{}, busy: map[string]uint64{}}
}

func unfinished(s State) bool { return s == StatePrepared || s == StateCommitted }

// put records a record's new version. tokens, when not nil, are its order
// tokens, computed already.
func (x *index) put(r *Record, tokens []string) {
	e := x.recs[r.Seq]
	if r.State == StateDelivered {
		if e != nil {
			x.remove(r.Seq)
		}
		return
	}
	if e == nil {
		e = &entry{seq: r.Seq}
		x.recs[r.Seq] = e
	}
	if e.key != r.EntryKey || e.dn != r.DN || e.newDN != r.NewDN || e.tokens == nil {
		sameDNs := e.tokens != nil && e.dn == r.DN && e.newDN == r.NewDN
		if tokens == nil {
			if sameDNs {
				// A Commit naming the entry key: the DNs' tokens stand.
				// Canonicalising the DNs again cost each node of a
				// cluster as much as its Prepare's (3% of
				// BenchmarkClusterRecords' CPU).
				tokens = rekeyTokens(e.tokens, r.EntryKey)
			} else {
				tokens = orderTokens(r)
			}
		}
		// Copies: a decoded record's texts share one string, which the
		// index would otherwise keep whole for as long as the record waits.
		e.key = strings.Clone(r.EntryKey)
		if !sameDNs {
			e.dn, e.newDN = strings.Clone(r.DN), strings.Clone(r.NewDN)
		}
	} else {
		tokens = e.tokens
	}
	wasQueued := unfinished(e.state)
	sameTokens := slices.Equal(e.tokens, tokens)
	var touched []string
	if wasQueued && (!unfinished(r.State) || !sameTokens) {
		x.dequeue(e)
		touched = append(touched, e.tokens...)
	}
	e.state, e.time, e.next = r.State, r.Time, r.NextAttempt
	e.coverable = r.Op == OpModify && r.SecretState == SecretNone && len(r.Secret) == 0
	if !wasQueued || !sameTokens || !unfinished(r.State) {
		e.tokens = tokens
		if unfinished(r.State) {
			x.enqueue(e)
		}
	}
	// Only a record leaving a history can let another one go ahead; joining
	// one (or committing) concerns the record alone.
	x.consider(e)
	x.considerHeads(touched, e.seq)
}

// remove forgets a record (aborted, dropped, purged or delivered). A
// delivery in flight keeps its histories busy until it is released.
func (x *index) remove(seq uint64) {
	e := x.recs[seq]
	if e == nil {
		return
	}
	delete(x.recs, seq)
	if unfinished(e.state) {
		x.dequeue(e)
		x.considerHeads(e.tokens, 0)
	}
}

func (x *index) enqueue(e *entry) {
	for _, t := range e.tokens {
		q := x.queues[t]
		i, _ := slices.BinarySearch(q, e.seq)
		x.queues[t] = slices.Insert(q, i, e.seq)
	}
}

func (x *index) dequeue(e *entry) {
	for _, t := range e.tokens {
		q := x.queues[t]
		if i, ok := slices.BinarySearch(q, e.seq); ok {
			q = slices.Delete(q, i, i+1)
		}
		if len(q) == 0 {
			delete(x.queues, t)
		} else {
			x.queues[t] = q
		}
	}
}

// considerHeads considers the first record of each history, but skip
// (just considered by the caller).
func (x *index) considerHeads(tokens []string, skip uint64) {
	for _, t := range tokens {
		if q := x.queues[t]; len(q) > 0 && q[0] != skip {
			if e := x.recs[q[0]]; e != nil {
				x.consider(e)
			}
		}
	}
}

func (x *index) eligible(e *entry) bool {
	if e.state != StateCommitted || e.inflight {
		return false
	}
	for _, t := range e.tokens {
		if q := x.queues[t]; len(q) == 0 || q[0] != e.seq {
			return false
		}
		if _, ok := x.busy[t]; ok {
			return false
		}
	}
	return true
}

// consider puts a record on the ready heap if it may be delivered (now or at
// its next attempt). Stale heap items are skipped when popped.
func (x *index) consider(e *entry) {
	if x.eligible(e) && !(e.inHeap && e.heapAt.Equal(e.next)) {
		heap.Push(&x.ready, readyItem{at: e.next, seq: e.seq})
		e.inHeap, e.heapAt = true, e.next
	}
}

// dispatched is a delivery handed to a worker: the tokens it holds busy.
type dispatched struct {
	seq    uint64
	tokens []string
}

// due takes the records whose attempt is due at now, marking them in
// flight, and says when the next one falls due (zero: none waiting).
func (x *index) due(now time.Time, limit int) ([]dispatched, time.Time) {
	var out []dispatched
	for x.ready.Len() > 0 && len(out) < limit {
		top := x.ready[0]
		e := x.recs[top.seq]
		if e == nil || !x.eligible(e) || !e.next.Equal(top.at) {
			heap.Pop(&x.ready)
			if e != nil && e.inHeap && e.heapAt.Equal(top.at) {
				e.inHeap = false
			}
			continue
		}
		if top.at.After(now) {
			return out, top.at
		}
		heap.Pop(&x.ready)
		e.inHeap = false
		e.inflight = true
		for _, t := range e.tokens {
			x.busy[t] = e.seq
		}
		out = append(out, dispatched{seq: e.seq, tokens: e.tokens})
	}
	if x.ready.Len() > 0 {
		return out, x.ready[0].at
	}
	return out, time.Time{}
}

// release ends a delivery; the record's new version, if any, is put
// separately.
func (x *index) release(d dispatched) {
	for _, t := range d.tokens {
		if x.busy[t] == d.seq {
			delete(x.busy, t)
		}
	}
	if e := x.recs[d.seq]; e != nil {
		e.inflight = false
		x.consider(e)
	}
	x.considerHeads(d.tokens, d.seq)
}

// covered returns up to limit records a state-based delivery of seq, in
// flight, delivers too: those right behind it in each of its histories,
// committed (so in the directory before the delivery reads it), coverable,
// and with the same histories (no rename between). It stops at the first
// record that is not, which keeps the order of everything after.
func (x *index) covered(seq uint64, limit int) []uint64 {
	h := x.recs[seq]
	if h == nil || len(h.tokens) == 0 {
		return nil
	}
	// A delivery in flight heads each of its histories; next[k] is where
	// the record after it and those it covers stands in history k.
	next := make([]int, len(h.tokens))
	for k, t := range h.tokens {
		if q := x.queues[t]; len(q) == 0 || q[0] != seq {
			return nil
		}
		next[k] = 1
	}
	var out []uint64
	q0 := x.queues[h.tokens[0]]
	for len(out) < limit && next[0] < len(q0) {
		s := q0[next[0]]
		e := x.recs[s]
		if e == nil || e.state != StateCommitted || !e.coverable || e.inflight || !slices.Equal(e.tokens, h.tokens) {
			break
		}
		// In every history nothing but the delivery and the records it
		// covers may come before this one.
		for k, t := range h.tokens {
			if q := x.queues[t]; next[k] >= len(q) || q[next[k]] != s {
				return out
			}
		}
		for k := range next {
			next[k]++
		}
		out = append(out, s)
	}
	return out
}

type readyItem struct {
	at  time.Time
	seq uint64
}

type readyHeap []readyItem

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h readyHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *readyHeap) Push(v any)   { *h = append(*h, v.(readyItem)) }
func (h *readyHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

func sortSeqs(s []uint64) { slices.Sort(s) }
