package gateway

import (
	"bufio"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// silentUpstream is a minimal directory on in-memory pipes that answers
// binds and (unless noModify) modifies with success and never answers a
// search, as slapd does for a search abandoned by the client or by a
// later bind. It records the requests it sees.
type silentUpstream struct {
	noModify bool
	notice   chan struct{} // closed: send a Notice of Disconnection and hang up

	mu   sync.Mutex
	seen []byte // the requests' tags, in order
}

func (f *silentUpstream) Dial(context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	go f.serve(s)
	return c, nil
}

func (f *silentUpstream) serve(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	w := bufio.NewWriter(c)
	write := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		_, _ = w.Write(b)
		_ = w.Flush()
	}
	if f.notice != nil {
		go func() {
			<-f.notice
			write(ldapwire.Notice(ldap.LDAPResultUnavailable, "directory going down"))
			c.Close()
		}()
	}
	r := ldapwire.NewReader(c, 1<<20)
	for {
		m, err := r.Next()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.seen = append(f.seen, m.Op)
		f.mu.Unlock()
		switch {
		case m.Op == ldapwire.TagBindRequest:
			write(encodeResponse(m.ID, ldapwire.TagBindResponse, 0, "", "", ""))
		case m.Op == ldapwire.TagModifyRequest && !f.noModify:
			write(encodeResponse(m.ID, ldapwire.TagModifyResponse, 0, "", "", ""))
		}
	}
}

func (f *silentUpstream) saw(tag byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.seen {
		if t == tag {
			return true
		}
	}
	return false
}

// testClient is a raw LDAP client of the gateway.
type testClient struct {
	t    *testing.T
	conn net.Conn
	r    *ldapwire.Reader
}

func dialGateway(t *testing.T, cfg Config) (*Server, *testClient) {
	t.Helper()
	srv, url := serveGateway(t, cfg)
	c, err := net.Dial("tcp", url[len("ldap://"):])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return srv, &testClient{t: t, conn: c, r: ldapwire.NewReader(c, 1<<20)}
}

func (c *testClient) send(msgs ...[]byte) {
	c.t.Helper()
	var b []byte
	for _, m := range msgs {
		b = append(b, m...)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next message and its result.
func (c *testClient) next() (ldapwire.Message, ldapwire.Result) {
	c.t.Helper()
	m, err := c.r.Next()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	res, _ := ldapwire.DecodeResult(m.OpContent)
	return m, res
}

func bindMsg(id int64, dn, password string) []byte {
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendBindRequest(nil, dn, []byte(password)))
}

func saslBindMsg(id int64, mechanism string) []byte {
	var b []byte
	b = ldapwire.AppendInt(b, ldapwire.TagInteger, 3)
	b = ldapwire.AppendTLV(b, ldapwire.TagOctetString, nil)
	b = ldapwire.AppendTLV(b, 0xa3, ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(mechanism)))
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendTLV(nil, ldapwire.TagBindRequest, b))
}

func abandonMsg(id, target int64) []byte {
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendInt(nil, ldapwire.TagAbandonRequest, target))
}

func searchMsg(id int64, base string) []byte {
	var b []byte
	b = ldapwire.AppendTLV(b, ldapwire.TagOctetString, []byte(base))
	b = ldapwire.AppendInt(b, ldapwire.TagEnumerated, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagEnumerated, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagInteger, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagInteger, 0)
	b = append(b, 0x01, 0x01, 0x00)
	b = append(b, ldapwire.FilterPresent("objectClass")...)
	b = ldapwire.AppendTLV(b, ldapwire.TagSequence, nil)
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendTLV(nil, ldapwire.TagSearchRequest, b))
}

func modifyMsg(id int64, dn string) []byte {
	var pa []byte
	pa = ldapwire.AppendTLV(pa, ldapwire.TagOctetString, []byte("description"))
	pa = ldapwire.AppendTLV(pa, ldapwire.TagSet, ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("x")))
	var ch []byte
	ch = ldapwire.AppendInt(ch, ldapwire.TagEnumerated, 2)
	ch = ldapwire.AppendTLV(ch, ldapwire.TagSequence, pa)
	var body []byte
	body = ldapwire.AppendTLV(body, ldapwire.TagOctetString, []byte(dn))
	body = ldapwire.AppendTLV(body, ldapwire.TagSequence, ldapwire.AppendTLV(nil, ldapwire.TagSequence, ch))
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, body))
}

