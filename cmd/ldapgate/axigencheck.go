package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/integration/axigen"
)

func axigenCheckCommand() *cli.Command {
	settings := serveSettings()
	flags := []cli.Flag{configFlag()}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	return &cli.Command{
		Name:  "axigen-check",
		Usage: "check that the Axigen client understands this Axigen server's answers (read-only)",
		Description: `Logs into the configured Axigen (--axigen, --axigen-user, --axigen-password-file,
--axigen-domain, as serve takes them) and runs only read commands in the domain:
LIST Accounts, LIST Groups, SHOW RegistryInformation and SHOW of postmaster's
contact info, LIST Addresses of one group. For each it prints whether the
client parses the answer, and the raw answer when it does not: paste that into
an issue to correct the client. Nothing is changed in Axigen. Exits 1 if any
answer is not understood.`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c, settings)
			if err != nil {
				return err
			}
			return axigenCheck(c.Context, cfg.Mirror.Axigen, c.App.Writer)
		},
	}
}

// axigenCheck runs axigen.Client.CheckReads and prints its findings.
func axigenCheck(ctx context.Context, ac AxigenConfig, out io.Writer) error {
	if ac.Addr == "" || ac.Domain == "" {
		return errors.New("axigen-check needs --axigen and --axigen-domain")
	}
	axCfg, err := ac.clientConfig(nil)
	if err != nil {
		return err
	}
	pool := axigen.NewPool(axCfg, 1)
	defer pool.Close()
	fmt.Fprintf(out, "Axigen CLI at %s as %s, domain %s\n", ac.Addr, ac.User, ac.Domain)
	checks, err := axigen.NewClient(pool).CheckReads(ctx, ac.Domain)
	if err != nil {
		return fmt.Errorf("axigen-check: %w", err)
	}
	failed := 0
	for _, rc := range checks {
		if rc.OK {
			fmt.Fprintf(out, "ok    %s: %s\n", rc.Command, rc.Detail)
			continue
		}
		failed++
		fmt.Fprintf(out, "FAIL  %s: %s\n", rc.Command, rc.Detail)
		for _, l := range rc.Raw {
			fmt.Fprintf(out, "      | %s\n", l)
		}
	}
	if !ac.NoPipelining {
		// Deliveries send an entry's commands together: does this server
		// read them so?
		rc, err := axigen.NewClient(pool).CheckPipelining(ctx, ac.Domain)
		checks = append(checks, rc)
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(out, "FAIL  commands sent together: %v (set --axigen-no-pipelining)\n", err)
		case rc.OK:
			fmt.Fprintf(out, "ok    commands sent together: %s\n", rc.Detail)
		default:
			failed++
			fmt.Fprintf(out, "FAIL  commands sent together: %s (set --axigen-no-pipelining)\n", rc.Detail)
		}
	}
	if failed > 0 {
		return cli.Exit(fmt.Sprintf("%d of %d answers not understood", failed, len(checks)), 1)
	}
	fmt.Fprintf(out, "all %d answers understood\n", len(checks))
	return nil
}

// clientConfig is how every command reaches Axigen's CLI: address, login
// and, with tls set, the CA to trust.
func (ac AxigenConfig) clientConfig(log *slog.Logger) (axigen.Config, error) {
	pw, err := readSecretFile(ac.PasswordFile)
	if err != nil {
		return axigen.Config{}, fmt.Errorf("invalid setting mirror.axigen.passwordFile: %w", err)
	}
	cfg := axigen.Config{Addr: ac.Addr, User: ac.User, Password: pw, CommandTimeout: ac.CommandTimeout,
		NoPipelining: ac.NoPipelining, Logger: log}
	if !ac.TLS {
		return cfg, nil
	}
	cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	if ac.CA != "" {
		pem, err := os.ReadFile(ac.CA)
		if err != nil {
			return axigen.Config{}, fmt.Errorf("invalid setting mirror.axigen.ca: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return axigen.Config{}, fmt.Errorf("invalid setting mirror.axigen.ca: no PEM certificate in %s", ac.CA)
		}
		cfg.TLS.RootCAs = roots
	}
	return cfg, nil
}
