package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// Attacks on the cluster's ordering of password modify extended operations
// against adds, deletes and renames of their DNs through other gateways
// (gateway/mirror/clusterorder.go, store.Journal.PreparedBefore): a password
// modify waits, after its Prepare, until no earlier identity change at its
// DN is prepared, then reads its target's key again; an identity change
// waits for earlier prepared password modifies at its DNs. Each test ends
// with every Axigen account's password one the directory binds that
// account's entry with, wherever the entry is.

// orderPatience bounds one answer: the gateway's wait gives up after its
// holdPatience (10 s), and a cluster may need an election on top.
const orderPatience = 25 * time.Second

// exopTally counts a password writer's answers and keeps the slowest.
type exopTally struct {
	mu      sync.Mutex
	ok      int
	busy    int
	gone    int // noSuchObject
	goneWhy map[string]int
	other   map[string]int
	slowest time.Duration
	acked   []string
}

func (x *exopTally) note(pw string, took time.Duration, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.slowest = max(x.slowest, took)
	switch {
	case err == nil:
		x.ok++
		x.acked = append(x.acked, pw)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultBusy):
		x.busy++
	case ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject):
		x.gone++
		if x.goneWhy == nil {
			x.goneWhy = map[string]int{}
		}
		x.goneWhy[err.Error()]++
	default:
		if x.other == nil {
			x.other = map[string]int{}
		}
		x.other[err.Error()]++
	}
}

func (x *exopTally) String() string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return fmt.Sprintf("%d ok, %d busy, %d noSuchObject %v, other %v, slowest %v", x.ok, x.busy, x.gone, x.goneWhy, x.other, x.slowest)
}

// exopWriter sets passwords through conn until stop is closed, cycling over
// the DNs dns gives (spelled as the test wants), and tallies the answers.
// An empty DN is a password modify of the session's own entry; generated
// asks the directory to make the password up.
func exopWriter(conn *ldap.Conn, tag string, dns []string, generated bool, stop <-chan struct{}, x *exopTally, wg *sync.WaitGroup) {
	defer wg.Done()
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		default:
		}
		dn := dns[k%len(dns)]
		pw := fmt.Sprintf("%s-%d", tag, k)
		if generated && k%2 == 1 {
			pw = ""
		}
		start := time.Now()
		res, err := conn.PasswordModify(ldap.NewPasswordModifyRequest(dn, "", pw))
		if err == nil && pw == "" {
			pw = res.GeneratedPassword
		}
		x.note(pw, time.Since(start), err)
	}
}

