package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/samba"
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
				adCrashWriter(ctx, e, w, userWriters, users, groups, round, seed, ledger, acked, startMember)
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

// adCrashWriter is crashWriter with AD's entries and attributes.
func adCrashWriter(ctx context.Context, e *adEnv, w, userWriters, users, groups, round int, seed uint64,
	ledger *crashLedger, acked *atomic.Int64, startMember map[int]bool) {
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	var owned []int
	for u := w; u < users; u += userWriters {
		owned = append(owned, u)
	}
	var conn *ldap.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	member := maps.Clone(startMember)
	carol := adUserDN("Carol Cooper")
	for n := 0; ctx.Err() == nil; n++ {
		var key, value string
		var req *ldap.ModifyRequest
		if w == userWriters {
			g := rng.IntN(groups)
			key = "member:" + adGenGroup(g)
			req = ldap.NewModifyRequest(adGroupDN(adGenGroup(g)), nil)
			if member[g] {
				req.Delete("member", []string{carol})
				value = "no"
			} else {
				req.Add("member", []string{carol})
				value = "yes"
			}
		} else {
			u := adGenUser(owned[rng.IntN(len(owned))])
			req = ldap.NewModifyRequest(adUserDN(u.CN), nil)
			if rng.IntN(4) == 0 {
				key, value = "password:"+u.Sam, fmt.Sprintf("Pw-r%d-w%d-%d-Xy", round, w, n)
				req.Replace("unicodePwd", []string{string(schema.EncodeUnicodePwd(value))})
			} else {
				key, value = "phone:"+u.Sam, fmt.Sprintf("+1 555 %d%d%05d", round%10, w, n)
				req.Replace("telephoneNumber", []string{value})
			}
		}
		if conn == nil {
			c, err := ldap.DialURL(e.gw.URL)
			if err == nil {
				c.SetTimeout(30 * time.Second)
				if err = c.Bind(adAdmin, e.dc.AdminPassword); err != nil {
					c.Close()
				}
			}
			if err != nil {
				ledger.add(key, crashWrite{round: round, value: value, outcome: failed, err: err})
				return
			}
			conn = c
		}
		err := conn.Modify(req)
		o := classifyWriteError(err)
		ledger.add(key, crashWrite{round: round, value: value, outcome: o, err: err})
		switch o {
		case succeeded:
			acked.Add(1)
			if w == userWriters {
				member[groupIndex(key)] = value == "yes"
			}
		case unknown:
			return
		}
	}
}
