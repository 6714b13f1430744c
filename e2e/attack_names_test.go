package e2e

// Attacks on "a delivery names the account as of its record" (3df6aea):
// Journal.NameAfter, and the write path's exclusivity of identity changes
// (gateway/mirror/onway.go: hold, holdPatience, SessionInfo.Flush).
// FINDING: a failure still open (its t.Skip line commented out, so it
// fails now). HELD: what was tried and held; kept as regression tests.

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// directPhone reads an entry's telephoneNumber straight from slapd.
func directPhone(t *testing.T, c *ldap.Conn, dn string) (string, error) {
	t.Helper()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"telephoneNumber"}, nil))
	if err != nil {
		return "", err
	}
	if len(res.Entries) != 1 {
		return "", fmt.Errorf("%d entries", len(res.Entries))
	}
	return res.Entries[0].GetAttributeValue("telephoneNumber"), nil
}

// FIXED: one client that does not read its answers held an entry
// against every identity change through the gateway, for as long as it
// kept its connection. bob (a plain user) pipelines searches whose
// answers fill the TCP buffers (he never reads them) and then a modify of
// his own phone. The directory makes the modify and answers it, but the
// gateway's relaying goroutine for bob's session (gateway/answers.go:
// relayUpstream) is blocked writing the earlier search results to bob, so
// the modify's Completion (Mirror.settle, which releases its onWay hold)
// does not run: bob's DN stays held, and the admin's rename of bob (an
// identity change, which waits for the writes to its entry) was answered
// busy (51) after 10 s, and so was every retry. Now a write to a client
// blocked for --write-timeout (here 3 s) ends its session; the answers
// behind are still read, the modify settles on its own, and the rename,
// waiting meanwhile, goes.
func TestAttackNamesStalledClientBlocksRenames(t *testing.T) {
	e := newAttackEnv(t, "", nil, "--write-timeout", "3s")
	e.waitMirrored(20*time.Second, false)
	direct := bindConn(t, e.dir.URL, mirrorAdminDN, e.dir.RootPW)
	big := addBigEntry(t, direct)
	stalled := dialRaw(t, e.gw.URL)
	stalled.send(t, bindRequest(1, userDN("bob"), slapd.BobPassword))
	stalled.expectResult(t, 1, 0)
	var burst []byte
	// ~48 MiB of answers, far beyond the socket buffers; few enough
	// operations that slapd has threads left for the modify.
	const searches = 6
	for i := range searches {
		burst = append(burst, searchRequest(t, int64(2+i), big, "(objectClass=*)", "description")...)
	}
	burst = append(burst, modifyPhone(2+searches, userDN("bob"), "+1 555 7777")...)
	go func() { _, _ = stalled.Write(burst) }() // the gateway may stop reading once its buffers fill
	waitFor(t, 30*time.Second, "bob's stalled modify made in the directory", func() error {
		if p, err := directPhone(t, direct, userDN("bob")); err != nil || p != "+1 555 7777" {
			return errNotYet
		}
		return nil
	})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	admin.SetTimeout(30 * time.Second)
	start := time.Now()
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(userDN("bob"), "uid=bobx", true, "")); err != nil {
		t.Fatalf("the admin's rename of bob, while bob's own session does not read its answers: %v (after %v)", err, time.Since(start))
	}
	// (At once when slapd answered the modify before the searches' results,
	// which then stall the session alone.)
	t.Logf("the rename went after %v", time.Since(start))
	// bob's session is ended by the write timeout whichever came first,
	// without his reading anything: the admin's is the one left.
	waitFor(t, 30*time.Second, "bob's stalled session ended by the gateway", func() error {
		if n := metric(scrape(t, e.dataDir), "ldapgate_connections"); n > 1 {
			return fmt.Errorf("%w: %v client sessions open", errNotYet, n)
		}
		return nil
	})
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(20*time.Second, false)
}

