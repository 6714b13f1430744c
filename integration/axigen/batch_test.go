package axigen

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// batchEnv is a simulator holding accounts u0..u(n-1), and a client on a
// one-session pool that counts its round trips.
func batchEnv(t *testing.T, n int, noPipelining bool) (*env, *countingProxy, *Client) {
	t.Helper()
	e := newEnv(t, 1)
	for i := range n {
		name := fmt.Sprintf("u%d", i)
		e.sim.PutAccount(testDomain, axigensim.AccountState{Name: name, Password: "pw-" + name,
			Contact: map[string]string{"firstName": "User", "nickName": "old"}})
	}
	proxy := newCountingProxy(t, e.sim.Addr())
	cfg := e.cfg
	cfg.Addr, cfg.NoPipelining = proxy.ln.Addr().String(), noPipelining
	pool := NewPool(cfg, 1)
	t.Cleanup(func() { pool.Close() })
	return e, proxy, NewClient(pool)
}

func nickRequests(n int, nick string) []AccountApply {
	reqs := make([]AccountApply, n)
	for i := range reqs {
		reqs[i] = AccountApply{Desired: schema.Account{Name: fmt.Sprintf("u%d", i),
			Contact: map[string]string{"firstName": "User", "nickName": fmt.Sprintf("%s%d", nick, i)}}}
	}
	return reqs
}

func nickOf(t *testing.T, e *env, name string) string {
	t.Helper()
	a, ok := e.sim.Account(testDomain, name)
	if !ok {
		t.Fatalf("no account %s", name)
	}
	return a.Contact["nickName"]
}

// TestApplyAccountsSharesRoundTrips: four accounts updated together take
// 2n+2 round trips (the LISTs; the first account's reads; per account its
// SET with DONE; each COMMIT with the next account's reads; the last
// COMMIT) where one apply after the other takes 4n; each account gets its
// own plan, and with NoPipelining each is applied on its own.
func TestApplyAccountsSharesRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noPipeline bool
		trips      int64
	}{{"batched", false, 2*4 + 2}, {"no pipelining", true, 4 * 8}} {
		t.Run(tc.name, func(t *testing.T) {
			e, proxy, client := batchEnv(t, 4, tc.noPipeline)
			ctx := testCtx(t)
			if _, _, err := client.ReadAccount(ctx, testDomain, "u0"); err != nil { // logs in, enters the domain
				t.Fatal(err)
			}
			before, counts := proxy.writes.Load(), e.commandCounts()
			res := client.ApplyAccounts(ctx, testDomain, nickRequests(4, "new"))
			for i, r := range res {
				if r.Err != nil || r.Plan == nil || r.Plan.Empty() {
					t.Fatalf("account %d: plan %v, err %v", i, r.Plan, r.Err)
				}
				if got := nickOf(t, e, fmt.Sprintf("u%d", i)); got != fmt.Sprintf("new%d", i) {
					t.Errorf("u%d: nickName %q", i, got)
				}
			}
			if n := proxy.writes.Load() - before; n != tc.trips {
				t.Errorf("%d round trips, want %d", n, tc.trips)
			}
			if tc.noPipeline {
				return
			}
			want := []string{`LIST Accounts "u0"`, `LIST Accounts "u1"`, `LIST Accounts "u2"`, `LIST Accounts "u3"`}
			for i := range 4 {
				if i > 0 {
					want = append(want, "COMMIT")
				}
				want = append(want, fmt.Sprintf(`UPDATE Account name "u%d"`, i), "SHOW RegistryInformation", "CONFIG ContactInfo", "SHOW",
					fmt.Sprintf(`SET nickName "new%d"`, i), "DONE")
			}
			want = append(want, "COMMIT")
			if got := e.commandsSince(counts); !slices.Equal(got, want) {
				t.Errorf("sent %q\nwant %q", got, want)
			}
			// Applied again: nothing differs, nothing is written.
			counts = e.commandCounts()
			for i, r := range client.ApplyAccounts(ctx, testDomain, nickRequests(4, "new")) {
				if r.Err != nil || !r.Plan.Empty() {
					t.Errorf("again, account %d: plan %v, err %v", i, r.Plan, r.Err)
				}
			}
			for _, c := range e.commandsSince(counts) {
				if c == "COMMIT" || regexp.MustCompile(`^(SET|DONE)`).MatchString(c) {
					t.Errorf("applying the same state again sent %q", c)
				}
			}
		})
	}
}

