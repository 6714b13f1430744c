package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/store"
)

// witnessCommand is `ldapgate witness`: a voter that keeps the cluster's
// log and a copy of the journal (secrets stay sealed: it has no key), so
// that two gateways and a witness keep a quorum when one gateway fails.
// It serves no LDAP client and never delivers to Axigen.
func witnessCommand() *cli.Command {
	settings := append([]setting{
		stringSetting("data-dir", "DATA_DIR", "folder for the witness's copy of the log and journal (file: dataDir)",
			func(c *Config) *string { return &c.DataDir }),
		stringSetting("log-level", "LOG_LEVEL", "debug, info, warn or error (file: log.level)",
			func(c *Config) *string { return &c.Log.Level }),
		stringSetting("log-format", "LOG_FORMAT", "text or json (file: log.format)",
			func(c *Config) *string { return &c.Log.Format }),
	}, clusterSettings()...)
	flags := []cli.Flag{configFlag()}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	return &cli.Command{
		Name:  "witness",
		Usage: "run a cluster voter that stores the log but serves no client and never delivers",
		Description: `Two gateways and a witness make a cluster that survives the loss of any one of
them. Start it with the same --cluster-peer list as the gateways:

  ldapgate witness --data-dir /var/lib/ldapgate-witness --node-id w \
    --cluster-listen 10.0.0.3:7946 --cluster-peer a@10.0.0.1:7946 \
    --cluster-peer b@10.0.0.2:7946 --cluster-peer w@10.0.0.3:7946 \
    --cluster-tls-cert w.pem --cluster-tls-key w.key --cluster-ca ca.pem`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadWitnessConfig(c, settings)
			if err != nil {
				return err
			}
			return runWitness(c.Context, cfg, newLogger(cfg.Log, c.App.ErrWriter))
		},
	}
}

// loadWitnessConfig reads a witness's settings: only the data folder, the
// log and the cluster count.
func loadWitnessConfig(c *cli.Context, settings []setting) (Config, error) {
	cfg := defaultConfig()
	if path := c.String("config"); path != "" {
		full, err := loadConfig(c, settings)
		if err != nil {
			return Config{}, err
		}
		cfg = full
	}
	for _, s := range settings {
		if c.IsSet(s.flag.Names()[0]) {
			s.apply(c, &cfg)
		}
	}
	if !cfg.Cluster.enabled() {
		return Config{}, errors.New("invalid setting cluster.peers (--cluster-peer): a witness needs the cluster's peers, itself included")
	}
	if err := cfg.Cluster.validate(); err != nil {
		return Config{}, err
	}
	if cfg.DataDir == "" {
		return Config{}, errors.New("invalid setting dataDir (--data-dir): must not be empty")
	}
	return cfg, nil
}

func runWitness(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("invalid setting dataDir (--data-dir): %w", err)
	}
	opts := cfg.journalOptions(log)
	opts.KeyFile = "" // a witness never opens a secret
	j, node, err := startNode(cfg, opts, true, log)
	if err != nil {
		return err
	}
	defer j.Close()
	defer node.stop()
	adminSrv := admin.New(admin.Config{Journal: j, Logger: log})
	if err := node.attach(adminSrv); err != nil {
		return err
	}
	stopAdmin, err := serveAdmin(cfg, adminSrv, adminSrv.Network(), log)
	if err != nil {
		return err
	}
	defer stopAdmin()
	sctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("ldapgate witness running", "version", version, "node", cfg.Cluster.NodeID)
	<-sctx.Done()
	log.Info("stopped")
	return nil
}

// adminClient reaches the running gateway's (or witness's) admin socket.
func adminClient(dataDir string) (*remoteJournal, error) {
	r, ok := newRemoteJournal(dataDir)
	if !ok {
		return nil, fmt.Errorf("no gateway is running with data folder %s (no %s)", dataDir, adminSocket(dataDir))
	}
	return r, nil
}

func adminClusterStatus(ctx context.Context, dataDir string) (cluster.Status, error) {
	var st cluster.Status
	r, err := adminClient(dataDir)
	if err != nil {
		return st, err
	}
	return st, clusterAnswer(r.call(ctx, http.MethodGet, "/cluster/status", &st))
}

// errAlone is the answer of a lone gateway, which serves no /cluster/.
var errAlone = errors.New("this gateway runs alone, not in a cluster (no --cluster-peer)")

// clusterAnswer names a lone gateway's 404 for what it is.
func clusterAnswer(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errAlone
	}
	return err
}

func adminClusterChange(ctx context.Context, dataDir, action, id, addr string) error {
	r, err := adminClient(dataDir)
	if err != nil {
		return err
	}
	if err := clusterAnswer(r.send(ctx, http.MethodPost, "/cluster/"+action, admin.ClusterChange{ID: id, Addr: addr}, nil)); err != nil {
		return fmt.Errorf("cluster %s %s: %w", action, id, err)
	}
	return nil
}

// printClusterStatus prints the cluster as one node sees it.
func printClusterStatus(w io.Writer, st cluster.Status) {
	fmt.Fprintf(w, "node %s (%s): %s, term %d, commit index %d, applied index %d\n",
		st.ID, st.Addr, strings.ToLower(st.Role), st.Term, st.CommitIndex, st.AppliedIndex)
	if st.LeaderID != "" {
		fmt.Fprintf(w, "leader: %s (%s)\n", st.LeaderID, st.LeaderAddr)
	} else {
		fmt.Fprintln(w, "leader: none known (no quorum)")
	}
	switch f := st.Fence; {
	case f.Delivering:
		fmt.Fprintf(w, "delivering to Axigen since %s (term %d)\n", f.Since.Format(time.RFC3339), f.DeliveryTerm)
	case f.Waiting:
		fmt.Fprintf(w, "fence delay: delivering from %s\n", f.ReadyAt.Format(time.RFC3339))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSUFFRAGE\tROLE\tTERM\tAPPLIED\tLAG\tSTATE")
	for _, p := range st.Servers {
		state := "reachable"
		if !p.Reachable {
			state = "unreachable: " + p.Error
		}
		role := strings.ToLower(p.Role)
		if p.Witness {
			role += " (witness)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", p.ID, p.Addr, strings.ToLower(p.Suffrage), role, p.Term, p.AppliedIndex, p.Lag, state)
	}
	tw.Flush()
}
