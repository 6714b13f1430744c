package subtree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/store"
)

const (
	suffix  = "dc=example,dc=com"
	adminDN = "cn=admin," + suffix
	adminPW = "admin-secret"
	aliceDN = "uid=alice,ou=people," + suffix
)

// stack is a slapd upstream, an in-process gateway whose local subtree is
// a Server over a journal with a few records, and the URL to reach it.
type stack struct {
	url     string
	journal *store.Journal
	sub     *Server
	gw      *gateway.Server
	seqs    map[string]uint64 // record name -> change number
	upstrm  *slapd.Server
}

func newStack(t *testing.T) *stack {
	t.Helper()
	return newStackWith(t, nil)
}

// newStackWith is newStack with the subtree's Config changed by tune.
func newStackWith(t *testing.T, tune func(*Config)) *stack {
	t.Helper()
	up := slapd.StartT(t, slapd.Options{})
	j := openJournal(t)
	st := &stack{journal: j, seqs: map[string]uint64{}, upstrm: up}
	st.record(t, "add", &store.Record{Kind: store.KindAccount, Op: store.OpAdd, DN: "uid=dave,ou=people," + suffix,
		Actor: adminDN, ClientAddr: "127.0.0.1:4000",
		Changes: []store.Change{
			{Op: "add", Attr: "objectClass", Values: []string{"inetOrgPerson"}},
			{Op: "add", Attr: "uid", Values: []string{"dave"}},
			{Op: "add", Attr: "mail", Values: []string{"dave@example.com"}},
			{Op: "add", Attr: "userPassword"},
		},
		Secret: []byte("dave-plaintext-pw")}, "entry-key-dave")
	st.record(t, "modify", &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: "uid=dave,ou=people," + suffix,
		Actor: adminDN, Changes: []store.Change{{Op: "replace", Attr: "telephoneNumber", Values: []string{"+1 555 0199"}}}}, "entry-key-dave")
	st.record(t, "rename", &store.Record{Kind: store.KindAccount, Op: store.OpRename, DN: "uid=dave,ou=people," + suffix,
		NewDN: "uid=david,ou=people," + suffix, Actor: adminDN}, "entry-key-dave")
	st.record(t, "password", &store.Record{Kind: store.KindAccount, Op: store.OpPassword, DN: "uid=david,ou=people," + suffix,
		Actor: "uid=david,ou=people," + suffix, Secret: []byte("david-new-plaintext")}, "entry-key-dave")
	st.record(t, "delete", &store.Record{Kind: store.KindAccount, Op: store.OpDelete, DN: "uid=david,ou=people," + suffix, Actor: adminDN}, "entry-key-dave")

	since := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	health := func() []gateway.UpstreamHealth {
		return []gateway.UpstreamHealth{
			{URL: up.URL, Up: true, Since: since},
			{URL: "ldap://127.0.0.1:1", Up: false, Since: since, LastError: "connection refused"},
		}
	}
	cfg := Config{Journal: j, GatewayStats: func() gateway.Stats { return st.gw.Stats() }, UpstreamHealth: health,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if tune != nil {
		tune(&cfg)
	}
	var err error
	st.sub, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.sub.Start(ctx); err != nil {
		t.Fatalf("start subtree: %v", err)
	}
	t.Cleanup(func() {
		if err := st.sub.Close(); err != nil {
			t.Errorf("close subtree: %v", err)
		}
	})
	upstream, err := gateway.ParseUpstream(up.URL, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.gw, err = gateway.NewServer(gateway.Config{
		Dialer: gateway.NewUpstreamSet([]gateway.Upstream{upstream}, 5*time.Second, gateway.DefaultMaxMessageSize, nil),
		Local: gateway.LocalDirectory{
			Suffixes: Suffixes(),
			Dial:     st.sub.Dial,
			Allow:    func(si gateway.SessionInfo) bool { return strings.EqualFold(si.BoundDN, adminDN) },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = st.gw.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.gw.Shutdown(ctx)
	})
	st.url = "ldap://" + ln.Addr().String()
	return st
}

// testWriter sends the subtree's log to the test's, so that a warning
// (gldap's included) shows up next to the failure it explains.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// record journals a write and commits it (it stays pending delivery).
func (st *stack) record(t *testing.T, name string, r *store.Record, key string) {
	t.Helper()
	ctx := context.Background()
	seq, err := st.journal.Prepare(ctx, r)
	if err != nil {
		t.Fatalf("prepare %s: %v", name, err)
	}
	if err := st.journal.Commit(ctx, seq, key); err != nil {
		t.Fatalf("commit %s: %v", name, err)
	}
	st.seqs[name] = seq
}

func (st *stack) conn(t *testing.T, dn, pw string) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(st.url)
	if err != nil {
		t.Fatalf("dial gateway: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetTimeout(10 * time.Second)
	if dn != "" {
		if err := c.Bind(dn, pw); err != nil {
			t.Fatalf("bind %s: %v", dn, err)
		}
	}
	return c
}

func search(c *ldap.Conn, base string, scope int, filter string, attrs ...string) (*ldap.SearchResult, error) {
	return c.Search(ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, nil))
}

func resultCode(err error) uint16 {
	var le *ldap.Error
	if errors.As(err, &le) {
		return le.ResultCode
	}
	return 0
}

// ldapsearch runs ldap-utils' ldapsearch against the gateway as the admin.
func (st *stack) ldapsearch(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"-LLL", "-x", "-o", "ldif-wrap=no", "-H", st.url, "-D", adminDN, "-w", adminPW}, args...)
	cmd := exec.CommandContext(ctx, "ldapsearch", full...)
	cmd.Env = []string{"LDAPNOINIT=1", "HOME=" + t.TempDir()}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ldapsearch: %v", err)
	}
	return out.String(), code
}

