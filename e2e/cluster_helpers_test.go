package e2e

// Helpers of the cluster fault tests (issue 18): three (or more) gateway
// processes clustered over Raft in front of one slapd and one Axigen
// simulator (those of a mirrorEnv, whose own lone gateway is stopped). Each
// gateway talks to Axigen through its own labelled listener of the
// simulator, so the simulator's command log says which gateway sent each
// command, and reaches the other gateways through a netproxy.Network, so
// the test can partition them.
//
// Addressing: node X's cluster port listens on 127.0.0.1:Lx (its
// --cluster-listen), and every node, X included, names X by the address of
// X's proxy (--cluster-peer X@proxyX, the same list everywhere, as the
// flag contract requires). The cluster advertises a node by its entry in
// the peer list, so Raft traffic and forwarded proposals alike cross the
// proxy of the node dialled. The proxies tell senders apart by process
// (netproxy.ProcessSource), which gives per-link control — a bridge, a
// one-way link — with no flag beyond the contract.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/netproxy"
)

// clusterOrphanAge is the gateways' --cluster-orphan-age in these tests.
const clusterOrphanAge = 10 * time.Second

// clusterOptions shape a clusterEnv.
type clusterOptions struct {
	Nodes int // gateways started at first (3)
	Users int // generated accounts, one writer each (16)
	// FenceDelay is --cluster-fence-delay (2s).
	FenceDelay time.Duration
	// OrphanAge is --cluster-orphan-age (clusterOrphanAge).
	OrphanAge time.Duration
	// SlowUpstream, when set, holds each request the last node sends
	// slapd this long (a proxy between them): the node's writes race
	// those of the others across a wide window.
	SlowUpstream time.Duration
}

// clusterEnv is slapd, the simulator and a cluster of gateways.
type clusterEnv struct {
	t      *testing.T
	e      *mirrorEnv // slapd, the simulator, the mapping, the checker
	root   string
	base   []string // serve flags every node shares (slapd, Axigen login, schema)
	key    string   // the journal key every node shares (hex)
	fence  time.Duration
	orphan time.Duration
	net    *netproxy.Network
	// slowNode reaches slapd at slowUpstream (clusterOptions.SlowUpstream).
	slowNode, slowUpstream string

	mu     sync.Mutex
	nodes  []*gwNode // every node ever added, in order
	events []faultEvent
	w      *workload // the writers, once started
}

// gwNode is one gateway of the cluster.
type gwNode struct {
	name     string
	dataDir  string
	logPath  string
	addrFile string
	url      string // ldap://127.0.0.1:PORT, fixed across restarts
	listen   string // its --cluster-listen
	peerAddr string // its proxy: how every node names it
	axigen   string // its labelled listener of the simulator
	peers    []string
	gw       *mirrorGateway // nil before the first start
	member   bool           // in the cluster's configuration (for the writers)
	paused   bool
}

// faultEvent is one thing the test did to a node or the network, for the
// figures and the failure log.
type faultEvent struct {
	At   time.Time
	What string // kill, start, stop, pause, resume, isolate, cut, heal, add, remove
	Node string // or "" for the network
}

// clusterSupported reports whether the built gateway has the cluster
// flags; the tests skip with the reason otherwise.
func clusterSupported(t *testing.T) {
	t.Helper()
	out, _ := exec.Command(gatewayBin, "serve", "--help").CombinedOutput()
	for _, flag := range []string{"--cluster-peer", "--cluster-listen", "--node-id", "--cluster-fence-delay"} {
		if !strings.Contains(string(out), flag) {
			t.Skipf("the gateway has no `serve %s` flag yet (issue 18's cluster wiring in cmd/ldapgate); the cluster fault tests need it", flag)
		}
	}
	out, _ = exec.Command(gatewayBin, "cluster", "--help").CombinedOutput()
	if !strings.Contains(string(out), "remove") {
		t.Skip("the gateway has no `ldapgate cluster add|remove` command yet (issue 18); the cluster fault tests need it")
	}
}

