package axigen

import (
	"bytes"
	"io"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// countingProxy relays TCP connections to addr and counts the writes the
// client side sends (each arrives in one read: the commands are small).
type countingProxy struct {
	ln     net.Listener
	writes atomic.Int64
	wg     sync.WaitGroup
}

func newCountingProxy(t *testing.T, addr string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Add(2)
			go func() {
				defer p.wg.Done()
				defer up.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						p.writes.Add(1)
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() {
				defer p.wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return p
}

// TestApplyAccountPipelinesPerEntry: an update of one contact field of an
// existing account costs four round trips (LIST; the account's reads; the
// SET with its DONE; COMMIT) instead of one per command, and the commands
// are those a sequential client sends, in the same order; with
// NoPipelining each command waits for the answer to the one before it.
func TestApplyAccountPipelinesPerEntry(t *testing.T) {
	for _, tc := range []struct {
		name       string
		noPipeline bool
		trips      int64
	}{{"pipelined", false, 4}, {"one by one", true, 8}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, 1)
			putJohn(e.sim)
			proxy := newCountingProxy(t, e.sim.Addr())
			cfg := e.cfg
			cfg.Addr, cfg.NoPipelining = proxy.ln.Addr().String(), tc.noPipeline
			pool := NewPool(cfg, 1)
			t.Cleanup(func() { pool.Close() })
			client := NewClient(pool)
			ctx := testCtx(t)
			desired := withoutPassword(john)
			desired.Contact = maps.Clone(john.Contact)
			desired.Contact["phone"] = "+40 21 999"
			if _, err := client.ApplyAccount(ctx, testDomain, desired, ""); err != nil { // logs in, enters the domain
				t.Fatal(err)
			}
			before, counts := proxy.writes.Load(), e.commandCounts()
			desired.Contact["phone"] = "+40 21 998"
			if _, err := client.ApplyAccount(ctx, testDomain, desired, ""); err != nil {
				t.Fatal(err)
			}
			if n := proxy.writes.Load() - before; n != tc.trips {
				t.Errorf("%d round trips, want %d", n, tc.trips)
			}
			want := []string{`LIST Accounts "john"`, `UPDATE Account name "john"`, "SHOW RegistryInformation",
				"CONFIG ContactInfo", "SHOW", `SET phone "+40 21 998"`, "DONE", "COMMIT"}
			if got := e.commandsSince(counts); !slices.Equal(got, want) {
				t.Errorf("sent %q, want %q", got, want)
			}
			if a, _ := e.sim.Account(testDomain, "john"); a.Contact["phone"] != "+40 21 998" {
				t.Errorf("phone %q", a.Contact["phone"])
			}
		})
	}
}

// TestPipelinedRefusalStopsBeforeCommit: a refused SET sent with others
// and their DONE leaves the account unchanged: the COMMIT goes only after
// every command before it succeeded.
func TestPipelinedRefusalStopsBeforeCommit(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	ctx := testCtx(t)
	e.sim.FailMatching(regexp.MustCompile(`^SET firstName`), "Permission denied")
	desired := withoutPassword(john)
	desired.Contact = map[string]string{"firstName": "Johnny", "lastName": "Dough", "mobilePhone": "+40 700"}
	if _, err := e.client.ApplyAccount(ctx, testDomain, desired, ""); KindOf(err) != KindServer {
		t.Fatalf("got %v, want the server's refusal", err)
	}
	a, _ := e.sim.Account(testDomain, "john")
	if a.Contact["lastName"] != john.Contact["lastName"] || a.Contact["mobilePhone"] != john.Contact["mobilePhone"] {
		t.Errorf("a refused apply saved part of the change: %+v", a.Contact)
	}
	for _, c := range e.sim.Transcript(1).Commands() {
		if c == "COMMIT" {
			t.Errorf("COMMIT sent after a refused command")
		}
	}
}

// TestCheckPipelining: the check passes against the simulator, which reads
// commands sent ahead of their turn, and fails, saying what to set,
// against a server that drops them (here a relay that passes on only the
// first line of each write).
func TestCheckPipelining(t *testing.T) {
	e := newEnv(t, 1)
	e.sim.PutAccount(testDomain, axigensim.AccountState{Name: "postmaster", Password: "pm-pw"})
	ctx := testCtx(t)
	rc, err := e.client.CheckPipelining(ctx, testDomain)
	if err != nil || !rc.OK {
		t.Fatalf("against the simulator: %+v, %v", rc, err)
	}

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
			up, err := net.Dial("tcp", e.sim.Addr())
			if err != nil {
				c.Close()
				continue
			}
			go func() {
				defer up.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						first := buf[:n]
						if i := bytes.IndexByte(first, '\n'); i >= 0 {
							first = first[:i+1]
						}
						if _, err := up.Write(first); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { defer c.Close(); _, _ = io.Copy(c, up) }()
		}
	}()
	cfg := e.cfg
	cfg.Addr, cfg.CommandTimeout = ln.Addr().String(), 200*time.Millisecond
	pool := NewPool(cfg, 1)
	t.Cleanup(func() { pool.Close() })
	rc, err = NewClient(pool).CheckPipelining(ctx, testDomain)
	if err != nil {
		t.Fatal(err)
	}
	if rc.OK || !strings.Contains(rc.Detail, "NoPipelining") {
		t.Errorf("against a server that drops commands sent ahead: %+v", rc)
	}
}

// newTricklingProxy relays TCP connections to addr, passing the server's
// answers on one byte per write: every answer is split across reads.
func newTricklingProxy(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); defer up.Close(); _, _ = io.Copy(up, c) }()
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := up.Read(buf)
					for i := 0; i < n; i++ {
						if _, werr := c.Write(buf[i : i+1]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPipelinedAnswersSplitAcrossReads: answers that reach the client a
// byte at a time (a slow link, a proxy) are read as whole answers, in step
// with their commands: an update and a refused update of an existing
// account end as they do in one piece, and the session stays usable.
func TestPipelinedAnswersSplitAcrossReads(t *testing.T) {
	e := newEnv(t, 1)
	putJohn(e.sim)
	cfg := e.cfg
	cfg.Addr = newTricklingProxy(t, e.sim.Addr())
	pool := NewPool(cfg, 1)
	t.Cleanup(func() { pool.Close() })
	client := NewClient(pool)
	ctx := testCtx(t)
	desired := withoutPassword(john)
	desired.Contact = maps.Clone(john.Contact)
	desired.Contact["phone"] = "+40 21 997"
	desired.Contact["nickName"] = "Jo"
	if _, err := client.ApplyAccount(ctx, testDomain, desired, ""); err != nil {
		t.Fatal(err)
	}
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["phone"] != "+40 21 997" || a.Contact["nickName"] != "Jo" {
		t.Fatalf("contact %+v", a.Contact)
	}
	e.sim.FailMatching(regexp.MustCompile(`^SET phone`), "Permission denied")
	desired.Contact["phone"], desired.Contact["nickName"] = "+40 21 996", "Johnny"
	if _, err := client.ApplyAccount(ctx, testDomain, desired, ""); KindOf(err) != KindServer {
		t.Fatalf("got %v, want the server's refusal", err)
	}
	if a, _ := e.sim.Account(testDomain, "john"); a.Contact["nickName"] != "Jo" {
		t.Errorf("a refused apply saved part of the change: %+v", a.Contact)
	}
	st, found, err := client.ReadAccount(ctx, testDomain, "john")
	if err != nil || !found || st.Contact["phone"] != "+40 21 997" {
		t.Fatalf("read after the refusal: %+v, %v, %v", st, found, err)
	}
}