// recordingInterceptor lets every write pass, records who sent it and
// each Completion's result, and counts them.
type recordingInterceptor struct {
	before     func() // run in Intercept, before it returns
	mu         sync.Mutex
	boundDNs   []string
	results    []Result
	completed  atomic.Int32
	unanswered atomic.Int32
}

func (r *recordingInterceptor) Intercept(_ context.Context, info SessionInfo, _ *WriteRequest) (Completion, *Result) {
	r.mu.Lock()
	r.boundDNs = append(r.boundDNs, info.BoundDN)
	r.mu.Unlock()
	if r.before != nil {
		r.before()
	}
	return func(_ context.Context, res Result) {
		r.mu.Lock()
		r.results = append(r.results, res)
		r.mu.Unlock()
		if res.Unanswered {
			r.unanswered.Add(1)
		}
		r.completed.Add(1)
	}, nil
}

// snapshot returns the bound DNs and the results recorded so far.
func (r *recordingInterceptor) snapshot() ([]string, []Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.boundDNs...), append([]Result(nil), r.results...)
}

// A write abandoned and never answered still gets its Completion: its
// Abandon is not relayed and a bind waits for it (an intercepted write
// always finishes); when the op timeout expires, the Completion is told
// the outcome is unknown, so its journal record never stays prepared.
func TestAbandonedWriteNeverAnsweredStillCompletes(t *testing.T) {
	ic := &recordingInterceptor{}
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{noModify: true}, Interceptor: ic, OpTimeout: 300 * time.Millisecond})
	c.send(modifyMsg(1, "uid=x,dc=example"), abandonMsg(2, 1), bindMsg(3, "", ""))
	waitUntil(t, 5*time.Second, "the write's Completion", func() bool { return ic.completed.Load() == 1 })
	if ic.unanswered.Load() != 1 {
		t.Fatal("the write's Completion was not told the outcome is unknown")
	}
}

// Operations sent before a bind, which the directory abandons on the bind
// and never answers, do not keep the session busy for ever: a bind's
// answer releases them, their room is free, and the idle timeout ends
// the session. (A bind waits for intercepted writes, so none is among
// them: TestAbandonedWriteNeverAnsweredStillCompletes.)
func TestBindReleasesOperationsSentBeforeIt(t *testing.T) {
	ic := &recordingInterceptor{}
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{noModify: true}, Interceptor: ic,
		MaxOpsPerConn: 4, IdleTimeout: 300 * time.Millisecond})
	c.send(searchMsg(1, "dc=example"), searchMsg(2, "dc=example"), searchMsg(3, "dc=example"), bindMsg(4, "", ""))
	if m, _ := c.next(); m.ID != 4 {
		t.Fatalf("got id %d, want the bind's answer", m.ID)
	}
	// Four more searches fit: the room of the released ones is free.
	c.send(searchMsg(5, "dc=example"), searchMsg(6, "dc=example"), searchMsg(7, "dc=example"), bindMsg(8, "", ""))
	if m, _ := c.next(); m.ID != 8 {
		t.Fatalf("got id %d, want the second bind's answer", m.ID)
	}
	m, res := c.next()
	if m.ID != 0 || res.Code != ldap.LDAPResultUnavailable {
		t.Fatalf("got id %d code %d, want the idle timeout's notice", m.ID, res.Code)
	}
}

