package e2e

// Attacks on what docs/operations.md promises an operator: the limits
// (bind failures, connections, message size), the gateway's own subtree
// (cn=monitor, cn=changelog), the admin endpoint, the journal commands,
// reload and the logs. Each test drives the built binary over real sockets.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	ber "github.com/go-asn1-ber/asn1-ber"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/store"
)

// bindResults sends n binds of dn with pw on one connection, all in one
// write (a client may send requests without waiting for answers), and
// counts the result codes it gets.
func bindResults(t *testing.T, c *rawConn, n int, dn, pw string) map[int64]int {
	t.Helper()
	var burst []byte
	for i := 1; i <= n; i++ {
		burst = append(burst, bindRequest(int64(i), dn, pw)...)
	}
	c.send(t, burst)
	codes := map[int64]int{}
	for got := 0; got < n; got++ {
		m, err := c.next(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d bind answers: %v (codes so far %v)", got, n, err, codes)
		}
		if m.isNoticeOfDisconnection() {
			t.Fatalf("notice of disconnection after %d bind answers: %v", got, m)
		}
		codes[m.ResultCode]++
	}
	return codes
}

// parallelBindResults binds on conns connections at once, rounds binds one
// after the other on each, and counts the answers by result code (-2: no
// answer).
func parallelBindResults(t *testing.T, url string, conns, rounds int, dn, pw string) map[int64]int {
	t.Helper()
	var cs []*rawConn
	for range conns {
		cs = append(cs, dialRaw(t, url))
	}
	var mu sync.Mutex
	codes := map[int64]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range cs {
		wg.Go(func() {
			<-start
			for id := range int64(rounds) {
				_, _ = c.Write(bindRequest(id+1, dn, pw))
				m, err := c.next(20 * time.Second)
				mu.Lock()
				if err != nil {
					codes[-2]++
				} else {
					codes[m.ResultCode]++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return codes
}

// dialFrom opens a raw connection to the gateway from a given loopback
// address, so tests can play several client addresses.
func dialFrom(t *testing.T, url, from string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(url, "ldap://"))
	if err != nil {
		t.Fatalf("dial %s from %s: %v", url, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c}
}

// The bind-failure limit as documented: after --max-bind-failures failed
// binds an address gets 53 for any bind but an anonymous one, its right
// password included; another address (the admin's) is not locked out.
func TestAttackOpsBindFailureLimitPerAddress(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "3")

	c := dialFrom(t, g.URL, "127.0.0.1")
	for i := int64(1); i <= 3; i++ {
		c.send(t, bindRequest(i, aliceDN, "wrong-guess"))
		c.expectResult(t, i, ldap.LDAPResultInvalidCredentials)
	}
	c.send(t, bindRequest(4, aliceDN, slapd.AlicePassword))
	msgs := c.expectResult(t, 4, ldap.LDAPResultUnwillingToPerform)
	if d := msgs[len(msgs)-1].Diagnostic; !strings.Contains(d, "too many failed binds") {
		t.Errorf("diagnostic of the refused bind: %q", d)
	}
	c.send(t, bindRequest(5, "", ""))
	c.expectResult(t, 5, ldap.LDAPResultSuccess)

	// The admin, from another address, is not locked out.
	other := dialFrom(t, g.URL, "127.0.0.2")
	other.send(t, bindRequest(1, adminDN, adminPW))
	other.expectResult(t, 1, ldap.LDAPResultSuccess)
	if strings.Contains(g.log.String(), "wrong-guess") {
		t.Error("a guessed password is in the gateway's log")
	}
	g.requireAlive(t)
}

// A client that sends its guesses without waiting for the answers (one
// write of many binds on one connection) must not get more of them to the
// directory than the limit allows: the limiter must count binds still
// awaiting their answer, not only those answered.
func TestAttackOpsPipelinedBindsStayWithinTheFailureLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit, burst = 5, 60
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "5")
	codes := bindResults(t, dialRaw(t, g.URL), burst, aliceDN, "guess")
	if codes[ldap.LDAPResultInvalidCredentials] > limit {
		t.Errorf("%d of %d pipelined guesses reached the directory (answered 49), limit %d: %v",
			codes[ldap.LDAPResultInvalidCredentials], burst, limit, codes)
	}
	if codes[ldap.LDAPResultInvalidCredentials]+codes[ldap.LDAPResultUnwillingToPerform] != burst {
		t.Errorf("codes %v: want only 49 and 53", codes)
	}
	g.requireAlive(t)
}

// The same through many connections at once from one address: each bind
// is checked before any failure is counted.
func TestAttackOpsParallelBindsStayWithinTheFailureLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit, conns = 5, 40
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "5")
	codes := parallelBindResults(t, g.URL, conns, 1, aliceDN, "guess")
	if codes[ldap.LDAPResultInvalidCredentials] > limit {
		t.Errorf("%d of %d parallel guesses reached the directory (answered 49), limit %d: %v",
			codes[ldap.LDAPResultInvalidCredentials], conns, limit, codes)
	}
	if codes[ldap.LDAPResultInvalidCredentials]+codes[ldap.LDAPResultUnwillingToPerform] != conns {
		t.Errorf("codes %v: want only 49 and 53", codes)
	}
	g.requireAlive(t)
}

// The limit counts guesses, not binds: a busy client (a mail server
// authenticating its users on many connections at once) may have more
// binds awaiting their answer than the limit of failures. Those beyond it
// wait for room instead of being refused: every one of them succeeds.
func TestAttackOpsParallelGoodBindsBeyondTheFailureLimitSucceed(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const conns = 40
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "5")
	codes := parallelBindResults(t, g.URL, conns, 3, aliceDN, slapd.AlicePassword)
	if codes[ldap.LDAPResultSuccess] != 3*conns {
		t.Errorf("%d parallel binds with the right password from one address under a failure limit of 5: %v, want all %d answered success",
			3*conns, codes, 3*conns)
	}
	g.requireAlive(t)
}

// Connections over the limits must not cost the gateway what the limits
// bound. A client turned away on the ldaps:// port is owed a TLS handshake
// before it can read the busy notice; one that never starts the handshake
// must not keep a descriptor (and a goroutine) for the whole handshake
// time-out each, or a flood of such connections from one address runs the
// gateway out of descriptors and nobody, the admin included, gets in.
func TestAttackOpsRejectedTLSConnectionsDoNotHoldDescriptors(t *testing.T) {
	const flood = 600
	raiseFileLimit(t, 4*flood)
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info",
		"--max-connections-per-address", "4", "--handshake-timeout", "30s")
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
	base := openFDs(t, g.PID)
	addr := strings.TrimPrefix(g.LDAPSURL, "ldaps://")
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(held)+1, err)
		}
		held = append(held, c)
	}
	// Every one of them has been accepted (and most turned away) once the
	// gateway counts them; then what it still holds is what counts.
	waitFor(t, 20*time.Second, "the flood accepted", func() error {
		if n := metric(scrape(t, g.DataDir), "ldapgate_connections_accepted_total"); n < flood {
			return fmt.Errorf("%v accepted", n)
		}
		return nil
	})
	if n := openFDs(t, g.PID); n > base+200 {
		t.Errorf("the gateway holds %d descriptors (%d before) for %d connections over a per-address limit of 4", n, base, flood)
	}
	// A client from another address is served meanwhile.
	other := dialFrom(t, g.URL, "127.0.0.2")
	other.send(t, bindRequest(1, adminDN, adminPW))
	other.expectResult(t, 1, ldap.LDAPResultSuccess)

	// Once the flood is gone, a TLS client over the limit that does its
	// handshake still learns why it is turned away.
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitFor(t, 20*time.Second, "the flood's places freed", func() error {
		if n := openFDs(t, g.PID); n > base+10 {
			return fmt.Errorf("%d descriptors", n)
		}
		return nil
	})
	for range 4 {
		c, err := tls.Dial("tcp", addr, testPKI.TLSConfig())
		if err != nil {
			t.Fatalf("ldaps connection within the limit: %v", err)
		}
		held = append(held, c)
	}
	over, err := tls.Dial("tcp", addr, testPKI.TLSConfig())
	if err != nil {
		t.Fatalf("ldaps connection over the limit: %v", err)
	}
	defer over.Close()
	msgs, err := (&rawConn{over}).drain(10 * time.Second)
	if len(msgs) != 1 || !msgs[0].isNoticeOfDisconnection() || msgs[0].ResultCode != ldap.LDAPResultBusy {
		t.Errorf("ldaps connection over the limit: %v, %v; want a busy notice of disconnection", msgs, err)
	}
	g.requireAlive(t)
}

