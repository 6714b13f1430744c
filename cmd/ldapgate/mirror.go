package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/admin"
	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// MirrorConfig switches on mirroring into Axigen: it is on when
// axigen.addr is set.
type MirrorConfig struct {
	Axigen AxigenConfig `yaml:"axigen"`
	// Schema is the directory dialect and attribute mapping (schema.Config).
	Schema schema.Config `yaml:"schema"`
	// ServiceDN and its password are the gateway's own bind identity.
	ServiceDN           string `yaml:"serviceDN"`
	ServicePasswordFile string `yaml:"servicePasswordFile"`
	// AdminDNs and members of AdminGroup may make every change.
	AdminDNs   []string `yaml:"adminDNs"`
	AdminGroup string   `yaml:"adminGroup"`
	// AxigenBindDN is the DN Axigen's connector writes with; never mirrored.
	AxigenBindDN string `yaml:"axigenBindDN"`
	// Workers deliver different entries in parallel.
	Workers int `yaml:"workers"`
	// MaxAttempts failed deliveries make a record a dead letter.
	MaxAttempts int `yaml:"maxAttempts"`
	// Retention keeps delivered records (the audit trail) this long.
	Retention time.Duration `yaml:"retention"`
	// GroupCommitDelay is how long a journal write waits for concurrent
	// ones to share its fsync (store.Options.GroupCommitDelay); 0 never.
	GroupCommitDelay time.Duration `yaml:"groupCommitDelay"`
	// AuditLog receives a JSON line per decision, result and delivery of an
	// intercepted write: a file path, or "-" for standard error.
	AuditLog string `yaml:"auditLog"`
	// ResyncInterval runs a resync inside serve this often, as a backstop
	// for changes made behind the gateway's back; 0 never.
	ResyncInterval time.Duration `yaml:"resyncInterval"`
	// OnAccountDelete is what a directory delete (or a move out of the
	// account base) does to the Axigen account: disable, delete or ignore.
	OnAccountDelete string `yaml:"onAccountDelete"`
	// DeleteAfter, with disable, removes an account still absent from the
	// directory this long after it was disabled; 0 never.
	DeleteAfter time.Duration `yaml:"deleteAfter"`
	// ProtectedAccounts are never removed, disabled or renamed (postmaster
	// always is).
	ProtectedAccounts []string `yaml:"protectedAccounts"`
	// MaxRemovalsPerSweep bounds the removals at the end of a grace that
	// one sweep starts (a clock jumping forward cannot remove every
	// disabled account at once).
	MaxRemovalsPerSweep int `yaml:"maxRemovalsPerSweep"`
}

// minDeleteAfter is the shortest grace accepted; below a day the log
// warns (720s for 720h is an easy typo).
const (
	minDeleteAfter  = time.Minute
	warnDeleteAfter = 24 * time.Hour
)

// AxigenConfig says how to reach Axigen's administration CLI.
type AxigenConfig struct {
	Addr         string `yaml:"addr"`
	User         string `yaml:"user"`
	PasswordFile string `yaml:"passwordFile"`
	Domain       string `yaml:"domain"`
	TLS          bool   `yaml:"tls"`
	CA           string `yaml:"ca"`
	Sessions     int    `yaml:"sessions"`
	// CommandTimeout bounds each CLI command's answer; in a cluster the
	// fence delay covers it.
	CommandTimeout time.Duration `yaml:"commandTimeout"`
	// NoPipelining sends each CLI command only once the previous one is
	// answered, for a server that does not read commands sent ahead of
	// their turn (`ldapgate axigen-check` tells).
	NoPipelining bool `yaml:"noPipelining"`
	// Batch is the most records of different entries a delivery worker
	// sends to Axigen in one session's shared round trips (1: one at a
	// time; with NoPipelining there is no batching either).
	Batch int `yaml:"batch"`
}

// batch is the delivery batch in effect: none without pipelining.
func (a AxigenConfig) batch() int {
	if a.NoPipelining {
		return 1
	}
	return a.Batch
}

