package axigen

import (
	"context"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata")

// documentedCommands are the command forms docs/axigen-cli.md shows (its
// recipes and lookups), with every value in the double-quoted form. Each
// command the client sends in the golden transcripts must match one.
var documentedCommands = func() []*regexp.Regexp {
	q := `"(?:[^"\\]|\\["\\])*"`
	forms := []string{
		`USER [A-Za-z0-9._@-]+`,
		`UPDATE Domain name ` + q,
		`LIST Accounts(?: ` + q + `)?`,
		`LIST Groups(?: ` + q + `)?`,
		`ADD Account name ` + q + ` password ` + q,
		`UPDATE Account name ` + q,
		`REMOVE Account name ` + q,
		`SET name ` + q,
		`SET password ` + q,
		`SHOW RegistryInformation`,
		`CONFIG ContactInfo`,
		`SET (?:` + strings.Join(schema.ContactFields, "|") + `) ` + q,
		`SHOW`,
		`ADD Group name ` + q,
		`UPDATE Group name ` + q,
		`REMOVE Group name ` + q,
		`ADD Address ` + q,
		`REMOVE Address ` + q,
		`LIST Addresses`,
		`CONFIG Limits`,
		`SET services \(\)`,
		`RESET services`,
		`DONE`, `COMMIT`, `BACK`, `EXIT`,
	}
	out := make([]*regexp.Regexp, len(forms))
	for i, f := range forms {
		out[i] = regexp.MustCompile(`^` + f + `$`)
	}
	return out
}()

func isDocumented(cmd string) bool {
	for _, re := range documentedCommands {
		if re.MatchString(cmd) {
			return true
		}
	}
	return false
}

func fixedPassword() (string, error) { return "generated-pw", nil }

var john = schema.Account{
	Name:     "john",
	Password: "s3cret",
	Contact: managed(map[string]string{
		"firstName":     "John",
		"lastName":      `O'Brien "Jr" \ Doe`,
		"businessEmail": "john@example.com",
		"homeAddress":   "Straße 1, Köln",
	}),
}

// managed is a desired contact as a mapping of all eleven fields makes
// it: every field named, the ones without a value empty (cleared).
func managed(m map[string]string) map[string]string {
	out := make(map[string]string, len(schema.ContactFields))
	maps.Copy(out, m)
	for _, f := range schema.ContactFields {
		if _, ok := out[f]; !ok {
			out[f] = ""
		}
	}
	return out
}

func withoutPassword(a schema.Account) schema.Account {
	a.Password = ""
	return a
}

func putJohn(sim *axigensim.Server) {
	sim.PutAccount(testDomain, axigensim.AccountState{Name: "john", Password: "old", Contact: map[string]string{
		"firstName": "John", "lastName": `O'Brien "Jr" \ Doe`, "businessEmail": "john@example.com",
		"homeAddress": "Straße 1, Köln", "phone": "+40 21 000",
	}})
	sim.SetAssociation(testDomain, "john", "8f1c2d3e-0000-4000-8000-000000000001", "uid=john,ou=people,dc=example,dc=com")
}

func putTeam(sim *axigensim.Server) {
	sim.PutGroup(testDomain, axigensim.GroupState{Name: "team", Members: []string{"john@example.com", "jane@example.com"}})
}

// TestGoldenTranscripts runs each operation on a fresh simulator and
// compares the whole conversation, byte for byte (prompts, status lines,
// the client's lines), with testdata/<name>.golden. It also checks that
// every command the client sent is one of the forms docs/axigen-cli.md documents.
func TestGoldenTranscripts(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*axigensim.Server)
		op    func(context.Context, *Client) error
		check func(*testing.T, *axigensim.Server)
	}{
		{
			name: "account_create",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ApplyAccount(ctx, testDomain, john, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				a, ok := sim.Account(testDomain, "john")
				if !ok || a.Password != "s3cret" || a.Contact["lastName"] != john.Contact["lastName"] || len(a.Contact) != 4 {
					t.Errorf("account after create: %+v, %v", a, ok)
				}
			},
		},
		{
			name: "account_create_generated_password",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ApplyAccount(ctx, testDomain, schema.Account{Name: "jane"}, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				if a, ok := sim.Account(testDomain, "jane"); !ok || a.Password != "generated-pw" {
					t.Errorf("account after create: %+v, %v", a, ok)
				}
			},
		},
		{
			name: "account_noop",
			setup: func(sim *axigensim.Server) {
				putJohn(sim)
				sim.PutAccount(testDomain, mustAccount(sim, "john", "phone", ""))
			},
			op: func(ctx context.Context, c *Client) error {
				p, err := c.ApplyAccount(ctx, testDomain, withoutPassword(john), "")
				if err == nil && !p.Empty() {
					t.Errorf("plan for an account in its desired state: %v", p.Lines())
				}
				return err
			},
		},
		{
			name:  "account_contact",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				a := withoutPassword(john)
				a.Contact = managed(map[string]string{"firstName": "Johnny", "lastName": john.Contact["lastName"],
					"businessEmail": "john@example.com", "homeAddress": "Straße 1, Köln", "mobilePhone": "+40 700 000"})
				_, err := c.ApplyAccount(ctx, testDomain, a, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				a, _ := sim.Account(testDomain, "john")
				if a.Contact["firstName"] != "Johnny" || a.Contact["mobilePhone"] != "+40 700 000" || a.Contact["phone"] != "" || a.Password != "old" {
					t.Errorf("account after contact change: %+v", a)
				}
			},
		},
		{
			name:  "account_password",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				a := john
				a.Contact = map[string]string{"firstName": "John", "lastName": john.Contact["lastName"],
					"businessEmail": "john@example.com", "homeAddress": "Straße 1, Köln", "phone": "+40 21 000"}
				a.Password = `n3w "pass" \ word`
				_, err := c.ApplyAccount(ctx, testDomain, a, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				if a, _ := sim.Account(testDomain, "john"); a.Password != `n3w "pass" \ word` {
					t.Errorf("password after set: %q", a.Password)
				}
			},
		},
		{
			name:  "account_rename",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				a := withoutPassword(john)
				a.Name = "johnny"
				a.Contact = map[string]string{"firstName": "John", "lastName": john.Contact["lastName"],
					"businessEmail": "johnny@example.com", "homeAddress": "Straße 1, Köln", "phone": "+40 21 000"}
				_, err := c.ApplyAccount(ctx, testDomain, a, "john")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				_, old := sim.Account(testDomain, "john")
				a, ok := sim.Account(testDomain, "johnny")
				if old || !ok || a.Contact["businessEmail"] != "johnny@example.com" || a.LDAPID == "" {
					t.Errorf("after rename: old exists %v, new %+v %v", old, a, ok)
				}
			},
		},
		{
			name:  "account_delete",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.DeleteAccount(ctx, testDomain, "john")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				if _, ok := sim.Account(testDomain, "john"); ok {
					t.Error("account still there after delete")
				}
			},
		},
		{
			name: "account_delete_missing",
			op: func(ctx context.Context, c *Client) error {
				p, err := c.DeleteAccount(ctx, testDomain, "john")
				if err == nil && !p.Empty() {
					t.Errorf("plan for deleting a missing account: %v", p.Lines())
				}
				return err
			},
		},
		{
			name:  "account_read",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				st, found, err := c.ReadAccount(ctx, testDomain, "john")
				if err == nil && (!found || st.LDAPID != "8f1c2d3e-0000-4000-8000-000000000001" ||
					st.DN != "uid=john,ou=people,dc=example,dc=com" || st.Contact["lastName"] != john.Contact["lastName"] || len(st.Contact) != 5) {
					t.Errorf("read account: %+v %v", st, found)
				}
				return err
			},
		},
		{
			name: "account_list",
			setup: func(sim *axigensim.Server) {
				putJohn(sim)
				sim.PutAccount(testDomain, axigensim.AccountState{Name: "jane"})
			},
			op: func(ctx context.Context, c *Client) error {
				names, err := c.ListAccounts(ctx, testDomain)
				if err == nil && strings.Join(names, ",") != "jane,john" {
					t.Errorf("accounts: %q", names)
				}
				return err
			},
		},
		{
			name: "group_create",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ApplyGroup(ctx, testDomain, schema.Group{Name: "team", Members: []string{"john@example.com", "jane@example.com"}}, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				if g, ok := sim.Group(testDomain, "team"); !ok || len(g.Members) != 2 {
					t.Errorf("group after create: %+v %v", g, ok)
				}
			},
		},
		{
			name:  "group_members",
			setup: putTeam,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ApplyGroup(ctx, testDomain, schema.Group{Name: "team", Members: []string{"JOHN@example.com", "zoe@example.com"}}, "")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				g, _ := sim.Group(testDomain, "team")
				if strings.Join(g.Members, ",") != "john@example.com,zoe@example.com" {
					t.Errorf("members: %q", g.Members)
				}
			},
		},
		{
			name:  "group_noop",
			setup: putTeam,
			op: func(ctx context.Context, c *Client) error {
				p, err := c.ApplyGroup(ctx, testDomain, schema.Group{Name: "team", Members: []string{"jane@example.com", "john@example.com"}}, "")
				if err == nil && !p.Empty() {
					t.Errorf("plan for a group in its desired state: %v", p.Lines())
				}
				return err
			},
		},
		{
			name:  "group_rename",
			setup: putTeam,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ApplyGroup(ctx, testDomain, schema.Group{Name: "crew", Members: []string{"jane@example.com", "john@example.com"}}, "team")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				_, old := sim.Group(testDomain, "team")
				if g, ok := sim.Group(testDomain, "crew"); old || !ok || len(g.Members) != 2 {
					t.Errorf("after rename: old %v, new %+v %v", old, g, ok)
				}
			},
		},
		{
			name:  "group_delete",
			setup: putTeam,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.DeleteGroup(ctx, testDomain, "team")
				return err
			},
			check: func(t *testing.T, sim *axigensim.Server) {
				if _, ok := sim.Group(testDomain, "team"); ok {
					t.Error("group still there after delete")
				}
			},
		},
		{
			name:  "group_read",
			setup: putTeam,
			op: func(ctx context.Context, c *Client) error {
				g, found, err := c.ReadGroup(ctx, testDomain, "team")
				if err == nil && (!found || strings.Join(g.Members, ",") != "jane@example.com,john@example.com") {
					t.Errorf("read group: %+v %v", g, found)
				}
				return err
			},
		},
		{
			name:  "account_disable_enable",
			setup: putJohn,
			op: func(ctx context.Context, c *Client) error {
				for _, enabled := range []bool{false, false, true} {
					if _, _, err := c.SetAccountEnabled(ctx, testDomain, "john", enabled); err != nil {
						return err
					}
				}
				return nil
			},
			check: func(t *testing.T, s *axigensim.Server) {
				if a, ok := s.Account(testDomain, "john"); !ok || !a.Enabled || a.Services != nil {
					t.Errorf("john after disable and enable: %+v", a)
				}
			},
		},
		{
			// An empty list in both shapes: LIST Addresses (no header) of
			// a group without members, LIST Accounts (header) of no match.
			name:  "group_read_empty",
			setup: func(s *axigensim.Server) { s.PutGroup(testDomain, axigensim.GroupState{Name: "team"}) },
			op: func(ctx context.Context, c *Client) error {
				g, found, err := c.ReadGroup(ctx, testDomain, "team")
				if err == nil && (!found || len(g.Members) != 0) {
					t.Errorf("read empty group: %+v %v", g, found)
				}
				if _, found, err := c.ReadAccount(ctx, testDomain, "nobody"); err != nil || found {
					t.Errorf("read missing account: %v %v", found, err)
				}
				return err
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1, WithPasswordGenerator(fixedPassword))
			if tc.setup != nil {
				tc.setup(e.sim)
			}
			if err := tc.op(testCtx(t), e.client); err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, e.sim)
			}
			if n := e.sim.SessionCount(); n != 1 {
				t.Fatalf("%d sessions, want 1", n)
			}
			tr := e.sim.Transcript(1)
			cmds := tr.Commands()
			for i, c := range cmds {
				if i == 1 {
					continue // the password line after USER
				}
				if !isDocumented(c) {
					t.Errorf("command %q is not a form docs/axigen-cli.md documents", c)
				}
			}
			got := tr.Bytes()
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("transcript differs from %s:\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
			}
		})
	}
}

func mustAccount(sim *axigensim.Server, name, field, value string) axigensim.AccountState {
	a, ok := sim.Account(testDomain, name)
	if !ok {
		panic("no account " + name)
	}
	if value == "" {
		delete(a.Contact, field)
	} else {
		a.Contact[field] = value
	}
	return a
}
