package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/replica"
	"github.com/ldapgate/ldapgate/store"
)

// ReplicationConfig pairs this gateway with another (package replica): a
// primary serves its journal's feed on its admin endpoint; a standby
// follows it, and takes over when it stops answering.
type ReplicationConfig struct {
	// Mode is sync (a write is acknowledged once the standby holds its
	// record) or async (the default).
	Mode string `yaml:"mode"`
	// SecretFile holds the secret both gateways share; setting it serves
	// the feed on the admin endpoint (adminListen).
	SecretFile string `yaml:"secretFile"`
	// StandbyOf starts this gateway as the standby of the gateway whose
	// admin endpoint this is, unless that one is itself a standby.
	StandbyOf string `yaml:"standbyOf"`
	// Peer starts this gateway as primary, unless the gateway whose admin
	// endpoint this is serves as primary: then as its standby (failback).
	Peer string `yaml:"peer"`
	// TakeoverAfter is how long a primary may stay silent before its
	// standby takes over (10s).
	TakeoverAfter time.Duration `yaml:"takeoverAfter"`
	// SyncTimeout bounds a synchronous wait for the standby (3s); then the
	// primary acknowledges without it and runs degraded until it catches up.
	SyncTimeout time.Duration `yaml:"syncTimeout"`
}

func (rc ReplicationConfig) withDefaults() ReplicationConfig {
	if rc.Mode == "" {
		rc.Mode = string(replica.Async)
	}
	if rc.TakeoverAfter <= 0 {
		rc.TakeoverAfter = 10 * time.Second
	}
	if rc.SyncTimeout <= 0 {
		rc.SyncTimeout = 3 * time.Second
	}
	return rc
}

// peer is the other gateway's admin endpoint, if any.
func (rc ReplicationConfig) peer() string {
	if rc.StandbyOf != "" {
		return rc.StandbyOf
	}
	return rc.Peer
}

func (rc ReplicationConfig) validate(adminListen string) error {
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("invalid setting %s: %s", setting, fmt.Sprintf(format, args...))
	}
	if _, err := replica.ParseMode(rc.withDefaults().Mode); err != nil {
		return bad("replication.mode (--replication)", "%v", err)
	}
	if rc.StandbyOf != "" && rc.Peer != "" {
		return bad("replication.standbyOf (--standby-of)", "give --standby-of or --peer, not both")
	}
	if p := rc.peer(); p != "" {
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("replication.standbyOf/peer (--standby-of/--peer)", "%q is not the http:// URL of the other gateway's admin endpoint", p)
		}
	}
	if rc.SecretFile == "" {
		if rc.peer() != "" || rc.Mode == string(replica.Sync) {
			return bad("replication.secretFile (--replication-secret-file)", "needed to replicate")
		}
		return nil
	}
	if _, err := replica.ReadSecret(rc.SecretFile); err != nil {
		return bad("replication.secretFile (--replication-secret-file)", "%v", err)
	}
	if adminListen == "" {
		return bad("adminListen (--admin-listen)", "a replicating gateway serves its feed and status there: give it a private or loopback address")
	}
	return nil
}

// replicationSettings are the flags of `serve` for failover.
func replicationSettings() []setting {
	return []setting{
		{
			flag: &cli.StringFlag{Name: "replication", EnvVars: env("REPLICATION"), Value: string(replica.Async),
				Usage: "sync: a write is acknowledged only once the standby holds its record (waiting at most --replication-timeout, then degrading to async loudly); async: no wait, the loss window is a metric (file: replication.mode)"},
			apply: func(c *cli.Context, cfg *Config) { cfg.Replication.Mode = c.String("replication") },
		},
		stringSetting("replication-secret-file", "REPLICATION_SECRET_FILE", "file holding the secret (16+ characters) both gateways of a pair share; setting it serves the journal's feed on --admin-listen, which must then be on loopback or a private network (no TLS) (file: replication.secretFile)",
			func(c *Config) *string { return &c.Replication.SecretFile }),
		stringSetting("standby-of", "STANDBY_OF", "start as the standby of the gateway whose admin endpoint is this URL (http://HOST:PORT): follow its journal, take over delivery and the listeners when it stops answering; if it is itself a standby, start as primary (file: replication.standbyOf)",
			func(c *Config) *string { return &c.Replication.StandbyOf }),
		stringSetting("peer", "PEER", "start as primary, unless the gateway whose admin endpoint is this URL serves as primary: then start as its standby (how a failed primary comes back) (file: replication.peer)",
			func(c *Config) *string { return &c.Replication.Peer }),
		{
			flag: &cli.DurationFlag{Name: "takeover-after", EnvVars: env("TAKEOVER_AFTER"), Value: 10 * time.Second,
				Usage: "a standby takes over once its primary has not answered for this long (file: replication.takeoverAfter)"},
			apply: func(c *cli.Context, cfg *Config) { cfg.Replication.TakeoverAfter = c.Duration("takeover-after") },
		},
		{
			flag: &cli.DurationFlag{Name: "replication-timeout", EnvVars: env("REPLICATION_TIMEOUT"), Value: 3 * time.Second,
				Usage: "with --replication sync, the longest a write waits for the standby (file: replication.syncTimeout)"},
			apply: func(c *cli.Context, cfg *Config) { cfg.Replication.SyncTimeout = c.Duration("replication-timeout") },
		},
	}
}