// HELD: two connections pipelining, in opposite orders, renames and
// modifies of two entries (conn 1 renames alice and modifies bob, conn 2
// renames bob and modifies alice), several rounds, both bursts sent at
// once. Each session flushes what it buffers before it waits, and each
// write holds one entry at a time, so no cycle: every answer comes
// promptly and none is busy (a modify may find its entry renamed away:
// noSuchObject). Axigen ends as the directory.
func TestAttackNamesCrossPipelinedRenamesTwoConnections(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	c1, c2 := dialRaw(t, e.gw.URL), dialRaw(t, e.gw.URL)
	for _, c := range []*rawConn{c1, c2} {
		c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
		c.expectResult(t, 1, 0)
	}
	burst := func(mine, other string, round int) []byte {
		var b []byte
		b = append(b, modDNRequest(2, userDN(mine), "uid="+mine+"1", "")...)
		b = append(b, modifyPhone(3, userDN(other), fmt.Sprintf("+1 555 %04d", round))...)
		b = append(b, modifyPhone(4, userDN(mine+"1"), fmt.Sprintf("+1 555 1%03d", round))...)
		b = append(b, modDNRequest(5, userDN(mine+"1"), "uid="+mine, "")...)
		b = append(b, modifyPhone(6, userDN(other+"1"), fmt.Sprintf("+1 555 2%03d", round))...)
		b = append(b, modifyPhone(7, userDN(mine), fmt.Sprintf("+1 555 3%03d", round))...)
		return b
	}
	for round := range 5 {
		b1, b2 := burst("alice", "bob", round), burst("bob", "alice", round)
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan string, 16)
		for _, x := range []struct {
			c *rawConn
			b []byte
		}{{c1, b1}, {c2, b2}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = x.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := x.c.Write(x.b); err != nil {
					errs <- err.Error()
					return
				}
				// The answers come in the directory's order.
				seen := map[int64]bool{}
				for len(seen) < 6 {
					m, err := x.c.next(15 * time.Second)
					if err != nil {
						errs <- fmt.Sprintf("round %d: waiting for answers (have %v): %v (after %v)", round, seen, err, time.Since(start))
						return
					}
					if m.ID < 2 || m.ID > 7 || seen[m.ID] || (m.ResultCode != 0 && m.ResultCode != 32) {
						errs <- fmt.Sprintf("round %d: answer %v, want one of 2..7: success or noSuchObject", round, m)
					}
					seen[m.ID] = true
				}
			}()
		}
		wg.Wait()
		close(errs)
		for s := range errs {
			t.Error(s)
		}
		if t.Failed() {
			t.FailNow()
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("round %d: two bursts of 6 writes answered in %v: a session waited", round, d)
		}
	}
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(20*time.Second, false)
}

// HELD: many clients modifying the same entry's phone at once (not an
// identity change: not exclusive). None is busy and all are answered in a
// time comparable to sequential writes.
func TestAttackNamesConcurrentModifiesOfOneEntry(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	const clients, each = 8, 25
	conns := make([]*ldap.Conn, clients)
	for i := range conns {
		conns[i] = bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				m := ldap.NewModifyRequest(userDN("bob"), nil)
				m.Replace("telephoneNumber", []string{fmt.Sprintf("+1 555 %02d%02d", i, j)})
				if err := c.Modify(m); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	t.Logf("%d concurrent modifies of one entry in %v (%d failed)", clients*each, time.Since(start), n)
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("%d modifies of one entry took %v", clients*each, d)
	}
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(20*time.Second, false)
}

// adminModify replaces attr of dn on c, failing the test on error.
func adminModify(t *testing.T, c *ldap.Conn, dn, attr string, values ...string) {
	t.Helper()
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace(attr, values)
	if err := c.Modify(m); err != nil {
		t.Fatalf("replace %s of %s with %q: %v", attr, dn, values, err)
	}
}

// adminRename renames uid=from to uid=to in the account base.
func adminRename(t *testing.T, c *ldap.Conn, from, to string) {
	t.Helper()
	if err := c.ModifyDN(ldap.NewModifyDNRequest(userDN(from), "uid="+to, true, "")); err != nil {
		t.Fatalf("modify DN uid=%s -> uid=%s: %v", from, to, err)
	}
}

