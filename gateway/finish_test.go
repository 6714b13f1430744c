package gateway

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// TestUnauthenticatedBindIsAnonymous proves that a simple bind with a DN
// and an empty password (RFC 4513 section 5.1.2), which the fake directory
// answers with success, leaves the session anonymous.
func TestUnauthenticatedBindIsAnonymous(t *testing.T) {
	f := startFakeUpstream(t, nil, nil)
	h := &recordingInterceptor{}
	_, url := serveGateway(t, Config{Dialer: fakeDialer{addr: f.ln.Addr().String()}, Interceptor: h})
	c, err := ldap.DialURL(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.UnauthenticatedBind("cn=admin,dc=example"); err != nil {
		t.Fatal(err)
	}
	mr := ldap.NewModifyRequest("cn=x,dc=example", nil)
	mr.Replace("description", []string{"y"})
	if err := c.Modify(mr); err != nil {
		t.Fatal(err)
	}
	// And a real bind after it is recorded.
	if err := c.Bind("cn=alice,dc=example", "secret"); err != nil {
		t.Fatal(err)
	}
	if err := c.Modify(mr); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.snapshot(); len(got) != 2 || got[0] != "" || got[1] != "cn=alice,dc=example" {
		t.Fatalf("sessions seen by the interceptor: %q, want [\"\" \"cn=alice,dc=example\"]", got)
	}
}

// slowDirectory answers every request like fakeUpstream, but holds each
// modify's answer until release is closed, and counts what it received.
type slowDirectory struct {
	ln      net.Listener
	release chan struct{}
	// hangUp, when set, makes the directory close the connection instead
	// of answering a modify once release is closed.
	hangUp bool

	mu       sync.Mutex
	received map[byte]int
}

func startSlowDirectory(t *testing.T) *slowDirectory {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &slowDirectory{ln: ln, release: make(chan struct{}), received: map[byte]int{}}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go d.serve(conn)
		}
	}()
	return d
}

func (d *slowDirectory) count(op byte) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.received[op]
}

func (d *slowDirectory) serve(conn net.Conn) {
	defer conn.Close()
	var wmu sync.Mutex
	w := func(b []byte) { wmu.Lock(); _, _ = conn.Write(b); wmu.Unlock() }
	r := ldapwire.NewReader(conn, 1<<20)
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		d.mu.Lock()
		d.received[m.Op]++
		d.mu.Unlock()
		switch m.Op {
		case ldapwire.TagBindRequest:
			w(encodeResponse(m.ID, ldapwire.TagBindResponse, 0, "", "", ""))
		case ldapwire.TagModifyRequest:
			id := m.ID
			go func() {
				<-d.release
				if d.hangUp {
					conn.Close()
					return
				}
				w(encodeResponse(id, ldapwire.TagModifyResponse, 0, "", "", ""))
			}()
		case ldapwire.TagExtendedRequest:
			w(encodeResponse(m.ID, ldapwire.TagExtendedResponse, ldap.LDAPResultSuccess, "", "", ""))
		case ldapwire.TagUnbindRequest:
			return
		}
	}
}

// interceptedClient serves a gateway in front of d with a recording
// interceptor, and connects a raw client to it.
func interceptedClient(t *testing.T, d *slowDirectory) (*recordingInterceptor, net.Conn) {
	t.Helper()
	h := &recordingInterceptor{}
	_, url := serveGateway(t, Config{Dialer: fakeDialer{addr: d.ln.Addr().String()}, Interceptor: h, OpTimeout: 30 * time.Second})
	c, err := net.Dial("tcp", url[len("ldap://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return h, c
}

func modifyMessage(id int64) []byte {
	op := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("cn=x,dc=example"))
	val := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("y"))
	attr := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("description"))
	attr = ldapwire.AppendTLV(attr, 0x31, val)
	change := ldapwire.AppendInt(nil, 0x0a, 2)
	change = ldapwire.AppendTLV(change, ldapwire.TagSequence, attr)
	op = ldapwire.AppendTLV(op, ldapwire.TagSequence, ldapwire.AppendTLV(nil, ldapwire.TagSequence, change))
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, op))
}

func cancelMessage(id, target int64) []byte {
	value := ldapwire.AppendTLV(nil, ldapwire.TagSequence, ldapwire.AppendInt(nil, ldapwire.TagInteger, target))
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendExtendedRequest(nil, ldapwire.OIDCancel, value))
}

func abandonMessage(id, target int64) []byte {
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendInt(nil, ldapwire.TagAbandonRequest, target))
}

