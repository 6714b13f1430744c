package e2e

// Deletes never destroy mail by accident (issue 17 part 1) and taking a
// password away takes it away in Axigen (issue 16 item 5): what a directory
// delete, a move out of the account base, a rename, a re-add, the grace
// period and resync --remove-extra do to the Axigen account, by setting.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/store"
)

const formerBase = "ou=former,dc=example,dc=com" // outside the account base

// newDeleteEnv starts a gateway with the delete flags given (disable
// unless they say otherwise, where older tests use delete), an audit log,
// and a postmaster in the simulator's domain (every real Axigen domain has
// one; the simulator starts without).
func newDeleteEnv(t *testing.T, flags ...string) (e *mirrorEnv, audit string) {
	t.Helper()
	audit = filepath.Join(t.TempDir(), "audit.log")
	if !slices.Contains(flags, "--on-account-delete") {
		flags = append(flags, "--on-account-delete", "disable") // the default, said
	}
	e = newMirrorEnv(t, mirrorOptions{Extra: append([]string{"--audit-log", audit}, flags...)})
	e.sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: "postmaster", Password: "pm-pw", Contact: map[string]string{}})
	return e, audit
}

// addDave adds uid=dave with a plaintext password through the gateway and
// waits for its account.
func addDave(e *mirrorEnv) {
	e.t.Helper()
	e.asAdmin(`dn: uid=dave,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: dave
cn: Dave Dent
sn: Dent
givenName: Dave
mail: dave@example.com
userPassword: dave-pw
`, "ldapadd")
	e.waitAccount("dave", "created, enabled", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "dave-pw"
	})
}

// accountIs is the condition "present, enabled as said, with its mail and
// password kept".
func accountIs(enabled bool, password string) func(axigensim.AccountState, bool) bool {
	return func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled == enabled && a.Password == password && a.Contact["lastName"] == "Dent"
	}
}

// sentCommands lists the CLI commands the simulator received matching
// prefix (case-insensitive).
func sentCommands(sim *axigensim.Server, prefix string) []string {
	var out []string
	for _, tr := range sim.Transcripts() {
		for _, c := range tr.Commands() {
			if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(c)), strings.ToUpper(prefix)) {
				out = append(out, strings.TrimSpace(c))
			}
		}
	}
	return out
}

// auditAccountLines are the audit log's account lines (action, account,
// reason), waited for until want's action on account is there.
func waitAudit(t *testing.T, path, action, account string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	waitFor(t, 10*time.Second, "audit line "+action+" "+account, func() error {
		lines = nil
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found := false
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) != nil || m["msg"] != "account" {
				continue
			}
			lines = append(lines, m)
			if m["action"] == action && strings.EqualFold(m["account"].(string), account) {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("no %s line for %s in %v", action, account, lines)
		}
		return nil
	})
	return lines
}

