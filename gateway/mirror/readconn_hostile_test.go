package mirror

// readConn against a scripted directory that misbehaves: notices, wrong
// message IDs, StartTLS injection, entry floods, large messages, and the
// same entry decoded as go-ldap decodes it.

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// fakeDir accepts connections and runs serve on each; it counts accepts.
type fakeDir struct {
	ln      net.Listener
	accepts atomic.Int32
}

func startFake(t *testing.T, serve func(n int32, conn net.Conn, in *ldapwire.Reader)) *fakeDir {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDir{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := f.accepts.Add(1)
			go func() {
				defer c.Close()
				serve(n, c, ldapwire.NewReader(c, maxReadMessage))
			}()
		}
	}()
	return f
}

func (f *fakeDir) url() string { return "ldap://" + f.ln.Addr().String() }

func ldapResult(tag byte, code int64) []byte {
	r := ldapwire.AppendInt(nil, ldapwire.TagEnumerated, code)
	r = ldapwire.AppendTLV(r, tagOctetString, nil)
	r = ldapwire.AppendTLV(r, tagOctetString, nil)
	return ldapwire.AppendTLV(nil, tag, r)
}

func entryOp(dn string, attrs map[string][]string) []byte {
	var list []byte
	for k, vs := range attrs {
		var set []byte
		for _, v := range vs {
			set = ldapwire.AppendTLV(set, tagOctetString, []byte(v))
		}
		a := ldapwire.AppendTLV(nil, tagOctetString, []byte(k))
		a = ldapwire.AppendTLV(a, tagSet, set)
		list = ldapwire.AppendTLV(list, tagSequence, a)
	}
	op := ldapwire.AppendTLV(nil, tagOctetString, []byte(dn))
	op = ldapwire.AppendTLV(op, tagSequence, list)
	return ldapwire.AppendTLV(nil, tagSearchEntry, op)
}

func send(c net.Conn, id int32, op []byte) { _, _ = c.Write(encodeMessage(nil, id, op)) }

func encodeMessage(b []byte, id int32, op []byte) []byte {
	return ldapwire.AppendMessage(b, int64(id), op)
}

// readMsg reads one message as the scripted directory sees it.
func readMsg(in *ldapwire.Reader) (id int64, tag byte, content []byte, err error) {
	m, err := in.Next()
	return m.ID, m.Op, m.OpContent, err
}

// answerBind reads the bind and answers success; false when the peer left.
func answerBind(c net.Conn, in *ldapwire.Reader) bool {
	id, tag, _, err := readMsg(in)
	if err != nil || tag != ldapwire.TagBindRequest {
		return false
	}
	send(c, int32(id), ldapResult(tagBindResponse, 0))
	return true
}

// An unsolicited Notice of Disconnection on an idle pooled connection: the
// next read fails over to a new connection and succeeds.
func TestReadConnNoticeOfDisconnectionWhileIdle(t *testing.T) {
	f := startFake(t, func(n int32, c net.Conn, in *ldapwire.Reader) {
		if !answerBind(c, in) {
			return
		}
		for {
			id, tag, _, err := readMsg(in)
			if err != nil || tag != ldapwire.TagSearchRequest {
				return
			}
			send(c, int32(id), entryOp("uid=alice", map[string][]string{"uid": {"alice"}}))
			send(c, int32(id), ldapResult(tagSearchDone, 0))
			if n == 1 {
				notice := ldapwire.AppendInt(nil, ldapwire.TagEnumerated, 52) // unavailable
				notice = ldapwire.AppendTLV(notice, tagOctetString, nil)
				notice = ldapwire.AppendTLV(notice, tagOctetString, []byte("going away"))
				notice = ldapwire.AppendTLV(notice, 0x8a, []byte("1.3.6.1.4.1.1466.20036"))
				send(c, 0, ldapwire.AppendTLV(nil, ldapwire.TagExtendedResponse, notice))
				return
			}
		}
	})
	d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 3 * time.Second})
	defer d.Close()
	for i := range 3 {
		e, err := d.Read(context.Background(), "uid=alice", []string{"uid"})
		if err != nil || e == nil || e.Attrs["uid"][0] != "alice" {
			t.Fatalf("read %d: %v, %v", i, e, err)
		}
	}
	if n := f.accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// An answer with the wrong message ID breaks the connection: it is not
