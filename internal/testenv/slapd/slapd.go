// Package slapd runs a real OpenLDAP slapd (Debian's package) in a temporary
// folder on free loopback ports, for tests, benchmarks and the demo.
//
// The server is configured with slapd.conf: an mdb database with the
// syncprov and memberof overlays, schemas core/cosine/inetorgperson/nis, ACLs
// under which users may write their own password and contact attributes, and
// back_monitor so that tests can count slapd's open connections. Data is
// loaded offline with slapadd -q before the first start, so 10,000 users
// take well under a second. slapd runs in the foreground as a child process
// and is killed if the test process dies (Pdeathsig).
//
// A system slapd started by the Debian package (port 389) is never used.
package slapd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/proctail"
	"github.com/ldapgate/ldapgate/internal/testenv/testpki"
)

// Options configure Start. The zero value gives dc=example,dc=com with the
// sample tree, plain LDAP only.
type Options struct {
	Suffix string // default dc=example,dc=com
	RootDN string // default cn=admin,<Suffix>
	RootPW string // default "admin-secret"

	// TLS adds an ldaps:// listener and enables StartTLS on the plain one,
	// with a certificate from PKI (a fresh one in the server's folder if nil).
	TLS bool
	PKI *testpki.PKI

	// LDIF holds extra entries (plain content records, no changetype)
	// loaded with slapadd after the sample tree.
	LDIF []string
	// Users generates uid=user00000..,ou=people entries with mail, cn, sn,
	// givenName, telephoneNumber and userPassword UserPassword(i).
	Users int
	// Groups generates cn=group00000..,ou=groups groupOfNames; user i is a
	// member of group i%Groups.
	Groups int

	// ProxyTo, if set, makes this slapd a back-ldap proxy for Suffix in
	// front of the given ldap:// URL instead of holding the data itself.
	ProxyTo string
	// ExtraConfig is appended to the database section of slapd.conf.
	ExtraConfig string
	// Empty starts with no entries at all (no sample tree, LDIF or
	// generated users): a syncrepl consumer's database, for one.
	Empty bool

	// Debug is slapd's -d level; default "none" (errors only, which is
	// what start-up failures are diagnosed with).
	Debug string
	// Logger receives slapd's stderr lines at debug level (nil: discarded).
	Logger *slog.Logger
	// StartTimeout bounds each start's wait for readiness; default 20s.
	StartTimeout time.Duration
}

// Server is a running (or stopped, see Kill) slapd.
type Server struct {
	URL      string // ldap://127.0.0.1:PORT
	LDAPSURL string // ldaps://127.0.0.1:PORT when Options.TLS, else ""
	Port     int
	TLSPort  int
	RootDN   string
	RootPW   string
	Suffix   string
	Dir      string // the temporary folder: slapd.conf, db/, certificates
	CAFile   string // CA that signed the server certificate ("" without TLS)
	PKI      *testpki.PKI

	confFile string
	debug    string
	logger   *slog.Logger
	timeout  time.Duration

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been reaped
	stderr  *proctail.Buffer
	stopped bool // Stop was called: the folder is gone
}

// Start configures and starts a slapd. Call Stop when done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if _, err := os.Stat(SlapdPath); err != nil {
		return nil, fmt.Errorf("slapd: %s not installed (apt-get install slapd ldap-utils): %w", SlapdPath, err)
	}
	if opts.Suffix == "" {
		opts.Suffix = "dc=example,dc=com"
	}
	if opts.RootDN == "" {
		opts.RootDN = "cn=admin," + opts.Suffix
	}
	if opts.RootPW == "" {
		opts.RootPW = "admin-secret"
	}
	if opts.Debug == "" {
		opts.Debug = "none"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 20 * time.Second
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "slapd-")
	if err != nil {
		return nil, fmt.Errorf("slapd: temp dir: %w", err)
	}
	s := &Server{
		RootDN: opts.RootDN, RootPW: opts.RootPW, Suffix: opts.Suffix, Dir: dir,
		confFile: filepath.Join(dir, "slapd.conf"), debug: opts.Debug, logger: logger,
		timeout: opts.StartTimeout,
	}
	if err := s.prepare(ctx, opts); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Ports are picked by the OS; another process may take one between our
	// probe and slapd's bind, so a bind failure is retried on new ports.
	const attempts = 5
	for i := 1; ; i++ {
		if s.Port, err = freePort(); err == nil && opts.TLS {
			s.TLSPort, err = freePort()
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.setURLs()
		err = s.launch(ctx)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errAddrInUse) || i == attempts {
			os.RemoveAll(dir)
			return nil, err
		}
		logger.Debug("slapd port taken, retrying", "port", s.Port, "attempt", i)
	}
}