// rawSearch is a search request with every field under the test's control.
type rawSearch struct {
	base               string
	scope, deref       int64
	sizeLimit, timeLim int64
	typesOnly          bool
	filter             string      // compiled with go-ldap unless filterPacket is set
	filterPacket       *ber.Packet // a filter go-ldap would not compile
	attrs              []string
	controls           []*ber.Packet
}

func (r rawSearch) encode(t *testing.T, id int64) []byte {
	t.Helper()
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "search")
	op.AppendChild(octets(r.base))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, r.scope, "scope"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, r.deref, "deref"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, r.sizeLimit, "sizeLimit"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, r.timeLim, "timeLimit"))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, r.typesOnly, "typesOnly"))
	f := r.filterPacket
	if f == nil {
		filter := r.filter
		if filter == "" {
			filter = "(objectClass=*)"
		}
		var err error
		if f, err = ldap.CompileFilter(filter); err != nil {
			t.Fatalf("compile filter %s: %v", filter, err)
		}
	}
	op.AppendChild(f)
	as := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	for _, a := range r.attrs {
		as.AppendChild(octets(a))
	}
	op.AppendChild(as)
	return envelope(id, op, r.controls...)
}

// searchAnswer is what a search got: its entries (DN -> attribute names
// -> values) in order, and its final result.
type searchAnswer struct {
	dns     []string
	entries map[string]map[string][]string
	done    ldapMessage
	cookie  []byte // the paged results control's cookie in the result, if any
}

// search sends r and reads its answers up to its SearchResultDone.
func (c *rawConn) search(t *testing.T, id int64, r rawSearch) searchAnswer {
	t.Helper()
	c.send(t, r.encode(t, id))
	ans := searchAnswer{entries: map[string]map[string][]string{}}
	for {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		p, err := ber.ReadPacket(c)
		if err != nil {
			t.Fatalf("search %+v: reading its answers: %v (entries so far %v)", r, err, ans.dns)
		}
		if len(p.Children) < 2 {
			t.Fatalf("search %+v: LDAPMessage with %d elements", r, len(p.Children))
		}
		mid, _ := p.Children[0].Value.(int64)
		op := p.Children[1]
		if mid == 0 {
			t.Fatalf("search %+v: unsolicited message (tag %d) %v", r, op.Tag, p)
		}
		if mid != id {
			continue
		}
		switch op.Tag {
		case ldap.ApplicationSearchResultEntry:
			dn := op.Children[0].Data.String()
			attrs := map[string][]string{}
			for _, a := range op.Children[1].Children {
				var vals []string
				if len(a.Children) > 1 {
					for _, v := range a.Children[1].Children {
						vals = append(vals, v.Data.String())
					}
				}
				attrs[strings.ToLower(a.Children[0].Data.String())] = vals
			}
			ans.dns = append(ans.dns, dn)
			ans.entries[dn] = attrs
		case ldap.ApplicationSearchResultReference:
		case ldap.ApplicationSearchResultDone:
			m := ldapMessage{ID: mid, Op: op.Tag, ResultCode: -1}
			if code, ok := op.Children[0].Value.(int64); ok {
				m.ResultCode = code
			}
			if len(op.Children) > 2 {
				m.Diagnostic = op.Children[2].Data.String()
			}
			ans.done = m
			if len(p.Children) > 2 {
				for _, ctl := range p.Children[2].Children {
					if len(ctl.Children) >= 2 && ctl.Children[0].Data.String() == ldap.ControlTypePaging {
						v := ber.DecodePacket(ctl.Children[len(ctl.Children)-1].Data.Bytes())
						if len(v.Children) == 2 {
							ans.cookie = v.Children[1].Data.Bytes()
						}
					}
				}
			}
			return ans
		default:
			t.Fatalf("search %+v: unexpected answer tag %d", r, op.Tag)
		}
	}
}

// changeNumbers lists the change numbers of a changelog search's entries.
func (a searchAnswer) changeNumbers() []string {
	var out []string
	for _, dn := range a.dns {
		if v, ok := strings.CutPrefix(dn, "changeNumber="); ok {
			out = append(out, strings.TrimSuffix(v, ",cn=changelog"))
		}
	}
	return out
}

// pagingControl is the paged results request control.
func pagingControl(size int64, cookie []byte, critical bool) *ber.Packet {
	v := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "paging")
	v.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, size, "size"))
	v.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(cookie), "cookie"))
	return control(ldap.ControlTypePaging, critical, v.Bytes())
}

