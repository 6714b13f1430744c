package axigen

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// TestPoolConcurrentApplies: many goroutines share a pool of 4 sessions;
// every desired state lands, and no more than 4 sessions are opened.
func TestPoolConcurrentApplies(t *testing.T) {
	e := newEnv(t, 4)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("user%02d", i)
			a := schema.Account{Name: name, Contact: map[string]string{"firstName": name, "lastName": "Doe"}}
			if _, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err != nil {
				errs <- err
				return
			}
			g := schema.Group{Name: "g" + name, Members: []string{name + "@example.com"}}
			if _, err := e.client.ApplyGroup(ctx, testDomain, g, ""); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(e.sim.Accounts(testDomain)); n != 32 {
		t.Errorf("%d accounts, want 32", n)
	}
	if n := len(e.sim.Groups(testDomain)); n != 32 {
		t.Errorf("%d groups, want 32", n)
	}
	if n := e.sim.SessionCount(); n < 1 || n > 4 {
		t.Errorf("%d sessions opened for a pool of 4", n)
	}
	names, err := e.client.ListAccounts(ctx, testDomain)
	if err != nil || len(names) != 32 {
		t.Errorf("list: %d names, %v", len(names), err)
	}
}

// TestPoolClosed: after Close, With fails with a connection error and
// sessions are ended with EXIT.
func TestPoolClosed(t *testing.T) {
	e := newEnv(t, 2)
	ctx := testCtx(t)
	if _, err := e.client.ListGroups(ctx, testDomain); err != nil {
		t.Fatal(err)
	}
	e.pool.Close()
	_, err := e.client.ListGroups(ctx, testDomain)
	if KindOf(err) != KindConnection || !errors.Is(err, errPoolClosed) {
		t.Fatalf("after close: %v", err)
	}
	cmds := e.sim.Transcript(1).Commands()
	if cmds[len(cmds)-1] != "EXIT" {
		t.Errorf("session not ended with EXIT: %q", cmds)
	}
}

// TestPoolParksSessionsInTheDomain: a session stays in the context of the
// domain it was used in, so the next operation on that domain goes
// straight on; an operation on another domain leaves it first, and a
// failed one backs out to the root. Every change is saved all the same.
func TestPoolParksSessionsInTheDomain(t *testing.T) {
	e := newEnv(t, 1)
	e.pool.domainHold = time.Hour // set to 0 below
	e.sim.AddDomain("other.example")
	putJohn(e.sim)
	ctx := testCtx(t)
	step := func(what string, apply func() error, want ...string) {
		t.Helper()
		before := e.commandCounts()
		if err := apply(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := e.commandsSince(before); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s sent:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	phone := func(v string) func() error {
		return func() error {
			a := withoutPassword(john)
			a.Contact = maps.Clone(john.Contact)
			a.Contact["phone"] = v
			_, err := e.client.ApplyAccount(ctx, testDomain, a, "")
			return err
		}
	}
	read := []string{`LIST Accounts "john"`, `UPDATE Account name "john"`, "SHOW RegistryInformation", "CONFIG ContactInfo", "SHOW"}
	set := func(v string) []string {
		return append(slices.Clone(read), `SET phone "`+v+`"`, "DONE", "COMMIT")
	}
	step("first update", phone("+40 21 111"), append([]string{`UPDATE Domain name "example.com"`}, set("+40 21 111")...)...)
	step("second update", phone("+40 21 222"), set("+40 21 222")...)
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["phone"] != "+40 21 222" {
		t.Errorf("phone after the updates: %q", a.Contact["phone"])
	}
	step("list in another domain", func() error { _, err := e.client.ListAccounts(ctx, "other.example"); return err },
		"BACK", `UPDATE Domain name "other.example"`, "LIST Accounts")
	step("back to the first domain", phone("+40 21 333"),
		append([]string{"BACK", `UPDATE Domain name "example.com"`}, set("+40 21 333")...)...)

	e.sim.FailMatching(regexp.MustCompile(`^SET phone`), "Permission denied")
	if err := phone("+40 21 444")(); KindOf(err) != KindServer {
		t.Fatalf("failing update: %v", err)
	}
	e.sim.ClearFaults()
	cmds := e.sim.Transcript(1).Commands()
	if tail := strings.Join(cmds[len(cmds)-4:], ","); tail != `SET phone "+40 21 444",DONE,BACK,BACK` {
		t.Errorf("the failed update did not back out to the root: %q", cmds[len(cmds)-4:])
	}
	step("update after a failure", phone("+40 21 555"), append([]string{`UPDATE Domain name "example.com"`}, set("+40 21 555")...)...)
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["phone"] != "+40 21 555" {
		t.Errorf("phone at the end: %q", a.Contact["phone"])
	}

	// A session that entered the domain longer ago than the hold enters
	// it afresh.
	e.pool.domainHold = 0
	step("update after the hold", phone("+40 21 666"),
		append([]string{"BACK", `UPDATE Domain name "example.com"`}, set("+40 21 666")...)...)
	if n := e.sim.SessionCount(); n != 1 {
		t.Errorf("%d sessions for a pool of 1", n)
	}
}
