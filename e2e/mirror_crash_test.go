package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

// outcome is what a client learnt of its write.
type outcome int

const (
	succeeded outcome = iota // the gateway answered success
	failed                   // the gateway answered an error, or it was never sent
	unknown                  // no answer: the connection died with the write in flight
)

func (o outcome) String() string { return [...]string{"succeeded", "failed", "unknown"}[o] }

// crashWrite is one write of the crash test: it sets key (an Axigen-visible
// property of one entry) to value.
type crashWrite struct {
	round   int
	value   string
	outcome outcome
	err     error
}

// crashLedger records every write per key, in the order each key's single
// writer made them.
type crashLedger struct {
	mu      sync.Mutex
	writes  map[string][]crashWrite
	initial map[string]string
}

func (l *crashLedger) add(key string, w crashWrite) {
	l.mu.Lock()
	l.writes[key] = append(l.writes[key], w)
	l.mu.Unlock()
}

// allowed is the set of values key may have in Axigen: the value of its
// last write that succeeded (or its initial value), or that of any later
// write whose outcome is unknown.
func (l *crashLedger) allowed(key string) []string {
	ws := l.writes[key]
	last := -1
	for i, w := range ws {
		if w.outcome == succeeded {
			last = i
		}
	}
	var out []string
	if last >= 0 {
		out = append(out, ws[last].value)
	} else {
		out = append(out, l.initial[key])
	}
	for _, w := range ws[last+1:] {
		if w.outcome == unknown {
			out = append(out, w.value)
		}
	}
	return out
}

// crashRounds is how many times the crash test kills the gateway: 3 by
// default, LDAPGATE_CRASH_ROUNDS for a soak (make soak).
func crashRounds(t *testing.T) int {
	if s := os.Getenv("LDAPGATE_CRASH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LDAPGATE_CRASH_ROUNDS=%q: want a positive number", s)
		}
		return n
	}
	return 3
}

