package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

const (
	pipeDomain   = "example.com"
	pipeSuffix   = "dc=example,dc=com"
	pipeAdminDN  = "cn=admin," + pipeSuffix // slapd's rootdn: the service DN and a configured admin
	pipeAxigenDN = "cn=axigen," + pipeSuffix
	pipeAxAdmin  = "admin"
	pipeAxPW     = "axigen-admin-pw"
)

func pipeUser(uid string) string { return "uid=" + uid + ",ou=people," + pipeSuffix }

// pipelineRig is what Mirror.Intercept works against in these tests: a
// real slapd with the sample tree (alice, bob, carol; carol is in
// cn=admins), the Axigen simulator, and for each Mirror a fresh journal.
type pipelineRig struct {
	dir     *slapd.Server
	sim     *axigensim.Server
	mapping *schema.Mapping
	// dirURL, when set, is where the Mirrors' own directory connections
	// go instead of dir.URL (a test's relay in front of slapd).
	dirURL string
	// journalNow, when set, is the journals' clock (time.Now).
	journalNow func() time.Time
}

func newPipelineRig(t *testing.T) *pipelineRig {
	t.Helper()
	return newPipelineRigWith(t, slapd.Options{})
}

// newPipelineRigWith is newPipelineRig with slapd started with opts.
func newPipelineRigWith(t testing.TB, opts slapd.Options) *pipelineRig {
	t.Helper()
	r := &pipelineRig{dir: slapd.StartT(t, opts)}
	r.sim = axigensim.New(axigensim.Options{Admins: map[string]string{pipeAxAdmin: pipeAxPW}, Domains: []string{pipeDomain}})
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.sim.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start the Axigen simulator: %v", err)
	}
	t.Cleanup(func() { cancel(); r.sim.Close() })
	var err error
	r.mapping, err = schema.NewMapping(schema.Config{
		Dialect:     schema.OpenLDAP,
		AccountBase: schema.DNList{"ou=people," + pipeSuffix},
		GroupBase:   schema.DNList{"ou=groups," + pipeSuffix},
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mirror returns a Mirror with its own journal and an audit log it
// records (one JSON object per line).
func (r *pipelineRig) mirror(t testing.TB) (*Mirror, *store.Journal, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{KeyFile: filepath.Join(dir, "journal.key"),
		NoSync: true, HousekeepingInterval: -1, Logger: slog.New(slog.DiscardHandler), Now: r.journalNow})
	if err != nil {
		t.Fatal(err)
	}
	url := r.dir.URL
	if r.dirURL != "" {
		url = r.dirURL
	}
	directory := NewDirectory(DirectoryConfig{URLs: []string{url}, ServiceDN: r.dir.RootDN,
		ServicePassword: r.dir.RootPW, Timeout: 5 * time.Second})
	pool := axigen.NewPool(axigen.Config{Addr: r.sim.Addr(), User: pipeAxAdmin, Password: pipeAxPW}, 2)
	audit := &bytes.Buffer{}
	m, err := New(Config{
		Journal:      j,
		Mapping:      r.mapping,
		Axigen:       axigen.NewClient(pool),
		Directory:    directory,
		Domain:       pipeDomain,
		AdminDNs:     []string{pipeAdminDN},
		AdminGroup:   "cn=admins,ou=groups," + pipeSuffix,
		AxigenBindDN: pipeAxigenDN,
		Workers:      2,
		Audit:        slog.New(slog.NewJSONHandler(audit, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		directory.Close()
		pool.Close()
		if err := j.Close(); err != nil {
			t.Errorf("close the journal: %v", err)
		}
	})
	return m, j, audit
}

// decisions are the "decision" values of the decision lines in an audit
// log (JSON lines). slog's handler serialises the writes; the test reads
// once the writes it looks at are done.
func decisions(t *testing.T, audit *bytes.Buffer) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if rec["msg"] == "decision" {
			out = append(out, rec["decision"].(string))
		}
	}
	return out
}

func replace(dn, attr string, values ...string) *gateway.WriteRequest {
	req := &gateway.WriteRequest{Op: gateway.OpModify, DN: dn}
	var vals [][]byte
	for _, v := range values {
		vals = append(vals, []byte(v))
	}
	req.Changes = []gateway.Modification{{Op: gateway.ModReplace, Attribute: gateway.Attribute{Type: attr, Values: vals}}}
	return req
}

func addAccount(uid string) *gateway.WriteRequest {
	attr := func(t string, v ...string) gateway.Attribute {
		a := gateway.Attribute{Type: t}
		for _, s := range v {
			a.Values = append(a.Values, []byte(s))
		}
		return a
	}
	return &gateway.WriteRequest{Op: gateway.OpAdd, DN: pipeUser(uid), Attributes: []gateway.Attribute{
		attr("objectClass", "inetOrgPerson"), attr("uid", uid), attr("cn", "Dave Bowman"), attr("sn", "Bowman"),
		attr("givenName", "Dave"), attr("mail", uid+"@"+pipeDomain), attr("userPassword", "dave-pw"),
	}}
}

// Mirror.Intercept, step by step, against a real slapd and a real journal:
// what the client is answered, whether a record is prepared, and what the
// directory's answer (given to the Completion) makes of it.
func TestIntercept(t *testing.T) {
	rig := newPipelineRig(t)
	alice, bob := pipeUser("alice"), pipeUser("bob")
	const aborted = store.State("") // the record is gone
	tests := []struct {
		name  string
		bound string
		req   *gateway.WriteRequest
		// refused: the result Intercept answers itself (0: none), and what
		// its diagnostic names.
		refused     int
		diagnostic  string
		record      bool           // a record is prepared before the relay
		completion  bool           // Intercept returns a Completion
		answer      gateway.Result // what the directory answers
		state       store.State    // the record's state once settled
		secret      string         // the record's password
		audit       []string       // decision lines
		actor, kind string         // of the record
	}{
		// Every relayed write has a Completion: it holds its DN against a
		// modify DN racing it until the directory answers (onway.go).
		{name: "outside the account and group bases: relayed, no record",
			bound: alice, req: replace("cn=config-like,"+pipeSuffix, "description", "x"), completion: true},
		{name: "in the account base but not an account: relayed, no record",
			bound: pipeAdminDN, req: replace("ou=people,"+pipeSuffix, "description", "x"), completion: true},
		{name: "an account attribute the policy leaves to the directory: relayed, no record",
			bound: alice, req: replace(alice, "description", "x"), completion: true, audit: []string{"allowed"}},
		{name: "owner changes own displayName, the directory applies it: committed",
			bound: alice, req: replace(alice, "displayName", "Al"), record: true, completion: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted,
			audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "owner changes own displayName, the directory refuses it: aborted",
			bound: alice, req: replace(alice, "displayName", "Al"), record: true, completion: true,
			answer: gateway.Result{Code: ldap.LDAPResultConstraintViolation}, state: aborted,
			audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "owner changes own displayName, the directory never answers: resolved (committed)",
			bound: alice, req: replace(alice, "displayName", "Al"), record: true, completion: true,
			answer: gateway.Result{Code: ldap.LDAPResultUnavailable, Unanswered: true}, state: store.StateCommitted,
			audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "owner sets a password the directory never confirmed: resolved by a bind (aborted)",
			bound: alice, req: replace(alice, "userPassword", "never-applied"), record: true, completion: true,
			answer: gateway.Result{Unanswered: true}, state: aborted, secret: "never-applied",
			audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "owner sets the password the directory holds, unanswered: resolved by a bind (committed)",
			bound: alice, req: replace(alice, "userPassword", slapd.AlicePassword), record: true, completion: true,
			answer: gateway.Result{Unanswered: true}, state: store.StateCommitted, secret: slapd.AlicePassword,
			audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "owner changes own mail: refused by the policy",
			bound: alice, req: replace(alice, "mail", "boss@example.com"),
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: ruleAccountAddress, audit: []string{"refused"}},
		{name: "other user's password: refused by the policy",
			bound: bob, req: replace(alice, "userPassword", "stolen"),
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: rulePassword, audit: []string{"refused"}},
		{name: "other user's password modify (RFC 3062): refused by the policy",
			bound: bob, req: &gateway.WriteRequest{Op: gateway.OpPasswordModify, DN: alice, NewPassword: []byte("stolen")},
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: rulePassword, audit: []string{"refused"}},
		{name: "anonymous changes a phone: refused, the diagnostic says anonymous",
			req:     replace(alice, "telephoneNumber", "1"),
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: "an anonymous session", audit: []string{"refused"}},
		{name: "owner's own password modify without a DN: committed",
			bound: alice, req: &gateway.WriteRequest{Op: gateway.OpPasswordModify, NewPassword: []byte("n3w")},
			record: true, completion: true, answer: gateway.Result{Code: ldap.LDAPResultSuccess},
			state: store.StateCommitted, secret: "n3w", audit: []string{"allowed"}, actor: alice, kind: "account"},
		{name: "admin adds an account: committed",
			bound: pipeAdminDN, req: addAccount("dave"), record: true, completion: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted, secret: "dave-pw",
			audit: []string{"allowed"}, actor: pipeAdminDN, kind: "account"},
		{name: "admin group member adds an account: committed",
			bound: pipeUser("carol"), req: addAccount("dave"), record: true, completion: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted, secret: "dave-pw",
			audit: []string{"allowed"}, actor: pipeUser("carol"), kind: "account"},
		{name: "user adds an account: refused by the policy",
			bound: bob, req: addAccount("dave"),
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: ruleCreateAccount, audit: []string{"refused"}},
		// Issue 16: Axigen's connector is judged and audited, and what it
		// may write is never mirrored back.
		// Its Completion tells the images of the entry (images.go).
		{name: "Axigen's own identity changes contact info: relayed, no record, audited",
			bound: pipeAxigenDN, req: replace(alice, "displayName", "From Axigen"), completion: true, audit: []string{"allowed"}},
		{name: "Axigen's own identity changes mail: refused by the policy",
			bound: pipeAxigenDN, req: replace(alice, "mail", "alice2@example.com"),
			refused: ldap.LDAPResultInsufficientAccessRights, diagnostic: ruleConnector, audit: []string{"refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, j, audit := rig.mirror(t)
			ctx := context.Background()
			done, answer := intercept(ctx, m, tt.bound, tt.req)
			wantAnswer(t, answer, tt.refused, tt.diagnostic)
			switch {
			case tt.refused != 0 && done != nil:
				t.Fatal("a refused write has a Completion")
			case (done != nil) != tt.completion:
				t.Fatalf("Completion returned: %v, want %v", done != nil, tt.completion)
			}

			prepared, err := j.Prepared()
			if err != nil {
				t.Fatal(err)
			}
			if !tt.record {
				if len(prepared) != 0 {
					t.Fatalf("prepared %+v, want no record", prepared[0])
				}
				if done != nil {
					done(ctx, tt.answer)
				}
				m.Close()
				assertNoRecordEver(t, j)
				assertDecisions(t, decisions(t, audit), tt.audit)
				return
			}

			if len(prepared) != 1 {
				t.Fatalf("%d records prepared, want 1", len(prepared))
			}
			rec := prepared[0]
			wantDN := tt.req.DN
			if wantDN == "" {
				wantDN = tt.bound
			}
			if !schema.EqualDN(rec.DN, wantDN) || !schema.EqualDN(rec.Actor, tt.actor) || string(rec.Kind) != tt.kind ||
				rec.ClientAddr != "192.0.2.1:4711" || string(rec.Secret) != tt.secret {
				t.Fatalf("prepared %s %s of %s by %s from %s (secret %q); want %s of %s by %s (secret %q)",
					rec.Kind, rec.Op, rec.DN, rec.Actor, rec.ClientAddr, rec.Secret, tt.kind, wantDN, tt.actor, tt.secret)
			}

			done(ctx, tt.answer)
			m.Close() // the commit, abort or resolution is in the journal
			got, err := j.Get(rec.Seq)
			switch {
			case tt.state == aborted && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("record %d: %+v, %v; want it aborted", rec.Seq, got, err)
			case tt.state != aborted && (err != nil || got.State != tt.state):
				t.Fatalf("record %d: %+v, %v; want %s", rec.Seq, got, err, tt.state)
			}
			if prepared, err := j.Prepared(); err != nil || len(prepared) != 0 {
				t.Fatalf("still prepared after the answer: %d, %v", len(prepared), err)
			}
			assertDecisions(t, decisions(t, audit), tt.audit)
		})
	}
}

// assertNoRecordEver checks that the journal never gave a sequence number:
// the next record is its first.
func assertNoRecordEver(t *testing.T, j *store.Journal) {
	t.Helper()
	seq, err := j.Prepare(context.Background(), &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: pipeUser("probe")})
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 {
		t.Fatalf("the journal holds %d records, want none", seq-1)
	}
}

