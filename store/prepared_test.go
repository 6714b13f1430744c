package store

import (
	"context"
	"testing"
	"time"
)

// PreparedBefore shows the records sequenced before a given one that are
// still prepared, and wakes its caller when one settles.
func TestPreparedBeforeShowsEarlierWritesOnTheirWay(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	const alice, bob = "uid=alice,ou=people,dc=example,dc=org", "uid=bob,ou=people,dc=example,dc=org"
	rename := accountRecord(bob)
	rename.Op, rename.NewDN, rename.Changes = OpRename, alice, nil
	password := accountRecord(alice)
	password.Op, password.Changes, password.Secret = OpPassword, nil, []byte("s3cret")
	phone := accountRecord(alice)
	var seqs []uint64
	for _, r := range []*Record{rename, password, phone} {
		seq, err := j.Prepare(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	identityAt := func(dn string) func(PreparedWrite) bool {
		return func(p PreparedWrite) bool { return p.Identity && (p.DN == dn || p.NewDN == dn) }
	}
	passwordAt := func(dn string) func(PreparedWrite) bool {
		return func(p PreparedWrite) bool { return p.Password && p.DN == dn }
	}
	for _, c := range []struct {
		name   string
		before uint64
		match  func(PreparedWrite) bool
		want   bool
	}{
		{"the rename to alice, before the password", seqs[1], identityAt(alice), true},
		{"the rename from bob, before the phone", seqs[2], identityAt(bob), true},
		{"nothing before the rename", seqs[0], identityAt(alice), false},
		{"the password, before the phone", seqs[2], passwordAt(alice), true},
		{"no password before the password", seqs[1], passwordAt(alice), false},
		{"no password at bob", seqs[2] + 1, passwordAt(bob), false},
	} {
		found, changed := j.PreparedBefore(c.before, c.match)
		if found != c.want || (changed != nil) != c.want {
			t.Errorf("%s: found %v, changed channel %v; want %v", c.name, found, changed != nil, c.want)
		}
	}

	// A caller waiting for the rename is woken when it is committed, and
	// then finds nothing on its way.
	found, changed := j.PreparedBefore(seqs[1], identityAt(alice))
	if !found {
		t.Fatal("the rename is not shown")
	}
	if err := j.Commit(ctx, seqs[0], "uuid-bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit of the rename did not wake the waiter")
	}
	if found, _ := j.PreparedBefore(seqs[1], identityAt(alice)); found {
		t.Error("a committed rename is still shown as on its way")
	}
	// An aborted password is no longer on its way either.
	if err := j.Abort(ctx, seqs[1]); err != nil {
		t.Fatal(err)
	}
	if found, _ := j.PreparedBefore(seqs[2], passwordAt(alice)); found {
		t.Error("an aborted password is still shown as on its way")
	}
}
