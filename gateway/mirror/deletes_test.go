package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// deleteRig is a Mirror over the pipeline rig with a hand-moved clock and
// helpers that change the directory behind the gateway (as the gateway's
// relay would have) and deliver the matching records.
type deleteRig struct {
	t     *testing.T
	rig   *pipelineRig
	m     *Mirror
	j     *store.Journal
	audit interface{ String() string }
	clock *testClock
	seq   uint64
}

func newDeleteRig(t *testing.T, d Deletes) *deleteRig {
	t.Helper()
	rig := newPipelineRig(t)
	m, j, audit := rig.mirror(t)
	clock := &testClock{t: time.Now().UTC()}
	d.Now = clock.Now
	m.cfg.Deletes = d
	return &deleteRig{t: t, rig: rig, m: m, j: j, audit: audit, clock: clock, seq: 100}
}

// ldif applies change records to the directory as its root.
func (r *deleteRig) ldif(s string) {
	r.t.Helper()
	if err := r.rig.dir.Load(context.Background(), s); err != nil {
		r.t.Fatal(err)
	}
}

func (r *deleteRig) key(dn string) string {
	r.t.Helper()
	k := r.m.keyOf(context.Background(), dn)
	if k == "" {
		r.t.Fatalf("no entry key for %s", dn)
	}
	return k
}

// deliver delivers rec with the next sequence number.
func (r *deleteRig) deliver(rec *store.Record) error {
	r.seq++
	rec.Seq, rec.Kind = r.seq, store.KindAccount
	return deliverer{r.m}.Deliver(context.Background(), rec)
}

func (r *deleteRig) mustDeliver(what string, rec *store.Record) {
	r.t.Helper()
	if err := r.deliver(rec); err != nil {
		r.t.Fatalf("deliver %s: %v", what, err)
	}
}

func (r *deleteRig) account(name string) (axigensim.AccountState, bool) {
	return r.rig.sim.Account(pipeDomain, name)
}

func (r *deleteRig) putAccount(name, pw string, enabled bool) {
	a := axigensim.AccountState{Name: name, Password: pw, Contact: map[string]string{}}
	if !enabled {
		a.Services = []string{}
	}
	r.rig.sim.PutAccount(pipeDomain, a)
}

// accountLines are the audit log's account lines as "action account: reason".
func (r *deleteRig) accountLines() []string {
	var out []string
	for _, l := range strings.Split(r.audit.String(), "\n") {
		var e struct{ Msg, Action, Account, Reason string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "account" {
			out = append(out, e.Action+" "+e.Account+": "+e.Reason)
		}
	}
	return out
}

func (r *deleteRig) wantAudit(prefix, contains string) {
	r.t.Helper()
	for _, l := range r.accountLines() {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, contains) {
			return
		}
	}
	r.t.Fatalf("no audit line %q…%q in %q", prefix, contains, r.accountLines())
}

// deleteAlice deletes alice's entry and delivers the delete: her account
// is disabled and held for her key.
func (r *deleteRig) deleteAlice() (key string) {
	r.t.Helper()
	key = r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: delete\n")
	r.mustDeliver("alice's delete", &store.Record{Op: store.OpDelete, DN: pipeUser("alice"), EntryKey: key, Name: "alice"})
	if a, ok := r.account("alice"); !ok || a.Enabled || a.Password != "alice-old" {
		r.t.Fatalf("alice after her delete: %+v, %v; want disabled, her password kept", a, ok)
	}
	return key
}

const newAliceLDIF = `dn: uid=alice,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: alice
cn: Alice Newcomer
sn: Newcomer
mail: alice@example.com
userPassword: new-alice-pw
`

