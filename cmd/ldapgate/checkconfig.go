package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
)

func checkConfigCommand() *cli.Command {
	settings := serveSettings()
	flags := []cli.Flag{configFlag()}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	return &cli.Command{
		Name:  "check-config",
		Usage: "validate the configuration and test its connections",
		Description: `Loads the settings exactly as serve does (--config, LDAPGATE_*, flags),
reports the first bad one, then checks each part: the TLS certificate, every
upstream (connect and read the root DSE), the service bind, and the Axigen
login. Exits 1 if anything fails.`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c, settings)
			if err != nil {
				return err
			}
			return checkConfig(c.Context, &cfg, c.App.Writer)
		},
	}
}

func checkConfig(ctx context.Context, cfg *Config, out io.Writer) error {
	failed := 0
	check := func(what string, err error) {
		if err != nil {
			failed++
			fmt.Fprintf(out, "FAIL  %s: %v\n", what, err)
			return
		}
		fmt.Fprintf(out, "ok    %s\n", what)
	}
	check("settings", nil)
	if cfg.TLS.Cert != "" {
		_, err := cfg.serverTLS()
		check("gateway certificate "+cfg.TLS.Cert, err)
	}
	ups, err := cfg.upstreams()
	check("upstream settings", err)
	if err == nil {
		set := gateway.NewUpstreamSet(ups, cfg.Limits.DialTimeout, cfg.Limits.MaxMessageSize, nil)
		for i, u := range ups {
			check("upstream "+u.URL+" answers LDAP", set.Probe(ctx, i))
		}
	}
	if cfg.Mirror.enabled() {
		noteUnmappedContact(cfg.Mirror.Schema, out)
		m, closeMirror, err := cfg.buildMirror(nil, nil, nil, nil)
		check("mirror settings", err)
		if err == nil {
			defer closeMirror()
			check("service bind as "+cfg.Mirror.ServiceDN, m.CheckService(ctx))
		}
		axCfg, err := cfg.Mirror.Axigen.clientConfig(nil)
		if err == nil {
			dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			var s *axigen.Session
			s, err = axigen.Dial(dctx, axCfg)
			cancel()
			if err == nil {
				s.Close()
			}
		}
		check("Axigen CLI login as "+cfg.Mirror.Axigen.User+" at "+cfg.Mirror.Axigen.Addr, err)
	} else {
		fmt.Fprintln(out, "note  mirroring is off (no --axigen): the gateway only relays")
	}
	if failed > 0 {
		return fmt.Errorf("%d checks failed", failed)
	}
	return nil
}

// noteUnmappedContact says which of Axigen's eleven contact fields the
// mapping leaves alone, and why: the directory's standard schema has no
// attribute for them.
func noteUnmappedContact(sc schema.Config, out io.Writer) {
	mapping, err := schema.NewMapping(sc)
	if err != nil {
		return // the mirror's own check reports it
	}
	mapped := mapping.ContactAttributes()
	for _, f := range schema.ContactFields {
		if _, ok := mapped[f]; !ok {
			fmt.Fprintf(out, "note  contact field %s is not mirrored: the %s schema has no standard attribute for it (map one with mirror.schema.contact.%s)\n",
				f, mapping.Dialect(), f)
		}
	}
}