// checkPasswordsAnywhere binds to the directory, with Axigen's password,
// as the entry of every Axigen account, found by its uid anywhere in the
// suffix (checkPasswords looks only at uid=<name> right under the account
// base).
func (c *clusterEnv) checkPasswordsAnywhere() {
	c.t.Helper()
	admin, err := c.e.dir.AdminConn(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	defer admin.Close()
	direct, err := c.e.dir.Dial(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	defer direct.Close()
	for _, a := range c.e.sim.Accounts(mirrorDomain) {
		res, err := admin.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(uid="+ldap.EscapeFilter(a.Name)+")", []string{"cn"}, nil))
		if err != nil {
			c.t.Fatal(err)
		}
		if len(res.Entries) != 1 {
			c.t.Errorf("account %s: %d entries with that uid in the account base", a.Name, len(res.Entries))
			continue
		}
		dn := res.Entries[0].DN
		if err := direct.Bind(dn, a.Password); err != nil {
			c.t.Errorf("account %s (%s, cn %q): Axigen's password %q is not one the directory binds with: %v",
				a.Name, dn, res.Entries[0].GetAttributeValue("cn"), a.Password, err)
		}
	}
}

// orderSwaps swaps alice and bob through tmp rounds times, each rename
// through the next of conns, the DNs spelled by dn.
func orderSwaps(t *testing.T, conns []*ldap.Conn, rounds int, dn func(uid string) string, rdn func(uid string) string) {
	t.Helper()
	for i := range rounds {
		for s, step := range [][2]string{{"alice", "tmp"}, {"bob", "alice"}, {"tmp", "bob"}} {
			mustRename(t, conns[(i+s)%len(conns)], dn(step[0]), rdn(step[1]), true, "")
		}
	}
}

func canonicalRDN(uid string) string { return "uid=" + uid }

// HELD (3 of 3 runs, ~15 s each).
//
// Idea 1: gateway A sets alice's password in a loop while gateway B deletes
// uid=alice and gateway C adds a new entry there (its own initial
// password), over and over. Every acknowledged password modify must have
// landed on the entry its record names: at the end Axigen's alice has a
// password the directory binds the last newcomer with.
func TestAttackClusterOrderExopRacingDeleteAndReAdd(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(1)
	go exopWriter(c.adminConn(c.members()[0]), "readd", []string{userDN("alice")}, false, stop, &x, &wg)
	for i := range 15 {
		deadline := time.Now().Add(orderPatience)
		for {
			err := g[1].Del(ldap.NewDelRequest(userDN("alice"), nil))
			if err == nil {
				break
			}
			if !ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) || time.Now().After(deadline) {
				t.Fatalf("round %d: delete uid=alice: %v", i, err)
			}
		}
		add := accountAdd(userDN("alice"), "alice")
		add.Attributes[2] = ldap.Attribute{Type: "cn", Vals: []string{fmt.Sprintf("Newcomer %d", i)}}
		deadline = time.Now().Add(orderPatience)
		for {
			err := g[2].Add(add)
			if err == nil {
				break
			}
			if !ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) || time.Now().After(deadline) {
				t.Fatalf("round %d: add uid=alice: %v", i, err)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("password modifies: %v", &x)
	if x.slowest > orderPatience {
		t.Errorf("a password modify took %v", x.slowest)
	}
	c.converged(30 * time.Second)
	c.checkPasswords()
	if a, ok := c.e.sim.Account(mirrorDomain, "alice"); !ok {
		t.Error("Axigen has no alice")
	} else if a.Password == slapd.AlicePassword {
		t.Errorf("Axigen's alice still has the first alice's password %q", a.Password)
	}
}

// HELD (3 of 3 runs, ~15 s).
//
// Idea 2: alice, bound as herself through gateway A, changes her own
// password (no DN in the request: the directory takes the session's bind
// DN) in a loop, while alice and bob swap names through B and C. Once bob
// holds uid=alice, alice's session names bob's entry (the directory and
// the gateway both take the bind DN as it was spelled): that is the
// directory's semantics; what must hold is that Axigen's accounts end with
// passwords the directory binds them with.
func TestAttackClusterOrderSelfExopRacingSwaps(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	self := bindConn(t, c.members()[0].url, userDN("alice"), slapd.AlicePassword)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(1)
	go exopWriter(self, "self", []string{""}, false, stop, &x, &wg)
	orderSwaps(t, g[1:], 15, userDN, canonicalRDN)
	close(stop)
	wg.Wait()
	t.Logf("own password modifies: %v", &x)
	if x.slowest > orderPatience {
		t.Errorf("a password modify took %v", x.slowest)
	}
	c.converged(30 * time.Second)
	c.checkPasswords()
}

// oidDN spells an account's DN with uid's OID and odd case and spaces.
func oidDN(uid string) string {
	return "0.9.2342.19200300.100.1.1=" + uid + " , OU=People , " + strings.ToUpper(mirrorSuffix)
}

// HELD (3 of 3 runs, ~6 s).
//
// Idea 3: the DN of a password modify spelled otherwise than the renames'
// (upper case, uid's OID, spaces around the separators), and the renames
// spelled oddly while the password modifies are canonical. The journal
// matches DNs through the mapping's EqualDN: a spelling it did not take as
// equal would let the two race.
func TestAttackClusterOrderOddSpellings(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	upper := func(uid string) string { return strings.ToUpper(userDN(uid)) }
	spaced := func(uid string) string { return " uid = " + uid + " ,  ou=people," + mirrorSuffix }
	for _, phase := range []struct {
		name          string
		exop, rename  func(string) string
		rdn           func(string) string
		exopGenerated bool
	}{
		{"exop upper case", upper, userDN, canonicalRDN, false},
		{"exop OID", oidDN, userDN, canonicalRDN, true},
		{"exop spaces", spaced, userDN, canonicalRDN, false},
		{"renames OID", userDN, oidDN, func(uid string) string { return "0.9.2342.19200300.100.1.1=" + uid }, false},
		{"renames upper case", userDN, upper, func(uid string) string { return "UID=" + uid }, true},
	} {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var x exopTally
		wg.Add(1)
		go exopWriter(g[2], "odd", []string{phase.exop("alice"), phase.exop("bob")}, phase.exopGenerated, stop, &x, &wg)
		orderSwaps(t, g[:2], 6, phase.rename, phase.rdn)
		close(stop)
		wg.Wait()
		t.Logf("%s: %v", phase.name, &x)
		if x.ok == 0 {
			t.Errorf("%s: no password modify taken: %v", phase.name, &x)
		}
	}
	c.converged(30 * time.Second)
	c.checkPasswords()
}

// longTest skips a test that runs longer than the attack suites' budget
// unless asked for.
func longTest(t *testing.T) {
	t.Helper()
	if os.Getenv("LDAPGATE_OPEN_FINDINGS") == "" && os.Getenv("LDAPGATE_LONG") == "" {
		t.Skip("long (over 20 s): LDAPGATE_LONG=1 runs it")
	}
}

// passwordModifyRaw is a password modify extended request for a raw
// connection.
func passwordModifyRaw(id int64, dn, pw string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "1.3.6.1.4.1.4203.1.11.1", "name"))
	v := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "passwd")
	if dn != "" {
		v.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, dn, "id"))
	}
	v.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 2, pw, "new"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 1, string(v.Bytes()), "value"))
	return envelope(id, op)
}