func TestChangelogWithLDAPSearchThroughTheGateway(t *testing.T) {
	st := newStack(t)
	out, code := st.ldapsearch(t, "-b", "cn=changelog", "-s", "sub", "(objectClass=*)")
	if code != 0 {
		t.Fatalf("ldapsearch exit %d:\n%s", code, out)
	}
	first, last := itoa(st.seqs["add"]), itoa(st.seqs["delete"])
	for _, want := range []string{
		"dn: cn=changelog\n", "firstChangeNumber: " + first + "\n", "lastChangeNumber: " + last + "\n",
		"dn: changeNumber=" + first + ",cn=changelog\n",
		"targetDN: uid=dave,ou=people,dc=example,dc=com\n",
		"changeType: add\n", "changeType: modify\n", "changeType: modrdn\n", "changeType: delete\n",
		"newRDN: uid=david\n", "newDN: uid=david,ou=people,dc=example,dc=com\n",
		"deliveryState: committed\n", "entryKey: entry-key-dave\n", "actor: " + adminDN + "\n",
		"clientAddress: 127.0.0.1:4000\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("changelog lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "dn: changeNumber="); n != 5 {
		t.Errorf("%d change entries, want 5:\n%s", n, out)
	}
	// A rename within the same parent has no newSuperior.
	if strings.Contains(out, "newSuperior") {
		t.Errorf("rename in place shows a newSuperior:\n%s", out)
	}
	for _, secret := range []string{"dave-plaintext-pw", "david-new-plaintext"} {
		if strings.Contains(out, secret) {
			t.Fatalf("a password reached the changelog:\n%s", out)
		}
	}
	if !strings.Contains(out, "changes:: ") && !strings.Contains(out, "changes: ") {
		t.Fatalf("no changes attribute:\n%s", out)
	}
}

