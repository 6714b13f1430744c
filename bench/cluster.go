package main

// The cluster suite (issue 18): the same mirrored writes as the mirror
// suite (-clients clients replacing displayName on random users), through
// one lone gateway and through three gateways clustered over Raft on
// loopback, the clients spread over the three, side by side in the same
// rounds. A lone gateway journals each write locally (one fsync); a
// clustered one has the leader commit it through a quorum of Raft logs
// (the leader's fsync, a follower's, the round trip, and for a write
// taken by a follower the forwarding to the leader). The suite prints
// each path's writes/s, each write's own time (request to response, p50
// and p99) and what the cluster adds to it, the CPU time per write of the
// gateways (the three together), slapd and the simulator, and the time
// from a write's success to its change in Axigen, which only the leader
// delivers.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/proccpu"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const (
	clusterNodes = 3
	// clusterFenceDelay and clusterCommandTimeout are the clustered
	// gateways' --cluster-fence-delay and --axigen-command-timeout (the
	// fence delay covers the leader lease, 500ms, and one command), as
	// the fault tests run them.
	clusterFenceDelay     = 2 * time.Second
	clusterCommandTimeout = time.Second
)

// clusterRun is what one path of the suite measured over the rounds.
type clusterRun struct {
	rates   []float64       // writes/s per round
	took    []time.Duration // each write's own time
	latency []time.Duration // success → Axigen
	writes  int64
	// cpu: slapd, the simulator, then each gateway of the path.
	cpu proccpu.Sample
}

// runCluster measures the cluster suite against dir and prints its table.
// It sets no target: issue 18 asks for the figures.
func runCluster(ctx context.Context, o options, log *slog.Logger, dir *slapd.Server, tmp, gatewayBin string, out io.Writer) (bool, error) {
	sim, pwFile, axFile, err := startMirrorSim(tmp, dir, log)
	if err != nil {
		return false, err
	}
	defer sim.stop()
	parentDir := o.diskDir
	if parentDir == "" {
		parentDir = tmp
	}
	parent, err := os.MkdirTemp(parentDir, "ldapgate-bench-cluster-")
	if err != nil {
		return false, fmt.Errorf("journal folders: %w", err)
	}
	defer os.RemoveAll(parent)

	log.Info("starting the lone gateway")
	loneData := filepath.Join(parent, "lone")
	addr, pid, stopLone, err := startChild(ctx, tmp, "lone", func(addrFile string) *exec.Cmd {
		return exec.Command(gatewayBin, mirrorServeArgs(dir, sim, loneData, addrFile, pwFile, axFile)...)
	})
	if err != nil {
		return false, fmt.Errorf("lone gateway: %w", err)
	}
	defer stopLone()
	lone := mirrorPath{name: "lone", addr: addr, pid: pid, dataDir: loneData, fsType: fsType(parent)}

	log.Info("starting the clustered gateways", "nodes", clusterNodes)
	nodes, stopNodes, err := startClusterNodes(ctx, tmp, parent, gatewayBin, func(data, addrFile string) []string {
		return mirrorServeArgs(dir, sim, data, addrFile, pwFile, axFile)
	})
	defer stopNodes()
	if err != nil {
		return false, err
	}
	leader, err := waitClusterLeader(ctx, nodes, 30*time.Second)
	if err != nil {
		return false, err
	}
	clustered := mirrorPath{name: "cluster", pid: nodes[0].pid, dataDir: filepath.Dir(nodes[0].data), fsType: lone.fsType}
	for _, n := range nodes {
		clustered.addrs = append(clustered.addrs, n.addr)
	}

	paths := []mirrorPath{lone, clustered}
	gatewayPIDs := map[string][]int{"lone": {lone.pid}}
	for _, n := range nodes {
		gatewayPIDs["cluster"] = append(gatewayPIDs["cluster"], n.pid)
	}
	// The warm-up also waits out the new leader's fence delay: its round
	// ends once Axigen shows every write.
	for _, p := range paths {
		if _, err := mirrorRound(ctx, o, p, sim, dir.RootDN, dir.RootPW, "warm", o.warmup); err != nil {
			return false, fmt.Errorf("warm-up of %s: %w", p.name, err)
		}
	}
	runs := map[string]*clusterRun{}
	for r := range o.rounds {
		for k := range paths {
			p := paths[(k+r)%len(paths)]
			pids := append([]int{dir.PID(), sim.pid}, gatewayPIDs[p.name]...)
			before := proccpu.Take(pids...)
			res, err := mirrorRound(ctx, o, p, sim, dir.RootDN, dir.RootPW, fmt.Sprintf("c%d", r), o.duration)
			used := proccpu.Take(pids...).Since(before)
			if err != nil {
				return false, fmt.Errorf("round %d via %s: %w", r+1, p.name, err)
			}
			run := runs[p.name]
			if run == nil {
				run = &clusterRun{}
				runs[p.name] = run
			}
			rate := float64(res.writes) / res.elapsed.Seconds()
			run.rates = append(run.rates, rate)
			run.took = append(run.took, res.took...)
			run.latency = append(run.latency, res.latency...)
			run.writes += res.writes
			run.cpu = run.cpu.Add(used)
			log.Info("measured", "round", r+1, "path", p.name, "writes/s", int(rate), "cpu", fmt.Sprint(used))
		}
	}
	// The leader may have changed during the rounds (it should not).
	if l, err := waitClusterLeader(ctx, nodes, 10*time.Second); err == nil {
		leader = l
	}
	reportCluster(out, o, lone, clustered, nodes, leader, runs)
	return false, nil
}

