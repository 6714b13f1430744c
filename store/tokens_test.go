package store

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// uidNames is an Options.DeliveryNames for tests: the record's name and
// the uid values it adds or sets.
func uidNames(r *Record) []string {
	names := []string{r.Name}
	for _, c := range r.Changes {
		if strings.EqualFold(c.Attr, "uid") && (c.Op == "add" || c.Op == "replace") {
			names = append(names, c.Values...)
		}
	}
	return names
}

// TestRekeyTokensIsOrderTokens: the tokens the index derives for a record
// whose entry key changed (a Commit naming it, and perhaps the account's
// name) are those orderTokens makes from the record itself, DNs spelled
// differently and renames included, with or without account names, and
// the tokens they were derived from stay as they were.
func TestRekeyTokensIsOrderTokens(t *testing.T) {
	uid := []Change{{Op: "replace", Attr: "uid", Values: []string{"Ivy2"}}}
	records := []Record{
		{DN: "uid=a,ou=People,dc=example,dc=org"},
		{DN: "UID=a, ou=people,dc=example,dc=org", EntryKey: "old"},
		{DN: "uid=a,ou=people,dc=example,dc=org", NewDN: "uid=b,ou=people,dc=example,dc=org"},
		{DN: "uid=a,ou=people,dc=example,dc=org", NewDN: "UID=A,ou=people,dc=example,dc=org", EntryKey: "old"},
		{DN: "cn=k:x,ou=groups,dc=example,dc=org", EntryKey: "k:y"},
		{DN: "cn=Ivy,ou=people,dc=example,dc=org", Name: "ivy", Changes: uid},
		{DN: "cn=Ivy,ou=people,dc=example,dc=org", EntryKey: "old", Changes: uid},
		{Kind: KindGroup, DN: "ou=A,ou=groups,dc=example,dc=org", Name: "ivy", Changes: uid},
	}
	for _, names := range []func(*Record) []string{nil, uidNames} {
		for _, r := range records {
			before := orderTokens(&r, names)
			kept := slices.Clone(before)
			for _, key := range []string{"", "old", "new", "k:x"} {
				for _, name := range []string{r.Name, "IVY"} {
					want := r
					want.EntryKey, want.Name = key, name
					if got := rekeyTokens(before, key, &want, names); !slices.Equal(got, orderTokens(&want, names)) {
						t.Errorf("%+v with key %q, name %q: %q, want %q", r, key, name, got, orderTokens(&want, names))
					}
					if !slices.Equal(before, kept) {
						t.Fatalf("%+v: rekeyTokens changed its input to %q", r, before)
					}
				}
			}
		}
	}
}

// TestAccountTokens: a record's account (or group) names are order tokens,
// lower-cased and named once; without Options.DeliveryNames there are none.
func TestAccountTokens(t *testing.T) {
	r := &Record{DN: "cn=Ivy,ou=people,dc=example,dc=org", EntryKey: "k1", Name: "Ivy",
		Changes: []Change{{Op: "replace", Attr: "uid", Values: []string{"ivy2", "IVY"}}}}
	got := orderTokens(r, uidNames)
	want := []string{"k:k1", "d:cn=ivy,ou=people,dc=example,dc=org", "a:ivy", "a:ivy2"}
	if !slices.Equal(got, want) {
		t.Errorf("tokens %q, want %q", got, want)
	}
	if got := orderTokens(r, nil); slices.ContainsFunc(got, func(t string) bool { return strings.HasPrefix(t, "a:") }) {
		t.Errorf("tokens without DeliveryNames %q hold an account name", got)
	}
	// A group's names are group tokens, apart from the accounts': Axigen
	// keeps accounts and groups apart.
	g := &Record{Kind: KindGroup, DN: "ou=A,ou=groups,dc=example,dc=org", EntryKey: "k2", Name: "Ivy",
		Changes: []Change{{Op: "replace", Attr: "uid", Values: []string{"ivy2", "IVY"}}}}
	got = orderTokens(g, uidNames)
	want = []string{"k:k2", "d:ou=a,ou=groups,dc=example,dc=org", "g:ivy", "g:ivy2"}
	if !slices.Equal(got, want) {
		t.Errorf("group tokens %q, want %q", got, want)
	}
	if got := rekeyTokens(got, "k3", g, uidNames); !slices.Equal(got, []string{"k:k3", "d:ou=a,ou=groups,dc=example,dc=org", "g:ivy", "g:ivy2"}) {
		t.Errorf("group tokens rekeyed %q", got)
	}
}

