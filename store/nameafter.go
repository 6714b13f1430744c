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