func TestChangelogEntryContents(t *testing.T) {
	st := newStack(t)
	c := st.conn(t, adminDN, adminPW)
	res, err := search(c, "changeNumber="+itoa(st.seqs["add"])+",cn=changelog", ldap.ScopeBaseObject, "(objectClass=*)")
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("base search of the add: %v (%d entries)", err, len(res.Entries))
	}
	changes := res.Entries[0].GetAttributeValue("changes")
	want := "objectClass: inetOrgPerson\nuid: dave\nmail: dave@example.com\nuserPassword: (password)\n"
	if changes != want {
		t.Errorf("changes of the add:\n%q\nwant\n%q", changes, want)
	}
	res, err = search(c, "changeNumber="+itoa(st.seqs["password"])+",cn=changelog", ldap.ScopeBaseObject, "(objectClass=*)", "changes", "changeType", "secretState")
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("base search of the password change: %v", err)
	}
	if got := res.Entries[0].GetAttributeValue("changes"); got != "replace: userPassword\nuserPassword: (password)\n-\n" {
		t.Errorf("changes of the password change: %q", got)
	}
	if got := res.Entries[0].GetAttributeValue("secretState"); got != "encrypted" {
		t.Errorf("secretState %q, want encrypted", got)
	}
	if len(res.Entries[0].Attributes) != 3 {
		t.Errorf("asked for 3 attributes, got %d", len(res.Entries[0].Attributes))
	}
	res, err = search(c, "changeNumber="+itoa(st.seqs["modify"])+",cn=changelog", ldap.ScopeBaseObject, "(objectClass=*)", "changes")
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("base search of the modify: %v", err)
	}
	if got := res.Entries[0].GetAttributeValue("changes"); got != "replace: telephoneNumber\ntelephoneNumber: +1 555 0199\n-\n" {
		t.Errorf("changes of the modify: %q", got)
	}

	// A change number that does not exist.
	_, err = search(c, "changeNumber=999,cn=changelog", ldap.ScopeBaseObject, "(objectClass=*)")
	if resultCode(err) != ldap.LDAPResultNoSuchObject {
		t.Errorf("missing change: %v, want noSuchObject", err)
	}
}

func TestChangelogFiltersPagingAndLimits(t *testing.T) {
	st := newStack(t)
	c := st.conn(t, adminDN, adminPW)
	from := st.seqs["rename"]
	cases := []struct {
		filter string
		want   int
	}{
		{"(changeNumber>=" + itoa(from) + ")", 3},
		{"(&(changeNumber>=" + itoa(st.seqs["modify"]) + ")(changeNumber<=" + itoa(st.seqs["rename"]) + "))", 2},
		{"(changeType=modrdn)", 1},
		{"(targetDN=UID=Dave,OU=People,DC=Example,DC=Com)", 3},
		{"(targetDN=uid=dav*)", 5},
		{"(!(changeType=modify))", 3},
		{"(|(changeType=add)(changeType=delete))", 2},
		{"(deliveryState=committed)", 5},
		{"(lastError=*)", 0},
		{"(changes=*telephoneNumber*)", 1},
		{"(changeNumber=" + itoa(st.seqs["password"]) + ")", 1},
		{"(&(changeNumber>=" + itoa(st.seqs["modify"]) + ")(changeType=delete))", 1},
		{"(changeNumber>=999)", 0},
		{"(changeNumber<=" + itoa(st.seqs["modify"]) + ")", 2},
	}
	for _, tc := range cases {
		res, err := search(c, "cn=changelog", ldap.ScopeSingleLevel, tc.filter, "changeNumber")
		if err != nil {
			t.Errorf("%s: %v", tc.filter, err)
			continue
		}
		if len(res.Entries) != tc.want {
			t.Errorf("%s: %d entries, want %d", tc.filter, len(res.Entries), tc.want)
		}
	}

	// Paged: two entries a page, all five in order.
	res, err := c.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"changeNumber"}, nil), 2)
	if err != nil {
		t.Fatalf("paged search: %v", err)
	}
	var got []string
	for _, e := range res.Entries {
		got = append(got, e.GetAttributeValue("changeNumber"))
	}
	want := []string{itoa(st.seqs["add"]), itoa(st.seqs["modify"]), itoa(st.seqs["rename"]), itoa(st.seqs["password"]), itoa(st.seqs["delete"])}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("paged change numbers %v, want %v", got, want)
	}

	// Size limit.
	res, err = c.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		2, 0, false, "(objectClass=*)", []string{"1.1"}, nil))
	if resultCode(err) != ldap.LDAPResultSizeLimitExceeded || res == nil || len(res.Entries) != 2 {
		t.Errorf("size limit 2: %v, %v", err, res)
	}

	// ldapsearch's own paging.
	out, code := st.ldapsearch(t, "-E", "pr=2/noprompt", "-b", "cn=changelog", "-s", "one", "(objectClass=*)", "changeNumber")
	if code != 0 || strings.Count(out, "changeNumber: ") != 5 {
		t.Errorf("ldapsearch -E pr=2: exit %d\n%s", code, out)
	}
}

