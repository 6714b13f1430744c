package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/store"
)

// ClusterConfig makes the gateway one node of a cluster of gateways
// (package cluster): their journals are copies kept in step by Raft, any
// of them takes writes, the leader alone delivers to Axigen. Without
// peers the gateway runs alone on its own journal.
type ClusterConfig struct {
	// NodeID names this gateway in the cluster.
	NodeID string `yaml:"nodeID"`
	// Listen is the address of the cluster port (Raft and the gateways'
	// own requests), which the peers reach this node at.
	Listen string `yaml:"listen"`
	// Peers are every voter, this node included, as ID@HOST:PORT: the
	// same list on every node of a new cluster. A node not in its own list
	// joins the running cluster of those peers once `ldapgate cluster add`
	// adds it. The list counts at a node's first start only; after it the
	// members are those of the Raft log.
	Peers []string `yaml:"peers"`
	// TLSCert, TLSKey and CA: mutual TLS between the nodes (required
	// unless every address is loopback).
	TLSCert string `yaml:"tlsCert"`
	TLSKey  string `yaml:"tlsKey"`
	CA      string `yaml:"ca"`
	// FenceDelay is how long a new leader waits before it delivers, so that
	// a deposed leader's last Axigen command is over (0: the leader lease
	// plus the Axigen command time-out).
	FenceDelay time.Duration `yaml:"fenceDelay"`
	// OrphanAge is how old a record left prepared must be before the
	// leader settles it (0: the operation time-out plus a minute).
	OrphanAge time.Duration `yaml:"orphanAge"`
}

// enabled reports whether the gateway runs as a cluster node.
func (cc ClusterConfig) enabled() bool { return len(cc.Peers) > 0 }

// peers parses the peer list.
func (cc ClusterConfig) peers() ([]cluster.Peer, error) {
	var out []cluster.Peer
	for _, p := range cc.Peers {
		id, addr, ok := strings.Cut(p, "@")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("%q is not ID@HOST:PORT", p)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %s: %w", id, err)
		}
		out = append(out, cluster.Peer{ID: id, Addr: addr})
	}
	return out, nil
}

func (cc ClusterConfig) validate() error {
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("invalid setting %s: %s", setting, fmt.Sprintf(format, args...))
	}
	if !cc.enabled() {
		if cc.NodeID != "" || cc.Listen != "" {
			return bad("cluster.peers (--cluster-peer)", "a cluster node needs its peers, itself included (or drop --node-id and --cluster-listen to run alone)")
		}
		return nil
	}
	peers, err := cc.peers()
	if err != nil {
		return bad("cluster.peers (--cluster-peer)", "%v", err)
	}
	if cc.NodeID == "" {
		return bad("cluster.nodeID (--node-id)", "a cluster node needs a name, one of the peers")
	}
	if cc.Listen == "" {
		return bad("cluster.listen (--cluster-listen)", "a cluster node needs an address for its cluster port")
	}
	if _, _, err := net.SplitHostPort(cc.Listen); err != nil {
		return bad("cluster.listen (--cluster-listen)", "%v", err)
	}
	seen := map[string]bool{}
	for _, p := range peers {
		if seen[p.ID] {
			return bad("cluster.peers (--cluster-peer)", "%s is listed twice", p.ID)
		}
		seen[p.ID] = true
	}
	tlsSet := cc.TLSCert != "" || cc.TLSKey != "" || cc.CA != ""
	if tlsSet && (cc.TLSCert == "" || cc.TLSKey == "" || cc.CA == "") {
		return bad("cluster.tlsCert/tlsKey/ca (--cluster-tls-cert/--cluster-tls-key/--cluster-ca)", "give all three or none")
	}
	if !tlsSet {
		addrs := []string{cc.Listen}
		for _, p := range peers {
			addrs = append(addrs, p.Addr)
		}
		for _, a := range addrs {
			if !cluster.IsLoopback(a) {
				return bad("cluster.tlsCert/tlsKey/ca (--cluster-tls-cert/--cluster-tls-key/--cluster-ca)",
					"%s is not a loopback address: the nodes must authenticate each other with mutual TLS", a)
			}
		}
	}
	if cc.FenceDelay < 0 || cc.OrphanAge < 0 {
		return bad("cluster.fenceDelay/orphanAge", "must not be negative")
	}
	return nil
}

