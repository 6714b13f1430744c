// Command ldapgate is an LDAP gateway that relays every operation to an
// upstream directory and mirrors account and group changes into Axigen.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// newApp builds the command line. Repeatable flags are never split on
// commas: their values are DNs, which contain commas.
func newApp(commands ...*cli.Command) *cli.App {
	return &cli.App{
		Name:                      "ldapgate",
		Usage:                     "LDAP gateway that mirrors directory changes into Axigen",
		Version:                   version,
		EnableBashCompletion:      true,
		Suggest:                   true,
		DisableSliceFlagSeparator: true,
		Commands:                  commands,
	}
}

func main() {
	app := newApp(
		serveCommand(),
		witnessCommand(),
		clusterCommand(),
		axigenSimCommand(),
		demoCommand(),
		resyncCommand(),
		journalCommand(),
		checkConfigCommand(),
		axigenCheckCommand(),
		genDocsCommand(),
		&cli.Command{
			Name:  "version",
			Usage: "print the version",
			Action: func(c *cli.Context) error {
				fmt.Fprintln(c.App.Writer, "ldapgate", version)
				return nil
			},
		},
	)
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "ldapgate:", err)
		os.Exit(1)
	}
}