func defaultMirrorConfig() MirrorConfig {
	return MirrorConfig{
		Axigen:      AxigenConfig{User: "admin", Sessions: 8, CommandTimeout: 30 * time.Second, Batch: 16},
		Schema:      schema.Config{Dialect: schema.OpenLDAP},
		Workers:     8,
		MaxAttempts: 25,
		Retention:   30 * 24 * time.Hour,

		GroupCommitDelay: time.Millisecond,

		OnAccountDelete:     string(mirror.DeleteDisables),
		ProtectedAccounts:   []string{mirror.Postmaster},
		MaxRemovalsPerSweep: mirror.DefaultMaxRemovalsPerSweep,
	}
}

func mirrorSettings() []setting {
	return []setting{
		stringSetting("axigen", "AXIGEN", "Axigen CLI address host:port; setting it switches mirroring on (file: mirror.axigen.addr)",
			func(c *Config) *string { return &c.Mirror.Axigen.Addr }),
		stringSetting("axigen-user", "AXIGEN_USER", "Axigen administrator to log in as; prefer a delegated admin with domain rights only (file: mirror.axigen.user)",
			func(c *Config) *string { return &c.Mirror.Axigen.User }),
		stringSetting("axigen-password-file", "AXIGEN_PASSWORD_FILE", "file holding that administrator's password (file: mirror.axigen.passwordFile)",
			func(c *Config) *string { return &c.Mirror.Axigen.PasswordFile }),
		stringSetting("axigen-domain", "AXIGEN_DOMAIN", "Axigen domain the accounts and groups belong to (file: mirror.axigen.domain)",
			func(c *Config) *string { return &c.Mirror.Axigen.Domain }),
		boolSetting("axigen-tls", "AXIGEN_TLS", "connect to the CLI with TLS (file: mirror.axigen.tls)",
			func(c *Config) *bool { return &c.Mirror.Axigen.TLS }),
		stringSetting("axigen-ca", "AXIGEN_CA", "PEM CA bundle for the CLI's certificate (file: mirror.axigen.ca)",
			func(c *Config) *string { return &c.Mirror.Axigen.CA }),
		intSetting("axigen-sessions", "AXIGEN_SESSIONS", "CLI sessions kept open (file: mirror.axigen.sessions)",
			func(c *Config) *int { return &c.Mirror.Axigen.Sessions }),
		boolSetting("axigen-no-pipelining", "AXIGEN_NO_PIPELINING", "send each CLI command only once the previous one is answered (for a server that does not read commands sent ahead of their turn: ldapgate axigen-check tells) (file: mirror.axigen.noPipelining)",
			func(c *Config) *bool { return &c.Mirror.Axigen.NoPipelining }),
		intSetting("axigen-batch", "AXIGEN_BATCH", "most ready records of different entries a delivery worker sends to Axigen together, sharing one session's round trips; 1 delivers one at a time, as does --axigen-no-pipelining (file: mirror.axigen.batch)",
			func(c *Config) *int { return &c.Mirror.Axigen.Batch }),
		durationSetting("axigen-command-timeout", "AXIGEN_COMMAND_TIMEOUT", "longest wait for the answer to one CLI command; then the session is closed and the delivery retried (file: mirror.axigen.commandTimeout)",
			func(c *Config) *time.Duration { return &c.Mirror.Axigen.CommandTimeout }),
		{
			flag: &cli.StringFlag{Name: "dialect", EnvVars: env("DIALECT"), Value: string(schema.OpenLDAP),
				Usage: "directory dialect: openldap or activedirectory (file: mirror.schema.dialect)"},
			apply: func(c *cli.Context, cfg *Config) { cfg.Mirror.Schema.Dialect = schema.Dialect(c.String("dialect")) },
		},
		{
			flag: &cli.StringSliceFlag{Name: "account-base", EnvVars: env("ACCOUNT_BASE"),
				Usage: "subtree holding accounts; repeatable (file: mirror.schema.accountBase)"},
			apply: func(c *cli.Context, cfg *Config) {
				cfg.Mirror.Schema.AccountBase = schema.DNList(c.StringSlice("account-base"))
			},
		},
		{
			flag: &cli.StringSliceFlag{Name: "group-base", EnvVars: env("GROUP_BASE"),
				Usage: "subtree holding groups; repeatable (file: mirror.schema.groupBase)"},
			apply: func(c *cli.Context, cfg *Config) {
				cfg.Mirror.Schema.GroupBase = schema.DNList(c.StringSlice("group-base"))
			},
		},
		stringSetting("service-dn", "SERVICE_DN", "DN the gateway binds as to read entries and admin groups (file: mirror.serviceDN)",
			func(c *Config) *string { return &c.Mirror.ServiceDN }),
		stringSetting("service-password-file", "SERVICE_PASSWORD_FILE", "file holding the service DN's password (file: mirror.servicePasswordFile)",
			func(c *Config) *string { return &c.Mirror.ServicePasswordFile }),
		sliceSetting("admin-dn", "ADMIN_DN", "DN allowed every account and group change; repeatable (file: mirror.adminDNs)",
			func(c *Config) *[]string { return &c.Mirror.AdminDNs }),
		stringSetting("admin-group", "ADMIN_GROUP", "group whose members are admins too (file: mirror.adminGroup)",
			func(c *Config) *string { return &c.Mirror.AdminGroup }),
		stringSetting("axigen-bind-dn", "AXIGEN_BIND_DN", "DN Axigen's own LDAP connector binds as; it may change only contact info and passwords of existing accounts, audited and never mirrored back (file: mirror.axigenBindDN)",
			func(c *Config) *string { return &c.Mirror.AxigenBindDN }),
		intSetting("delivery-workers", "DELIVERY_WORKERS", "entries delivered to Axigen in parallel (file: mirror.workers)",
			func(c *Config) *int { return &c.Mirror.Workers }),
		intSetting("max-attempts", "MAX_ATTEMPTS", "failed deliveries before a record becomes a dead letter (file: mirror.maxAttempts)",
			func(c *Config) *int { return &c.Mirror.MaxAttempts }),
		stringSetting("audit-log", "AUDIT_LOG", "file that gets a JSON line per decision, directory result and delivery of each intercepted write (no passwords); - for standard error (file: mirror.auditLog)",
			func(c *Config) *string { return &c.Mirror.AuditLog }),
		durationSetting("resync-interval", "RESYNC_INTERVAL", "also run a resync inside serve this often (a backstop for changes made directly in the directory); 0 never (file: mirror.resyncInterval)",
			func(c *Config) *time.Duration { return &c.Mirror.ResyncInterval }),
		stringSetting("on-account-delete", "ON_ACCOUNT_DELETE", "what a directory delete or a move out of the account base does to the Axigen account: disable (keeps the mail), delete (destroys it) or ignore (file: mirror.onAccountDelete)",
			func(c *Config) *string { return &c.Mirror.OnAccountDelete }),
		durationSetting("delete-after", "DELETE_AFTER", "with --on-account-delete disable, remove an account still absent from the directory this long after it was disabled, e.g. 720h; 0 never (file: mirror.deleteAfter)",
			func(c *Config) *time.Duration { return &c.Mirror.DeleteAfter }),
		intSetting("max-removals-per-sweep", "MAX_REMOVALS_PER_SWEEP", "accounts removed at the end of their --delete-after grace per sweep at most; the others wait for the next (file: mirror.maxRemovalsPerSweep)",
			func(c *Config) *int { return &c.Mirror.MaxRemovalsPerSweep }),
		sliceSetting("protected-account", "PROTECTED_ACCOUNT", "Axigen account never removed, disabled or renamed; repeatable; postmaster always is (file: mirror.protectedAccounts)",
			func(c *Config) *[]string { return &c.Mirror.ProtectedAccounts }),
		durationSetting("retention", "RETENTION", "how long delivered records are kept as the audit trail (file: mirror.retention)",
			func(c *Config) *time.Duration { return &c.Mirror.Retention }),
		durationSetting("group-commit-delay", "GROUP_COMMIT_DELAY", "how long a journal write may wait for concurrent writes to share its fsync, while others wait for the directory's answer; a lone writer never waits; 0 never (file: mirror.groupCommitDelay)",
			func(c *Config) *time.Duration { return &c.Mirror.GroupCommitDelay }),
	}
}

