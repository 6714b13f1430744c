// Package e2e holds end-to-end tests: the built ldapgate binary in front of
// real slapd instances, driven by real clients (ldap-utils, go-ldap, raw
// sockets).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
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

	"github.com/ldapgate/ldapgate/integration/testpki"
)

// Built once in TestMain and shared by every test of the package.
var (
	gatewayBin string       // the ldapgate binary built from this checkout
	testPKI    *testpki.PKI // CA + loopback certificate for slapd and the gateway
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "ldapgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if gatewayBin, err = buildGateway(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if testPKI, err = testpki.New(tmp); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// buildGateway builds ./cmd/ldapgate from the module root, so the tests work
// from a clean checkout without `make build`.
func buildGateway(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "ldapgate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ldapgate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ldapgate: %w\n%s", err, out)
	}
	return bin, nil
}

// gatewayProc is a running `ldapgate serve`.
type gatewayProc struct {
	URL      string // ldap://127.0.0.1:PORT
	LDAPSURL string // ldaps://127.0.0.1:PORT
	PID      int

	cmd    *exec.Cmd
	exited chan struct{}
	log    *lockedBuffer
}

// startGateway runs the gateway with a plain and an LDAPS listener on
// OS-chosen ports, the test certificate, a fresh data folder, and the given
// extra flags (at least one --upstream). It is stopped with SIGTERM at the
// end of the test, which must make it exit cleanly.
func startGateway(t testing.TB, extra ...string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	args := []string{"serve",
		"--listen", "ldap://127.0.0.1:0", "--listen", "ldaps://127.0.0.1:0",
		"--tls-cert", testPKI.CertFile, "--tls-key", testPKI.KeyFile,
		"--data-dir", filepath.Join(dir, "data"), "--addr-file", addrFile,
		"--log-level", "debug",
	}
	args = append(args, extra...)
	cmd := exec.Command(gatewayBin, args...)
	// Settings must come from the flags alone.
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	g := &gatewayProc{cmd: cmd, exited: make(chan struct{}), log: &lockedBuffer{}}
	cmd.Stdout = g.log
	cmd.Stderr = g.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	g.PID = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()
	t.Cleanup(func() { g.stop(t) })

	deadline := time.Now().Add(20 * time.Second)
	for {
		data, err := os.ReadFile(addrFile)
		if err == nil {
			for _, line := range strings.Fields(string(data)) {
				switch {
				case strings.HasPrefix(line, "ldap://"):
					g.URL = line
				case strings.HasPrefix(line, "ldaps://"):
					g.LDAPSURL = line
				}
			}
			if g.URL == "" || g.LDAPSURL == "" {
				t.Fatalf("address file %q lacks an ldap:// or ldaps:// URL", data)
			}
			return g
		}
		select {
		case <-g.exited:
			t.Fatalf("gateway exited during start-up (%v):\n%s", cmd.ProcessState, g.log.String())
		case <-time.After(20 * time.Millisecond): // polling interval for the file
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway wrote no address file within 20s:\n%s", g.log.String())
		}
	}
}

func withoutLDAPGateEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LDAPGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

// alive reports whether the gateway process is still running.
func (g *gatewayProc) alive() bool {
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

func (g *gatewayProc) requireAlive(t testing.TB) {
	t.Helper()
	if !g.alive() {
		t.Fatalf("gateway died (%v); its log:\n%s", g.cmd.ProcessState, g.log.tail(8000))
	}
}

func (g *gatewayProc) stop(t testing.TB) {
	if t.Failed() {
		t.Logf("gateway log (tail):\n%s", g.log.tail(6000))
	}
	if !g.alive() {
		t.Errorf("gateway had already exited: %v", g.cmd.ProcessState)
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("gateway exited with %d on SIGTERM", code)
		}
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
		t.Errorf("gateway did not stop within 15s of SIGTERM")
	}
}

// rssKiB is the gateway's resident set size from /proc.
func (g *gatewayProc) rssKiB(t testing.TB) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.PID))
	if err != nil {
		t.Fatalf("read gateway status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("parse VmRSS %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// lockedBuffer collects a process's output; the process writes while the
// test may read.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v: %v", what, d, err)
		}
		time.Sleep(25 * time.Millisecond) // polling interval, not synchronisation
	}
}

// toolResult is what an ldap-utils command printed (stdout and stderr on
// one pipe, in the order written) and its exit code.
type toolResult struct {
	Out  string
	Code int
}

// clientEnv makes ldap-utils trust only the test CA and demand a valid
// certificate, and keeps a user's ~/.ldaprc out of the way.
func clientEnv(home string) []string {
	env := []string{
		"LDAPTLS_CACERT=" + testPKI.CAFile,
		"LDAPTLS_REQCERT=demand",
		"HOME=" + home,
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "LANG=") {
			env = append(env, kv)
		}
	}
	return env
}

// runTool runs an ldap-utils command with a 30s limit.
func runTool(t testing.TB, stdin string, name string, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = clientEnv(os.TempDir())
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", name, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish within 30s; printed:\n%s", name, args, out.String())
	}
	return toolResult{Out: out.String(), Code: code}
}

// streamingTool is a long-running ldap-utils command (ldapsearch -E sync=rp)
// whose output is read as it comes.
type streamingTool struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

func startStreamingTool(t testing.TB, name string, args ...string) *streamingTool {
	t.Helper()
	// stdbuf: ldapsearch's stdout is a pipe here, which libc would buffer
	// fully; the test must see each entry as it arrives.
	cmd := exec.Command("stdbuf", append([]string{"-oL", name}, args...)...)
	cmd.Env = clientEnv(os.TempDir())
	st := &streamingTool{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = st.out
	cmd.Stderr = st.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = cmd.Wait()
		close(st.exited)
	}()
	t.Cleanup(st.kill)
	return st
}

// waitOutput waits until the output contains want n times.
func (st *streamingTool) waitOutput(t testing.TB, want string, n int) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("output with %d× %q", n, want), func() error {
		out := st.out.String()
		if strings.Count(out, want) >= n {
			return nil
		}
		select {
		case <-st.exited:
			return fmt.Errorf("command exited (%v) having printed:\n%s", st.cmd.ProcessState, out)
		default:
		}
		return fmt.Errorf("printed so far:\n%s", out)
	})
}

func (st *streamingTool) kill() {
	select {
	case <-st.exited:
	default:
		_ = st.cmd.Process.Kill()
		<-st.exited
	}
}

// diffText shows the first differing line of two outputs, with context.
func diffText(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y || i >= len(la) || i >= len(lb) {
			return fmt.Sprintf("first difference at line %d:\n  direct:  %q\n  gateway: %q", i+1, x, y)
		}
	}
	return "no difference"
}

// adminConn is a go-ldap connection bound as dn.
func bindConn(t testing.TB, url, dn, pw string) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(url, ldap.DialWithTLSConfig(testPKI.TLSConfig()))
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetTimeout(30 * time.Second)
	if err := c.Bind(dn, pw); err != nil {
		t.Fatalf("bind %s at %s: %v", dn, url, err)
	}
	return c
}

// lines reads s line by line (for output filters).
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// modifyDescription replaces an entry's description.
func modifyDescription(c *ldap.Conn, dn, desc string) error {
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace("description", []string{desc})
	if err := c.Modify(m); err != nil {
		return fmt.Errorf("modify %s: %w", dn, err)
	}
	return nil
}