// tlsConfig loads the nodes' mutual TLS, nil when not configured.
func (cc ClusterConfig) tlsConfig() (*tls.Config, error) {
	if cc.TLSCert == "" {
		return nil, nil
	}
	t, err := cluster.TLSConfig(cc.TLSCert, cc.TLSKey, cc.CA)
	if err != nil {
		return nil, fmt.Errorf("invalid setting cluster.tlsCert/tlsKey/ca: %w", err)
	}
	return t, nil
}

// clusterSettings are the flags of `serve` for a cluster of gateways.
func clusterSettings() []setting {
	return []setting{
		stringSetting("node-id", "NODE_ID", "this gateway's name in its cluster, one of --cluster-peer (file: cluster.nodeID)",
			func(c *Config) *string { return &c.Cluster.NodeID }),
		stringSetting("cluster-listen", "CLUSTER_LISTEN", "HOST:PORT of this node's cluster port (Raft and the gateways' own requests) (file: cluster.listen)",
			func(c *Config) *string { return &c.Cluster.Listen }),
		sliceSetting("cluster-peer", "CLUSTER_PEER", "a voter of the cluster as ID@HOST:PORT, repeatable; the same list on every node of a new cluster, this one included; a node not in its list joins the running cluster of those peers once ldapgate cluster add adds it; none: the gateway runs alone (file: cluster.peers)",
			func(c *Config) *[]string { return &c.Cluster.Peers }),
		stringSetting("cluster-tls-cert", "CLUSTER_TLS_CERT", "PEM certificate this node presents to the others (mutual TLS; required unless every cluster address is loopback) (file: cluster.tlsCert)",
			func(c *Config) *string { return &c.Cluster.TLSCert }),
		stringSetting("cluster-tls-key", "CLUSTER_TLS_KEY", "PEM private key of --cluster-tls-cert (file: cluster.tlsKey)",
			func(c *Config) *string { return &c.Cluster.TLSKey }),
		stringSetting("cluster-ca", "CLUSTER_CA", "PEM CA certificates that sign every node's certificate (file: cluster.ca)",
			func(c *Config) *string { return &c.Cluster.CA }),
		durationSetting("cluster-fence-delay", "CLUSTER_FENCE_DELAY", "how long a new leader waits before it delivers to Axigen, so that the deposed leader's last command is over; 0: the leader lease plus the Axigen command time-out (file: cluster.fenceDelay)",
			func(c *Config) *time.Duration { return &c.Cluster.FenceDelay }),
		durationSetting("cluster-orphan-age", "CLUSTER_ORPHAN_AGE", "age after which the leader settles a record a gateway left prepared (it failed before the directory answered); 0: --op-timeout plus a minute (file: cluster.orphanAge)",
			func(c *Config) *time.Duration { return &c.Cluster.OrphanAge }),
	}
}

// clusterNode is serve's cluster wiring: the Raft node and what the
// leader runs.
type clusterNode struct {
	cfg  ClusterConfig
	node *cluster.Node
	log  *slog.Logger
	once sync.Once
}

// openGatewayJournal opens the gateway's journal: its own, or, in a cluster, its
// copy of the cluster's (converting a lone gateway's journal the first
// time it starts clustered) with the Raft node that keeps it in step. The
// node is nil for a lone gateway.
func openGatewayJournal(cfg Config, log *slog.Logger) (*store.Journal, *clusterNode, error) {
	opts := cfg.journalOptions(log)
	dir := journalDir(cfg.DataDir)
	if !cfg.Cluster.enabled() {
		j, err := store.Open(dir, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("open the journal: %w", err)
		}
		return j, nil, nil
	}
	j, node, err := startNode(cfg, opts, false, log)
	if err != nil {
		return nil, nil, err
	}
	return j, node, nil
}

