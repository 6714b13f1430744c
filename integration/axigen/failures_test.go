package axigen

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// TestServerErrorIsPermanentAndUnwinds: an injected -ERR comes back as a
// KindServer error that is not temporary, names the command (password
// masked) and the status; the session backs out of its contexts with BACK,
// discarding the half-made change (the DONE sent with the SETs in one round
// trip saves nothing), and is reused for the next apply.
func TestServerErrorIsPermanentAndUnwinds(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	ctx := testCtx(t)
	e.sim.FailMatching(regexp.MustCompile(`^SET mobilePhone`), "Permission denied")
	desired := withoutPassword(john)
	desired.Contact = map[string]string{"firstName": "Johnny", "mobilePhone": "+40 700"}
	_, err := e.client.ApplyAccount(ctx, testDomain, desired, "")
	var ae *Error
	if !errors.As(err, &ae) || ae.Kind != KindServer || ae.Temporary || IsTemporary(err) {
		t.Fatalf("got %v, want a permanent server error", err)
	}
	if ae.Status != "Permission denied" || ae.Cmd != `SET mobilePhone "+40 700"` || !strings.Contains(ae.Op, "john@example.com") {
		t.Errorf("error fields: %+v", ae)
	}
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["firstName"] != "John" {
		t.Errorf("half-applied change was saved: %+v", a)
	}
	// The SETs and the DONE after them went in one round trip (pipelining):
	// the DONE ran after the refused SET, then BACK discarded the account's
	// unsaved changes; no COMMIT.
	cmds := e.sim.Transcript(1).Commands()
	tail := strings.Join(cmds[len(cmds)-4:], ",")
	if tail != `SET mobilePhone "+40 700",DONE,BACK,BACK` {
		t.Errorf("session did not back out to the root: last commands %q", cmds[len(cmds)-4:])
	}
	e.sim.ClearFaults()
	if _, err := e.client.ApplyAccount(ctx, testDomain, desired, ""); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.SessionCount(); n != 1 {
		t.Errorf("%d sessions: the session should have been reused after -ERR", n)
	}
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["firstName"] != "Johnny" || a.Contact["mobilePhone"] != "+40 700" {
		t.Errorf("after retry: %+v", a)
	}
}

// TestErrorsNeverShowPasswords: an -ERR on a command with a password shows
// it masked, and so does the client's log.
func TestErrorsNeverShowPasswords(t *testing.T) {
	e := newEnv(t, 1)
	ctx := testCtx(t)
	e.sim.FailMatching(regexp.MustCompile(`(?i)password`), "nope")
	secret := "Sup3r-s3cret"
	for _, a := range []schema.Account{{Name: "new", Password: secret}} {
		_, err := e.client.ApplyAccount(ctx, testDomain, a, "")
		if KindOf(err) != KindServer || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "password ***") {
			t.Errorf("create: %v", err)
		}
	}
	putJohn(e.sim)
	_, err := e.client.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Password: secret, Contact: mustAccount(e.sim, "john", "", "").Contact}, "")
	if KindOf(err) != KindServer || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "SET password ***") {
		t.Errorf("set password: %v", err)
	}
	for _, tr := range e.sim.Transcripts() {
		if strings.Contains(tr.String(), secret) || strings.Contains(tr.String(), testPassword) {
			t.Errorf("masked transcript shows a password:\n%s", tr.String())
		}
		if !strings.Contains(tr.Bytes(), secret) {
			t.Errorf("raw transcript lacks what was sent")
		}
	}
}

