package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// The registry's rule: a write below a modify DN's old or new DN waits for
// it, a modify DN waits for the writes below it, writes of leaf entries do
// not wait for each other, and a write to the moved entry itself waits
// only for a move that holds it (one into, out of or between the bases).
func TestOnWayRegistry(t *testing.T) {
	const unit, moved = "ou=st,dc=x", "ou=st,ou=people,dc=x"
	var o onWay
	a, _, _, ok := o.take([]string{"uid=a,ou=people,dc=x", ""}, false, false, false)
	if !ok {
		t.Fatal("a modify of a leaf waits with nothing on its way")
	}
	a2, _, _, ok := o.take([]string{"uid=a,ou=people,dc=x", ""}, false, false, false)
	if !ok {
		t.Fatal("a second modify of one leaf waits for the first")
	}
	mv, _, _, ok := o.take([]string{unit, moved}, true, true, false)
	if !ok {
		t.Fatal("a move waits for a write outside its subtrees")
	}
	for _, dn := range []string{unit, "uid=r,ou=st,dc=x", "cn=deep,uid=r,ou=st,dc=x", moved, "uid=r," + moved} {
		if _, blocker, _, ok := o.take([]string{dn, ""}, false, false, false); ok || blocker == "" {
			t.Errorf("a write to %s, with the move of %s on its way: let through (blocker %q)", dn, unit, blocker)
		}
		// Nor as the new DN of another move.
		if _, _, _, ok := o.take([]string{"ou=other,dc=x", dn}, true, false, false); ok {
			t.Errorf("a move to %s, with the move of %s on its way: let through", dn, unit)
		}
	}
	// Above the moved entry, or beside it (a value ending like it, a ','
	// escaped in the canonical form), no wait.
	for _, dn := range []string{"dc=x", "ou=people,dc=x", "ou=st2,dc=x", `ou=a\2cou=st,dc=x`, "uid=b,ou=people,dc=x"} {
		h, blocker, _, ok := o.take([]string{dn, ""}, false, false, false)
		if !ok {
			t.Errorf("a write to %s waits for %q", dn, blocker)
		}
		o.release(h)
	}
	// A move of an entry above the one moving, or of one below it, waits.
	for _, move := range [][2]string{{"ou=people,dc=x", "ou=folk,dc=x"}, {"uid=r,ou=st,dc=x", "uid=r,dc=x"}, {"ou=y,dc=x", "ou=y,uid=r,ou=st,dc=x"}} {
		if _, _, _, ok := o.take(move[:], true, false, false); ok {
			t.Errorf("a move %s -> %s, with the move of %s on its way: let through", move[0], move[1], unit)
		}
	}
	ended := o.ended()
	o.release(mv)
	if o.ended() != ended+1 {
		t.Errorf("the move's end is not counted")
	}
	// The move answered, a write below the unit goes; and a move of the
	// unit now waits for it.
	add, _, _, ok := o.take([]string{"uid=r,ou=st,dc=x", ""}, false, false, false)
	if !ok {
		t.Fatal("a write below the unit waits once the move is answered")
	}
	if _, blocker, _, ok := o.take([]string{unit, moved}, true, false, false); ok || blocker != "uid=r,ou=st,dc=x" {
		t.Errorf("the move of %s with an add below it on its way: ok %v, blocker %q", unit, ok, blocker)
	}
	// A move taking an account out of the base, with a modify of it on
	// its way, is answered at once.
	if _, _, wait, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=out,dc=x"}, true, true, false); ok || wait != nil {
		t.Errorf("a move of an account out of the base, with a modify of it on its way: ok %v, waits %v", ok, wait != nil)
	}
	// A rename, even in the base, waits for the modifies of its entry (an
	// identity change goes alone); then a modify of the entry, or another
	// rename of it, or a write to its new DN, waits for it.
	_, blocker, wait, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=a2,ou=people,dc=x"}, true, false, true)
	if ok || wait == nil || blocker != "uid=a,ou=people,dc=x" {
		t.Fatalf("a rename with modifies of its entry on their way: ok %v, waits %v, blocker %q", ok, wait != nil, blocker)
	}
	o.release(a)
	select {
	case <-wait:
	default:
		t.Fatal("a release does not wake the rename waiting")
	}
	o.release(a2)
	rn, blocker, _, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=a2,ou=people,dc=x"}, true, false, true)
	if !ok {
		t.Fatalf("a rename waits once the modifies of its entry are answered (%q)", blocker)
	}
	for _, w := range []struct {
		dns             []string
		move, exclusive bool
	}{
		{[]string{"uid=a,ou=people,dc=x", ""}, false, false},
		{[]string{"uid=a2,ou=people,dc=x", ""}, false, false},
		{[]string{"uid=a,ou=people,dc=x", "uid=a3,ou=people,dc=x"}, true, true},
		{[]string{"uid=a,ou=people,dc=x", ""}, false, true},
	} {
		if _, _, wait, ok := o.take(w.dns, w.move, false, w.exclusive); ok || wait == nil {
			t.Errorf("%v with a rename of its entry on its way: ok %v, waits %v", w, ok, wait != nil)
		}
	}
	// A modify of another entry goes.
	m3, blocker, _, ok := o.take([]string{"uid=b,ou=people,dc=x", ""}, false, false, true)
	if !ok {
		t.Fatalf("a rename of another entry goes with a rename of uid=a (%q)", blocker)
	}
	ended = o.ended()
	o.release(rn)
	if o.ended() != ended+1 {
		t.Errorf("the rename's end is not counted")
	}
	rn2, blocker, _, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=a,ou=people,dc=x"}, true, false, true)
	if !ok {
		t.Fatalf("a rename waits for another of its entry, answered (%q)", blocker)
	}
	for _, h := range []onWayHold{add, rn2, m3, {}} {
		o.release(h)
	}
	if len(o.writes) != 0 || len(o.moves) != 0 || len(o.entries) != 0 || len(o.exclusive) != 0 {
		t.Errorf("released everything, the registry holds %v, %v, %v", o.writes, o.moves, o.entries)
	}
}

