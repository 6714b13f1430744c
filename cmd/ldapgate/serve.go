package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/gateway/mirror"
)

// journalDir and journalKeyFile place the journal in the data folder.
func journalDir(dataDir string) string     { return filepath.Join(dataDir, "journal") }
func journalKeyFile(dataDir string) string { return filepath.Join(dataDir, "journal.key") }

// shutdownGrace is how long SIGTERM waits for outstanding operations.
const shutdownGrace = 10 * time.Second

func serveCommand() *cli.Command {
	settings := serveSettings()
	flags := []cli.Flag{configFlag()}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	return &cli.Command{
		Name:  "serve",
		Usage: "run the gateway",
		Description: `Relays every LDAP operation between clients and the upstream directory.

Settings come from the YAML file named by --config, then LDAPGATE_* environment
variables, then flags; a later source overrides an earlier one. A minimal start:

  ldapgate serve --listen ldap://127.0.0.1:3389 --upstream ldap://127.0.0.1:389 --data-dir ./data`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c, settings)
			if err != nil {
				return err
			}
			reload := func() (Config, error) { return loadConfig(c, settings) }
			return runServe(c.Context, cfg, newLogger(cfg.Log, c.App.ErrWriter), reload)
		},
	}
}

// runServe starts the listeners and serves until SIGTERM or SIGINT. On
// SIGHUP it reads the configuration again with reload (when not nil) and
// applies what can change while running.
func runServe(ctx context.Context, cfg Config, log *slog.Logger, reload func() (Config, error)) error {
	// Caught from the start: a SIGTERM that came while the gateway was
	// starting (once its address file said it listens, say) killed it
	// before its journal and cluster node were closed. One that comes
	// before it serves is handled once it does: it stops at once, cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// The BER library decodes with its own limit; keep it at ours.
	ber.MaxPacketLengthBytes = int64(cfg.Limits.MaxMessageSize)

	loadedTLS, err := cfg.serverTLS()
	if err != nil {
		return err
	}
	var certs *reloadableTLS
	var serverTLS *tls.Config
	if loadedTLS != nil {
		certs = &reloadableTLS{}
		certs.cur.Store(loadedTLS)
		serverTLS = certs.config()
	}
	ups, err := cfg.upstreams()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("invalid setting dataDir (--data-dir): %w", err)
	}
	// A lone gateway's journal is its own; a cluster's is a copy kept in
	// step by Raft (cluster.go).
	journal, node, err := openGatewayJournal(cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if node != nil {
			node.stop()
		}
		if err := journal.Close(); err != nil {
			log.Error("closing the journal", "err", err)
		}
	}()
	adminSrv := admin.New(admin.Config{Journal: journal, Logger: log})
	if err := node.attach(adminSrv); err != nil {
		return err
	}
	upstreams := gateway.NewUpstreamSet(ups, cfg.Limits.DialTimeout, cfg.Limits.MaxMessageSize, log)
	bgCtx, stopBackground := context.WithCancel(context.Background())
	var background sync.WaitGroup
	defer func() { stopBackground(); background.Wait() }()
	background.Add(1)
	go func() { defer background.Done(); upstreams.Run(bgCtx) }()

	var interceptor gateway.Interceptor
	var mirrorRef *mirror.Mirror
	if cfg.Mirror.enabled() {
		audit, closeAudit, err := openAuditLog(cfg.Mirror.AuditLog)
		if err != nil {
			return err
		}
		m, closeMirror, err := cfg.buildMirror(journal, log, audit, adminSrv)
		if err != nil {
			closeAudit()
			return err
		}
		if node == nil {
			// A lone gateway settles what its last run left prepared; in a
			// cluster the leader settles what any gateway left (cluster.go).
			if err := m.Recover(ctx); err != nil {
				closeMirror()
				closeAudit()
				return err
			}
		}
		interceptor, mirrorRef = m, m
		log.Info("mirroring into Axigen", "axigen", cfg.Mirror.Axigen.Addr, "domain", cfg.Mirror.Axigen.Domain,
			"accountBase", cfg.Mirror.Schema.AccountBase, "groupBase", cfg.Mirror.Schema.GroupBase,
			"admins", cfg.Mirror.AdminDNs, "adminGroup", cfg.Mirror.AdminGroup)
		background.Add(1)
		go func() {
			defer background.Done()
			defer closeAudit()
			defer closeMirror()
			if node != nil {
				node.deliver(bgCtx, cfg, m)
				return
			}
			deliverAlone(bgCtx, cfg, m, log)
		}()
	}
	// The gateway's own subtree (cn=changelog, cn=ldapgate,cn=monitor),
	// readable by the admin identities.
	var gw atomic.Pointer[gateway.Server]
	stats := func() gateway.Stats {
		if s := gw.Load(); s != nil {
			return s.Stats()
		}
		return gateway.Stats{}
	}
	// One admin check for the subtree and the write path: the mirror's
	// (admin DNs and group, reloadable), or without mirroring the admin DNs
	// alone (there is no directory client to read a group with).
	// The mirror knows a session as its write path does (an AD logon name
	// is the entry it resolves to).
	isAdminName := mirror.NewAdmins(cfg.Mirror.AdminDNs, "", nil, 0).IsAdmin
	if mirrorRef != nil {
		isAdminName = mirrorRef.IsAdminSession
	}
	isAdmin := func(si gateway.SessionInfo) bool {
		ok, err := isAdminName(context.Background(), si.BoundDN)
		return err == nil && ok
	}
	local, stopLocal, err := newSubtree(journal, stats, upstreams.Health, node.monitor(), isAdmin, cfg.Limits.ChangelogTimeLimit, log)
	if err != nil {
		return err
	}
	defer stopLocal()
	srv, err := gateway.NewServer(gateway.Config{
		Dialer:                  upstreams,
		TLS:                     serverTLS,
		Interceptor:             interceptor,
		Observer:                adminSrv,
		Local:                   local,
		ConfidentialityRequired: cfg.ConfidentialityRequired,
		MaxMessageSize:          cfg.Limits.MaxMessageSize,
		MaxConnections:          cfg.Limits.MaxConnections,
		MaxConnsPerAddress:      offIfZero(cfg.Limits.MaxConnsPerAddress),
		HandshakeTimeout:        cfg.Limits.HandshakeTimeout,
		StallTimeout:            negativeIfZero(cfg.Limits.StallTimeout),
		WriteTimeout:            negativeIfZero(cfg.Limits.WriteTimeout),
		MaxOpsPerConn:           cfg.Limits.MaxOpsPerConnection,
		EarlyDials:              offIfZero(cfg.Limits.EarlyDials),
		SpareConns:              offIfZero(cfg.Limits.SpareConns),
		IdleTimeout:             cfg.Limits.IdleTimeout,
		OpTimeout:               cfg.Limits.OpTimeout,
		MaxBindFailures:         cfg.Limits.MaxBindFailures,
		BindFailureWindow:       cfg.Limits.BindFailureWindow,
		Logger:                  log,
	})
	if err != nil {
		return err
	}
	gw.Store(srv)
	adminSrv.SetSources(srv.Stats, upstreams)
	stopAdmin, err := serveAdmin(cfg, adminSrv, adminSrv.Network(), log)
	if err != nil {
		return err
	}
	defer stopAdmin()

	listeners := newListenerSet(srv, log)
	if err := listeners.apply(cfg.Listen); err != nil {
		return err
	}
	defer listeners.closeAll()
	live := &running{cfg: cfg, listeners: listeners, tls: certs, upstreams: upstreams, mirror: mirrorRef, log: log}
	if err := writeAddrFile(cfg, listeners); err != nil {
		return err
	}
	upURLs := make([]string, len(ups))
	for i, u := range ups {
		upURLs[i] = u.URL
	}
	log.Info("ldapgate serving", "version", version, "listen", listeners.urls(cfg.Listen), "upstream", upURLs)

wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				live.reloadFrom(reload, listeners)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			break wait
		case <-ctx.Done():
			break wait
		case err := <-listeners.errc:
			_ = srv.Shutdown(context.Background())
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("sessions still busy at the end of the grace period were closed", "err", err)
	}
	log.Info("stopped")
	return nil
}

// reloadFrom reads the configuration again and applies it, or keeps the
// running one when the new one is bad.
func (r *running) reloadFrom(load func() (Config, error), listeners *listenerSet) {
	if load == nil {
		r.log.Warn("SIGHUP ignored: this gateway has no configuration to read again")
		return
	}
	next, err := load()
	if err == nil {
		err = r.reload(next)
	}
	if err != nil {
		r.log.Error("configuration reload refused; the running configuration stays", "err", err)
		return
	}
	if err := writeAddrFile(next, listeners); err != nil {
		r.log.Warn("cannot update the address file", "err", err)
	}
	r.log.Info("configuration reloaded", "listen", listeners.urls(next.Listen), "upstream", next.Upstream.URLs)
}

// writeAddrFile writes the bound listener URLs, when asked to.
func writeAddrFile(cfg Config, listeners *listenerSet) error {
	if cfg.AddrFile == "" {
		return nil
	}
	urls := listeners.urls(cfg.Listen)
	if err := writeFileAtomic(cfg.AddrFile, []byte(strings.Join(urls, "\n")+"\n")); err != nil {
		return fmt.Errorf("invalid setting addrFile (--addr-file): %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// into place, so readers never see a partial file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// adminSocket is where the admin endpoint listens: in the data folder, so
// `ldapgate journal --data-dir` finds the running gateway by itself.
func adminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

// serveAdmin starts the admin endpoint on the data folder's Unix socket
// (local: everything) and, when configured, on a TCP address (network: what
// admin.Server.Network allows, for Prometheus and a standby). The returned
// function stops it.
func serveAdmin(cfg Config, local, network http.Handler, log *slog.Logger) (func(), error) {
	sock := adminSocket(cfg.DataDir)
	// A socket left by a killed gateway would block the listen; the
	// journal's lock, already held, proves no other gateway uses it.
	_ = os.Remove(sock)
	uln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", sock, err)
	}
	_ = os.Chmod(sock, 0o600)
	// An idle keep-alive connection is closed after a while: each is a
	// descriptor and a goroutine, and on TCP a place of maxAdminConns.
	servers := []*http.Server{{Handler: local, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}}
	lns := []net.Listener{uln}
	if cfg.AdminListen != "" {
		tln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			uln.Close()
			return nil, fmt.Errorf("invalid setting adminListen (--admin-listen): %w", err)
		}
		// Over TCP only what is safe to expose: probes, metrics, replication.
		servers = append(servers, &http.Server{Handler: network, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute})
		lns = append(lns, newLimitListener(tln, maxAdminConns))
		log.Info("admin endpoint", "addr", "http://"+tln.Addr().String())
	}
	for i, ln := range lns {
		go func() {
			if err := servers[i].Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin endpoint stopped", "err", err)
			}
		}()
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, hs := range servers {
			_ = hs.Shutdown(ctx)
		}
		_ = os.Remove(sock)
	}, nil
}

// openAuditLog opens the audit log (JSON lines): a file appended to, "-"
// for standard error, or nothing when path is empty.
func openAuditLog(path string) (*slog.Logger, func(), error) {
	switch path {
	case "":
		return nil, func() {}, nil
	case "-":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid setting mirror.auditLog (--audit-log): %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, nil)), func() { f.Close() }, nil
}

// scheduledResync runs a resync every interval until ctx ends.
func scheduledResync(ctx context.Context, m *mirror.Mirror, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rep, err := m.Resync(ctx, mirror.ResyncOptions{Workers: 2})
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("scheduled resync failed", "err", err)
			}
			continue
		}
		log.Info("scheduled resync", "accounts", rep.Accounts, "groups", rep.Groups, "changed", rep.Changed,
			"failed", len(rep.Failed), "incomplete", len(rep.Incomplete), "extraAccounts", len(rep.ExtraAccounts), "took", time.Since(start).Round(time.Millisecond))
	}
}

// offIfZero turns a count setting (0: off) into gateway.Config's
// (negative: off, 0: the default).
// negativeIfZero turns a duration setting's 0 ("never") into the
// gateway's "off" (negative; its zero means the default).
func negativeIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func offIfZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
