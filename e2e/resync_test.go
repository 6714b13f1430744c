package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

// TestResync brings an empty Axigen in line with a directory of 10,000
// users and 200 groups, finds nothing to do the second time, and after
// random drift its dry run lists exactly the drifted entries.
func TestResync(t *testing.T) {
	users, groups := 10000, 200
	if testing.Short() {
		users, groups = 500, 20
	}
	dir := slapd.StartT(t, slapd.Options{Users: users, Groups: groups})
	sim := axigensim.New(axigensim.Options{
		Admins:  map[string]string{mirrorAxigenAdmin: mirrorAxigenPW},
		Domains: []string{mirrorDomain},
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); sim.Close() })
	if err := sim.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mapping, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP,
		AccountBase: schema.DNList{mirrorAccountBase}, GroupBase: schema.DNList{mirrorGroupBase}})
	if err != nil {
		t.Fatal(err)
	}
	env := &mirrorEnv{t: t, dir: dir, sim: sim, mapping: mapping, known: map[string]string{}}

	root := t.TempDir()
	axPW, svcPW := filepath.Join(root, "axigen.pw"), filepath.Join(root, "service.pw")
	for path, pw := range map[string]string{axPW: mirrorAxigenPW, svcPW: dir.RootPW} {
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	resync := func(extra ...string) string {
		t.Helper()
		args := append([]string{"resync", "--upstream", dir.URL, "--data-dir", filepath.Join(root, "data"),
			"--axigen", sim.Addr(), "--axigen-user", mirrorAxigenAdmin, "--axigen-password-file", axPW,
			"--axigen-domain", mirrorDomain, "--account-base", mirrorAccountBase, "--group-base", mirrorGroupBase,
			"--service-dn", dir.RootDN, "--service-password-file", svcPW, "--admin-dn", dir.RootDN,
			"--log-level", "warn"}, extra...)
		// A resync of 10,000 entries takes tens of seconds on a busy machine:
		// longer than runTool allows an ldap-utils command.
		return runLdapgate(t, 4*time.Minute, args...)
	}

	start := time.Now()
	out := resync()
	took := time.Since(start)
	t.Logf("resync of %d users and %d groups into an empty Axigen: %s", users, groups, took.Round(time.Millisecond))
	wantAccounts, wantGroups := users+3, groups+2 // plus the sample alice, bob, carol, staff, admins
	if got := len(sim.Accounts(mirrorDomain)); got != wantAccounts {
		t.Fatalf("Axigen has %d accounts, want %d\n%s", got, wantAccounts, lastLines(out, 20))
	}
	if got := len(sim.Groups(mirrorDomain)); got != wantGroups {
		t.Fatalf("Axigen has %d groups, want %d", got, wantGroups)
	}
	if err := env.checkMirrored(false); err != nil {
		t.Fatalf("after the first resync: %v", err)
	}
	if !testing.Short() && took > 60*time.Second {
		t.Errorf("resync of %d users took %s, want under 60 s", users, took)
	}

	out = resync()
	if !strings.Contains(out, "brought in line 0 in Axigen") {
		t.Fatalf("second resync was not a no-op:\n%s", lastLines(out, 20))
	}

	// Drift: three accounts lose or change contact fields, one group loses
	// a member, an account appears that the directory lacks.
	drifted := []string{slapd.UserUID(7), slapd.UserUID(123), "bob"}
	for i, name := range drifted {
		a, ok := sim.Account(mirrorDomain, name)
		if !ok {
			t.Fatalf("no account %s", name)
		}
		if i%2 == 0 {
			a.Contact["phone"] = "+0 000 drift"
		} else {
			delete(a.Contact, "lastName")
		}
		sim.PutAccount(mirrorDomain, a)
	}
	g, ok := sim.Group(mirrorDomain, "staff")
	if !ok || len(g.Members) == 0 {
		t.Fatalf("group staff: %+v", g)
	}
	g.Members = g.Members[1:]
	sim.PutGroup(mirrorDomain, g)
	sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: "stray", Password: "x", Contact: map[string]string{}})

	out = resync("--dry-run")
	objects := regexp.MustCompile(`(?m)^# (.*)$`).FindAllStringSubmatch(out, -1)
	var got []string
	for _, m := range objects {
		got = append(got, m[1])
	}
	want := []string{`account "bob"`, `account "` + slapd.UserUID(123) + `"`, `account "` + slapd.UserUID(7) + `"`, `group "staff"`}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("dry run lists %q, want exactly the drift %q\n%s", got, want, out)
	}
	if !strings.Contains(out, "extra account in Axigen (not in the directory): stray") {
		t.Errorf("the stray account is not reported:\n%s", lastLines(out, 10))
	}
	if !strings.Contains(out, `SET phone "`) || !strings.Contains(out, `ADD Address "`) {
		t.Errorf("the dry run does not show the commands that close the drift:\n%s", out)
	}
	// Dry run sent nothing: the drift is still there.
	if a, _ := sim.Account(mirrorDomain, slapd.UserUID(7)); a.Contact["phone"] != "+0 000 drift" {
		t.Fatal("the dry run changed Axigen")
	}

	out = resync("--remove-extra", "--on-account-delete", "delete")
	if _, ok := sim.Account(mirrorDomain, "stray"); ok {
		t.Fatalf("--remove-extra left the stray account\n%s", lastLines(out, 10))
	}
	if err := env.checkMirrored(false); err != nil {
		t.Fatalf("after the drift was resynced: %v", err)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
