package mirror

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

func TestParseAccountDeleteAction(t *testing.T) {
	for in, want := range map[string]AccountDeleteAction{
		"": DeleteDisables, "disable": DeleteDisables, " Delete ": DeleteRemoves, "IGNORE": DeleteIgnored,
	} {
		if got, err := ParseAccountDeleteAction(in); err != nil || got != want {
			t.Errorf("ParseAccountDeleteAction(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseAccountDeleteAction("remove"); err == nil {
		t.Error(`"remove" was accepted`)
	}
}

// postmaster is always protected, whatever the list says; the list adds
// names, compared ignoring case.
func TestDeletesProtects(t *testing.T) {
	d := Deletes{Protected: []string{"abuse", " Root "}}
	for name, want := range map[string]bool{"postmaster": true, "PostMaster": true, "Abuse": true, "bob": false, "root": true, " ROOT": true} {
		if got := d.protects(name); got != want {
			t.Errorf("protects(%q) = %v, want %v", name, got, want)
		}
	}
	if !(Deletes{}).protects("postmaster") {
		t.Error("postmaster is not protected with an empty list")
	}
	for _, bad := range [][]string{{"post master"}, {" "}, {""}} {
		if CheckProtected(bad) == nil {
			t.Errorf("protected names %q accepted", bad)
		}
	}
	if err := CheckProtected([]string{" abuse ", "root"}); err != nil {
		t.Errorf("good names refused: %v", err)
	}
}

// What resync --remove-extra does to each extra account, by setting.
func TestExtraActions(t *testing.T) {
	names := []string{"postmaster", "abuse", "stray"}
	tests := []struct {
		action AccountDeleteAction
		want   []string // action per name
	}{
		{"", []string{"keep", "keep", "disable"}},
		{DeleteRemoves, []string{"keep", "keep", "remove"}},
		{DeleteIgnored, []string{"keep", "keep", "keep"}},
	}
	for _, tt := range tests {
		m := &Mirror{cfg: Config{Deletes: Deletes{OnAccountDelete: tt.action, Protected: []string{"abuse"}}}}
		got := m.extraActions(names)
		for i, a := range got {
			if a.Account != names[i] || a.Action != tt.want[i] || a.Reason == "" {
				t.Errorf("%q: %s → %+v, want action %s with a reason", tt.action, names[i], a, tt.want[i])
			}
		}
	}
}

// A record's effect on the password: deleting the attribute (or replacing
// it with nothing) removes it; a new value or a password operation sets it;
// values deleted by name leave it to the entry to tell at delivery.
func TestPasswordChangeOf(t *testing.T) {
	mp, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{"ou=people,dc=example,dc=com"}})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{}
	m.policy.Store(&Policy{Mapping: mp})
	rec := func(op store.Op, secret string, changes ...store.Change) *store.Record {
		return &store.Record{Op: op, Kind: store.KindAccount, Secret: []byte(secret), Changes: changes}
	}
	tests := []struct {
		name string
		rec  *store.Record
		want passwordChange
	}{
		{"phone", rec(store.OpModify, "", store.Change{Op: "replace", Attr: "telephoneNumber", Values: []string{"1"}}), passwordKept},
		{"delete", rec(store.OpModify, "", store.Change{Op: "delete", Attr: "userPassword"}), passwordRemoved},
		{"replace with nothing", rec(store.OpModify, "", store.Change{Op: "replace", Attr: "userPassword"}), passwordRemoved},
		{"pre-hashed value", func() *store.Record {
			r := rec(store.OpModify, "", store.Change{Op: "replace", Attr: "userPassword"})
			r.Note = "password not mirrored: pre-hashed"
			return r
		}(), passwordSet},
		{"add", rec(store.OpModify, "pw", store.Change{Op: "add", Attr: "userPassword"}), passwordSet},
		{"AD change: delete the old, add the new", rec(store.OpModify, "new",
			store.Change{Op: "delete", Attr: "userPassword"}, store.Change{Op: "add", Attr: "userPassword"}), passwordSet},
		{"plaintext", rec(store.OpModify, "pw", store.Change{Op: "replace", Attr: "userPassword"}), passwordSet},
		{"password operation", rec(store.OpPassword, ""), passwordSet},
		{"delete one of two values", rec(store.OpModify, "", store.Change{Op: "delete", Attr: "userPassword", Values: []string{passwordValuesNamed}}), passwordValuesDeleted},
		{"delete values, then the rest", rec(store.OpModify, "",
			store.Change{Op: "delete", Attr: "userPassword", Values: []string{passwordValuesNamed}},
			store.Change{Op: "delete", Attr: "userPassword"}), passwordRemoved},
		{"add the new, delete the old", rec(store.OpModify, "",
			store.Change{Op: "add", Attr: "userPassword", Values: []string{passwordValuesNamed}},
			store.Change{Op: "delete", Attr: "userPassword", Values: []string{passwordValuesNamed}}), passwordSet},
		{"delete all, add one (a hash)", rec(store.OpModify, "",
			store.Change{Op: "delete", Attr: "userPassword"},
			store.Change{Op: "add", Attr: "userPassword", Values: []string{passwordValuesNamed}}), passwordSet},
		{"replace with a hash", rec(store.OpModify, "", store.Change{Op: "replace", Attr: "userPassword", Values: []string{passwordValuesNamed}}), passwordSet},
	}
	for _, tt := range tests {
		if got := m.passwordChangeOf(tt.rec); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	// A password's removal is never left to another record's delivery.
	if m.covered(tests[1].rec) {
		t.Error("a password delete is covered by an earlier delivery")
	}

	// AD has two password attributes: clearing userPassword while
	// unicodePwd stays removes nothing; clearing both does.
	ad, err := schema.NewMapping(schema.Config{Dialect: schema.ActiveDirectory, AccountBase: schema.DNList{"cn=Users,dc=corp,dc=example,dc=com"}})
	if err != nil {
		t.Fatal(err)
	}
	m.policy.Store(&Policy{Mapping: ad})
	if got := m.passwordChangeOf(rec(store.OpModify, "", store.Change{Op: "delete", Attr: "userPassword"})); got != passwordKept {
		t.Errorf("AD, userPassword cleared: %v, want kept", got)
	}
	if got := m.passwordChangeOf(rec(store.OpModify, "", store.Change{Op: "delete", Attr: "userPassword"},
		store.Change{Op: "replace", Attr: "unicodePwd"})); got != passwordRemoved {
		t.Errorf("AD, both cleared: %v, want removed", got)
	}
}

// A delete's delivery disables the account and remembers it; the sweep
// after the grace journals a removal whose delivery removes it; a second
// sweep while that removal is queued journals nothing more. postmaster is
// kept, with an audit line saying so.
func TestDeleteGraceSweep(t *testing.T) {
	rig := newPipelineRig(t)
	m, j, audit := rig.mirror(t)
	clock := &testClock{t: time.Now()}
	m.cfg.Deletes = Deletes{DeleteAfter: time.Hour, Now: clock.Now}
	ctx := context.Background()
	for _, n := range []string{"gone", "postmaster"} {
		rig.sim.PutAccount(pipeDomain, axigensim.AccountState{Name: n, Password: "pw", Contact: map[string]string{}})
	}
	d := deliverer{m}
	for _, n := range []string{"gone", "postmaster"} {
		rec := &store.Record{Seq: 1, Kind: store.KindAccount, Op: store.OpDelete, DN: pipeUser(n), EntryKey: "key-" + n, Name: n}
		if err := d.Deliver(ctx, rec); err != nil {
			t.Fatalf("deliver the delete of %s: %v", n, err)
		}
	}
	if a, ok := rig.sim.Account(pipeDomain, "gone"); !ok || a.Enabled || a.Password != "pw" {
		t.Fatalf("after the delete: %+v, %v; want present, disabled, password kept", a, ok)
	}
	if a, ok := rig.sim.Account(pipeDomain, "postmaster"); !ok || !a.Enabled {
		t.Fatalf("postmaster after its delete: %+v, %v; want present and enabled", a, ok)
	}
	held, ok, err := j.DisabledByKey("key-gone")
	if err != nil || !ok || held.Name != "gone" || held.Reason != store.DisabledGone {
		t.Fatalf("table of disabled accounts: %+v, %v, %v", held, ok, err)
	}
	if _, ok, _ := j.Disabled("postmaster"); ok {
		t.Fatal("postmaster is in the table of disabled accounts")
	}

	clock.Advance(30 * time.Minute)
	if n, err := m.sweepOnce(ctx); err != nil || n != 0 {
		t.Fatalf("sweep within the grace: %d, %v; want nothing", n, err)
	}
	clock.Advance(90 * time.Minute)
	if n, err := m.sweepOnce(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the grace: %d, %v; want one removal", n, err)
	}
	if n, err := m.sweepOnce(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep with the removal queued: %d, %v; want nothing", n, err)
	}
	row, _, _ := j.Disabled("gone")
	rec, err := j.Get(row.RemovalSeq)
	if err != nil || rec.Actor != expiryActor || rec.State != store.StateCommitted || rec.Name != "gone" {
		t.Fatalf("the removal's record: %+v, %v", rec, err)
	}
	if err := d.Deliver(ctx, rec); err != nil {
		t.Fatalf("deliver the removal: %v", err)
	}
	if _, ok := rig.sim.Account(pipeDomain, "gone"); ok {
		t.Fatal("the account is still there after its grace")
	}
	if _, ok, _ := j.Disabled("gone"); ok {
		t.Fatal("a removed account is still in the table")
	}
	var actions []string
	for _, l := range strings.Split(audit.String(), "\n") {
		var e struct{ Msg, Action, Account string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "account" {
			actions = append(actions, e.Action+" "+e.Account)
		}
	}
	want := []string{"disabled gone", "kept postmaster", "removing gone", "removed gone"}
	if strings.Join(actions, ", ") != strings.Join(want, ", ") {
		t.Fatalf("audit: %q, want %q", actions, want)
	}
}

// testClock is a clock tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
