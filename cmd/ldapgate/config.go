package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/gateway/subtree"
)

// Config is everything `ldapgate serve` can be told. It is read from the
// YAML file named by --config, then environment variables (LDAPGATE_…),
// then flags; each later source overrides the earlier ones.
type Config struct {
	Listen                  []string       `yaml:"listen"`
	TLS                     TLSConfig      `yaml:"tls"`
	ConfidentialityRequired bool           `yaml:"confidentialityRequired"`
	Upstream                UpstreamConfig `yaml:"upstream"`
	DataDir                 string         `yaml:"dataDir"`
	Limits                  LimitsConfig   `yaml:"limits"`
	Log                     LogConfig      `yaml:"log"`
	// AddrFile, when set, receives the bound listener URLs once serving.
	AddrFile string `yaml:"addrFile"`
	// AdminListen adds a TCP address (loopback) for the admin endpoint
	// (/metrics, /healthz, /readyz); it always listens on DATA_DIR/admin.sock.
	AdminListen string `yaml:"adminListen"`
	// Mirror configures the write path into Axigen.
	Mirror MirrorConfig `yaml:"mirror"`
	// Cluster makes the gateway one node of a cluster (cluster.go).
	Cluster ClusterConfig `yaml:"cluster"`
}

// TLSConfig is the gateway's own certificate, for ldaps:// and StartTLS.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// UpstreamConfig names the directory servers and how to reach them.
type UpstreamConfig struct {
	URLs               []string `yaml:"urls"`
	StartTLS           bool     `yaml:"startTLS"`
	CA                 string   `yaml:"ca"`
	ServerName         string   `yaml:"serverName"`
	InsecureSkipVerify bool     `yaml:"insecureSkipVerify"`
}