// An entry re-added under a deleted one's name (a new entryUUID: the
// usual repair of a mistaken delete) gets the held mailbox back, enabled,
// and the audit log says it was handed over; the old password no longer
// opens it (finding 1): the add's plaintext password replaces it, and
// without one nobody's does.
func TestReaddUnderHeldNameHandsOver(t *testing.T) {
	for _, withPassword := range []bool{true, false} {
		r := newDeleteRig(t, Deletes{DeleteAfter: 720 * time.Hour})
		r.putAccount("alice", "alice-old", true)
		r.deleteAlice()

		r.ldif(newAliceLDIF)
		add := &store.Record{Op: store.OpAdd, DN: pipeUser("alice"), EntryKey: r.key(pipeUser("alice"))}
		if withPassword {
			add.Secret = []byte("new-alice-pw")
		}
		r.mustDeliver("the re-added entry's add", add)
		a, ok := r.account("alice")
		if !ok || !a.Enabled || a.Password == "alice-old" || a.Contact["lastName"] != "Newcomer" {
			t.Fatalf("password given %v: alice after the re-add: %+v, %v; want the held account, enabled, the new entry's contact, not the old password", withPassword, a, ok)
		}
		if withPassword && a.Password != "new-alice-pw" {
			t.Fatalf("alice's password %q, want the add's", a.Password)
		}
		if _, ok, _ := r.j.Disabled("alice"); ok {
			t.Fatal("the row is still there after the hand-over")
		}
		r.wantAudit("handed over alice", "re-added")
	}
}

// Finding 2: renaming an entry onto a held name neither hands the held
// mailbox over nor strands the renamed entry's own account.
func TestRenameOntoHeldNameRefused(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	r.putAccount("bob", "bob-pw", true)
	r.deleteAlice()
	bobKey := r.key(pipeUser("bob"))
	r.ldif("dn: " + pipeUser("bob") + "\nchangetype: modrdn\nnewrdn: uid=alice\ndeleteoldrdn: 1\n")
	err := r.deliver(&store.Record{Op: store.OpRename, DN: pipeUser("bob"), NewDN: pipeUser("alice"), EntryKey: bobKey, Name: "bob"})
	if err == nil || !store.IsPermanent(err) || !strings.Contains(err.Error(), "kept until removed by hand") {
		t.Fatalf("the rename onto alice: %v; want a permanent failure saying the account is kept", err)
	}
	if a, ok := r.account("alice"); !ok || a.Enabled || a.Password != "alice-old" {
		t.Fatalf("alice after bob's rename: %+v, %v; want the old, disabled account", a, ok)
	}
	if a, ok := r.account("bob"); !ok || !a.Enabled || a.Password != "bob-pw" {
		t.Fatalf("bob's account after its refused rename: %+v, %v; want it as it was", a, ok)
	}
}

// Finding 3: a late delete (old alice deleted; a new alice at another DN
// has the name now) leaves the live account alone, whatever the action.
func TestLateDeleteKeepsLiveAccount(t *testing.T) {
	for _, action := range []AccountDeleteAction{DeleteDisables, DeleteRemoves} {
		t.Run(string(action), func(t *testing.T) {
			r := newDeleteRig(t, Deletes{OnAccountDelete: action})
			r.putAccount("alice", "alice-pw", true)
			oldKey := r.key(pipeUser("alice"))
			r.ldif("dn: " + pipeUser("alice") + "\nchangetype: delete\n")
			r.ldif(strings.Replace(newAliceLDIF, "dn: uid=alice,", "dn: cn=Alice Newcomer,", 1))
			r.mustDeliver("the late delete", &store.Record{Op: store.OpDelete, DN: pipeUser("alice"), EntryKey: oldKey, Name: "alice"})
			if a, ok := r.account("alice"); !ok || !a.Enabled || a.Password != "alice-pw" {
				t.Fatalf("the live alice after a late delete: %+v, %v; want present and enabled", a, ok)
			}
			if _, ok, _ := r.j.Disabled("alice"); ok {
				t.Fatal("the live account is in the table of disabled accounts")
			}
			r.wantAudit("kept alice", "another entry")
		})
	}
}