// startNode opens the replicated journal in the data folder and starts
// the Raft node over it: a gateway's, or a witness's (no key, no delivery).
func startNode(cfg Config, opts store.Options, witness bool, log *slog.Logger) (*store.Journal, *clusterNode, error) {
	cc := cfg.Cluster
	peers, err := cc.peers()
	if err != nil {
		return nil, nil, err
	}
	tlsCfg, err := cc.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	dir := journalDir(cfg.DataDir)
	if !witness {
		// A node with a key of its own would seal passwords the others
		// cannot open, and find out only as dead letters once it leads.
		if _, err := os.Stat(opts.KeyFile); err != nil {
			return nil, nil, fmt.Errorf("every gateway of a cluster needs the same journal key, and %s is missing: copy it from a gateway of the cluster (a lone gateway creates one at its first start), or for a new cluster create one (`openssl rand -hex 32 > %s; chmod 600 %s`) and copy it to every gateway: %w",
				opts.KeyFile, opts.KeyFile, opts.KeyFile, err)
		}
	}
	opts.Replicated = true
	j, err := store.Open(dir, opts)
	if errors.Is(err, store.ErrNotReplicated) {
		// A lone gateway's journal becomes the first node's state, which
		// only a node alone in its peer list can make it (cluster.Start
		// refuses the others): refused before the conversion, the gateway
		// can still start alone as it was.
		switch {
		case witness:
			return nil, nil, fmt.Errorf("%s holds a lone gateway's journal: a witness starts with a data folder of its own", cfg.DataDir)
		case len(peers) != 1 || peers[0].ID != cc.NodeID:
			return nil, nil, fmt.Errorf("%s holds a lone gateway's journal, which becomes the cluster's at this gateway's first start as a node alone in its --cluster-peer list (--cluster-peer %s@HOST:PORT alone): start it so, then start the others without themselves in their list and add them (`ldapgate cluster add`); they receive the journal from it",
				cfg.DataDir, cc.NodeID)
		}
		log.Warn("converting this gateway's journal for the cluster (once)", "dir", dir)
		local := opts
		local.Replicated = false
		if err = store.MakeReplicated(dir, local); err != nil {
			return nil, nil, fmt.Errorf("convert the journal for the cluster: %w", err)
		}
		j, err = store.Open(dir, opts)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open the journal: %w", err)
	}
	fence := cc.FenceDelay
	if fence == 0 {
		fence = defaultFenceDelay(cfg)
	}
	n, err := cluster.Start(cluster.Config{
		NodeID:     cc.NodeID,
		Dir:        filepath.Join(cfg.DataDir, "raft"),
		Journal:    j,
		Peers:      peers,
		Listen:     cc.Listen,
		TLS:        tlsCfg,
		FenceDelay: fence,
		Witness:    witness,
		Logger:     log,
	})
	if err != nil {
		j.Close()
		return nil, nil, err
	}
	if !witness {
		j.SetProposer(n)
	}
	log.Info("cluster node started", "node", cc.NodeID, "listen", cc.Listen, "peers", cc.Peers, "fenceDelay", fence,
		"tls", tlsCfg != nil, "witness", witness)
	return j, &clusterNode{cfg: cc, node: n, log: log}, nil
}

// leaderLease is hashicorp/raft's default leader lease: a leader cut off
// from the quorum steps down within it.
const leaderLease = 500 * time.Millisecond

// defaultFenceDelay covers a deposed leader's last Axigen command: it may
// still be leading for a lease, then finishing a command for at most the
// command time-out.
func defaultFenceDelay(cfg Config) time.Duration {
	return leaderLease + cfg.Mirror.Axigen.CommandTimeout
}

// stop shuts the node down (once).
func (c *clusterNode) stop() {
	c.once.Do(func() {
		if err := c.node.Shutdown(); err != nil {
			c.log.Error("stopping the cluster node", "err", err)
		}
	})
}

// attach shows the node on the admin endpoint: its metrics, and its
// status and membership requests on the local socket.
func (c *clusterNode) attach(a *admin.Server) error {
	if c == nil {
		return nil
	}
	return a.SetCluster(clusterAdmin{c.node})
}

