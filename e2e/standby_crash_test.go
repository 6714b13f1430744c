package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// Two gateways with synchronous replication share one listening address.
// Each round, go-ldap clients write concurrently through the primary
// (phone and plaintext password changes, group membership changes); the
// primary is killed with SIGKILL after a random number of acknowledged
// writes, every other round just after the network between the two was
// cut; the standby takes over delivery and the address; the killed
// gateway is started again and comes back as the new primary's standby
// (failback), so the roles alternate. At the end Axigen equals the
// directory, and for every property written Axigen holds the value of the
// last write a client was told succeeded, or of a later write that got no
// answer: no acknowledged write is lost, though the gateway that
// acknowledged it is gone with its journal.
func TestCrashStandbyTakesOverWithEveryAcknowledgedWrite(t *testing.T) {
	const (
		users       = 16
		groups      = 2
		userWriters = 4
		takeover    = 1500 * time.Millisecond
	)
	rounds := crashRounds(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LDAPGATE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("%d rounds, seed %d (LDAPGATE_CRASH_SEED reproduces the kill points)", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	e := newMirrorEnv(t, mirrorOptions{Users: users, Groups: groups, LogLevel: "info"})
	p := newGatewayPair(t, e, "sync", takeover, 5*time.Second)
	ledger := &crashLedger{writes: map[string][]crashWrite{}, initial: map[string]string{}}
	for i := range users {
		ledger.initial["phone:"+slapd.UserUID(i)] = fmt.Sprintf("+1 555 %07d", i)
		ledger.initial["password:"+slapd.UserUID(i)] = slapd.UserPassword(i)
	}
	for g := range groups {
		ledger.initial["member:"+slapd.GroupCN(g)] = "no"
	}
	carolIn := membership(groups, func(g int) string { return groupDN(slapd.GroupCN(g)) },
		func(dn string) *ldap.Entry { return e.directoryEntry(dn, "member") }, userDN("carol"))

	primary, standby := p.a, p.b
	p.start(primary)
	p.waitServing(primary, 30*time.Second)
	p.start(standby)
	p.waitFollowing(standby, primary, 30*time.Second)

	var takeovers []time.Duration
	for round := range rounds {
		startMember := carolIn()
		acked, finish := crashRound(t, round, int64(10+rng.IntN(120)), userWriters, rng,
			func(ctx context.Context, w int, seed uint64, acked *atomic.Int64) {
				crashWriter(ctx, slapdCrashDirectory(p.listen, e.dir.RootPW), w, userWriters, users, groups, round, seed, ledger, acked, startMember)
			}, func() {
				if !primary.gw.alive() {
					t.Fatalf("primary %s died", primary.name)
				}
			})
		// When a is primary, the network between the two is cut first, for
		// a moment shorter than the takeover time: with sync replication no
		// write is acknowledged meanwhile (they wait for the standby), so the
		// ones the standby never gets are never acknowledged. (With async,
		// writes acknowledged during the cut are lost with the primary and
		// the checks below fail: Axigen lacks their passwords.)
		partitioned := primary == p.a
		if partitioned {
			before := acked.Load()
			p.link.partition()
			time.Sleep(400 * time.Millisecond) // the partition's length: fault injection, not synchronisation
			t.Logf("round %d: %d answers of success during the partition (including ones already on their way)",
				round, acked.Load()-before)
		}
		// Every write so far waited for the standby's confirmation.
		for _, m := range []string{"ldapgate_replication_unconfirmed_acks_total", "ldapgate_replication_sync_degraded"} {
			if v, err := p.metric(primary, m); err != nil || v != 0 {
				t.Errorf("round %d: primary %s: %s = %v (%v), want 0", round, primary.name, m, v, err)
			}
		}
		p.kill(primary)
		killed := time.Now()
		if partitioned {
			p.link.mend()
		}
		finish()

		p.waitServing(standby, 30*time.Second)
		takeovers = append(takeovers, time.Since(killed))
		// The killed gateway comes back as the new primary's standby.
		p.start(primary)
		p.waitFollowing(primary, standby, 30*time.Second)
		primary, standby = standby, primary
	}

	// A password write whose client got no answer may be in the directory
	// without its record having reached the standby (the primary died
	// between the two); the resync after a takeover restores every other
	// attribute, but Axigen accepts a password only from the write path.
	unsure := map[string]bool{}
	for key := range ledger.writes {
		if name, ok := strings.CutPrefix(key, "password:"); ok {
			allowed := ledger.allowed(key)
			unsure[name] = len(allowed) > 1
		}
	}
	view := p.view(primary)
	waitMirroredBut(t, e, 60*time.Second, unsure)
	view.waitDrained(60*time.Second, false)
	counts := map[outcome]int{}
	for key, ws := range ledger.writes {
		for _, w := range ws {
			counts[w.outcome]++
		}
		got := e.axigenValue(key)
		if allowed := ledger.allowed(key); !slices.Contains(allowed, got) {
			t.Errorf("%s is %q in Axigen; allowed: %q (writes: %s)", key, got, allowed, describeWrites(ws))
		}
	}
	t.Logf("writes: %d succeeded, %d failed, %d unknown; kill-to-serving times %v",
		counts[succeeded], counts[failed], counts[unknown], takeovers)
	if counts[succeeded] == 0 {
		t.Fatal("no write succeeded")
	}
}