// enabled reports whether mirroring is configured.
func (mc *MirrorConfig) enabled() bool { return mc.Axigen.Addr != "" }

func (mc *MirrorConfig) validate() error {
	if !mc.enabled() {
		return nil
	}
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("invalid setting %s: %s", setting, fmt.Sprintf(format, args...))
	}
	switch {
	case mc.Axigen.Domain == "":
		return bad("mirror.axigen.domain (--axigen-domain)", "needed when --axigen is set")
	case mc.Axigen.User == "":
		return bad("mirror.axigen.user (--axigen-user)", "needed when --axigen is set")
	case mc.Axigen.PasswordFile == "":
		return bad("mirror.axigen.passwordFile (--axigen-password-file)", "needed when --axigen is set")
	case mc.ServiceDN == "":
		return bad("mirror.serviceDN (--service-dn)", "the gateway needs its own bind DN to read entries")
	case mc.ServicePasswordFile == "":
		return bad("mirror.servicePasswordFile (--service-password-file)", "needed with --service-dn")
	case mc.Workers < 1:
		return bad("mirror.workers (--delivery-workers)", "must be at least 1")
	case mc.MaxAttempts < 1:
		return bad("mirror.maxAttempts (--max-attempts)", "must be at least 1")
	case mc.GroupCommitDelay < 0 || mc.GroupCommitDelay > time.Second:
		return bad("mirror.groupCommitDelay (--group-commit-delay)", "must be from 0 to 1s")
	case mc.ResyncInterval < 0:
		return bad("mirror.resyncInterval (--resync-interval)", "must not be negative")
	case mc.Axigen.Sessions < 1:
		return bad("mirror.axigen.sessions (--axigen-sessions)", "must be at least 1")
	case mc.Axigen.CommandTimeout < 0:
		return bad("mirror.axigen.commandTimeout (--axigen-command-timeout)", "must not be negative")
	case mc.Axigen.Batch < 1 || mc.Axigen.Batch > 64:
		return bad("mirror.axigen.batch (--axigen-batch)", "must be between 1 and 64")
	case mc.DeleteAfter < 0:
		return bad("mirror.deleteAfter (--delete-after)", "must not be negative")
	case len(mc.AdminDNs) == 0 && mc.AdminGroup == "":
		return bad("mirror.adminDNs (--admin-dn)", "name at least one admin DN or an admin group, or nobody may create accounts")
	}
	if _, err := schema.NewMapping(mc.Schema); err != nil {
		return fmt.Errorf("invalid setting mirror.%w", err)
	}
	if _, err := mc.deletes(); err != nil {
		return err
	}
	for _, f := range []struct{ setting, path string }{
		{"mirror.axigen.passwordFile (--axigen-password-file)", mc.Axigen.PasswordFile},
		{"mirror.servicePasswordFile (--service-password-file)", mc.ServicePasswordFile},
	} {
		if _, err := readSecretFile(f.path); err != nil {
			return bad(f.setting, "%v", err)
		}
	}
	return nil
}