// The gateway's own subtree under odd searches: every one gets a proper
// result on a session that stays usable, and the results are those of
// the filter's meaning (integer order for change numbers, however large
// the number asked for).
func TestAttackOpsSubtreeOddSearches(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := range 12 {
		if err := setPhone(admin, userDN("alice"), fmt.Sprintf("+1 555 %04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDrained(20*time.Second, false)

	c := dialRaw(t, e.gw.URL)
	c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	id := int64(1)
	do := func(r rawSearch) searchAnswer {
		t.Helper()
		id++
		return c.search(t, id, r)
	}
	one := func(r rawSearch) rawSearch { r.scope = ldap.ScopeSingleLevel; return r }
	all := do(one(rawSearch{base: "cn=changelog"}))
	if all.done.ResultCode != 0 || len(all.dns) < 12 {
		t.Fatalf("cn=changelog's children: %d entries, %v", len(all.dns), all.done)
	}
	n := len(all.dns)
	last := all.changeNumbers()[n-1]

	cases := []struct {
		name  string
		r     rawSearch
		code  int64
		count int // -1: do not check
	}{
		{"changeNumber>=0", one(rawSearch{base: "cn=changelog", filter: "(changeNumber>=0)"}), 0, n},
		{"changeNumber>=-5", one(rawSearch{base: "cn=changelog", filter: "(changeNumber>=-5)"}), 0, n},
		{"changeNumber<=-1", one(rawSearch{base: "cn=changelog", filter: "(changeNumber<=-1)"}), 0, 0},
		{"changeNumber>=2^64", one(rawSearch{base: "cn=changelog", filter: "(changeNumber>=18446744073709551616)"}), 0, 0},
		{"changeNumber>=2^64-1", one(rawSearch{base: "cn=changelog", filter: "(changeNumber>=18446744073709551615)"}), 0, 0},
		{"changeNumber<=2^64", one(rawSearch{base: "cn=changelog", filter: "(changeNumber<=18446744073709551616)"}), 0, n},
		{"changeNumber<=10^30", one(rawSearch{base: "cn=changelog", filter: "(changeNumber<=1000000000000000000000000000000)"}), 0, n},
		{"changeNumber=last", one(rawSearch{base: "cn=changelog", filter: "(changeNumber=" + last + ")"}), 0, 1},
		{"changeNumber=0last", one(rawSearch{base: "cn=changelog", filter: "(changeNumber=0" + last + ")"}), 0, 1},
		{"changeNumber>=abc", one(rawSearch{base: "cn=changelog", filter: "(changeNumber>=abc)"}), 0, 0},
		{"changeNumber<=abc", one(rawSearch{base: "cn=changelog", filter: "(changeNumber<=abc)"}), 0, 0},
		{"changeNumber substring", one(rawSearch{base: "cn=changelog", filter: "(changeNumber=" + last + "*)"}), 0, -1},
		{"approx targetDN", one(rawSearch{base: "cn=changelog", filter: "(targetDN~=" + userDN("alice") + ")"}), 0, n},
		{"extensible", one(rawSearch{base: "cn=changelog", filter: "(changeNumber:integerMatch:=1)"}), 0, 0},
		{"presence of a password", one(rawSearch{base: "cn=changelog", filter: "(userPassword=*)"}), 0, 0},
		{"unknown attribute", one(rawSearch{base: "cn=changelog", filter: "(noSuchAttribute=x)"}), 0, 0},
		{"size limit", one(rawSearch{base: "cn=changelog", sizeLimit: 3}), ldap.LDAPResultSizeLimitExceeded, 3},
		{"negative size limit", one(rawSearch{base: "cn=changelog", sizeLimit: -1}), -2, -1},
		{"time limit beyond maxInt", one(rawSearch{base: "cn=changelog", timeLim: 1 << 40}), -2, -1},
		{"negative time limit", one(rawSearch{base: "cn=changelog", timeLim: -1}), -2, -1},
		{"attrs 1.1", one(rawSearch{base: "cn=changelog", attrs: []string{"1.1"}}), 0, n},
		{"attrs +", one(rawSearch{base: "cn=changelog", attrs: []string{"+"}}), 0, n},
		{"scope children", rawSearch{base: "cn=changelog", scope: 3}, -2, -1},
		{"scope 9", rawSearch{base: "cn=changelog", scope: 9}, -2, -1},
		{"deref 9", one(rawSearch{base: "cn=changelog", deref: 9}), -2, -1},
		{"base changeNumber=0", rawSearch{base: "changeNumber=0,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base changeNumber=-1", rawSearch{base: "changeNumber=-1,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base changeNumber=abc", rawSearch{base: "changeNumber=abc,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base changeNumber=2^64", rawSearch{base: "changeNumber=18446744073709551616,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base multi-valued RDN", rawSearch{base: "changeNumber=1+cn=x,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base below a change", rawSearch{base: "cn=x,changeNumber=1,cn=changelog"}, ldap.LDAPResultNoSuchObject, 0},
		{"base monitor child", rawSearch{base: "cn=nothing,cn=ldapgate,cn=monitor"}, ldap.LDAPResultNoSuchObject, 0},
		{"monitor subtree", rawSearch{base: "CN=LDAPGATE,CN=MONITOR", scope: ldap.ScopeWholeSubtree}, 0, -1},
		{"critical sort control", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{
			control("1.2.840.113556.1.4.473", true, []byte{0x30, 0x0e, 0x30, 0x0c, 0x04, 0x0a, 'c', 'h', 'a', 'n', 'g', 'e', 'T', 'y', 'p', 'e'})}}),
			ldap.LDAPResultUnavailableCriticalExtension, 0},
		{"non-critical sort control", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{
			control("1.2.840.113556.1.4.473", false, []byte{0x30, 0x0e, 0x30, 0x0c, 0x04, 0x0a, 'c', 'h', 'a', 'n', 'g', 'e', 'T', 'y', 'p', 'e'})}}),
			0, n},
		{"absolute true (&)", rawSearch{base: "cn=changelog", filterPacket: ber.Encode(ber.ClassContext, ber.TypeConstructed, ldap.FilterAnd, nil, "and")}, -2, -1},
		{"absolute false (|)", rawSearch{base: "cn=changelog", filterPacket: ber.Encode(ber.ClassContext, ber.TypeConstructed, ldap.FilterOr, nil, "or")}, -2, 0},
		{"filter nested 900 deep", one(rawSearch{base: "cn=changelog", filterPacket: nestedNot(900)}), -2, -1},
		{"filter nested 5000 deep", one(rawSearch{base: "cn=changelog", filterPacket: nestedNot(5000)}), -2, -1},
		{"paging size 0", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{pagingControl(0, nil, false)}}), 0, 0},
		{"paging bad cookie", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{pagingControl(5, []byte("garbage"), true)}}), -2, 0},
		{"paging far cookie", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{pagingControl(5, []byte("18446744073709551615:0"), true)}}), 0, 0},
		{"paging negative size", one(rawSearch{base: "cn=changelog", controls: []*ber.Packet{pagingControl(-1, nil, true)}}), -2, -1},
	}
	for _, tc := range cases {
		a := do(tc.r)
		switch {
		case tc.code == -2 && (a.done.ResultCode == 0 || a.done.ResultCode == ldap.LDAPResultProtocolError ||
			a.done.ResultCode == ldap.LDAPResultUnwillingToPerform || a.done.ResultCode == ldap.LDAPResultTimeLimitExceeded && tc.name != "time limit beyond maxInt"):
		case tc.code >= 0 && a.done.ResultCode == tc.code:
		default:
			t.Errorf("%s: result %d %q, want %d", tc.name, a.done.ResultCode, a.done.Diagnostic, tc.code)
		}
		if tc.count >= 0 && len(a.dns) != tc.count {
			t.Errorf("%s: %d entries (%v), want %d", tc.name, len(a.dns), a.changeNumbers(), tc.count)
		}
		if tc.name == "attrs 1.1" || tc.name == "attrs +" {
			for dn, attrs := range a.entries {
				if len(attrs) > 0 {
					t.Errorf("%s: %s came with attributes %v", tc.name, dn, attrs)
					break
				}
			}
		}
	}
	// The session is still whole, and so is the gateway.
	if a := do(rawSearch{base: "cn=changelog"}); a.done.ResultCode != 0 || len(a.dns) != 1 {
		t.Errorf("after the odd searches, a base read of cn=changelog: %v %v", a.dns, a.done)
	}
	e.requireAlive()
}

// compareRequest is a Compare of dn's attr with value.
func compareRequest(id int64, dn, attr, value string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationCompareRequest, nil, "compare")
	op.AppendChild(octets(dn))
	ava := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "ava")
	ava.AppendChild(octets(attr))
	ava.AppendChild(octets(value))
	op.AppendChild(ava)
	return envelope(id, op)
}

func deleteRequest(id int64, dn string) []byte {
	return envelope(id, ber.NewString(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationDelRequest, dn, "delete"))
}

func modifyRequest(id int64, dn, attr, value string) []byte {
	return modifyValueRequest(id, dn, 2, attr, value)
}

// modifyValueRequest is a modify of dn with one change: op (RFC 4511: 0
// add, 1 delete, 2 replace) of attr with value.
func modifyValueRequest(id int64, dn string, op int64, attr, value string) []byte {
	req := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationModifyRequest, nil, "modify")
	req.AppendChild(octets(dn))
	changes := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "changes")
	ch := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "change")
	ch.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, op, "operation"))
	pa := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "modification")
	pa.AppendChild(octets(attr))
	set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "values")
	set.AppendChild(octets(value))
	pa.AppendChild(set)
	ch.AppendChild(pa)
	changes.AppendChild(ch)
	req.AppendChild(changes)
	return envelope(id, req)
}