// Finding 5: a removal is re-checked when it is delivered: not after the
// setting changed to ignore or deleteAfter 0, not for an account disabled
// again since (a second delete starts the grace again), and only for its
// own row's removal.
func TestRemovalRecheckedAtDelivery(t *testing.T) {
	r := newDeleteRig(t, Deletes{DeleteAfter: time.Hour})
	r.putAccount("alice", "alice-old", true)
	key := r.deleteAlice()
	first, _, _ := r.j.Disabled("alice")
	r.clock.Advance(2 * time.Hour)
	if n, err := r.m.sweepOnce(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	row, _, _ := r.j.Disabled("alice")
	removal, err := r.j.Get(row.RemovalSeq)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []Deletes{{OnAccountDelete: DeleteIgnored, DeleteAfter: time.Hour}, {DeleteAfter: 0}} {
		d.Now = r.clock.Now
		r.m.cfg.Deletes = d
		if err := (deliverer{r.m}).Deliver(context.Background(), removal); err != nil {
			t.Fatalf("deliver the removal: %v", err)
		}
		if _, ok := r.account("alice"); !ok {
			t.Fatalf("removed with onAccountDelete=%q deleteAfter %s", d.OnAccountDelete, d.DeleteAfter)
		}
	}
	r.wantAudit("kept alice", "removal cancelled")

	// Another delete of the entry (moved back and out again): a fresh
	// grace, and the old removal, retried, leaves it alone.
	r.m.cfg.Deletes = Deletes{DeleteAfter: time.Hour, Now: r.clock.Now}
	r.mustDeliver("alice's second delete", &store.Record{Op: store.OpDelete, DN: pipeUser("alice"), EntryKey: key, Name: "alice"})
	second, _, _ := r.j.Disabled("alice")
	if !second.Since.After(first.Since) || second.RemovalSeq != 0 {
		t.Fatalf("a second delete kept the first one's start: %+v (first %+v)", second, first)
	}
	if err := (deliverer{r.m}).Deliver(context.Background(), removal); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.account("alice"); !ok {
		t.Fatal("an old removal removed an account disabled again since")
	}
}

// Findings 10 and 11: the sweep drops a protected row (one audit line),
// journals no second removal while one is dead, starts the grace of rows
// disabled while deleteAfter was 0 when it is turned on, and journals at
// most MaxRemovalsPerSweep removals at a time.
func TestSweepBounds(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	ctx := context.Background()
	for i := range 12 {
		name := fmt.Sprintf("gone%02d", i)
		r.putAccount(name, "pw", true)
		r.mustDeliver("a delete", &store.Record{Op: store.OpDelete, DN: pipeUser(name), EntryKey: "key-" + name, Name: name})
	}
	if err := r.j.PutDisabled(ctx, store.DisabledAccount{Name: "abuse", Reason: store.DisabledGone, Since: r.clock.Now(), GraceFrom: r.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(1000 * time.Hour)
	r.m.cfg.Deletes = Deletes{DeleteAfter: time.Hour, Protected: []string{"abuse"}, MaxRemovalsPerSweep: 5, Now: r.clock.Now}
	if n, err := r.m.sweepOnce(ctx); err != nil || n != 0 {
		t.Fatalf("first sweep after deleteAfter was turned on: %d, %v; want no removal", n, err)
	}
	if _, ok, _ := r.j.Disabled("abuse"); ok {
		t.Fatal("the protected row is still there")
	}
	r.clock.Advance(2 * time.Hour)
	for _, want := range []int{5, 5, 2, 0} {
		if n, err := r.m.sweepOnce(ctx); err != nil || n != want {
			t.Fatalf("sweep: %d, %v; want %d", n, err, want)
		}
	}
	kept := 0
	for _, l := range r.accountLines() {
		if strings.HasPrefix(l, "kept abuse") {
			kept++
		}
	}
	if kept != 1 {
		t.Fatalf("%d kept lines for the protected row, want 1", kept)
	}

	// Every removal dead-letters: the sweep journals no other.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.j.Run(runCtx, 1, store.DeliverFunc(func(context.Context, *store.Record) error {
			return store.Permanent(errors.New("refused"))
		}))
	}()
	rows, _ := r.j.DisabledAccounts()
	for _, d := range rows {
		waitRecordState(t, r.j, d.RemovalSeq, store.StateDead)
	}
	cancel()
	<-done
	r.clock.Advance(24 * time.Hour)
	if n, err := r.m.sweepOnce(ctx); err != nil || n != 0 {
		t.Fatalf("sweep with every removal dead: %d, %v; want none", n, err)
	}
}