// pooled, and the retry on a new connection gets the same answer.
func TestReadConnWrongMessageIDNotReused(t *testing.T) {
	f := startFake(t, func(_ int32, c net.Conn, in *ldapwire.Reader) {
		if !answerBind(c, in) {
			return
		}
		id, _, _, err := readMsg(in)
		if err != nil {
			return
		}
		send(c, int32(id)+7, ldapResult(tagSearchDone, 0))
		_, _, _, _ = readMsg(in)
	})
	d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 3 * time.Second})
	defer d.Close()
	_, err := d.Read(context.Background(), "uid=alice", []string{"uid"})
	if !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		t.Errorf("read: %v", err)
	}
	if len(d.reads) != 0 {
		t.Errorf("a broken connection was pooled")
	}
	if n := f.accepts.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (one retry)", n)
	}
}

// StartTLS: bytes sent in plain after the StartTLS answer are refused
// (command injection), and a refused StartTLS does not fall back to plain.
func TestReadConnStartTLSInjectionAndRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int64
		junk bool
		want string
	}{
		{"injection", 0, true, "data after the StartTLS answer"},
		{"refused", 2, false, "StartTLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sawBind atomic.Bool
			f := startFake(t, func(_ int32, c net.Conn, in *ldapwire.Reader) {
				id, tag, _, err := readMsg(in)
				if err != nil {
					return
				}
				if tag != ldapwire.TagExtendedRequest {
					sawBind.Store(true)
					return
				}
				msg := encodeMessage(nil, int32(id), ldapResult(ldapwire.TagExtendedResponse, tc.code))
				if tc.junk {
					msg = append(msg, encodeMessage(nil, 2, ldapResult(tagBindResponse, 0))...)
				}
				_, _ = c.Write(msg)
				if _, tag, _, err := readMsg(in); err == nil && tag == ldapwire.TagBindRequest {
					sawBind.Store(true)
				}
			})
			d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, StartTLS: true, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 2 * time.Second})
			defer d.Close()
			_, err := d.Read(context.Background(), "uid=alice", []string{"uid"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("read: %v, want %q", err, tc.want)
			}
			if sawBind.Load() {
				t.Error("the service bind went out in plain text")
			}
			if err != nil && strings.Contains(err.Error(), "pw") {
				t.Errorf("the password is in the error: %v", err)
			}
		})
	}
}

// A directory that ignores the size limit and streams entries: the read
// fails as soon as one entry too many arrives, instead of decoding them all.
func TestReadConnEntryFloodIsCut(t *testing.T) {
	const flood = 50_000
	f := startFake(t, func(_ int32, c net.Conn, in *ldapwire.Reader) {
		if !answerBind(c, in) {
			return
		}
		id, _, _, err := readMsg(in)
		if err != nil {
			return
		}
		w := bufio.NewWriter(c)
		e := encodeMessage(nil, int32(id), entryOp("uid=alice", map[string][]string{"uid": {"alice"}}))
		for range flood {
			if _, err := w.Write(e); err != nil {
				return
			}
		}
		_, _ = w.Write(encodeMessage(nil, int32(id), ldapResult(tagSearchDone, 0)))
		_ = w.Flush()
	})
	d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 5 * time.Second})
	defer d.Close()
	_, err := d.Read(context.Background(), "uid=alice", []string{"uid"})
	if err == nil || !strings.Contains(err.Error(), "more than the 2 entries") {
		t.Errorf("read from a flooding directory: %v, want the flood refused", err)
	}
}

