package e2e

// Helpers of the standby tests (issue 7): two gateways paired by
// replication in front of one slapd and one Axigen simulator (those of a
// mirrorEnv, whose own gateway is stopped), sharing one LDAP listening
// address that whichever is primary holds.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/replica"
)

const standbySecret = "e2e-replication-secret-0123456789"

// pairNode is one gateway of the pair.
type pairNode struct {
	name      string
	dataDir   string
	logPath   string
	addrFile  string
	adminAddr string // host:port of its admin endpoint
	args      []string
	gw        *mirrorGateway
}

// gatewayPair is the mirrorEnv's slapd and simulator, with two gateways.
type gatewayPair struct {
	t      *testing.T
	e      *mirrorEnv
	listen string // ldap://127.0.0.1:PORT, held by the primary
	a, b   *pairNode
	// link carries b's requests to a (b following a); a reaches b directly.
	link *cuttableLink
}

// freeLoopbackPorts picks n distinct ports the OS says are free now: all
// are held until the last is picked, so none is handed out twice.
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

// newGatewayPair stops e's gateway and prepares two: a, to start as
// primary (--peer b), and b, to start as a's standby (--standby-of a), in
// the given replication mode and timings, with the same journal key.
func newGatewayPair(t *testing.T, e *mirrorEnv, mode string, takeover, syncTimeout time.Duration) *gatewayPair {
	t.Helper()
	e.stop()
	root := t.TempDir()
	secretFile := filepath.Join(root, "replication.secret")
	if err := os.WriteFile(secretFile, []byte(standbySecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	ports := freeLoopbackPorts(t, 3) // the shared listener, a's and b's admin endpoints
	p := &gatewayPair{t: t, e: e, listen: fmt.Sprintf("ldap://127.0.0.1:%d", ports[0])}
	// The flags of e's gateway (slapd, Axigen, schema, admin), without its
	// own listener, address file, data folder and log level.
	var base []string
	for i := 1; i < len(e.args); i++ {
		switch e.args[i] {
		case "--listen", "--addr-file", "--data-dir", "--log-level":
			i++
			continue
		}
		base = append(base, e.args[i])
	}
	mk := func(name string, adminPort int) *pairNode {
		n := &pairNode{name: name, dataDir: filepath.Join(root, name, "data"), logPath: filepath.Join(root, name+".log"),
			addrFile: filepath.Join(root, name, "addr"), adminAddr: fmt.Sprintf("127.0.0.1:%d", adminPort)}
		if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		// A standby needs a copy of the primary's journal key.
		if err := os.WriteFile(filepath.Join(n.dataDir, "journal.key"), []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return n
	}
	p.a, p.b = mk("a", ports[1]), mk("b", ports[2])
	common := func(n *pairNode) []string {
		return append(append([]string{"serve"}, base...),
			"--listen", p.listen, "--addr-file", n.addrFile, "--data-dir", n.dataDir,
			"--admin-listen", n.adminAddr, "--log-level", "info",
			"--replication", mode, "--replication-secret-file", secretFile,
			"--takeover-after", takeover.String(), "--replication-timeout", syncTimeout.String())
	}
	p.a.args = append(common(p.a), "--peer", "http://"+p.b.adminAddr)
	// b reaches a through a link the test can cut (a network partition).
	p.link = newCuttableLink(t, p.a.adminAddr)
	p.b.args = append(common(p.b), "--standby-of", "http://"+p.link.addr())
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range []*pairNode{p.a, p.b} {
				b, _ := os.ReadFile(n.logPath)
				if len(b) > 8000 {
					b = b[len(b)-8000:]
				}
				t.Logf("gateway %s log (tail):\n%s", n.name, b)
			}
		}
	})
	return p
}

// start runs n without waiting for anything (a standby does not listen).
func (p *gatewayPair) start(n *pairNode) {
	p.t.Helper()
	if n.gw != nil && n.gw.alive() {
		p.t.Fatalf("gateway %s is already running", n.name)
	}
	_ = os.Remove(n.addrFile)
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(logf, "===== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(gatewayBin, n.args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("start gateway %s: %v", n.name, err)
	}
	logf.Close()
	g := &mirrorGateway{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()
	n.gw = g
	p.t.Cleanup(func() {
		if g.alive() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-g.exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-g.exited
				p.t.Errorf("gateway %s did not stop within 20s of SIGTERM", n.name)
			}
		}
	})
}

// kill ends n with SIGKILL.
func (p *gatewayPair) kill(n *pairNode) {
	_ = n.gw.cmd.Process.Kill()
	<-n.gw.exited
}

// status asks n's admin endpoint who it is.
func (p *gatewayPair) status(n *pairNode) (replica.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return replica.FetchStatus(ctx, http.DefaultClient, "http://"+n.adminAddr, []byte(standbySecret))
}

// waitServing waits until n serves as primary and listens for clients.
func (p *gatewayPair) waitServing(n *pairNode, d time.Duration) {
	p.t.Helper()
	waitFor(p.t, d, "gateway "+n.name+" serving as primary", func() error {
		if !n.gw.alive() {
			p.t.Fatalf("gateway %s exited (%v)", n.name, n.gw.cmd.ProcessState)
		}
		data, err := os.ReadFile(n.addrFile)
		if err != nil || !strings.Contains(string(data), "ldap://") {
			return fmt.Errorf("not listening yet")
		}
		st, err := p.status(n)
		if err != nil {
			return err
		}
		if st.Role != replica.RolePrimary {
			return fmt.Errorf("role %s", st.Role)
		}
		return nil
	})
	n.gw.URL = p.listen
}