func waitRecordState(t *testing.T, j *store.Journal, seq uint64, want store.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := j.Get(seq)
		if err == nil && rec.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %d: %+v, %v; want %s", seq, rec, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Finding 6: removing the password disables the account and makes its
// password unknowable: a rename does not bring the old one back; only a
// password set through the gateway enables it again.
func TestPasswordRemovalScrambles(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	key := r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modify\ndelete: userPassword\n")
	r.mustDeliver("the password's delete", &store.Record{Op: store.OpModify, DN: pipeUser("alice"), EntryKey: key, Name: "alice",
		Changes: []store.Change{{Op: "delete", Attr: "userPassword"}}})
	a, ok := r.account("alice")
	if !ok || a.Enabled || a.Password == "alice-old" || a.Password == "" {
		t.Fatalf("after the password's delete: %+v, %v; want disabled with an unknowable password", a, ok)
	}
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modrdn\nnewrdn: uid=alicia\ndeleteoldrdn: 1\n")
	r.mustDeliver("the rename", &store.Record{Op: store.OpRename, DN: pipeUser("alice"), NewDN: pipeUser("alicia"), EntryKey: key, Name: "alice"})
	if a, ok := r.account("alicia"); !ok || a.Enabled || a.Password == "alice-old" {
		t.Fatalf("after a rename: %+v, %v; want still disabled, the old password gone", a, ok)
	}
	r.ldif("dn: " + pipeUser("alicia") + "\nchangetype: modify\nreplace: userPassword\nuserPassword: fresh\n")
	r.mustDeliver("a new password", &store.Record{Op: store.OpPassword, DN: pipeUser("alicia"), EntryKey: key, Name: "alicia", Secret: []byte("fresh")})
	if a, ok := r.account("alicia"); !ok || !a.Enabled || a.Password != "fresh" {
		t.Fatalf("after a new password: %+v, %v; want enabled with it", a, ok)
	}
}

// Finding 7: a password set on an account the gateway did not disable (an
// Axigen admin did) leaves it disabled.
func TestSettleEnablesOnlyHeldAccounts(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", false)
	key := r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modify\nreplace: userPassword\nuserPassword: fresh\n")
	r.mustDeliver("a new password", &store.Record{Op: store.OpPassword, DN: pipeUser("alice"), EntryKey: key, Name: "alice", Secret: []byte("fresh")})
	if a, ok := r.account("alice"); !ok || a.Enabled || a.Password != "fresh" {
		t.Fatalf("after a new password: %+v, %v; want the password set, still disabled", a, ok)
	}
}

// Finding 13: the row is written before the account is disabled: a
// delivery that fails after it leaves a row a replay or a return finds.
func TestRetireWritesRowFirst(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	key := r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: delete\n")
	if err := r.rig.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if err := r.deliver(&store.Record{Op: store.OpDelete, DN: pipeUser("alice"), EntryKey: key, Name: "alice"}); err == nil {
		t.Fatal("the delete was delivered with Axigen down")
	}
	if d, ok, err := r.j.DisabledByKey(key); err != nil || !ok || d.Name != "alice" {
		t.Fatalf("row after a failed disable: %+v, %v, %v; want alice's", d, ok, err)
	}
}

// Finding 4: an entry that cannot be mapped (a 300-character first name)
// still has its name seen: resync --remove-extra never takes its account
// for an extra one.
func TestResyncKeepsAccountOfUnmappableEntry(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-pw", true)
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modify\nreplace: givenName\ngivenName: " + strings.Repeat("x", 300) + "\n")
	rep, err := r.m.Resync(context.Background(), ResyncOptions{RemoveExtra: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed)+len(rep.Incomplete) == 0 {
		t.Fatalf("the entry with a value Axigen cannot take is not reported: %+v", rep)
	}
	for _, a := range rep.ExtraAccounts {
		if a == "alice" {
			t.Fatalf("alice counted as extra: %+v", rep.ExtraAccounts)
		}
	}
	if a, ok := r.account("alice"); !ok || !a.Enabled {
		t.Fatalf("alice after resync --remove-extra: %+v, %v; want present and enabled", a, ok)
	}
}

// A resync brings in line an entry holding a value Axigen cannot take
// (written in the directory behind the gateway's back) as a delivery does:
// the value is left out (Axigen keeps its own), everything else is sent,
// and the report names the entry as synced but for that value, not as
// failed.
func TestResyncLeavesOutAValueAxigenCannotTake(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.rig.sim.PutAccount(pipeDomain, axigensim.AccountState{Name: "alice", Password: "alice-pw",
		Contact: map[string]string{"nickName": "Al", "phone": "+1 555 0101"}})
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modify\nreplace: displayName\ndisplayName: " + strings.Repeat("x", schema.MaxShortValue+45) +
		"\n-\nreplace: telephoneNumber\ntelephoneNumber: +1 555 0142\n")
	rep, err := r.m.Resync(context.Background(), ResyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 0 {
		t.Errorf("failed: %v; want none", rep.Failed)
	}
	if len(rep.Incomplete) != 1 || !strings.Contains(rep.Incomplete[0], pipeUser("alice")) || !strings.Contains(rep.Incomplete[0], "displayName") {
		t.Errorf("incomplete: %q; want alice's displayName named", rep.Incomplete)
	}
	a, ok := r.account("alice")
	if !ok || a.Contact["phone"] != "+1 555 0142" || a.Contact["nickName"] != "Al" {
		t.Errorf("alice in Axigen after the resync: %+v, %v; want the new phone and her own nickName kept", a, ok)
	}
}

// Finding 15: a resync enables an account the table holds for a lock its
// entry no longer has (a ppolicy lock expires inside the directory), and
// no other disabled account.
func TestResyncEnablesExpiredLock(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-pw", false)
	r.putAccount("bob", "bob-pw", false)
	if err := r.j.PutDisabled(context.Background(), store.DisabledAccount{Name: "alice", EntryKey: r.key(pipeUser("alice")),
		Reason: store.DisabledLocked, Since: r.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	dry, err := r.m.Resync(context.Background(), ResyncOptions{DryRun: true})
	if err != nil || len(dry.Unlocked) != 1 || dry.Unlocked[0] != "alice" {
		t.Fatalf("dry run: %+v, %v; want alice listed", dry, err)
	}
	if a, _ := r.account("alice"); a.Enabled {
		t.Fatal("the dry run enabled alice")
	}
	rep, err := r.m.Resync(context.Background(), ResyncOptions{})
	if err != nil || len(rep.Unlocked) != 1 {
		t.Fatalf("resync: %+v, %v", rep, err)
	}
	if a, _ := r.account("alice"); !a.Enabled {
		t.Fatal("alice, held for an expired lock, still disabled")
	}
	if a, _ := r.account("bob"); a.Enabled {
		t.Fatal("resync enabled bob, whom the gateway never disabled")
	}
	if _, ok, _ := r.j.Disabled("alice"); ok {
		t.Fatal("alice's row is still there")
	}
}

// Finding 3, the other order: the newcomer's add comes to delivery while
// the delete of the earlier entry of that name is still pending (it
// failed, and waits for its retry): the add waits (a retryable failure)
// rather than take over the earlier entry's account; once the delete is
// delivered the add takes the held account over, without the old password.
func TestAddWaitsForEarlierDeleteOfTheName(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	ctx := context.Background()
	journal := func(rec *store.Record, key string) *store.Record {
		t.Helper()
		seq, err := r.j.Prepare(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.j.Commit(ctx, seq, key); err != nil {
			t.Fatal(err)
		}
		got, err := r.j.Get(seq)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	oldKey := r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: delete\n")
	del := journal(&store.Record{Kind: store.KindAccount, Op: store.OpDelete, DN: pipeUser("alice"), EntryKey: oldKey, Name: "alice"}, oldKey)
	r.ldif(newAliceLDIF)
	newKey := r.key(pipeUser("alice"))
	add := journal(&store.Record{Kind: store.KindAccount, Op: store.OpAdd, DN: pipeUser("alice"), Secret: []byte("new-alice-pw")}, newKey)
	d := deliverer{r.m}

	err := d.Deliver(ctx, add)
	if err == nil || store.IsPermanent(err) || !strings.Contains(err.Error(), fmt.Sprintf("record %d", del.Seq)) {
		t.Fatalf("the add before the earlier delete: %v; want a retryable failure naming record %d", err, del.Seq)
	}
	if a, ok := r.account("alice"); !ok || !a.Enabled || a.Password != "alice-old" || a.Contact["lastName"] == "Newcomer" {
		t.Fatalf("alice's account after the newcomer's early add: %+v, %v; want it untouched", a, ok)
	}
	// The delete holds the account although an entry has the name: that
	// entry's add waits for it.
	if err := d.Deliver(ctx, del); err != nil {
		t.Fatal(err)
	}
	if row, ok, _ := r.j.Disabled("alice"); !ok || row.EntryKey != oldKey {
		t.Fatalf("row after the delete: %+v, %v; want alice held for her old key", row, ok)
	}
	if err := r.j.Drop(ctx, del.Seq); err != nil { // delivered: no longer pending
		t.Fatal(err)
	}
	// Delivered after the delete, the re-added entry's add takes the held
	// account over, with its own password.
	if err := d.Deliver(ctx, add); err != nil {
		t.Fatalf("the add after the delete: %v", err)
	}
	// (The journal's Get gives the record without its sealed password: the
	// account gets one nobody knows, never the old one.)
	if a, ok := r.account("alice"); !ok || !a.Enabled || a.Password == "alice-old" || a.Contact["lastName"] != "Newcomer" {
		t.Fatalf("alice's account at the end: %+v, %v; want it handed over, enabled, not with the old password", a, ok)
	}
}

// Two password writes to one entry that reached the directory in another
// order than the journal's: the record whose password the directory no
// longer holds sends none, whatever order the records are delivered in.
func TestSupersededPasswordIsNotSent(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	key := r.key(pipeUser("alice"))
	r.ldif("dn: " + pipeUser("alice") + "\nchangetype: modify\nreplace: userPassword\nuserPassword: second\n")
	r.mustDeliver("the directory's last password", &store.Record{Op: store.OpPassword, DN: pipeUser("alice"), EntryKey: key, Name: "alice", Secret: []byte("second")})
	r.mustDeliver("the one it replaced, delivered last", &store.Record{Op: store.OpPassword, DN: pipeUser("alice"), EntryKey: key, Name: "alice", Secret: []byte("first")})
	if a, ok := r.account("alice"); !ok || a.Password != "second" || !a.Enabled {
		t.Fatalf("Axigen has %+v, %v; want the directory's password, second", a, ok)
	}
}