// Many writes and moves at once (run with -race): no two writes the rule
// serialises are ever let through together, and every hold is released.
func TestOnWayRegistryConcurrent(t *testing.T) {
	var o onWay
	dns := []string{"dc=x", "ou=a,dc=x", "ou=b,dc=x", "uid=1,ou=a,dc=x", "uid=2,ou=a,dc=x", "uid=1,ou=b,dc=x", "cn=c,uid=1,ou=a,dc=x"}
	type held struct {
		dns                     []string
		move, entire, exclusive bool
	}
	var mu sync.Mutex
	active := map[*held]bool{}
	conflict := func(x, y *held) bool {
		for _, p := range x.dns {
			for _, q := range y.dns {
				if (x.move && below(q, p)) || (y.move && below(p, q)) || ((x.entire || y.entire || x.exclusive || y.exclusive) && p == q) {
					return true
				}
			}
		}
		return false
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			for range 2000 {
				h := &held{dns: []string{dns[rnd.IntN(len(dns))]}, move: rnd.IntN(4) == 0}
				if h.move {
					h.dns = append(h.dns, dns[rnd.IntN(len(dns))])
					h.entire = rnd.IntN(2) == 0
				}
				h.exclusive = h.move || rnd.IntN(4) == 0
				hold, _, _, ok := o.take(h.dns, h.move, h.entire, h.exclusive)
				if !ok {
					continue
				}
				mu.Lock()
				for other := range active {
					if conflict(h, other) {
						select {
						case errs <- fmt.Sprintf("%+v and %+v let through together", *h, *other):
						default:
						}
					}
				}
				active[h] = true
				mu.Unlock()
				mu.Lock()
				delete(active, h)
				mu.Unlock()
				o.release(hold)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if len(o.writes) != 0 || len(o.moves) != 0 || len(o.entries) != 0 || len(o.exclusive) != 0 {
		t.Errorf("released everything, the registry holds %v, %v, %v", o.writes, o.moves, o.entries)
	}
}

// Through Intercept: the move of a unit outside the bases into the
// account base, racing an add below the unit (relayed unjudged), is
// serialised with it; a refused write holds nothing.
func TestMoveSerialisedWithAWriteBelow(t *testing.T) {
	r := newPipelineRigWith(t, slapd.Options{LDIF: []string{
		"dn: ou=st," + pipeSuffix + "\nobjectClass: organizationalUnit\nou: st\n",
		"dn: ou=full," + pipeSuffix + "\nobjectClass: organizationalUnit\nou: full\n",
		"dn: uid=in,ou=full," + pipeSuffix + "\nobjectClass: inetOrgPerson\nuid: in\ncn: In\nsn: In\n",
	}})
	m, _, _ := r.mirror(t)
	ctx := context.Background()
	move := func(ou string) *gateway.WriteRequest {
		return &gateway.WriteRequest{Op: gateway.OpModifyDN, DN: "ou=" + ou + "," + pipeSuffix, NewRDN: "ou=" + ou,
			DeleteOldRDN: true, NewSuperior: "ou=people," + pipeSuffix}
	}
	addBelow := func(ou string) *gateway.WriteRequest {
		req := addAccount("race")
		req.DN = "uid=race,ou=" + ou + "," + pipeSuffix
		return req
	}
	moving, answer := intercept(ctx, m, pipeAdminDN, move("st"))
	wantAnswer(t, answer, 0, "")
	if moving == nil {
		t.Fatal("the move has no completion")
	}
	_, answer = intercept(ctx, m, pipeAdminDN, addBelow("st"))
	wantAnswer(t, answer, ldap.LDAPResultBusy, `a modify DN of "ou=st,dc=example,dc=com"`)
	// The move takes the unit into the base: a write to the unit itself
	// (judged as outside the bases) waits too.
	_, answer = intercept(ctx, m, pipeAdminDN, replace("ou=st,"+pipeSuffix, "description", "x"))
	wantAnswer(t, answer, ldap.LDAPResultBusy, `a modify DN of "ou=st,dc=example,dc=com"`)
	// A write elsewhere goes.
	done, answer := intercept(ctx, m, pipeAdminDN, replace(pipeUser("bob"), "telephoneNumber", "+1 555 0199"))
	wantAnswer(t, answer, 0, "")
	done(ctx, gateway.Result{Code: ldap.LDAPResultOther})

	// The move answered (refused, say): the add goes, and holds the unit
	// until its own answer.
	moving(ctx, gateway.Result{Code: ldap.LDAPResultOther})
	adding, answer := intercept(ctx, m, pipeAdminDN, addBelow("st"))
	wantAnswer(t, answer, 0, "")
	if adding == nil {
		t.Fatal("the add below the unit (outside the bases) has no completion")
	}
	_, answer = intercept(ctx, m, pipeAdminDN, move("st"))
	wantAnswer(t, answer, ldap.LDAPResultBusy, `"uid=race,ou=st,dc=example,dc=com"`)
	adding(ctx, gateway.Result{Code: ldap.LDAPResultOther, Unanswered: true})
	moving, answer = intercept(ctx, m, pipeAdminDN, move("st"))
	wantAnswer(t, answer, 0, "")
	moving(ctx, gateway.Result{Code: ldap.LDAPResultOther})

	// A move the check refuses holds nothing once answered.
	_, answer = intercept(ctx, m, pipeAdminDN, move("full"))
	wantAnswer(t, answer, ldap.LDAPResultUnwillingToPerform, "would move the accounts or groups below it")
	done, answer = intercept(ctx, m, pipeAdminDN, addBelow("full"))
	wantAnswer(t, answer, 0, "")
	done(ctx, gateway.Result{Code: ldap.LDAPResultOther})
	if len(m.onWay.writes) != 0 || len(m.onWay.moves) != 0 || len(m.onWay.entries) != 0 {
		t.Errorf("every write answered, the registry holds %v, %v, %v", m.onWay.writes, m.onWay.moves, m.onWay.entries)
	}
}

// hold waits for the writes an identity change must not go with: it sends
// what the session buffers first (flush), goes once they are answered,
// and gives up after its patience; a modify DN in the way answers at once.
func TestOnWayHoldWaits(t *testing.T) {
	var o onWay
	const dn = "uid=a,ou=people,dc=x"
	modify, _, _, ok := o.take([]string{dn, ""}, false, false, false)
	if !ok {
		t.Fatal("a modify of a leaf waits with nothing on its way")
	}
	flushed := make(chan struct{}, 4)
	flush := func() { flushed <- struct{}{} }
	got := make(chan onWayHold, 1)
	go func() {
		h, blocker, waited, ok := o.hold(context.Background(), []string{dn, "uid=a2,ou=people,dc=x"}, true, false, true, time.Minute, flush)
		if !ok || waited {
			t.Errorf("the rename, the modify answered: ok %v, waited in vain %v, blocker %q", ok, waited, blocker)
		}
		got <- h
	}()
	select {
	case <-flushed:
	case <-time.After(10 * time.Second):
		t.Fatal("the rename waits without sending what its session buffers")
	}
	select {
	case <-got:
		t.Fatal("the rename went with a modify of its entry on its way")
	default:
	}
	o.release(modify)
	var rename onWayHold
	select {
	case rename = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the rename still waits once the modify is answered")
	}
	// The rename on its way: a modify of the entry waits, in vain here.
	start := time.Now()
	_, blocker, waited, ok := o.hold(context.Background(), []string{dn, ""}, false, false, false, 50*time.Millisecond, nil)
	if ok || !waited || blocker != dn {
		t.Errorf("a modify with the rename on its way: ok %v, waited %v, blocker %q", ok, waited, blocker)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("gave up after %v, before its patience", d)
	}
	// A cancelled request waits no more.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, waited, ok := o.hold(ctx, []string{dn, ""}, false, false, false, time.Minute, nil); ok || !waited {
		t.Errorf("a cancelled modify: ok %v, waited %v", ok, waited)
	}
	// Below the rename's entry, a write is answered at once (a move).
	if _, _, waited, ok := o.hold(context.Background(), []string{"cn=x," + dn, ""}, false, false, false, time.Minute, flush); ok || waited {
		t.Errorf("a write below the rename on its way: ok %v, waited %v", ok, waited)
	}
	o.release(rename)
	if len(o.writes) != 0 || len(o.moves) != 0 || len(o.entries) != 0 || len(o.exclusive) != 0 {
		t.Errorf("released everything, the registry holds %v, %v, %v, %v", o.writes, o.moves, o.entries, o.exclusive)
	}
}