// The default: a rename renames the account; a move out of the base
// disables it and keeps its mail, and the entry moved back (same
// entryUUID) gets it back, enabled; deleting the password disables it and
// setting one enables it; a delete disables it; the entry re-added under
// the deleted one's name (a new entryUUID) gets it back, enabled, with its
// own password (the old one no longer opens it), and the audit log says
// it was handed over.
// postmaster is never touched. No REMOVE Account is ever sent.
func TestMirrorDeleteDisables(t *testing.T) {
	e, audit := newDeleteEnv(t, "--delete-after", "1h")
	addDave(e)
	if limits := sentCommands(e.sim, "CONFIG Limits"); len(limits) > 0 {
		t.Errorf("creating an account read or changed its Limits: %q", limits)
	}

	// A rename of the uid renames the account: same account, never a
	// delete and a create.
	e.asAdmin("", "ldapmodrdn", "-r", userDN("dave"), "uid=david")
	e.waitAccount("david", "renamed from dave, enabled, same password and contact", accountIs(true, "dave-pw"))
	if _, ok := e.sim.Account(mirrorDomain, "dave"); ok {
		t.Error("account dave still exists after its rename to david")
	}
	if adds := sentCommands(e.sim, "ADD Account"); slices.ContainsFunc(adds, func(c string) bool { return strings.Contains(c, "david") }) {
		t.Errorf("the rename created an account: %q", adds)
	}
	waitAudit(t, audit, "renamed", "david")

	// Moved out of the account base: disabled; moved back (same
	// entryUUID): enabled.
	e.asAdmin("dn: "+formerBase+"\nobjectClass: organizationalUnit\nou: former\n", "ldapadd")
	e.asAdmin("", "ldapmodrdn", "-s", formerBase, userDN("david"), "uid=david")
	e.waitAccount("david", "disabled after the move out of the base", accountIs(false, "dave-pw"))
	e.asAdmin("", "ldapmodrdn", "-s", mirrorAccountBase, "uid=david,"+formerBase, "uid=david")
	e.waitAccount("david", "enabled after the move back", accountIs(true, "dave-pw"))
	waitAudit(t, audit, "enabled", "david")

	// Issue 16 item 5: deleting the password disables (and makes the
	// Axigen password unknowable), setting one enables.
	e.asAdmin(`dn: uid=david,ou=people,dc=example,dc=com
changetype: modify
delete: userPassword
`, "ldapmodify")
	e.waitAccount("david", "disabled when its password was deleted, the old one gone", func(a axigensim.AccountState, ok bool) bool {
		return ok && !a.Enabled && a.Password != "dave-pw" && a.Contact["lastName"] == "Dent"
	})
	e.asAdmin("", "ldappasswd", "-s", "david-pw-2", userDN("david"))
	e.waitAccount("david", "enabled with the new password", accountIs(true, "david-pw-2"))

	// Deleted: disabled, mail and password kept.
	e.asAdmin("", "ldapdelete", userDN("david"))
	e.waitAccount("david", "disabled, mail kept", accountIs(false, "david-pw-2"))
	lines := waitAudit(t, audit, "disabled", "david")
	if l := lines[len(lines)-1]; !strings.Contains(l["reason"].(string), "deleted") {
		t.Errorf("audit reason %q, want it to say the entry was deleted", l["reason"])
	}

	// The entry re-added under the same name (a new entryUUID, as ldapadd
	// gives it) within the grace gets the held mailbox back, enabled, with
	// the add's password: the old one no longer opens it.
	e.asAdmin(`dn: uid=david,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: david
cn: David Other
sn: Other
mail: david@example.com
userPassword: other-pw
`, "ldapadd")
	e.waitAccount("david", "handed over to the re-added entry, enabled, its password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "other-pw" && a.Contact["lastName"] == "Other"
	})
	lines = waitAudit(t, audit, "handed over", "david")
	if !slices.ContainsFunc(lines, func(l map[string]any) bool {
		r, _ := l["reason"].(string)
		return l["action"] == "handed over" && strings.Contains(r, "re-added")
	}) {
		t.Errorf("no audit line says the account was handed over to the re-added entry: %v", lines)
	}

	// postmaster is protected: a directory entry of that name deleted does
	// not disable it, and the audit log says so.
	e.asAdmin(`dn: uid=postmaster,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: postmaster
cn: Postmaster
sn: Postmaster
`, "ldapadd")
	e.asAdmin("", "ldapdelete", userDN("postmaster"))
	lines = waitAudit(t, audit, "kept", "postmaster")
	if a, ok := e.sim.Account(mirrorDomain, "postmaster"); !ok || !a.Enabled {
		t.Errorf("postmaster after its entry's delete: %+v, %v; want present and enabled", a, ok)
	}
	if !slices.ContainsFunc(lines, func(l map[string]any) bool {
		return l["account"] == "postmaster" && strings.Contains(l["reason"].(string), "protected")
	}) {
		t.Errorf("no audit line says postmaster is protected: %v", lines)
	}
	if rm := sentCommands(e.sim, "REMOVE Account"); len(rm) > 0 {
		t.Errorf("REMOVE Account sent with onAccountDelete=disable: %q", rm)
	}
}