// deletes is the delete policy of the settings.
func (mc *MirrorConfig) deletes() (mirror.Deletes, error) {
	action, err := mirror.ParseAccountDeleteAction(mc.OnAccountDelete)
	if err != nil {
		return mirror.Deletes{}, fmt.Errorf("invalid setting mirror.onAccountDelete (--on-account-delete): %w", err)
	}
	switch {
	case mc.DeleteAfter > 0 && mc.DeleteAfter < minDeleteAfter:
		return mirror.Deletes{}, fmt.Errorf("invalid setting mirror.deleteAfter (--delete-after): %s is below the minimum of %s (720h is 30 days)", mc.DeleteAfter, minDeleteAfter)
	case mc.MaxRemovalsPerSweep < 1:
		return mirror.Deletes{}, fmt.Errorf("invalid setting mirror.maxRemovalsPerSweep (--max-removals-per-sweep): must be at least 1")
	}
	if err := mirror.CheckProtected(mc.ProtectedAccounts); err != nil {
		return mirror.Deletes{}, fmt.Errorf("invalid setting mirror.protectedAccounts (--protected-account): %w", err)
	}
	protected := make([]string, 0, len(mc.ProtectedAccounts))
	for _, p := range mc.ProtectedAccounts {
		protected = append(protected, strings.TrimSpace(p))
	}
	return mirror.Deletes{OnAccountDelete: action, DeleteAfter: mc.DeleteAfter, Protected: protected,
		MaxRemovalsPerSweep: mc.MaxRemovalsPerSweep}, nil
}