func TestMonitorShowsCountersAndBacklog(t *testing.T) {
	st := newStack(t)
	c := st.conn(t, adminDN, adminPW)
	res, err := search(c, "cn=ldapgate,cn=monitor", ldap.ScopeWholeSubtree, "(objectClass=*)")
	if err != nil {
		t.Fatalf("search cn=monitor: %v", err)
	}
	byDN := map[string]*ldap.Entry{}
	for _, e := range res.Entries {
		byDN[e.DN] = e
	}
	for _, dn := range []string{"cn=ldapgate,cn=monitor", "cn=connections,cn=ldapgate,cn=monitor", "cn=operations,cn=ldapgate,cn=monitor", "cn=upstream,cn=ldapgate,cn=monitor", "cn=journal,cn=ldapgate,cn=monitor"} {
		if byDN[dn] == nil {
			t.Fatalf("no %s in %d entries", dn, len(res.Entries))
		}
	}
	if got := byDN["cn=connections,cn=ldapgate,cn=monitor"].GetAttributeValue("currentConnections"); got != "1" {
		t.Errorf("currentConnections %q, want 1", got)
	}
	// The gateway's counter includes the session's connection to this
	// subtree besides its upstream one.
	if got := byDN["cn=upstream,cn=ldapgate,cn=monitor"].GetAttributeValue("upstreamConnections"); got != "1" && got != "2" {
		t.Errorf("upstreamConnections %q, want 1 or 2 (the bind went upstream)", got)
	}
	if got := byDN["cn=upstream,cn=ldapgate,cn=monitor"].GetAttributeValue("upstreamsUp"); got != "1" {
		t.Errorf("upstreamsUp %q, want 1", got)
	}
	u1, u2 := byDN["cn=upstream1,cn=upstream,cn=ldapgate,cn=monitor"], byDN["cn=upstream2,cn=upstream,cn=ldapgate,cn=monitor"]
	if u1 == nil || u2 == nil {
		t.Fatalf("no per-upstream entries")
	}
	if u1.GetAttributeValue("upstreamURL") != st.upstrm.URL || u1.GetAttributeValue("status") != "up" || u1.GetAttributeValue("since") != "20261128120000Z" {
		t.Errorf("upstream1: %v", u1.Attributes)
	}
	if u2.GetAttributeValue("status") != "down" || u2.GetAttributeValue("lastError") != "connection refused" {
		t.Errorf("upstream2: %v", u2.Attributes)
	}
	if got := byDN["cn=journal,cn=ldapgate,cn=monitor"].GetAttributeValue("backlog"); got != "5" {
		t.Errorf("backlog %q, want 5", got)
	}
	if got := byDN["cn=journal,cn=ldapgate,cn=monitor"].GetAttributeValue("oldestPendingChangeNumber"); got != itoa(st.seqs["add"]) {
		t.Errorf("oldestPendingChangeNumber %q", got)
	}
	// One level under cn=monitor: the four children only.
	res, err = search(c, "cn=ldapgate,cn=monitor", ldap.ScopeSingleLevel, "(objectClass=*)", "1.1")
	if err != nil || len(res.Entries) != 4 {
		t.Errorf("one-level search: %v, %d entries", err, len(res.Entries))
	}
	// A second client shows up in the counters.
	st.conn(t, adminDN, adminPW)
	res, err = search(c, "cn=connections,cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)", "currentConnections")
	if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("currentConnections") != "2" {
		t.Errorf("after a second client: %v %v", err, res)
	}
}

