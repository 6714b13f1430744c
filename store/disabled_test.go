package store

import (
	"context"
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

// A row forgotten, or replaced, right after it was written is forgotten
// (or replaced) with its entry key: the batch that does it may have been
// opened before the row's batch was written.
func TestDisabledRemovedRightAfterPut(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	for i := range 20 {
		if err := j.PutDisabled(ctx, DisabledAccount{Name: "abuse", EntryKey: "k1", Reason: DisabledGone, Since: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := j.RemoveDisabled(ctx, "abuse"); err != nil {
			t.Fatal(err)
		}
		if d, ok, err := j.Disabled("abuse"); err != nil || ok {
			t.Fatalf("round %d: Disabled after RemoveDisabled = %+v, %v, %v", i, d, ok, err)
		}
		if d, ok, err := j.DisabledByKey("k1"); err != nil || ok {
			t.Fatalf("round %d: DisabledByKey after RemoveDisabled = %+v, %v, %v", i, d, ok, err)
		}
	}
	if err := j.PutDisabled(ctx, DisabledAccount{Name: "bob", EntryKey: "k1", Reason: DisabledGone}); err != nil {
		t.Fatal(err)
	}
	if err := j.PutDisabled(ctx, DisabledAccount{Name: "bob", EntryKey: "k2", Reason: DisabledGone}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := j.DisabledByKey("k1"); ok {
		t.Fatal("a replaced row is still found by its old key")
	}
}