// A client whose requests wait for room in a full table (the directory
// answers nothing) and that then leaves ends its session: the reading
// goroutine does not block without a deadline.
func TestSessionWaitingForRoomEndsWhenTheClientLeaves(t *testing.T) {
	srv, c := dialGateway(t, Config{Dialer: &silentUpstream{}, MaxOpsPerConn: 2})
	c.send(searchMsg(1, "dc=example"), searchMsg(2, "dc=example"), searchMsg(3, "dc=example"))
	waitUntil(t, 5*time.Second, "the session", func() bool { return srv.Stats().Connections == 1 })
	c.conn.Close()
	waitUntil(t, 5*time.Second, "the session to end after its client left", func() bool { return srv.Stats().Connections == 0 })
}

// Clients that search and abandon (the directory never answers an
// abandoned search) many more times than MaxOpsPerConn on one connection
// keep their session.
func TestManyAbandonedSearchesKeepTheSession(t *testing.T) {
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{}, MaxOpsPerConn: 8})
	id := int64(1)
	for range 200 {
		c.send(searchMsg(id, "dc=example"), abandonMsg(id+1, id))
		id += 2
	}
	c.send(bindMsg(id, "", ""))
	m, res := c.next()
	if m.ID != id || m.Op != ldapwire.TagBindResponse {
		t.Fatalf("got id %d op 0x%02x (%q), want the bind's answer", m.ID, m.Op, res.Diagnostic)
	}
}

// A write whose interception outlasts the session (the directory sent a
// Notice of Disconnection meanwhile) still gets its Completion, and the
// directory never sees it.
func TestCompletionRunsWhenTheSessionClosesDuringIntercept(t *testing.T) {
	up := &silentUpstream{notice: make(chan struct{})}
	client := make(chan *testClient, 1)
	noticed := make(chan ldapwire.Message, 1)
	ic := &recordingInterceptor{}
	ic.before = func() {
		// The directory leaves while the write is being journaled; the
		// session passes its notice on once it is closing.
		close(up.notice)
		m, _ := (<-client).r.Next()
		noticed <- m
	}
	_, c := dialGateway(t, Config{Dialer: up, Interceptor: ic})
	c.send(bindMsg(1, "", ""))
	c.next()
	client <- c
	c.send(modifyMsg(2, "uid=x,dc=example"))
	if m := <-noticed; m.ID != 0 {
		t.Fatalf("got id %d, want the directory's notice", m.ID)
	}
	waitUntil(t, 5*time.Second, "the write's Completion", func() bool { return ic.completed.Load() == 1 })
	if ic.unanswered.Load() != 0 {
		t.Fatal("the Completion of a write never sent was told its outcome is unknown")
	}
	if up.saw(ldapwire.TagModifyRequest) {
		t.Fatal("the write reached the directory after the session closed")
	}
}

// A relayed request followed, in the same read, by one the gateway
// answers itself (a refused SASL mechanism) still reaches the directory.
func TestRelayedRequestIsFlushedBeforeALocalAnswer(t *testing.T) {
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{}})
	c.send(modifyMsg(1, "uid=x,dc=example"), saslBindMsg(2, "GSSAPI"))
	got := map[int64]bool{}
	for len(got) < 2 {
		m, _ := c.next()
		got[m.ID] = true
	}
	if !got[1] || !got[2] {
		t.Fatalf("answers for %v, want 1 and 2", got)
	}

	// The same for an Abandon (which has no answer).
	up := &silentUpstream{}
	_, c = dialGateway(t, Config{Dialer: up})
	c.send(searchMsg(1, "dc=example"), abandonMsg(2, 1), saslBindMsg(3, "GSSAPI"))
	if m, _ := c.next(); m.ID != 3 {
		t.Fatalf("got id %d, want the refused bind's answer", m.ID)
	}
	waitUntil(t, 5*time.Second, "the abandon to reach the directory", func() bool { return up.saw(ldapwire.TagAbandonRequest) })
}

// A write pipelined behind a bind is judged as the identity the bind
// establishes, not the one it replaces.
func TestWriteBehindABindWaitsForIt(t *testing.T) {
	ic := &recordingInterceptor{}
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{}, Interceptor: ic})
	c.send(bindMsg(1, "uid=u1,dc=example", "pw1"))
	c.next()
	c.send(bindMsg(2, "uid=u2,dc=example", "pw2"), modifyMsg(3, "uid=u1,dc=example"))
	c.next()
	c.next()
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if len(ic.boundDNs) != 1 || ic.boundDNs[0] != "uid=u2,dc=example" {
		t.Fatalf("the write was judged as %q, want uid=u2,dc=example", ic.boundDNs)
	}
}