// clusterNode is one clustered gateway.
type clusterNode struct {
	id     string
	listen string // its cluster port
	data   string // its data folder
	addr   string // its LDAP listener
	pid    int
}

// startClusterNodes starts clusterNodes gateways clustered on loopback,
// each with the serve flags base gives for its data folder and address
// file, plus the cluster's. Every data folder gets the same journal key
// first, as a cluster needs. stop ends those started, also on an error.
//
// The ports are chosen free and then let go before the gateways bind them,
// so another process may take one in between: a start that fails on a port
// in use is made again on fresh ports and fresh data folders.
func startClusterNodes(ctx context.Context, tmp, parent, gatewayBin string, base func(data, addrFile string) []string) ([]*clusterNode, func(), error) {
	for attempt := 1; ; attempt++ {
		nodes, stop, err := startClusterNodesOnce(ctx, tmp, parent, gatewayBin, base)
		if err == nil || attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			return nodes, stop, err
		}
		stop()
		for i := range clusterNodes {
			if err := os.RemoveAll(filepath.Join(parent, fmt.Sprintf("n%d", i+1))); err != nil {
				return nil, func() {}, err
			}
		}
	}
}

func startClusterNodesOnce(ctx context.Context, tmp, parent, gatewayBin string, base func(data, addrFile string) []string) ([]*clusterNode, func(), error) {
	var stops []func()
	stop := func() {
		for _, s := range slices.Backward(stops) {
			s()
		}
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, stop, err
	}
	ports, err := freePorts(clusterNodes)
	if err != nil {
		return nil, stop, err
	}
	var nodes []*clusterNode
	var peers []string
	for i, port := range ports {
		n := &clusterNode{id: fmt.Sprintf("n%d", i+1), listen: fmt.Sprintf("127.0.0.1:%d", port),
			data: filepath.Join(parent, fmt.Sprintf("n%d", i+1))}
		nodes = append(nodes, n)
		peers = append(peers, n.id+"@"+n.listen)
		if err := os.MkdirAll(n.data, 0o700); err != nil {
			return nil, stop, err
		}
		if err := os.WriteFile(filepath.Join(n.data, "journal.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, stop, err
		}
	}
	for _, n := range nodes {
		addr, pid, stopNode, err := startChild(ctx, tmp, "cluster-"+n.id, func(addrFile string) *exec.Cmd {
			args := append(base(n.data, addrFile), "--node-id", n.id, "--cluster-listen", n.listen,
				"--cluster-fence-delay", clusterFenceDelay.String(),
				"--axigen-command-timeout", clusterCommandTimeout.String())
			for _, p := range peers {
				args = append(args, "--cluster-peer", p)
			}
			return exec.Command(gatewayBin, args...)
		})
		if err != nil {
			return nil, stop, fmt.Errorf("clustered gateway %s: %w", n.id, err)
		}
		stops = append(stops, stopNode)
		n.addr, n.pid = addr, pid
	}
	return nodes, stop, nil
}

// freePorts returns n loopback ports free at the moment.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Held until all are chosen, so that they differ.
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// nodeStatus is the part of a node's /cluster/status the suite reads.
type nodeStatus struct {
	Role     string `json:"role"`
	Term     uint64 `json:"term"`
	LeaderID string `json:"leaderID"`
}

// waitClusterLeader waits until every node follows one leader in one
// term, and returns the leader's ID.
func waitClusterLeader(ctx context.Context, nodes []*clusterNode, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		leader, err := clusterLeader(nodes)
		if err == nil {
			return leader, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the cluster agreed on no leader within %v: %w", d, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling interval of the status
		}
	}
}

