package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// runConfig parses args as `serve` would and returns the loaded Config.
func runConfig(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	settings := serveSettings()
	flags := []cli.Flag{configFlag()}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	var cfg Config
	var loadErr error
	app := newApp(&cli.Command{
		Name: "serve", Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, loadErr = loadConfig(c, settings)
			return nil
		},
	})
	if err := app.Run(append([]string{"ldapgate", "serve"}, args...)); err != nil {
		t.Fatalf("cli: %v", err)
	}
	return cfg, loadErr
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPrecedence(t *testing.T) {
	file := writeConfig(t, `
upstream:
  urls: [ldap://file.example:389]
limits:
  idleTimeout: 1m
  maxConnections: 10
dataDir: /from/file
`)
	t.Setenv("LDAPGATE_IDLE_TIMEOUT", "2m")
	t.Setenv("LDAPGATE_DATA_DIR", "/from/env")
	cfg, err := runConfig(t, "--config", file, "--data-dir", "/from/flag")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Upstream.URLs[0] != "ldap://file.example:389" {
		t.Errorf("file value lost: %v", cfg.Upstream.URLs)
	}
	if cfg.Limits.MaxConnections != 10 {
		t.Errorf("file value lost: maxConnections %d", cfg.Limits.MaxConnections)
	}
	if cfg.Limits.IdleTimeout != 2*time.Minute {
		t.Errorf("environment should override the file: idleTimeout %v", cfg.Limits.IdleTimeout)
	}
	if cfg.DataDir != "/from/flag" {
		t.Errorf("flag should override the environment: dataDir %q", cfg.DataDir)
	}
	if cfg.Limits.OpTimeout != 2*time.Minute || cfg.Log.Level != "info" {
		t.Errorf("defaults lost: %+v %+v", cfg.Limits, cfg.Log)
	}
}

func TestConfigWithoutFile(t *testing.T) {
	cfg, err := runConfig(t, "--listen", "ldap://127.0.0.1:0", "--listen", "ldaps://127.0.0.1:0",
		"--tls-cert", "c.pem", "--tls-key", "k.pem", "--upstream", "ldap://127.0.0.1:389", "--data-dir", "./d")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listen) != 2 || cfg.Listen[1] != "ldaps://127.0.0.1:0" {
		t.Errorf("listen: %v", cfg.Listen)
	}
}

func TestBadSettingsAreNamed(t *testing.T) {
	tests := []struct {
		name string
		args []string
		file string
		want string
	}{
		{"no upstream", nil, "", "upstream.urls (--upstream)"},
		{"bad upstream scheme", []string{"--upstream", "http://x"}, "", "upstream.urls"},
		{"ldaps without certificate", []string{"--upstream", "ldap://x", "--listen", "ldaps://127.0.0.1:0"}, "", "tls.cert"},
		{"bad listen URL", []string{"--upstream", "ldap://x", "--listen", "127.0.0.1:389"}, "", "listen (--listen)"},
		{"tiny message size", []string{"--upstream", "ldap://x", "--max-message-size", "10"}, "", "limits.maxMessageSize"},
		{"negative early dials", []string{"--upstream", "ldap://x", "--early-dials", "-1"}, "", "limits.earlyDials (--early-dials)"},
		{"negative spare connections", []string{"--upstream", "ldap://x", "--spare-connections", "-1"}, "", "limits.spareConnections (--spare-connections)"},
		{"bad log level", []string{"--upstream", "ldap://x", "--log-level", "loud"}, "", "log.level"},
		{"unknown key in file", nil, "upstrem:\n  urls: [ldap://x]\n", "upstrem"},
		{"bad duration in file", nil, "upstream:\n  urls: [ldap://x]\nlimits:\n  idleTimeout: soon\n", "line 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(args, "--config", writeConfig(t, tt.file))
			}
			_, err := runConfig(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestDNFlagsKeepTheirCommas(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := runConfig(t, "--upstream", "ldap://x", "--axigen", "127.0.0.1:7000", "--axigen-domain", "example.com",
		"--axigen-password-file", pw, "--service-dn", "cn=gw,dc=example,dc=com", "--service-password-file", pw,
		"--account-base", "ou=people,dc=example,dc=com", "--admin-dn", "cn=admin,dc=example,dc=com",
		"--admin-dn", "uid=root,ou=people,dc=example,dc=com")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Mirror.AdminDNs) != 2 || cfg.Mirror.AdminDNs[0] != "cn=admin,dc=example,dc=com" {
		t.Errorf("admin DNs: %q", cfg.Mirror.AdminDNs)
	}
	if len(cfg.Mirror.Schema.AccountBase) != 1 || cfg.Mirror.Schema.AccountBase[0] != "ou=people,dc=example,dc=com" {
		t.Errorf("account base: %q", cfg.Mirror.Schema.AccountBase)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := runConfig(t, "--config", filepath.Join("..", "..", "packaging", "ldapgate.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxMessageSize != 16<<20 || cfg.Upstream.URLs[0] != "ldap://127.0.0.1:389" {
		t.Errorf("example config: %+v", cfg)
	}
}

// urfave/cli takes the first `quoted` words of a flag's usage for the
// name of its value: `ldapgate cluster add` in --cluster-peer's made
// --help print "--cluster-peer ldapgate cluster add", and a boolean flag
// seem to take a value.
func TestFlagUsagesHaveNoQuotedPlaceholders(t *testing.T) {
	for _, s := range serveSettings() {
		usage := s.flag.(cli.DocGenerationFlag).GetUsage()
		name := ""
		if _, rest, ok := strings.Cut(usage, "`"); ok {
			name, _, _ = strings.Cut(rest, "`")
		}
		if _, isBool := s.flag.(*cli.BoolFlag); (isBool && name != "") || strings.Contains(name, " ") {
			t.Errorf("--%s: its usage makes --help name its value %q", s.flag.Names()[0], name)
		}
	}
}

// A value of the wrong type in the file names its setting, as every other
// bad setting's message does.
func TestWrongTypeInTheFileIsNamed(t *testing.T) {
	path := writeConfig(t, "upstream:\n  urls:\n    - ldap://127.0.0.1:389\nlimits:\n  maxConnections: 10\n  idleTimeout: soon\n")
	_, err := runConfig(t, "--config", path)
	if err == nil || !strings.Contains(err.Error(), "invalid setting limits.idleTimeout") {
		t.Errorf("loading a duration of %q: %v", "soon", err)
	}
}

// A password in an upstream or listener URL would be logged, labelled in
// /metrics and shown in cn=monitor: it is refused, and the refusal does
// not repeat it.
func TestURLsWithAPasswordAreRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--upstream", "ldap://admin:hunter2@127.0.0.1:389"},
		{"--upstream", "ldap://127.0.0.1:389", "--upstream", "ldaps://cn=admin:hunter2@dir.example.com"},
		{"--upstream", "ldap://127.0.0.1:389", "--listen", "ldap://x:hunter2@127.0.0.1:3389"},
	} {
		_, err := runConfig(t, args...)
		if err == nil || !strings.Contains(err.Error(), "a user or password in the URL is not allowed") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: %v", args, err)
		}
	}
}
