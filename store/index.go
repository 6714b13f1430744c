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
// An index that has never been asked what is due (passive: a cluster's
// follower, a journal not delivering yet) keeps only its records, with
// what their order tokens are made of (entry key, DNs, name tokens): the
// histories and the ready heap serve delivery alone, and keeping them for
// every record cost a 3-node cluster about a fifth of its CPU time
// (BenchmarkClusterRecords) on the nodes that never deliver; making the
// tokens (canonicalising each record's DNs) cost another 8%, on every
// node, for records that are most often delivered and gone before the
// node ever delivers. The first due makes the tokens and builds the
// histories from the records (activate), which gives the histories the
// records' order of sequence numbers, as a put per change would.
//
// Ordering: every record belongs to the histories named by its order tokens
// (entry key, DNs). A committed record may be delivered when it is the
// oldest unfinished record of each of its histories and none of them has a
// delivery in flight. Prepared records count as unfinished (their outcome
// is not known yet); dead records do not (they no longer hold the line).
type index struct {
	recs map[uint64]*entry
	// open holds the records still prepared (their writes on their way to
	// the directory: a few), for Journal.PreparedBefore.
	open   map[uint64]*entry
	queues map[string]*queue // token -> unfinished records
	busy   map[string]uint64 // token -> record being delivered
	ready  readyHeap
	spare  []*queue // emptied queues, for the next histories to start
	// names gives the Axigen account or group names of a record (Options.DeliveryNames;
	// nil: none), each an order token.
	names func(*Record) []string
	// passive: queues, busy and ready are not kept yet (see activate).
	passive bool
	// lately holds the records put last, by sequence number modulo its
	// size, which put finds there instead of in recs: a Commit follows its
	// Prepare by a few hundred records at most, and looking records up in
	// a map of every waiting record cost each node cache misses (4% of
	// BenchmarkClusterRecords' CPU time; the Prepare's insertion still
	// pays its own). A record above top, the highest sequence number put,
	// is new: not looked up at all.
	lately *[latelySize]*entry
	top    uint64
}

// latelySize is the size of index.lately.
const latelySize = 1024

// lookup is recs[seq], through lately.
func (x *index) lookup(seq uint64) *entry {
	if seq > x.top {
		return nil
	}
	if e := x.lately[seq%latelySize]; e != nil && e.seq == seq {
		return e
	}
	return x.recs[seq]
}

// queue is one history's unfinished records, in ascending order. Records
// join a history in the order they are applied, which is the order of
// their sequence numbers, so joining is an append, but for a record whose
// Commit names its entry key (it joins the key's history late); they
// leave it at the head when delivered, elsewhere only when aborted,
// dropped or rekeyed out of turn.
type queue struct {
	seqs []uint64
	// first backs seqs while the history holds one record, as most do
	// (one write of an entry at a time): a history then costs no
	// allocation of its own, and an emptied queue is kept for the next.
	first [1]uint64
}

// maxSpareQueues bounds the emptied queues an index keeps for reuse.
const maxSpareQueues = 1024

// head is the oldest unfinished record of history t (ok false: none).
func (x *index) head(t string) (seq uint64, ok bool) {
	if q := x.queues[t]; q != nil && len(q.seqs) > 0 {
		return q.seqs[0], true
	}
	return 0, false
}

// join adds record seq to history t.
func (x *index) join(t string, seq uint64) {
	q := x.queues[t]
	if q == nil {
		if n := len(x.spare); n > 0 {
			q, x.spare = x.spare[n-1], x.spare[:n-1]
		} else {
			q = &queue{}
		}
		q.seqs = q.first[:0]
		x.queues[t] = q
	}
	if n := len(q.seqs); n == 0 || q.seqs[n-1] < seq {
		q.seqs = append(q.seqs, seq)
		return
	}
	if i, found := slices.BinarySearch(q.seqs, seq); !found {
		q.seqs = slices.Insert(q.seqs, i, seq)
	}
}

// leave takes record seq out of history t.
func (x *index) leave(t string, seq uint64) {
	q := x.queues[t]
	if q == nil {
		return
	}
	if len(q.seqs) > 0 && q.seqs[0] == seq {
		q.seqs = q.seqs[1:]
	} else if i, found := slices.BinarySearch(q.seqs, seq); found {
		q.seqs = slices.Delete(q.seqs, i, i+1)
	}
	if len(q.seqs) == 0 {
		delete(x.queues, t)
		if len(x.spare) < maxSpareQueues {
			q.seqs = nil
			x.spare = append(x.spare, q)
		}
	}
}

type entry struct {
	seq     uint64
	state   State
	tokens  []string // the record's order tokens (nil while lazy)
	key, dn string   // what the tokens were made of
	newDN   string
	// identity: the record's write may give its DNs another entry (an
	// add, a delete, a rename); password: it sets a password (the password
	// modify extended operation, or a write with a secret). For
	// Journal.PreparedBefore.
	identity, password bool
	name               string    // the record's Name, which its name tokens follow
	time               time.Time // the record's time, for the backlog's age
	next               time.Time // next delivery attempt
	inflight           bool
	// coveredTo is the last record the delivery in flight takes along
	// (0: none), for nameAfter.
	coveredTo uint64
	// coverable: a modify without a secret, which a state-based delivery
	// of an earlier record of its entry delivers too.
	coverable bool
	inHeap    bool // on the ready heap, due at heapAt
	heapAt    time.Time

	// lazy: the tokens are not made yet (a passive index's, see
	// makeTokens); nameTokens are then the record's name tokens, which
	// only its Record gives.
	lazy       bool
	nameTokens []string
}