// With the shortest grace, an account still absent when it ends is removed:
// a journal record (actor "ldapgate: delete-after") and an audit line say so.
func TestMirrorDeleteGraceExpires(t *testing.T) {
	// Mostly waiting (a grace, a hold past holdPatience): alongside the
	// other tests that mostly wait, at the end of the package's run.
	t.Parallel()
	e, audit := newDeleteEnv(t, "--delete-after", "1m") // the shortest grace accepted
	addDave(e)
	e.asAdmin("", "ldapdelete", userDN("dave"))
	e.waitAccount("dave", "disabled", accountIs(false, "dave-pw"))
	waitFor(t, 2*time.Minute, "account dave removed after its grace", func() error {
		if _, ok := e.sim.Account(mirrorDomain, "dave"); ok {
			return fmt.Errorf("still there")
		}
		return nil
	})
	waitAudit(t, audit, "removed", "dave")
	if a, ok := e.sim.Account(mirrorDomain, "postmaster"); !ok || !a.Enabled {
		t.Errorf("postmaster: %+v, %v", a, ok)
	}
	e.waitDrained(10*time.Second, false)
	e.stop()
	var expiry []store.Record
	for _, r := range e.journalRecords() {
		if r.Actor == "ldapgate: delete-after" {
			expiry = append(expiry, r)
		}
	}
	if len(expiry) != 1 || expiry[0].Name != "dave" || expiry[0].State != store.StateDelivered {
		t.Fatalf("journal records of the grace's removal: %+v; want one, of dave, delivered", expiry)
	}
}

// onAccountDelete=delete removes the account (today's behaviour, chosen);
// ignore leaves it enabled. Neither touches postmaster.
func TestMirrorDeleteActions(t *testing.T) {
	t.Run("delete", func(t *testing.T) {
		e, audit := newDeleteEnv(t, "--on-account-delete", "delete")
		addDave(e)
		e.asAdmin("", "ldapdelete", userDN("dave"))
		e.waitAccount("dave", "removed", func(_ axigensim.AccountState, ok bool) bool { return !ok })
		waitAudit(t, audit, "removed", "dave")
	})
	t.Run("ignore", func(t *testing.T) {
		e, audit := newDeleteEnv(t, "--on-account-delete", "ignore")
		addDave(e)
		e.asAdmin("", "ldapdelete", userDN("dave"))
		waitAudit(t, audit, "kept", "dave")
		if a, ok := e.sim.Account(mirrorDomain, "dave"); !ok || !a.Enabled || a.Password != "dave-pw" {
			t.Errorf("dave with onAccountDelete=ignore: %+v, %v; want present and enabled", a, ok)
		}
	})
}