func newClusterEnv(t *testing.T, opts clusterOptions) *clusterEnv {
	t.Helper()
	clusterSupported(t)
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Users == 0 {
		opts.Users = 16
	}
	if opts.FenceDelay == 0 {
		opts.FenceDelay = 2 * time.Second
	}
	if opts.OrphanAge == 0 {
		opts.OrphanAge = clusterOrphanAge
	}
	e := newMirrorEnv(t, mirrorOptions{Users: opts.Users, Groups: 1, LogLevel: "info"})
	e.stop()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	c := &clusterEnv{t: t, e: e, root: t.TempDir(), key: hex.EncodeToString(key), fence: opts.FenceDelay, orphan: opts.OrphanAge,
		net: netproxy.NewNetwork()}
	t.Cleanup(c.net.Close)
	// The flags of e's gateway (slapd, Axigen login, schema), without its
	// own listener, address file, data folder, log level and Axigen address.
	for i := 1; i < len(e.args); i++ {
		switch e.args[i] {
		case "--listen", "--addr-file", "--data-dir", "--log-level", "--axigen":
			i++
			continue
		}
		c.base = append(c.base, e.args[i])
	}
	var names []string
	for i := range opts.Nodes {
		names = append(names, fmt.Sprintf("n%d", i+1))
	}
	for _, name := range names {
		c.addNode(name)
	}
	if opts.SlowUpstream > 0 {
		target := strings.TrimPrefix(e.dir.URL, "ldap://")
		p, err := netproxy.Listen(target, netproxy.Options{Delay: opts.SlowUpstream})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		c.slowNode, c.slowUpstream = names[len(names)-1], "ldap://"+p.Addr()
	}
	for _, n := range c.nodes {
		n.peers = c.peerList(names)
		n.member = true
	}
	// Registered before the gateways' own clean-ups, so it runs after
	// them, on complete logs.
	t.Cleanup(func() {
		if t.Failed() {
			c.logFailure()
		} else if os.Getenv("LDAPGATE_CLUSTER_KEEP") != "" {
			c.keepLogs()
		}
	})
	for _, n := range c.nodes {
		c.start(n)
	}
	c.waitLeader(30 * time.Second)
	return c
}

// addNode prepares node name: its ports, proxy, simulator listener and
// data folder with the shared journal key. It is not started.
func (c *clusterEnv) addNode(name string) *gwNode {
	return c.newNode(name, true)
}

