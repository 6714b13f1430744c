package e2e

// A modify DN racing a write below its entry (docs/architecture.md, "Who
// may change what": the modify DN rule, and writes on their way).

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// The move check (movedSubtree) reads what is below a unit before the move
// is relayed; an add below the unit on another connection, at the same
// moment, landed between the check and the move (found by attack-a, who
// won every round). carol (may write anything in slapd, no gateway admin)
// adds an account under ou=stN, outside the bases (relayed unjudged), and
// moves ou=stN into ou=people. Whichever the gateway sees first, the other
// must not carry an account into ou=people: the add is answered busy while
// the move is on its way, the move busy while the add is, and a move after
// the add is refused by the check.
func TestMoveRacingAnAddBelowTheUnit(t *testing.T) {
	var ldif []string
	const rounds = 15
	for i := range rounds {
		ldif = append(ldif, fmt.Sprintf("dn: ou=st%d,dc=example,dc=com\nobjectClass: organizationalUnit\nou: st%d\n", i, i))
	}
	e := newAttackEnv(t, "", ldif)
	e.waitMirrored(20*time.Second, false)
	a := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	b := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	won, busy := 0, 0
	for i := range rounds {
		unit := fmt.Sprintf("ou=st%d,dc=example,dc=com", i)
		uid := fmt.Sprintf("race%d", i)
		var wg sync.WaitGroup
		var addErr, mvErr error
		wg.Add(2)
		go func() { defer wg.Done(); addErr = b.Add(accountAdd("uid="+uid+","+unit, uid)) }()
		go func() {
			defer wg.Done()
			mvErr = a.ModifyDN(ldap.NewModifyDNRequest(unit, fmt.Sprintf("ou=st%d", i), true, mirrorAccountBase))
		}()
		wg.Wait()
		for _, err := range []error{addErr, mvErr} {
			if ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) {
				busy++
			}
		}
		moved := fmt.Sprintf("uid=%s,ou=st%d,%s", uid, i, mirrorAccountBase)
		if e.directoryEntry(moved) != nil {
			won++
			t.Errorf("round %d: carol's account %s is in ou=people (add: %v, move: %v)", i, moved, addErr, mvErr)
		}
	}
	t.Logf("%d of %d rounds won; %d writes answered busy", won, rounds, busy)
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}