func TestSubtreeIsForAdminsAndReadOnly(t *testing.T) {
	st := newStack(t)
	alice := st.conn(t, aliceDN, slapd.AlicePassword)
	anon := st.conn(t, "", "")
	for name, c := range map[string]*ldap.Conn{"alice": alice, "anonymous": anon} {
		for _, base := range []string{"cn=changelog", "cn=ldapgate,cn=monitor", "changeNumber=1,cn=changelog"} {
			_, err := search(c, base, ldap.ScopeWholeSubtree, "(objectClass=*)")
			if resultCode(err) != ldap.LDAPResultInsufficientAccessRights {
				t.Errorf("%s reading %s: %v, want insufficientAccessRights", name, base, err)
			}
		}
	}
	// Alice still reads the directory on the same connection.
	if _, err := search(alice, suffix, ldap.ScopeWholeSubtree, "(uid=bob)"); err != nil {
		t.Errorf("alice's directory search after the refusal: %v", err)
	}
	admin := st.conn(t, adminDN, adminPW)
	m := ldap.NewModifyRequest("cn=changelog", nil)
	m.Replace("description", []string{"x"})
	if err := admin.Modify(m); resultCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("modify cn=changelog: %v, want unwillingToPerform", err)
	}
	if err := admin.Del(ldap.NewDelRequest("changeNumber="+itoa(st.seqs["add"])+",cn=changelog", nil)); resultCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf("delete a change: %v, want unwillingToPerform", err)
	}
	// The journal is untouched.
	if r, err := st.journal.Get(st.seqs["add"]); err != nil || r.DN != "uid=dave,ou=people,"+suffix {
		t.Errorf("journal record after the refused delete: %v %v", r, err)
	}
}

// A session that uses the subtree keeps working after requests gldap
// cannot take (compare, abandon, a :dn: filter): Conn.Answer answers them.
func TestSessionSurvivesCompareAbandonAndOddFilters(t *testing.T) {
	st := newStack(t)
	c := st.conn(t, adminDN, adminPW)
	cn := "changeNumber=" + itoa(st.seqs["rename"]) + ",cn=changelog"
	ok, err := c.Compare(cn, "changeType", "modrdn")
	if err != nil || !ok {
		t.Errorf("compare changeType=modrdn: %v %v, want true", ok, err)
	}
	ok, err = c.Compare(cn, "changeType", "add")
	if err != nil || ok {
		t.Errorf("compare changeType=add: %v %v, want false", ok, err)
	}
	ok, err = c.Compare(cn, "targetDN", "UID=DAVE,ou=people,dc=example,dc=com")
	if err != nil || !ok {
		t.Errorf("compare targetDN in other case: %v %v, want true", ok, err)
	}
	if _, err := c.Compare(cn, "noSuchThing", "x"); resultCode(err) != ldap.LDAPResultNoSuchAttribute {
		t.Errorf("compare of a missing attribute: %v", err)
	}
	if _, err := c.Compare("changeNumber=999,cn=changelog", "changeType", "add"); resultCode(err) != ldap.LDAPResultNoSuchObject {
		t.Errorf("compare of a missing change: %v", err)
	}
	_, err = search(c, "cn=changelog", ldap.ScopeSingleLevel, "(cn:dn:=changelog)")
	if resultCode(err) != ldap.LDAPResultUnwillingToPerform {
		t.Errorf(":dn: filter: %v, want unwillingToPerform", err)
	}
	// An Abandon on the session goes to the subtree connection too.
	raw := rawDial(t, st.url)
	raw.roundTrip(t, bindMsg(1, adminDN, adminPW), 1)
	raw.roundTrip(t, searchMsg(t, 2, "cn=ldapgate,cn=monitor", "(objectClass=*)"), 2)
	raw.write(t, abandonMsg(3, 2))
	raw.roundTrip(t, searchMsg(t, 4, "cn=changelog", "(changeType=add)"), 4)
	raw.roundTrip(t, searchMsg(t, 5, suffix, "(uid=alice)"), 5)
	// The go-ldap session still works too.
	if res, err := search(c, "cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)"); err != nil || len(res.Entries) != 1 {
		t.Errorf("search after the odd requests: %v", err)
	}
}