// newNode is addNode; a node not proxied is named by its own cluster
// address (a node that joins a running cluster advertises that address,
// since it is absent from its own peer list).
func (c *clusterEnv) newNode(name string, proxied bool) *gwNode {
	c.t.Helper()
	ports := stablePorts(c.t, 2)
	n := &gwNode{
		name:     name,
		dataDir:  filepath.Join(c.root, name, "data"),
		logPath:  filepath.Join(c.root, name+".log"),
		addrFile: filepath.Join(c.root, name, "addr"),
		url:      fmt.Sprintf("ldap://127.0.0.1:%d", ports[0]),
		listen:   fmt.Sprintf("127.0.0.1:%d", ports[1]),
	}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	// Every gateway of a cluster needs the same journal key.
	if err := os.WriteFile(filepath.Join(n.dataDir, "journal.key"), []byte(c.key+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	var err error
	n.peerAddr = n.listen
	if proxied {
		if n.peerAddr, err = c.net.Add(name, n.listen); err != nil {
			c.t.Fatal(err)
		}
	}
	if n.axigen, err = c.e.sim.Listen(name); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// peerList is the --cluster-peer list naming each node by its proxy.
func (c *clusterEnv) peerList(names []string) []string {
	var out []string
	for _, name := range names {
		out = append(out, name+"@"+c.node(name).peerAddr)
	}
	return out
}

func (c *clusterEnv) node(name string) *gwNode {
	for _, n := range c.allNodes() {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

func (c *clusterEnv) allNodes() []*gwNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// members are the nodes in the cluster's configuration.
func (c *clusterEnv) members() []*gwNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*gwNode
	for _, n := range c.nodes {
		if n.member {
			out = append(out, n)
		}
	}
	return out
}

// urls are the LDAP addresses of the members, for the writers (a dead
// one refuses connections, as a real client would find it).
func (c *clusterEnv) urls() []string {
	var out []string
	for _, n := range c.members() {
		out = append(out, n.url)
	}
	return out
}

func (c *clusterEnv) note(what, node string) time.Time {
	now := time.Now()
	c.mu.Lock()
	c.events = append(c.events, faultEvent{At: now, What: what, Node: node})
	c.mu.Unlock()
	return now
}

func (c *clusterEnv) faultEvents() []faultEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

// args are node n's serve flags.
func (c *clusterEnv) args(n *gwNode) []string {
	args := append([]string{"serve"}, c.base...)
	args = append(args,
		"--listen", n.url, "--addr-file", n.addrFile, "--data-dir", n.dataDir,
		"--axigen", n.axigen,
		"--log-level", "info", "--log-format", "json",
		"--node-id", n.name, "--cluster-listen", n.listen,
		"--cluster-fence-delay", c.fence.String(),
		// The fence delay must cover the leader lease (500ms) and one
		// Axigen command: the simulator answers at once.
		"--axigen-command-timeout", (c.fence - 500*time.Millisecond).String(),
		// A record a gateway left prepared (it died, or its Commit was
		// lost with the leader) blocks its entry's later records until the
		// leader settles it, after --cluster-orphan-age (default
		// --op-timeout + 1m = 3m): short here, so that a round's faults
		// settle within the test. The write of a record in flight on the
		// directory lasts at most --op-timeout.
		"--op-timeout", "5s", "--cluster-orphan-age", c.orphan.String())
	for _, p := range n.peers {
		args = append(args, "--cluster-peer", p)
	}
	if n.name == c.slowNode {
		if i := slices.Index(args, "--upstream"); i >= 0 && i+1 < len(args) {
			args[i+1] = c.slowUpstream
		}
	}
	return args
}

// start runs node n and waits until it listens for LDAP clients.
func (c *clusterEnv) start(n *gwNode) {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		c.spawn(n)
		again := false
		waitFor(c.t, 30*time.Second, "gateway "+n.name+" listening", func() error {
			if !n.gw.alive() {
				if attempt < 3 && c.moveClusterPort(n) {
					again = true
					return nil
				}
				c.t.Fatalf("gateway %s exited during start-up (%v):\n%s", n.name, n.gw.cmd.ProcessState, tailFile(n.logPath, 4000))
			}
			data, err := os.ReadFile(n.addrFile)
			if err != nil || !strings.Contains(string(data), "ldap://") {
				return errors.New("no address file yet")
			}
			return nil
		})
		if !again {
			return
		}
	}
}

// moveClusterPort gives a proxied node that could not listen on its
// cluster port (another process took it while the node was down: the
// ports are chosen free, then released) another one, where its proxy
// forwards from now on; the other nodes name it by the proxy's address,
// which stays. It reports whether it did.
func (c *clusterEnv) moveClusterPort(n *gwNode) bool {
	c.t.Helper()
	log := tailFile(n.logPath, 600)
	if n.peerAddr == n.listen || !strings.Contains(log, "cluster: listen:") || !strings.Contains(log, "address already in use") {
		return false
	}
	n.listen = fmt.Sprintf("127.0.0.1:%d", stablePorts(c.t, 1)[0])
	c.net.Proxy(n.name).SetTarget(n.listen)
	c.note("moved to "+n.listen, n.name)
	return true
}

// spawn starts node n's process without waiting for it.
func (c *clusterEnv) spawn(n *gwNode) {
	c.t.Helper()
	if n.gw != nil && n.gw.alive() {
		c.t.Fatalf("gateway %s is already running", n.name)
	}
	_ = os.Remove(n.addrFile)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(logf, "===== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(gatewayBin, c.args(n)...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start gateway %s: %v", n.name, err)
	}
	logf.Close()
	g := &mirrorGateway{URL: n.url, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()
	n.gw, n.paused = g, false
	c.net.SetPID(n.name, cmd.Process.Pid)
	c.note("start", n.name)
	c.t.Cleanup(func() {
		if !g.alive() {
			return
		}
		// A paused gateway must be thawed to stop on SIGTERM.
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				c.t.Errorf("gateway %s exited with %d on SIGTERM", n.name, code)
			}
		case <-time.After(20 * time.Second):
			c.dumpAndKill(n.name, g)
			c.t.Errorf("gateway %s did not stop within 20s of SIGTERM (its goroutines are in its log)", n.name)
		}
	})
}

// kill ends node n with SIGKILL.
func (c *clusterEnv) kill(n *gwNode) time.Time {
	at := c.note("kill", n.name)
	_ = n.gw.cmd.Process.Kill()
	<-n.gw.exited
	n.paused = false
	return at
}

// stop ends node n with SIGTERM; it must exit 0.
func (c *clusterEnv) stop(n *gwNode) {
	c.t.Helper()
	c.note("stop", n.name)
	_ = n.gw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.gw.exited:
		if code := n.gw.cmd.ProcessState.ExitCode(); code != 0 {
			c.t.Errorf("gateway %s exited with %d on SIGTERM", n.name, code)
		}
	case <-time.After(20 * time.Second):
		c.dumpAndKill(n.name, n.gw)
		c.t.Errorf("gateway %s did not stop within 20s of SIGTERM (its goroutines are in its log)", n.name)
	}
}

// dumpAndKill makes a gateway that does not stop print its goroutines
// (SIGQUIT: the Go runtime writes them to its log) and kills it.
func (c *clusterEnv) dumpAndKill(name string, g *mirrorGateway) {
	_ = g.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	c.note("killed (hung)", name)
}

