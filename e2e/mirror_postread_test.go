package e2e

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// Attacks on the writes the gateway relays with a control of its own
// (RFC 4527's post-read, gateway/mirror/postread.go and images.go).

// rawLDAP is a client connection to the gateway that writes LDAP messages
// as bytes, to control their exact size and controls.
type rawLDAP struct {
	t    *testing.T
	conn net.Conn
	r    *ldapwire.Reader
}

func dialRawLDAP(t *testing.T, url string) *rawLDAP {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "ldap://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	return &rawLDAP{t: t, conn: conn, r: ldapwire.NewReader(conn, 1<<20)}
}

// message encodes an LDAPMessage with op (a whole protocolOp TLV) and the
// content of its Controls (none when empty).
func message(id int64, op, controls []byte) []byte {
	body := ldapwire.AppendInt(nil, 0x02, id)
	body = append(body, op...)
	if len(controls) > 0 {
		body = ldapwire.AppendTLV(body, ldapwire.TagControls, controls)
	}
	return ldapwire.AppendTLV(nil, ldapwire.TagSequence, body)
}

// roundTrip sends one message and returns the answer to it.
func (c *rawLDAP) roundTrip(msg []byte) ldapwire.Message {
	c.t.Helper()
	if _, err := c.conn.Write(msg); err != nil {
		c.t.Fatal(err)
	}
	m, err := c.r.Next()
	if err != nil {
		c.t.Fatalf("no answer: %v", err)
	}
	return m
}

func (c *rawLDAP) bind(dn, pw string) {
	c.t.Helper()
	m := c.roundTrip(message(1, ldapwire.AppendBindRequest(nil, dn, []byte(pw)), nil))
	if code, _ := ldapwire.ResultCode(m.OpContent); code != 0 {
		c.t.Fatalf("bind as %s: result %d", dn, code)
	}
}

// modifyOp is a ModifyRequest replacing each attribute with its value.
func modifyOp(dn string, replace ...[2]string) []byte {
	var changes []byte
	for _, r := range replace {
		vals := ldapwire.AppendTLV(nil, ldapwire.TagSet, ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(r[1])))
		part := append(ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(r[0])), vals...)
		change := append(ldapwire.AppendInt(nil, ldapwire.TagEnumerated, 2), ldapwire.AppendTLV(nil, ldapwire.TagSequence, part)...)
		changes = ldapwire.AppendTLV(changes, ldapwire.TagSequence, change)
	}
	body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(dn))
	body = ldapwire.AppendTLV(body, ldapwire.TagSequence, changes)
	return ldapwire.AppendTLV(nil, ldapwire.TagModifyRequest, body)
}

// readControl is an RFC 4527 read entry control asking for attrs.
func readControl(oid string, critical bool, attrs ...string) []byte {
	var sel []byte
	for _, a := range attrs {
		sel = ldapwire.AppendTLV(sel, ldapwire.TagOctetString, []byte(a))
	}
	body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(oid))
	if critical {
		body = append(body, 0x01, 1, 0xff)
	}
	body = ldapwire.AppendTLV(body, ldapwire.TagOctetString, ldapwire.AppendTLV(nil, ldapwire.TagSequence, sel))
	return ldapwire.AppendTLV(nil, ldapwire.TagSequence, body)
}

// contentLength is the length of a message's outer SEQUENCE's content,
// what slapd compares with sockbuf_max_incoming_auth.
func contentLength(msg []byte) int {
	_, content, _, err := ldapwire.Next(msg)
	if err != nil {
		panic(err)
	}
	return len(content)
}

// slapdMaxIncomingAuth is slapd's default limit on an authenticated
// client's PDU (sockbuf_max_incoming_auth, 16 MiB - 1), about the
// gateway's own default (--max-message-size, 16 MiB).
const slapdMaxIncomingAuth = 1<<24 - 1