// LimitsConfig bounds what clients and upstreams may cost.
type LimitsConfig struct {
	MaxMessageSize      int           `yaml:"maxMessageSize"`
	MaxConnections      int           `yaml:"maxConnections"`
	MaxConnsPerAddress  int           `yaml:"maxConnectionsPerAddress"`
	MaxOpsPerConnection int           `yaml:"maxOpsPerConnection"`
	EarlyDials          int           `yaml:"earlyDials"`
	SpareConns          int           `yaml:"spareConnections"`
	IdleTimeout         time.Duration `yaml:"idleTimeout"`
	HandshakeTimeout    time.Duration `yaml:"handshakeTimeout"`
	StallTimeout        time.Duration `yaml:"stallTimeout"`
	WriteTimeout        time.Duration `yaml:"writeTimeout"`
	DialTimeout         time.Duration `yaml:"dialTimeout"`
	OpTimeout           time.Duration `yaml:"opTimeout"`
	MaxBindFailures     int           `yaml:"maxBindFailures"`
	BindFailureWindow   time.Duration `yaml:"bindFailureWindow"`
	ChangelogTimeLimit  time.Duration `yaml:"changelogTimeLimit"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

func defaultConfig() Config {
	return Config{
		Listen:  []string{"ldap://127.0.0.1:3389"},
		DataDir: "./data",
		Limits: LimitsConfig{
			MaxMessageSize:      gateway.DefaultMaxMessageSize,
			MaxConnections:      gateway.DefaultMaxConnections,
			MaxConnsPerAddress:  gateway.DefaultMaxConnsPerAddr,
			MaxOpsPerConnection: gateway.DefaultMaxOpsPerConn,
			EarlyDials:          gateway.DefaultEarlyDials,
			SpareConns:          gateway.DefaultSpareConns,
			IdleTimeout:         15 * time.Minute,
			HandshakeTimeout:    gateway.DefaultHandshakeTimeout,
			StallTimeout:        gateway.DefaultStallTimeout,
			WriteTimeout:        gateway.DefaultWriteTimeout,
			DialTimeout:         5 * time.Second,
			OpTimeout:           2 * time.Minute,
			ChangelogTimeLimit:  subtree.DefaultSearchTimeLimit,
			MaxBindFailures:     20,
			BindFailureWindow:   time.Minute,
		},
		Log:    LogConfig{Level: "info", Format: "text"},
		Mirror: defaultMirrorConfig(),
	}
}

// setting ties one flag to the Config field it sets.
type setting struct {
	flag  cli.Flag
	apply func(c *cli.Context, cfg *Config)
}

// defaults gives a fresh default Config for flags to show as their defaults.
func defaults() *Config { d := defaultConfig(); return &d }

func env(name string) []string { return []string{"LDAPGATE_" + name} }

func stringSetting(name, envName, usage string, field func(*Config) *string) setting {
	return setting{
		flag:  &cli.StringFlag{Name: name, EnvVars: env(envName), Usage: usage, Value: *field(defaults())},
		apply: func(c *cli.Context, cfg *Config) { *field(cfg) = c.String(name) },
	}
}

func sliceSetting(name, envName, usage string, field func(*Config) *[]string) setting {
	return setting{
		flag: &cli.StringSliceFlag{Name: name, EnvVars: env(envName), Usage: usage,
			Value: cli.NewStringSlice(*field(defaults())...)},
		apply: func(c *cli.Context, cfg *Config) { *field(cfg) = c.StringSlice(name) },
	}
}

func boolSetting(name, envName, usage string, field func(*Config) *bool) setting {
	return setting{
		flag:  &cli.BoolFlag{Name: name, EnvVars: env(envName), Usage: usage, Value: *field(defaults())},
		apply: func(c *cli.Context, cfg *Config) { *field(cfg) = c.Bool(name) },
	}
}

func intSetting(name, envName, usage string, field func(*Config) *int) setting {
	return setting{
		flag:  &cli.IntFlag{Name: name, EnvVars: env(envName), Usage: usage, Value: *field(defaults())},
		apply: func(c *cli.Context, cfg *Config) { *field(cfg) = c.Int(name) },
	}
}

func durationSetting(name, envName, usage string, field func(*Config) *time.Duration) setting {
	return setting{
		flag:  &cli.DurationFlag{Name: name, EnvVars: env(envName), Usage: usage, Value: *field(defaults())},
		apply: func(c *cli.Context, cfg *Config) { *field(cfg) = c.Duration(name) },
	}
}

// serveSettings lists every flag of `serve`; the usage texts are its --help.
func serveSettings() []setting {
	return append([]setting{
		sliceSetting("listen", "LISTEN", "listener URL, ldap://host:port (StartTLS offered when a certificate is set) or ldaps://host:port; repeatable (file: listen)",
			func(c *Config) *[]string { return &c.Listen }),
		stringSetting("tls-cert", "TLS_CERT", "PEM certificate (chain) the gateway presents to clients on ldaps:// and StartTLS (file: tls.cert)",
			func(c *Config) *string { return &c.TLS.Cert }),
		stringSetting("tls-key", "TLS_KEY", "PEM private key of --tls-cert (file: tls.key)",
			func(c *Config) *string { return &c.TLS.Key }),
		boolSetting("confidentiality-required", "CONFIDENTIALITY_REQUIRED", "refuse binds with credentials and writes on connections without TLS, with result 13 (file: confidentialityRequired)",
			func(c *Config) *bool { return &c.ConfidentialityRequired }),
		sliceSetting("upstream", "UPSTREAM", "upstream directory URL, ldap:// or ldaps://; repeatable, the first reachable one serves each new session (file: upstream.urls)",
			func(c *Config) *[]string { return &c.Upstream.URLs }),
		boolSetting("upstream-starttls", "UPSTREAM_STARTTLS", "upgrade ldap:// upstream connections with StartTLS (file: upstream.startTLS)",
			func(c *Config) *bool { return &c.Upstream.StartTLS }),
		stringSetting("upstream-ca", "UPSTREAM_CA", "PEM file of CA certificates that sign the upstream's certificate; default: the system's (file: upstream.ca)",
			func(c *Config) *string { return &c.Upstream.CA }),
		stringSetting("upstream-server-name", "UPSTREAM_SERVER_NAME", "name expected in the upstream's certificate; default: the URL's host (file: upstream.serverName)",
			func(c *Config) *string { return &c.Upstream.ServerName }),
		boolSetting("upstream-insecure-skip-verify", "UPSTREAM_INSECURE_SKIP_VERIFY", "do not verify the upstream's certificate (testing only) (file: upstream.insecureSkipVerify)",
			func(c *Config) *bool { return &c.Upstream.InsecureSkipVerify }),
		stringSetting("data-dir", "DATA_DIR", "folder for the journal and its key (file: dataDir)",
			func(c *Config) *string { return &c.DataDir }),
		intSetting("max-message-size", "MAX_MESSAGE_SIZE", "largest LDAP message accepted, in bytes (file: limits.maxMessageSize)",
			func(c *Config) *int { return &c.Limits.MaxMessageSize }),
		intSetting("max-connections", "MAX_CONNECTIONS", "most client connections at once; more get a busy Notice of Disconnection (file: limits.maxConnections)",
			func(c *Config) *int { return &c.Limits.MaxConnections }),
		intSetting("max-connections-per-address", "MAX_CONNECTIONS_PER_ADDRESS", "most client connections at once from one IP address; more get a busy Notice of Disconnection; 0 no per-address limit (file: limits.maxConnectionsPerAddress)",
			func(c *Config) *int { return &c.Limits.MaxConnsPerAddress }),
		intSetting("max-ops-per-conn", "MAX_OPS_PER_CONN", "most outstanding operations on one connection; further requests wait (file: limits.maxOpsPerConnection)",
			func(c *Config) *int { return &c.Limits.MaxOpsPerConnection }),
		intSetting("early-dials", "EARLY_DIALS", "upstream connections opened as clients connect, before their first request, at most this many at once over all clients (unused ones close after 1 s); 0 dials at the first request (file: limits.earlyDials)",
			func(c *Config) *int { return &c.Limits.EarlyDials }),
		intSetting("spare-connections", "SPARE_CONNECTIONS", "upstream connections kept, reset with an anonymous bind, after their clients ended cleanly, for the next clients instead of a new connection; each waits at most 2 s; 0 keeps none (file: limits.spareConnections)",
			func(c *Config) *int { return &c.Limits.SpareConns }),
		durationSetting("idle-timeout", "IDLE_TIMEOUT", "close client sessions silent this long with nothing outstanding; 0 never (file: limits.idleTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.IdleTimeout }),
		durationSetting("handshake-timeout", "HANDSHAKE_TIMEOUT", "time a client has to complete a TLS handshake (ldaps:// or StartTLS) (file: limits.handshakeTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.HandshakeTimeout }),
		durationSetting("stall-timeout", "STALL_TIMEOUT", "time a client has to finish sending a message it has begun; then the session ends with protocolError; 0 only --idle-timeout (file: limits.stallTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.StallTimeout }),
		durationSetting("write-timeout", "WRITE_TIMEOUT", "time a client may leave the gateway's answers unread (64 KiB written to it making no progress for half of it to all of it) before its session ends; its intercepted writes still settle on the directory's answers; 0 none (file: limits.writeTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.WriteTimeout }),
		durationSetting("dial-timeout", "DIAL_TIMEOUT", "time to connect (and TLS) to an upstream (file: limits.dialTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.DialTimeout }),
		durationSetting("op-timeout", "OP_TIMEOUT", "upstream silence tolerated while a non-search operation waits; then the session ends with unavailable; 0 never (file: limits.opTimeout)",
			func(c *Config) *time.Duration { return &c.Limits.OpTimeout }),
		durationSetting("changelog-time-limit", "CHANGELOG_TIME_LIMIT", "longest one search of the gateway's own subtree (cn=changelog, cn=monitor) runs, whatever time limit the client asks for; then it ends with timeLimitExceeded; 0 no limit (file: limits.changelogTimeLimit)",
			func(c *Config) *time.Duration { return &c.Limits.ChangelogTimeLimit }),
		intSetting("max-bind-failures", "MAX_BIND_FAILURES", "failed binds from one client address within --bind-failure-window before its binds are refused (result 53) for the rest of the window; 0 no limit (file: limits.maxBindFailures)",
			func(c *Config) *int { return &c.Limits.MaxBindFailures }),
		durationSetting("bind-failure-window", "BIND_FAILURE_WINDOW", "window of --max-bind-failures (file: limits.bindFailureWindow)",
			func(c *Config) *time.Duration { return &c.Limits.BindFailureWindow }),
		stringSetting("log-level", "LOG_LEVEL", "debug, info, warn or error (file: log.level)",
			func(c *Config) *string { return &c.Log.Level }),
		stringSetting("log-format", "LOG_FORMAT", "text or json (file: log.format)",
			func(c *Config) *string { return &c.Log.Format }),
		stringSetting("admin-listen", "ADMIN_LISTEN", "also serve the admin endpoint (/metrics, /healthz, /readyz) over HTTP on this address, e.g. 127.0.0.1:9389; it always listens on DATA_DIR/admin.sock (file: adminListen)",
			func(c *Config) *string { return &c.AdminListen }),
		stringSetting("addr-file", "ADDR_FILE", "once listening, write the listener URLs (actual ports) to this file, one per line (file: addrFile)",
			func(c *Config) *string { return &c.AddrFile }),
	}, append(mirrorSettings(), clusterSettings()...)...)
}

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, EnvVars: env("CONFIG"), Usage: "YAML configuration file; flags and LDAPGATE_* variables override it"}
}

// loadConfig builds the Config from defaults, the file, the environment and
// flags, then validates it.
func loadConfig(c *cli.Context, settings []setting) (Config, error) {
	cfg := defaultConfig()
	if path := c.String("config"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("configuration file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return Config{}, fmt.Errorf("configuration file %s: %w", path, nameSettings(data, err))
		}
	}
	for _, s := range settings {
		if c.IsSet(s.flag.Names()[0]) {
			s.apply(c, &cfg)
		}
	}
	return cfg, cfg.validate()
}

func (cfg *Config) validate() error {
	bad := func(setting, format string, args ...any) error {
		return fmt.Errorf("invalid setting %s: %s", setting, fmt.Sprintf(format, args...))
	}
	if len(cfg.Listen) == 0 {
		return bad("listen (--listen)", "at least one listener is needed")
	}
	// A user or password in a URL means nothing to LDAP, and the URLs are
	// logged, labelled in /metrics and shown in cn=monitor: refuse one,
	// without repeating it.
	for _, list := range []struct {
		setting string
		urls    []string
	}{{"listen (--listen)", cfg.Listen}, {"upstream.urls (--upstream)", cfg.Upstream.URLs}} {
		for _, raw := range list.urls {
			if u, err := url.Parse(raw); err == nil && u.User != nil {
				u.User = url.User("xxxxx")
				return bad(list.setting, "%s: a user or password in the URL is not allowed (the URLs are logged and shown in "+
					"/metrics and cn=monitor; the gateway's own identity is --service-dn with --service-password-file)", u.Redacted())
			}
		}
	}
	for _, l := range cfg.Listen {
		u, err := url.Parse(l)
		if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
			return bad("listen (--listen)", "%q is not an ldap:// or ldaps:// URL with a host and port", l)
		}
		if u.Scheme == "ldaps" && cfg.TLS.Cert == "" {
			return bad("tls.cert (--tls-cert)", "listener %s needs a certificate", l)
		}
	}
	if (cfg.TLS.Cert == "") != (cfg.TLS.Key == "") {
		return bad("tls.cert/tls.key (--tls-cert/--tls-key)", "both or neither must be given")
	}
	if len(cfg.Upstream.URLs) == 0 {
		return bad("upstream.urls (--upstream)", "at least one upstream directory is needed")
	}
	for _, raw := range cfg.Upstream.URLs {
		if _, err := gateway.ParseUpstream(raw, cfg.Upstream.StartTLS, nil); err != nil {
			return bad("upstream.urls (--upstream)", "%v", err)
		}
	}
	if cfg.DataDir == "" {
		return bad("dataDir (--data-dir)", "must not be empty")
	}
	l := cfg.Limits
	switch {
	case l.MaxMessageSize < 1024 || l.MaxMessageSize > 1<<30:
		return bad("limits.maxMessageSize (--max-message-size)", "%d is outside 1024..1073741824", l.MaxMessageSize)
	case l.MaxConnections < 1:
		return bad("limits.maxConnections (--max-connections)", "must be at least 1")
	case l.MaxConnsPerAddress < 0:
		return bad("limits.maxConnectionsPerAddress (--max-connections-per-address)", "must not be negative")
	case l.StallTimeout < 0:
		return bad("limits.stallTimeout (--stall-timeout)", "must not be negative")
	case l.WriteTimeout < 0:
		return bad("limits.writeTimeout (--write-timeout)", "must not be negative")
	case l.HandshakeTimeout <= 0:
		return bad("limits.handshakeTimeout (--handshake-timeout)", "must be positive")
	case l.MaxOpsPerConnection < 1:
		return bad("limits.maxOpsPerConnection (--max-ops-per-conn)", "must be at least 1")
	case l.EarlyDials < 0:
		return bad("limits.earlyDials (--early-dials)", "must not be negative")
	case l.SpareConns < 0:
		return bad("limits.spareConnections (--spare-connections)", "must not be negative")
	case l.IdleTimeout < 0:
		return bad("limits.idleTimeout (--idle-timeout)", "must not be negative")
	case l.DialTimeout <= 0:
		return bad("limits.dialTimeout (--dial-timeout)", "must be positive")
	case l.OpTimeout < 0:
		return bad("limits.opTimeout (--op-timeout)", "must not be negative")
	case l.ChangelogTimeLimit < 0:
		return bad("limits.changelogTimeLimit (--changelog-time-limit)", "must not be negative")
	case l.MaxBindFailures < 0:
		return bad("limits.maxBindFailures (--max-bind-failures)", "must not be negative")
	case l.BindFailureWindow <= 0:
		return bad("limits.bindFailureWindow (--bind-failure-window)", "must be positive")
	}
	if _, err := parseLevel(cfg.Log.Level); err != nil {
		return bad("log.level (--log-level)", "%v", err)
	}
	if cfg.Log.Format != "text" && cfg.Log.Format != "json" {
		return bad("log.format (--log-format)", "%q is neither text nor json", cfg.Log.Format)
	}
	if err := cfg.Cluster.validate(); err != nil {
		return err
	}
	if cc := cfg.Cluster; cc.enabled() {
		if least := leaderLease + cfg.Mirror.Axigen.CommandTimeout; cc.FenceDelay != 0 && cc.FenceDelay < least {
			return bad("cluster.fenceDelay (--cluster-fence-delay)", "%s is shorter than the leader lease plus the Axigen command time-out (%s): a deposed leader's last command could reach Axigen after the new leader's first", cc.FenceDelay, least)
		}
		if cc.OrphanAge == 0 && l.OpTimeout == 0 {
			return bad("cluster.orphanAge (--cluster-orphan-age)", "without --op-timeout a write may wait for the directory without bound, and the default orphan age (--op-timeout plus a minute) would settle one still under way: set it longer than the directory may take")
		}
		if cc.OrphanAge != 0 && l.OpTimeout > 0 && cc.OrphanAge <= l.OpTimeout {
			return bad("cluster.orphanAge (--cluster-orphan-age)", "%s is not longer than --op-timeout (%s): a write still waiting for the directory could be settled under it", cc.OrphanAge, l.OpTimeout)
		}
	}
	return cfg.Mirror.validate()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(strings.ToLower(s)))
	return l, err
}

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.Level)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serverTLS loads the gateway's own certificate, or returns nil when none is set.
func (cfg *Config) serverTLS() (*tls.Config, error) {
	if cfg.TLS.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("invalid setting tls.cert/tls.key (--tls-cert/--tls-key): %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// upstreamTLS is the TLS configuration for upstream connections.
func (cfg *Config) upstreamTLS() (*tls.Config, error) {
	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         cfg.Upstream.ServerName,
		InsecureSkipVerify: cfg.Upstream.InsecureSkipVerify, //nolint:gosec // explicit operator choice, documented as testing only
	}
	if cfg.Upstream.CA != "" {
		pem, err := os.ReadFile(cfg.Upstream.CA)
		if err != nil {
			return nil, fmt.Errorf("invalid setting upstream.ca (--upstream-ca): %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("invalid setting upstream.ca (--upstream-ca): no PEM certificate in %s", cfg.Upstream.CA)
		}
		tlsCfg.RootCAs = pool
	}
	return tlsCfg, nil
}

// upstreams parses the upstream URLs with their TLS settings.
func (cfg *Config) upstreams() ([]gateway.Upstream, error) {
	tlsCfg, err := cfg.upstreamTLS()
	if err != nil {
		return nil, err
	}
	var ups []gateway.Upstream
	for _, raw := range cfg.Upstream.URLs {
		u, err := gateway.ParseUpstream(raw, cfg.Upstream.StartTLS, tlsCfg)
		if err != nil {
			return nil, fmt.Errorf("invalid setting upstream.urls (--upstream): %w", err)
		}
		ups = append(ups, u)
	}
	return ups, nil
}

// nameSettings adds to each of a YAML type error's lines ("line 9: cannot
// unmarshal !!str `soon` into time.Duration") the setting written on that
// line (limits.idleTimeout), so the message names it as every other bad
// setting's does.
func nameSettings(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	keys := map[int]string{} // line -> the setting whose value is written there
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				name := n.Content[i].Value
				if path != "" {
					name = path + "." + name
				}
				// A nested value is written after its parent's: the
				// deepest key on a line is the one its value belongs to.
				keys[n.Content[i+1].Line] = name
				walk(n.Content[i+1], name)
			}
		}
	}
	walk(&root, "")
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr == nil {
			if name, ok := keys[line]; ok {
				msgs[i] = "invalid setting " + name + ": " + m
			}
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}