func modDNRequest(id int64, dn, newRDN, newSuperior string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationModifyDNRequest, nil, "moddn")
	op.AppendChild(octets(dn))
	op.AppendChild(octets(newRDN))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, true, "deleteoldrdn"))
	if newSuperior != "" {
		op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, newSuperior, "newSuperior"))
	}
	return envelope(id, op)
}

// Who may read the gateway's own subtree, and that nobody writes it: an
// anonymous client, a user, a client that named the admin without its
// password, and one whose admin bind failed get 50 for searches and
// compares alike; every write, the admin's included, gets 53 and changes
// nothing; a change's values never include a password.
func TestAttackOpsSubtreeAccessAndWrites(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := setPhone(admin, userDN("alice"), "+1 555 7777"); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20*time.Second, false)

	reads := func(t *testing.T, c *rawConn, want int64) {
		t.Helper()
		for i, base := range []string{"cn=changelog", "changeNumber=1,cn=changelog", "cn=ldapgate,cn=monitor",
			"cn=journal,cn=ldapgate,cn=monitor", "CN=ChangeLog"} {
			a := c.search(t, int64(100+i), rawSearch{base: base, scope: ldap.ScopeWholeSubtree})
			if a.done.ResultCode != want || (want != 0 && len(a.dns) > 0) {
				t.Errorf("search of %s: result %d %q, %d entries; want %d", base, a.done.ResultCode, a.done.Diagnostic, len(a.dns), want)
			}
		}
		c.send(t, compareRequest(200, "changeNumber=1,cn=changelog", "changeType", "modify"))
		m, err := c.next(10 * time.Second)
		if err != nil || (want != 0 && m.ResultCode != want) || (want == 0 && m.ResultCode != ldap.LDAPResultCompareTrue) {
			t.Errorf("compare of change 1: %v %v; want %d", m, err, want)
		}
	}
	anon := dialRaw(t, e.gw.URL)
	t.Run("anonymous", func(t *testing.T) { reads(t, anon, ldap.LDAPResultInsufficientAccessRights) })
	t.Run("unauthenticated bind as the admin", func(t *testing.T) {
		c := dialRaw(t, e.gw.URL)
		c.send(t, bindRequest(1, mirrorAdminDN, ""))
		// slapd refuses unauthenticated binds (53); either way the session
		// is not the admin's.
		if m, err := c.next(10 * time.Second); err != nil || m.ResultCode != 0 && m.ResultCode != ldap.LDAPResultUnwillingToPerform {
			t.Fatalf("unauthenticated bind: %v %v", m, err)
		}
		reads(t, c, ldap.LDAPResultInsufficientAccessRights)
	})
	t.Run("failed admin bind after a good one", func(t *testing.T) {
		c := dialRaw(t, e.gw.URL)
		c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		c.send(t, bindRequest(2, mirrorAdminDN, "wrong"))
		c.expectResult(t, 2, ldap.LDAPResultInvalidCredentials)
		reads(t, c, ldap.LDAPResultInsufficientAccessRights)
	})
	t.Run("user", func(t *testing.T) {
		c := dialRaw(t, e.gw.URL)
		c.send(t, bindRequest(1, userDN("alice"), slapd.AlicePassword))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		reads(t, c, ldap.LDAPResultInsufficientAccessRights)
	})
	t.Run("admin", func(t *testing.T) {
		c := dialRaw(t, e.gw.URL)
		c.send(t, bindRequest(1, strings.ToUpper(mirrorAdminDN), e.dir.RootPW))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		reads(t, c, 0)
		writes := map[string][]byte{
			"add a change":         addRequest(10, "changeNumber=999,cn=changelog", map[string][]string{"objectClass": {"changeLogEntry"}, "changeNumber": {"999"}}),
			"add the changelog":    addRequest(11, "cn=changelog", map[string][]string{"objectClass": {"top"}}),
			"delete a change":      deleteRequest(12, "changeNumber=1,cn=changelog"),
			"delete the monitor":   deleteRequest(13, "cn=ldapgate,cn=monitor"),
			"modify a change":      modifyRequest(14, "changeNumber=1,cn=changelog", "deliveryState", "dead"),
			"modify the journal":   modifyRequest(15, "cn=journal,cn=ldapgate,cn=monitor", "backlog", "0"),
			"rename a change":      modDNRequest(16, "changeNumber=1,cn=changelog", "changeNumber=1000", ""),
			"move a change":        modDNRequest(17, "changeNumber=1,cn=changelog", "uid=x", mirrorAccountBase),
			"modify, spaced DN":    modifyRequest(18, "changeNumber = 1 , CN = changelog", "deliveryState", "dead"),
			"delete, DN with case": deleteRequest(19, "CHANGENUMBER=1,CN=CHANGELOG"),
		}
		id := int64(10)
		for name, req := range writes {
			c.send(t, req)
			m, err := c.next(10 * time.Second)
			if err != nil || m.ResultCode != ldap.LDAPResultUnwillingToPerform {
				t.Errorf("%s: %v %v; want 53", name, m, err)
			}
			id++
		}
		a := c.search(t, 300, rawSearch{base: "changeNumber=1,cn=changelog"})
		if got := a.entries["changeNumber=1,cn=changelog"]["deliverystate"]; len(got) != 1 || got[0] != "delivered" {
			t.Errorf("change 1 after the writes: %v", a.entries)
		}
	})
	e.requireAlive()
}

// ljournal runs `ldapgate journal ARGS...` (flags where the caller puts
// them) and returns its output, stdout then stderr, and exit code.
func ljournal(t *testing.T, args ...string) toolResult {
	t.Helper()
	out, errOut, code := runJournal(t, args...)
	return toolResult{Out: out + errOut, Code: code}
}

