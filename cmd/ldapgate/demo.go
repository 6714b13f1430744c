package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/internal/testenv/testpki"
	"github.com/ldapgate/ldapgate/schema"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run the gateway in front of a real slapd with sample data and the Axigen simulator",
		Description: `Starts Debian's slapd (OpenLDAP) with sample users and groups in a temporary
folder, the Axigen CLI simulator, and the gateway in front of the directory
with mirroring on; brings the simulator in line with the directory, shows one
change made with ldapmodify arriving in Axigen, then prints what to try and
every change Axigen receives until Ctrl-C.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:3389", Usage: "gateway address (ldap://); ldaps:// takes the next port"},
			&cli.StringFlag{Name: "axigen-listen", Value: "127.0.0.1:7000", Usage: "simulator address"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the gateway's log"},
			&cli.BoolFlag{Name: "ad", Usage: "use a real Active Directory (Samba's AD DC on 127.0.0.4; needs root and the samba packages) instead of slapd"},
		},
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			if c.Bool("ad") {
				return runDemoAD(ctx, c.App.Writer, c.String("listen"), c.String("axigen-listen"), c.Bool("verbose"))
			}
			return runDemo(ctx, c.App.Writer, c.String("listen"), c.String("axigen-listen"), c.Bool("verbose"))
		},
	}
}

// The demo's Axigen: one domain, an admin with a fixed password (printed).
const (
	demoDomain         = "example.com"
	demoAxigenPassword = "demo-axigen-pw"
)

// startDemoSimulator starts the Axigen simulator for a demo, on addr when
// it is free.
func startDemoSimulator(ctx context.Context, addr string) (*axigensim.Server, error) {
	sim := axigensim.New(axigensim.Options{
		Addr:    freeOr(addr),
		Admins:  map[string]string{"admin": demoAxigenPassword},
		Domains: []string{demoDomain},
	})
	if err := sim.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the Axigen simulator: %w", err)
	}
	return sim, nil
}

// writeDemoFile writes a private file (a password) into the demo's folder.
func writeDemoFile(dir, name, content string) string {
	p := filepath.Join(dir, name)
	_ = os.WriteFile(p, []byte(content+"\n"), 0o600)
	return p
}

// freeOr returns addr when it can be bound, else an address on a port the
// OS picks, so a second demo (or a busy port) does not stop the first.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		if ln, err = net.Listen("tcp", net.JoinHostPort(host, "0")); err != nil {
			return addr
		}
	}
	defer ln.Close()
	return ln.Addr().String()
}

func runDemo(ctx context.Context, out io.Writer, listen, axigenListen string, verbose bool) error {
	dir, err := os.MkdirTemp("", "ldapgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	pki, err := testpki.New(dir)
	if err != nil {
		return fmt.Errorf("demo certificates: %w", err)
	}

	fmt.Fprintln(out, "Starting slapd (OpenLDAP) with sample users and groups...")
	dirSrv, err := slapd.Start(ctx, slapd.Options{})
	if err != nil {
		return fmt.Errorf("start slapd (is the slapd package installed? make demo installs it): %w", err)
	}
	defer dirSrv.Stop()

	const domain, axPassword = demoDomain, demoAxigenPassword
	sim, err := startDemoSimulator(ctx, axigenListen)
	if err != nil {
		return err
	}
	defer sim.Close()
	write := func(name, content string) string { return writeDemoFile(dir, name, content) }
	gwAddr := freeOr(listen)
	host, port, _ := net.SplitHostPort(gwAddr)
	var ldapsPort int
	fmt.Sscanf(port, "%d", &ldapsPort)
	ldapsAddr := freeOr(net.JoinHostPort(host, fmt.Sprint(ldapsPort+247))) // 3389 -> 3636
	cfg := defaultConfig()
	cfg.Listen = []string{"ldap://" + gwAddr, "ldaps://" + ldapsAddr}
	cfg.TLS = TLSConfig{Cert: pki.CertFile, Key: pki.KeyFile}
	cfg.Upstream.URLs = []string{dirSrv.URL}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Log.Level = "warn"
	if verbose {
		cfg.Log.Level = "debug"
	}
	// The defaults' Axigen settings (command time-out, batch), with the
	// simulator's address and credentials.
	ax := &cfg.Mirror.Axigen
	ax.Addr, ax.User, ax.PasswordFile, ax.Domain, ax.Sessions = sim.Addr(), "admin", write("axigen.pw", axPassword), domain, 2
	cfg.Mirror.Schema = schema.Config{Dialect: schema.OpenLDAP,
		AccountBase: schema.DNList{"ou=people,dc=example,dc=com"}, GroupBase: schema.DNList{"ou=groups,dc=example,dc=com"}}
	cfg.Mirror.ServiceDN = dirSrv.RootDN
	cfg.Mirror.ServicePasswordFile = write("service.pw", dirSrv.RootPW)
	cfg.Mirror.AdminDNs = []string{dirSrv.RootDN}
	cfg.Mirror.AdminGroup = "cn=admins,ou=groups,dc=example,dc=com"
	if err := cfg.validate(); err != nil {
		return err
	}
	log := newLogger(cfg.Log, os.Stderr)

	// Bring the empty simulator in line with the directory first, as
	// `ldapgate resync` does on a real site.
	if err := demoInitialSync(ctx, &cfg, log, out); err != nil {
		return err
	}

	served := make(chan error, 1)
	go func() { served <- runServe(ctx, cfg, log, nil) }()
	if err := waitListening(ctx, gwAddr, served); err != nil {
		return err
	}
	gw := "ldap://" + gwAddr
	fmt.Fprintf(out, `
  directory (slapd)  %s      (direct; admin %s / %s)
  Axigen simulator   %s                (admin / %s, domain %s)
  gateway            %s  ldaps://%s