func clusterLeader(nodes []*clusterNode) (string, error) {
	var leader string
	var term uint64
	for _, n := range nodes {
		body, err := adminGet(filepath.Join(n.data, "admin.sock"), "/cluster/status")
		if err != nil {
			return "", fmt.Errorf("%s: %w", n.id, err)
		}
		var st nodeStatus
		if err := json.Unmarshal(body, &st); err != nil {
			return "", fmt.Errorf("%s: status: %w", n.id, err)
		}
		switch {
		case st.LeaderID == "":
			return "", fmt.Errorf("%s knows no leader (%s, term %d)", n.id, st.Role, st.Term)
		case leader != "" && (st.LeaderID != leader || st.Term != term):
			return "", fmt.Errorf("%s follows %s in term %d, others %s in term %d", n.id, st.LeaderID, st.Term, leader, term)
		}
		leader, term = st.LeaderID, st.Term
	}
	if leader == "" {
		return "", errors.New("no node")
	}
	return leader, nil
}

// reportCluster prints the suite's table.
func reportCluster(out io.Writer, o options, lone, clustered mirrorPath, nodes []*clusterNode, leader string, runs map[string]*clusterRun) {
	fmt.Fprintf(out, "\ncluster vs lone gateway: %d clients replacing %s on random users of %d, %d round(s) of %v per path\n",
		o.clients, benchAttr, o.users, o.rounds, o.duration)
	fmt.Fprintf(out, "  lone: one gateway, its journal local (%s, %s)\n", lone.dataDir, lone.fsType)
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.id)
	}
	fmt.Fprintf(out, "  cluster: %s clustered over Raft on loopback (leader %s), the clients spread over them; journals in %s (%s)\n",
		strings.Join(ids, ", "), leader, clustered.dataDir, clustered.fsType)
	fmt.Fprintf(out, "  (fence delay %v, Axigen command timeout %v)\n\n", clusterFenceDelay, clusterCommandTimeout)
	l, c := runs["lone"], runs["cluster"]
	if l == nil || c == nil || l.writes == 0 || c.writes == 0 {
		fmt.Fprintln(out, "no writes measured")
		return
	}
	sorted := func(v []time.Duration) []time.Duration {
		s := slices.Clone(v)
		slices.Sort(s)
		return s
	}
	lt, ct := sorted(l.took), sorted(c.took)
	ll, cl := sorted(l.latency), sorted(c.latency)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }
	rates := func(r *clusterRun) string {
		return fmt.Sprintf("%.0f [%.0f-%.0f]", median(r.rates), slices.Min(r.rates), slices.Max(r.rates))
	}
	perWrite := func(r *clusterRun, from int) string {
		var sum time.Duration
		for _, d := range r.cpu[from:] {
			sum += d
		}
		return fmt.Sprintf("%.0f", float64(sum.Microseconds())/float64(r.writes))
	}
	row := func(label, lv, cv, diff string) {
		fmt.Fprintf(out, "%-30s %18s %18s %14s\n", label, lv, cv, diff)
	}
	row("per write", "lone", "cluster", "cluster-lone")
	row("writes/s (median [min-max])", rates(l), rates(c), fmt.Sprintf("x%.2f", median(c.rates)/median(l.rates)))
	row("writes measured", fmt.Sprint(l.writes), fmt.Sprint(c.writes), "")
	for _, q := range []struct {
		label string
		q     float64
	}{{"write time p50 (ms)", 0.50}, {"write time p99 (ms)", 0.99}} {
		lv, cv := percentile(lt, q.q), percentile(ct, q.q)
		row(q.label, ms(lv), ms(cv), fmt.Sprintf("%+.2f", float64((cv-lv).Microseconds())/1000))
	}
	row("gateway CPU µs (all nodes)", perWrite(l, 2), perWrite(c, 2), "")
	if len(c.cpu) > 2 {
		var each []string
		for i, n := range nodes {
			if 2+i < len(c.cpu) {
				each = append(each, fmt.Sprintf("%s %.0f", n.id, float64(c.cpu[2+i].Microseconds())/float64(c.writes)))
			}
		}
		row("  cluster, per node", "", strings.Join(each, " "), "")
	}
	row("slapd CPU µs", fmt.Sprintf("%.0f", float64(l.cpu[0].Microseconds())/float64(l.writes)),
		fmt.Sprintf("%.0f", float64(c.cpu[0].Microseconds())/float64(c.writes)), "")
	row("simulator CPU µs", fmt.Sprintf("%.0f", float64(l.cpu[1].Microseconds())/float64(l.writes)),
		fmt.Sprintf("%.0f", float64(c.cpu[1].Microseconds())/float64(c.writes)), "")
	for _, q := range []struct {
		label string
		q     float64
	}{{"success→Axigen p50 (ms)", 0.50}, {"success→Axigen p99 (ms)", 0.99}} {
		lv, cv := percentile(ll, q.q), percentile(cl, q.q)
		row(q.label, ms(lv), ms(cv), fmt.Sprintf("%+.2f", float64((cv-lv).Microseconds())/1000))
	}
}