// filesContaining lists the files under dir whose bytes contain s.
func filesContaining(t *testing.T, dir, s string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte(s)) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// The journal commands as documented, against a running and a stopped
// gateway: flags after the record number work, bad numbers get a clear
// error and change nothing, commands racing on one dead letter leave it
// retried or dropped (not both, not broken), and no output, log line,
// audit line or journal file holds the password of a dead letter.
func TestAttackOpsJournalCommands(t *testing.T) {
	root := t.TempDir()
	audit := filepath.Join(root, "audit.log")
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "debug", Extra: []string{"--max-attempts", "1", "--audit-log", audit}})
	const secret = "Attack-0ps-Secret-pw"
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	e.asAdmin("", "ldappasswd", "-s", secret, userDN("alice"))
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := setPhone(admin, userDN("bob"), "+1 555 0808"); err != nil {
		t.Fatal(err)
	}
	var dead []store.Record
	waitFor(t, 30*time.Second, "two dead letters", func() error {
		dead = runningRecords(t, e.dataDir, "dead")
		if len(dead) != 2 {
			return fmt.Errorf("%d dead", len(dead))
		}
		return nil
	})
	pwSeq, phoneSeq := dead[0].Seq, dead[1].Seq
	if dead[0].Op != store.OpPassword {
		pwSeq, phoneSeq = phoneSeq, pwSeq
	}
	dd := "--data-dir=" + e.dataDir
	ok := func(r toolResult, what string) string {
		t.Helper()
		if r.Code != 0 {
			t.Fatalf("%s: exit %d:\n%s", what, r.Code, r.Out)
		}
		if strings.Contains(r.Out, secret) {
			t.Errorf("%s prints the password:\n%s", what, r.Out)
		}
		return r.Out
	}
	// The documented forms, flags after the number included.
	out := ok(ljournal(t, "show", fmt.Sprint(pwSeq), "--json", dd), "journal show SEQ --json (running)")
	if !strings.Contains(out, `"seq": `+fmt.Sprint(pwSeq)) {
		t.Errorf("journal show --json:\n%s", out)
	}
	ok(ljournal(t, dd, "ls", "--dead"), "journal ls --dead")
	ok(ljournal(t, "ls", "--state", "dead,committed", "--limit", "0", "--json", dd), "journal ls --state a,b")
	ok(ljournal(t, "stats", dd, "--json"), "journal stats")

	before := runningRecords(t, e.dataDir, "dead")
	for _, bad := range [][]string{
		{"show", "0"}, {"show", "abc"}, {"show", "-1"}, {"show", "18446744073709551616"}, {"show", "99999"},
		{"show", "1", "2"}, {"show"}, {"retry"}, {"retry", "0"}, {"retry", "99999"}, {"drop"}, {"drop", "x"},
		{"drop", "99999"}, {"ls", "extra"}, {"ls", "--limit", "-3"}, {"ls", "--state", "bogus"},
		{"show", "1", "--no-such-flag"}, {"retry", "1", "--limit"},
	} {
		r := ljournal(t, append(bad, dd)...)
		if r.Code == 0 {
			t.Errorf("journal %v: exit 0:\n%s", bad, r.Out)
		}
		if strings.Contains(r.Out, "panic") || strings.TrimSpace(r.Out) == "" {
			t.Errorf("journal %v: no clear error:\n%s", bad, r.Out)
		}
	}
	if after := runningRecords(t, e.dataDir, "dead"); len(after) != len(before) {
		t.Fatalf("bad commands changed the dead letters: %d, then %d", len(before), len(after))
	}
	// A delivered record is history: drop refuses it.
	e.requireAlive()

	// Retry and drop race on the password's dead letter.
	var wg sync.WaitGroup
	results := make([]toolResult, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			verb := "retry"
			if i%2 == 1 {
				verb = "drop"
			}
			results[i] = ljournal(t, verb, fmt.Sprint(pwSeq), dd)
		}()
	}
	wg.Wait()
	for _, r := range results {
		if strings.Contains(r.Out, "panic") || strings.Contains(r.Out, secret) {
			t.Errorf("racing journal commands:\n%s", r.Out)
		}
	}
	var rec store.Record
	if err := adminJSON(e.dataDir, fmt.Sprintf("/journal/records/%d", pwSeq), 5*time.Second, &rec); err == nil {
		if rec.State == store.StateDelivered {
			t.Errorf("record %d delivered while Axigen is down: %+v", pwSeq, rec)
		}
	}
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	ok(ljournal(t, "retry", "--all-dead", dd), "journal retry --all-dead")
	e.waitDrained(30*time.Second, false)
	r := ljournal(t, "drop", fmt.Sprint(phoneSeq), dd)
	if r.Code == 0 || !strings.Contains(r.Out, "record") {
		t.Errorf("dropping a delivered record: exit %d:\n%s", r.Code, r.Out)
	}

	// Stopped: the same commands open the journal directly.
	e.stop()
	ok(ljournal(t, "show", fmt.Sprint(phoneSeq), "--json", dd), "journal show SEQ --json (stopped)")
	ok(ljournal(t, "ls", "--limit", "0", dd), "journal ls (stopped)")
	// Commands at once on a stopped gateway's folder: each succeeds or says
	// another process holds the journal (not "stop the gateway"), and the
	// journal stays whole.
	var racing sync.WaitGroup
	outs := make([]toolResult, 6)
	for i := range outs {
		racing.Add(1)
		go func() {
			defer racing.Done()
			outs[i] = ljournal(t, "stats", dd)
		}()
	}
	racing.Wait()
	for _, r := range outs {
		if r.Code != 0 && (!strings.Contains(r.Out, "another process") || strings.Contains(r.Out, "stop the gateway")) {
			t.Errorf("journal stats racing another: exit %d:\n%s", r.Code, r.Out)
		}
	}
	ok(ljournal(t, "stats", dd), "journal stats after the race")
	for _, dir := range []string{e.dataDir, filepath.Dir(audit)} {
		if hits := filesContaining(t, dir, secret); len(hits) > 0 {
			t.Errorf("the password is in %v", hits)
		}
	}
	if strings.Contains(e.logTail(1<<30), secret) {
		t.Error("the password is in the gateway's log")
	}
}