// pause freezes node n (SIGSTOP); resume thaws it.
func (c *clusterEnv) pause(n *gwNode) time.Time {
	at := c.note("pause", n.name)
	_ = n.gw.cmd.Process.Signal(syscall.SIGSTOP)
	n.paused = true
	return at
}

func (c *clusterEnv) resume(n *gwNode) time.Time {
	_ = n.gw.cmd.Process.Signal(syscall.SIGCONT)
	n.paused = false
	return c.note("resume", n.name)
}

// ---- what the nodes say ----

// nodeStatus is the part of a node's /cluster/status the tests read.
type nodeStatus struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	LeaderID     string `json:"leaderID"`
	Servers      []struct {
		ID        string `json:"id"`
		Suffrage  string `json:"suffrage"`
		Reachable bool   `json:"reachable"`
		Lag       uint64 `json:"lag"`
	} `json:"servers"`
}

// status asks node n's admin socket for its view of the cluster.
func (c *clusterEnv) status(n *gwNode) (nodeStatus, error) {
	var st nodeStatus
	if n.gw == nil || !n.gw.alive() || n.paused {
		return st, fmt.Errorf("gateway %s is not running", n.name)
	}
	return st, adminJSON(n.dataDir, "/cluster/status", 3*time.Second, &st)
}

// waitLeader waits until one member leads and every running member
// follows it in its term, and returns it.
func (c *clusterEnv) waitLeader(d time.Duration) *gwNode {
	c.t.Helper()
	var leader *gwNode
	waitFor(c.t, d, "one leader that every running member follows", func() error {
		leader = nil
		var term uint64
		for _, n := range c.members() {
			if n.gw == nil || !n.gw.alive() || n.paused {
				continue
			}
			st, err := c.status(n)
			if err != nil {
				return fmt.Errorf("%s: %w", n.name, err)
			}
			if st.LeaderID == "" {
				return fmt.Errorf("%s knows no leader (%s, term %d)", n.name, st.Role, st.Term)
			}
			if term != 0 && st.Term != term {
				return fmt.Errorf("%s is in term %d, others in %d", n.name, st.Term, term)
			}
			term = st.Term
			l := c.node(st.LeaderID)
			if leader != nil && l != leader {
				return fmt.Errorf("%s follows %s, others %s", n.name, l.name, leader.name)
			}
			leader = l
		}
		if leader == nil {
			return errors.New("no member is running")
		}
		// Members go on naming a leader that removed itself (or was
		// stopped) until their election time-out: wait for one that runs
		// and is a member.
		if !slices.Contains(c.members(), leader) || leader.gw == nil || !leader.gw.alive() || leader.paused {
			return fmt.Errorf("the members still follow %s, which is no running member", leader.name)
		}
		return nil
	})
	return leader
}

// waitCaughtUp waits until every running member has applied what the
// leader committed.
func (c *clusterEnv) waitCaughtUp(d time.Duration) {
	c.t.Helper()
	leader := c.waitLeader(d)
	waitFor(c.t, d, "every running member caught up with the leader", func() error {
		ls, err := c.status(leader)
		if err != nil {
			return err
		}
		for _, n := range c.members() {
			if n.gw == nil || !n.gw.alive() || n.paused {
				continue
			}
			st, err := c.status(n)
			if err != nil {
				return err
			}
			if st.AppliedIndex < ls.CommitIndex {
				return fmt.Errorf("%s applied %d, leader committed %d", n.name, st.AppliedIndex, ls.CommitIndex)
			}
		}
		return nil
	})
}

// clusterCLI runs `ldapgate cluster <command> --data-dir <n's> <args>`.
func (c *clusterEnv) clusterCLI(n *gwNode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The flag before the arguments: urfave/cli stops reading flags at
	// the first argument.
	full := append([]string{"cluster", args[0], "--data-dir", n.dataDir}, args[1:]...)
	cmd := exec.CommandContext(ctx, gatewayBin, full...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ldapgate %s: %w: %s", strings.Join(full, " "), err, out)
	}
	return string(out), nil
}

// ---- the nodes' logs: who led, and delivered, when ----

// leadership is one node's term as leader, as its log tells it.
type leadership struct {
	Node      string
	Term      uint64
	Elected   time.Time // "election won"
	Delivered time.Time // "delivering to Axigen as the cluster's leader"; zero if never
}

// readLeaderships reads every node's log: the terms each won and when it
// began delivering in each.
func (c *clusterEnv) readLeaderships() []leadership {
	var out []leadership
	for _, n := range c.allNodes() {
		out = append(out, parseLeaderships(n.name, n.logPath)...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Elected.Before(out[j].Elected) })
	return out
}

