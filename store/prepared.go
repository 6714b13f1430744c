package store

// PreparedWrite is what PreparedBefore shows match of a record still
// prepared.
type PreparedWrite struct {
	Seq uint64
	// Identity: an add, a delete or a rename, whose write may give its DNs
	// another entry. Password: a write that sets a password (the password
	// modify extended operation, or one with a secret).
	Identity, Password bool
	EntryKey, DN       string
	NewDN              string // a rename's
}

// PreparedBefore reports whether a record sequenced before seq that match
// takes is still prepared: its write is on its way to the directory, its
// outcome not known yet. When one is, changed is closed at the next change
// of the journal's records, for the caller to wait on and ask again.
//
// A cluster's gateways serialise with it the writes a lone gateway
// serialises in memory: Prepare returns once this node has applied the
// record, and so every record the leader sequenced before it; of two
// writes prepared on different gateways, the later one finds the earlier
// one here (prepared, or settled already), and may wait for its outcome.
// match runs under the journal's lock: it must not call the journal.
func (j *Journal) PreparedBefore(seq uint64, match func(PreparedWrite) bool) (found bool, changed <-chan struct{}) {
	s := j.sched
	s.mu.Lock()
	defer s.mu.Unlock()
	for at, e := range s.idx.open {
		if at >= seq || e.state != StatePrepared {
			continue
		}
		if match(PreparedWrite{Seq: at, Identity: e.identity, Password: e.password, EntryKey: e.key, DN: e.dn, NewDN: e.newDN}) {
			if s.changed == nil {
				s.changed = make(chan struct{})
			}
			return true, s.changed
		}
	}
	return false, nil
}