// localDirectory is a stand-in for the gateway's own subtree server: its
// first connection drops on the first request (as gldap does on a request
// it cannot decode); later ones answer every search with success.
type localDirectory struct{ dials atomic.Int32 }

func (l *localDirectory) Dial(context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	first := l.dials.Add(1) == 1
	go func() {
		defer s.Close()
		r := ldapwire.NewReader(s, 1<<20)
		for {
			m, err := r.Next()
			if err != nil || first {
				return
			}
			if m.Op == ldapwire.TagSearchRequest {
				_, _ = s.Write(encodeResponse(m.ID, ldapwire.TagSearchDone, 0, "", "", ""))
			}
		}
	}()
	return c, nil
}

// Losing the connection to the subtree fails only the subtree's
// operations: a write outstanding on the directory's connection goes on,
// the session stays, and the next read of the subtree dials it again.
func TestLosingTheSubtreeConnectionSparesTheDirectorys(t *testing.T) {
	ic := &recordingInterceptor{}
	local := &localDirectory{}
	// The op timeout bounds how long the ending session waits for the
	// write the directory never answers.
	_, c := dialGateway(t, Config{Dialer: &silentUpstream{noModify: true}, Interceptor: ic, OpTimeout: 3 * time.Second,
		Local: LocalDirectory{Suffixes: []string{"cn=local"}, Dial: local.Dial}})
	c.send(modifyMsg(1, "uid=x,dc=example"))
	c.send(searchMsg(2, "cn=local"))
	m, res := c.next()
	if m.ID != 2 || m.Op != ldapwire.TagSearchDone || res.Code != ldap.LDAPResultUnavailable {
		t.Fatalf("got id %d op 0x%02x code %d, want the local search's unavailable", m.ID, m.Op, res.Code)
	}
	c.send(searchMsg(3, "cn=local"))
	if m, res := c.next(); m.ID != 3 || res.Code != ldap.LDAPResultSuccess {
		t.Fatalf("got id %d code %d (%q), want the second local search's success", m.ID, res.Code, res.Diagnostic)
	}
	if ic.completed.Load() != 0 {
		t.Fatal("the write on the directory's connection was failed with the subtree's")
	}
}

// Against slapd, which abandons what is outstanding when a bind arrives
// and never answers it: a client that pipelines searches before its binds
// leaves nothing outstanding in the gateway once the binds are answered,
// so the idle timeout still ends its silent session.
func TestSlapdSearchesBeforeABindDoNotKeepTheSessionBusy(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{})
	u, err := ParseUpstream(dir.URL, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, c := dialGateway(t, Config{
		Dialer:        NewUpstreamSet([]Upstream{u}, 5*time.Second, DefaultMaxMessageSize, nil),
		MaxOpsPerConn: 32, IdleTimeout: time.Second,
	})
	id := int64(1)
	var binds []int64
	for range 20 {
		var batch [][]byte
		for range 20 {
			batch = append(batch, searchMsg(id, "dc=example,dc=com"))
			id++
		}
		batch = append(batch, bindMsg(id, "", ""))
		binds = append(binds, id)
		id++
		c.send(batch...)
	}
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	last := binds[len(binds)-1]
	for {
		m, res := c.next()
		if m.ID == 0 {
			if res.Code != ldap.LDAPResultUnavailable {
				t.Fatalf("notice %d %q before the idle timeout's", res.Code, res.Diagnostic)
			}
			break // the idle timeout ended the session
		}
		if m.ID == last && m.Op == ldapwire.TagBindResponse {
			last = -1 // from here on only the idle timeout's notice may come
		}
	}
	if last != -1 {
		t.Fatal("the session ended before the last bind was answered")
	}
	waitUntil(t, 5*time.Second, "the session to end", func() bool { return srv.Stats().Connections == 0 })
}