// startWithConfig runs `ldapgate serve --config FILE` with nothing else
// but the data folder and the address file, so that every setting a
// reload may change comes from the file.
func startWithConfig(t *testing.T, cfgFile string, extra ...string) (*gatewayProc, string) {
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	args := append([]string{"serve", "--config", cfgFile, "--data-dir", filepath.Join(dir, "data"), "--addr-file", addrFile}, extra...)
	cmd := exec.Command(gatewayBin, args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	g := &gatewayProc{cmd: cmd, exited: make(chan struct{}), log: &lockedBuffer{}, DataDir: filepath.Join(dir, "data")}
	cmd.Stdout, cmd.Stderr = g.log, g.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g.PID = cmd.Process.Pid
	go func() { _ = cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() { g.stop(t) })
	waitFor(t, 20*time.Second, "the address file", func() error {
		if !g.alive() {
			t.Fatalf("gateway exited: %v\n%s", cmd.ProcessState, g.log.String())
		}
		b, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		g.URL = strings.Fields(string(b))[0]
		return nil
	})
	return g, addrFile
}

// hup sends SIGHUP and waits for the reload's verdict in the log (the
// n-th such line).
func (g *gatewayProc) hup(t *testing.T, n int) string {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var verdict string
	waitFor(t, 10*time.Second, "the reload's verdict", func() error {
		g.requireAlive(t)
		var vs []string
		for _, l := range lines(g.log.String()) {
			if strings.Contains(l, "configuration reload") || strings.Contains(l, "configuration reloaded") {
				vs = append(vs, l)
			}
		}
		if len(vs) < n {
			return fmt.Errorf("%d verdicts", len(vs))
		}
		verdict = vs[n-1]
		return nil
	})
	return verdict
}

// SIGHUP with a broken configuration: each is refused with a reason, the
// gateway keeps serving on the old one (its listener too), and a good one
// afterwards is applied. A listener that cannot open leaves the others
// unopened. A burst of reloads under load drops nobody.
func TestAttackOpsReloadWithBrokenConfigurations(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "ldapgate.yaml")
	good := fmt.Sprintf("listen:\n  - ldap://127.0.0.1:0\nupstream:\n  urls:\n    - %s\nlog:\n  level: info\n", s.URL)
	if err := os.WriteFile(cfgFile, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	g, addrFile := startWithConfig(t, cfgFile)
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free := freeLoopbackPorts(t, 1)[0]

	broken := []struct{ name, yaml, why string }{
		{"not YAML", "listen: [ldap://127.0.0.1:0\nupstream: {", ""},
		{"unknown key", good + "bogus: 1\n", "bogus"},
		{"upstream scheme", strings.Replace(good, s.URL, "http://127.0.0.1:1", 1), "upstream"},
		{"no upstream", "listen:\n  - ldap://127.0.0.1:0\n", "upstream"},
		{"zero connections", good + "limits:\n  maxConnections: 0\n", "maxConnections"},
		{"negative window", good + "limits:\n  bindFailureWindow: -1s\n", "bindFailureWindow"},
		{"bad duration", good + "limits:\n  idleTimeout: soon\n", "idleTimeout"},
		{"listen taken", fmt.Sprintf("listen:\n  - ldap://127.0.0.1:0\n  - ldap://127.0.0.1:%d\n  - ldap://%s\nupstream:\n  urls:\n    - %s\n",
			free, held.Addr(), s.URL), "listen"},
		{"ldaps without a certificate", strings.Replace(good, "ldap://127.0.0.1:0", "ldaps://127.0.0.1:0", 1), "ldaps"},
		{"TLS switched on", good + "tls:\n  cert: /nonexistent/cert.pem\n  key: /nonexistent/key.pem\n", ""},
		{"mirroring switched on", good + "mirror:\n  axigen:\n    addr: 127.0.0.1:1\n", ""},
		{"empty file", "", ""},
		{"password in the upstream URL", strings.Replace(good, s.URL, strings.Replace(s.URL, "ldap://", "ldap://u:Hunter2-Reload@", 1), 1), "upstream"},
	}
	n := 0
	for _, b := range broken {
		if err := os.WriteFile(cfgFile, []byte(b.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		n++
		v := g.hup(t, n)
		if !strings.Contains(v, "configuration reload refused; the running configuration stays") || !strings.Contains(v, b.why) {
			t.Errorf("%s: the reload's verdict is %q", b.name, v)
		}
		if err := gatewayServes(t, g.URL); err != nil {
			t.Fatalf("%s: the gateway stopped serving on its listener: %v", b.name, err)
		}
	}
	if strings.Contains(g.log.String(), "Hunter2-Reload") {
		t.Error("the password of a refused upstream URL is in the log")
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", free), time.Second); err == nil {
		c.Close()
		t.Errorf("a refused reload opened a listener on port %d", free)
	}
	// The file gone.
	if err := os.Remove(cfgFile); err != nil {
		t.Fatal(err)
	}
	n++
	if v := g.hup(t, n); !strings.Contains(v, "refused") {
		t.Errorf("reload of a missing file: %q", v)
	}

	// A good one is applied: a second listener opens.
	next := fmt.Sprintf("listen:\n  - ldap://127.0.0.1:0\n  - ldap://127.0.0.1:%d\nupstream:\n  urls:\n    - %s\nlog:\n  level: info\n", free, s.URL)
	if err := os.WriteFile(cfgFile, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	n++
	if v := g.hup(t, n); !strings.Contains(v, "configuration reloaded") {
		t.Fatalf("a good reload: %q", v)
	}
	if err := gatewayServes(t, fmt.Sprintf("ldap://127.0.0.1:%d", free)); err != nil {
		t.Errorf("the reloaded listener: %v", err)
	}
	if b, _ := os.ReadFile(addrFile); !strings.Contains(string(b), fmt.Sprint(free)) {
		t.Errorf("the address file after the reload: %q", b)
	}

	// A burst of reloads while a client works.
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		c, err := ldap.DialURL(g.URL)
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetTimeout(10 * time.Second)
		if err := c.Bind(aliceDN, slapd.AlicePassword); err != nil {
			errc <- err
			return
		}
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if _, err := c.Search(ldap.NewSearchRequest(suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
				"(uid=bob)", []string{"mail"}, nil)); err != nil {
				errc <- err
				return
			}
		}
	}()
	for range 50 {
		_ = g.cmd.Process.Signal(syscall.SIGHUP)
	}
	waitFor(t, 20*time.Second, "the burst of reloads handled", func() error {
		g.requireAlive(t)
		if c := strings.Count(g.log.String(), "configuration reloaded"); c < 2 {
			return fmt.Errorf("%d reloads", c)
		}
		return gatewayServes(t, g.URL)
	})
	close(stop)
	if err := <-errc; err != nil {
		t.Errorf("a session during the reloads: %v", err)
	}
}

// addOfSize is an add request of exactly n bytes of content (the length
// the limit is checked against: the LDAPMessage's, after its header).
func addOfSize(t *testing.T, id int64, uid string, n int) []byte {
	t.Helper()
	pad := n
	for range 64 {
		msg := addRequest(id, "uid="+uid+","+people, map[string][]string{
			"objectClass": {"inetOrgPerson"}, "uid": {uid}, "cn": {uid}, "sn": {uid},
			"description": {strings.Repeat("x", max(pad, 1))},
		})
		p := ber.DecodePacket(msg)
		content := len(p.Data.Bytes())
		if content == n {
			return msg
		}
		pad += n - content
	}
	t.Fatalf("cannot build an add of %d bytes", n)
	return nil
}

// The message size limit is exact: a request of exactly --max-message-size
// bytes is served, one byte more ends the session with protocolError and
// a diagnostic, and the gateway serves the next client.
func TestAttackOpsMessageSizeLimitIsExact(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit = 64 << 10
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-message-size", fmt.Sprint(limit))

	c := dialRaw(t, g.URL)
	c.send(t, bindRequest(1, adminDN, adminPW))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	c.send(t, addOfSize(t, 2, "atlimit", limit))
	c.expectResult(t, 2, ldap.LDAPResultSuccess)

	over := dialRaw(t, g.URL)
	over.send(t, bindRequest(1, adminDN, adminPW))
	over.expectResult(t, 1, ldap.LDAPResultSuccess)
	over.send(t, addOfSize(t, 2, "overlimit", limit+1))
	msgs, err := over.drain(10 * time.Second)
	if !isClosed(err) || len(msgs) != 1 || !msgs[0].isNoticeOfDisconnection() || msgs[0].ResultCode != ldap.LDAPResultProtocolError ||
		!strings.Contains(msgs[0].Diagnostic, "size limit") {
		t.Errorf("one byte over the limit: %v, %v; want a protocolError notice naming the size limit", msgs, err)
	}
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
}

// An entry the directory holds that is larger than --max-message-size (a
// photo, say): the relay cannot read past it, so the session ends, but
// the client and the log must learn why; "the upstream directory closed
// the connection" sent an operator after a healthy directory.
func TestAttackOpsUpstreamAnswerOverTheSizeLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit = 64 << 10
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-message-size", fmt.Sprint(limit))
	direct, err := s.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	m := ldap.NewModifyRequest(bobDN, nil)
	m.Replace("description", []string{strings.Repeat("y", 2*limit)})
	if err := direct.Modify(m); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, g.URL)
	c.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	c.send(t, searchRequest(t, 2, bobDN, "(objectClass=*)", "description"))
	msgs, _ := c.drain(10 * time.Second)
	answered := false
	for _, m := range msgs {
		if m.ID == 2 && m.ResultCode >= 0 {
			answered = true
			if !strings.Contains(m.Diagnostic, "message size limit") {
				t.Errorf("the search's result does not say the answer was over the size limit: %v", m)
			}
		}
	}
	if !answered {
		t.Errorf("the search got no result: %v", msgs)
	}
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
}

