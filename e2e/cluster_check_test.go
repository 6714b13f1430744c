package e2e

// The cluster fault tests' workload and checker: 16 clients write unique
// values (phone numbers and passwords) to their own account through
// random gateways, each write recorded with the gateway, its times and its
// outcome; after the faults are healed, the checker compares Axigen with
// the directory (the crash test's ledger decides which values each
// account may hold) and audits the simulator's command log against the
// leaderships the gateways logged.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// clusterWrite is one write of the workload.
type clusterWrite struct {
	Client     int
	Key, Value string
	Node       string // the gateway it went to
	Start, End time.Time
	Outcome    outcome // the crash test's: succeeded, failed, unknown
	Sent       bool    // false: no connection to the gateway, never sent
	Code       uint16  // the LDAP result code of an answer
	Err        error
}

// workload is the writers and what they recorded.
type workload struct {
	c       *clusterEnv
	users   int
	ledger  *crashLedger
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	writes  []clusterWrite
	stopped bool
}

// startWorkload starts one writer per account (users of them).
func (c *clusterEnv) startWorkload(users int, seed uint64) *workload {
	w := &workload{c: c, users: users, ledger: &crashLedger{writes: map[string][]crashWrite{}, initial: map[string]string{}}}
	for i := range users {
		w.ledger.initial["phone:"+slapd.UserUID(i)] = fmt.Sprintf("+1 555 %07d", i)
		w.ledger.initial["password:"+slapd.UserUID(i)] = slapd.UserPassword(i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for i := range users {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.writer(ctx, i, rand.New(rand.NewPCG(seed, uint64(i))))
		}()
	}
	c.t.Cleanup(w.stop)
	c.mu.Lock()
	c.w = w
	c.mu.Unlock()
	return w
}

// stop ends the writers and waits for them.
func (w *workload) stop() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

func (w *workload) record(cw clusterWrite) {
	w.ledger.add(cw.Key, crashWrite{value: cw.Value, outcome: cw.Outcome, err: cw.Err})
	w.mu.Lock()
	w.writes = append(w.writes, cw)
	w.mu.Unlock()
}

func (w *workload) all() []clusterWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// clusterOpTimeout bounds a client's wait for one answer: a write still
// unanswered then is of unknown outcome (a frozen gateway). A gateway
// answers a write it cannot journal within its propose time-out (2s), so
// 3s leaves the refusals their answer; it also bounds how long clients
// stay stuck on a frozen gateway, which the SIGSTOP round's first
// acknowledgement includes.
const clusterOpTimeout = 3 * time.Second

// writer writes to account i until ctx ends, each write through a gateway
// picked at random among the members, alternating its phone number and
// its password (one in three), every value unique.
func (w *workload) writer(ctx context.Context, i int, rng *rand.Rand) {
	uid := slapd.UserUID(i)
	dn := userDN(uid)
	conns := map[string]*ldap.Conn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for n := 0; ctx.Err() == nil; n++ {
		members := w.c.members()
		node := members[rng.IntN(len(members))]
		cw := clusterWrite{Client: i, Node: node.name}
		req := ldap.NewModifyRequest(dn, nil)
		if rng.IntN(3) == 0 {
			cw.Key, cw.Value = "password:"+uid, fmt.Sprintf("Pw-c%d-%d-Xy", i, n)
			req.Replace("userPassword", []string{cw.Value})
		} else {
			cw.Key, cw.Value = "phone:"+uid, fmt.Sprintf("+1 555 %02d%06d", i, n)
			req.Replace("telephoneNumber", []string{cw.Value})
		}
		cw.Start = time.Now()
		conn, err := w.conn(conns, node)
		if err != nil {
			cw.End, cw.Outcome, cw.Err = time.Now(), failed, err
			w.record(cw)
			// Pacing, not synchronisation: a client whose gateway is
			// down tries another a moment later.
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		cw.Sent = true
		err = conn.Modify(req)
		cw.End, cw.Err = time.Now(), err
		cw.Outcome = classifyWriteError(err)
		var le *ldap.Error
		if errors.As(err, &le) {
			cw.Code = le.ResultCode
		}
		if cw.Outcome != succeeded {
			conn.Close()
			delete(conns, node.name)
		}
		w.record(cw)
		// Pacing: about 20 writes a second per client, so that 16
		// clients and three gateways leave the shared machine room.
		sleepCtx(ctx, time.Duration(20+rng.IntN(60))*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// conn is the writer's connection to node, dialled and bound when needed.
func (w *workload) conn(conns map[string]*ldap.Conn, node *gwNode) (*ldap.Conn, error) {
	if c := conns[node.name]; c != nil {
		return c, nil
	}
	// A gateway that does not answer a connection and a bind within a
	// second is taken for down (a frozen one accepts connections: the
	// kernel does).
	c, err := ldap.DialURL(node.url, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
	if err != nil {
		return nil, err
	}
	c.SetTimeout(time.Second)
	if err := c.Bind(mirrorAdminDN, w.c.e.dir.RootPW); err != nil {
		c.Close()
		return nil, err
	}
	c.SetTimeout(clusterOpTimeout)
	conns[node.name] = c
	return c, nil
}

// directoryValue reads a crash key's value from slapd directly.
func (c *clusterEnv) directoryValue(key string) string {
	kind, name, _ := strings.Cut(key, ":")
	attr := map[string]string{"phone": "telephoneNumber", "password": "userPassword"}[kind]
	en := c.e.directoryEntry(userDN(name), attr)
	if en == nil {
		return ""
	}
	return en.GetAttributeValue(attr)
}

// waitAcked waits until a write that started at or after from has been
// acknowledged, and returns when the first was.
func (w *workload) waitAcked(t testing.TB, from time.Time, d time.Duration, what string) time.Time {
	t.Helper()
	var first time.Time
	waitFor(t, d, what+": a write acknowledged", func() error {
		first = time.Time{}
		for _, cw := range w.all() {
			if cw.Outcome == succeeded && !cw.Start.Before(from) && (first.IsZero() || cw.End.Before(first)) {
				first = cw.End
			}
		}
		if first.IsZero() {
			return errNotYet
		}
		return nil
	})
	return first
}

// waitAckedVia waits until a write through node that started at or after
// from has been acknowledged (the node serves writes again).
func (w *workload) waitAckedVia(t testing.TB, node string, from time.Time, d time.Duration) {
	t.Helper()
	waitFor(t, d, "a write through "+node+" acknowledged", func() error {
		for _, cw := range w.all() {
			if cw.Node == node && cw.Outcome == succeeded && !cw.Start.Before(from) {
				return nil
			}
		}
		return errNotYet
	})
}

// ---- rounds and figures ----

// faultRound is one fault injected and healed.
type faultRound struct {
	Kind string
	// T0 is the origin of the latency figures: the fault, or the restart
	// for faults that leave no quorum until it.
	T0 time.Time
	// NoAck: writes through these gateways that started within the
	// window must not be acknowledged within it (they are on a side
	// without quorum).
	NoAck []noAckWindow
}

type noAckWindow struct {
	Nodes    []string
	From, To time.Time
}

// findings collect what the audits found: violations (errs, each a test
// error) and notes (logged).
type findings struct{ errs, notes []string }

func (fd *findings) fail(format string, a ...any) {
	fd.errs = append(fd.errs, fmt.Sprintf(format, a...))
}
func (fd *findings) note(format string, a ...any) {
	fd.notes = append(fd.notes, fmt.Sprintf(format, a...))
}

// report passes the findings to t, the first 40 of each.
func (fd *findings) report(t testing.TB) {
	t.Helper()
	for i, n := range fd.notes {
		if i == 40 {
			t.Logf("... and %d more notes", len(fd.notes)-i)
			break
		}
		t.Log(n)
	}
	for i, e := range fd.errs {
		if i == 40 {
			t.Errorf("... and %d more violations", len(fd.errs)-i)
			break
		}
		t.Error(e)
	}
}

// clusterFigures are what the checker found over the rounds of one fault.
type clusterFigures struct {
	Kind                            string
	Rounds                          int
	Acked, Refused, Unknown, Unsent int
	// RefusedBy counts the refusals by LDAP result code.
	RefusedBy map[uint16]int
	// AckedLost: keys whose final value in Axigen differs from the
	// directory's, or is neither their last acknowledged value nor a write
	// of unknown outcome.
	AckedLost int
	// LateUnknown: keys whose final value, in the directory and Axigen
	// alike, is a write of unknown outcome made before their last
	// acknowledged one: a frozen gateway relayed it to the directory after
	// its client gave up, overwriting later acknowledged writes.
	LateUnknown int
	// MinorityAcks: writes acknowledged by a gateway without quorum.
	MinorityAcks int
	// Stale*: Axigen commands from a node after a newer leader's fence
	// delay had passed (Mutations: those that changed Axigen).
	StaleCommands, StaleMutations int
	// StalePaused: the same from a gateway that was SIGSTOPped meanwhile.
	StalePausedCommands, StalePausedMutations int
	// InFenceWindow: an old leader's mutations after a newer election but
	// within the fence delay (allowed: the fence exists for them).
	InFenceWindow int
	// EarlyMutations: a leader's mutations before its own fence delay
	// had passed since its election.
	EarlyMutations int
	// OrderViolations: an account's Axigen value went back to an older
	// write's value (not one of unknown outcome).
	OrderViolations int
	// RefusedDelivered: values of refused writes that reached Axigen.
	RefusedDelivered int
	// Diverged: accounts or groups whose Axigen state differs from the
	// directory after settling.
	Diverged int
	// FirstAck and FirstDelivery per round: fault → first acknowledged
	// write, fault → first Axigen change by the leader of a new term.
	FirstAck, FirstDelivery []time.Duration
	// FirstLeader per round with an election: fault → a new leader.
	FirstLeader []time.Duration
	// AckToAxigen per acknowledged write: from its acknowledgement to the
	// first Axigen change that holds its value or a later one.
	AckToAxigen []time.Duration
}

// quantile of ds (nearest rank, unsorted); 0 for none.
func quantile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (f clusterFigures) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster fault %q, %d rounds:\n", f.Kind, f.Rounds)
	fmt.Fprintf(&b, "  writes: %d acknowledged, %d refused (by result code: %v), %d unknown, %d not sent (gateway down)\n",
		f.Acked, f.Refused, f.RefusedBy, f.Unknown, f.Unsent)
	fmt.Fprintf(&b, "  acknowledged writes lost: %d (overwritten in the directory by a late write of unknown outcome: %d)\n", f.AckedLost, f.LateUnknown)
	fmt.Fprintf(&b, "  writes acknowledged on a minority side: %d\n", f.MinorityAcks)
	fmt.Fprintf(&b, "  Axigen commands from a stale leader after the fence delay: %d (%d changes)\n", f.StaleCommands, f.StaleMutations)
	fmt.Fprintf(&b, "  ... of them from a SIGSTOPped gateway: %d (%d changes)\n", f.StalePausedCommands, f.StalePausedMutations)
	fmt.Fprintf(&b, "  old leader's changes within the fence window: %d; a new leader's changes before its fence: %d\n", f.InFenceWindow, f.EarlyMutations)
	fmt.Fprintf(&b, "  entries diverged: %d; delivery order violations: %d; refused writes delivered: %d\n", f.Diverged, f.OrderViolations, f.RefusedDelivered)
	fmt.Fprintf(&b, "  fault -> a new leader elected: p50 %v p99 %v max %v (%d rounds with an election)\n",
		quantile(f.FirstLeader, .5).Round(time.Millisecond), quantile(f.FirstLeader, .99).Round(time.Millisecond), quantile(f.FirstLeader, 1).Round(time.Millisecond), len(f.FirstLeader))
	fmt.Fprintf(&b, "  fault -> first acknowledged write: p50 %v p99 %v max %v (target p99 <= 3s)\n",
		quantile(f.FirstAck, .5).Round(time.Millisecond), quantile(f.FirstAck, .99).Round(time.Millisecond), quantile(f.FirstAck, 1).Round(time.Millisecond))
	fmt.Fprintf(&b, "  fault -> first Axigen delivery: p50 %v p99 %v max %v (target p99 <= 3s + fence delay)",
		quantile(f.FirstDelivery, .5).Round(time.Millisecond), quantile(f.FirstDelivery, .99).Round(time.Millisecond), quantile(f.FirstDelivery, 1).Round(time.Millisecond))
	fmt.Fprintf(&b, "\n  acknowledged write -> in Axigen: p50 %v p99 %v max %v",
		quantile(f.AckToAxigen, .5).Round(time.Millisecond), quantile(f.AckToAxigen, .99).Round(time.Millisecond), quantile(f.AckToAxigen, 1).Round(time.Millisecond))
	return b.String()
}

// settle ends the faults: the writers stop, every member runs, the network
// heals; then Axigen must come to equal the directory without a resync.
// It returns the entries that still differ (0 when it converged).
func (c *clusterEnv) settle(w *workload) int {
	c.t.Helper()
	w.stop()
	c.net.HealAll()
	for _, n := range c.members() {
		if n.paused {
			c.resume(n)
		}
		if !n.gw.alive() {
			c.start(n)
		}
	}
	leader := c.waitLeader(60 * time.Second)
	c.waitCaughtUp(60 * time.Second)
	var diff error
	deadline := time.Now().Add(90 * time.Second)
	for {
		if diff = c.e.checkMirrored(false); diff == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	if diff != nil {
		c.t.Errorf("Axigen does not equal the directory after settling: %v", diff)
		n, _ := strconv.Atoi(strings.Fields(diff.Error())[0])
		return max(n, 1)
	}
	view := &mirrorEnv{t: c.t, dir: c.e.dir, sim: c.e.sim, mapping: c.e.mapping, dataDir: leader.dataDir,
		logPath: leader.logPath, gw: leader.gw, parent: c.e.root()}
	view.waitDrained(60*time.Second, false)
	return 0
}

// check computes the figures of the rounds from the writes, the
// simulator's command log and the gateways' logs, and reports each
// violated property as a test error.
func (c *clusterEnv) check(kind string, w *workload, rounds []faultRound, diverged int) clusterFigures {
	t := c.t
	t.Helper()
	f := clusterFigures{Kind: kind, Rounds: len(rounds), Diverged: diverged, RefusedBy: map[uint16]int{}}
	var fd findings
	defer fd.report(t)
	writes := w.all()
	for _, cw := range writes {
		switch {
		case !cw.Sent:
			f.Unsent++
		case cw.Outcome == succeeded:
			f.Acked++
		case cw.Outcome == unknown:
			f.Unknown++
		default:
			f.Refused++
			f.RefusedBy[cw.Code]++
		}
	}

	// Every acknowledged write is in Axigen (or a later unknown one), and
	// Axigen holds what the directory holds.
	for key, ws := range w.ledger.writes {
		got, dir := c.e.axigenValue(key), c.directoryValue(key)
		allowed := w.ledger.allowed(key)
		switch {
		case got != dir:
			f.AckedLost++
			fd.fail("%s is %q in Axigen and %q in the directory; allowed: %q (writes: %s)", key, got, dir, allowed, describeWrites(ws))
		case slices.Contains(allowed, got):
		case slices.ContainsFunc(ws, func(x crashWrite) bool { return x.outcome == unknown && x.value == got }):
			// The directory itself went back: a gateway relayed a write
			// after its client had given up on it (a frozen gateway).
			f.LateUnknown++
			fd.note("%s is %q in the directory and Axigen: a write of unknown outcome older than the last acknowledged one (%s)", key, got, describeWrites(ws))
		default:
			f.AckedLost++
			fd.fail("%s is %q in Axigen and the directory; allowed: %q (writes: %s)", key, got, allowed, describeWrites(ws))
		}
	}

	auditMinority(&f, &fd, writes, rounds)
	cmds := c.e.sim.Commands()
	leaders := c.readLeaderships()
	auditCommands(&f, &fd, cmds, leaders, c.faultEvents(), c.fence)
	auditOrder(&f, &fd, w.ledger, cmds)
	f.AckToAxigen = ackToAxigen(writes, w.ledger, cmds)

	// Latencies.
	for _, r := range rounds {
		var firstAck time.Time
		for _, cw := range writes {
			if cw.Outcome == succeeded && !cw.Start.Before(r.T0) && (firstAck.IsZero() || cw.End.Before(firstAck)) {
				firstAck = cw.End
			}
		}
		if firstAck.IsZero() {
			fd.fail("round %s at %s: no write acknowledged after the fault", r.Kind, r.T0.Format("15:04:05.000"))
		} else {
			f.FirstAck = append(f.FirstAck, firstAck.Sub(r.T0))
		}
		if d, ok := firstDelivery(cmds, leaders, r.T0); ok {
			f.FirstDelivery = append(f.FirstDelivery, d)
			// Where the time went: the election, the fence, the first command.
			for _, l := range leaders {
				if l.Elected.After(r.T0) {
					f.FirstLeader = append(f.FirstLeader, l.Elected.Sub(r.T0))
					fd.note("round %s at %s: %s elected in term %d after %v, delivering after %v, first Axigen change after %v, first acknowledged write after %v",
						r.Kind, r.T0.Format("15:04:05.000"), l.Node, l.Term, l.Elected.Sub(r.T0).Round(time.Millisecond),
						l.Delivered.Sub(r.T0).Round(time.Millisecond), d.Round(time.Millisecond), firstAck.Sub(r.T0).Round(time.Millisecond))
					break
				}
			}
		} else {
			fd.fail("round %s at %s: no Axigen change after the fault", r.Kind, r.T0.Format("15:04:05.000"))
		}
	}
	if f.Acked == 0 {
		fd.fail("no write was acknowledged")
	}
	return f
}

// auditMinority counts the writes a gateway acknowledged while it was on
// a side without quorum.
func auditMinority(f *clusterFigures, fd *findings, writes []clusterWrite, rounds []faultRound) {
	for _, r := range rounds {
		for _, win := range r.NoAck {
			for _, cw := range writes {
				if cw.Outcome == succeeded && slices.Contains(win.Nodes, cw.Node) &&
					!cw.Start.Before(win.From) && !cw.End.After(win.To) {
					f.MinorityAcks++
					fd.fail("round %s: %s=%q acknowledged by %s at %s, on a side without quorum from %s to %s",
						r.Kind, cw.Key, cw.Value, cw.Node, cw.End.Format("15:04:05.000"), win.From.Format("15:04:05.000"), win.To.Format("15:04:05.000"))
				}
			}
		}
	}
}

// termAt is the newest term whose election happened at or before at, and
// its leader.
func termAt(leaders []leadership, at time.Time) (uint64, string) {
	var term uint64
	var node string
	for _, l := range leaders {
		if !l.Elected.After(at) && l.Term > term {
			term, node = l.Term, l.Node
		}
	}
	return term, node
}

// deliveringTerm is the term node was delivering in at at: that of its
// newest "delivering" before at (0: it never was).
func deliveringTerm(leaders []leadership, node string, at time.Time) leadership {
	var best leadership
	for _, l := range leaders {
		if l.Node == node && !l.Delivered.IsZero() && !l.Delivered.After(at) && l.Term > best.Term {
			best = l
		}
	}
	return best
}

// auditCommands counts the Axigen commands sent by a gateway that was no
// longer the leader once a newer leader's fence delay had passed, and the
// changes a leader made before its own fence delay.
func auditCommands(f *clusterFigures, fd *findings, cmds []axigensim.Command, leaders []leadership, events []faultEvent, fence time.Duration) {
	pausedBetween := func(node string, from, to time.Time) bool {
		for _, ev := range events {
			if ev.Node == node && ev.What == "pause" && !ev.At.After(to) {
				// Paused before to, and resumed after from (or never).
				resumed := time.Time{}
				for _, r := range events {
					if r.Node == node && r.What == "resume" && r.At.After(ev.At) {
						resumed = r.At
						break
					}
				}
				if resumed.IsZero() || resumed.After(from) {
					return true
				}
			}
		}
		return false
	}
	shown := 0
	for _, cmd := range cmds {
		if cmd.Label == "" || cmd.Context == "login" || cmd.Context == "password" {
			continue // the test's own session, or a login
		}
		mine := deliveringTerm(leaders, cmd.Label, cmd.At)
		fenced, newer := termAt(leaders, cmd.At.Add(-fence))
		if fenced > mine.Term {
			paused := pausedBetween(cmd.Label, mine.Delivered, cmd.At)
			switch {
			case paused:
				f.StalePausedCommands++
			default:
				f.StaleCommands++
			}
			if cmd.Change != nil {
				if paused {
					f.StalePausedMutations++
				} else {
					f.StaleMutations++
					fd.fail("Axigen change %q (%s) from %s (term %d) at %s, after the fence delay of %s's term %d",
						cmd.Line, cmd.Context, cmd.Label, mine.Term, cmd.At.Format("15:04:05.000"), newer, fenced)
				}
			}
			if shown < 10 {
				shown++
				fd.note("stale command from %s (term %d, paused %v) at %s: %s", cmd.Label, mine.Term, paused, cmd.At.Format("15:04:05.000"), cmd.Line)
			}
			continue
		}
		if cmd.Change == nil {
			continue
		}
		if latest, _ := termAt(leaders, cmd.At); latest > mine.Term {
			f.InFenceWindow++
		}
		// The cluster skips the fence delay when no earlier leader ever
		// fenced the journal (none can have delivered): only a leader
		// with a delivering predecessor must wait.
		if mine.Term > 0 && cmd.At.Before(mine.Elected.Add(fence)) && deliveredBefore(leaders, mine.Term) {
			f.EarlyMutations++
			fd.fail("Axigen change %q from %s at %s, before its fence delay: elected in term %d at %s",
				cmd.Line, cmd.Label, cmd.At.Format("15:04:05.000"), mine.Term, mine.Elected.Format("15:04:05.000"))
		}
	}
}

// deliveredBefore reports whether a leader of a term older than term
// delivered.
func deliveredBefore(leaders []leadership, term uint64) bool {
	for _, l := range leaders {
		if l.Term < term && !l.Delivered.IsZero() {
			return true
		}
	}
	return false
}

// auditOrder checks that each account's values in Axigen, change after
// change, follow the order its writer wrote them in: a value may be
// skipped, never come back after a later one, unless its write's outcome
// was unknown (a frozen gateway may relay it late; the directory then
// holds it too). A refused write's value must never appear.
func auditOrder(f *clusterFigures, fd *findings, ledger *crashLedger, cmds []axigensim.Command) {
	type pos struct {
		idx int
		o   outcome
	}
	index := map[string]map[string]pos{} // key -> value -> position
	for key, ws := range ledger.writes {
		m := map[string]pos{ledger.initial[key]: {idx: -1, o: succeeded}}
		for i, x := range ws {
			m[x.value] = pos{idx: i, o: x.outcome}
		}
		index[key] = m
	}
	var changes []*axigensim.Change
	for _, cmd := range cmds {
		if cmd.Change != nil && cmd.Change.Kind == "account" && cmd.Change.Account != nil {
			changes = append(changes, cmd.Change)
		}
	}
	sort.Slice(changes, func(i, j int) bool { return changes[i].Seq < changes[j].Seq })
	last := map[string]int{}
	for _, ch := range changes {
		uid := strings.ToLower(ch.Name)
		for key, got := range map[string]string{"phone:" + uid: ch.Account.Contact["phone"], "password:" + uid: ch.Account.Password} {
			m := index[key]
			if m == nil {
				continue // an account the workload does not write
			}
			p, ok := m[got]
			if !ok {
				f.OrderViolations++
				fd.fail("%s became %q in Axigen (change %d), a value no client wrote", key, got, ch.Seq)
				continue
			}
			if p.o == failed {
				f.RefusedDelivered++
				fd.fail("%s became %q in Axigen (change %d): that write was refused", key, got, ch.Seq)
			}
			prev, seen := last[key]
			if seen && p.idx < prev && p.o != unknown {
				f.OrderViolations++
				fd.fail("%s went back in Axigen (change %d) to write #%d (%q) after write #%d", key, ch.Seq, p.idx, got, prev)
			}
			last[key] = p.idx
		}
	}
}

// ackToAxigen measures, for each acknowledged write, how long after its
// acknowledgement Axigen first held its value or a later write's.
func ackToAxigen(writes []clusterWrite, ledger *crashLedger, cmds []axigensim.Command) []time.Duration {
	// When each key first reached each write's position.
	reached := map[string][]time.Time{} // key -> by write index
	for _, cmd := range cmds {
		ch := cmd.Change
		if ch == nil || ch.Kind != "account" || ch.Account == nil {
			continue
		}
		uid := strings.ToLower(ch.Name)
		for key, got := range map[string]string{"phone:" + uid: ch.Account.Contact["phone"], "password:" + uid: ch.Account.Password} {
			ws := ledger.writes[key]
			idx := slices.IndexFunc(ws, func(x crashWrite) bool { return x.value == got })
			if idx < 0 {
				continue
			}
			r := reached[key]
			for len(r) < len(ws) {
				r = append(r, time.Time{})
			}
			for i := 0; i <= idx; i++ {
				if r[i].IsZero() {
					r[i] = cmd.At
				}
			}
			reached[key] = r
		}
	}
	var out []time.Duration
	for _, cw := range writes {
		if cw.Outcome != succeeded {
			continue
		}
		idx := slices.IndexFunc(ledger.writes[cw.Key], func(x crashWrite) bool { return x.value == cw.Value })
		if r := reached[cw.Key]; idx >= 0 && idx < len(r) && !r[idx].IsZero() {
			out = append(out, max(0, r[idx].Sub(cw.End)))
		}
	}
	return out
}

// firstDelivery is the time from t0 to the first Axigen change by the
// leader of a term newer than the one in force at t0 (or, when no newer
// term came, the first change after t0).
func firstDelivery(cmds []axigensim.Command, leaders []leadership, t0 time.Time) (time.Duration, bool) {
	before, _ := termAt(leaders, t0)
	var any time.Time
	for _, cmd := range cmds {
		if cmd.Change == nil || cmd.At.Before(t0) || cmd.Label == "" {
			continue
		}
		if any.IsZero() {
			any = cmd.At
		}
		if deliveringTerm(leaders, cmd.Label, cmd.At).Term > before {
			return cmd.At.Sub(t0), true
		}
	}
	for _, l := range leaders {
		if l.Term > before {
			return 0, false // a new term came, and delivered nothing
		}
	}
	if any.IsZero() {
		return 0, false
	}
	return any.Sub(t0), true
}

// clusterRounds is how many rounds of each fault the tests run: 2 by
// default, LDAPGATE_CLUSTER_ROUNDS for a soak (make soak).
func clusterRounds(t *testing.T) int {
	if s := os.Getenv("LDAPGATE_CLUSTER_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LDAPGATE_CLUSTER_ROUNDS=%q: want a positive number", s)
		}
		return n
	}
	return 2
}
