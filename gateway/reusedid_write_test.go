package gateway

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// countingInterceptor lets every modify pass and counts the Completions
// it handed out and those the relay called.
type countingInterceptor struct {
	mu               sync.Mutex
	handed, finished int
}

func (c *countingInterceptor) Intercept(context.Context, SessionInfo, *WriteRequest) (Completion, *Result) {
	c.mu.Lock()
	c.handed++
	c.mu.Unlock()
	return func(context.Context, Result) {
		c.mu.Lock()
		c.finished++
		c.mu.Unlock()
	}, nil
}

func (c *countingInterceptor) counts() (handed, finished int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.handed, c.finished
}

// TestReusedIDWriteIsFinished: a client that sends an intercepted write
// under the message ID of one still outstanding is disconnected, and the
// Completion of the refused write is called all the same (as not relayed):
// the interceptor's record of it is settled, not left prepared — which
// would hold every later write to that entry until a restart.
func TestReusedIDWriteIsFinished(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{Users: 1})
	u, err := ParseUpstream(dir.URL, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := &countingInterceptor{}
	_, url := serveGateway(t, Config{Dialer: NewUpstreamSet([]Upstream{u}, 5*time.Second, DefaultMaxMessageSize, nil), Interceptor: ic})
	conn, err := net.Dial("tcp", url[len("ldap://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := ldapwire.NewReader(conn, 1<<20)
	bind := ldapwire.AppendBindRequest(nil, dir.RootDN, []byte(dir.RootPW))
	if _, err := conn.Write(encodeMessage(1, bind[0], bind[2:], nil)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	modify := func(value string) []byte {
		vals := ldapwire.AppendTLV(nil, ldapwire.TagSet, ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(value)))
		part := append(ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("sn")), vals...)
		change := append(ldapwire.AppendInt(nil, ldapwire.TagEnumerated, 2), ldapwire.AppendTLV(nil, ldapwire.TagSequence, part)...)
		body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("uid="+slapd.UserUID(0)+",ou=people,dc=example,dc=com"))
		body = ldapwire.AppendTLV(body, ldapwire.TagSequence, ldapwire.AppendTLV(nil, ldapwire.TagSequence, change))
		op := ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, body)
		return encodeMessage(7, op[0], op[2:], nil)
	}
	// Both in one write: the second arrives before the first's answer.
	if _, err := conn.Write(append(modify("First"), modify("Second")...)); err != nil {
		t.Fatal(err)
	}
	// The session ends (a Notice of Disconnection); read until it does.
	for {
		if _, err := r.Next(); err != nil {
			break
		}
	}
	waitUntil(t, 10*time.Second, "every Completion handed out is called", func() bool {
		handed, finished := ic.counts()
		return handed > 0 && handed == finished
	})
}