// parseLeaderships reads one JSON log (lines that are not JSON, such as
// the test's start markers and crash dumps, are skipped).
func parseLeaderships(node, path string) []leadership {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	byTerm := map[uint64]*leadership{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
			Term uint64    `json:"term"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Term == 0 {
			continue
		}
		l := byTerm[rec.Term]
		if l == nil && (rec.Msg == "election won" || rec.Msg == "delivering to Axigen as the cluster's leader") {
			l = &leadership{Node: node, Term: rec.Term}
			byTerm[rec.Term] = l
		}
		switch rec.Msg {
		case "election won":
			l.Elected = rec.Time
		case "delivering to Axigen as the cluster's leader":
			l.Delivered = rec.Time
			if l.Elected.IsZero() {
				// A one-node configuration elects itself without an
				// election: take the delivery as the start.
				l.Elected = rec.Time
			}
		}
	}
	var out []leadership
	for _, l := range byTerm {
		out = append(out, *l)
	}
	return out
}

// stablePorts picks n free loopback ports below the kernel's ephemeral
// range: a gateway listens on the same port across restarts, and a port
// the OS chose (127.0.0.1:0) would be handed to some outgoing connection
// while the gateway is down.
func stablePorts(t testing.TB, n int) []int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	if low <= 11000 {
		return freeLoopbackPorts(t, n)
	}
	var ports []int
	for len(ports) < n {
		p := 10000 + mathrand.IntN(low-11000)
		if slices.Contains(ports, p) {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken
		}
		ln.Close()
		ports = append(ports, p)
	}
	return ports
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}

// logFailure shows what a failing test needs: the fault events, the
// leaderships, the network and each node's log tail.
func (c *clusterEnv) logFailure() {
	var b strings.Builder
	for _, ev := range c.faultEvents() {
		fmt.Fprintf(&b, "  %s %s %s\n", ev.At.Format("15:04:05.000"), ev.What, ev.Node)
	}
	c.t.Logf("fault events:\n%s", b.String())
	b.Reset()
	for _, l := range c.readLeaderships() {
		fmt.Fprintf(&b, "  term %d %s elected %s delivering %s\n", l.Term, l.Node,
			l.Elected.Format("15:04:05.000"), l.Delivered.Format("15:04:05.000"))
	}
	c.t.Logf("leaderships:\n%s", b.String())
	c.t.Logf("network: %s", c.net)
	for _, n := range c.allNodes() {
		c.t.Logf("gateway %s log (tail):\n%s", n.name, tailFile(n.logPath, 6000))
	}
	c.keepLogs()
}

// keepLogs copies the gateways' logs, the Axigen command log and the
// writes out of the test's temporary folder, and says where.
func (c *clusterEnv) keepLogs() {
	keep, err := os.MkdirTemp("", "ldapgate-cluster-logs-")
	if err != nil {
		return
	}
	for _, n := range c.allNodes() {
		if b, err := os.ReadFile(n.logPath); err == nil {
			_ = os.WriteFile(filepath.Join(keep, n.name+".log"), b, 0o600)
		}
	}
	var cmds strings.Builder
	for _, cmd := range c.e.sim.Commands() {
		fmt.Fprintf(&cmds, "%s %s s%d %s %q ok=%v", cmd.At.Format("15:04:05.000000"), cmd.Label, cmd.Session, cmd.Context, cmd.Line, cmd.OK)
		if ch := cmd.Change; ch != nil && ch.Account != nil {
			fmt.Fprintf(&cmds, " -> change %d %s phone=%q", ch.Seq, ch.Name, ch.Account.Contact["phone"])
		}
		cmds.WriteString("\n")
	}
	_ = os.WriteFile(filepath.Join(keep, "axigen-commands.log"), []byte(cmds.String()), 0o600)
	c.mu.Lock()
	w := c.w
	c.mu.Unlock()
	if w != nil {
		var b strings.Builder
		for _, cw := range w.all() {
			fmt.Fprintf(&b, "%s %s c%d %s %s=%q sent=%v %s code=%d %v\n", cw.Start.Format("15:04:05.000000"), cw.End.Format("15:04:05.000000"),
				cw.Client, cw.Node, cw.Key, cw.Value, cw.Sent, cw.Outcome, cw.Code, cw.Err)
		}
		_ = os.WriteFile(filepath.Join(keep, "writes.log"), []byte(b.String()), 0o600)
	}
	c.t.Logf("the gateways' logs and the Axigen command log are kept in %s", keep)
}