// A write the directory takes from a client directly is taken through the
// gateway as well: a modify just under slapd's limit on a message's size
// is not pushed over it by a control the gateway appends (the directory
// would drop the connection: the client's valid write fails, every time).
func TestMirrorUnreadWriteNearTheDirectorysSizeLimit(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	alice := userDN("alice")
	build := func(n int) []byte {
		return message(2, modifyOp(alice, [2]string{"telephoneNumber", "+1 555 4242"},
			[2]string{"description", strings.Repeat("d", n)}), nil)
	}
	n := slapdMaxIncomingAuth - 12 - contentLength(build(0))
	msg := build(n)
	for contentLength(msg) > slapdMaxIncomingAuth-12 { // lengths of lengths
		n--
		msg = build(n)
	}
	// Straight to slapd, as alice, the write is taken.
	direct := dialRawLDAP(t, e.dir.URL)
	direct.bind(alice, slapd.AlicePassword)
	if m := direct.roundTrip(message(2, modifyOp(alice, [2]string{"description", "x"}), nil)); m.Op != ldapwire.TagModifyResponse {
		t.Fatalf("direct modify: answer %#x", m.Op)
	}
	if m := direct.roundTrip(msg); m.Op != ldapwire.TagModifyResponse {
		t.Fatalf("direct modify near the limit: answer %#x", m.Op)
	} else if code, _ := ldapwire.ResultCode(m.OpContent); code != 0 {
		t.Fatalf("direct modify near the limit: result %d", code)
	}
	// Through the gateway: the same write, with another phone.
	msg = bytes.Replace(msg, []byte("+1 555 4242"), []byte("+1 555 4343"), 1)
	c := dialRawLDAP(t, e.gw.URL)
	c.bind(alice, slapd.AlicePassword)
	m := c.roundTrip(msg)
	code, _ := ldapwire.ResultCode(m.OpContent)
	if m.Op != ldapwire.TagModifyResponse || code != 0 {
		t.Fatalf("modify near the directory's limit through the gateway: answer %#x, result %d\n%s", m.Op, code, e.logTail(2000))
	}
	e.waitAccount("alice", "her phone", func(a axigensim.AccountState, ok bool) bool { return ok && a.Contact["phone"] == "+1 555 4343" })
}

// A no-op control the directory does not support, sent not critical, is
// ignored by the directory, which applies the write (Debian's slapd has no
// no-op): the gateway must not take it for a write that changes nothing.
// Afterwards the directory and Axigen agree on alice's phone and password.
func TestMirrorNonCriticalNoOpIsNoBypass(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	alice := userDN("alice")
	c := bindConn(t, e.gw.URL, alice, slapd.AlicePassword)
	defer c.Close()
	noOp := ldap.NewControlString("1.3.6.1.4.1.4203.1.10.2", false, "")
	m := ldap.NewModifyRequest(alice, []ldap.Control{noOp})
	m.Replace("telephoneNumber", []string{"+1 555 1299"})
	err := c.Modify(m)
	t.Logf("alice's non-critical no-op of her phone: %v", err)
	pw := ldap.NewModifyRequest(alice, []ldap.Control{noOp})
	pw.Replace("userPassword", []string{"alice-noop-pw"})
	if err := c.Modify(pw); err == nil {
		e.setKnownPassword("alice", "alice-noop-pw")
	} else {
		t.Logf("alice's non-critical no-op of her password: %v", err)
	}
	e.waitMirrored(20*time.Second, false)
}

// answerControls decodes the Controls of an answer: OID -> value.
func answerControls(t *testing.T, m ldapwire.Message) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	rest := m.Controls
	for len(rest) > 0 {
		_, ctl, next, err := ldapwire.Next(rest)
		if err != nil {
			t.Fatal(err)
		}
		rest = next
		_, oid, more, err := ldapwire.Next(ctl)
		if err != nil {
			t.Fatal(err)
		}
		var value []byte
		for len(more) > 0 {
			tag, content, after, err := ldapwire.Next(more)
			if err != nil {
				t.Fatal(err)
			}
			if tag == ldapwire.TagOctetString {
				value = content
			}
			more = after
		}
		out[string(oid)] = value
	}
	return out
}

// entryAttributes lists the attribute types of a read entry control's
// SearchResultEntry.
func entryAttributes(t *testing.T, value []byte) []string {
	t.Helper()
	_, entry, _, err := ldapwire.Next(value)
	if err != nil {
		t.Fatal(err)
	}
	_, _, rest, err := ldapwire.Next(entry) // the DN
	if err != nil {
		t.Fatal(err)
	}
	_, attrs, _, err := ldapwire.Next(rest)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for len(attrs) > 0 {
		_, attr, next, err := ldapwire.Next(attrs)
		if err != nil {
			t.Fatal(err)
		}
		attrs = next
		_, typ, _, err := ldapwire.Next(attr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(typ))
	}
	return out
}

