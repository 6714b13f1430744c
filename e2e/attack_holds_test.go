package e2e

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Attacks on adds and deletes holding their DN (gateway/mirror/onway.go:
// "exclusive" holds, a write to the DN waiting up to holdPatience = 10 s
// for them, after flushing its own session's buffered requests) and on a
// re-checked password modify sent at once (WriteRequest.SendNow). The
// threat: a legal pipelined burst on one connection that now stalls for
// the patience, or is answered busy, because a write waited on its own
// session's earlier request; two connections crossing their holds; the
// mirror wrong at the end.

// holdsStall is what a burst whose writes only waited on one another (on
// the directory's answers, milliseconds each) must be answered within:
// well under holdPatience, so that one write waiting in vain shows.
const holdsStall = 5 * time.Second

// skipOpenHolds skips a test recording an open finding unless asked for.
func skipOpenHolds(t *testing.T) {
	t.Helper()
	if os.Getenv("LDAPGATE_OPEN_FINDINGS") == "" {
		t.Skip("open finding: LDAPGATE_OPEN_FINDINGS=1 runs it")
	}
}

// adminRaw is a raw connection to url bound as the mirror's admin with
// password pw (message ID 1).
func adminRaw(t *testing.T, url, pw string) *rawConn {
	t.Helper()
	raw := dialRaw(t, url)
	raw.send(t, bindRequest(1, mirrorAdminDN, pw))
	raw.expectResult(t, 1, 0)
	return raw
}

// modifyAddValue is a modify adding value to dn's attr.
func modifyAddValue(id int64, dn, attr, value string) []byte {
	return modifyValueRequest(id, dn, 0, attr, value)
}

// holdsPerson is the attributes of a new account uid.
func holdsPerson(uid, pw string) map[string][]string {
	return map[string][]string{"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {"Held " + uid}, "sn": {uid},
		"mail": {uid + "@example.com"}, "userPassword": {pw}}
}

// holdsAnswers reads n answers and returns them by ID, with how long after
// start each came; it fails the test when one does not come within
// orderPatience.
func holdsAnswers(t *testing.T, raw *rawConn, n int, start time.Time, what string) (map[int64]ldapMessage, map[int64]time.Duration) {
	t.Helper()
	got, at := map[int64]ldapMessage{}, map[int64]time.Duration{}
	for len(got) < n {
		m, err := raw.next(orderPatience)
		if err != nil {
			t.Fatalf("%s: %d of %d answers after %v, then: %v", what, len(got), n, time.Since(start), err)
		}
		got[m.ID], at[m.ID] = m, time.Since(start)
	}
	return got, at
}

// wantAllSuccess fails for each answer that is not success.
func wantAllSuccess(t *testing.T, what string, got map[int64]ldapMessage) {
	t.Helper()
	for id, m := range got {
		if m.ResultCode != ldap.LDAPResultSuccess {
			t.Errorf("%s: answer to %d: %v", what, id, m)
		}
	}
}

// HELD (2 of 2 runs, <1 s; each burst of 7 answered in 35-45 ms).
//
// One connection, one segment, the life of an account in order: add an
// account (under a unit of its own), modify it, set its password (extended
// operation), add a second value, delete it, add it again, set its
// password again. Each write but the first waits for an add or delete of
// its own DN (or none) that is its own session's, relayed but not sent on:
// the flush before the wait must send it, and nothing may wait for the
// patience or be answered busy.
func TestAttackHoldsPipelinedLifeOfAnAccount(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	raw := adminRaw(t, e.gw.URL, e.dir.RootPW)
	// The units are added before the bursts: slapd runs a connection's
	// pipelined operations on several threads, so a child's add sent
	// right behind its parent's may reach the backend first (32 from
	// slapd itself, seen 2 of 3 runs when they shared the burst): no
	// hold of the gateway's orders writes to different DNs.
	units := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for round := range 3 {
		req := ldap.NewAddRequest(fmt.Sprintf("ou=held%d,%s", round, mirrorAccountBase), nil)
		req.Attribute("objectClass", []string{"organizationalUnit"})
		req.Attribute("ou", []string{fmt.Sprintf("held%d", round)})
		if err := units.Add(req); err != nil {
			t.Fatal(err)
		}
	}
	units.Close()
	id := int64(2)
	var last string
	for round := range 3 {
		unit := fmt.Sprintf("ou=held%d,%s", round, mirrorAccountBase)
		dn := "uid=life" + fmt.Sprint(round) + "," + unit
		uid := fmt.Sprintf("life%d", round)
		last = fmt.Sprintf("life-%d-b", round)
		var burst []byte
		first := id
		add := func(b []byte) { burst = append(burst, b...); id++ }
		add(addRequest(id, dn, holdsPerson(uid, "pw-first")))
		add(modifyPhone(id, dn, "+1 555 0199"))
		add(passwordModifyRaw(id, dn, fmt.Sprintf("life-%d-a", round)))
		add(modifyAddValue(id, dn, "description", "second"))
		add(deleteRequest(id, dn))
		add(addRequest(id, dn, holdsPerson(uid, "pw-again")))
		add(passwordModifyRaw(id, dn, last))
		start := time.Now()
		raw.send(t, burst)
		got, at := holdsAnswers(t, raw, int(id-first), start, fmt.Sprintf("round %d", round))
		wantAllSuccess(t, fmt.Sprintf("round %d", round), got)
		if d := time.Since(start); d > holdsStall {
			t.Errorf("round %d: %d pipelined writes answered in %v (by ID: %v): one waited on its own session", round, id-first, d, at)
		}
		t.Logf("round %d: answered in %v", round, time.Since(start))
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	a, ok := e.sim.Account(mirrorDomain, "life2")
	if !ok {
		t.Fatalf("Axigen has no life2")
	}
	direct, err := e.dir.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.Bind("uid=life2,ou=held2,"+mirrorAccountBase, a.Password); err != nil {
		t.Errorf("Axigen's life2 has password %q, which the directory does not bind with (%v); want %q", a.Password, err, last)
	}
}

// HELD (4 of 4 runs, ~3 s; 200 phone modifies ~0.45 s, the burst of
// 200 adds and 200 member adds 1.7-2.2 s: about 2 modifies' worth per
// write pair, no round trip per write).
//
// Bulk provisioning as an LDIF import pipelines it: 200 adds of accounts
// and, in the same segment, each one's addition to a group (a modify of
// the group, the member's DN its value), then the group itself renamed in
// place by an identity-free change. The adds hold only their own DNs; the
// group modifies hold the group (not exclusive): nothing should wait. The
// burst must take no longer than a burst of 200 plain phone modifies of
// existing accounts by more than a few times (no round trip per write),
// and Axigen must end with every account and the group's members.
func TestAttackHoldsBulkProvisioningWithGroups(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	raw := adminRaw(t, e.gw.URL, e.dir.RootPW)

	// The control: 200 pipelined modifies of one existing account.
	id := int64(2)
	var burst []byte
	first := id
	for k := range 200 {
		burst = append(burst, modifyPhone(id, userDN("carol"), fmt.Sprintf("+1 555 %04d", k))...)
		id++
	}
	start := time.Now()
	raw.send(t, burst)
	got, _ := holdsAnswers(t, raw, int(id-first), start, "control")
	control := time.Since(start)
	wantAllSuccess(t, "control", got)

	const n = 200
	burst, first = nil, id
	for k := range n {
		uid := fmt.Sprintf("bulk%03d", k)
		burst = append(burst, addRequest(id, userDN(uid), holdsPerson(uid, "pw-"+uid))...)
		id++
		burst = append(burst, modifyAddValue(id, groupDN("staff"), "member", userDN(uid))...)
		id++
	}
	start = time.Now()
	raw.send(t, burst)
	got, at := holdsAnswers(t, raw, int(id-first), start, "provisioning")
	took := time.Since(start)
	wantAllSuccess(t, "provisioning", got)
	var slowest time.Duration
	for _, d := range at {
		slowest = max(slowest, d)
	}
	t.Logf("200 phone modifies: %v; %d adds with %d member adds: %v", control, n, n, took)
	if took > holdsStall || took > 10*control+2*time.Second {
		t.Errorf("provisioning burst answered in %v (200 modifies: %v): writes waited", took, control)
	}
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(30*time.Second, false)
}

// HELD (4 of 4 runs, <1.2 s).
//
// Two connections each pipeline, per round, a delete and re-add of their
// own account and then a modify and a password modify of the other's:
// each connection's modify of the other DN waits for the other
// connection's delete or add, which is relayed but perhaps still in that
// session's buffer, while that session waits for this one's. A wait that
// does not flush its own session first would stall both for the patience
// (busy 51 after 10 s). Neither may be answered busy, and no burst may
// take the patience.
func TestAttackHoldsCrossedPipelines(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	uids := []string{"alice", "bob"}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := dialRaw(t, e.gw.URL)
			raw.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
			if m, err := raw.next(orderPatience); err != nil || m.ResultCode != 0 {
				errs <- fmt.Sprintf("conn %d bind: %v %v", c, m, err)
				return
			}
			mine, theirs := uids[c], uids[1-c]
			id := int64(2)
			for round := range 8 {
				var burst []byte
				first := id
				add := func(b []byte) { burst = append(burst, b...); id++ }
				add(deleteRequest(id, userDN(mine)))
				add(addRequest(id, userDN(mine), holdsPerson(mine, fmt.Sprintf("pw-%s-%d", mine, round))))
				add(modifyPhone(id, userDN(theirs), fmt.Sprintf("+1 555 %d%03d", c, round)))
				add(passwordModifyRaw(id, userDN(theirs), fmt.Sprintf("x-%s-%d", theirs, round)))
				add(modifyPhone(id, userDN(mine), fmt.Sprintf("+1 555 9%d%02d", c, round)))
				start := time.Now()
				if _, err := raw.Write(burst); err != nil {
					errs <- fmt.Sprintf("conn %d: %v", c, err)
					return
				}
				for range id - first {
					m, err := raw.next(orderPatience)
					if err != nil {
						errs <- fmt.Sprintf("conn %d round %d: %v after %v", c, round, err, time.Since(start))
						return
					}
					// The other connection's delete and add race this
					// one's modifies of its account: noSuchObject is
					// the directory's fair answer; busy is not.
					switch m.ResultCode {
					case ldap.LDAPResultSuccess, ldap.LDAPResultNoSuchObject:
					default:
						errs <- fmt.Sprintf("conn %d round %d: %v", c, round, m)
					}
				}
				if d := time.Since(start); d > holdsStall {
					errs <- fmt.Sprintf("conn %d round %d: %d writes answered in %v", c, round, id-first, d)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Error(s)
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
}

// HELD (4 of 4 runs, <0.5 s; no session or hold-waiting goroutine left).
//
// An add, a modify and a delete of one new entry, each abandoned in the
// same segment, then the connection dropped without an unbind. The
// gateway does not relay an Abandon of an intercepted write (ops.go): the
// answers come, release the holds, and a second connection's writes to
// the DN go at once. Nor may the dropped session's goroutines stay.
func TestAttackHoldsAbandonedAndDropped(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	dn := userDN("dropped")
	for round := range 5 {
		raw := adminRaw(t, e.gw.URL, e.dir.RootPW)
		var burst []byte
		burst = append(burst, addRequest(2, dn, holdsPerson("dropped", "pw-d"))...)
		burst = append(burst, abandonRequest(3, 2)...)
		burst = append(burst, modifyPhone(4, dn, fmt.Sprintf("+1 555 70%02d", round))...)
		burst = append(burst, abandonRequest(5, 4)...)
		burst = append(burst, passwordModifyRaw(6, dn, fmt.Sprintf("dropped-%d", round))...)
		burst = append(burst, deleteRequest(7, dn)...)
		burst = append(burst, abandonRequest(8, 7)...)
		burst = append(burst, addRequest(9, dn, holdsPerson("dropped", "pw-d2"))...)
		raw.send(t, burst)
		raw.Close()

		other := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
		start := time.Now()
		err := modifyDescription(other, dn, fmt.Sprintf("after %d", round))
		took := time.Since(start)
		if ldap.IsErrorWithCode(err, ldap.LDAPResultBusy) || took > holdsStall {
			t.Errorf("round %d: a modify of %s after the dropped burst: %v in %v", round, dn, err, took)
		}
		// Start the next round from no entry, whatever the burst left.
		waitFor(t, 20*time.Second, "the dropped entry deleted", func() error {
			err := other.Del(ldap.NewDelRequest(dn, nil))
			if err == nil || ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				return nil
			}
			return err
		})
		other.Close()
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	// The mirror's pooled directory connections and delivery workers may
	// grow with the load: what must not stay is a session's goroutines,
	// or one waiting for a hold.
	lingering := func() string {
		body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=1", 5*time.Second)
		if err != nil {
			return err.Error()
		}
		for _, l := range lines(string(body)) {
			if strings.Contains(l, "gateway.(*session)") || strings.Contains(l, "(*onWay).hold") {
				return string(body)
			}
		}
		return ""
	}
	deadline := time.Now().Add(15 * time.Second)
	left := lingering()
	for left != "" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond) // polling the profile: nothing to wait on
		left = lingering()
	}
	if left != "" {
		t.Errorf("15 s after the dropped sessions, a session's goroutines remain:\n%s", left)
	}
}

// HELD (2 of 2 runs, ~4 s; per write a password modify cost 1.0-1.4
// times an add or delete. Three earlier runs of 2 rounds had 80 vs 120
// writes: 1 passed, 2 overran an absolute 5 s bound under the machine's
// other load, 3.2-3.4 s plain vs 5.3-6.1 s mixed, i.e. ~70 ms per
// password modify against ~40 ms per add: its second read, no stall).
//
// In a 3-node cluster, one connection pipelines password modifies of
// alice interleaved with adds and deletes of OTHER DNs. The password
// modifies wait for nothing (no identity change at alice's DN), are read
// again and sent at once (SendNow); the adds and deletes wait for no
// password at their DNs. The burst must be answered about as fast as the
// same burst without the password modifies, plus one read each; and no
// answer may be busy.
func TestAttackHoldsClusterExopsAmongAddsOfOthers(t *testing.T) {
	c := newClusterEnv(t, clusterOptions{Nodes: 3, Users: 1})
	c.converged(60 * time.Second)
	raw := adminRaw(t, c.members()[1].url, c.e.dir.RootPW)
	id := int64(2)
	run := func(what string, exops bool, round int) time.Duration {
		var burst []byte
		first := id
		for k := range 20 {
			uid := fmt.Sprintf("o%s%d%02d", what, round, k)
			burst = append(burst, addRequest(id, userDN(uid), holdsPerson(uid, "pw-"+uid))...)
			id++
			if exops {
				burst = append(burst, passwordModifyRaw(id, userDN("alice"), fmt.Sprintf("mix-%d-%d", round, k))...)
				id++
			}
			burst = append(burst, deleteRequest(id, userDN(uid))...)
			id++
		}
		start := time.Now()
		raw.send(t, burst)
		got, _ := holdsAnswers(t, raw, int(id-first), start, what)
		took := time.Since(start)
		wantAllSuccess(t, what, got)
		return took
	}
	// Per write, against a plain burst just before: the machine is
	// shared, and a cluster's write costs a journal round each.
	plain := run("p", false, 0)
	mixed := run("m", true, 1)
	t.Logf("40 adds and deletes: %v; with 20 password modifies among them: %v", plain, mixed)
	if perPlain, perMixed := plain/40, mixed/60; perMixed > 3*perPlain+50*time.Millisecond {
		t.Errorf("password modifies among adds and deletes of other DNs: %v, without them %v", mixed, plain)
	}
	c.converged(30 * time.Second)
	c.wantMailboxes(map[string]string{"alice": "mix-1-19"})
	c.checkPasswords()
}

// HELD (5 of 5 runs, <1 s; the address reached the group in 30-55 ms
// during the storm, as when quiet). Caveat: the address may reach the
// group through the mail modify's own member-group records, not only
// through refreshGroup.
//
// Since adds and deletes are identity changes, each one answered counts
// in onWay.ended, and a delivery refreshing a group (refreshGroup, after
// a member's address changed) reads the group again whenever one ended
// during its read, postponing itself after five such reads. A storm of
// adds and deletes of OTHER entries on another connection (bulk
// provisioning) then keeps postponing the group's refresh: alice's new
// address reaches Axigen's staff group only once the storm pauses.
func TestAttackHoldsGroupRefreshUnderAddStorm(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer admin.Close()
	lag := func(tag string) time.Duration {
		addr := fmt.Sprintf("alice-%s@example.com", tag)
		req := ldap.NewModifyRequest(userDN("alice"), nil)
		req.Replace("mail", []string{addr})
		start := time.Now()
		if err := admin.Modify(req); err != nil {
			t.Fatalf("mail of alice: %v", err)
		}
		deadline := start.Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if g, ok := e.sim.Group(mirrorDomain, "staff"); ok {
				for _, m := range g.Members {
					if strings.EqualFold(m, addr) {
						return time.Since(start)
					}
				}
			}
			time.Sleep(20 * time.Millisecond) // polling the simulator: nothing to wait on
		}
		g, _ := e.sim.Group(mirrorDomain, "staff")
		t.Errorf("%s: Axigen's staff never listed %s: %+v", tag, addr, g)
		return time.Since(start)
	}
	var quiet time.Duration
	for r := range 3 {
		quiet = max(quiet, lag(fmt.Sprintf("quiet%d", r)))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw := dialRaw(t, e.gw.URL)
			raw.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
			if _, err := raw.next(orderPatience); err != nil {
				return
			}
			id := int64(2)
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				var burst []byte
				first := id
				for k := range 10 {
					uid := fmt.Sprintf("storm%d-%d-%d", c, round, k)
					burst = append(burst, addRequest(id, userDN(uid), holdsPerson(uid, "pw"))...)
					id++
					burst = append(burst, deleteRequest(id, userDN(uid))...)
					id++
				}
				if _, err := raw.Write(burst); err != nil {
					return
				}
				for range id - first {
					if _, err := raw.next(orderPatience); err != nil {
						return
					}
				}
			}
		}()
	}
	var stormy time.Duration
	for r := range 3 {
		stormy = max(stormy, lag(fmt.Sprintf("storm%d", r)))
	}
	close(stop)
	wg.Wait()
	t.Logf("alice's new address in Axigen's staff: quiet within %v, during a storm of adds and deletes within %v", quiet, stormy)
	if stormy > holdsStall {
		t.Errorf("during a storm of adds and deletes of other entries, a member's new address took %v to reach its group (quiet: %v)", stormy, quiet)
	}
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(30*time.Second, false)
}
