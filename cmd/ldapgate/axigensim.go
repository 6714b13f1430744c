package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// axigenSimCommand runs the in-memory Axigen CLI simulator, for the demo
// and for trying the gateway without an Axigen server.
func axigenSimCommand() *cli.Command {
	return &cli.Command{
		Name:  "axigen-sim",
		Usage: "run an in-memory Axigen administration CLI server (demo and tests)",
		Description: "Serves the Axigen CLI protocol described in docs/axigen-cli.md from memory: " +
			"login, contexts, accounts, contact info, groups and their addresses. " +
			"State is lost when it stops. Each session's commands are logged at debug " +
			"level with passwords masked.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7000", Usage: "address to listen on",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_LISTEN"}},
			&cli.StringFlag{Name: "user", Value: "admin", Usage: "administrator name clients log in with",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_USER"}},
			&cli.StringFlag{Name: "password-file", Usage: "file holding the administrator's password (one line)",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_PASSWORD_FILE"}, Required: true},
			&cli.StringSliceFlag{Name: "domain", Usage: "domain to serve (repeatable)",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_DOMAIN"}, Required: true},
			&cli.IntFlag{Name: "max-auth-errors", Value: 3, Usage: "failed logins before the connection is closed",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_MAX_AUTH_ERRORS"}},
			&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate: serve TLS (with --tls-key)",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_TLS_CERT"}},
			&cli.StringFlag{Name: "tls-key", Usage: "PEM private key for --tls-cert",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_TLS_KEY"}},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error",
				EnvVars: []string{"LDAPGATE_AXIGEN_SIM_LOG_LEVEL"}},
		},
		Action: runAxigenSim,
	}
}

func runAxigenSim(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	w := c.App.ErrWriter
	if w == nil {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))

	raw, err := os.ReadFile(c.String("password-file"))
	if err != nil {
		return fmt.Errorf("--password-file: %w", err)
	}
	password := strings.TrimRight(string(raw), "\r\n")
	if password == "" || strings.ContainsAny(password, "\r\n") {
		return fmt.Errorf("--password-file %s: want one non-empty line", c.String("password-file"))
	}

	var tlsConfig *tls.Config
	if certFile, keyFile := c.String("tls-cert"), c.String("tls-key"); certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	sim := axigensim.New(axigensim.Options{
		Addr:          c.String("listen"),
		TLS:           tlsConfig,
		Admins:        map[string]string{c.String("user"): password},
		Domains:       c.StringSlice("domain"),
		MaxAuthErrors: c.Int("max-auth-errors"),
		Logger:        log,
	})
	if err := sim.Start(ctx); err != nil {
		return err
	}
	log.Info("axigen-sim listening", "addr", sim.Addr(), "tls", tlsConfig != nil,
		"user", c.String("user"), "domains", strings.Join(c.StringSlice("domain"), ","))
	<-ctx.Done()
	log.Info("axigen-sim stopping")
	return sim.Close()
}