// The loopback port serves nothing to a client without a token.
func TestLoopbackPortRefusesStrangers(t *testing.T) {
	st := newStack(t)
	st.sub.mu.Lock()
	addr := st.sub.addr
	st.sub.mu.Unlock()
	c, err := ldap.DialURL("ldap://" + addr)
	if err != nil {
		t.Fatalf("dial the subtree port: %v", err)
	}
	defer c.Close()
	c.SetTimeout(5 * time.Second)
	_, err = search(c, "cn=changelog", ldap.ScopeWholeSubtree, "(objectClass=*)")
	if resultCode(err) != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("unauthenticated search: %v, want insufficientAccessRights", err)
	}
	if err := c.Bind(internalBindDN, strings.Repeat("0", 64)); resultCode(err) != ldap.LDAPResultInvalidCredentials {
		t.Errorf("bind with a made-up token: %v, want invalidCredentials", err)
	}
	_, err = search(c, "cn=changelog", ldap.ScopeWholeSubtree, "(objectClass=*)")
	if resultCode(err) != ldap.LDAPResultInsufficientAccessRights {
		t.Errorf("search after the failed bind: %v, want insufficientAccessRights", err)
	}
}

// Close ends promptly even while sessions hold subtree connections
// (gldap's own Stop waits for idle clients for ever).
func TestCloseWithOpenConnections(t *testing.T) {
	st := newStack(t)
	c := st.conn(t, adminDN, adminPW)
	if _, err := search(c, "cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.sub.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked with a session connected")
	}
	// The session now gets an answer, not a hang, for the subtree...
	_, err := search(c, "cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)")
	if err == nil {
		t.Errorf("search after Close succeeded")
	}
	if _, err := st.sub.Dial(context.Background()); err == nil {
		t.Errorf("Dial after Close succeeded")
	}
}

// rawLDAP sends hand-built messages, to send an Abandon (go-ldap has none).
type rawLDAP struct {
	net.Conn
	r *ldapwire.Reader
}

func rawDial(t *testing.T, url string) *rawLDAP {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "ldap://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawLDAP{c, ldapwire.NewReader(c, 16<<20)}
}

func (c *rawLDAP) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// roundTrip sends a request and reads until its final response, which
// must be a success.
func (c *rawLDAP) roundTrip(t *testing.T, b []byte, id int64) {
	t.Helper()
	c.write(t, b)
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := c.r.Next()
		if err != nil {
			t.Fatalf("waiting for the answer to %d: %v", id, err)
		}
		res, err := ldapwire.DecodeResult(m.OpContent)
		if m.ID == 0 {
			t.Fatalf("notice of disconnection: %s (%v)", res.Diagnostic, err)
		}
		if m.ID != id || !ldapwire.IsFinal(m.Op) {
			continue
		}
		if err != nil || res.Code != 0 {
			t.Fatalf("message %d: result %d %s (%v)", id, res.Code, res.Diagnostic, err)
		}
		return
	}
}

func bindMsg(id int64, dn, pw string) []byte {
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendBindRequest(nil, dn, []byte(pw)))
}

func abandonMsg(id, target int64) []byte {
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendInt(nil, ldapwire.TagAbandonRequest, target))
}

func searchMsg(t *testing.T, id int64, base, filter string) []byte {
	t.Helper()
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		t.Fatal(err)
	}
	return ldapwire.AppendMessage(nil, id, ldapwire.AppendSearchRequest(nil, ldapwire.SearchRequest{
		Base: base, Scope: ldapwire.ScopeSubtree, DerefAliases: ldapwire.DerefNever, Filter: f.Bytes(),
	}))
}