func assertDecisions(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("audit decisions %q, want %q", got, want)
	}
}

// The whole path: an admin's add is prepared, relayed (here: made in the
// directory by the test, as the gateway would), committed under the new
// entry's key on the directory's success, and delivered to Axigen.
func TestInterceptedAddIsDelivered(t *testing.T) {
	rig := newPipelineRig(t)
	m, j, _ := rig.mirror(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delivering := make(chan error, 1)
	go func() { delivering <- m.Run(ctx) }()

	req := addAccount("dave")
	done, answer := m.Intercept(ctx, gateway.SessionInfo{BoundDN: pipeAdminDN}, req)
	if answer != nil || done == nil {
		t.Fatalf("Intercept: %+v, Completion %v; want the add relayed with a Completion", answer, done != nil)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 {
		t.Fatalf("prepared: %d, %v; want 1", len(prepared), err)
	}
	seq := prepared[0].Seq

	conn, err := rig.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	add := ldap.NewAddRequest(req.DN, nil)
	for _, a := range req.Attributes {
		var vals []string
		for _, v := range a.Values {
			vals = append(vals, string(v))
		}
		add.Attribute(a.Type, vals)
	}
	if err := conn.Add(add); err != nil {
		t.Fatalf("the directory refuses the add: %v", err)
	}
	done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})

	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := j.Get(seq)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State == store.StateDelivered {
			if rec.EntryKey == "" {
				t.Errorf("delivered record %d has no entry key: the commit did not read the new entry's", seq)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %d still %s (attempts %d, last error %q)", seq, rec.State, rec.Attempts, rec.LastError)
		}
		select {
		case err := <-delivering:
			t.Fatalf("delivery stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	acct, ok := rig.sim.Account(pipeDomain, "dave")
	if !ok {
		t.Fatal("Axigen has no account dave")
	}
	if acct.Password != "dave-pw" || acct.Contact["firstName"] != "Dave" || acct.Contact["lastName"] != "Bowman" {
		t.Fatalf("Axigen's dave: %+v", acct)
	}
	cancel()
	if err := <-delivering; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

// intercept runs Intercept for a session bound as bound.
func intercept(ctx context.Context, m *Mirror, bound string, req *gateway.WriteRequest) (gateway.Completion, *gateway.Result) {
	return m.Intercept(ctx, gateway.SessionInfo{ID: 1, RemoteAddr: "192.0.2.1:4711", BoundDN: bound}, req)
}

// wantAnswer checks Intercept's own answer: none when code is 0 (the write
// is relayed), else code with a diagnostic naming diag.
func wantAnswer(t *testing.T, answer *gateway.Result, code int, diag string) {
	t.Helper()
	switch {
	case code == 0 && answer != nil:
		t.Fatalf("answered %d %q, want the write relayed", answer.Code, answer.Diagnostic)
	case code != 0 && (answer == nil || answer.Code != code || !strings.Contains(answer.Diagnostic, diag)):
		t.Fatalf("answered %+v, want %d naming %q", answer, code, diag)
	}
}