// HELD: a three-way rotation of account names (alice -> tmp, bob ->
// alice, carol -> bob, tmp -> carol) with phone changes between, written
// while Axigen is down, then a password change of the entry now named
// alice (bob's). Each mailbox follows its entry, and the new password
// opens the right one.
func TestAttackNamesRotationOfThreeWhileAxigenIsDown(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	adminModify(t, admin, userDN("alice"), "telephoneNumber", "+1 555 1001")
	adminRename(t, admin, "alice", "tmp")
	adminModify(t, admin, userDN("tmp"), "telephoneNumber", "+1 555 1002")
	adminRename(t, admin, "bob", "alice")
	adminModify(t, admin, userDN("alice"), "telephoneNumber", "+1 555 2001")
	adminRename(t, admin, "carol", "bob")
	adminRename(t, admin, "tmp", "carol")
	adminModify(t, admin, userDN("alice"), "userPassword", "bob-now-alice-pw")
	adminModify(t, admin, userDN("carol"), "telephoneNumber", "+1 555 1003")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(60*time.Second, false)
	e.logAccounts(t)
	e.waitMirrored(10*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "alice"); !ok || a.Password != "bob-now-alice-pw" {
		t.Errorf("Axigen's alice (bob's entry): %+v, want the new password", a)
	}
	if a, ok := e.sim.Account(mirrorDomain, "carol"); !ok || a.Password != slapd.AlicePassword {
		t.Errorf("Axigen's carol (alice's entry): password %q, want alice's", a.Password)
	}
}

// HELD: the same rotation, with Axigen up but refusing each SET name once
// (a transient error per rename, retried with backoff mid-sequence).
func TestAttackNamesRotationWithTransientErrors(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for _, n := range []string{"tmp", "alice", "bob", "carol"} {
		e.sim.FailNth(regexp.MustCompile(`(?i)^SET name "?`+n), 0, "temporary failure")
	}
	adminRename(t, admin, "alice", "tmp")
	adminRename(t, admin, "bob", "alice")
	adminModify(t, admin, userDN("alice"), "userPassword", "bob-now-alice-pw")
	adminRename(t, admin, "carol", "bob")
	adminRename(t, admin, "tmp", "carol")
	e.waitDrained(60*time.Second, false)
	e.sim.ClearFaults()
	e.logAccounts(t)
	e.waitMirrored(10*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "alice"); !ok || a.Password != "bob-now-alice-pw" {
		t.Errorf("Axigen's alice (bob's entry): %+v, want the new password", a)
	}
}

// HELD: a swap of two group names through a third (staff -> tmp, admins
// -> staff, tmp -> admins), with a member's mail change between (which
// journals a record of the group listing it, named by a search, not under
// the write's hold) and a member added, while Axigen is down.
func TestAttackNamesGroupSwapWithMemberWritesWhileAxigenIsDown(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	rename := func(from, to string) {
		t.Helper()
		if err := admin.ModifyDN(ldap.NewModifyDNRequest(groupDN(from), "cn="+to, true, "")); err != nil {
			t.Fatalf("modify DN cn=%s -> cn=%s: %v", from, to, err)
		}
	}
	rename("staff", "tmp")
	adminModify(t, admin, userDN("bob"), "mail", "bob.b@example.com")
	rename("admins", "staff")
	m := ldap.NewModifyRequest(groupDN("staff"), nil)
	m.Add("member", []string{userDN("alice")})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	rename("tmp", "admins")
	adminModify(t, admin, userDN("carol"), "mail", "carol.c@example.com")
	adminModify(t, admin, userDN("alice"), "mail", "alice.a@example.com")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(60*time.Second, false)
	for _, g := range e.sim.Groups(mirrorDomain) {
		t.Logf("Axigen group %s: %v", g.Name, g.Members)
	}
	e.waitMirrored(10*time.Second, false)
}