// Many sessions read the subtree at once while the journal grows; every
// answer is complete and consistent (run with -race).
func TestConcurrentReadsWhileTheJournalGrows(t *testing.T) {
	st := newStack(t)
	const clients, rounds = 4, 8
	errs := make(chan error, clients)
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; i < 100; i++ {
			select {
			case <-stop:
				return
			default:
			}
			seq, err := st.journal.Prepare(context.Background(), &store.Record{Kind: store.KindGroup, Op: store.OpModify,
				DN: "cn=staff,ou=groups," + suffix, Changes: []store.Change{{Op: "add", Attr: "member", Values: []string{aliceDN}}}})
			if err == nil {
				err = st.journal.Commit(context.Background(), seq, "")
			}
			if err != nil {
				t.Errorf("journal write %d: %v", i, err)
				return
			}
		}
	}()
	for i := 0; i < clients; i++ {
		go func() {
			c, err := ldap.DialURL(st.url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetTimeout(10 * time.Second)
			if err := c.Bind(adminDN, adminPW); err != nil {
				errs <- err
				return
			}
			for r := 0; r < rounds; r++ {
				res, err := search(c, "cn=changelog", ldap.ScopeWholeSubtree, "(objectClass=*)", "changeNumber", "lastChangeNumber")
				if err != nil {
					errs <- err
					return
				}
				if len(res.Entries) < 6 || res.Entries[0].DN != "cn=changelog" {
					errs <- fmt.Errorf("round %d: %d entries", r, len(res.Entries))
					return
				}
				if _, err := c.Compare("cn=changelog", "cn", "changelog"); err != nil {
					errs <- err
					return
				}
				if _, err := search(c, "cn=ldapgate,cn=monitor", ldap.ScopeWholeSubtree, "(objectClass=*)"); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	<-writerDone
}

// A follower's range read skips records that are gone (dropped, purged).
func TestChangeNumberRangeSkipsGaps(t *testing.T) {
	st := newStack(t)
	if err := st.journal.Drop(context.Background(), st.seqs["modify"]); err != nil {
		t.Fatal(err)
	}
	c := st.conn(t, adminDN, adminPW)
	for filter, want := range map[string]int{
		"(changeNumber>=" + itoa(st.seqs["add"]) + ")":    4,
		"(changeNumber=" + itoa(st.seqs["modify"]) + ")":  0,
		"(changeNumber<=" + itoa(st.seqs["rename"]) + ")": 2,
	} {
		res, err := search(c, "cn=changelog", ldap.ScopeWholeSubtree, filter, "changeNumber")
		if err != nil || len(res.Entries) != want {
			t.Errorf("%s: %v, %d entries, want %d", filter, err, len(res.Entries), want)
		}
	}
}

// TestChangelogStreamsAcrossJournalPages proves that a search of
// cn=changelog walks a journal longer than one read of it: every record
// once and in order, plain and paged (pages cutting across the journal's
// reads), with a bounded change number range, the size limit counted over
// the whole paged search, and a forged cookie refused.
func TestChangelogStreamsAcrossJournalPages(t *testing.T) {
	st := newStack(t)
	const extra = 3*journalPageRecords + 5
	for i := range extra {
		st.record(t, fmt.Sprintf("m%d", i), &store.Record{Kind: store.KindAccount, Op: store.OpModify,
			DN: "uid=erin,ou=people," + suffix, Actor: adminDN,
			Changes: []store.Change{{Op: "replace", Attr: "description", Values: []string{fmt.Sprint(i)}}}}, "")
	}
	total := extra + 5
	c := st.conn(t, adminDN, adminPW)
	ordered := func(entries []*ldap.Entry) error {
		prev := 0
		for _, e := range entries {
			n, err := strconv.Atoi(e.GetAttributeValue("changeNumber"))
			if err != nil || n <= prev {
				return fmt.Errorf("change number %q after %d", e.GetAttributeValue("changeNumber"), prev)
			}
			prev = n
		}
		return nil
	}
	res, err := search(c, "cn=changelog", ldap.ScopeSingleLevel, "(objectClass=*)", "changeNumber")
	if err != nil || len(res.Entries) != total || ordered(res.Entries) != nil {
		t.Fatalf("plain search: %v, %d entries (want %d), order: %v", err, len(res.Entries), total, ordered(res.Entries))
	}
	res, err = c.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"changeNumber"}, nil), 7)
	if err != nil || len(res.Entries) != total+1 || ordered(res.Entries[1:]) != nil || res.Entries[0].DN != "cn=changelog" {
		t.Fatalf("paged subtree search: %v, %d entries (want %d with cn=changelog first)", err, len(res.Entries), total+1)
	}
	lo := st.seqs["m10"]
	hi := st.seqs[fmt.Sprintf("m%d", 2*journalPageRecords)]
	res, err = c.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, fmt.Sprintf("(&(changeNumber>=%d)(changeNumber<=%d))", lo, hi), []string{"changeNumber"}, nil), 9)
	if err != nil || uint64(len(res.Entries)) != hi-lo+1 || ordered(res.Entries) != nil {
		t.Fatalf("paged range search: %v, %d entries, want %d", err, len(res.Entries), hi-lo+1)
	}
	res, err = c.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		20, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 6)
	if resultCode(err) != ldap.LDAPResultSizeLimitExceeded || res == nil || len(res.Entries) != 20 {
		t.Fatalf("paged search with size limit 20: %v, %v", err, res)
	}
	forged := ldap.NewControlPaging(5)
	forged.SetCookie([]byte("12"))
	_, err = c.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", nil, []ldap.Control{forged}))
	if resultCode(err) != ldap.LDAPResultProtocolError {
		t.Fatalf("forged cookie: %v, want protocolError", err)
	}
}