// deliver runs the leader's work whenever this node leads, until ctx ends.
func (c *clusterNode) deliver(ctx context.Context, cfg Config, m *mirror.Mirror) {
	orphanAge := cfg.Cluster.OrphanAge
	if orphanAge == 0 {
		orphanAge = cfg.Limits.OpTimeout + time.Minute
	}
	err := c.node.Deliver(ctx, func(ctx context.Context, term uint64) error {
		c.log.Info("delivering to Axigen as the cluster's leader", "term", term)
		var wg sync.WaitGroup
		defer wg.Wait()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// Everything the leader does is checked against its leadership,
		// its Axigen commands included (before each round trip).
		guard := func(ctx context.Context) error { return c.node.StillLeader(ctx, term) }
		gctx := axigen.WithGuard(ctx, guard)
		wg.Add(1)
		go func() { defer wg.Done(); settleOrphans(gctx, m, orphanAge, guard, c.log) }()
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Sweep(gctx) }()
		if iv := cfg.Mirror.ResyncInterval; iv > 0 {
			wg.Add(1)
			go func() { defer wg.Done(); scheduledResync(gctx, m, iv, c.log) }()
		}
		err := m.RunTerm(ctx, term, guard)
		c.log.Info("no longer delivering to Axigen", "term", term)
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		c.log.Error("cluster delivery stopped", "err", err)
	}
}

// settleOrphans settles, now and every half orphan age, the records
// gateways left prepared.
func settleOrphans(ctx context.Context, m *mirror.Mirror, age time.Duration, guard func(context.Context) error, log *slog.Logger) {
	t := time.NewTicker(max(age/2, time.Second))
	defer t.Stop()
	for {
		if n, err := m.SettleOrphans(ctx, age, guard); err != nil && ctx.Err() == nil {
			log.Error("settling records left prepared", "err", err)
		} else if n > 0 {
			log.Info("settled records left prepared", "records", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// deliverAlone is a lone gateway's delivery: it runs until ctx ends.
func deliverAlone(ctx context.Context, cfg Config, m *mirror.Mirror, log *slog.Logger) {
	if iv := cfg.Mirror.ResyncInterval; iv > 0 {
		go scheduledResync(ctx, m, iv, log)
	}
	// The delete-after grace; it journals removals, so it ends before the
	// mirror and its journal close.
	swept := make(chan struct{})
	go func() { defer close(swept); _ = m.Sweep(ctx) }()
	defer func() { <-swept }()
	if err := m.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("delivery stopped", "err", err)
	}
}

// clusterCommand is `ldapgate cluster`.
func clusterCommand() *cli.Command {
	dataDir := &cli.StringFlag{Name: "data-dir", EnvVars: env("DATA_DIR"), Value: "./data", Usage: "the running gateway's data folder (its admin socket is there)"}
	return &cli.Command{
		Name:  "cluster",
		Usage: "show and change the cluster of gateways",
		Description: `Talks to the gateway running on this machine through the admin socket in its
data folder; membership changes go to the cluster's leader.`,
		Subcommands: []*cli.Command{
			{
				Name:  "status",
				Usage: "leader, term, and each node's applied index and lag",
				Flags: []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					st, err := adminClusterStatus(c.Context, c.String("data-dir"))
					if err != nil {
						return err
					}
					printClusterStatus(c.App.Writer, st)
					return nil
				},
			},
			{
				Name:      "add",
				Usage:     "add a voter (start it first with the new peer list)",
				ArgsUsage: "ID@HOST:PORT",
				Flags:     []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					args, err := positionalArgs(c)
					if err != nil {
						return cli.Exit(err.Error(), 2)
					}
					id, addr, ok := strings.Cut(strings.Join(args, " "), "@")
					if len(args) != 1 || !ok || id == "" || addr == "" {
						return cli.Exit("usage: ldapgate cluster add ID@HOST:PORT", 2)
					}
					if err := adminClusterChange(c.Context, c.String("data-dir"), "add", id, addr); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "%s (%s) is a voter\n", id, addr)
					return nil
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a node from the cluster",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					args, err := positionalArgs(c)
					if err != nil {
						return cli.Exit(err.Error(), 2)
					}
					if len(args) != 1 || args[0] == "" {
						return cli.Exit("usage: ldapgate cluster remove ID", 2)
					}
					if err := adminClusterChange(c.Context, c.String("data-dir"), "remove", args[0], ""); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "%s is no longer in the cluster\n", args[0])
					return nil
				},
			},
		},
	}
}