// resync reports extra accounts; with --remove-extra it disables them by
// default (never postmaster or a protected account), removes them with
// --on-account-delete delete; --dry-run lists each with the reason and
// changes nothing.
func TestResyncRemoveExtraDisables(t *testing.T) {
	e, audit := newDeleteEnv(t)
	for _, n := range []string{"stray1", "stray2"} {
		e.sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: n, Password: "x", Contact: map[string]string{}})
	}
	resync := func(extra ...string) string {
		t.Helper()
		args := append([]string{"resync"}, e.args[1:]...)
		args = append(args, "--log-level", "warn")
		return runLdapgate(t, 2*time.Minute, append(args, extra...)...)
	}
	state := func(name string) (present, enabled bool) {
		a, ok := e.sim.Account(mirrorDomain, name)
		return ok, a.Enabled
	}
	allEnabled := func(when string) {
		t.Helper()
		for _, n := range []string{"postmaster", "stray1", "stray2"} {
			if p, en := state(n); !p || !en {
				t.Fatalf("%s: %s is present=%v enabled=%v; want present and enabled", when, n, p, en)
			}
		}
	}

	out := resync("--on-account-delete", "disable")
	for _, n := range []string{"postmaster", "stray1", "stray2"} {
		if !strings.Contains(out, "extra account in Axigen (not in the directory): "+n) {
			t.Errorf("resync does not report %s:\n%s", n, out)
		}
	}
	allEnabled("after a resync without --remove-extra")

	out = resync("--on-account-delete", "disable", "--remove-extra", "--dry-run", "--protected-account", "stray2")
	for _, want := range []string{
		"would be disabled: stray1 (not in the directory)",
		"would be kept: stray2 (protected account)",
		"would be kept: postmaster (protected account)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run does not say %q:\n%s", want, out)
		}
	}
	allEnabled("after a dry run")

	resync("--on-account-delete", "disable", "--remove-extra")
	// The command line's resync writes the audit log too.
	waitAudit(t, audit, "disabled", "stray1")
	for n, wantEnabled := range map[string]bool{"postmaster": true, "stray1": false, "stray2": false} {
		if p, en := state(n); !p || en != wantEnabled {
			t.Errorf("after --remove-extra: %s present=%v enabled=%v; want present, enabled=%v", n, p, en, wantEnabled)
		}
	}

	out = resync("--on-account-delete", "delete", "--remove-extra", "--dry-run")
	if !strings.Contains(out, "would be removed: stray1 (not in the directory)") {
		t.Errorf("dry run with delete does not list the removal:\n%s", out)
	}
	resync("--on-account-delete", "delete", "--remove-extra")
	for n, wantPresent := range map[string]bool{"postmaster": true, "stray1": false, "stray2": false} {
		if p, _ := state(n); p != wantPresent {
			t.Errorf("after --remove-extra with delete: %s present=%v, want %v", n, p, wantPresent)
		}
	}
}