`, dirSrv.URL, dirSrv.RootDN, dirSrv.RootPW, sim.Addr(), axPassword, domain, gw, ldapsAddr)

	fmt.Fprintln(out, "\nA change through the gateway: alice sets her own phone with ldapmodify ...")
	before, _ := sim.Account(domain, "alice")
	modify := exec.CommandContext(ctx, "ldapmodify", "-x", "-H", gw, "-D", "uid=alice,ou=people,dc=example,dc=com", "-w", slapd.AlicePassword)
	modify.Stdin = strings.NewReader("dn: uid=alice,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 0199\n")
	modify.Stdout, modify.Stderr = out, out
	start := time.Now()
	if err := modify.Run(); err != nil {
		fmt.Fprintf(out, "  ldapmodify failed: %v\n", err)
	} else {
		for ctx.Err() == nil {
			if a, ok := sim.Account(domain, "alice"); ok && a.Contact["phone"] == "+1 555 0199" {
				fmt.Fprintf(out, "  Axigen: account alice phone %q -> %q, %d ms after ldapmodify started\n",
					before.Contact["phone"], a.Contact["phone"], time.Since(start).Milliseconds())
				break
			}
			if time.Since(start) > 10*time.Second {
				fmt.Fprintln(out, "  the change has not reached Axigen after 10 s; run with --verbose to see why")
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	fmt.Fprintf(out, `
Try these (changes Axigen receives are printed below as they arrive):

  ldapsearch -x -H %[1]s -b dc=example,dc=com -LLL '(uid=bob)'
  ldapsearch -x -H %[1]s -b dc=example,dc=com -E pr=2/noprompt -LLL dn
  ldapwhoami -x -H %[1]s -D uid=bob,ou=people,dc=example,dc=com -w %[2]s
  ldappasswd -x -H %[1]s -D uid=bob,ou=people,dc=example,dc=com -w %[2]s -s new-bob-pw
  ldapmodify -x -H %[1]s -D uid=bob,ou=people,dc=example,dc=com -w %[2]s <<'EOF'
dn: uid=bob,ou=people,dc=example,dc=com
changetype: modify
replace: mobile
mobile: +1 555 0177
EOF
  # refused by the gateway (result 50): bob may not change his mail
  ldapmodify -x -H %[1]s -D uid=bob,ou=people,dc=example,dc=com -w %[2]s <<'EOF'