// A client's own read entry controls (RFC 4527) on the writes the gateway
// would add a post-read to — the owner's (judged unread) and the service
// identity's (delivered from an image) — critical or not: the client gets
// the controls it asked for, with the attributes it asked for, and never
// the gateway's; the write is mirrored all the same.
func TestMirrorClientReadControlsOnUnreadWrites(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	alice := userDN("alice")
	const (
		preRead  = "1.3.6.1.1.13.1"
		postRead = "1.3.6.1.1.13.2"
	)
	writers := []struct{ name, dn, pw string }{
		{"the owner", alice, slapd.AlicePassword},
		{"the service identity", mirrorAdminDN, e.dir.RootPW},
	}
	n := 0
	for _, w := range writers {
		c := dialRawLDAP(t, e.gw.URL)
		c.bind(w.dn, w.pw)
		for _, ctls := range [][]string{{postRead}, {preRead}, {preRead, postRead}} {
			for _, critical := range []bool{false, true} {
				n++
				phone := "+1 555 31" + string(rune('0'+n/10)) + string(rune('0'+n%10))
				var controls []byte
				for _, oid := range ctls {
					controls = append(controls, readControl(oid, critical, "telephoneNumber")...)
				}
				m := c.roundTrip(message(int64(1+n), modifyOp(alice, [2]string{"telephoneNumber", phone}), controls))
				what := w.name + " with " + strings.Join(ctls, "+")
				if critical {
					what += " (critical)"
				}
				if code, _ := ldapwire.ResultCode(m.OpContent); m.Op != ldapwire.TagModifyResponse || code != 0 {
					t.Fatalf("%s: answer %#x, result %d", what, m.Op, code)
				}
				got := answerControls(t, m)
				if len(got) != len(ctls) {
					t.Errorf("%s: the answer has controls %v, want %v", what, got, ctls)
				}
				for _, oid := range ctls {
					v, ok := got[oid]
					if !ok {
						t.Errorf("%s: no %s control in the answer", what, oid)
						continue
					}
					if attrs := entryAttributes(t, v); len(attrs) != 1 || !strings.EqualFold(attrs[0], "telephoneNumber") {
						t.Errorf("%s: the %s entry has %v, want only the telephoneNumber the client asked for", what, oid, attrs)
					}
				}
				e.waitAccount("alice", what, func(a axigensim.AccountState, ok bool) bool { return ok && a.Contact["phone"] == phone })
			}
		}
	}
	e.waitMirrored(20*time.Second, false)
}

// A client that sends a second write under the message ID of its first,
// still outstanding, is disconnected; the second write, journaled before
// the gateway saw the clash, must not stay prepared: every later write to
// the entry (here the admin's) still reaches Axigen, and no record is left
// unsettled.
func TestMirrorReusedMessageIDDoesNotFreezeTheEntry(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	bob := userDN("bob")
	c := dialRawLDAP(t, e.gw.URL)
	c.bind(bob, slapd.BobPassword)
	first := message(7, modifyOp(bob, [2]string{"telephoneNumber", "+1 555 7001"}), nil)
	second := message(7, modifyOp(bob, [2]string{"telephoneNumber", "+1 555 7002"}), nil)
	if _, err := c.conn.Write(append(first, second...)); err != nil {
		t.Fatal(err)
	}
	for { // until the gateway ends the session
		if _, err := c.r.Next(); err != nil {
			break
		}
	}
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer admin.Close()
	m := ldap.NewModifyRequest(bob, nil)
	m.Replace("telephoneNumber", []string{"+1 555 7003"})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.waitAccount("bob", "the admin's change after the clash", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7003"
	})
	e.waitMirrored(20*time.Second, false)
	waitFor(t, 10*time.Second, "no record left prepared", func() error {
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.Prepared != 0 {
			return fmt.Errorf("%d records prepared", st.Prepared)
		}
		return nil
	})
}
