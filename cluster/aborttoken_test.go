package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/store"
)

// TestAbortTokenThroughTheCluster: an abort by token proposed through a
// follower removes, on every node, the record a Prepare journaled with
// that token (the gateway never learnt its sequence number); one that
// comes before its Prepare makes every node refuse the Prepare, with
// store.ErrAborted across the wire, and the entry's next records are not
// held back.
func TestAbortTokenThroughTheCluster(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	f := c.others(lead)[0]
	f.j.SetProposer(f.n)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// After its Prepare.
	tok, err := store.NewPrepareToken()
	if err != nil {
		t.Fatal(err)
	}
	r := account("ann")
	r.Token = tok
	seq := c.proposeRaw(prepare(r))[0].Seq
	if err := f.j.AbortToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	c.converge()
	for _, n := range c.nodes {
		if _, err := n.j.Get(seq); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("record %d on %s after the abort by token: %v", seq, n.id, err)
		}
	}
	// Again (a retry after an unknown outcome): applied, nothing changes.
	if err := f.j.AbortToken(ctx, tok); err != nil {
		t.Fatal(err)
	}

	// Before its Prepare: the stale Prepare is refused everywhere.
	late, err := store.NewPrepareToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.j.AbortToken(ctx, late); err != nil {
		t.Fatal(err)
	}
	r = account("ann")
	r.Token = late
	res, err := f.n.Propose(ctx, []store.Command{prepare(r)})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, store.ErrAborted) {
		t.Fatalf("a Prepare after its abort, through a follower: %v, want ErrAborted", res[0].Err)
	}

	// The entry takes its next write, and nothing is left prepared.
	next := c.write("ann")
	st := c.converge()
	if st.Pending != 1 || len(st.Records) != 1 || st.Records[0].Seq != next || st.Records[0].State != store.StateCommitted {
		t.Fatalf("journal after the aborts: %+v", st)
	}
}

// TestLostAnswersWrapOutcomeUnknown: the errors of a proposal that may
// still be applied say so (store.ErrOutcomeUnknown), so that a Prepare's
// proposer aborts it by its token; those of one that certainly was not
// do not.
func TestLostAnswersWrapOutcomeUnknown(t *testing.T) {
	for _, err := range []error{cluster.ErrLeadershipLost, cluster.ErrOutcomeUnknown} {
		if !errors.Is(err, store.ErrOutcomeUnknown) || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%v", err)
		}
	}
	for _, err := range []error{cluster.ErrNoQuorum, cluster.ErrNotLeader, cluster.ErrClosed, cluster.ErrWitness} {
		if errors.Is(err, store.ErrOutcomeUnknown) {
			t.Fatalf("%v says its outcome is unknown", err)
		}
	}
}
