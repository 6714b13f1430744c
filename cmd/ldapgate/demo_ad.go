package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
)

// The AD demo's domain controller gets a loopback address of its own, so
// that it never waits for the test suite's (127.0.0.2) or collides with it.
const demoADAddr = "127.0.0.4"

// demoADUser is one sample account of the AD demo.
type demoADUser struct{ cn, sam, given, sn, password, phone string }

func demoADUsers() []demoADUser {
	return []demoADUser{
		{"Alice Archer", "alice", "Alice", "Archer", "Alice-Passw0rd!", "+1 555 0101"},
		{"Bob Baker", "bob", "Bob", "Baker", "Bob-Passw0rd!", "+1 555 0102"},
		{"Carol Cooper", "carol", "Carol", "Cooper", "Carol-Passw0rd!", "+1 555 0103"},
	}
}

// runDemoAD is the demo against a real Active Directory: Samba's AD domain
// controller with sample users and groups, the Axigen simulator, and the
// gateway in front of the DC over LDAPS with the activedirectory dialect.
// It needs root (the DC's loopback address and ports 389/636) and the
// Samba packages (make deps).
func runDemoAD(ctx context.Context, out io.Writer, listen, axigenListen string, verbose bool) error {
	if err := samba.Installed(); err != nil {
		return fmt.Errorf("%w (make deps installs it)", err)
	}
	dir, err := os.MkdirTemp("", "ldapgate-demo-ad-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(out, "Starting Samba's Active Directory domain controller on %s (the first run provisions the domain, ~20 s)...\n", demoADAddr)
	dc, err := samba.Start(ctx, samba.Options{Addr: demoADAddr})
	if err != nil {
		return fmt.Errorf("start Samba AD: %w", err)
	}
	defer dc.Stop()
	people, groups := "OU=People,"+dc.BaseDN, "OU=Groups,"+dc.BaseDN
	if err := demoADSeed(ctx, dc, people, groups); err != nil {
		return err
	}

	const domain, axPassword = demoDomain, demoAxigenPassword
	sim, err := startDemoSimulator(ctx, axigenListen)
	if err != nil {
		return err
	}
	defer sim.Close()
	write := func(name, content string) string { return writeDemoFile(dir, name, content) }
	gwAddr := freeOr(listen)
	cfg := defaultConfig()
	cfg.Listen = []string{"ldap://" + gwAddr}
	// LDAPS to the DC, verified against its CA: AD takes password changes
	// only over an encrypted connection.
	cfg.Upstream.URLs = []string{dc.LDAPSURL}
	cfg.Upstream.CA = dc.CAFile
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Log.Level = "warn"
	if verbose {
		cfg.Log.Level = "debug"
	}
	// The defaults' Axigen settings (command time-out, batch), with the
	// simulator's address and credentials.
	ax := &cfg.Mirror.Axigen
	ax.Addr, ax.User, ax.PasswordFile, ax.Domain, ax.Sessions = sim.Addr(), "admin", write("axigen.pw", axPassword), domain, 2
	cfg.Mirror.Schema = schema.Config{Dialect: schema.ActiveDirectory,
		AccountBase: schema.DNList{people}, GroupBase: schema.DNList{groups}}
	cfg.Mirror.ServiceDN = dc.AdminDN
	cfg.Mirror.ServicePasswordFile = write("service.pw", dc.AdminPassword)
	cfg.Mirror.AdminDNs = []string{dc.AdminDN}
	cfg.Mirror.AdminGroup = "CN=Mail Admins," + groups
	if err := cfg.validate(); err != nil {
		return err
	}
	log := newLogger(cfg.Log, os.Stderr)

	// AD never gives passwords back: the initial sync creates the Axigen
	// accounts with random passwords; passwords set through the gateway
	// from now on are mirrored.
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
  directory (Samba AD)  %s  %s   (direct; %s / %s, CA %s)
  Axigen simulator      %s                (admin / %s, domain %s)
  gateway               %s      (dialect activedirectory)
`, dc.URL, dc.LDAPSURL, dc.AdminUPN, dc.AdminPassword, dc.CAFile, sim.Addr(), axPassword, domain, gw)

	aliceDN := "CN=Alice Archer," + people
	fmt.Fprintln(out, "\nAn administrator resets alice's password through the gateway (unicodePwd, UTF-16LE in quotes) ...")
	const newPW = "Alice-N3w-Passw0rd!"
	runDemoTool(ctx, out, "dn: "+aliceDN+"\nchangetype: modify\nreplace: unicodePwd\nunicodePwd:: "+
		base64.StdEncoding.EncodeToString(schema.EncodeUnicodePwd(newPW))+"\n",
		"ldapmodify", "-x", "-H", gw, "-D", dc.AdminDN, "-w", dc.AdminPassword)
	demoWait(ctx, out, 10*time.Second, "alice's password in Axigen", func() bool {
		a, ok := sim.Account(domain, "alice")
		return ok && a.Password == newPW
	})
	fmt.Fprintln(out, "... and alice, bound as herself, changes her own phone.")
	runDemoTool(ctx, out, "dn: "+aliceDN+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 0199\n",
		"ldapmodify", "-x", "-H", gw, "-D", aliceDN, "-w", newPW)
	demoWait(ctx, out, 10*time.Second, "alice's phone in Axigen", func() bool {
		a, ok := sim.Account(domain, "alice")
		return ok && a.Contact["phone"] == "+1 555 0199"
	})

	// The gateway's policy knows a session by the DN it bound with, so
	// the examples bind by DN (AD also takes UPNs and DOMAIN\name).
	bob, carol := "CN=Bob Baker,"+people, "CN=Carol Cooper,"+people
	fmt.Fprintf(out, `
Try these (changes Axigen receives are printed below as they arrive):

  ldapsearch -x -H %[1]s -D '%[2]s' -w '%[3]s' -b %[4]s -LLL '(sAMAccountName=bob)' sAMAccountName mail telephoneNumber
  # DirSync, as Axigen's AD connector follows the domain (note the cookie; pass it back with dirSync=0/0/COOKIE)
  ldapsearch -x -H %[1]s -D '%[2]s' -w '%[3]s' -b %[4]s -E '!dirSync=0/0' -LLL '(objectClass=user)' dn
  ldapsearch -x -H %[1]s -D '%[2]s' -w '%[3]s' -b %[5]s -E pr=2/noprompt -LLL dn
  # bob changes his own mobile (allowed: contact info)
  ldapmodify -x -H %[1]s -D '%[6]s' -w 'Bob-Passw0rd!' <<'EOF'
dn: %[6]s
changetype: modify
replace: mobile
mobile: +1 555 0177
EOF
  # refused by the gateway (result 50): bob may not change his account name
  ldapmodify -x -H %[1]s -D '%[6]s' -w 'Bob-Passw0rd!' <<'EOF'
dn: %[6]s
changetype: modify
replace: sAMAccountName
sAMAccountName: robert
EOF
  # carol is in Mail Admins (and AD's Account Operators): she may rename bob's account and disable it
  ldapmodify -x -H %[1]s -D '%[10]s' -w 'Carol-Passw0rd!' <<'EOF'
dn: %[6]s
changetype: modify
replace: sAMAccountName
sAMAccountName: robert
EOF
  ldapmodify -x -H %[1]s -D '%[10]s' -w 'Carol-Passw0rd!' <<'EOF'
dn: %[6]s
changetype: modify
replace: userAccountControl
userAccountControl: 514
EOF
  LDAPTLS_CACERT=%[8]s ldapwhoami -x -H %[9]s -D bob@%[7]s -w 'Bob-Passw0rd!'   # the DC itself, over LDAPS

Ctrl-C stops everything.
`, gw, dc.AdminDN, dc.AdminPassword, dc.BaseDN, people, bob, strings.ToLower(dc.Realm), dc.CAFile, dc.LDAPSURL, carol)

	watchSimulator(ctx, out, sim, domain)
	select {
	case err := <-served:
		return err
	case <-time.After(15 * time.Second):
		return nil
	}
}

// demoADSeed adds the sample tree straight to the DC: the OUs, three
// enabled accounts with passwords, "Staff" (alice, bob) and "Mail Admins"
// (carol), the gateway's admin group.
func demoADSeed(ctx context.Context, dc *samba.Server, people, groups string) error {
	c, err := dc.AdminConn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var adds []*ldap.AddRequest
	for _, ou := range []string{people, groups} {
		a := ldap.NewAddRequest(ou, nil)
		a.Attribute("objectClass", []string{"top", "organizationalUnit"})
		adds = append(adds, a)
	}
	for _, u := range demoADUsers() {
		a := ldap.NewAddRequest("CN="+u.cn+","+people, nil)
		a.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
		a.Attribute("sAMAccountName", []string{u.sam})
		a.Attribute("userPrincipalName", []string{u.sam + "@" + strings.ToLower(dc.Realm)})
		a.Attribute("givenName", []string{u.given})
		a.Attribute("sn", []string{u.sn})
		a.Attribute("displayName", []string{u.given + " " + u.sn})
		a.Attribute("mail", []string{u.sam + "@example.com"})
		a.Attribute("telephoneNumber", []string{u.phone})
		a.Attribute("unicodePwd", []string{string(schema.EncodeUnicodePwd(u.password))})
		a.Attribute("userAccountControl", []string{"512"})
		adds = append(adds, a)
	}
	for _, g := range []struct {
		cn, sam string
		members []string
	}{
		{"Staff", "staff", []string{"CN=Alice Archer," + people, "CN=Bob Baker," + people}},
		{"Mail Admins", "mailadmins", []string{"CN=Carol Cooper," + people}},
	} {
		a := ldap.NewAddRequest("CN="+g.cn+","+groups, nil)
		a.Attribute("objectClass", []string{"top", "group"})
		a.Attribute("sAMAccountName", []string{g.sam})
		a.Attribute("member", g.members)
		adds = append(adds, a)
	}
	for _, a := range adds {
		if err := c.Add(a); err != nil {
			return fmt.Errorf("demo data: add %s: %w", a.DN, err)
		}
	}
	// The gateway's admin group lets carol make account changes as far as
	// the gateway's policy goes; AD's own ACLs must let her too.
	ops := ldap.NewModifyRequest("CN=Account Operators,CN=Builtin,"+dc.BaseDN, nil)
	ops.Add("member", []string{"CN=Carol Cooper," + people})
	if err := c.Modify(ops); err != nil {
		return fmt.Errorf("demo data: make carol an account operator: %w", err)
	}
	return nil
}

// runDemoTool runs an ldap-utils command, its output going to out.
func runDemoTool(ctx context.Context, out io.Writer, stdin, name string, args ...string) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(out, "  %s failed: %v\n", name, err)
	}
}

// demoWait reports how long it took cond to hold, or that it did not.
func demoWait(ctx context.Context, out io.Writer, d time.Duration, what string, cond func() bool) {
	start := time.Now()
	for ctx.Err() == nil {
		if cond() {
			fmt.Fprintf(out, "  Axigen: %s updated, %d ms later\n", what, time.Since(start).Milliseconds())
			return
		}
		if time.Since(start) > d {
			fmt.Fprintf(out, "  %s has not reached Axigen after %v; run with --verbose to see why\n", what, d)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