// The gateway is killed with SIGKILL at random moments during a stream of
// concurrent writes (phone and plaintext password changes of accounts, and
// group membership changes) from go-ldap clients, and restarted on the same
// data folder. Afterwards Axigen equals the directory, and for every
// property written: the value Axigen holds is that of the last write whose
// client was told it succeeded, or of a later write that got no answer;
// never that of a write that failed.
func TestCrashMirrorKeepsEveryAcknowledgedWrite(t *testing.T) {
	const (
		users       = 16
		groups      = 2
		userWriters = 4
	)
	rounds := crashRounds(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LDAPGATE_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("%d rounds, seed %d (LDAPGATE_CRASH_SEED reproduces the kill points)", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	e := newMirrorEnv(t, mirrorOptions{Users: users, Groups: groups, LogLevel: "info"})
	ledger := &crashLedger{writes: map[string][]crashWrite{}, initial: map[string]string{}}
	for i := range users {
		ledger.initial["phone:"+slapd.UserUID(i)] = fmt.Sprintf("+1 555 %07d", i)
		ledger.initial["password:"+slapd.UserUID(i)] = slapd.UserPassword(i)
	}
	for g := range groups {
		ledger.initial["member:"+slapd.GroupCN(g)] = "no" // carol is in no generated group
	}

	carolIn := membership(groups, func(g int) string { return groupDN(slapd.GroupCN(g)) },
		func(dn string) *ldap.Entry { return e.directoryEntry(dn, "member") }, userDN("carol"))
	for round := range rounds {
		if round > 0 {
			e.start()
		}
		startMember := carolIn()
		_, finish := crashRound(t, round, int64(10+rng.IntN(150)), userWriters, rng,
			func(ctx context.Context, w int, seed uint64, acked *atomic.Int64) {
				crashWriter(ctx, slapdCrashDirectory(e.gw.URL, e.dir.RootPW), w, userWriters, users, groups, round, seed, ledger, acked, startMember)
			}, e.requireAlive)
		e.kill()
		finish()
	}
	e.start()

	e.waitMirrored(60*time.Second, false)
	e.waitDrained(60*time.Second, false)
	counts := map[outcome]int{}
	for key, ws := range ledger.writes {
		for _, w := range ws {
			counts[w.outcome]++
			if w.outcome == failed {
				t.Logf("write %s=%q failed in round %d: %v", key, w.value, w.round, w.err)
			}
		}
		got := e.axigenValue(key)
		if allowed := ledger.allowed(key); !slices.Contains(allowed, got) {
			t.Errorf("%s is %q in Axigen; allowed: %q (writes: %s)", key, got, allowed, describeWrites(ws))
		}
	}
	t.Logf("writes: %d succeeded, %d failed, %d unknown", counts[succeeded], counts[failed], counts[unknown])
	if counts[succeeded] == 0 {
		t.Fatal("no write succeeded")
	}
}

func describeWrites(ws []crashWrite) string {
	var parts []string
	for _, w := range ws[max(0, len(ws)-6):] {
		parts = append(parts, fmt.Sprintf("r%d %q %s", w.round, w.value, w.outcome))
	}
	return strings.Join(parts, "; ")
}

// axigenValue reads a crash key's current value from the simulator.
func (e *mirrorEnv) axigenValue(key string) string {
	kind, name, _ := strings.Cut(key, ":")
	switch kind {
	case "phone":
		a, _ := e.sim.Account(mirrorDomain, name)
		return a.Contact["phone"]
	case "password":
		a, _ := e.sim.Account(mirrorDomain, name)
		return a.Password
	case "member":
		g, _ := e.sim.Group(mirrorDomain, name)
		if slices.Contains(g.Members, "carol@example.com") {
			return "yes"
		}
		return "no"
	}
	panic("unknown crash key " + key)
}

// membership returns what reads which of the groups (0..groups-1, named by
// dnOf) list member, straight from the directory (read).
func membership(groups int, dnOf func(int) string, read func(dn string) *ldap.Entry, member string) func() map[int]bool {
	return func() map[int]bool {
		in := map[int]bool{}
		for g := range groups {
			for _, m := range read(dnOf(g)).GetAttributeValues("member") {
				if schema.EqualDN(m, member) {
					in[g] = true
				}
			}
		}
		return in
	}
}

// crashRound starts writers+1 concurrent writers (write, each with its own
// seed from rng) and returns once target writes were acknowledged (check
// fails the test if the gateway died meanwhile). The caller then kills the
// gateway and calls finish, which stops the writers and waits for them.
func crashRound(t *testing.T, round int, target int64, writers int, rng *rand.Rand,
	write func(ctx context.Context, w int, seed uint64, acked *atomic.Int64), check func()) (acked *atomic.Int64, finish func()) {
	t.Helper()
	acked = &atomic.Int64{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range writers + 1 {
		seed := rng.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			write(ctx, w, seed, acked)
		}()
	}
	// The kill comes after a random number of acknowledged writes.
	waitFor(t, 60*time.Second, fmt.Sprintf("round %d: %d acknowledged writes", round, target), func() error {
		if acked.Load() >= target {
			return nil
		}
		check()
		return fmt.Errorf("%d so far", acked.Load())
	})
	return acked, func() { wg.Wait(); cancel() }
}

// crashDirectory is what the crash writers need to know of the directory
// they write to through the gateway.
type crashDirectory struct {
	url            string // the gateway's
	bindDN, bindPW string
	group          func(g int) (name, dn string) // a generated group
	user           func(u int) (name, dn string) // a generated user
	member         string                        // carol's DN
	// password sets value as a user's password in req.
	password func(req *ldap.ModifyRequest, value string)
}

// slapdCrashDirectory is the OpenLDAP directory behind the gateway at url.
func slapdCrashDirectory(url, adminPW string) crashDirectory {
	return crashDirectory{
		url: url, bindDN: mirrorAdminDN, bindPW: adminPW,
		group:  func(g int) (string, string) { return slapd.GroupCN(g), groupDN(slapd.GroupCN(g)) },
		user:   func(u int) (string, string) { return slapd.UserUID(u), userDN(slapd.UserUID(u)) },
		member: userDN("carol"),
		password: func(req *ldap.ModifyRequest, value string) {
			req.Replace("userPassword", []string{value})
		},
	}
}

// crashWriter writes until its connection fails or ctx ends. Writer w <
// userWriters owns the users u with u%userWriters == w; the last writer
// moves carol in and out of the generated groups.
func crashWriter(ctx context.Context, d crashDirectory, w, userWriters, users, groups, round int, seed uint64,
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
	// This writer's view of carol's membership, by group: from the
	// directory at the start of a round, since the last round may have
	// ended on a write of unknown outcome.
	member := maps.Clone(startMember)
	for n := 0; ctx.Err() == nil; n++ {
		var key, value string
		var req *ldap.ModifyRequest
		if w == userWriters {
			g := rng.IntN(groups)
			name, dn := d.group(g)
			key = "member:" + name
			req = ldap.NewModifyRequest(dn, nil)
			if member[g] {
				req.Delete("member", []string{d.member})
				value = "no"
			} else {
				req.Add("member", []string{d.member})
				value = "yes"
			}
		} else {
			name, dn := d.user(owned[rng.IntN(len(owned))])
			req = ldap.NewModifyRequest(dn, nil)
			if rng.IntN(4) == 0 {
				// Mixed case and a digit: AD's complexity rules accept it.
				key, value = "password:"+name, fmt.Sprintf("Pw-r%d-w%d-%d-Xy", round, w, n)
				d.password(req, value)
			} else {
				key, value = "phone:"+name, fmt.Sprintf("+1 555 %d%d%05d", round%10, w, n)
				req.Replace("telephoneNumber", []string{value})
			}
		}
		if conn == nil {
			c, err := ldap.DialURL(d.url)
			if err == nil {
				c.SetTimeout(30 * time.Second)
				if err = c.Bind(d.bindDN, d.bindPW); err != nil {
					c.Close()
				}
			}
			if err != nil {
				// Never sent: the gateway is gone.
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

// groupIndex is the generated group a member key is about.
func groupIndex(key string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(key, "member:group"))
	return n
}

// classifyWriteError tells an answer from the gateway (an LDAP result) from
// a connection that died with the write in flight — or an upstream that did,
// which the gateway reports as unavailable with an unknown outcome.
func classifyWriteError(err error) outcome {
	if err == nil {
		return succeeded
	}
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode > 0 && le.ResultCode < ldap.ErrorNetwork {
		if le.ResultCode == ldap.LDAPResultUnavailable && strings.Contains(le.Error(), gateway.OutcomeUnknown) {
			return unknown
		}
		return failed
	}
	return unknown
}