// httpRaw sends a raw HTTP request to addr and returns the status line.
func httpRaw(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "write failed: " + err.Error()
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "read failed: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// The admin endpoint on TCP (--admin-listen) serves the probes and the
// metrics only, whatever the method, path spelling or header size, and a
// flood of idle connections to it cannot take the descriptors the LDAP
// listeners need.
func TestAttackOpsAdminEndpointOverTCP(t *testing.T) {
	const flood = 400
	raiseFileLimit(t, 4*flood)
	s := slapd.StartT(t, slapd.Options{})
	port := freeLoopbackPorts(t, 1)[0]
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--admin-listen", addr)
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		return httpRaw(t, addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	}
	for path, want := range map[string]string{
		"/metrics": "200", "/healthz": "200", "/readyz": "200",
		"/journal/stats": "403", "/journal/records": "403", "/debug/pprof/": "403", "/debug/pprof/profile?seconds=30": "403",
		"/metrics/../journal/stats": "403", "//journal/stats": "403", "/%6aournal/stats": "403", "/METRICS": "403",
		"/journal/records/1/drop": "403", "/cluster/status": "403",
	} {
		if got := get(path); !strings.Contains(got, " "+want+" ") {
			t.Errorf("GET %s over TCP: %q, want %s", path, got, want)
		}
	}
	for _, req := range []string{
		"POST /journal/records/1/drop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
		"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		if got := httpRaw(t, addr, req); strings.Contains(got, " 200 ") {
			t.Errorf("%q over TCP: %q", strings.SplitN(req, "\r", 2)[0], got)
		}
	}
	huge := "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\nConnection: close\r\n\r\n"
	if got := httpRaw(t, addr, huge); strings.Contains(got, " 200 ") {
		t.Errorf("a 2 MiB header: %q", got)
	}

	base := openFDs(t, g.PID)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("admin connection %d: %v", len(held)+1, err)
		}
		held = append(held, c)
	}
	// The gateway has taken what it takes of the flood once its count of
	// descriptors holds still over several polls.
	prev, still := -1, 0
	waitFor(t, 10*time.Second, "the gateway's descriptors to settle", func() error {
		n := openFDs(t, g.PID)
		if n == prev {
			still++
		} else {
			prev, still = n, 0
		}
		if still < 8 {
			return fmt.Errorf("%d descriptors", n)
		}
		return nil
	})
	if n := openFDs(t, g.PID); n > base+100 {
		t.Errorf("%d idle admin connections hold %d descriptors of the gateway (%d before)", flood, n-base, base)
	}
	if err := gatewayServes(t, g.URL); err != nil {
		t.Errorf("LDAP during the admin flood: %v", err)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitFor(t, 20*time.Second, "/metrics after the flood", func() error {
		if got := get("/metrics"); !strings.Contains(got, " 200 ") {
			return fmt.Errorf("%q", got)
		}
		return nil
	})
	g.requireAlive(t)
}

// saslPlainBind is a SASL PLAIN bind (authzid NUL authcid NUL password).
func saslPlainBind(id int64, authcid, pw string) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "bind")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(3), "version"))
	op.AppendChild(octets(""))
	sasl := ber.Encode(ber.ClassContext, ber.TypeConstructed, 3, nil, "sasl")
	sasl.AppendChild(octets("PLAIN"))
	sasl.AppendChild(octets("\x00" + authcid + "\x00" + pw))
	op.AppendChild(sasl)
	return envelope(id, op)
}

// No secret anywhere an operator or an attacker may look: every way a
// password passes the gateway (binds right and wrong, SASL PLAIN, the
// password modify operation, an add, a replace, a refused write, a write
// the directory fails, a delivery Axigen fails) leaves it out of the debug
// log, the audit log, the journal's files, `ldapgate journal` and
// cn=changelog.
func TestAttackOpsNoSecretAnywhere(t *testing.T) {
	root := t.TempDir()
	audit := filepath.Join(root, "audit.log")
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "debug", Extra: []string{"--audit-log", audit, "--max-attempts", "1"}})
	secrets := map[string]string{}
	secret := func(what string) string {
		s := fmt.Sprintf("S3cr3t-%d-%s", len(secrets), strings.ReplaceAll(what, " ", "-"))
		secrets[s] = what
		return s
	}

	c := dialRaw(t, e.gw.URL)
	c.send(t, bindRequest(1, userDN("alice"), secret("wrong bind")))
	c.expectResult(t, 1, ldap.LDAPResultInvalidCredentials)
	c.send(t, saslPlainBind(2, "alice", secret("sasl plain")))
	if _, err := c.next(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	alicePW := secret("self password modify")
	e.mustTool("", "ldappasswd", userDN("alice"), slapd.AlicePassword, "-a", slapd.AlicePassword, "-s", alicePW)
	e.asAdmin(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: %s\n", userDN("bob"), secret("admin replace")), "ldapmodify")
	e.asAdmin(fmt.Sprintf("dn: %s\nobjectClass: inetOrgPerson\nuid: zed\ncn: Zed\nsn: Z\nmail: zed@example.com\nuserPassword: %s\n",
		userDN("zed"), secret("add")), "ldapadd")
	refused := e.tool(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: userPassword\nuserPassword: %s\n", userDN("zed"), secret("refused write")),
		"ldapmodify", userDN("alice"), alicePW)
	if refused.Code != ldap.LDAPResultInsufficientAccessRights {
		t.Fatalf("alice changing zed's password: exit %d\n%s", refused.Code, refused.Out)
	}
	failed := e.tool(fmt.Sprintf("dn: %s\nobjectClass: inetOrgPerson\nuid: zed\ncn: Zed\nsn: Z\nuserPassword: %s\n", userDN("zed"), secret("failing add")),
		"ldapadd", mirrorAdminDN, e.dir.RootPW)
	if failed.Code != ldap.LDAPResultEntryAlreadyExists {
		t.Errorf("adding zed again: exit %d\n%s", failed.Code, failed.Out)
	}
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	e.asAdmin("", "ldappasswd", "-s", secret("undelivered"), userDN("zed"))
	waitFor(t, 30*time.Second, "the undelivered password dead", func() error {
		if len(runningRecords(t, e.dataDir, "dead")) == 0 {
			return errNotYet
		}
		return nil
	})
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}

	var seen []string
	look := func(where, text string) {
		for s, what := range secrets {
			if strings.Contains(text, s) {
				seen = append(seen, fmt.Sprintf("the %s password is in %s", what, where))
			}
		}
	}
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	res, err := admin.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"*", "+"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	for _, en := range res.Entries {
		for _, a := range en.Attributes {
			fmt.Fprintf(&dump, "%s: %s\n", a.Name, strings.Join(a.Values, " | "))
		}
	}
	look("cn=changelog", dump.String())
	dd := "--data-dir=" + e.dataDir
	look("journal ls", ljournal(t, "ls", "--limit", "0", dd).Out)
	look("journal ls --json", ljournal(t, "ls", "--limit", "0", "--json", dd).Out)
	for _, r := range runningRecords(t, e.dataDir, "dead") {
		look("journal show", ljournal(t, "show", fmt.Sprint(r.Seq), dd).Out)
	}
	look("/metrics", scrape(t, e.dataDir))
	e.stop()
	look("the gateway's log", e.logTail(1<<30))
	for s, what := range secrets {
		for _, dir := range []string{e.dataDir, root} {
			for _, f := range filesContaining(t, dir, s) {
				seen = append(seen, fmt.Sprintf("the %s password is in %s", what, f))
			}
		}
	}
	if b, err := os.ReadFile(audit); err != nil || !bytes.Contains(b, []byte(`"decision":"refused"`)) || !bytes.Contains(b, []byte(`"outcome":"failed"`)) {
		t.Errorf("the audit log %s lacks the refusal or the failed delivery (%v):\n%s", audit, err, b)
	}
	for _, s := range seen {
		t.Error(s)
	}
}