// TestAccountNameOrdersDifferentEntries is the case account tokens are
// for: entry A's account is renamed ivy → ivy2, then entry B (another key,
// another DN) takes the name ivy. B waits for A, also while A's delivery
// fails and is retried, and also when B's name is known only at Commit
// (and after a restart, from the records as stored); an entry of another
// name goes on.
func TestAccountNameOrdersDifferentEntries(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.DeliveryNames = uidNames
	opts.BackoffBase, opts.BackoffCap = 5*time.Millisecond, 10*time.Millisecond
	j := openTest(t, dir, opts)
	ctx := context.Background()
	renameA := &Record{Kind: KindAccount, Op: OpModify, DN: "cn=Ivy Irons,ou=people,dc=example,dc=org", EntryKey: "kA", Name: "ivy",
		Changes: []Change{{Op: "replace", Attr: "uid", Values: []string{"ivy2"}}}}
	a := mustPrepareCommit(t, j, renameA, "kA")
	addB := &Record{Kind: KindAccount, Op: OpAdd, DN: "cn=Ivan New,ou=people,dc=example,dc=org",
		Changes: []Change{{Op: "add", Attr: "uid", Values: []string{"IVY"}}}}
	b := mustPrepareCommit(t, j, addB, "kB")
	// C is prepared with no name (its entry unread) and named at Commit.
	c, err := j.Prepare(ctx, accountRecord("cn=Ivy Other,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.CommitNamed(ctx, c, "kC", "ivy"); err != nil {
		t.Fatal(err)
	}
	other := mustPrepareCommit(t, j, accountRecord("uid=zed,ou=people,dc=example,dc=org"), "kZ")

	// After a restart too: the index is built from the stored records.
	for round := range 2 {
		j.sched.mu.Lock()
		due, _ := j.sched.idx.due(time.Now().Add(time.Hour), 10)
		for _, d := range due {
			j.sched.idx.release(d)
		}
		j.sched.mu.Unlock()
		var dueSeqs []uint64
		for _, d := range due {
			dueSeqs = append(dueSeqs, d.seq)
		}
		slices.Sort(dueSeqs)
		if !slices.Equal(dueSeqs, []uint64{a, other}) {
			t.Fatalf("round %d: deliverable at first: %v, want A's rename (%d) and the other entry's (%d)", round, dueSeqs, a, other)
		}
		if round == 0 {
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j, err = Open(filepath.Join(dir, "journal"), opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { j.Close() })
		}
	}

	rec := make(chan uint64, 16)
	failed := false
	startRun(t, j, 4, func(_ context.Context, r *Record) error {
		if r.Seq == a && !failed {
			failed = true
			return errTestRetry
		}
		rec <- r.Seq
		return nil
	})
	var order []uint64
	for len(order) < 4 {
		select {
		case s := <-rec:
			if s != other {
				order = append(order, s)
			} else {
				order = append(order, 0)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delivered so far: %v", order)
		}
	}
	order = slices.DeleteFunc(order, func(s uint64) bool { return s == 0 })
	if want := []uint64{a, b, c}; !slices.Equal(order, want) {
		t.Errorf("records sharing account name ivy delivered in order %v, want %v", order, want)
	}
}

var errTestRetry = &retryError{}

type retryError struct{}

func (*retryError) Error() string { return "Axigen refused the COMMIT" }

// TestMayTakeOrdersAfterRestart: the names a record carries (MayTake:
// names its write may reveal) order it, as the journal stores them: B,
// deleting its first uid m1 and so maybe taking ivy, waits for A's
// rename ivy → ivy2, also after a restart, when the index is built from
// the stored records.
func TestMayTakeOrdersAfterRestart(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.DeliveryNames = func(r *Record) []string { return append(uidNames(r), r.MayTake...) }
	j := openTest(t, dir, opts)
	renameA := &Record{Kind: KindAccount, Op: OpModify, DN: "cn=Ivy Irons,ou=people,dc=example,dc=org", EntryKey: "kA", Name: "ivy",
		Changes: []Change{{Op: "replace", Attr: "uid", Values: []string{"ivy2"}}}}
	a := mustPrepareCommit(t, j, renameA, "kA")
	revealB := &Record{Kind: KindAccount, Op: OpModify, DN: "cn=multi,ou=people,dc=example,dc=org", EntryKey: "kB", Name: "m1",
		MayTake: []string{"IVY"}, Changes: []Change{{Op: "delete", Attr: "uid", Values: []string{"m1"}}}}
	b := mustPrepareCommit(t, j, revealB, "kB")
	for round := range 2 {
		j.sched.mu.Lock()
		due, _ := j.sched.idx.due(time.Now().Add(time.Hour), 10)
		for _, d := range due {
			j.sched.idx.release(d)
		}
		j.sched.mu.Unlock()
		if len(due) != 1 || due[0].seq != a {
			t.Fatalf("round %d: deliverable at first: %+v, want A's rename (%d) alone, not B (%d)", round, due, a, b)
		}
		if round == 0 {
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			var err error
			if j, err = Open(filepath.Join(dir, "journal"), opts); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { j.Close() })
		}
	}
	got, err := j.Get(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.MayTake, []string{"IVY"}) {
		t.Errorf("stored MayTake %q, want [IVY]", got.MayTake)
	}
}
