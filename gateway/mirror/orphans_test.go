package mirror

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/store"
)

// TestSettleOrphansDespiteClockSkew: a record's time is the clock of the
// leader that stamped it, and the leader that settles orphans may run
// ahead of it (another node, or its own clock stepped forward). A write
// still waiting for the directory must not be settled under it: here a
// password change the directory has not answered yet, stamped by a clock an
// hour behind. Settled at once, its password would fail the bind and the
// record be dropped, and the directory's later success would find it gone:
// an acknowledged password change never reaching Axigen.
func TestSettleOrphansDespiteClockSkew(t *testing.T) {
	rig := newPipelineRig(t)
	rig.journalNow = func() time.Time { return time.Now().Add(-time.Hour) }
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	seq, err := j.Prepare(ctx, &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: pipeUser("alice"),
		Changes: []store.Change{{Op: "replace", Attr: "userPassword"}}, Secret: []byte("alice-new-pw")})
	if err != nil {
		t.Fatal(err)
	}
	const age = 2 * time.Second
	start := time.Now()
	if n, err := m.SettleOrphans(ctx, age, nil); err != nil || n != 0 {
		t.Fatalf("a write prepared just now was settled as an orphan: %d, %v", n, err)
	}
	if rec, err := j.Get(seq); err != nil || rec.State != store.StatePrepared {
		t.Fatalf("record %d after the first pass: %+v, %v", seq, rec, err)
	}
	// Prepared for the orphan age on this gateway's clock: settled (the
	// directory never took the password: dropped).
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := m.SettleOrphans(ctx, age, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the orphan was never settled")
		}
		time.Sleep(100 * time.Millisecond) // pacing: the orphan age runs
	}
	if took := time.Since(start); took < age {
		t.Fatalf("settled after %v, before the orphan age %v", took, age)
	}
	if rec, err := j.Get(seq); err == nil && rec.State == store.StatePrepared {
		t.Fatalf("record %d still prepared after it was settled", seq)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
}
