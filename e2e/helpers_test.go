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
	"io"
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

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/internal/testenv/testpki"
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
	DataDir  string // holds admin.sock while it runs

	cmd     *exec.Cmd
	exited  chan struct{}
	log     *lockedBuffer
	stopped bool // by stop, which runs once
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
	g := &gatewayProc{cmd: cmd, exited: make(chan struct{}), log: &lockedBuffer{}, DataDir: filepath.Join(dir, "data")}
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
	if g.stopped {
		return // a test stopped it already, and checked how
	}
	g.stopped = true
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

// rawConn is an LDAP client that speaks BER over a plain socket, so tests
// can send what go-ldap never would and see every message the gateway sends
// back, unsolicited notices included.
type rawConn struct {
	net.Conn
}

func dialRaw(t testing.TB, url string) *rawConn {
	t.Helper()
	addr := strings.TrimPrefix(url, "ldap://")
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c}
}

func (c *rawConn) send(t testing.TB, b []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write to gateway: %v", err)
	}
}

// ldapMessage is a received LDAPMessage, decoded just enough to judge it.
type ldapMessage struct {
	ID           int64
	Op           ber.Tag // APPLICATION tag of protocolOp
	ResultCode   int64   // -1 when the op carries no LDAPResult
	Diagnostic   string
	ResponseName string // ExtendedResponse responseName
	// ResponseValue is an ExtendedResponse's responseValue (a WhoAmI
	// authzId).
	ResponseValue string
}

func (m ldapMessage) isNoticeOfDisconnection() bool {
	return m.ID == 0 && m.Op == ldap.ApplicationExtendedResponse && m.ResponseName == noticeOfDisconnectionOID
}

func (m ldapMessage) String() string {
	return fmt.Sprintf("{id %d op %d result %d %q name %q}", m.ID, m.Op, m.ResultCode, m.Diagnostic, m.ResponseName)
}

const noticeOfDisconnectionOID = "1.3.6.1.4.1.1466.20036"

// next reads one message; io.EOF (or a reset) when the gateway closed.
func (c *rawConn) next(d time.Duration) (ldapMessage, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	p, err := ber.ReadPacket(c)
	if err != nil {
		return ldapMessage{}, err
	}
	if len(p.Children) < 2 {
		return ldapMessage{}, fmt.Errorf("LDAPMessage with %d elements", len(p.Children))
	}
	id, _ := p.Children[0].Value.(int64)
	op := p.Children[1]
	m := ldapMessage{ID: id, Op: op.Tag, ResultCode: -1}
	if len(op.Children) >= 3 && op.Tag != ldap.ApplicationSearchResultEntry {
		if code, ok := op.Children[0].Value.(int64); ok {
			m.ResultCode = code
		}
		m.Diagnostic = op.Children[2].Data.String()
		for _, ch := range op.Children[3:] {
			if ch.ClassType == ber.ClassContext && ch.Tag == 10 {
				m.ResponseName = ch.Data.String()
			}
			if ch.ClassType == ber.ClassContext && ch.Tag == 11 {
				m.ResponseValue = ch.Data.String()
			}
		}
	}
	return m, nil
}

// drain reads messages until the connection ends or d passes, and
// returns them with the error that ended the reading.
func (c *rawConn) drain(d time.Duration) ([]ldapMessage, error) {
	deadline := time.Now().Add(d)
	var msgs []ldapMessage
	for {
		m, err := c.next(time.Until(deadline))
		if err != nil {
			return msgs, err
		}
		msgs = append(msgs, m)
	}
}

// isClosed reports whether err means the peer closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

func envelope(id int64, op *ber.Packet, controls ...*ber.Packet) []byte {
	env := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
	env.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID"))
	env.AppendChild(op)
	if len(controls) > 0 {
		cs := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "controls")
		for _, c := range controls {
			cs.AppendChild(c)
		}
		env.AppendChild(cs)
	}
	return env.Bytes()
}

func octets(s string) *ber.Packet {
	return ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, s, "")
}

func bindRequest(id int64, dn, pw string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "bind")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(3), "version"))
	op.AppendChild(octets(dn))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, pw, "simple"))
	return envelope(id, op)
}

func searchRequest(t testing.TB, id int64, base, filter string, attrs ...string) []byte {
	t.Helper()
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "search")
	op.AppendChild(octets(base))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.ScopeWholeSubtree), "scope"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.NeverDerefAliases), "deref"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "sizeLimit"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "timeLimit"))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "typesOnly"))
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		t.Fatalf("compile filter %s: %v", filter, err)
	}
	op.AppendChild(f)
	as := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	for _, a := range attrs {
		as.AppendChild(octets(a))
	}
	op.AppendChild(as)
	return envelope(id, op)
}

func addRequest(id int64, dn string, attrs map[string][]string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationAddRequest, nil, "add")
	op.AppendChild(octets(dn))
	list := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	for name, vals := range attrs {
		a := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attribute")
		a.AppendChild(octets(name))
		set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "values")
		for _, v := range vals {
			set.AppendChild(octets(v))
		}
		a.AppendChild(set)
		list.AppendChild(a)
	}
	op.AppendChild(list)
	return envelope(id, op)
}

// expectResult reads until the response to id and checks its result code.
func (c *rawConn) expectResult(t testing.TB, id int64, want int64) []ldapMessage {
	t.Helper()
	var msgs []ldapMessage
	for {
		m, err := c.next(15 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the result of message %d: %v (got %v)", id, err, msgs)
		}
		msgs = append(msgs, m)
		if m.ID == id && m.ResultCode >= 0 {
			if m.ResultCode != want {
				t.Fatalf("message %d: result %d (%s), want %d", id, m.ResultCode, m.Diagnostic, want)
			}
			return msgs
		}
		if m.isNoticeOfDisconnection() {
			t.Fatalf("waiting for message %d: notice of disconnection %v", id, m)
		}
	}
}

// gatewayServes proves the gateway still relays for a fresh client: alice
// binds and finds bob.
func gatewayServes(t testing.TB, url string) error {
	c, err := ldap.DialURL(url)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetTimeout(10 * time.Second)
	if err := c.Bind(aliceDN, slapd.AlicePassword); err != nil {
		return err
	}
	res, err := c.Search(ldap.NewSearchRequest(suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(uid=bob)", []string{"mail"}, nil))
	if err != nil {
		return err
	}
	if len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("mail") != "bob@example.com" {
		return fmt.Errorf("search for bob: %d entries", len(res.Entries))
	}
	return nil
}

// upstreamBack waits until slapd counts no more connections than base.
func upstreamBack(t testing.TB, s *slapd.Server, base int) {
	t.Helper()
	waitFor(t, 15*time.Second, "slapd connections back to baseline", func() error {
		n, err := s.CurrentConnections(context.Background())
		if err == nil && n > base {
			err = fmt.Errorf("slapd has %d client connections, baseline %d", n, base)
		}
		return err
	})
}

// freeLoopbackPorts returns n TCP ports free on 127.0.0.1 now, for
// processes that must know each other's ports before they start (a
// cluster's peers). Another process may take one in between; tests that
// use them fail loudly rather than hang if it does.
func freeLoopbackPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