// TestInterceptedWriteAlwaysFinishes proves that whatever the client does
// after an intercepted write (abandon it, cancel it, unbind, close the
// connection, bind again), the directory is asked nothing that could
// leave the write unanswered, and the write's Completion gets the
// directory's own answer.
func TestInterceptedWriteAlwaysFinishes(t *testing.T) {
	cases := []struct {
		name  string
		after func(t *testing.T, c net.Conn, r *ldapwire.Reader)
	}{
		{"abandon", func(t *testing.T, c net.Conn, _ *ldapwire.Reader) {
			_, _ = c.Write(abandonMessage(3, 2))
		}},
		{"cancel", func(t *testing.T, c net.Conn, r *ldapwire.Reader) {
			_, _ = c.Write(cancelMessage(3, 2))
			m, err := r.Next()
			if err != nil {
				t.Fatalf("no answer to the Cancel: %v", err)
			}
			if code, _ := ldapwire.ResultCode(m.OpContent); m.ID != 3 || code != ldap.LDAPResultCannotCancel {
				t.Fatalf("Cancel answered with ID %d result %d, want ID 3 cannotCancel", m.ID, code)
			}
		}},
		{"close", func(t *testing.T, c net.Conn, _ *ldapwire.Reader) { c.Close() }},
		{"unbind", func(t *testing.T, c net.Conn, _ *ldapwire.Reader) {
			_, _ = c.Write(ldapwire.AppendMessage(nil, 3, ldapwire.AppendTLV(nil, 0x42, nil)))
		}},
		{"abandon then bind", func(t *testing.T, c net.Conn, _ *ldapwire.Reader) {
			_, _ = c.Write(abandonMessage(3, 2))
			_, _ = c.Write(ldapwire.AppendMessage(nil, 4, ldapwire.AppendBindRequest(nil, "cn=bob", []byte("pw"))))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := startSlowDirectory(t)
			h, c := interceptedClient(t, d)
			r := ldapwire.NewReader(c, 1<<20)
			_, _ = c.Write(modifyMessage(2))
			waitUntil(t, 5*time.Second, "the directory has the modify", func() bool { return d.count(ldapwire.TagModifyRequest) == 1 })
			tc.after(t, c, r)
			// Whatever the client did has reached the gateway (the Cancel
			// was answered; the others are given a moment to arrive) before
			// the directory answers.
			time.Sleep(50 * time.Millisecond) // lets the client's message arrive; the assertions below do not depend on it
			if _, res := h.snapshot(); len(res) != 0 {
				t.Fatalf("the Completion ran before the directory answered: %+v", res)
			}
			close(d.release)
			waitUntil(t, 5*time.Second, "the Completion got the directory's answer", func() bool {
				_, res := h.snapshot()
				return len(res) == 1
			})
			if _, res := h.snapshot(); res[0].Unanswered || res[0].Code != ldap.LDAPResultSuccess {
				t.Fatalf("the Completion got %+v, want the directory's success", res[0])
			}
			if n := d.count(ldapwire.TagAbandonRequest); n != 0 {
				t.Errorf("the directory received %d Abandon requests for the intercepted write", n)
			}
			if n := d.count(ldapwire.TagExtendedRequest); n != 0 {
				t.Errorf("the directory received %d Cancel requests for the intercepted write", n)
			}
		})
	}
}

// TestAbandonPipelinedWithTheWrite proves that a write and its Abandon
// sent together reach the gateway as one read: the write must still be
// sent to the directory (the Abandon, answered by nobody, must not leave
// it buffered) and finish.
func TestAbandonPipelinedWithTheWrite(t *testing.T) {
	d := startSlowDirectory(t)
	close(d.release)
	h, c := interceptedClient(t, d)
	_, _ = c.Write(append(modifyMessage(2), abandonMessage(3, 2)...))
	waitUntil(t, 5*time.Second, "the Completion got the directory's answer", func() bool {
		_, res := h.snapshot()
		return len(res) == 1 && !res[0].Unanswered
	})
}

// TestStallTimeout proves that a client that begins a message and stops
// is disconnected with protocolError after the stall timeout, with or
// without an idle timeout, while an idle client between messages is not.
func TestStallTimeout(t *testing.T) {
	for _, idle := range []time.Duration{0, time.Minute} {
		d := startSlowDirectory(t)
		_, url := serveGateway(t, Config{Dialer: fakeDialer{addr: d.ln.Addr().String()}, IdleTimeout: idle, StallTimeout: 300 * time.Millisecond})
		c, err := net.Dial("tcp", url[len("ldap://"):])
		if err != nil {
			t.Fatal(err)
		}
		bind := ldapwire.AppendMessage(nil, 1, ldapwire.AppendBindRequest(nil, "cn=x", []byte("pw")))
		// A whole message first: the session is served and stays open.
		if _, err := c.Write(bind); err != nil {
			t.Fatal(err)
		}
		r := ldapwire.NewReader(c, 1<<20)
		if m, err := r.Next(); err != nil || m.ID != 1 {
			t.Fatalf("idle %v: bind answer %+v %v", idle, m, err)
		}
		start := time.Now()
		if _, err := c.Write(bind[:len(bind)-3]); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := r.Next()
		code, _ := ldapwire.ResultCode(m.OpContent)
		if err != nil || m.ID != 0 || code != ldap.LDAPResultProtocolError {
			t.Fatalf("idle %v: a stalled message got %+v (result %d), %v; want a Notice of Disconnection with protocolError", idle, m, code, err)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Fatalf("idle %v: disconnected after %v", idle, waited)
		}
		c.Close()
	}
}

// TestInterceptedWriteUnansweredWhenTheDirectoryHangsUp proves that when
// the upstream connection is lost before the directory answers, the
// Completion learns that the outcome is unknown, whether the client is
// still there or has already left.
func TestInterceptedWriteUnansweredWhenTheDirectoryHangsUp(t *testing.T) {
	for _, clientLeaves := range []bool{false, true} {
		d := startSlowDirectory(t)
		d.hangUp = true
		h, c := interceptedClient(t, d)
		_, _ = c.Write(modifyMessage(2))
		waitUntil(t, 5*time.Second, "the directory has the modify", func() bool { return d.count(ldapwire.TagModifyRequest) == 1 })
		if clientLeaves {
			c.Close()
		}
		close(d.release)
		waitUntil(t, 5*time.Second, "the Completion ran", func() bool {
			_, res := h.snapshot()
			return len(res) == 1
		})
		if _, res := h.snapshot(); !res[0].Unanswered {
			t.Fatalf("client leaves %v: the Completion got %+v, want Unanswered", clientLeaves, res[0])
		}
	}
}