// HELD (3 of 3 runs, ~10 s).
//
// Idea 4: on one connection to one gateway of the cluster, in one TCP
// segment: rename alice -> tmp, set uid=tmp's password, rename tmp ->
// alice, set uid=alice's password. The password modify of uid=tmp waits
// for an earlier rename at its DN: its own session's, not sent on yet
// (the gateway sends a buffered write on only with the next). It must not
// wait on itself until holdPatience, and each write must succeed.
func TestAttackClusterOrderPipelinedRenameThenExop(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	for _, n := range c.members() {
		raw := adminRaw(t, n.url, c.e.dir.RootPW)
		last := ""
		for round := range 2 {
			var burst []byte
			last = fmt.Sprintf("pipe-%s-%d-b", n.name, round)
			burst = append(burst, modDNRequest(2, userDN("alice"), "uid=tmp", "")...)
			burst = append(burst, passwordModifyRaw(3, userDN("tmp"), fmt.Sprintf("pipe-%s-%d-a", n.name, round))...)
			burst = append(burst, modDNRequest(4, userDN("tmp"), "uid=alice", "")...)
			burst = append(burst, passwordModifyRaw(5, userDN("alice"), last)...)
			start := time.Now()
			raw.send(t, burst)
			for id := int64(2); id <= 5; id++ {
				m, err := raw.next(orderPatience)
				if err != nil {
					t.Fatalf("%s round %d: waiting for the answer to %d: %v (after %v)", n.name, round, id, err, time.Since(start))
				}
				if m.ID != id || m.ResultCode != 0 {
					t.Fatalf("%s round %d: answer %+v, want %d: success (after %v)", n.name, round, m, id, time.Since(start))
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s round %d: four pipelined writes answered in %v: a write waited on its own session", n.name, round, d)
			}
		}
		raw.Close()
		c.converged(30 * time.Second)
		c.wantMailboxes(map[string]string{"alice": last})
	}
	c.checkPasswords()
}

// HELD (3 of 3 runs, ~15 s).
//
// Idea 5: renames that move entries between units of the account base
// (newSuperior) while a third gateway sets passwords of the DNs they
// move between: alice at uid=alice,ou=a and bob at uid=bob,ou=b swap
// through uid=tmp,ou=people.
func TestAttackClusterOrderMovesBetweenUnitsRacingExops(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	unit := func(ou string) string { return "ou=" + ou + "," + mirrorAccountBase }
	for _, ou := range []string{"a", "b"} {
		c.directAdd(unit(ou), map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {ou}})
	}
	mustRename(t, g[0], userDN("alice"), "uid=alice", true, unit("a"))
	mustRename(t, g[1], userDN("bob"), "uid=bob", true, unit("b"))
	x1, y1 := "uid=alice,"+unit("a"), "uid=bob,"+unit("b")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(1)
	go exopWriter(g[2], "unit", []string{x1, y1, userDN("tmp")}, false, stop, &x, &wg)
	for i := range 12 {
		mustRename(t, g[i%2], x1, "uid=tmp", true, mirrorAccountBase)
		mustRename(t, g[(i+1)%2], y1, "uid=alice", true, unit("a"))
		mustRename(t, g[i%2], userDN("tmp"), "uid=bob", true, unit("b"))
	}
	close(stop)
	wg.Wait()
	t.Logf("password modifies: %v", &x)
	if x.slowest > orderPatience {
		t.Errorf("a password modify took %v", x.slowest)
	}
	c.converged(30 * time.Second)
	c.checkPasswordsAnywhere()
}