// TestApplyAccountsFailureMidBatch: whatever command of one account fails
// in the middle of a batch — its LIST, its UPDATE (the account went), a SET, its
// COMMIT (whose exchange carries the next account's reads) — only that
// account fails; no later command runs in another context than its own
// (nothing lands on the domain's own settings, no account gets another's
// value), and every other account is applied.
func TestApplyAccountsFailureMidBatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(sim *axigensim.Server)
	}{
		{"list refused", func(sim *axigensim.Server) {
			sim.FailMatching(regexp.MustCompile(`^LIST Accounts "u2"$`), "Permission denied")
		}},
		{"update refused", func(sim *axigensim.Server) {
			sim.FailMatching(regexp.MustCompile(`^UPDATE Account name "u2"$`), "Account does not exist")
		}},
		{"set refused", func(sim *axigensim.Server) {
			sim.FailMatching(regexp.MustCompile(`^SET nickName "new2"$`), "Permission denied")
		}},
		{"commit refused", func(sim *axigensim.Server) {
			sim.FailNth(regexp.MustCompile(`^COMMIT$`), 2, "Cannot save the configuration") // u2's
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, client := batchEnv(t, 5, false)
			ctx := testCtx(t)
			tc.fail(e.sim)
			res := client.ApplyAccounts(ctx, testDomain, nickRequests(5, "new"))
			for i, r := range res {
				name := fmt.Sprintf("u%d", i)
				if i == 2 {
					if KindOf(r.Err) != KindServer {
						t.Errorf("u2: err %v, want a server error", r.Err)
					}
					if got := nickOf(t, e, name); got != "old" {
						t.Errorf("u2: nickName %q, want it unchanged", got)
					}
					continue
				}
				if r.Err != nil {
					t.Errorf("%s: %v", name, r.Err)
				}
				if got := nickOf(t, e, name); got != fmt.Sprintf("new%d", i) {
					t.Errorf("%s: nickName %q", name, got)
				}
			}
			if s := e.sim.DomainSettings(testDomain); len(s) != 0 {
				t.Errorf("the domain's own settings changed: %v", s)
			}
			for _, a := range e.sim.Accounts(testDomain) {
				if a.Contact["firstName"] != "User" {
					t.Errorf("%s: firstName %q", a.Name, a.Contact["firstName"])
				}
			}
			// The client goes on: u2 is applied once the fault is gone.
			e.sim.ClearFaults()
			if r := client.ApplyAccounts(ctx, testDomain, nickRequests(5, "new")); r[2].Err != nil || nickOf(t, e, "u2") != "new2" {
				t.Errorf("u2 after the fault: %v, nickName %q", r[2].Err, nickOf(t, e, "u2"))
			}
		})
	}
}

// TestApplyAccountsCreatesAndRenames: a batch mixing a new account, a
// rename (found by its previous name) and an update applies each as
// ApplyAccount would; two requests about one account name go one after
// the other.
func TestApplyAccountsCreatesAndRenames(t *testing.T) {
	e, _, client := batchEnv(t, 2, false)
	ctx := testCtx(t)
	reqs := []AccountApply{
		{Desired: schema.Account{Name: "fresh", Contact: map[string]string{"nickName": "f"}}},
		{Desired: schema.Account{Name: "u0-renamed", Contact: map[string]string{"firstName": "User", "nickName": "r"}}, PreviousName: "u0"},
		{Desired: schema.Account{Name: "u1", Contact: map[string]string{"firstName": "User", "nickName": "n"}}},
		{Desired: schema.Account{Name: "u1", Contact: map[string]string{"firstName": "User", "nickName": "n2"}}},
	}
	for i, r := range client.ApplyAccounts(ctx, testDomain, reqs) {
		if r.Err != nil {
			t.Errorf("request %d: %v", i, r.Err)
		}
	}
	if got := nickOf(t, e, "fresh"); got != "f" {
		t.Errorf("fresh: nickName %q", got)
	}
	if got := nickOf(t, e, "u0-renamed"); got != "r" {
		t.Errorf("renamed: nickName %q", got)
	}
	if _, ok := e.sim.Account(testDomain, "u0"); ok {
		t.Error("u0 still there after its rename")
	}
	if got := nickOf(t, e, "u1"); got != "n2" {
		t.Errorf("u1: nickName %q, want the later request's", got)
	}
}

