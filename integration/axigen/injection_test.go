package axigen

import (
	"bufio"
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

var injections = []string{
	"x\r\nREMOVE Account name \"victim\"",
	"x\nREMOVE Account name \"victim\"",
	"x\rREMOVE Account name \"victim\"",
	"x\"\r\nREMOVE Account name \"victim\"\r\n",
	"x\x00\r\nREMOVE Account name \"victim\"",
	"x\u2028REMOVE Account name \"victim\"",
}

// TestInjectionIsRefused tries to smuggle "REMOVE Account" into every value
// the client sends. Each attempt must fail with a permanent unsafe-value
// error naming the field, before anything is sent: the simulator sees no
// session at all, and the victim account survives.
func TestInjectionIsRefused(t *testing.T) {
	e := newEnv(t, 1)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "victim", Password: "v"})
	ctx := testCtx(t)
	for _, inj := range injections {
		ops := []struct {
			field string
			run   func() error
		}{
			{"contact.firstName", func() error {
				_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Contact: map[string]string{"firstName": inj}}, "")
				return err
			}},
			{"account name", func() error {
				_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: inj}, "")
				return err
			}},
			{"password", func() error {
				_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Password: inj}, "")
				return err
			}},
			{"previous account name", func() error {
				_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john"}, inj)
				return err
			}},
			{"domain", func() error {
				_, err := e.client.ApplyAccount(ctx, inj, schema.Account{Name: "john"}, "")
				return err
			}},
			{"group name", func() error {
				_, err := e.client.ApplyGroup(ctx, testDomain, schema.Group{Name: inj}, "")
				return err
			}},
			{"member address", func() error {
				_, err := e.client.ApplyGroup(ctx, testDomain, schema.Group{Name: "team", Members: []string{"a@example.com", inj}}, "")
				return err
			}},
			{"account name", func() error {
				_, err := e.client.DeleteAccount(ctx, testDomain, inj)
				return err
			}},
			{"account name", func() error {
				_, _, err := e.client.ReadAccount(ctx, testDomain, inj)
				return err
			}},
			{"value", func() error {
				_, err := NewCommand(Keyword("SET firstName"), Value("value", inj))
				return err
			}},
			{"password", func() error {
				cfg := e.cfg
				cfg.Password = inj
				_, err := Dial(ctx, cfg)
				return err
			}},
		}
		for _, op := range ops {
			err := op.run()
			var ae *Error
			if !errors.As(err, &ae) || ae.Kind != KindUnsafeValue || !errors.Is(err, ErrUnsafeValue) || IsTemporary(err) {
				t.Fatalf("%s = %q: got %v, want a permanent unsafe-value error", op.field, inj, err)
			}
			if ae.Field != op.field || !strings.Contains(err.Error(), op.field) {
				t.Errorf("%s = %q: error %q does not name the field", op.field, inj, err)
			}
			if strings.Contains(err.Error(), "victim") {
				t.Errorf("error %q repeats the refused value", err)
			}
		}
	}
	if n := e.sim.SessionCount(); n != 0 {
		t.Errorf("%d sessions reached the simulator; refused values must be refused before connecting", n)
	}
	if _, ok := e.sim.Account(testDomain, "victim"); !ok {
		t.Fatal("the victim account was removed")
	}
}

// TestInjectionIsRefusedMidSession: a refused value in a later apply on a
// live session sends nothing either: the session's transcript has no
// REMOVE and no command after the first apply's.
func TestInjectionIsRefusedMidSession(t *testing.T) {
	e := newEnv(t, 1)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "victim", Password: "v"})
	ctx := testCtx(t)
	if _, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john"}, ""); err != nil {
		t.Fatal(err)
	}
	before := e.commandCounts()
	for _, inj := range injections {
		_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Contact: map[string]string{"lastName": inj}}, "")
		if KindOf(err) != KindUnsafeValue {
			t.Fatalf("lastName %q: %v", inj, err)
		}
	}
	if sent := e.commandsSince(before); len(sent) != 0 {
		t.Errorf("commands sent for refused values: %q", sent)
	}
	removes := regexp.MustCompile(`(?i)^\s*remove`)
	for _, tr := range e.sim.Transcripts() {
		for _, c := range tr.Commands() {
			if removes.MatchString(c) {
				t.Errorf("session %d sent %q", tr.ID, c)
			}
		}
	}
	if _, ok := e.sim.Account(testDomain, "victim"); !ok {
		t.Fatal("the victim account was removed")
	}
}

// TestSimulatorSeesRawInjection is the control for the tests above: a
// client that does not check its values really does run a second command
// on the simulator, so the tests above would catch an injection.
func TestSimulatorSeesRawInjection(t *testing.T) {
	e := newEnv(t, 1)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "victim", Password: "v"})
	conn, err := net.DialTimeout("tcp", e.sim.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	expect := func(prompt string) {
		t.Helper()
		var got strings.Builder
		for !strings.HasSuffix(got.String(), prompt) {
			b, err := r.ReadByte()
			if err != nil {
				t.Fatalf("waiting for %q after %q: %v", prompt, got.String(), err)
			}
			got.WriteByte(b)
		}
	}
	send := func(s string) {
		if _, err := conn.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	expect("<login> ")
	send("USER admin\r\n")
	expect("<password> ")
	send(testPassword + "\r\n")
	expect("<#> ")
	send("UPDATE Domain name \"example.com\"\r\n")
	expect("<domain#> ")
	send("LIST Accounts \"x\r\nREMOVE Account name \"victim\"\r\n")
	expect("<domain#> ")
	expect("<domain#> ")
	if _, ok := e.sim.Account(testDomain, "victim"); ok {
		t.Fatal("a raw line break did not start a second command")
	}
	cmds := e.sim.Transcript(1).Commands()
	if cmds[len(cmds)-1] != `REMOVE Account name "victim"` {
		t.Fatalf("transcript commands %q", cmds)
	}
}