// replication is serve's replication wiring.
type replication struct {
	cfg    ReplicationConfig
	secret []byte
	state  *replica.StateFile
	log    *slog.Logger
	source *replica.Source
	// promoted: this run took over from a primary.
	promoted bool
	// stopWatch ends the primary's watch of its peer.
	stopWatch func()
}

// startReplication sets up replication before the journal opens. A
// gateway that starts as a standby follows its primary here until it takes
// over (then serve goes on as primary on the copy) or is told to stop
// (stopped is true: serve returns).
func startReplication(ctx context.Context, cfg Config, log *slog.Logger) (r *replication, stopped bool, err error) {
	rc := cfg.Replication.withDefaults()
	if err := rc.validate(cfg.AdminListen); err != nil {
		return nil, false, err
	}
	r = &replication{cfg: rc, log: log}
	if rc.SecretFile == "" {
		return r, false, nil
	}
	if r.secret, err = replica.ReadSecret(rc.SecretFile); err != nil {
		return nil, false, err
	}
	if r.state, err = replica.LoadState(replica.StatePath(cfg.DataDir)); err != nil {
		return nil, false, err
	}
	peer := rc.peer()
	if peer == "" {
		return r, false, nil
	}
	if !r.startAsStandby(ctx, peer) {
		return r, false, nil
	}
	promoted, err := r.runStandby(ctx, cfg, peer)
	r.promoted = promoted
	return r, err == nil && !promoted, err
}

// startAsStandby asks the peer who it is, a few times over about three
// seconds (it may be restarting): a primary peer makes this gateway its
// standby, a standby peer makes it primary, and a silent one leaves the
// configured role (--standby-of: standby; --peer: primary).
func (r *replication) startAsStandby(ctx context.Context, peer string) bool {
	client := &http.Client{Timeout: time.Second}
	for attempt := range 3 {
		st, err := replica.FetchStatus(ctx, client, peer, r.secret)
		if err == nil {
			if st.Node == r.state.Get().Node {
				r.log.Error("the replication peer is this gateway itself; starting as primary", "peer", peer)
				return false
			}
			r.log.Info("replication peer answered", "peer", peer, "role", st.Role, "position", st.Position)
			return st.Role == replica.RolePrimary
		}
		r.log.Warn("replication peer does not answer", "peer", peer, "attempt", attempt+1, "err", err)
		if attempt < 2 {
			select {
			case <-ctx.Done():
				return r.cfg.StandbyOf != ""
			case <-time.After(time.Second):
			}
		}
	}
	return r.cfg.StandbyOf != ""
}