// HELD: accounts named by cn (their Axigen name is their uid), renamed by
// modifies of uid (the name attribute is not the RDN) in a swap through a
// third, with phone changes between (records a delivery takes along),
// and a uid change that the directory refuses (its record aborted:
// replacing sn with nothing violates the schema) in the middle, while
// Axigen is down.
func TestAttackNamesUIDSwapOnCNEntriesWithAnAbortedRename(t *testing.T) {
	e := newAttackEnv(t, "", []string{cnPerson("carl", "carl"), cnPerson("dave", "dave")})
	e.waitMirrored(20*time.Second, false)
	carl, dave := "cn=carl,"+mirrorAccountBase, "cn=dave,"+mirrorAccountBase
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	adminModify(t, admin, carl, "telephoneNumber", "+1 555 3001")
	adminModify(t, admin, carl, "uid", "tmp")
	adminModify(t, admin, carl, "telephoneNumber", "+1 555 3002")
	bad := ldap.NewModifyRequest(dave, nil)
	bad.Replace("uid", []string{"zed"})
	bad.Replace("sn", nil)
	if err := admin.Modify(bad); err == nil {
		t.Fatal("the directory took a modify that leaves a person without sn")
	} else {
		t.Logf("refused as meant: %v", err)
	}
	adminModify(t, admin, dave, "telephoneNumber", "+1 555 4001")
	adminModify(t, admin, dave, "uid", "carl")
	adminModify(t, admin, dave, "userPassword", "dave-now-carl-pw")
	adminModify(t, admin, carl, "uid", "dave")
	adminModify(t, admin, carl, "telephoneNumber", "+1 555 3003")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(60*time.Second, false)
	e.logAccounts(t)
	e.waitMirrored(10*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "carl"); !ok || a.Password != "dave-now-carl-pw" {
		t.Errorf("Axigen's carl (dave's entry): %+v, want the new password", a)
	}
}

// HELD: while Axigen is down, alice is deleted, bob takes her name, a new
// entry takes bob's, and the new alice (bob's entry) gets a password.
func TestAttackNamesDeleteThenNameTakenTwice(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if err := admin.Del(ldap.NewDelRequest(userDN("alice"), nil)); err != nil {
		t.Fatal(err)
	}
	adminRename(t, admin, "bob", "alice")
	if err := admin.Add(accountAdd(userDN("bob"), "bob")); err != nil {
		t.Fatal(err)
	}
	adminModify(t, admin, userDN("alice"), "userPassword", "bob-now-alice-pw")
	adminRename(t, admin, "alice", "alice2")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(60*time.Second, true)
	e.logAccounts(t)
	e.waitMirrored(10*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "alice2"); !ok || a.Password != "bob-now-alice-pw" {
		t.Errorf("Axigen's alice2 (bob's entry): %+v, want the new password", a)
	}
}