// HELD (3 of 3 runs, ~20 s).
//
// Idea 6: a stream of renames through two gateways, as fast as they are
// answered, while the third sets passwords of the DNs renamed from two
// sessions (one with passwords the directory makes up). The password
// modifies must not starve (some taken), each must answer within the
// gateway's patience, and each taken one must end in Axigen.
func TestAttackClusterOrderExopsUnderRenameStream(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(2)
	go exopWriter(c.adminConn(c.members()[2]), "streamA", []string{userDN("alice"), userDN("tmp")}, false, stop, &x, &wg)
	go exopWriter(c.adminConn(c.members()[2]), "streamB", []string{userDN("bob"), userDN("alice")}, true, stop, &x, &wg)
	end := time.Now().Add(8 * time.Second)
	rounds := 0
	for time.Now().Before(end) {
		orderSwaps(t, g[:2], 1, userDN, canonicalRDN)
		orderSwaps(t, []*ldap.Conn{g[1], g[0]}, 1, userDN, canonicalRDN)
		rounds += 2
	}
	close(stop)
	wg.Wait()
	t.Logf("%d swaps; password modifies: %v", rounds, &x)
	if x.ok == 0 {
		t.Errorf("no password modify taken during %d swaps: %v", rounds, &x)
	}
	if x.slowest > 12*time.Second {
		t.Errorf("a password modify took %v", x.slowest)
	}
	c.converged(30 * time.Second)
	c.checkPasswords()
}