// TestApplyAccountsExistsHint: an account expected to exist has its reads
// sent with its LIST: one account's update takes three round trips, four
// accounts' 2n+1; an account the hint was wrong about (absent, or spelt
// otherwise in Axigen) is still applied, on a fresh session, and nothing
// runs where it should not.
func TestApplyAccountsExistsHint(t *testing.T) {
	for _, tc := range []struct {
		n     int
		trips int64
	}{{1, 3}, {4, 2*4 + 1}} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			e, proxy, client := batchEnv(t, tc.n, false)
			ctx := testCtx(t)
			if _, _, err := client.ReadAccount(ctx, testDomain, "u0"); err != nil { // logs in, enters the domain
				t.Fatal(err)
			}
			reqs := nickRequests(tc.n, "new")
			for i := range reqs {
				reqs[i].Exists = true
			}
			before := proxy.writes.Load()
			for i, r := range client.ApplyAccounts(ctx, testDomain, reqs) {
				if r.Err != nil || nickOf(t, e, fmt.Sprintf("u%d", i)) != fmt.Sprintf("new%d", i) {
					t.Fatalf("account %d: %v", i, r.Err)
				}
			}
			if n := proxy.writes.Load() - before; n != tc.trips {
				t.Errorf("%d round trips, want %d", n, tc.trips)
			}
		})
	}
	t.Run("wrong", func(t *testing.T) {
		e, _, client := batchEnv(t, 2, false)
		e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "mixed", Password: "pw", Contact: map[string]string{"nickName": "old"}})
		ctx := testCtx(t)
		for _, reqs := range [][]AccountApply{
			{{Desired: schema.Account{Name: "ghost", Contact: map[string]string{"nickName": "g"}}, Exists: true},
				{Desired: schema.Account{Name: "u1", Contact: map[string]string{"firstName": "User", "nickName": "n1"}}, Exists: true}},
			{{Desired: schema.Account{Name: "Mixed", Contact: map[string]string{"nickName": "m"}}, Exists: true}},
			{{Desired: schema.Account{Name: "ghost2", Contact: map[string]string{"nickName": "g2"}}, Exists: true}},
		} {
			for i, r := range client.ApplyAccounts(ctx, testDomain, reqs) {
				if r.Err != nil {
					t.Errorf("%s: %v", reqs[i].Desired.Name, r.Err)
				}
			}
		}
		for name, nick := range map[string]string{"ghost": "g", "u1": "n1", "ghost2": "g2", "mixed": "m"} {
			if got := nickOf(t, e, name); got != nick {
				t.Errorf("%s: nickName %q, want %q", name, got, nick)
			}
		}
		if s := e.sim.DomainSettings(testDomain); len(s) != 0 {
			t.Errorf("the domain's own settings changed: %v", s)
		}
	})
}

// TestApplyAccountsUnsendableRowKeepsTheCommit: an account whose LIST row
// cannot be sent back (here invalid UTF-8, which Go's case folding takes
// for the U+FFFD the request names) fails on its own; the previous
// account's COMMIT, left to go with that account's reads, is still sent,
// and is not reported done when it was not.
func TestApplyAccountsUnsendableRowKeepsTheCommit(t *testing.T) {
	e, _, client := batchEnv(t, 1, false)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "\xff", Password: "pw", Contact: map[string]string{"nickName": "old"}})
	ctx := testCtx(t)
	reqs := []AccountApply{
		{Desired: schema.Account{Name: "u0", Contact: map[string]string{"firstName": "User", "nickName": "new0"}}},
		{Desired: schema.Account{Name: "\uFFFD", Contact: map[string]string{"nickName": "x"}}},
	}
	res := client.ApplyAccounts(ctx, testDomain, reqs)
	if res[1].Err == nil {
		t.Error("the unsendable account: no error")
	}
	if got := nickOf(t, e, "u0"); res[0].Err == nil && got != "new0" {
		t.Errorf("u0 reported applied, nickName %q: its COMMIT never ran", got)
	}
	if got := nickOf(t, e, "u0"); got != "new0" {
		t.Errorf("u0: nickName %q, err %v", got, res[0].Err)
	}
}