// A client that pipelines many requests, the gateway's own subtree and
// the directory mixed, with abandons among them: every request not
// abandoned gets its answer, in a session that stays whole; a paged walk
// of cn=changelog under concurrent writes returns each change once.
func TestAttackOpsPipelinedSubtreeAndDirectory(t *testing.T) {
	pipelinedMix(t, "256")
}

// The same on a connection allowed 3 outstanding operations: once the
// limit is reached the session waits for answers, and must first send the
// requests it holds for the subtree, or none is ever answered.
func TestAttackOpsPipelinedSubtreeAtTheOpsLimit(t *testing.T) {
	pipelinedMix(t, "3")
}

func pipelinedMix(t *testing.T, maxOps string) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info", Extra: []string{"--max-ops-per-conn", maxOps}})
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := range 40 {
		if err := setPhone(admin, userDN("alice"), fmt.Sprintf("+1 555 1%03d", i)); err != nil {
			t.Fatal(err)
		}
	}

	c := dialRaw(t, e.gw.URL)
	c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	var burst []byte
	const n = 120
	abandoned := map[int64]bool{}
	for i := int64(2); i < 2+n; i++ {
		switch i % 4 {
		case 0:
			burst = append(burst, rawSearch{base: "cn=changelog", scope: ldap.ScopeSingleLevel}.encode(t, i)...)
		case 1:
			burst = append(burst, searchRequest(t, i, suffix, "(uid=bob)", "mail")...)
		case 2:
			burst = append(burst, rawSearch{base: "cn=ldapgate,cn=monitor", scope: ldap.ScopeWholeSubtree}.encode(t, i)...)
		case 3:
			burst = append(burst, compareRequest(i, "cn=journal,cn=ldapgate,cn=monitor", "dead", "0")...)
		}
		if i%10 == 0 {
			abandoned[i] = true
			burst = append(burst, envelope(5000+i, ber.NewInteger(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationAbandonRequest, i, "abandon"))...)
		}
	}
	c.send(t, burst)
	done := map[int64]int64{}
	deadline := time.Now().Add(20 * time.Second)
	missing := func() int {
		k := 0
		for i := int64(2); i < 2+n; i++ {
			if _, ok := done[i]; !ok && !abandoned[i] {
				k++
			}
		}
		return k
	}
	for missing() > 0 {
		m, err := c.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d final answers (%v): %v", len(done), done, err)
		}
		if m.isNoticeOfDisconnection() {
			t.Fatalf("notice of disconnection after %d answers: %v", len(done), m)
		}
		if m.ResultCode >= 0 && m.Op != ldap.ApplicationSearchResultEntry {
			if _, twice := done[m.ID]; twice {
				t.Fatalf("two final answers to %d", m.ID)
			}
			done[m.ID] = m.ResultCode
		}
	}
	for id, code := range done {
		want := int64(0)
		if id%4 == 3 {
			want = ldap.LDAPResultCompareTrue
		}
		if code != want && !abandoned[id] {
			t.Errorf("request %d: result %d, want %d", id, code, want)
		}
	}
	for i := int64(2); i < 2+n; i++ {
		if _, ok := done[i]; !ok && !abandoned[i] {
			t.Errorf("request %d got no answer", i)
		}
	}

	// A paged walk while writes go on: every change number once, in order.
	stop := make(chan struct{})
	writes := make(chan error, 1)
	go func() {
		w := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
		for i := 0; ; i++ {
			select {
			case <-stop:
				writes <- nil
				return
			default:
			}
			if err := setPhone(w, userDN("bob"), fmt.Sprintf("+1 555 2%03d", i%1000)); err != nil {
				writes <- err
				return
			}
		}
	}()
	res, err := admin.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"changeNumber"}, nil), 7)
	close(stop)
	if werr := <-writes; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("paged walk: %v", err)
	}
	prev := 0
	for _, en := range res.Entries {
		var cn int
		fmt.Sscan(en.GetAttributeValue("changeNumber"), &cn)
		if cn <= prev {
			t.Fatalf("change %d after %d in a paged walk", cn, prev)
		}
		prev = cn
	}
	if len(res.Entries) < 40 {
		t.Errorf("a paged walk returned %d changes", len(res.Entries))
	}
	e.requireAlive()
}

// ldapgateCmd runs the binary with args and returns its output and code.
func ldapgateCmd(t *testing.T, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("ldapgate %v: %v", args, err)
	}
	return toolResult{Out: string(out), Code: code}
}

// The cluster commands against a lone gateway, running or stopped, and
// with bad input: each fails with a message that says why, and the gateway
// goes on.
func TestAttackOpsClusterCommandsOnALoneGateway(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info")
	dd := "--data-dir=" + g.DataDir
	for _, args := range [][]string{
		{"cluster", "status", dd},
		{"cluster", "add", dd, "d@127.0.0.1:1"},
		{"cluster", "remove", dd, "d"},
		{"cluster", "add", dd, "d@"},
		{"cluster", "add", dd, "@127.0.0.1:1"},
		{"cluster", "add", dd, "nonsense"},
		{"cluster", "add", dd},
		{"cluster", "remove", dd},
		{"cluster", "remove", dd, "a", "b"},
		{"cluster", "status", "--data-dir", t.TempDir()},
	} {
		r := ldapgateCmd(t, args...)
		out := strings.TrimSpace(r.Out)
		if r.Code == 0 || out == "" || strings.Contains(out, "panic") || len(out) > 400 {
			t.Errorf("ldapgate %v: exit %d:\n%s", args, r.Code, out)
		}
		t.Logf("ldapgate %v: %s", args[:2], out)
	}
	if r := ldapgateCmd(t, "cluster", "status", dd); !strings.Contains(strings.ToLower(r.Out), "cluster") {
		t.Errorf("cluster status on a lone gateway does not say it is not clustered:\n%s", r.Out)
	}
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
}

// nestedNot is (!(!(...(objectClass=*)...))) depth deep.
func nestedNot(depth int) *ber.Packet {
	f := ber.NewString(ber.ClassContext, ber.TypePrimitive, ldap.FilterPresent, "objectClass", "present")
	for range depth {
		not := ber.Encode(ber.ClassContext, ber.TypeConstructed, ldap.FilterNot, nil, "not")
		not.AppendChild(f)
		f = not
	}
	return f
}

// Binds the directory never answers (it is down) are no failed guesses:
// however many a client sends during an outage, its right password works
// as soon as the directory is back.
func TestAttackOpsBindsDuringAnOutageDoNotLockOut(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	dead := freeLoopbackPorts(t, 1)[0]
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "ldapgate.yaml")
	conf := func(upstream string) string {
		return fmt.Sprintf("listen:\n  - ldap://127.0.0.1:0\nupstream:\n  urls:\n    - %s\nlimits:\n  maxBindFailures: 3\n  dialTimeout: 1s\n", upstream)
	}
	if err := os.WriteFile(cfgFile, []byte(conf(fmt.Sprintf("ldap://127.0.0.1:%d", dead))), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ := startWithConfig(t, cfgFile)
	c := dialRaw(t, g.URL)
	for i := int64(1); i <= 8; i++ {
		c.send(t, bindRequest(i, aliceDN, slapd.AlicePassword))
		c.expectResult(t, i, ldap.LDAPResultUnavailable)
	}
	if err := os.WriteFile(cfgFile, []byte(conf(s.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	if v := g.hup(t, 1); !strings.Contains(v, "configuration reloaded") {
		t.Fatalf("reload: %q", v)
	}
	after := dialRaw(t, g.URL)
	after.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	after.expectResult(t, 1, ldap.LDAPResultSuccess)
}