// readSecretFile reads a password from a file, without its line ending.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// journalOptions are the journal settings serve uses.
func (cfg *Config) journalOptions(log *slog.Logger) store.Options {
	// The account and group names order the deliveries of different
	// entries that touch one Axigen account or group. A mapping that does not build leaves them
	// out: buildMirror refuses it anyway. A reloaded mapping counts from
	// the next start.
	var names func(*store.Record) []string
	if mp, err := schema.NewMapping(cfg.Mirror.Schema); err == nil {
		names = mirror.DeliveryNames(mp)
	}
	return store.Options{
		DeliveryNames: names,
		KeyFile:       journalKeyFile(cfg.DataDir),
		MaxAttempts:   cfg.Mirror.MaxAttempts,
		Retention:     cfg.Mirror.Retention,
		Logger:        log,
		// The store's zero is its default; the setting's is never.
		GroupCommitDelay: cmp.Or(cfg.Mirror.GroupCommitDelay, -1),
	}
}

// The admin endpoint counts deliveries.
var _ mirror.DeliveryObserver = (*admin.Server)(nil)

// buildMirror wires the write path from the configuration; observer (may
// be nil) hears of every delivery attempt. Each opt may adjust the
// mirror's configuration before it is built.
func (cfg *Config) buildMirror(j *store.Journal, log, audit *slog.Logger, observer mirror.DeliveryObserver, opts ...func(*mirror.Config)) (*mirror.Mirror, func(), error) {
	mc := cfg.Mirror
	mapping, err := schema.NewMapping(mc.Schema)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid setting mirror.%w", err)
	}
	svcPassword, err := readSecretFile(mc.ServicePasswordFile)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid setting mirror.servicePasswordFile: %w", err)
	}
	axCfg, err := mc.Axigen.clientConfig(log)
	if err != nil {
		return nil, nil, err
	}
	deletes, err := mc.deletes()
	if err != nil {
		return nil, nil, err
	}
	if log != nil && deletes.DeleteAfter > 0 && deletes.DeleteAfter < warnDeleteAfter {
		log.Warn("mirror.deleteAfter is under a day: accounts disabled for a directory delete are removed, mail and all, this soon", "deleteAfter", deletes.DeleteAfter.String())
	}
	pool := axigen.NewPool(axCfg, mc.Axigen.Sessions)
	upTLS, err := cfg.upstreamTLS()
	if err != nil {
		return nil, nil, err
	}
	dir := mirror.NewDirectory(mirror.DirectoryConfig{
		URLs:            cfg.Upstream.URLs,
		StartTLS:        cfg.Upstream.StartTLS,
		TLS:             upTLS,
		ServiceDN:       mc.ServiceDN,
		ServicePassword: svcPassword,
		Timeout:         cfg.Limits.DialTimeout + 10*time.Second,
		PoolSize:        mc.Workers + 2,
	})
	mcfg := mirror.Config{
		Journal:      j,
		Mapping:      mapping,
		Axigen:       axigen.NewClient(pool),
		Directory:    dir,
		Domain:       mc.Axigen.Domain,
		AdminDNs:     mc.AdminDNs,
		AdminGroup:   mc.AdminGroup,
		AxigenBindDN: mc.AxigenBindDN,
		Workers:      mc.Workers,
		Batch:        mc.Axigen.batch(),
		Logger:       log,
		Audit:        audit,
		Observer:     observer,
		Deletes:      deletes,
	}
	for _, opt := range opts {
		opt(&mcfg)
	}
	m, err := mirror.New(mcfg)
	if err != nil {
		dir.Close()
		pool.Close()
		return nil, nil, err
	}
	return m, func() { m.Close(); dir.Close(); pool.Close() }, nil
}