// waitFollowing waits until standby holds a complete copy of primary's
// journal, confirmed to the primary.
func (p *gatewayPair) waitFollowing(standby, primary *pairNode, d time.Duration) {
	p.t.Helper()
	waitFor(p.t, d, "gateway "+standby.name+" following "+primary.name, func() error {
		if !standby.gw.alive() {
			p.t.Fatalf("gateway %s exited (%v)", standby.name, standby.gw.cmd.ProcessState)
		}
		ss, err := p.status(standby)
		if err != nil {
			return err
		}
		ps, err := p.status(primary)
		if err != nil {
			return err
		}
		if ss.Role != replica.RoleStandby || ss.History == "" || ss.History != ps.History || ps.Acked < ss.Position {
			return fmt.Errorf("standby %+v, primary %+v", ss, ps)
		}
		return nil
	})
}

// view is the mirrorEnv as seen through gateway n (its journal and admin
// socket), for the env's drain check.
func (p *gatewayPair) view(n *pairNode) *mirrorEnv {
	e := p.e
	return &mirrorEnv{t: p.t, dir: e.dir, sim: e.sim, mapping: e.mapping, dataDir: n.dataDir,
		logPath: n.logPath, args: n.args, gw: n.gw, parent: e.root()}
}

// other is the gateway of the pair that is not n.
func (p *gatewayPair) other(n *pairNode) *pairNode {
	if n == p.a {
		return p.b
	}
	return p.a
}

// metric reads one sample (name and labels as printed) from n's /metrics.
func (p *gatewayPair) metric(n *pairNode, sample string) (float64, error) {
	resp, err := http.Get("http://" + n.adminAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", sample)
}

// waitMirroredBut waits until Axigen equals the directory except for the
// passwords of the accounts in unsure: the checker's difference lines
// about those are tolerated.
func waitMirroredBut(t testing.TB, e *mirrorEnv, d time.Duration, unsure map[string]bool) {
	t.Helper()
	waitFor(t, d, "Axigen equal to the directory (but for passwords of unknown outcome)", func() error {
		err := e.checkMirrored(false)
		if err == nil {
			return nil
		}
		for _, line := range strings.Split(err.Error(), "\n")[1:] {
			line = strings.TrimSpace(line)
			name, ok := strings.CutPrefix(line, "account ")
			name, _, _ = strings.Cut(name, ":")
			if !ok || !unsure[name] || !strings.HasSuffix(line, "Axigen password differs from the directory's") {
				return err
			}
		}
		return nil
	})
}

// stop ends n with SIGTERM; it must exit 0.
func (p *gatewayPair) stop(n *pairNode) {
	p.t.Helper()
	_ = n.gw.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.gw.exited:
		if code := n.gw.cmd.ProcessState.ExitCode(); code != 0 {
			p.t.Errorf("gateway %s exited with %d on SIGTERM", n.name, code)
		}
	case <-time.After(20 * time.Second):
		_ = n.gw.cmd.Process.Kill()
		<-n.gw.exited
		p.t.Errorf("gateway %s did not stop within 20s of SIGTERM", n.name)
	}
}

// waitMetric waits until n's /metrics sample satisfies ok.
func (p *gatewayPair) waitMetric(n *pairNode, sample string, d time.Duration, ok func(float64) bool) float64 {
	p.t.Helper()
	var v float64
	waitFor(p.t, d, sample+" on "+n.name, func() error {
		var err error
		if v, err = p.metric(n, sample); err != nil {
			return err
		}
		if !ok(v) {
			return fmt.Errorf("%s = %v", sample, v)
		}
		return nil
	})
	return v
}

// cuttableLink is a TCP relay to target that the test can cut: cut drops
// every connection at once, data in transit included, and holds new ones
// unanswered until mend, as a network partition would.
type cuttableLink struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func newCuttableLink(t testing.TB, target string) *cuttableLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &cuttableLink{t: t, ln: ln, target: target, conns: map[net.Conn]bool{}}
	go l.accept()
	t.Cleanup(func() { ln.Close(); l.mend() })
	return l
}

func (l *cuttableLink) addr() string { return l.ln.Addr().String() }

func (l *cuttableLink) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns[c] = true
		cut := l.cut
		l.mu.Unlock()
		if cut {
			continue // held: never answered, dropped by mend
		}
		go l.relay(c)
	}
}

func (l *cuttableLink) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", l.target, 2*time.Second)
	if err != nil {
		l.drop(c)
		return
	}
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		up.Close()
		l.drop(c)
		return
	}
	l.conns[up] = true
	l.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); l.drop(up); l.drop(c) }()
	_, _ = io.Copy(c, up)
	l.drop(c)
	l.drop(up)
}

func (l *cuttableLink) drop(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // reset: what is in transit is lost
	}
	c.Close()
}

// partition cuts every connection and holds new ones.
func (l *cuttableLink) partition() {
	l.mu.Lock()
	l.cut = true
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		l.drop(c)
	}
}

// mend drops the held connections and relays again.
func (l *cuttableLink) mend() {
	l.mu.Lock()
	l.cut = false
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		l.drop(c)
	}
}
