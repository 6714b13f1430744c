package netproxy

import (
	"bufio"
	"errors"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func newProxy(t *testing.T, target string, opts Options) *Proxy {
	t.Helper()
	p, err := Listen(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type lineConn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *lineConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &lineConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends line and waits up to d for its echo.
func (c *lineConn) roundTrip(line string, d time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := c.r.ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func mustEcho(t *testing.T, c *lineConn, line string) {
	t.Helper()
	got, err := c.roundTrip(line, 5*time.Second)
	if err != nil || got != line {
		t.Fatalf("echo of %q: %q, %v", line, got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyForwardsCutsAndHeals(t *testing.T) {
	p := newProxy(t, echoServer(t), Options{})
	before := dial(t, p.Addr())
	mustEcho(t, before, "one")

	p.Cut()
	// A black hole: no answer, no error, until the client gives up.
	if got, err := before.roundTrip("lost", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("through a cut proxy: %q, %v; want a timeout", got, err)
	}
	held := dial(t, p.Addr()) // accepted, never answered
	if got, err := held.roundTrip("held", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection through a cut proxy: %q, %v; want a timeout", got, err)
	}

	p.Heal()
	// What lost bytes is closed by the heal, so nothing stale arrives.
	for _, c := range []*lineConn{before, held} {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil || isTimeout(err) {
			t.Fatalf("a connection that lost bytes is still open after the heal (%v)", err)
		}
	}
	mustEcho(t, dial(t, p.Addr()), "after")
	if st := p.Stats(); st.Held != 1 || st.Dropped == 0 {
		t.Errorf("stats %+v: want one held connection and dropped bytes", st)
	}
}

func TestProxyBlocksOneSenderOneWay(t *testing.T) {
	// Names senders by the order they connect.
	var n int
	p := newProxy(t, echoServer(t), Options{Source: func(net.Conn) string {
		n++
		return []string{"", "a", "b"}[n%3]
	}})
	a := dial(t, p.Addr())
	mustEcho(t, a, "hello a")
	b := dial(t, p.Addr())
	mustEcho(t, b, "hello b")

	p.Block("a", FromTarget)
	// a's line reaches the target, its echo does not come back.
	if got, err := a.roundTrip("to target", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a with answers blocked: %q, %v", got, err)
	}
	mustEcho(t, b, "b unaffected")
	p.Unblock("a")
	mustEcho(t, b, "b still there")
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("a's lossy connection stays open after Unblock (%v)", err)
	}
}

func TestProcessSourceNamesTheDiallingProcess(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp: ProcessSource needs Linux")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to dial from another process")
	}
	target := echoServer(t)
	child := exec.Command(bash, "-c", "read -r go; exec 3<>/dev/tcp/127.0.0.1/$PORT; echo from-child >&3; read -r line <&3; echo \"$line\"; sleep 5")
	var mu sync.Mutex
	pids := map[int]string{os.Getpid(): "self"}
	names := make(chan string, 2)
	src := ProcessSource(func() map[int]string {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(pids)
	})
	p := newProxy(t, target, Options{Source: func(c net.Conn) string {
		s := src(c)
		names <- s
		return s
	}})
	_, port, _ := net.SplitHostPort(p.Addr())
	child.Env = append(os.Environ(), "PORT="+port)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	mu.Lock()
	pids[child.Process.Pid] = "child"
	mu.Unlock()
	// Only now that its pid is known does the child dial.
	if _, err := io.WriteString(in, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "from-child\n" {
		t.Fatalf("child read %q, %v", line, err)
	}
	if got := <-names; got != "child" {
		t.Errorf("the child's connection is named %q, want child", got)
	}
	mustEcho(t, dial(t, p.Addr()), "from self")
	if got := <-names; got != "self" {
		t.Errorf("this process's connection is named %q, want self", got)
	}
}

func TestNetworkPartitionCutsOnlyLinksBetweenGroups(t *testing.T) {
	n := NewNetwork()
	t.Cleanup(n.Close)
	target := echoServer(t)
	for _, name := range []string{"a", "b", "c"} {
		if _, err := n.Add(name, target); err != nil {
			t.Fatal(err)
		}
	}
	// This process plays a: its connections are a's.
	n.SetPID("a", os.Getpid())
	toB, toC := dial(t, n.Addr("b")), dial(t, n.Addr("c"))
	mustEcho(t, toB, "a-b")
	mustEcho(t, toC, "a-c")

	n.Partition([]string{"a", "b"}, []string{"c"})
	mustEcho(t, toB, "a-b during")
	if got, err := toC.roundTrip("a-c during", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a to c across the partition: %q, %v", got, err)
	}
	n.HealAll()
	toC = dial(t, n.Addr("c")) // the heal closed the one that lost bytes
	mustEcho(t, toC, "a-c healed")

	n.OneWay("a", "b")
	if got, err := dial(t, n.Addr("b")).roundTrip("a to b one way", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a to b with a's messages dropped: %q, %v", got, err)
	}
	mustEcho(t, toC, "a-c unaffected")
	n.HealAll()
	mustEcho(t, dial(t, n.Addr("b")), "a-b healed")
}