func newIndex(names func(*Record) []string) *index {
	return &index{recs: map[uint64]*entry{}, open: map[uint64]*entry{}, queues: map[string]*queue{}, busy: map[string]uint64{}, names: names, lately: new([latelySize]*entry)}
}

// newPassiveIndex is newIndex for a journal that may never deliver (see
// index).
func newPassiveIndex(names func(*Record) []string) *index {
	x := newIndex(names)
	x.passive = true
	return x
}

// activate builds the histories and the ready heap of a passive index
// from its records, once: from then on every change keeps them.
func (x *index) activate() {
	if !x.passive {
		return
	}
	x.passive = false
	seqs := make([]uint64, 0, len(x.recs))
	for seq, e := range x.recs {
		if e.lazy {
			e.makeTokens()
		}
		if unfinished(e.state) {
			seqs = append(seqs, seq)
		}
	}
	sortSeqs(seqs)
	for _, seq := range seqs {
		x.enqueue(x.recs[seq])
	}
	for _, seq := range seqs {
		x.consider(x.recs[seq])
	}
}

// makeTokens makes a lazy entry's order tokens: orderTokens of its
// record, from what the entry kept of it.
func (e *entry) makeTokens() {
	toks := make([]string, 0, 3+len(e.nameTokens))
	e.tokens = append(keyDNTokens(toks, e.key, e.dn, e.newDN), e.nameTokens...)
	e.lazy, e.nameTokens = false, nil
}

func unfinished(s State) bool { return s == StatePrepared || s == StateCommitted }

// waiting reports whether a committed record of the entry with key waits
// for its delivery.
func (x *index) waiting(key string) bool {
	committed, _ := x.unfinished(key)
	return committed
}

// unfinished reports whether the key's history holds a committed record,
// and whether it holds a prepared one.
func (x *index) unfinished(key string) (committed, prepared bool) {
	q := x.queues["k:"+key]
	if q == nil {
		return false, false
	}
	for _, seq := range q.seqs {
		if e := x.recs[seq]; e != nil {
			switch e.state {
			case StateCommitted:
				committed = true
			case StatePrepared:
				prepared = true
			}
		}
	}
	return committed, prepared
}

// put records a record's new version. tokens, when not nil, are its order
// tokens, computed already.
func (x *index) put(r *Record, tokens []string) {
	e := x.lookup(r.Seq)
	if r.State == StateDelivered {
		if e != nil {
			x.remove(r.Seq)
		}
		return
	}
	if e == nil {
		e = &entry{seq: r.Seq}
		x.recs[r.Seq] = e
		x.lately[r.Seq%latelySize] = e
		x.top = max(x.top, r.Seq)
		e.identity = r.Op == OpAdd || r.Op == OpDelete || r.Op == OpRename
		e.password = r.Op == OpPassword || r.SecretState != SecretNone || len(r.Secret) > 0
	}
	if e.key != r.EntryKey || e.dn != r.DN || e.newDN != r.NewDN || (e.tokens == nil && !e.lazy) || (x.names != nil && e.name != r.Name) {
		// sameDNs: the entry holds the record's DNs, and their tokens
		// (made, or to be made).
		sameDNs := (e.tokens != nil || e.lazy) && e.dn == r.DN && e.newDN == r.NewDN
		switch {
		case tokens == nil && x.passive:
			// Made if the index is ever activated (see makeTokens), from
			// the texts kept below; the name tokens need the record.
			e.lazy, e.nameTokens = true, nil
			if x.names != nil {
				e.nameTokens = appendNameTokens(nil, r, x.names)
			}
		case tokens == nil:
			if sameDNs && !e.lazy {
				// A Commit naming the entry key: the DNs' tokens stand.
				// Canonicalising the DNs again cost each node of a
				// cluster as much as its Prepare's (3% of
				// BenchmarkClusterRecords' CPU).
				// A Commit naming the account's name (a record prepared
				// before its entry was read) gives it that name's token.
				tokens = rekeyTokens(e.tokens, r.EntryKey, r, x.names)
			} else {
				tokens = orderTokens(r, x.names)
			}
		default:
			e.lazy, e.nameTokens = false, nil
		}
		// Copies: a decoded record's texts share one string, which the
		// index would otherwise keep whole for as long as the record waits.
		e.key = strings.Clone(r.EntryKey)
		e.name = strings.Clone(r.Name)
		if !sameDNs {
			e.dn, e.newDN = strings.Clone(r.DN), strings.Clone(r.NewDN)
		}
	} else {
		tokens = e.tokens
	}
	wasQueued, isQueued := unfinished(e.state), unfinished(r.State)
	// left: the histories the record leaves. Only a record leaving a
	// history can let another one go ahead; joining one (or committing)
	// concerns the record alone. A history it stays in keeps the record
	// where it stands: a Commit that names the entry key only joins the
	// key's history.
	var left []string
	was := e.tokens
	e.tokens = tokens
	x.setState(e, r.State)
	if x.passive {
		e.time, e.next = r.Time, r.NextAttempt
		e.coverable = r.Op == OpModify && r.SecretState == SecretNone && len(r.Secret) == 0
		return
	}
	switch {
	case wasQueued && !isQueued:
		for _, t := range was {
			x.leave(t, e.seq)
		}
		left = was
	case wasQueued && !slices.Equal(was, tokens):
		for _, t := range was {
			if !slices.Contains(tokens, t) {
				x.leave(t, e.seq)
				left = append(left, t)
			}
		}
		for _, t := range tokens {
			if !slices.Contains(was, t) {
				x.join(t, e.seq)
			}
		}
	case !wasQueued && isQueued:
		x.enqueue(e)
	}
	e.time, e.next = r.Time, r.NextAttempt
	e.coverable = r.Op == OpModify && r.SecretState == SecretNone && len(r.Secret) == 0
	x.consider(e)
	x.considerHeads(left, e.seq)
}