// A search of cn=changelog without a time limit of its own stops at the
// server's cap with timeLimitExceeded and a diagnostic naming the cap; one
// of cn=monitor too. The cap is far below any walk's duration here, so
// the stream stops before its first entry.
func TestChangelogSearchStopsAtTheServerTimeLimit(t *testing.T) {
	st := newStackWith(t, func(c *Config) { c.SearchTimeLimit = time.Nanosecond })
	c := st.conn(t, adminDN, adminPW)
	for _, base := range []string{"cn=changelog", "cn=ldapgate,cn=monitor"} {
		res, err := search(c, base, ldap.ScopeWholeSubtree, "(objectClass=*)", "1.1")
		if resultCode(err) != ldap.LDAPResultTimeLimitExceeded || !strings.Contains(err.Error(), "gateway's time limit of 1ns") {
			t.Errorf("search of %s under a 1ns cap: %v, want timeLimitExceeded (3) naming the cap", base, err)
		}
		if res != nil && len(res.Entries) != 0 {
			t.Errorf("search of %s under a 1ns cap sent %d entries", base, len(res.Entries))
		}
	}
	// A paged search gets the cap per page, and stops just as well.
	_, err := c.SearchWithPaging(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"1.1"}, nil), 2)
	if resultCode(err) != ldap.LDAPResultTimeLimitExceeded {
		t.Errorf("paged search under a 1ns cap: %v, want timeLimitExceeded (3)", err)
	}
}

// A clustered gateway's node shows as cn=cluster under the monitor, its
// attributes in name order, each value as the source gave it.
func TestMonitorShowsTheCluster(t *testing.T) {
	state := map[string][]string{
		"role": {"leader"}, "term": {"7"}, "delivering": {"true"},
		"node": {"a 127.0.0.1:7001 applied=40 lag=0", "b 127.0.0.1:7002 unreachable: refused"},
	}
	st := newStackWith(t, func(c *Config) { c.Cluster = func() map[string][]string { return state } })
	c := st.conn(t, adminDN, adminPW)
	res, err := search(c, "cn=cluster,cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)")
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("search cn=cluster: %v, %v", err, res)
	}
	e := res.Entries[0]
	if e.GetAttributeValue("role") != "leader" || e.GetAttributeValue("term") != "7" || e.GetAttributeValue("delivering") != "true" {
		t.Errorf("cn=cluster: %v", e.Attributes)
	}
	if got := e.GetAttributeValues("node"); len(got) != 2 || !strings.Contains(got[1], "unreachable") {
		t.Errorf("node values %q", got)
	}
	// A lone gateway has no such entry.
	lone := newStack(t).conn(t, adminDN, adminPW)
	if _, err := search(lone, "cn=cluster,cn=ldapgate,cn=monitor", ldap.ScopeBaseObject, "(objectClass=*)"); resultCode(err) != ldap.LDAPResultNoSuchObject {
		t.Errorf("a lone gateway's cn=cluster: %v, want noSuchObject", err)
	}
}