// runStandby follows the primary at peer on a follower copy of the journal
// until it takes over (promoted) or a signal stops it. Its admin endpoint
// serves the journal (read-only), metrics and /replication/status.
func (r *replication) runStandby(ctx context.Context, cfg Config, peer string) (promoted bool, err error) {
	if _, err := os.Stat(journalKeyFile(cfg.DataDir)); err != nil {
		return false, fmt.Errorf("a standby needs a copy of its primary's journal key in %s: %w", journalKeyFile(cfg.DataDir), err)
	}
	opts := cfg.journalOptions(r.log)
	opts.Follower = true
	journal, err := store.Open(journalDir(cfg.DataDir), opts)
	if err != nil {
		return false, fmt.Errorf("open the journal copy: %w", err)
	}
	defer func() {
		if cerr := journal.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close the journal copy: %w", cerr)
		}
	}()
	f, err := replica.NewFollower(replica.FollowerConfig{Primary: peer, Secret: r.secret, Journal: journal,
		State: r.state, TakeoverAfter: r.cfg.TakeoverAfter, Logger: r.log})
	if err != nil {
		return false, err
	}
	adminSrv := admin.New(admin.Config{Journal: journal, Logger: r.log})
	if err := adminSrv.SetReplication(f); err != nil {
		return false, err
	}
	stopAdmin, err := serveAdmin(cfg, standbyAdmin{adminSrv}, standbyAdmin{adminSrv.Network()}, r.log)
	if err != nil {
		return false, err
	}
	defer stopAdmin()

	sctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	go func() {
		for range hups {
			r.log.Warn("SIGHUP ignored: a standby reads its configuration again once it has taken over")
		}
	}()
	r.log.Info("ldapgate standing by", "version", version, "primary", peer, "takeoverAfter", r.cfg.TakeoverAfter,
		"position", journal.Position())
	err = f.Run(sctx)
	switch {
	case err == nil:
		r.log.Warn("taking over as primary", "position", journal.Position())
		return true, nil
	case errors.Is(err, context.Canceled):
		r.log.Info("stopped")
		return false, nil
	}
	return false, err
}

// standbyAdmin is the admin endpoint of a standby: as a primary's, but not
// ready (it serves no LDAP clients).
type standbyAdmin struct{ h http.Handler }

func (s standbyAdmin) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/readyz" {
		http.Error(w, "not ready: standby (follows its primary, serves no clients)", http.StatusServiceUnavailable)
		return
	}
	s.h.ServeHTTP(w, req)
}

// attach makes the open journal this primary's replication source and
// serves it on the admin endpoint.
func (r *replication) attach(journal *store.Journal, adminSrv *admin.Server) error {
	if r == nil || r.state == nil {
		return nil
	}
	if err := r.state.BecomePrimary(journal.Position()); err != nil {
		return err
	}
	mode, _ := replica.ParseMode(r.cfg.Mode)
	r.source = replica.NewSource(replica.SourceConfig{Journal: journal, State: r.state, Secret: r.secret,
		Mode: mode, SyncTimeout: r.cfg.SyncTimeout, Peer: r.cfg.peer(), Logger: r.log})
	if err := adminSrv.SetReplication(r.source); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.source.WatchPeer(ctx, &http.Client{Timeout: 2 * time.Second}, 5*time.Second)
	}()
	var once sync.Once
	r.stopWatch = func() { once.Do(func() { r.source.Close(); cancel(); <-done }) }
	st := r.state.Get()
	r.log.Info("replication source", "mode", mode, "history", st.History, "position", journal.Position())
	return nil
}

// close stops what attach started; it may be called more than once.
func (r *replication) close() {
	if r != nil && r.stopWatch != nil {
		r.stopWatch()
	}
}

// The replication source is what the write path waits on in sync mode.
var _ mirror.Replicator = (*replica.Source)(nil)

// mirrorOption makes synchronous replication part of the write path: the
// source is the mirror's Replicator.
func (r *replication) mirrorOption() func(*mirror.Config) {
	return func(mc *mirror.Config) {
		if r != nil && r.source != nil && r.cfg.Mode == string(replica.Sync) {
			mc.Replicator = r.source
		}
	}
}

// afterTakeover brings Axigen in line with the directory once, when this
// gateway has just taken over, before it listens: a write the old primary
// relayed but whose record never reached this standby (one no client was
// told succeeded, in sync mode; any, in async mode) is in the directory but
// not in this journal. Passwords the directory keeps hashed cannot be
// recovered this way.
func (r *replication) afterTakeover(ctx context.Context, m *mirror.Mirror) {
	if r == nil || !r.promoted {
		return
	}
	start := time.Now()
	rep, err := m.Resync(ctx, mirror.ResyncOptions{Workers: 4})
	if err != nil {
		r.log.Error("resync after the takeover failed; run `ldapgate resync`", "err", err)
		return
	}
	r.log.Info("resync after the takeover", "accounts", rep.Accounts, "groups", rep.Groups, "changed", rep.Changed,
		"failed", len(rep.Failed), "took", time.Since(start).Round(time.Millisecond))
}
