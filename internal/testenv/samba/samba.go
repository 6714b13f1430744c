// Package samba runs a real Active Directory domain controller (Debian's
// Samba AD DC) in a temporary folder on a dedicated loopback address, for
// tests and the demo of ldapgate's Active Directory dialect.
//
// Provisioning a domain takes several seconds, so it is done once per
// machine and kept as a tarball in a cache folder; each Start (and each
// Reset, which gives a fresh domain between test suites) unpacks it in about
// a second. Only Samba's LDAP service runs ("server services = ldap"): LDAP
// on port 389 with StartTLS, LDAPS on 636, global catalog on 3268/3269.
// Those ports are fixed, so each instance needs a loopback address of its
// own (127.0.0.2 by default), added to lo when missing (which needs root).
// A lock file per address makes a second Start on the same address, from
// this process or another one, wait until the first instance stops.
//
// Samba runs in the foreground as a child process and is killed if the
// calling process dies (Pdeathsig), with --maximum-runtime as a second
// safety net.
package samba

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/proctail"
)

// Paths of the Debian packages' programs.
const (
	SambaPath     = "/usr/sbin/samba"
	SambaToolPath = "/usr/bin/samba-tool"
)

// Packages are the Debian packages this package needs
// (apt-get install --no-install-recommends).
var Packages = []string{"samba", "samba-dsdb-modules", "samba-ad-provision", "samba-vfs-modules"}

// Options configure Start. The zero value gives the domain EXAMPLE.TEST
// (DC=example,DC=test) on 127.0.0.2.
type Options struct {
	// Addr is the loopback IPv4 address to serve on; default 127.0.0.2.
	Addr string
	// Realm (DNS domain, upper case) and Domain (NetBIOS name); defaults
	// EXAMPLE.TEST and EXAMPLE.
	Realm  string
	Domain string
	// AdminPassword is the Administrator's password; it must meet AD's
	// complexity rules. Default "Adm1n-Passw0rd!".
	AdminPassword string
	// CacheDir keeps provisioned domains between runs; default
	// $XDG_CACHE_HOME/ldapgate/samba (or ~/.cache/...).
	CacheDir string
	// StartTimeout bounds each start's wait for readiness; default 30s.
	StartTimeout time.Duration
	// MaxRuntime makes Samba exit on its own after this long, in case
	// nothing stops it; default 1h.
	MaxRuntime time.Duration
	// Logger receives Samba's output lines at debug level (nil: discarded).
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.Addr == "" {
		o.Addr = "127.0.0.2"
	}
	ip, err := netip.ParseAddr(o.Addr)
	if err != nil || !ip.Is4() || !ip.IsLoopback() {
		return fmt.Errorf("samba: address %q is not a loopback IPv4 address", o.Addr)
	}
	if o.Realm == "" {
		o.Realm = "EXAMPLE.TEST"
	}
	o.Realm = strings.ToUpper(o.Realm)
	if o.Domain == "" {
		o.Domain = "EXAMPLE"
	}
	if o.AdminPassword == "" {
		o.AdminPassword = "Adm1n-Passw0rd!"
	}
	if o.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		o.CacheDir = filepath.Join(base, "ldapgate", "samba")
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.MaxRuntime <= 0 {
		o.MaxRuntime = time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// hostName is the domain controller's name: dc1.<realm>.
const hostName = "dc1"

// Server is a running Samba AD domain controller.
type Server struct {
	Addr     string // the loopback address it serves on
	URL      string // ldap://ADDR (plain LDAP with StartTLS)
	LDAPSURL string // ldaps://ADDR
	Realm    string // EXAMPLE.TEST
	Domain   string // EXAMPLE
	BaseDN   string // DC=example,DC=test
	// AdminDN and AdminPassword are the domain Administrator's.
	AdminDN       string
	AdminPassword string
	// AdminUPN is Administrator@example.test, another way to bind.
	AdminUPN string
	HostName string // dc1.example.test, also in the certificate
	Dir      string // the temporary folder: etc/smb.conf, private/, tls/
	// CAFile is the PEM CA that signed the server certificate (for
	// LDAPTLS_CACERT or an --upstream-ca flag).
	CAFile string

	opts    Options
	tarball string
	tlsConf *tls.Config
	lock    *os.File

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	output  *proctail.Buffer
	stopped bool
}

// Installed reports whether Samba's AD DC programs are installed.
func Installed() error {
	for _, p := range []string{SambaPath, SambaToolPath} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("samba: %s not installed (apt-get install --no-install-recommends %s): %w",
				p, strings.Join(Packages, " "), err)
		}
	}
	return nil
}

