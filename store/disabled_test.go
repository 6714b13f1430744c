package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The table of disabled accounts survives a restart, is found by name in
// any case and by entry key, and forgetting an account forgets its key.
func TestDisabledAccountsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	since := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	j := openTest(t, dir, testOptions(dir))
	for _, d := range []DisabledAccount{
		{Name: "Bob", EntryKey: "KEY-1", DN: "uid=bob,ou=people,dc=example,dc=com", Reason: DisabledGone, Since: since},
		{Name: "carol", Reason: DisabledNoPassword, Since: since},
	} {
		if err := j.PutDisabled(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = openTest(t, dir, testOptions(dir))
	d, ok, err := j.Disabled("BOB")
	if err != nil || !ok || d.Name != "Bob" || d.Reason != DisabledGone || !d.Since.Equal(since) {
		t.Fatalf("Disabled(BOB) = %+v, %v, %v", d, ok, err)
	}
	if d, ok, err := j.DisabledByKey("key-1"); err != nil || !ok || d.Name != "Bob" {
		t.Fatalf("DisabledByKey = %+v, %v, %v", d, ok, err)
	}
	all, err := j.DisabledAccounts()
	if err != nil || len(all) != 2 || all[0].Name != "Bob" || all[1].Name != "carol" {
		t.Fatalf("DisabledAccounts = %+v, %v", all, err)
	}

	// Replacing an account under a new key drops the old key.
	if err := j.PutDisabled(ctx, DisabledAccount{Name: "bob", EntryKey: "KEY-2", Reason: DisabledGone, Since: since}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := j.DisabledByKey("KEY-1"); ok {
		t.Fatal("the replaced key still finds the account")
	}
	if err := j.RemoveDisabled(ctx, "BOB"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := j.Disabled("bob"); ok {
		t.Fatal("a removed account is still listed")
	}
	if _, ok, _ := j.DisabledByKey("KEY-2"); ok {
		t.Fatal("a removed account's key still finds it")
	}
	if err := j.RemoveDisabled(ctx, "nobody"); err != nil {
		t.Fatalf("removing an unknown account: %v", err)
	}
}

// A standby's copy refuses the table's changes, as it does records.
func TestDisabledAccountsFollowerRefuses(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Follower = true
	j := openTest(t, dir, opts)
	err := j.PutDisabled(context.Background(), DisabledAccount{Name: "bob", Reason: DisabledGone})
	if !errors.Is(err, ErrFollower) {
		t.Fatalf("PutDisabled on a follower: %v, want ErrFollower", err)
	}
}

// TestDisabledAccountRemovedRightAfterPut: a removal reads the account
// the batch before wrote, even while that batch's transaction is newer
// than the one the removal's batch reads from.
func TestDisabledAccountRemovedRightAfterPut(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	for i := range 3 {
		name := fmt.Sprintf("dave%d", i)
		if err := j.PutDisabled(ctx, DisabledAccount{Name: name, EntryKey: "KEY-" + name, Reason: DisabledGone}); err != nil {
			t.Fatal(err)
		}
		if err := j.RemoveDisabled(ctx, name); err != nil {
			t.Fatal(err)
		}
		if d, ok, err := j.Disabled(name); err != nil || ok {
			t.Fatalf("%s still listed after its removal: %+v, %v", name, d, err)
		}
		if d, ok, err := j.DisabledByKey("KEY-" + name); err != nil || ok {
			t.Fatalf("%s's key still finds it: %+v, %v", name, d, err)
		}
	}
}
