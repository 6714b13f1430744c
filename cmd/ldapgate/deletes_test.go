package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/gateway/mirror"
)

// The delete settings: defaults (disable, no grace, postmaster protected),
// from the file and from flags, and a value that is not an action refused
// with the setting's name.
func TestDeleteSettings(t *testing.T) {
	cfg, err := runConfig(t, "--upstream", "ldap://127.0.0.1:389")
	if err != nil {
		t.Fatal(err)
	}
	d, err := cfg.Mirror.deletes()
	if err != nil || d.OnAccountDelete != mirror.DeleteDisables || d.DeleteAfter != 0 || !slices.Equal(d.Protected, []string{"postmaster"}) {
		t.Fatalf("defaults: %+v, %v", d, err)
	}

	file := writeConfig(t, "mirror:\n  onAccountDelete: delete\n  deleteAfter: 720h\n  protectedAccounts: [abuse]\n")
	cfg, err = runConfig(t, "--config", file, "--upstream", "ldap://127.0.0.1:389")
	if err != nil {
		t.Fatal(err)
	}
	if d, err = cfg.Mirror.deletes(); err != nil || d.OnAccountDelete != mirror.DeleteRemoves || d.DeleteAfter != 720*time.Hour ||
		!slices.Equal(d.Protected, []string{"abuse"}) {
		t.Fatalf("from the file: %+v, %v", d, err)
	}

	cfg, err = runConfig(t, "--config", file, "--upstream", "ldap://127.0.0.1:389",
		"--on-account-delete", "ignore", "--delete-after", "2m", "--protected-account", "root", "--protected-account", "abuse")
	if err != nil {
		t.Fatal(err)
	}
	if d, err = cfg.Mirror.deletes(); err != nil || d.OnAccountDelete != mirror.DeleteIgnored || d.DeleteAfter != 2*time.Minute ||
		!slices.Equal(d.Protected, []string{"root", "abuse"}) {
		t.Fatalf("from flags: %+v, %v", d, err)
	}

	// A grace under a minute is refused (under a day, the log warns); a protected name
	// is trimmed, one with blanks inside is refused; the removals per
	// sweep are bounded (10 by default).
	if d.MaxRemovalsPerSweep != mirror.DefaultMaxRemovalsPerSweep {
		t.Errorf("maxRemovalsPerSweep %d, want %d", d.MaxRemovalsPerSweep, mirror.DefaultMaxRemovalsPerSweep)
	}
	bad := cfg.Mirror
	bad.DeleteAfter = 30 * time.Second
	if _, err := bad.deletes(); err == nil || !strings.Contains(err.Error(), "mirror.deleteAfter (--delete-after)") {
		t.Errorf("a 30s grace: %v; want refused", err)
	}
	bad = cfg.Mirror
	bad.ProtectedAccounts = []string{" Abuse "}
	if d, err := bad.deletes(); err != nil || !slices.Equal(d.Protected, []string{"Abuse"}) {
		t.Errorf("a protected name with blanks around: %+v, %v; want it trimmed", d.Protected, err)
	}
	bad.ProtectedAccounts = []string{"post master"}
	if _, err := bad.deletes(); err == nil || !strings.Contains(err.Error(), "mirror.protectedAccounts") {
		t.Errorf("a protected name with a blank inside: %v; want refused", err)
	}
	bad = cfg.Mirror
	bad.MaxRemovalsPerSweep = 0
	if _, err := bad.deletes(); err == nil {
		t.Error("maxRemovalsPerSweep 0 accepted")
	}

	cfg.Mirror.OnAccountDelete = "purge"
	if _, err := cfg.Mirror.deletes(); err == nil || !strings.Contains(err.Error(), "mirror.onAccountDelete (--on-account-delete)") {
		t.Fatalf("an unknown action: %v", err)
	}
}