// TestApplyAccountsUnsendableRowFirstWithHint: the same row for the first
// account of a batch, expected to exist (its reads went with the LISTs):
// it fails alone and the next account is applied where it should be.
func TestApplyAccountsUnsendableRowFirstWithHint(t *testing.T) {
	e, _, client := batchEnv(t, 1, false)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "\xff", Password: "pw", Contact: map[string]string{"nickName": "old"}})
	ctx := testCtx(t)
	reqs := []AccountApply{
		{Desired: schema.Account{Name: "\uFFFD", Contact: map[string]string{"nickName": "x"}}, Exists: true},
		{Desired: schema.Account{Name: "u0", Contact: map[string]string{"firstName": "User", "nickName": "new0"}}, Exists: true},
	}
	res := client.ApplyAccounts(ctx, testDomain, reqs)
	if res[0].Err == nil {
		t.Error("the unsendable account: no error")
	}
	if got := nickOf(t, e, "u0"); res[1].Err != nil || got != "new0" {
		t.Errorf("u0: nickName %q, err %v", got, res[1].Err)
	}
	if got := nickOf(t, e, "\xff"); got != "old" {
		t.Errorf("the unsendable account changed: nickName %q", got)
	}
	if s := e.sim.DomainSettings(testDomain); len(s) != 0 {
		t.Errorf("the domain's own settings changed: %v", s)
	}
}

// TestApplyAccountsCommitAnsweredThenDropped: the connection breaks after
// an account's COMMIT answered +OK, on the next account's reads sent with
// it: the committed account is reported applied (not failed, to be
// replayed: a replay's plan no longer shows its rename, say), and the
// next one is applied on a fresh session.
func TestApplyAccountsCommitAnsweredThenDropped(t *testing.T) {
	dry, _, dryClient := batchEnv(t, 2, false)
	ctx := testCtx(t)
	for i, r := range dryClient.ApplyAccounts(ctx, testDomain, nickRequests(2, "dry")) {
		if r.Err != nil {
			t.Fatalf("dry run, account %d: %v", i, r.Err)
		}
	}
	at := slices.Index(dry.sim.Transcripts()[0].Commands(), `UPDATE Account name "u1"`)
	if at < 0 {
		t.Fatal("the dry run did not read u1")
	}

	e, _, client := batchEnv(t, 2, false)
	e.sim.DropAfter(at) // cut on u1's reads, once u0's COMMIT is answered
	res := client.ApplyAccounts(ctx, testDomain, nickRequests(2, "new"))
	for i, r := range res {
		name := fmt.Sprintf("u%d", i)
		got := nickOf(t, e, name)
		if got != fmt.Sprintf("new%d", i) {
			t.Errorf("%s: nickName %q, err %v", name, got, r.Err)
		} else if r.Err != nil {
			t.Errorf("%s: reported failed although its COMMIT ran: %v", name, r.Err)
		}
	}
}