// Start provisions the domain (or takes it from the cache) and starts the
// domain controller. Call Stop when done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	tarball, err := provisioned(ctx, opts)
	if err != nil {
		return nil, err
	}
	if err := ensureLoopback(ctx, opts.Addr); err != nil {
		return nil, err
	}
	lock, err := lockAddr(ctx, opts.Addr)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "samba-")
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("samba: temp dir: %w", err)
	}
	s := &Server{
		Addr: opts.Addr, URL: "ldap://" + opts.Addr, LDAPSURL: "ldaps://" + opts.Addr,
		Realm: opts.Realm, Domain: opts.Domain, BaseDN: realmDN(opts.Realm),
		AdminPassword: opts.AdminPassword,
		AdminUPN:      "Administrator@" + strings.ToLower(opts.Realm),
		HostName:      hostName + "." + strings.ToLower(opts.Realm),
		Dir:           dir,
		opts:          opts, tarball: tarball, lock: lock,
	}
	s.AdminDN = "CN=Administrator,CN=Users," + s.BaseDN
	fail := func(err error) (*Server, error) {
		os.RemoveAll(dir)
		lock.Close()
		return nil, err
	}
	if err := s.writeTLS(); err != nil {
		return fail(err)
	}
	if err := s.unpack(ctx); err != nil {
		return fail(err)
	}
	if err := s.launch(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// StartT starts a domain controller for a test and stops it in t.Cleanup.
// The test is skipped, not failed, when Samba is not installed.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	if err := Installed(); err != nil {
		t.Skip(err)
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start Samba AD: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop Samba AD: %v", err)
		}
	})
	return s
}

// realmDN turns EXAMPLE.TEST into DC=example,DC=test.
func realmDN(realm string) string {
	parts := strings.Split(strings.ToLower(realm), ".")
	for i, p := range parts {
		parts[i] = "DC=" + p
	}
	return strings.Join(parts, ",")
}

// unpack replaces the server's domain folders with the provisioned ones
// and writes its smb.conf.
func (s *Server) unpack(ctx context.Context) error {
	for _, sub := range []string{"private", "state", "cache", "bind-dns", "etc", "run", "log", "lock"} {
		if err := os.RemoveAll(filepath.Join(s.Dir, sub)); err != nil {
			return fmt.Errorf("samba: clear %s: %w", sub, err)
		}
	}
	for _, tdb := range []string{"gencache.tdb"} {
		_ = os.Remove(filepath.Join(s.Dir, tdb))
	}
	cmd := exec.CommandContext(ctx, "tar", "-C", s.Dir, "-xf", s.tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("samba: unpack %s: %w: %s", s.tarball, err, bytes.TrimSpace(out))
	}
	for _, sub := range []string{"run", "log", "cache", "lock"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("samba: %w", err)
		}
	}
	return os.WriteFile(s.confFile(), []byte(s.smbConf()), 0o644)
}

func (s *Server) confFile() string { return filepath.Join(s.Dir, "etc", "smb.conf") }

// smbConf keeps every path inside the server's folder, listens only on its
// address, and runs only the LDAP service.
func (s *Server) smbConf() string {
	d := s.Dir
	return fmt.Sprintf(`# Written by ldapgate's internal/testenv/samba for one test run.
[global]
	netbios name = %s
	realm = %s
	workgroup = %s
	server role = active directory domain controller
	server services = ldap
	idmap_ldb:use rfc2307 = yes
	bind interfaces only = yes
	interfaces = %s
	disable netbios = yes
	# A real AD accepts simple binds over plain LDAP by default; Samba's
	# default refuses them (result 8).
	ldap server require strong auth = no
	tls enabled = yes
	tls keyfile = %s
	tls certfile = %s
	tls cafile = %s
	private dir = %s
	binddns dir = %s
	lock directory = %s
	state directory = %s
	cache directory = %s
	pid directory = %s
	ncalrpc dir = %s
	winbindd socket directory = %s
	log file = %s
	log level = 1
	max log size = 1000
`, strings.ToUpper(hostName), s.Realm, s.Domain, s.Addr,
		filepath.Join(d, "tls", "key.pem"), filepath.Join(d, "tls", "cert.pem"), filepath.Join(d, "tls", "ca.pem"),
		filepath.Join(d, "private"), filepath.Join(d, "bind-dns"), filepath.Join(d, "lock"),
		filepath.Join(d, "state"), filepath.Join(d, "cache"), filepath.Join(d, "run"),
		filepath.Join(d, "run", "ncalrpc"), filepath.Join(d, "run", "winbindd"),
		filepath.Join(d, "log", "samba.log"))
}

