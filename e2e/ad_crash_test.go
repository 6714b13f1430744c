package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
)

// The mirror's crash test against AD: the gateway is killed with SIGKILL
// at random moments during concurrent writes (phone and unicodePwd
// changes of accounts, carol in and out of groups) and restarted on the
// same data folder. Afterwards Axigen equals AD, and every property holds
// the value of its last acknowledged write or of a later unanswered one.
func adCrash(t *testing.T, dc *samba.Server) {
	const users, groups, userWriters = 8, 2, 3
	rounds := crashRounds(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LDAPGATE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("%d rounds, seed %d (LDAPGATE_CRASH_SEED reproduces the kill points)", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	e := newADEnv(t, dc, adOptions{Users: users, Groups: groups, LogLevel: "info"})
	ledger := &crashLedger{writes: map[string][]crashWrite{}, initial: map[string]string{}}
	r := e.root()
	r.mu.Lock()
	for i := range users {
		u := adGenUser(i)
		ledger.initial["phone:"+u.Sam] = u.Phone
		ledger.initial["password:"+u.Sam] = u.Password
		// Which password AD ends with is the ledger's business: a write of
		// unknown outcome may or may not have been made.
		delete(r.known, u.Sam)
	}
	r.mu.Unlock()
	for g := range groups {
		ledger.initial["member:"+adGenGroup(g)] = "no"
	}
	carolIn := membership(groups, func(g int) string { return adGroupDN(adGenGroup(g)) },
		func(dn string) *ldap.Entry { return e.dcEntry(dn, "member") }, adUserDN("Carol Cooper"))
	for round := range rounds {
		if round > 0 {
			e.start()
		}
		startMember := carolIn()
		_, finish := crashRound(t, round, int64(10+rng.IntN(60)), userWriters, rng,
			func(ctx context.Context, w int, seed uint64, acked *atomic.Int64) {
				crashWriter(ctx, e.crashDirectory(), w, userWriters, users, groups, round, seed, ledger, acked, startMember)
			}, e.requireAlive)
		e.kill()
		finish()
	}
	e.start()
	e.waitAD(60 * time.Second)
	e.waitDrained(60*time.Second, false)
	counts := map[outcome]int{}
	for key, ws := range ledger.writes {
		for _, w := range ws {
			counts[w.outcome]++
		}
		got := e.axigenValue(key)
		allowed := ledger.allowed(key)
		ok := false
		for _, a := range allowed {
			ok = ok || a == got
		}
		if !ok {
			t.Errorf("%s is %q in Axigen; allowed: %q (writes: %s)", key, got, allowed, describeWrites(ws))
		}
	}
	t.Logf("writes: %d succeeded, %d failed, %d unknown", counts[succeeded], counts[failed], counts[unknown])
	if counts[succeeded] == 0 {
		t.Fatal("no write succeeded")
	}
}

// crashDirectory is the AD domain controller behind the env's gateway.
func (e *adEnv) crashDirectory() crashDirectory {
	return crashDirectory{
		url: e.gw.URL, bindDN: adAdmin, bindPW: e.dc.AdminPassword,
		group: func(g int) (string, string) { return adGenGroup(g), adGroupDN(adGenGroup(g)) },
		user: func(u int) (string, string) {
			user := adGenUser(u)
			return user.Sam, adUserDN(user.CN)
		},
		member: adUserDN("Carol Cooper"),
		password: func(req *ldap.ModifyRequest, value string) {
			req.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(value))})
		},
	}
}