// TestApplyAccountsOutcomesMatchAxigenWhereverCut: a batch cut at every
// point — the connection dropped before the k-th command, the k-th
// command refused with -ERR, or the guard
// refusing the k-th exchange (a leader deposed mid-batch) — reports an
// account applied exactly when Axigen holds its change: no account is
// reported applied whose COMMIT never ran, none reported failed whose
// COMMIT ran and answered, and no account holds another's value.
func TestApplyAccountsOutcomesMatchAxigenWhereverCut(t *testing.T) {
	const n = 4
	for _, exists := range []bool{false, true} {
		reqs := nickRequests(n, "new")
		for i := range reqs {
			reqs[i].Exists = exists
		}
		reqs[2].Desired.Password = "secret-2" // a password in the middle
		// A new account the hint is wrong about comes first.
		ghost := AccountApply{Desired: schema.Account{Name: "ghost", Contact: map[string]string{"nickName": "g"}}, Exists: exists}
		reqs = append([]AccountApply{ghost}, reqs...)
		check := func(t *testing.T, e *env, res []AccountResult) {
			t.Helper()
			g, _ := e.sim.Account(testDomain, "ghost")
			if (g.Contact["nickName"] == "g") != (res[0].Err == nil) {
				t.Errorf("ghost: %+v, err %v", g, res[0].Err)
			}
			for i, r := range res[1:] {
				name := fmt.Sprintf("u%d", i)
				a, _ := e.sim.Account(testDomain, name)
				changed := a.Contact["nickName"] == fmt.Sprintf("new%d", i)
				if changed != (r.Err == nil) {
					t.Errorf("%s: nickName %q, err %v", name, a.Contact["nickName"], r.Err)
				}
				if a.Contact["nickName"] != "old" && !changed {
					t.Errorf("%s holds another's nickName %q", name, a.Contact["nickName"])
				}
				if wantPW := "pw-" + name; a.Password != wantPW && !(i == 2 && a.Password == "secret-2" && changed) {
					t.Errorf("%s: password %q", name, a.Password)
				}
			}
			if s := e.sim.DomainSettings(testDomain); len(s) != 0 {
				t.Errorf("the domain's own settings changed: %v", s)
			}
		}
		for k := 0; k < 64; k++ { // past the last command of the batch
			t.Run(fmt.Sprintf("exists=%v/drop=%d", exists, k), func(t *testing.T) {
				e, _, client := batchEnv(t, n, false)
				ctx := testCtx(t)
				if _, _, err := client.ReadAccount(ctx, testDomain, "u0"); err != nil { // logs in first
					t.Fatal(err)
				}
				e.sim.DropAfter(k)
				res := client.ApplyAccounts(ctx, testDomain, reqs)
				check(t, e, res)
				if k == 63 && len(e.sim.Commands()) > k {
					t.Errorf("%d commands: the cuts do not reach past the batch's last one", len(e.sim.Commands()))
				}
			})
			t.Run(fmt.Sprintf("exists=%v/refused=%d", exists, k), func(t *testing.T) {
				e, _, client := batchEnv(t, n, false)
				ctx := testCtx(t)
				if _, _, err := client.ReadAccount(ctx, testDomain, "u0"); err != nil {
					t.Fatal(err)
				}
				e.sim.FailNth(regexp.MustCompile(``), k, "Refused")
				check(t, e, client.ApplyAccounts(ctx, testDomain, reqs))
			})
			t.Run(fmt.Sprintf("exists=%v/guard=%d", exists, k), func(t *testing.T) {
				e, _, client := batchEnv(t, n, false)
				var exchanges atomic.Int64
				ctx := WithGuard(testCtx(t), func(context.Context) error {
					if exchanges.Add(1) > int64(k) {
						return errors.New("deposed")
					}
					return nil
				})
				check(t, e, client.ApplyAccounts(ctx, testDomain, reqs))
			})
		}
	}
}

// TestApplyAccountsWrongHintOnATiredSession: the reads sent on a wrong
// Exists hint are refused (four -ERRs); on a session that earned -ERRs
// before, the server reaches maxErrors among them and closes the session.
// The LISTs had all answered and shown the account absent: it is applied
// again without the hint, not failed (a server with a low maxErrors would
// otherwise fail such an account on every attempt, until it is dead).
func TestApplyAccountsWrongHintOnATiredSession(t *testing.T) {
	e, _, client := batchEnv(t, 1, false)
	ctx := testCtx(t)
	e.sim.FailMatching(regexp.MustCompile(`^SET nickName "refused0"$`), "Invalid value")
	for range 7 { // seven -ERRs on the pool's one session; the simulator closes at ten
		if r := client.ApplyAccounts(ctx, testDomain, nickRequests(1, "refused")); r[0].Err == nil {
			t.Fatal("an apply whose SET fails succeeded")
		}
	}
	e.sim.ClearFaults()
	res := client.ApplyAccounts(ctx, testDomain, []AccountApply{
		{Desired: schema.Account{Name: "ghost", Contact: map[string]string{"nickName": "g"}}, Exists: true}})
	if res[0].Err != nil {
		t.Fatalf("ghost: %v", res[0].Err)
	}
	if got := nickOf(t, e, "ghost"); got != "g" {
		t.Errorf("ghost: nickName %q", got)
	}
}