// launch starts samba and waits until the Administrator can bind over LDAPS.
func (s *Server) launch(ctx context.Context) error {
	cmd := exec.Command(SambaPath, "-i", "-M", "single", "--debug-stdout",
		fmt.Sprintf("--maximum-runtime=%d", int(s.opts.MaxRuntime/time.Second)),
		"-s", s.confFile())
	cmd.Dir = s.Dir
	// Killed with us: a test binary that panics or is killed must not leave
	// a domain controller holding the address.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	tail := proctail.New(64<<10, "samba", s.opts.Logger)
	cmd.Stdout, cmd.Stderr = tail, tail
	// In interactive mode samba exits when its standard input ends: a pipe
	// we hold open keeps it running, and closes with us.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("samba: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("samba: start: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		stdin.Close()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.output = cmd, exited, tail
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, s.opts.StartTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-exited:
			return fmt.Errorf("samba: exited during start-up (%s): %s", cmd.ProcessState, strings.TrimSpace(tail.String()))
		case <-ctx.Done():
			_ = s.halt(syscall.SIGKILL)
			return fmt.Errorf("samba: not ready after %v (last error: %v): %s", s.opts.StartTimeout, lastErr, tail.String())
		case <-tick.C:
			c, err := s.AdminConn(ctx)
			if err == nil {
				c.Close()
				return nil
			}
			lastErr = err
		}
	}
}

// TLSConfig is a client configuration trusting only this server's CA,
// verifying its address.
func (s *Server) TLSConfig() *tls.Config { return s.tlsConf.Clone() }

// Dial opens an unbound LDAPS connection.
func (s *Server) Dial(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(s.TLSConfig()))
	if err != nil {
		return nil, fmt.Errorf("samba: dial %s: %w", s.LDAPSURL, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetTimeout(time.Until(dl))
	} else {
		c.SetTimeout(30 * time.Second)
	}
	return c, nil
}

// AdminConn opens an LDAPS connection bound as the Administrator. The
// caller closes it.
func (s *Server) AdminConn(ctx context.Context) (*ldap.Conn, error) {
	c, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Bind(s.AdminDN, s.AdminPassword); err != nil {
		c.Close()
		return nil, fmt.Errorf("samba: bind as %s: %w", s.AdminDN, err)
	}
	return c, nil
}

// PID is the process id of the running samba, or 0.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proctail.PID(s.cmd, s.exited)
}

// Log is what Samba wrote lately (at most 64 KiB).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.output == nil {
		return ""
	}
	return s.output.String()
}

// Kill stops samba at once (SIGKILL), as a crash would, keeping its data
// for Restart.
func (s *Server) Kill() error { return s.halt(syscall.SIGKILL) }

// Restart stops samba if it runs and starts it again with the same data.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.running(); err != nil {
		return err
	}
	if err := s.halt(syscall.SIGTERM); err != nil {
		return err
	}
	return s.launch(ctx)
}

// Reset gives a fresh domain, as provisioned: every change since Start is
// gone. It restarts samba (about a second).
func (s *Server) Reset(ctx context.Context) error {
	if err := s.running(); err != nil {
		return err
	}
	if err := s.halt(syscall.SIGTERM); err != nil {
		return err
	}
	if err := s.unpack(ctx); err != nil {
		return err
	}
	return s.launch(ctx)
}

func (s *Server) running() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("samba: the server was stopped")
	}
	return nil
}

// Stop stops samba, removes its folder and frees its address. It is safe
// to call twice.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	err := s.halt(syscall.SIGTERM)
	if rerr := os.RemoveAll(s.Dir); err == nil && rerr != nil {
		err = fmt.Errorf("samba: remove %s: %w", s.Dir, rerr)
	}
	s.lock.Close() // releases the address lock
	return err
}

func (s *Server) halt(sig syscall.Signal) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	return proctail.Halt("samba", cmd, exited, sig, 10*time.Second)
}