// A connection does not keep a large entry's buffer after it.
func TestReadConnDropsLargeBuffers(t *testing.T) {
	big := strings.Repeat("x", 4<<20)
	f := startFake(t, func(_ int32, c net.Conn, in *ldapwire.Reader) {
		if !answerBind(c, in) {
			return
		}
		first := true
		for {
			id, _, _, err := readMsg(in)
			if err != nil {
				return
			}
			v := "small"
			if first {
				v, first = big, false
			}
			send(c, int32(id), entryOp("uid=alice", map[string][]string{"description": {v}}))
			send(c, int32(id), ldapResult(tagSearchDone, 0))
		}
	})
	d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 5 * time.Second})
	defer d.Close()
	for i := range 2 {
		e, err := d.Read(context.Background(), "uid=alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[int]int{0: len(big), 1: len("small")}[i]; len(e.Attrs["description"][0]) != want {
			t.Fatalf("read %d: description of %d bytes, want %d", i, len(e.Attrs["description"][0]), want)
		}
	}
	var c *readConn
	select {
	case c = <-d.reads:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection was pooled after two reads")
	}
	defer func() { d.reads <- c }()
	if c.r.Retained() > 64<<10 {
		t.Errorf("the pooled connection keeps a %d-byte buffer after a small read", c.r.Retained())
	}
}

// Malformed input never panics.
func FuzzReadConnMessage(f *testing.F) {
	f.Add(encodeMessage(nil, 1, entryOp("uid=a", map[string][]string{"cn": {"x", ""}, "o": nil})))
	f.Add(encodeMessage(nil, 1, ldapResult(tagSearchDone, 32)))
	f.Add([]byte{0x30, 0x84, 0x80, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		c := &readConn{conn: a, r: ldapwire.NewReader(bytes.NewReader(data), maxReadMessage)}
		for {
			_, tag, content, err := readMsg(c.r)
			if err != nil {
				return
			}
			_, _ = decodeEntry(content)
			_ = c.result(content)
			_ = tag
		}
	})
}

// readConn and go-ldap (through toEntry) give the same entry for attribute
// options, mixed-case names, duplicate attributes, binary and empty values,
// and an attribute with no values.
func TestReadConnSameAsGoLDAP(t *testing.T) {
	type attr struct {
		name string
		vals []string
	}
	attrs := []attr{
		{"CN", []string{"Alice"}},
		{"cn;lang-fr", []string{"Alicé"}},
		{"userCertificate;binary", []string{"\x00\x01\xff\xfe\x30\x82"}},
		{"description", []string{"", "x"}},
		{"memberOf", nil},
		{"cn", []string{"dup"}},
	}
	op := ldapwire.AppendTLV(nil, tagOctetString, []byte("UID=Alice,dc=Example"))
	var list []byte
	for _, a := range attrs {
		var set []byte
		for _, v := range a.vals {
			set = ldapwire.AppendTLV(set, tagOctetString, []byte(v))
		}
		x := ldapwire.AppendTLV(nil, tagOctetString, []byte(a.name))
		x = ldapwire.AppendTLV(x, tagSet, set)
		list = ldapwire.AppendTLV(list, tagSequence, x)
	}
	op = ldapwire.AppendTLV(op, tagSequence, list)
	entry := ldapwire.AppendTLV(nil, tagSearchEntry, op)
	f := startFake(t, func(_ int32, c net.Conn, in *ldapwire.Reader) {
		for {
			id, tag, _, err := readMsg(in)
			if err != nil {
				return
			}
			if tag == ldapwire.TagBindRequest {
				send(c, int32(id), ldapResult(tagBindResponse, 0))
				continue
			}
			send(c, int32(id), entry)
			send(c, int32(id), ldapResult(tagSearchDone, 0))
		}
	})
	d := NewDirectory(DirectoryConfig{URLs: []string{f.url()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 2 * time.Second})
	defer d.Close()
	got, err := d.Read(context.Background(), "uid=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ldap.DialURL(f.url())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind("cn=svc", "pw"); err != nil {
		t.Fatal(err)
	}
	res, err := conn.Search(ldap.NewSearchRequest("uid=alice", 0, 0, 2, 0, false, "(objectClass=*)", nil, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatal(err)
	}
	want := toEntry(res.Entries[0])
	if got.DN != want.DN || len(got.Attrs) != len(want.Attrs) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	for k, v := range want.Attrs {
		g, ok := got.Attrs[k]
		if !ok || (g == nil) != (v == nil) || strings.Join(g, "\x00") != strings.Join(v, "\x00") || len(g) != len(v) {
			t.Errorf("%s: got %#v want %#v", k, g, v)
		}
	}
}