// Locking the account in the directory (the mapping's disabled attribute:
// AD's userAccountControl, OpenLDAP's pwdAccountLockedTime with ppolicy;
// here employeeType, since the test slapd has no ppolicy) disables it in
// Axigen, mail kept; unlocking enables it. postmaster is never disabled.
func TestMirrorLockedAccountDisabled(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(cfg, []byte("mirror:\n  schema:\n    disabled:\n      attribute: employeeType\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, audit := newDeleteEnv(t, "--config", cfg)
	addDave(e)
	lock := func(dn string) {
		e.asAdmin("dn: "+dn+"\nchangetype: modify\nreplace: employeeType\nemployeeType: locked\n", "ldapmodify")
	}
	lock(userDN("dave"))
	e.waitAccount("dave", "disabled while locked", func(a axigensim.AccountState, ok bool) bool {
		return ok && !a.Enabled && a.Contact["lastName"] == "Dent"
	})
	e.asAdmin("dn: "+userDN("dave")+"\nchangetype: modify\ndelete: employeeType\n", "ldapmodify")
	e.waitAccount("dave", "enabled once unlocked", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Contact["lastName"] == "Dent"
	})

	// A lock the directory makes by itself (ppolicy after failed binds)
	// never passes the gateway: resync disables the account.
	runTool(t, "dn: "+userDN("dave")+"\nchangetype: modify\nreplace: employeeType\nemployeeType: locked\n",
		"ldapmodify", "-x", "-H", e.dir.URL, "-D", e.dir.RootDN, "-w", e.dir.RootPW)
	out := runLdapgate(t, time.Minute, append(append([]string{"resync"}, e.args[1:]...), "--dry-run")...)
	if !strings.Contains(out, "account disabled or locked in the directory, would be disabled in Axigen: dave") {
		t.Errorf("the dry run does not list the locked account:\n%s", out)
	}
	if a, _ := e.sim.Account(mirrorDomain, "dave"); !a.Enabled {
		t.Fatal("the dry run disabled dave")
	}
	runLdapgate(t, time.Minute, append([]string{"resync"}, e.args[1:]...)...)
	if a, ok := e.sim.Account(mirrorDomain, "dave"); !ok || a.Enabled || a.Contact["lastName"] != "Dent" {
		t.Errorf("dave after a resync of its lock: %+v, %v; want present and disabled", a, ok)
	}

	e.asAdmin(`dn: uid=postmaster,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: postmaster
cn: Postmaster
sn: Postmaster
employeeType: locked
`, "ldapadd")
	waitAudit(t, audit, "kept", "postmaster")
	if a, ok := e.sim.Account(mirrorDomain, "postmaster"); !ok || !a.Enabled || a.Password != "pm-pw" {
		t.Errorf("postmaster with a locked entry: %+v, %v; want present and enabled, its password kept", a, ok)
	}
}

// A lock the gateway disabled an account for, then lifted inside the
// directory (a ppolicy lock expires there, no write passes the gateway),
// is lifted in Axigen by serve's own resync; an account disabled in Axigen
// by an admin stays so.
func TestMirrorExpiredLockEnabledByResync(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(cfg, []byte("mirror:\n  schema:\n    disabled:\n      attribute: employeeType\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, audit := newDeleteEnv(t, "--config", cfg, "--resync-interval", "1s")
	e.sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: "alice", Password: "x", Contact: map[string]string{}, Services: []string{}})
	addDave(e)
	e.asAdmin("dn: "+userDN("dave")+"\nchangetype: modify\nreplace: employeeType\nemployeeType: locked\n", "ldapmodify")
	e.waitAccount("dave", "disabled while locked", func(a axigensim.AccountState, ok bool) bool { return ok && !a.Enabled })
	runTool(t, "dn: "+userDN("dave")+"\nchangetype: modify\ndelete: employeeType\n",
		"ldapmodify", "-x", "-H", e.dir.URL, "-D", e.dir.RootDN, "-w", e.dir.RootPW)
	waitFor(t, 30*time.Second, "dave enabled by the resync", func() error {
		if a, ok := e.sim.Account(mirrorDomain, "dave"); !ok || !a.Enabled {
			return fmt.Errorf("dave: %+v, %v", a, ok)
		}
		return nil
	})
	waitAudit(t, audit, "enabled", "dave")
	if a, _ := e.sim.Account(mirrorDomain, "alice"); a.Enabled {
		t.Error("the resync enabled alice, disabled in Axigen by someone else")
	}
}

// Deleting one of two password values, or adding a new one and deleting
// the old in one modify, leaves a password: the account stays enabled.
func TestMirrorDeletePasswordValueKeepsAccount(t *testing.T) {
	e, _ := newDeleteEnv(t)
	addDave(e)
	e.asAdmin("dn: "+userDN("dave")+"\nchangetype: modify\nadd: userPassword\nuserPassword: second-pw\n", "ldapmodify")
	e.waitAccount("dave", "the added password set", accountIs(true, "second-pw"))
	e.asAdmin("dn: "+userDN("dave")+"\nchangetype: modify\ndelete: userPassword\nuserPassword: dave-pw\n", "ldapmodify")
	e.asAdmin("dn: "+userDN("dave")+"\nchangetype: modify\nadd: userPassword\nuserPassword: third-pw\n-\ndelete: userPassword\nuserPassword: second-pw\n", "ldapmodify")
	e.waitAccount("dave", "the new password set, still enabled", accountIs(true, "third-pw"))
	e.waitDrained(10*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "dave"); !accountIs(true, "third-pw")(a, ok) {
		t.Errorf("dave after deleting single password values: %+v, %v; want enabled", a, ok)
	}
}

// runLdapgate runs the built binary with args, at most timeout, and
// returns what it printed (standard output and error); it must exit 0.
func runLdapgate(t testing.TB, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ldapgate %s: %v\n%s", strings.Join(args, " "), err, lastLines(string(out), 30))
	}
	return string(out)
}
