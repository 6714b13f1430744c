package gateway

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// oidPostRead is RFC 4527's post-read control.
const oidPostRead = "1.3.6.1.1.13.2"

// appendingInterceptor asks for a post-read of sn on every modify and
// keeps the response controls its Completion gets.
type appendingInterceptor struct {
	mu       sync.Mutex
	controls [][]Control
}

func (a *appendingInterceptor) Intercept(_ context.Context, _ SessionInfo, req *WriteRequest) (Completion, *Result) {
	if req.Op != OpModify {
		return nil, nil
	}
	sel := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("sn"))
	req.Append = append(req.Append, Control{OID: oidPostRead, Value: ldapwire.AppendTLV(nil, ldapwire.TagSequence, sel), HasValue: true})
	return func(_ context.Context, res Result) {
		a.mu.Lock()
		a.controls = append(a.controls, res.Controls)
		a.mu.Unlock()
	}, nil
}

// TestAppendedControlReachesTheCompletionNotTheClient: a control the
// interceptor appends goes to the directory with the client's own (here
// none, then the client's Manage DSA IT), its answer goes to the
// Completion, and the client's answer has no trace of it.
func TestAppendedControlReachesTheCompletionNotTheClient(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{Users: 2})
	u, err := ParseUpstream(dir.URL, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := &appendingInterceptor{}
	_, url := serveGateway(t, Config{Dialer: NewUpstreamSet([]Upstream{u}, 5*time.Second, DefaultMaxMessageSize, nil), Interceptor: ic})
	conn, err := net.Dial("tcp", url[len("ldap://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	r := ldapwire.NewReader(conn, 1<<20)
	send := func(id int64, op []byte, controls []byte) ldapwire.Message {
		t.Helper()
		if _, err := conn.Write(encodeMessage(id, op[0], op[2:], controls)); err != nil {
			t.Fatal(err)
		}
		m, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := ldapwire.ResultCode(m.OpContent); code != 0 {
			t.Fatalf("message %d: result %d", id, code)
		}
		return m
	}
	bind := ldapwire.AppendBindRequest(nil, dir.RootDN, []byte(dir.RootPW))
	send(1, bind, nil)
	modify := func(value string) []byte {
		vals := ldapwire.AppendTLV(nil, ldapwire.TagSet, ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(value)))
		part := append(ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("sn")), vals...)
		change := append(ldapwire.AppendInt(nil, ldapwire.TagEnumerated, 2), ldapwire.AppendTLV(nil, ldapwire.TagSequence, part)...)
		body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("uid="+slapd.UserUID(0)+",ou=people,dc=example,dc=com"))
		body = ldapwire.AppendTLV(body, ldapwire.TagSequence, ldapwire.AppendTLV(nil, ldapwire.TagSequence, change))
		return ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, body)
	}
	manageDSAIT := appendControl(nil, Control{OID: ldap.ControlTypeManageDsaIT})
	for i, own := range [][]byte{nil, manageDSAIT} {
		m := send(int64(2+i), modify("Doe "+string(rune('A'+i))), own)
		if m.Controls != nil {
			t.Errorf("modify %d: the client got controls %x", i, m.Controls)
		}
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if len(ic.controls) != 2 {
		t.Fatalf("%d completions", len(ic.controls))
	}
	for i, cs := range ic.controls {
		if len(cs) != 1 || cs[0].OID != oidPostRead {
			t.Fatalf("modify %d: completion got %+v", i, cs)
		}
		_, entry, _, err := ldapwire.Next(cs[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		if want := "Doe " + string(rune('A'+i)); !bytes.Contains(entry, []byte(want)) {
			t.Errorf("modify %d: post-read %q lacks %q", i, entry, want)
		}
	}
}

// assertingInterceptor appends an assertion (RFC 4528) that the modified
// entry's entryUUID is value, and keeps the codes its Completions get.
type assertingInterceptor struct {
	value string
	mu    sync.Mutex
	codes []int
}

func (a *assertingInterceptor) Intercept(_ context.Context, _ SessionInfo, req *WriteRequest) (Completion, *Result) {
	if req.Op != OpModify {
		return nil, nil
	}
	ava := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte("entryUUID"))
	ava = ldapwire.AppendTLV(ava, ldapwire.TagOctetString, []byte(a.value))
	req.Append = append(req.Append, Control{OID: OIDAssertion, Critical: true, Value: ldapwire.AppendTLV(nil, 0xa3, ava), HasValue: true})
	return func(_ context.Context, res Result) {
		a.mu.Lock()
		a.codes = append(a.codes, res.Code)
		a.mu.Unlock()
	}, nil
}

// TestAppendedAssertionRefusedIsBusy: an assertion the interceptor
// appends and the directory finds false reaches the Completion as
// assertionFailed (122) and the client, which sent none, as busy (51)
// saying the entry changed; the write is not made. One that holds lets
// the write through.
func TestAppendedAssertionRefusedIsBusy(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{Users: 1})
	u, err := ParseUpstream(dir.URL, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	dn := "uid=" + slapd.UserUID(0) + ",ou=people,dc=example,dc=com"
	direct, err := dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	res, err := direct.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"entryUUID", "sn"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read %s: %v", dn, err)
	}
	uuid, sn := res.Entries[0].GetAttributeValue("entryUUID"), res.Entries[0].GetAttributeValue("sn")
	for _, tc := range []struct {
		value string
		code  int
	}{
		{"00000000-0000-0000-0000-000000000000", ldap.LDAPResultBusy},
		{uuid, ldap.LDAPResultSuccess},
	} {
		ic := &assertingInterceptor{value: tc.value}
		_, url := serveGateway(t, Config{Dialer: NewUpstreamSet([]Upstream{u}, 5*time.Second, DefaultMaxMessageSize, nil), Interceptor: ic})
		conn, err := ldap.DialURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Bind(dir.RootDN, dir.RootPW); err != nil {
			t.Fatal(err)
		}
		m := ldap.NewModifyRequest(dn, nil)
		m.Replace("sn", []string{"Asserted " + tc.value[:4]})
		err = conn.Modify(m)
		conn.Close()
		switch {
		case tc.code == ldap.LDAPResultSuccess && err != nil:
			t.Errorf("assertion that holds: %v", err)
		case tc.code != ldap.LDAPResultSuccess && (!ldap.IsErrorWithCode(err, uint16(tc.code)) || !bytes.Contains([]byte(err.Error()), []byte("no longer the one"))):
			t.Errorf("assertion that fails: %v, want %d saying the entry changed", err, tc.code)
		}
		ic.mu.Lock()
		codes := ic.codes
		ic.mu.Unlock()
		want := ldap.LDAPResultSuccess
		if tc.code != ldap.LDAPResultSuccess {
			want = ldap.LDAPResultAssertionFailed
		}
		if len(codes) != 1 || codes[0] != want {
			t.Errorf("completion codes %v, want [%d]", codes, want)
		}
		res, err := direct.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"sn"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		got := res.Entries[0].GetAttributeValue("sn")
		if made := got != sn; made != (tc.code == ldap.LDAPResultSuccess) {
			t.Errorf("sn %q after the write (was %q): made %v, want %v", got, sn, made, tc.code == ldap.LDAPResultSuccess)
		}
		sn = got
	}
}