// setState gives e its record's new state, and keeps open.
func (x *index) setState(e *entry, s State) {
	if (e.state == StatePrepared) != (s == StatePrepared) {
		if s == StatePrepared {
			x.open[e.seq] = e
		} else {
			delete(x.open, e.seq)
		}
	}
	e.state = s
}

// remove forgets a record (aborted, dropped, purged or delivered). A
// delivery in flight keeps its histories busy until it is released.
func (x *index) remove(seq uint64) {
	e := x.lookup(seq)
	if e == nil {
		return
	}
	delete(x.recs, seq)
	delete(x.open, seq)
	if x.lately[seq%latelySize] == e {
		x.lately[seq%latelySize] = nil
	}
	if unfinished(e.state) && !x.passive {
		x.dequeue(e)
		x.considerHeads(e.tokens, 0)
	}
}

func (x *index) enqueue(e *entry) {
	for _, t := range e.tokens {
		x.join(t, e.seq)
	}
}

func (x *index) dequeue(e *entry) {
	for _, t := range e.tokens {
		x.leave(t, e.seq)
	}
}

// considerHeads considers the first record of each history, but skip
// (just considered by the caller).
func (x *index) considerHeads(tokens []string, skip uint64) {
	for _, t := range tokens {
		if h, ok := x.head(t); ok && h != skip {
			if e := x.recs[h]; e != nil {
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
		if h, ok := x.head(t); !ok || h != e.seq {
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
		if len(x.ready) >= 2*len(x.recs)+minStaleItems {
			x.dropStale()
		}
		heap.Push(&x.ready, readyItem{at: e.next, seq: e.seq})
		e.inHeap, e.heapAt = true, e.next
	}
}

// minStaleItems is how many stale items the ready heap may hold beyond
// two per record before they are dropped.
const minStaleItems = 1024

// dropStale rebuilds the ready heap without its stale items (records
// gone, or due at another time since). Popping them is what normally
// drops them, but a node that does not deliver (a cluster's follower)
// never pops: without this its heap would grow by a record's item for
// every record delivered by the leader.
func (x *index) dropStale() {
	live := x.ready[:0]
	for _, it := range x.ready {
		if e := x.recs[it.seq]; e != nil && e.inHeap && e.heapAt.Equal(it.at) {
			live = append(live, it)
		}
	}
	clear(x.ready[len(live):])
	x.ready = live
	heap.Init(&x.ready)
}

// dispatched is a delivery handed to a worker: the tokens it holds busy.
type dispatched struct {
	seq    uint64
	tokens []string
}

// due takes the records whose attempt is due at now, marking them in
// flight, and says when the next one falls due (zero: none waiting).
func (x *index) due(now time.Time, limit int) ([]dispatched, time.Time) {
	x.activate()
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
	x.activate()
	h := x.recs[seq]
	if h == nil || len(h.tokens) == 0 {
		return nil
	}
	// A delivery in flight heads each of its histories; next[k] is where
	// the record after it and those it covers stands in history k.
	next := make([]int, len(h.tokens))
	qs := make([][]uint64, len(h.tokens))
	for k, t := range h.tokens {
		q := x.queues[t]
		if q == nil || len(q.seqs) == 0 || q.seqs[0] != seq {
			return nil
		}
		qs[k], next[k] = q.seqs, 1
	}
	var out []uint64
	for len(out) < limit && next[0] < len(qs[0]) {
		s := qs[0][next[0]]
		e := x.recs[s]
		if e == nil || e.state != StateCommitted || !e.coverable || e.inflight || !slices.Equal(e.tokens, h.tokens) {
			break
		}
		// In every history nothing but the delivery and the records it
		// covers may come before this one.
		for k, q := range qs {
			if next[k] >= len(q) || q[next[k]] != s {
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