// StartT starts a slapd for a test and stops it in t.Cleanup.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop slapd: %v", err)
		}
	})
	return s
}

func (s *Server) setURLs() {
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", s.Port)
	s.LDAPSURL = ""
	if s.TLSPort != 0 {
		s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", s.TLSPort)
	}
}

// prepare writes the configuration and loads the data offline.
func (s *Server) prepare(ctx context.Context, opts Options) error {
	p := configParams{Dir: s.Dir, Suffix: s.Suffix, RootDN: s.RootDN, RootPW: s.RootPW,
		ProxyTo: opts.ProxyTo, ExtraConfig: opts.ExtraConfig}
	if opts.TLS {
		pki := opts.PKI
		if pki == nil {
			var err error
			if pki, err = testpki.New(s.Dir); err != nil {
				return fmt.Errorf("slapd: %w", err)
			}
		}
		s.PKI, s.CAFile = pki, pki.CAFile
		p.CertFile, p.KeyFile, p.CAFile = pki.CertFile, pki.KeyFile, pki.CAFile
	}
	if err := os.WriteFile(s.confFile, []byte(slapdConf(p)), 0o600); err != nil {
		return fmt.Errorf("slapd: write config: %w", err)
	}
	if opts.ProxyTo != "" {
		return nil
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "db"), 0o700); err != nil {
		return fmt.Errorf("slapd: db dir: %w", err)
	}
	if opts.Empty {
		return nil
	}
	ldifPath := filepath.Join(s.Dir, "data.ldif")
	f, err := os.Create(ldifPath)
	if err != nil {
		return fmt.Errorf("slapd: create LDIF: %w", err)
	}
	_, err = io.WriteString(f, sampleLDIF(s.Suffix))
	for _, extra := range opts.LDIF {
		if err == nil {
			_, err = io.WriteString(f, "\n"+strings.TrimSpace(extra)+"\n\n")
		}
	}
	if err == nil {
		err = writeGeneratedLDIF(f, s.Suffix, firstRDNValue(s.Suffix), opts.Users, opts.Groups)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("slapd: write LDIF: %w", err)
	}
	cmd := exec.CommandContext(ctx, SlapaddPath, "-q", "-f", s.confFile, "-l", ldifPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("slapd: slapadd: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

var errAddrInUse = errors.New("address already in use")

// launch starts the slapd process on s.Port/s.TLSPort and waits until the
// root DN can bind.
func (s *Server) launch(ctx context.Context) error {
	urls := s.URL + "/"
	if s.LDAPSURL != "" {
		urls += " " + s.LDAPSURL + "/"
	}
	cmd := exec.Command(SlapdPath, "-d", s.debug, "-f", s.confFile, "-h", urls)
	cmd.Dir = s.Dir
	// Killed with us: a test binary that panics or is killed must not leave
	// slapd processes behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	tail := proctail.New(64<<10, "slapd", s.logger)
	cmd.Stdout = tail
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("slapd: start: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.stderr = cmd, exited, tail
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		select {
		case <-exited:
			out := tail.String()
			if strings.Contains(out, "errno=98") {
				return fmt.Errorf("slapd: port %d/%d: %w", s.Port, s.TLSPort, errAddrInUse)
			}
			return fmt.Errorf("slapd: exited during start-up (%s): %s", cmd.ProcessState, strings.TrimSpace(out))
		case <-ctx.Done():
			_ = s.Kill()
			return fmt.Errorf("slapd: not ready after %v (last error: %v): %s", s.timeout, lastErr, tail.String())
		case <-tick.C:
			if lastErr = s.ping(ctx); lastErr == nil {
				return nil
			}
		}
	}
}

func (s *Server) ping(ctx context.Context) error {
	c, err := s.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Bind(s.RootDN, s.RootPW)
}

// Dial opens an unbound plain connection to the server.
func (s *Server) Dial(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(d))
	if err != nil {
		return nil, fmt.Errorf("slapd: dial %s: %w", s.URL, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetTimeout(time.Until(dl))
	} else {
		c.SetTimeout(30 * time.Second)
	}
	return c, nil
}

// AdminConn opens a connection bound as the root DN. The caller closes it.
func (s *Server) AdminConn(ctx context.Context) (*ldap.Conn, error) {
	c, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Bind(s.RootDN, s.RootPW); err != nil {
		c.Close()
		return nil, fmt.Errorf("slapd: bind as %s: %w", s.RootDN, err)
	}
	return c, nil
}

// CurrentConnections is slapd's count of open client connections (from
// cn=Current,cn=Connections,cn=Monitor), not counting the connection that
// asks.
func (s *Server) CurrentConnections(ctx context.Context) (int, error) {
	n, err := s.monitorCounter(ctx, "cn=Current")
	return n - 1, err
}

// TotalConnections is slapd's count of the client connections it has
// accepted since it started (cn=Total,cn=Connections,cn=Monitor), the
// connection each call makes to ask included: two calls with nothing
// between them differ by one.
func (s *Server) TotalConnections(ctx context.Context) (int, error) {
	return s.monitorCounter(ctx, "cn=Total")
}

func (s *Server) monitorCounter(ctx context.Context, rdn string) (int, error) {
	c, err := s.AdminConn(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	dn := rdn + ",cn=Connections,cn=Monitor"
	res, err := c.Search(ldap.NewSearchRequest(dn,
		ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)",
		[]string{"monitorCounter"}, nil))
	if err != nil {
		return 0, fmt.Errorf("slapd: read cn=Monitor: %w", err)
	}
	if len(res.Entries) != 1 {
		return 0, fmt.Errorf("slapd: %s: %d entries", dn, len(res.Entries))
	}
	n, err := strconv.Atoi(res.Entries[0].GetAttributeValue("monitorCounter"))
	if err != nil {
		return 0, fmt.Errorf("slapd: %s monitorCounter: %w", dn, err)
	}
	return n, nil
}

// Load adds the entries of an LDIF (content records, or change records with
// changetype) as the root DN over LDAP, with ldapmodify -a, so overlays
// (memberof, syncprov) see the change.
func (s *Server) Load(ctx context.Context, ldif string) error {
	pwFile := filepath.Join(s.Dir, "rootpw")
	if err := os.WriteFile(pwFile, []byte(s.RootPW), 0o600); err != nil {
		return fmt.Errorf("slapd: write password file: %w", err)
	}
	cmd := exec.CommandContext(ctx, "ldapmodify", "-a", "-x", "-H", s.URL, "-D", s.RootDN, "-y", pwFile)
	cmd.Stdin = strings.NewReader(ldif)
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("slapd: ldapmodify: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// PID is the process id of the running slapd, or 0.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return proctail.PID(s.cmd, s.exited)
}

// Running reports whether the slapd process is alive.
func (s *Server) Running() bool { return s.PID() != 0 }

// Kill stops the slapd process at once (SIGKILL), as a crash would, keeping
// its data and ports for Restart.
func (s *Server) Kill() error { return s.halt(syscall.SIGKILL) }

// Halt stops the slapd process gracefully (SIGTERM), keeping its data and
// ports for Restart.
func (s *Server) Halt() error { return s.halt(syscall.SIGTERM) }

func (s *Server) halt(sig syscall.Signal) error {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	return proctail.Halt("slapd", cmd, exited, sig, 10*time.Second)
}

// Restart stops slapd if it runs and starts it again on the same ports with
// the same data.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return errors.New("slapd: restart after Stop")
	}
	if err := s.Halt(); err != nil {
		return err
	}
	// The port was ours a moment ago; a bind failure here would be a
	// lingering socket, so retry for a while rather than pick a new port.
	deadline := time.Now().Add(s.timeout)
	for {
		err := s.launch(ctx)
		if err == nil || !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops slapd and removes its folder. It is safe to call twice.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	err := s.Halt()
	if rerr := os.RemoveAll(s.Dir); err == nil && rerr != nil {
		err = fmt.Errorf("slapd: remove %s: %w", s.Dir, rerr)
	}
	return err
}

// Log is what slapd wrote to stderr lately (at most 64 KiB).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr == nil {
		return ""
	}
	return s.stderr.String()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("slapd: find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
