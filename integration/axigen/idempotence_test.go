package axigen

import (
	"regexp"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// readOnly matches the commands that change nothing in Axigen: entering a
// context, LIST, SHOW, and BACK (which discards).
var readOnly = regexp.MustCompile(`^(UPDATE Domain name |LIST |UPDATE Account name |UPDATE Group name |SHOW|CONFIG ContactInfo$|BACK$)`)

func changing(cmds []string) []string {
	var out []string
	for _, c := range cmds {
		if !readOnly.MatchString(c) {
			out = append(out, c)
		}
	}
	return out
}

// TestApplyTwiceSendsNothing: the second apply of the same desired state
// plans nothing and sends only reads (no ADD, REMOVE, SET, DONE, COMMIT).
func TestApplyTwiceSendsNothing(t *testing.T) {
	e := newEnv(t, 1)
	ctx := testCtx(t)
	acct := withoutPassword(john)
	renamed := acct
	renamed.Name = "johnny"
	grp := schema.Group{Name: "team", Members: []string{"john@example.com", "jane@example.com"}}
	steps := []struct {
		name  string
		apply func() (*Plan, error)
	}{
		{"create account", func() (*Plan, error) { return e.client.ApplyAccount(ctx, testDomain, acct, "") }},
		{"rename account", func() (*Plan, error) { return e.client.ApplyAccount(ctx, testDomain, renamed, "john") }},
		{"create group", func() (*Plan, error) { return e.client.ApplyGroup(ctx, testDomain, grp, "") }},
		{"delete account", func() (*Plan, error) { return e.client.DeleteAccount(ctx, testDomain, "johnny") }},
		{"delete group", func() (*Plan, error) { return e.client.DeleteGroup(ctx, testDomain, "team") }},
	}
	for _, st := range steps {
		first, err := st.apply()
		if err != nil || first.Empty() {
			t.Fatalf("%s, first time: plan %v, %v", st.name, first, err)
		}
		before := e.commandCounts()
		second, err := st.apply()
		if err != nil {
			t.Fatalf("%s, second time: %v", st.name, err)
		}
		if !second.Empty() {
			t.Errorf("%s, second time: plan %q", st.name, second.Lines())
		}
		sent := e.commandsSince(before)
		if len(sent) == 0 {
			t.Errorf("%s, second time: no reads at all", st.name)
		}
		if ch := changing(sent); len(ch) != 0 {
			t.Errorf("%s, second time sent %q", st.name, ch)
		}
	}
}

// TestApplyWithPasswordAlwaysSetsIt documents the one exception: Axigen
// never shows a password, so a desired password is set on every apply, and
// it is the only command sent.
func TestApplyWithPasswordAlwaysSetsIt(t *testing.T) {
	e := newEnv(t, 1)
	ctx := testCtx(t)
	if _, err := e.client.ApplyAccount(ctx, testDomain, john, ""); err != nil {
		t.Fatal(err)
	}
	before := e.commandCounts()
	p, err := e.client.ApplyAccount(ctx, testDomain, john, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`UPDATE Account name "john"`, "SET password ***", "COMMIT"}
	if strings.Join(p.Lines(), "\n") != strings.Join(want, "\n") {
		t.Errorf("plan %q, want %q", p.Lines(), want)
	}
	if ch := changing(e.commandsSince(before)); strings.Join(ch, "\n") != `SET password "s3cret"`+"\nCOMMIT" {
		t.Errorf("sent %q", ch)
	}
}

// TestConvergesAfterDroppedConnection cuts the connection at every point
// of an apply in turn. The interrupted apply fails with a temporary
// connection error; the next apply (on a fresh connection the pool dials)
// reaches the desired state; the one after sends nothing.
func TestConvergesAfterDroppedConnection(t *testing.T) {
	type scenario struct {
		name    string
		setup   func(*axigensim.Server)
		apply   func(*env) (*Plan, error)
		reached func(*axigensim.Server) bool
		// settled is what the apply after convergence still plans: only
		// the password, which Axigen cannot show, when one is desired.
		settled []string
	}
	scenarios := []scenario{
		{
			name: "create account",
			apply: func(e *env) (*Plan, error) {
				return e.client.ApplyAccount(testCtx(t), testDomain, john, "")
			},
			reached: func(sim *axigensim.Server) bool {
				a, ok := sim.Account(testDomain, "john")
				return ok && a.Password == "s3cret" && mapsEqual(a.Contact, john.Contact)
			},
			settled: []string{`UPDATE Account name "john"`, "SET password ***", "COMMIT"},
		},
		{
			name:  "rename and edit account",
			setup: putJohn,
			apply: func(e *env) (*Plan, error) {
				a := withoutPassword(john)
				a.Name = "johnny"
				return e.client.ApplyAccount(testCtx(t), testDomain, a, "john")
			},
			reached: func(sim *axigensim.Server) bool {
				_, old := sim.Account(testDomain, "john")
				a, ok := sim.Account(testDomain, "johnny")
				return !old && ok && mapsEqual(a.Contact, john.Contact)
			},
		},
		{
			name:  "group members",
			setup: putTeam,
			apply: func(e *env) (*Plan, error) {
				return e.client.ApplyGroup(testCtx(t), testDomain, schema.Group{Name: "crew", Members: []string{"zoe@example.com", "john@example.com"}}, "team")
			},
			reached: func(sim *axigensim.Server) bool {
				_, old := sim.Group(testDomain, "team")
				g, ok := sim.Group(testDomain, "crew")
				return !old && ok && len(g.Members) == 2 && strings.EqualFold(strings.Join(dedupFold(g.Members), ","), "john@example.com,zoe@example.com")
			},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			// How many commands one clean apply takes, login included.
			clean := newEnv(t, 1)
			if sc.setup != nil {
				sc.setup(clean.sim)
			}
			if _, err := sc.apply(clean); err != nil {
				t.Fatal(err)
			}
			total := len(clean.sim.Transcript(1).Commands())
			for n := 0; n < total; n++ {
				e := newEnv(t, 1)
				if sc.setup != nil {
					sc.setup(e.sim)
				}
				e.sim.DropAfter(n)
				_, err := sc.apply(e)
				if err == nil {
					t.Fatalf("drop after %d commands: apply succeeded", n)
				}
				if !IsTemporary(err) || KindOf(err) != KindConnection {
					t.Fatalf("drop after %d commands: %v is not a temporary connection error", n, err)
				}
				if _, err := sc.apply(e); err != nil {
					t.Fatalf("drop after %d commands: retry: %v", n, err)
				}
				if !sc.reached(e.sim) {
					t.Fatalf("drop after %d commands: desired state not reached", n)
				}
				if p, err := sc.apply(e); err != nil || strings.Join(p.Lines(), "\n") != strings.Join(sc.settled, "\n") {
					t.Fatalf("drop after %d commands: third apply %v, %v", n, p, err)
				}
			}
		})
	}
}
