package axigen

import (
	"errors"
	"fmt"
	"sync"
	"testing"

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