// TestTimeoutIsTemporary: an answer slower than CommandTimeout gives a
// temporary KindTimeout error promptly; the pool then replaces the session.
func TestTimeoutIsTemporary(t *testing.T) {
	e := newEnv(t, 1)
	ctx := testCtx(t)
	cfg := e.cfg
	cfg.CommandTimeout = 100 * time.Millisecond
	pool := NewPool(cfg, 1)
	defer pool.Close()
	client := NewClient(pool)
	if _, err := client.ListAccounts(ctx, testDomain); err != nil {
		t.Fatal(err)
	}
	e.sim.SetLatency(2 * time.Second)
	start := time.Now()
	_, err := client.ApplyAccount(ctx, testDomain, john, "")
	if KindOf(err) != KindTimeout || !IsTemporary(err) {
		t.Fatalf("got %v, want a temporary timeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("timeout took %v", d)
	}
	e.sim.ClearFaults()
	if _, err := client.ApplyAccount(ctx, testDomain, john, ""); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.SessionCount(); n != 2 {
		t.Errorf("%d sessions, want the timed-out one replaced by a second", n)
	}
}

// TestContextEndsCommand: a caller's deadline is a temporary timeout, a
// cancellation is KindCanceled; both interrupt a command at once.
func TestContextEndsCommand(t *testing.T) {
	e := newEnv(t, 1)
	e.sim.SetLatency(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := e.client.ReadAccount(ctx, testDomain, "john")
	if KindOf(err) != KindTimeout || !IsTemporary(err) {
		t.Errorf("deadline: got %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel2)
	start := time.Now()
	_, _, err = e.client.ReadAccount(ctx2, testDomain, "john")
	if KindOf(err) != KindCanceled || IsTemporary(err) || !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancel took %v", d)
	}
}

// TestDownAndUp: with the server down, applies fail with temporary
// connection errors (refused, or cut mid-session); once it is up again the
// pool reconnects by itself.
func TestDownAndUp(t *testing.T) {
	e := newEnv(t, 2)
	ctx := testCtx(t)
	if _, err := e.client.ApplyAccount(ctx, testDomain, john, ""); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := e.client.ApplyGroup(ctx, testDomain, schema.Group{Name: "team"}, "")
		if KindOf(err) != KindConnection || !IsTemporary(err) {
			t.Fatalf("server down: got %v, want a temporary connection error", err)
		}
	}
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.ApplyGroup(ctx, testDomain, schema.Group{Name: "team"}, ""); err != nil {
		t.Fatalf("server up again: %v", err)
	}
	if _, ok := e.sim.Group(testDomain, "team"); !ok {
		t.Fatal("group not created after reconnect")
	}
}

// TestLoginFailureIsPermanent: wrong credentials are KindAuth, not
// temporary, and the error does not show the password.
func TestLoginFailureIsPermanent(t *testing.T) {
	e := newEnv(t, 1)
	cfg := e.cfg
	cfg.Password = "wr0ng-pw"
	_, err := Dial(testCtx(t), cfg)
	if KindOf(err) != KindAuth || IsTemporary(err) || strings.Contains(err.Error(), "wr0ng-pw") {
		t.Fatalf("got %v, want a permanent auth error without the password", err)
	}
}

// TestDialRefusedIsTemporary: nothing listening is a temporary connection
// error.
func TestDialRefusedIsTemporary(t *testing.T) {
	e := newEnv(t, 1)
	addr := e.sim.Addr()
	e.sim.Close()
	cfg := e.cfg
	cfg.Addr = addr
	_, err := Dial(testCtx(t), cfg)
	if KindOf(err) != KindConnection || !IsTemporary(err) {
		t.Fatalf("got %v", err)
	}
}

// TestLDAPIDConflict: an account of the desired name that another
// directory entry owns is a conflict, and nothing is changed.
func TestLDAPIDConflict(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	before := e.commandCounts()
	a := john
	a.LDAPID = "another-entry"
	_, err := e.client.ApplyAccount(testCtx(t), testDomain, a, "")
	if KindOf(err) != KindConflict || IsTemporary(err) {
		t.Fatalf("got %v, want a conflict", err)
	}
	if ch := changing(e.commandsSince(before)); len(ch) != 0 {
		t.Errorf("sent %q", ch)
	}
	a.LDAPID = "8F1C2D3E-0000-4000-8000-000000000001" // the same ID, other case
	if _, err := e.client.ApplyAccount(testCtx(t), testDomain, a, ""); err != nil {
		t.Fatal(err)
	}
}

// TestNoAssociationIsNoConflict: only Axigen's own directory sync sets an
// account's Associated LDAP ID; an account without one, whatever the server
// prints for "none", is matched by name and updated.
func TestNoAssociationIsNoConflict(t *testing.T) {
	for _, shown := range []string{"", " ", "(none)", "<none>", "None", "N/A", "-", `""`} {
		e := newEnv(t, 1)
		putJohn(e.sim)
		e.sim.SetAssociation(testDomain, "john", shown, "")
		a := john
		a.Contact = map[string]string{"firstName": "Johnny"}
		if _, err := e.client.ApplyAccount(testCtx(t), testDomain, a, ""); err != nil {
			t.Fatalf("LDAP ID shown as %q: %v", shown, err)
		}
		if got, _ := e.sim.Account(testDomain, "john"); got.Contact["firstName"] != "Johnny" {
			t.Errorf("LDAP ID shown as %q: firstName %q, want Johnny", shown, got.Contact["firstName"])
		}
	}
}

// TestPlanSendsNothing: PlanAccount and PlanGroup compute the commands an
// apply would send, and send only reads.
func TestPlanSendsNothing(t *testing.T) {
	e := newEnv(t, 1)
	putTeam(e.sim)
	ctx := testCtx(t)
	p, err := e.client.PlanAccount(ctx, testDomain, john, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Lines()) == 0 || p.Lines()[0] != `ADD Account name "john" password ***` {
		t.Errorf("plan %q", p.Lines())
	}
	g, err := e.client.PlanGroup(ctx, testDomain, schema.Group{Name: "team"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := `UPDATE Group name "team",REMOVE Address "jane@example.com",REMOVE Address "john@example.com",COMMIT`
	if strings.Join(g.Lines(), ",") != want {
		t.Errorf("group plan %q", g.Lines())
	}
	if ch := changing(e.sim.Transcript(1).Commands()[2:]); len(ch) != 0 {
		t.Errorf("planning sent %q", ch)
	}
	if _, ok := e.sim.Account(testDomain, "john"); ok {
		t.Error("planning created the account")
	}
}

// TestClientLogMasksPasswords: the client's debug log records every
// command with passwords masked, the login password included.
func TestClientLogMasksPasswords(t *testing.T) {
	e := newEnv(t, 1)
	var buf strings.Builder
	var mu sync.Mutex
	cfg := e.cfg
	cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pool := NewPool(cfg, 1)
	defer pool.Close()
	c := NewClient(pool)
	ctx := testCtx(t)
	if _, err := c.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Password: "first-pw"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyAccount(ctx, testDomain, schema.Account{Name: "john", Password: "second-pw"}, ""); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, secret := range []string{"first-pw", "second-pw", testPassword} {
		if strings.Contains(out, secret) {
			t.Errorf("log shows %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`password ***`, `SET password ***`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestServerClosesAfterMaxErrors: a server that ends the session after its
// maxErrors-th -ERR costs the client that session only: the failing apply
// reports an error, and the next one succeeds on a new session.
func TestServerClosesAfterMaxErrors(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	e.sim.FailMatching(regexp.MustCompile(`^SET firstName`), "Invalid value")
	a := john
	a.Contact = map[string]string{"firstName": "Johnny"}
	ctx := testCtx(t)
	for range 12 { // more than the simulator's default maxErrors
		if _, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err == nil {
			t.Fatal("an apply whose SET fails succeeded")
		}
	}
	e.sim.ClearFaults()
	if _, err := e.client.ApplyAccount(ctx, testDomain, a, ""); err != nil {
		t.Fatalf("apply after the faults cleared: %v", err)
	}
	if got, _ := e.sim.Account(testDomain, "john"); got.Contact["firstName"] != "Johnny" {
		t.Errorf("firstName %q, want Johnny", got.Contact["firstName"])
	}
}

// TestSetAccountEnabled: disabling keeps the account and its mail and turns
// its services off; enabling gives back what it inherits; each is sent once.
func TestSetAccountEnabled(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	ctx := testCtx(t)
	for _, step := range []struct {
		enabled   bool
		wantEmpty bool
	}{{false, false}, {false, true}, {true, false}, {true, true}} {
		p, found, err := e.client.SetAccountEnabled(ctx, testDomain, "john", step.enabled)
		if err != nil || !found {
			t.Fatalf("enabled=%v: %v (found %v)", step.enabled, err, found)
		}
		if p.Empty() != step.wantEmpty {
			t.Errorf("enabled=%v: plan %q, want empty=%v", step.enabled, p.Lines(), step.wantEmpty)
		}
		a, ok := e.sim.Account(testDomain, "john")
		if !ok || a.Enabled != step.enabled || a.Contact["firstName"] == "" {
			t.Fatalf("enabled=%v: simulator holds %+v", step.enabled, a)
		}
	}
	if _, found, err := e.client.SetAccountEnabled(ctx, testDomain, "nobody", false); err != nil || found {
		t.Errorf("missing account: found %v, %v", found, err)
	}
}

// TestContextWatchedAcrossExchanges: a session watches its caller's
// context across the caller's exchanges, and no longer once the pool has
// it back: a cancellation racing the end of an operation leaves the
// session sound for the next caller; one within an operation, between two
// exchanges, ends the next exchange at once.
func TestContextWatchedAcrossExchanges(t *testing.T) {
	e := newEnv(t, 1)
	for i := range 100 {
		ctx, cancel := context.WithCancel(context.Background())
		if _, _, err := e.client.ReadAccount(ctx, testDomain, "john"); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		go cancel() // racing the session's return to the pool
		if _, _, err := e.client.ReadAccount(testCtx(t), testDomain, "john"); err != nil {
			t.Fatalf("read %d after a cancelled caller's: %v", i, err)
		}
	}
	if n := len(e.sim.Transcripts()); n != 1 {
		t.Errorf("%d sessions, want 1: a late cancellation broke one", n)
	}

	// Within one caller's operation: the session stays with the caller
	// between exchanges, still watching its context.
	ctx, cancel := context.WithCancel(context.Background())
	err := e.pool.With(ctx, func(s *Session) error {
		if _, err := s.Do(ctx, cmdList(t)); err != nil {
			return err
		}
		e.sim.SetLatency(5 * time.Second)
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := s.Do(ctx, cmdList(t))
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("cancel took %v", d)
		}
		return err
	})
	if KindOf(err) != KindCanceled {
		t.Errorf("cancelled between two exchanges: got %v, want KindCanceled", err)
	}
}

func cmdList(t *testing.T) Command {
	t.Helper()
	cmd, err := NewCommand(Keyword("LIST Accounts"))
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}