dn: uid=bob,ou=people,dc=example,dc=com
changetype: modify
replace: mail
mail: robert@example.com
EOF
  # carol is in cn=admins: she may add accounts and change groups
  ldapadd -x -H %[1]s -D uid=carol,ou=people,dc=example,dc=com -w %[3]s <<'EOF'
dn: uid=dave,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: dave
cn: Dave Grohl
sn: Grohl
givenName: Dave
mail: dave@example.com
userPassword: dave-pw
EOF
  ldapmodify -x -H %[1]s -D uid=carol,ou=people,dc=example,dc=com -w %[3]s <<'EOF'
dn: cn=staff,ou=groups,dc=example,dc=com
changetype: modify
add: member
member: uid=dave,ou=people,dc=example,dc=com
EOF
  LDAPTLS_CACERT=%[4]s ldapsearch -x -H ldaps://%[5]s -b dc=example,dc=com -LLL dn
  LDAPTLS_CACERT=%[4]s ldapwhoami -x -ZZ -H %[1]s -D uid=bob,ou=people,dc=example,dc=com -w %[2]s

Ctrl-C stops everything.
`, gw, slapd.BobPassword, slapd.CarolPassword, pki.CAFile, ldapsAddr)

	watchSimulator(ctx, out, sim, domain)
	select {
	case err := <-served:
		return err
	case <-time.After(15 * time.Second):
		return nil
	}
}

func demoInitialSync(ctx context.Context, cfg *Config, log *slog.Logger, out io.Writer) error {
	m, closeMirror, err := cfg.buildMirror(nil, log, nil, nil)
	if err != nil {
		return err
	}
	defer closeMirror()
	rep, err := m.Resync(ctx, mirror.ResyncOptions{})
	if err != nil {
		return fmt.Errorf("initial sync into the simulator: %w", err)
	}
	fmt.Fprintf(out, "Initial sync: %d accounts and %d groups put into Axigen (%d needed commands).\n", rep.Accounts, rep.Groups, rep.Changed)
	for _, f := range rep.Failed {
		fmt.Fprintln(out, "  not synced:", f)
	}
	return nil
}

func waitListening(ctx context.Context, addr string, served <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-served:
			return fmt.Errorf("the gateway stopped: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the gateway is not listening on %s", addr)
}

// watchSimulator prints every change of the simulator's accounts and
// groups until ctx ends.
func watchSimulator(ctx context.Context, out io.Writer, sim *axigensim.Server, domain string) {
	snapshot := func() map[string]string {
		m := map[string]string{}
		for _, a := range sim.Accounts(domain) {
			keys := make([]string, 0, len(a.Contact))
			for k := range a.Contact {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var b strings.Builder
			for _, k := range keys {
				fmt.Fprintf(&b, " %s=%q", k, a.Contact[k])
			}
			m["account "+a.Name] = strings.TrimSpace(b.String()) + " password-set=" + fmt.Sprint(a.Password != "") + pwMarker(a.Password)
		}
		for _, g := range sim.Groups(domain) {
			m["group "+g.Name] = "members=" + strings.Join(g.Members, ",")
		}
		return m
	}
	prev := snapshot()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := snapshot()
		if reflect.DeepEqual(cur, prev) {
			continue
		}
		stamp := time.Now().Format("15:04:05")
		for k, v := range cur {
			if old, ok := prev[k]; !ok {
				fmt.Fprintf(out, "%s Axigen: + %s %s\n", stamp, k, v)
			} else if old != v {
				fmt.Fprintf(out, "%s Axigen: ~ %s %s\n", stamp, k, v)
			}
		}
		for k := range prev {
			if _, ok := cur[k]; !ok {
				fmt.Fprintf(out, "%s Axigen: - %s\n", stamp, k)
			}
		}
		prev = cur
	}
}

// pwMarker changes when the password changes without showing it.
func pwMarker(pw string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(pw); i++ {
		h = (h ^ uint32(pw[i])) * 16777619
	}
	return fmt.Sprintf(" (password #%04x)", h&0xffff)
}
