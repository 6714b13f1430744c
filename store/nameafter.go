package store

import "slices"

// nameAfter is the Name of the record that follows seq, and the records
// its delivery in flight takes along (entry.coveredTo), in the history of
// their entry key: the name the entry had when that record's write was
// judged, that is once the writes up to the last of them were made. ok is
// false when no record follows, when seq has no entry key, or when the
// one that follows has no Name (prepared before its entry was read). A
// passive index keeps no histories: none follows.
//
// The gateway judges a write that can change its entry's name while no
// other write to the entry is on its way (the mirror's onWay), so the
// Name the next record read is the one the write before it left.
func (x *index) nameAfter(seq uint64) (name string, ok bool) {
	e := x.recs[seq]
	if e == nil || len(e.tokens) == 0 || e.key == "" {
		return "", false
	}
	q := x.queues["k:"+e.key]
	if q == nil {
		return "", false
	}
	last := max(seq, e.coveredTo)
	i, found := slices.BinarySearch(q.seqs, last)
	if !found || i+1 >= len(q.seqs) {
		return "", false
	}
	next := x.recs[q.seqs[i+1]]
	if next == nil || next.name == "" {
		return "", false
	}
	return next.name, true
}

// renameAfter finds the first rename (a record with a new DN) that follows
// seq, and the records its delivery in flight takes along, in the history
// of their entry key: dn is the DN that rename moved the entry from, which
// the entry had once the writes before it were made. waiting says that
// rename is still prepared: its DN is what its gateway read, which the
// directory has not confirmed (it may yet refuse the rename because the
// entry had moved). ok is false when no rename follows, when seq has no
// entry key, or on a passive index.
//
// Unlike the Name a record found, which a gateway of a cluster may have
// read before another gateway's rename of the entry, a committed rename's
// DN is exact: the directory renamed the entry from it. And the renames of
// one entry are in the journal in the directory's order: a gateway reads
// a rename's target before journaling it, so a rename from a DN another
// rename made is journaled after that one reached the directory.
func (x *index) renameAfter(seq uint64) (dn string, waiting, ok bool) {
	e := x.recs[seq]
	if e == nil || len(e.tokens) == 0 || e.key == "" {
		return "", false, false
	}
	q := x.queues["k:"+e.key]
	if q == nil {
		return "", false, false
	}
	last := max(seq, e.coveredTo)
	i, found := slices.BinarySearch(q.seqs, last)
	if found {
		i++
	}
	for _, s := range q.seqs[i:] {
		if next := x.recs[s]; next != nil && next.newDN != "" {
			return next.dn, next.state == StatePrepared, true
		}
	}
	return "", false, false
}