// HELD: races through one gateway, Axigen slow (deliveries lag the
// writes): one connection swaps alice's and bob's names through tmp and
// staff's and admins' through tmpg, round after round, while others
// change both accounts' phones and passwords (by whatever DN they have
// now: noSuchObject when renamed away) and the members' mail (which
// journals records of their groups, named by a search rather than under a
// hold). No write is busy, and once the journal drains Axigen equals the
// directory.
func TestAttackNamesSwapsRacingWritesOfTheSameEntries(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	e.sim.SetLatency(5 * time.Millisecond)
	renamer := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	const rounds = 8
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var busy []string
	worker := func(f func(c *ldap.Conn, i int) error) {
		c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(c, i); err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
					mu.Lock()
					busy = append(busy, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for _, uid := range []string{"alice", "bob", "tmp"} {
		worker(func(c *ldap.Conn, i int) error {
			m := ldap.NewModifyRequest(userDN(uid), nil)
			m.Replace("telephoneNumber", []string{fmt.Sprintf("+1 555 %04d", i)})
			return c.Modify(m)
		})
	}
	worker(func(c *ldap.Conn, i int) error {
		m := ldap.NewModifyRequest(userDN([]string{"alice", "bob"}[i%2]), nil)
		m.Replace("userPassword", []string{fmt.Sprintf("pw-%d", i)})
		return c.Modify(m)
	})
	worker(func(c *ldap.Conn, i int) error {
		m := ldap.NewModifyRequest(userDN("carol"), nil)
		m.Replace("mail", []string{fmt.Sprintf("carol%d@example.com", i%3)})
		return c.Modify(m)
	})
	for range rounds {
		mirrorAttackSwap(t, renamer)
		for _, step := range [][2]string{{"staff", "tmpg"}, {"admins", "staff"}, {"tmpg", "admins"}} {
			if err := renamer.ModifyDN(ldap.NewModifyDNRequest(groupDN(step[0]), "cn="+step[1], true, "")); err != nil {
				t.Fatalf("modify DN cn=%s -> cn=%s: %v", step[0], step[1], err)
			}
		}
	}
	close(stop)
	wg.Wait()
	for i, b := range busy {
		if i < 5 {
			t.Errorf("a racing write: %s", b)
		}
	}
	e.waitDrained(120*time.Second, false)
	e.sim.ClearFaults()
	e.logAccounts(t)
	for _, g := range e.sim.Groups(mirrorDomain) {
		t.Logf("Axigen group %s: %v", g.Name, g.Members)
	}
	e.waitMirrored(20*time.Second, false)
}

// HELD: a client pipelining writes of one entry on one connection, with
// one outstanding operation allowed per connection (--max-ops-per-conn
// 1), renaming to a DN a write before it in the burst targets (a modify
// of uid=pipe2 before it exists: noSuchObject). The rename waits for the
// writes before it, which wait for room in the table, and the wait must
// not take the session down with it.
func TestAttackNamesPipelinedWithOneOpPerConnection(t *testing.T) {
	e := newAttackEnv(t, "", nil, "--max-ops-per-conn", "1")
	c := e.pipelineOnPipe(t)
	for round := range 3 {
		var burst []byte
		burst = append(burst, modifyPhone(2, userDN("pipe2"), "+1 555 0100")...)
		burst = append(burst, modifyPhone(3, userDN("pipe"), "+1 555 0101")...)
		burst = append(burst, modDNRequest(4, userDN("pipe"), "uid=pipe2", "")...)
		burst = append(burst, modifyPhone(5, userDN("pipe2"), "+1 555 0102")...)
		burst = append(burst, modDNRequest(6, userDN("pipe2"), "uid=pipe", "")...)
		start := time.Now()
		c.send(t, burst)
		want := map[int64]int64{2: 32, 3: 0, 4: 0, 5: 0, 6: 0}
		for id := int64(2); id <= 6; id++ {
			m, err := c.next(15 * time.Second)
			if err != nil {
				t.Fatalf("round %d: waiting for the answer to %d: %v (after %v)", round, id, err, time.Since(start))
			}
			if m.ID != id || m.ResultCode != want[id] {
				t.Fatalf("round %d: answer %v, want %d: %d", round, m, id, want[id])
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("round %d: five pipelined writes answered in %v: a write waited on its own session", round, d)
		}
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
}

// addBigEntry adds, through conn, an entry outside the bases whose answer
// is 8 MiB (8 values of 1 MiB), and returns its DN: a search of it fills a
// client's socket buffers many times over.
func addBigEntry(t *testing.T, conn *ldap.Conn) string {
	t.Helper()
	big := "cn=big," + mirrorSuffix
	add := ldap.NewAddRequest(big, nil)
	add.Attribute("objectClass", []string{"device"})
	add.Attribute("cn", []string{"big"})
	var values []string
	for i := range 8 {
		values = append(values, fmt.Sprintf("%d", i)+strings.Repeat("x", 1<<20))
	}
	add.Attribute("description", values)
	if err := conn.Add(add); err != nil {
		t.Fatal(err)
	}
	return big
}
