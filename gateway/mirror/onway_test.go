package mirror

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

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
	a, _, ok := o.take([]string{"uid=a,ou=people,dc=x", ""}, false, false)
	if !ok {
		t.Fatal("a modify of a leaf waits with nothing on its way")
	}
	a2, _, ok := o.take([]string{"uid=a,ou=people,dc=x", ""}, false, false)
	if !ok {
		t.Fatal("a second modify of one leaf waits for the first")
	}
	mv, _, ok := o.take([]string{unit, moved}, true, true)
	if !ok {
		t.Fatal("a move waits for a write outside its subtrees")
	}
	for _, dn := range []string{unit, "uid=r,ou=st,dc=x", "cn=deep,uid=r,ou=st,dc=x", moved, "uid=r," + moved} {
		if _, blocker, ok := o.take([]string{dn, ""}, false, false); ok || blocker == "" {
			t.Errorf("a write to %s, with the move of %s on its way: let through (blocker %q)", dn, unit, blocker)
		}
		// Nor as the new DN of another move.
		if _, _, ok := o.take([]string{"ou=other,dc=x", dn}, true, false); ok {
			t.Errorf("a move to %s, with the move of %s on its way: let through", dn, unit)
		}
	}
	// Above the moved entry, or beside it (a value ending like it, a ','
	// escaped in the canonical form), no wait.
	for _, dn := range []string{"dc=x", "ou=people,dc=x", "ou=st2,dc=x", `ou=a\2cou=st,dc=x`, "uid=b,ou=people,dc=x"} {
		h, blocker, ok := o.take([]string{dn, ""}, false, false)
		if !ok {
			t.Errorf("a write to %s waits for %q", dn, blocker)
		}
		o.release(h)
	}
	// A move of an entry above the one moving, or of one below it, waits.
	for _, move := range [][2]string{{"ou=people,dc=x", "ou=folk,dc=x"}, {"uid=r,ou=st,dc=x", "uid=r,dc=x"}, {"ou=y,dc=x", "ou=y,uid=r,ou=st,dc=x"}} {
		if _, _, ok := o.take(move[:], true, false); ok {
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
	add, _, ok := o.take([]string{"uid=r,ou=st,dc=x", ""}, false, false)
	if !ok {
		t.Fatal("a write below the unit waits once the move is answered")
	}
	if _, blocker, ok := o.take([]string{unit, moved}, true, false); ok || blocker != "uid=r,ou=st,dc=x" {
		t.Errorf("the move of %s with an add below it on its way: ok %v, blocker %q", unit, ok, blocker)
	}
	// A rename keeping its entry in scope does not wait for a modify of
	// the entry, nor a modify for it, nor one rename for another of it;
	// one taking the entry out of scope waits.
	if _, _, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=out,dc=x"}, true, true); ok {
		t.Errorf("a move of an account out of the base, with a modify of it on its way: let through")
	}
	rn, blocker, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=a2,ou=people,dc=x"}, true, false)
	if !ok {
		t.Fatalf("a rename in the base waits for a modify of its entry (%q)", blocker)
	}
	rn2, blocker, ok := o.take([]string{"uid=a,ou=people,dc=x", "uid=a,ou=people,dc=x"}, true, false)
	if !ok {
		t.Fatalf("a rename in the base waits for another of its entry (%q)", blocker)
	}
	m3, blocker, ok := o.take([]string{"uid=a,ou=people,dc=x", ""}, false, false)
	if !ok {
		t.Fatalf("a modify waits for a rename of its entry in the base (%q)", blocker)
	}
	for _, h := range []onWayHold{add, a, a2, rn, rn2, m3, {}} {
		o.release(h)
	}
	if len(o.writes) != 0 || len(o.moves) != 0 || len(o.entries) != 0 {
		t.Errorf("released everything, the registry holds %v, %v, %v", o.writes, o.moves, o.entries)
	}
}

// Many writes and moves at once (run with -race): no two writes the rule
// serialises are ever let through together, and every hold is released.
func TestOnWayRegistryConcurrent(t *testing.T) {
	var o onWay
	dns := []string{"dc=x", "ou=a,dc=x", "ou=b,dc=x", "uid=1,ou=a,dc=x", "uid=2,ou=a,dc=x", "uid=1,ou=b,dc=x", "cn=c,uid=1,ou=a,dc=x"}
	type held struct {
		dns          []string
		move, entire bool
	}
	var mu sync.Mutex
	active := map[*held]bool{}
	conflict := func(x, y *held) bool {
		for _, p := range x.dns {
			for _, q := range y.dns {
				if (x.move && below(q, p)) || (y.move && below(p, q)) || ((x.entire || y.entire) && p == q) {
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
				hold, _, ok := o.take(h.dns, h.move, h.entire)
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
	if len(o.writes) != 0 || len(o.moves) != 0 || len(o.entries) != 0 {
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