// HELD (3 of 3 runs, ~25 s; skipped unless LDAPGATE_LONG=1 for its length).
//
// Idea 7: gateway B (the leader) renames alice and bob through tmp in a loop while A
// sets their passwords; B is killed mid-stream (its last rename may be
// prepared and never settled: A's password modify waits for it) and
// started again. Every password modify must be answered (busy is fine),
// none hang, and what was taken must end in Axigen.
func TestAttackClusterOrderKillRenamingGateway(t *testing.T) {
	longTest(t)
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	b := c.waitLeader(30 * time.Second) // the harder case: an election on top of the orphaned record
	a := c.followers(b)[0]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(2)
	go exopWriter(c.adminConn(a), "killA", []string{userDN("alice"), userDN("bob")}, false, stop, &x, &wg)
	go exopWriter(c.adminConn(a), "killB", []string{userDN("tmp"), userDN("alice")}, false, stop, &x, &wg)
	renamer := c.adminConn(b)
	renamesDone := make(chan int)
	var renamed atomic.Int64
	go func() {
		n := 0
		defer func() { renamesDone <- n }()
		for k := 0; ; k++ {
			step := [][2]string{{"alice", "tmp"}, {"bob", "alice"}, {"tmp", "bob"}}[k%3]
			if err := renamer.ModifyDN(ldap.NewModifyDNRequest(userDN(step[0]), "uid="+step[1], true, "")); err != nil {
				return // killed (or refused: the rotation cannot go on)
			}
			n++
			renamed.Add(1)
		}
	}()
	waitFor(t, 20*time.Second, "renames through B", func() error {
		if n := renamed.Load(); n < 30 {
			return fmt.Errorf("%d renames", n)
		}
		return nil
	})
	c.kill(b)
	n := <-renamesDone
	x.mu.Lock()
	before := x.ok
	x.mu.Unlock()
	t.Logf("%d renames through B before it was killed; %d passwords taken by then", n, before)
	waitFor(t, 30*time.Second, "password modifies taken after the kill", func() error {
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.ok < before+3 {
			return fmt.Errorf("%d taken since the kill", x.ok-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("password modifies: %v", &x)
	if x.slowest > orderPatience {
		t.Errorf("a password modify took %v", x.slowest)
	}
	c.start(b)
	c.converged(60 * time.Second)
	c.checkPasswordsAnywhere()
}

// unitSwapCluster is a cluster with units ou=a and ou=b in the account
// base, each holding an account at cn=Same (una in ou=a, unb in ou=b):
// the same DN below each unit, so swapping the units' names gives
// cn=Same,ou=a another entry without a write of any account.
func unitSwapCluster(t *testing.T) (*clusterEnv, []*ldap.Conn, func(string) string) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	g := c.clusterConns()
	unit := func(ou string) string { return "ou=" + ou + "," + mirrorAccountBase }
	for _, ou := range []string{"a", "b"} {
		c.directAdd(unit(ou), map[string][]string{"objectClass": {"organizationalUnit"}, "ou": {ou}})
		uid := "un" + ou
		add := ldap.NewAddRequest("cn=Same,"+unit(ou), nil)
		add.Attribute("objectClass", []string{"inetOrgPerson"})
		add.Attribute("uid", []string{uid})
		add.Attribute("cn", []string{"Same"})
		add.Attribute("sn", []string{uid})
		add.Attribute("mail", []string{uid + "@example.com"})
		add.Attribute("userPassword", []string{"pw-" + uid})
		if err := g[0].Add(add); err != nil {
			t.Fatalf("add %s: %v", add.DN, err)
		}
	}
	c.converged(30 * time.Second)
	return c, g, unit
}

// swapUnits swaps the names of ou=a and ou=b through ou=t, each rename
// through the next of conns.
func swapUnits(t *testing.T, conns []*ldap.Conn, i int, unit func(string) string) {
	t.Helper()
	for s, step := range [][2]string{{"a", "t"}, {"b", "a"}, {"t", "b"}} {
		mustRename(t, conns[(i+s)%len(conns)], unit(step[0]), "ou="+step[1], true, "")
	}
}

// HELD (3 of 3 runs, ~5 s): the window is too narrow this way; see
// TestAttackClusterOrderBufferedExopRacingUnitSwaps, which widens it.
//
// Invented: a unit's rename moves every account below it, and is no add,
// delete or rename of an account: the gateway relays it unjournaled (a
// move that keeps its accounts in the account base changes no account's
// scope, movedSubtree), so the journal's ordering never sees it. Two
// units hold an account each at the same relative DN (cn=Same); gateways
// A and B swap the units' names while C sets the passwords of
// cn=Same,ou=a and cn=Same,ou=b. A modify carries the gateway's key
// assertion and is refused when the DN holds another entry by then; the
// password modify extended operation cannot (slapd ignores it there), and
// its re-read (sameEntryStill) comes before the relay.
func TestAttackClusterOrderExopRacingUnitSwaps(t *testing.T) {
	c, g, unit := unitSwapCluster(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	wg.Add(2)
	go exopWriter(c.adminConn(c.members()[2]), "unitA", []string{"cn=Same," + unit("a")}, false, stop, &x, &wg)
	go exopWriter(c.adminConn(c.members()[2]), "unitB", []string{"cn=Same," + unit("b")}, false, stop, &x, &wg)
	for i := range 30 {
		swapUnits(t, g[:2], i, unit)
	}
	// Then the swaps pipelined, three renames in one segment through one
	// gateway: the DN is without an entry for the least time, and the
	// password modify's window between its re-read and its relay more
	// often holds a whole swap.
	raw := adminRaw(t, c.members()[0].url, c.e.dir.RootPW)
	id := int64(2)
	for i := range 150 {
		var burst []byte
		for _, step := range [][2]string{{"a", "t"}, {"b", "a"}, {"t", "b"}} {
			burst = append(burst, modDNRequest(id, unit(step[0]), "ou="+step[1], "")...)
			id++
		}
		raw.send(t, burst)
		for want := id - 3; want < id; want++ {
			m, err := raw.next(orderPatience)
			if err != nil || m.ID != want || m.ResultCode != 0 {
				t.Fatalf("pipelined swap %d: answer %+v (%v), want %d: success", i, m, err, want)
			}
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("password modifies: %v", &x)
	c.converged(30 * time.Second)
	c.checkPasswordsAnywhere()
}

// The control of TestAttackClusterOrderExopRacingUnitSwaps: the same
// races with modifies of userPassword, which carry the gateway's
// assertion of the entry's key.
func TestAttackClusterOrderModifyRacingUnitSwaps(t *testing.T) {
	c, g, unit := unitSwapCluster(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var x exopTally
	writer := func(conn *ldap.Conn, tag, dn string) {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			pw := fmt.Sprintf("%s-%d", tag, k)
			m := ldap.NewModifyRequest(dn, nil)
			m.Replace("userPassword", []string{pw})
			start := time.Now()
			x.note(pw, time.Since(start), conn.Modify(m))
		}
	}
	wg.Add(2)
	go writer(c.adminConn(c.members()[2]), "modA", "cn=Same,"+unit("a"))
	go writer(c.adminConn(c.members()[2]), "modB", "cn=Same,"+unit("b"))
	for i := range 30 {
		swapUnits(t, g[:2], i, unit)
	}
	close(stop)
	wg.Wait()
	t.Logf("password modifies (modify): %v", &x)
	c.converged(30 * time.Second)
	c.checkPasswordsAnywhere()
}

// HELD (3 of 3 runs, ~3 s; the lone control too). Note: the directory
// runs a connection's requests concurrently and the gateway holds a
// session's writes in order only around modify DNs, so the four writes
// are not applied in the order sent (LDAP does not promise it): the
// answers come in any order, and any of success, noSuchObject (32),
// busy (51) and entryAlreadyExists (68) is right for each. (Before adds
// and deletes held their DN, the last password modify, judged by the
// first alice, was refused 51 in the cluster in most rounds, and landed on
// the newcomer through a lone gateway.)
//
// Invented: on one connection to one gateway, in one segment: set alice's
// password, delete her, add a newcomer at uid=alice, set its password.
// The delete waits for the earlier password modify at its DN, the last
// password modify for the earlier add: all the session's own, not yet
// sent on. Each must be answered at once, and Axigen must end with the
// passwords the directory binds with.
func TestAttackClusterOrderPipelinedExopDeleteAddExop(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	pipelinedExopDeleteAddExop(t, c.members()[1].url, c.e.dir.RootPW)
	c.converged(30 * time.Second)
	c.checkPasswords()
}

// FIXED (failed 7 of 8 runs; 3 of 3 pass): adds and deletes now hold
// their DN as an identity change does (onway.go): the last password
// modify waits for the add's answer and reads the newcomer.
//
// The control of
// TestAttackClusterOrderPipelinedExopDeleteAddExop, the same bursts
// through a lone gateway. A lone gateway's awaitEarlierWrites does
// nothing (not replicated), and its in-memory hold of a session's writes
// (onway.go) covers modify DNs, not deletes and adds: the last password
// modify, judged by the first alice (read before the delete and the add
// were sent on), is relayed, lands on the newcomer (success), and its
// record names the first alice, deleted; Axigen's alice (the newcomer)
// keeps the password it was created with ("pw-new", or a made-up one)
// while the directory binds uid=alice with the acknowledged password.
func TestAttackLoneOrderPipelinedExopDeleteAddExop(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	pipelinedExopDeleteAddExop(t, e.gw.URL, e.dir.RootPW)
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	direct, err := e.dir.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if a, ok := e.sim.Account(mirrorDomain, "alice"); ok {
		if err := direct.Bind(userDN("alice"), a.Password); err != nil {
			held := "none of the burst's"
			for _, pw := range []string{"pw-new", "pipe-readd-4-a", "pipe-readd-4-b", "pipe-readd-3-b"} {
				if direct.Bind(userDN("alice"), pw) == nil {
					held = pw
					break
				}
			}
			t.Errorf("Axigen's alice has password %q, which the directory does not bind uid=alice with (%v); it binds with %s", a.Password, err, held)
		}
	}
}

// pipelinedExopDeleteAddExop sends the bursts through the gateway at url.
func pipelinedExopDeleteAddExop(t *testing.T, url, rootPW string) {
	raw := adminRaw(t, url, rootPW)
	for round := range 5 {
		var burst []byte
		burst = append(burst, passwordModifyRaw(2, userDN("alice"), fmt.Sprintf("pipe-readd-%d-a", round))...)
		burst = append(burst, deleteRequest(3, userDN("alice"))...)
		burst = append(burst, addRequest(4, userDN("alice"), map[string][]string{"objectClass": {"inetOrgPerson"}, "uid": {"alice"},
			"cn": {fmt.Sprintf("Newcomer %d", round)}, "sn": {"alice"}, "mail": {"alice@example.com"}, "userPassword": {"pw-new"}})...)
		burst = append(burst, passwordModifyRaw(5, userDN("alice"), fmt.Sprintf("pipe-readd-%d-b", round))...)
		start := time.Now()
		raw.send(t, burst)
		got := map[int64]string{}
		for range 4 {
			m, err := raw.next(orderPatience)
			if err != nil {
				t.Fatalf("round %d: waiting for the answers (%v so far): %v (after %v)", round, got, err, time.Since(start))
			}
			switch m.ResultCode {
			case ldap.LDAPResultSuccess, ldap.LDAPResultNoSuchObject, ldap.LDAPResultBusy, ldap.LDAPResultEntryAlreadyExists:
			default:
				t.Errorf("round %d: answer %+v", round, m)
			}
			got[m.ID] = fmt.Sprintf("%d %s", m.ResultCode, m.Diagnostic)
		}
		t.Logf("round %d: %v", round, got)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("round %d: four pipelined writes answered in %v: a write waited on its own session", round, d)
		}
	}
}

// FIXED (failed 5 of 5 runs; 3 of 3 pass, ~50 s each: LDAPGATE_LONG=1
// runs it): a password modify checked again is now sent to the directory
// at once (WriteRequest.SendNow), not behind the client's next requests.
// The unit renames stay unjournaled: the moment between the re-read and
// the relay stays open to them (docs/architecture.md).
//
// Was: e.g. round 39's password, sent to
// cn=Same,ou=b while ou=b held una's entry (judged and recorded as una's),
// relayed after the swap put unb's entry there: the directory binds unb
// with buffered-b-39, the last taken, while Axigen's unb keeps pw-unb and
// Axigen's una pw-una. TestAttackClusterOrderExopRacingUnitSwaps with the
// window between the password modify's re-read and its relay widened the
// way any client can: the gateway relays a write into the session's
// buffer to the directory and sends the buffer only once the client has
// nothing more buffered (dispatch.go), so a password modify followed in
// the same segment by modifies of another entry waits, judged and
// re-read, while the gateway judges and prepares each of them. Gateways
// A and B swap the units' names meanwhile (renames of units, unjournaled:
// the journal's ordering never sees them); the password lands on the
// other unit's account while its record names the first.
func TestAttackClusterOrderBufferedExopRacingUnitSwaps(t *testing.T) {
	if os.Getenv("LDAPGATE_LONG") == "" {
		t.Skip("long (about 50 s): LDAPGATE_LONG=1 runs it")
	}
	c, g, unit := unitSwapCluster(t)
	raw := adminRaw(t, c.members()[2].url, c.e.dir.RootPW)
	id := int64(2)
	codes := map[int64]int{}
	var acked []string // the passwords taken, in order
	for round := range 40 {
		var burst []byte
		exop := id
		target := []string{"a", "b"}[round%2]
		burst = append(burst, passwordModifyRaw(id, "cn=Same,"+unit(target), fmt.Sprintf("buffered-%s-%d", target, round))...)
		id++
		for k := range 15 {
			burst = append(burst, modifyPhone(id, userDN("carol"), fmt.Sprintf("+1 555 %04d", round*20+k))...)
			id++
		}
		raw.send(t, burst)
		// The swap while the password modify is judged and waits in the
		// buffer behind the phones.
		swapUnits(t, g[:2], round, unit)
		for range id - exop {
			m, err := raw.next(orderPatience)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if m.ID == exop {
				codes[m.ResultCode]++
				if m.ResultCode == 0 {
					acked = append(acked, fmt.Sprintf("buffered-%s-%d", target, round))
				}
			} else if m.ResultCode != 0 {
				t.Errorf("round %d: phone of carol: %+v", round, m)
			}
		}
	}
	t.Logf("password modifies answered %v (code: count)", codes)
	c.converged(30 * time.Second)
	c.checkPasswordsAnywhere()
	if t.Failed() {
		direct, err := c.e.dir.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer direct.Close()
		for _, ou := range []string{"a", "b"} {
			dn := "cn=Same," + unit(ou)
			held := "none of them"
			for i := len(acked) - 1; i >= 0; i-- {
				if direct.Bind(dn, acked[i]) == nil {
					held = fmt.Sprintf("%s (the %dth of %d taken)", acked[i], i+1, len(acked))
					break
				}
			}
			t.Logf("%s (uid %s) binds with %s", dn, c.e.directoryEntry(dn, "uid").GetAttributeValue("uid"), held)
		}
		for _, uid := range []string{"una", "unb"} {
			a, _ := c.e.sim.Account(mirrorDomain, uid)
			t.Logf("Axigen's %s has %q", uid, a.Password)
		}
	}
}
