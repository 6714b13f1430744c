package e2e

// Attacks on writes that wait (gateway/mirror/onway.go): a write to an
// entry whose identity change (a modify DN, or a modify of what names,
// keys or classifies it) is on its way waits up to 10 s, then is answered
// busy. While it waits the client abandons it, cancels it, closes its
// connection, reuses its message ID, unbinds, or stops reading its
// answers (--write-timeout). Also: an account and a group of the same
// name, ppolicy's lock attribute, and renames chained round on one
// connection. Each case checks the answers, the directory, and that
// Axigen equals the directory afterwards.

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// cancelOpRequest is a well-formed Cancel (RFC 3909) of target.
func cancelOpRequest(id, target int64) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, "1.3.6.1.1.8", "cancel"))
	value := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "cancelRequestValue")
	value.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, target, "cancelID"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 1, string(value.Bytes()), "value"))
	return envelope(id, op)
}

// holdingWrites counts the gateway's goroutines waiting in onWay.hold,
// read from its goroutine profile on the admin socket: the observable
// sign that a write waits for an identity change of its entry.
func (e *mirrorEnv) holdingWrites() (int, error) {
	body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=2", 5*time.Second)
	if err != nil {
		return 0, err
	}
	return strings.Count(string(body), "mirror.(*onWay).hold("), nil
}

// waitHolding waits until n writes wait in onWay.hold.
func (e *mirrorEnv) waitHolding(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 8*time.Second, fmt.Sprintf("%d writes waiting for an identity change", n), func() error {
		got, err := e.holdingWrites()
		if err != nil {
			return err
		}
		if got < n {
			return fmt.Errorf("%d waiting", got)
		}
		return nil
	})
}

// freezeDirectory stops slapd (SIGSTOP); the returned func resumes it.
func (e *mirrorEnv) freezeDirectory(t *testing.T) (resume func()) {
	t.Helper()
	pid := e.dir.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(resume)
	return resume
}

// phoneOf is the telephoneNumber slapd holds for uid ("" when gone).
func (e *mirrorEnv) phoneOf(uid string) string {
	en := e.directoryEntry(userDN(uid), "telephoneNumber")
	if en == nil {
		return ""
	}
	return en.GetAttributeValue("telephoneNumber")
}

// rawAdmin is a raw connection bound as the gateway admin.
func (e *mirrorEnv) rawAdmin(t *testing.T) *rawConn {
	t.Helper()
	c := dialRaw(t, e.gw.URL)
	c.send(t, bindRequest(1, mirrorAdminDN, e.dir.RootPW))
	c.expectResult(t, 1, 0)
	return c
}

// collect reads c's messages until it closes or d passes, keyed by ID
// (the last answer with a result for each), plus the error that ended it.
func collect(c *rawConn, d time.Duration) (map[int64][]ldapMessage, error) {
	msgs, err := c.drain(d)
	out := map[int64][]ldapMessage{}
	for _, m := range msgs {
		out[m.ID] = append(out[m.ID], m)
	}
	return out, err
}

// The writes of five clients wait for identity changes of their entries,
// made on other connections while the directory is frozen (so each stays
// on its way as long as the test wants). While they wait:
//   - w1's client abandons its write, cancels it (RFC 3909) and searches;
//   - w2's client closes its connection;
//   - w3's client sends a second request with the waiting write's ID;
//   - w4's client unbinds;
//   - w5 is renamed to w5r: one client writes to the old DN, one to the new;
//   - w7 is renamed to w7z, and w8 to w7 (the name w7's rename frees).
//
// Then the directory resumes. No write may be answered busy (each waited
// far less than 10 s), every answer given is a standard code, a write's
// outcome matches the directory, nothing stays prepared in the journal,
// and Axigen equals the directory.
func TestAttackWaitsClientMovesWhileWaiting(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := 1; i <= 8; i++ {
		uid := fmt.Sprintf("w%d", i)
		if err := admin.Add(accountAdd(userDN(uid), uid)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)

	// The waiting clients, bound and warmed (their identity and targets
	// read) before the directory freezes.
	b := map[string]*rawConn{}
	for _, name := range []string{"w1", "w2", "w3", "w4", "w5old", "w5new"} {
		c := e.rawAdmin(t)
		target := name[:2]
		c.send(t, modifyPhone(2, userDN(target), "+1 555 0001"))
		c.expectResult(t, 2, 0)
		b[name] = c
	}
	e.waitDrained(20*time.Second, false)

	// The identity changes, each on a connection of its own, bound before
	// the directory freezes (a bind needs it).
	var changers []*ldap.Conn
	for range 4 {
		changers = append(changers, bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW))
	}
	renamer := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	renamer2 := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	b["w8"] = e.rawAdmin(t)
	resume := e.freezeDirectory(t)
	type answer struct {
		what string
		err  error
	}
	answers := make(chan answer, 6)
	for i, c := range changers {
		uid := fmt.Sprintf("w%d", i+1)
		go func() {
			m := ldap.NewModifyRequest(userDN(uid), nil)
			m.Replace("mail", []string{uid + ".new@example.com"})
			answers <- answer{"mail of " + uid, c.Modify(m)}
		}()
	}
	go func() {
		answers <- answer{"rename w5 -> w5r", renamer.ModifyDN(ldap.NewModifyDNRequest(userDN("w5"), "uid=w5r", true, ""))}
	}()
	go func() {
		answers <- answer{"rename w7 -> w7z", renamer2.ModifyDN(ldap.NewModifyDNRequest(userDN("w7"), "uid=w7z", true, ""))}
	}()
	// Each past its hold, reading its target from the frozen directory.
	waitFor(t, 8*time.Second, "four mail changes and two renames holding their entries", func() error {
		body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=2", 5*time.Second)
		if err != nil {
			return err
		}
		// In intercept, past identify and the hold: reading the frozen
		// directory (the target, a name's uniqueness) with the DNs held.
		holding := strings.Count(string(body), "mirror.(*onWay).hold(")
		classifying := strings.Count(string(body), "mirror.(*Mirror).intercept(") -
			strings.Count(string(body), "mirror.(*Mirror).identify(") - holding
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		// Past classify, a change is prepared, relayed to the frozen directory.
		if classifying+st.Prepared < 6 || holding > 0 {
			return fmt.Errorf("%d held in intercept, %d prepared, %d waiting in hold", classifying, st.Prepared, holding)
		}
		return nil
	})
	// The attacks, each sent in one segment.
	var burst []byte
	burst = append(burst, modifyPhone(10, userDN("w1"), "+1 555 0111")...)
	burst = append(burst, abandonRequest(11, 10)...)
	burst = append(burst, cancelOpRequest(12, 10)...)
	burst = append(burst, searchRequest(t, 13, userDN("w1"), "(objectClass=*)", "telephoneNumber")...)
	b["w1"].send(t, burst)
	b["w2"].send(t, modifyPhone(10, userDN("w2"), "+1 555 0222"))
	burst = append(modifyPhone(10, userDN("w3"), "+1 555 0333"), modifyPhone(10, userDN("w6"), "+1 555 0666")...)
	burst = append(burst, searchRequest(t, 11, userDN("w3"), "(objectClass=*)", "telephoneNumber")...)
	b["w3"].send(t, burst)
	b["w4"].send(t, append(modifyPhone(10, userDN("w4"), "+1 555 0444"), unbindRequest(11)...))
	b["w5old"].send(t, modifyPhone(10, userDN("w5"), "+1 555 0550"))
	b["w5new"].send(t, modifyPhone(10, userDN("w5r"), "+1 555 0551"))
	// w8 renamed to the name w7's rename gives up, while that is on its way.
	b["w8"].send(t, modDNRequest(10, userDN("w8"), "uid=w7", ""))
	e.waitHolding(t, 7)
	_ = b["w2"].Close()
	start := time.Now()
	resume()

	for range 6 {
		select {
		case a := <-answers:
			if a.err != nil {
				t.Errorf("%s: %v", a.what, a.err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the identity changes were not all answered within 20 s of the directory's resuming")
		}
	}

	// w1: the abandoned, cancelled write, then a search.
	got, err := collect(b["w1"], 3*time.Second)
	t.Logf("w1's client: %v (ended: %v)", got, err)
	if !isTimeout(err) {
		t.Errorf("w1's connection ended after abandon and cancel: %v", err)
	}
	w1Made := e.phoneOf("w1") == "+1 555 0111"
	if ms := got[10]; len(ms) > 0 {
		code := ms[len(ms)-1].ResultCode
		if code == 0 && !w1Made {
			t.Errorf("w1's write answered success, but the directory has phone %q", e.phoneOf("w1"))
		}
		if code != 0 && w1Made {
			t.Errorf("w1's write answered %d, but the directory made it", code)
		}
		if code == ldap.LDAPResultBusy {
			t.Errorf("w1's write answered busy after waiting %v", time.Since(start))
		}
	}
	if ms := got[12]; len(ms) != 1 || (ms[0].ResultCode != ldap.LDAPResultCannotCancel && ms[0].ResultCode != ldap.LDAPResultNoSuchOperation) {
		t.Errorf("Cancel of the waiting write: %v, want one answer, cannotCancel (121) or noSuchOperation (119)", ms)
	}
	if ms := got[13]; len(ms) == 0 || ms[len(ms)-1].ResultCode != 0 {
		t.Errorf("the search after the abandoned write: %v, want entries and success", ms)
	}
	t.Logf("w1 phone in the directory: %q (write made: %v)", e.phoneOf("w1"), w1Made)

	// w3: the reused ID; the second request (w6) must not have been made
	// unless answered; the first is made or not as answered.
	got, err = collect(b["w3"], 3*time.Second)
	t.Logf("w3's client: %v (ended: %v)", got, err)
	if e.phoneOf("w6") == "+1 555 0666" {
		t.Errorf("w6's phone was changed by a request reusing a waiting write's message ID (answers %v)", got[10])
	}
	if ms := got[0]; len(ms) > 0 && !ms[0].isNoticeOfDisconnection() {
		t.Errorf("w3's client got an unsolicited message that is no notice of disconnection: %v", ms)
	}
	for _, m := range got[10] {
		if m.ResultCode == 0 && e.phoneOf("w3") != "+1 555 0333" {
			t.Errorf("w3's write answered success, the directory has %q", e.phoneOf("w3"))
		}
	}

	// w4: the unbind waits for the write; the write is made and answered.
	got, err = collect(b["w4"], 5*time.Second)
	t.Logf("w4's client: %v (ended: %v)", got, err)
	if isTimeout(err) {
		t.Errorf("w4's connection still open 5 s after its unbind")
	}
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != 0 {
		t.Errorf("w4's write before the unbind: %v, want success", ms)
	}
	if p := e.phoneOf("w4"); p != "+1 555 0444" {
		t.Errorf("w4's phone %q after its write and unbind", p)
	}

	// w5: the write to the old DN finds nothing there (noSuchObject), the
	// one to the new DN is made.
	got, _ = collect(b["w5old"], 2*time.Second)
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != ldap.LDAPResultNoSuchObject {
		t.Errorf("the write to w5's old DN, waiting for its rename: %v, want noSuchObject (32)", ms)
	}
	got, _ = collect(b["w5new"], 2*time.Second)
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != 0 {
		t.Errorf("the write to w5r, waiting for the rename to it: %v, want success", ms)
	}
	if p := e.phoneOf("w5r"); p != "+1 555 0551" {
		t.Errorf("w5r's phone %q", p)
	}
	t.Logf("w2 (closed while waiting) phone in the directory: %q", e.phoneOf("w2"))
	got, _ = collect(b["w8"], 2*time.Second)
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != 0 {
		t.Errorf("w8's rename to w7, waiting for w7's rename away: %v, want success", ms)
	}

	e.requireAlive()
	st := e.waitDrained(30*time.Second, false)
	t.Logf("journal: %+v", st)
	e.waitMirrored(20*time.Second, false)
	for name, person := range map[string]string{"w7": "w8", "w7z": "w7", "w5r": "w5"} {
		if a, ok := e.sim.Account(mirrorDomain, name); !ok || a.Password != "pw-"+person {
			t.Errorf("Axigen account %s: %+v %v, want %s's mailbox (password pw-%s)", name, a, ok, person, person)
		}
	}
	if crash := e.logCrash(4000); crash != "" {
		t.Errorf("gateway log shows a crash:\n%s", crash)
	}
	e.noSecretsInLog(t, e.dir.RootPW, "pw-w1", "pw-w5")
}

// isTimeout says err is a read deadline passing (the connection open).
func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// bindConnNoFatal is bindConn for goroutines: nil on failure.
func bindConnNoFatal(url, dn, pw string) *ldap.Conn {
	c, err := ldap.DialURL(url)
	if err != nil {
		return nil
	}
	c.SetTimeout(30 * time.Second)
	if err := c.Bind(dn, pw); err != nil {
		c.Close()
		return nil
	}
	return c
}

// A waiting write whose client stops reading: the client's own answers
// jam behind a search of an 8 MiB entry it does not read, and its mail
// change of an account (an identity change) is answered by the directory
// but not settled while the answer waits behind. Another client's write
// to the account waits. With --write-timeout 6s (below the 10 s the
// waiting write is given), the silent client is cut, its change settles,
// and the waiting write must then be made (not busy). Six such clients at
// once, against --max-connections 16, and a seventh whose own write waits
// for its own jammed mail change: a fresh client is served
// throughout and after, and Axigen equals the directory.
func TestAttackWaitsSilentReadersHoldTheirEntries(t *testing.T) {
	const n = 6
	e := newAttackEnv(t, "", nil, "--write-timeout", "6s", "--max-connections", "16", "--max-connections-per-address", "0")
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := range n + 1 {
		uid := fmt.Sprintf("s%d", i)
		if err := admin.Add(accountAdd(userDN(uid), uid)); err != nil {
			t.Fatal(err)
		}
	}
	direct := bindConn(t, e.dir.URL, mirrorAdminDN, e.dir.RootPW)
	big := addBigEntry(t, direct)
	e.waitDrained(20*time.Second, false)

	// Small receive buffers, set before connecting (the window follows).
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10)
		})
	}}
	var silent []net.Conn
	for range n + 1 {
		conn, err := dialer.Dial("tcp", strings.TrimPrefix(e.gw.URL, "ldap://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		burst := append(bindRequest(1, mirrorAdminDN, e.dir.RootPW), searchRequest(t, 2, big, "(objectClass=*)", "description")...)
		if _, err := conn.Write(burst); err != nil {
			t.Fatal(err)
		}
		silent = append(silent, conn)
	}
	// Each session jammed writing the entry to its client.
	waitFor(t, 10*time.Second, "the silent clients' sessions jammed on their answers", func() error {
		body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=2", 5*time.Second)
		if err != nil {
			return err
		}
		if k := strings.Count(string(body), "(*session).writeClient("); k < n+1 {
			return fmt.Errorf("%d sessions writing", k)
		}
		return nil
	})
	jammed := time.Now()
	// The last silent client also sends a write of its own that waits for
	// its own mail change, jammed behind its own unread answers.
	self := fmt.Sprintf("s%d", n)
	if _, err := silent[n].Write(append(modifyRequest(3, userDN(self), "mail", self+".new@example.com"),
		modifyPhone(4, userDN(self), "+1 555 0888")...)); err != nil {
		t.Fatal(err)
	}
	for i, conn := range silent[:n] {
		if _, err := conn.Write(modifyRequest(3, userDN(fmt.Sprintf("s%d", i)), "mail", fmt.Sprintf("s%d.new@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Each silent client's mail change relayed, its answer unread behind
	// the entry, its record prepared.
	waitFor(t, 10*time.Second, "the silent clients' mail changes on their way", func() error {
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.Prepared < n+1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	t.Logf("mail changes prepared %v after the jam", time.Since(jammed))
	start := time.Now()
	type res struct {
		uid string
		err error
		d   time.Duration
	}
	results := make(chan res, n)
	for i := range n {
		uid := fmt.Sprintf("s%d", i)
		go func() {
			c := bindConnNoFatal(e.gw.URL, mirrorAdminDN, e.dir.RootPW)
			if c == nil {
				results <- res{uid, fmt.Errorf("bind failed"), 0}
				return
			}
			defer c.Close()
			m := ldap.NewModifyRequest(userDN(uid), nil)
			m.Replace("telephoneNumber", []string{"+1 555 0777"})
			err := c.Modify(m)
			results <- res{uid, err, time.Since(start)}
		}()
	}
	e.waitHolding(t, n+1) // the waiters, and the self-jammed client's phone
	// Served meanwhile: a fresh client's search.
	if err := gatewayServesMirror(e); err != nil {
		t.Errorf("a fresh client while %d silent clients hold their entries: %v", n, err)
	}
	for range n {
		select {
		case r := <-results:
			t.Logf("%s: %v after %v", r.uid, r.err, r.d)
			if r.err != nil {
				t.Errorf("the write to %s, waiting behind a silent client's mail change: %v (after %v)", r.uid, r.err, r.d)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the waiting writes not answered within 30 s")
		}
	}
	var wg sync.WaitGroup
	for i, conn := range silent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
			buf := make([]byte, 64<<10)
			total := 0
			var err error
			for err == nil {
				var k int
				k, err = conn.Read(buf)
				total += k
			}
			if isTimeout(err) {
				t.Errorf("silent client %d still connected, its session not cut (read %d bytes)", i, total)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		uid := fmt.Sprintf("s%d", i)
		en := e.directoryEntry(userDN(uid), "mail", "telephoneNumber")
		t.Logf("%s in the directory: mail %q phone %q", uid, en.GetAttributeValue("mail"), en.GetAttributeValue("telephoneNumber"))
	}
	en := e.directoryEntry(userDN(self), "mail", "telephoneNumber")
	t.Logf("%s (its own write waited behind its own unread answers) in the directory: mail %q phone %q",
		self, en.GetAttributeValue("mail"), en.GetAttributeValue("telephoneNumber"))
	// Its entry is free again: another client's write to it is made.
	waitFor(t, 15*time.Second, "a write to "+self+" not busy", func() error {
		return modifyDescription(admin, userDN(self), "after the cut")
	})
	if err := gatewayServesMirror(e); err != nil {
		t.Errorf("a fresh client after the silent ones were cut: %v", err)
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	e.noSecretsInLog(t, e.dir.RootPW, "pw-s0", "pw-s6")
}

// gatewayServesMirror binds as alice through the gateway and reads bob.
func gatewayServesMirror(e *mirrorEnv) error {
	c, err := ldap.DialURL(e.gw.URL)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetTimeout(5 * time.Second)
	if err := c.Bind(mirrorAdminDN, e.dir.RootPW); err != nil {
		return err
	}
	res, err := c.Search(ldap.NewSearchRequest(userDN("bob"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"mail"}, nil))
	if err != nil {
		return err
	}
	if len(res.Entries) != 1 {
		return fmt.Errorf("%d entries for bob", len(res.Entries))
	}
	return nil
}

// An account and a group of the same name (Axigen: an account's local
// part and a group's name share the domain's addresses): a group added
// with an account's name, an account renamed to a group's, a group
// renamed to an account's. Each must be refused with a standard code and
// the gateway's diagnostic (19, as for two accounts of one name), or
// Axigen cannot follow the directory.
func TestAttackWaitsAccountAndGroupOfOneName(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := admin.Add(accountAdd(userDN("twin"), "twin")); err != nil {
		t.Fatal(err)
	}
	g := ldap.NewAddRequest(groupDN("twin"), nil)
	g.Attribute("objectClass", []string{"groupOfNames"})
	g.Attribute("cn", []string{"twin"})
	g.Attribute("member", []string{userDN("alice")})
	// refused: each write giving an account a group's name, or a group an
	// account's, is refused by the gateway (19, naming the other entry).
	refused := func(what string, err error) {
		t.Helper()
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation) || !strings.Contains(err.Error(), "both addresses of the domain") {
			t.Errorf("%s: %v, want 19 with the gateway's diagnostic", what, err)
		}
	}
	refused("group twin beside account twin", admin.Add(g))
	// A group first, then an account renamed to its name.
	g2 := ldap.NewAddRequest(groupDN("pair"), nil)
	g2.Attribute("objectClass", []string{"groupOfNames"})
	g2.Attribute("cn", []string{"pair"})
	g2.Attribute("member", []string{userDN("bob")})
	if err := admin.Add(g2); err != nil {
		t.Fatal(err)
	}
	refused("account carol renamed to pair, a group's name", admin.ModifyDN(ldap.NewModifyDNRequest(userDN("carol"), "uid=pair", true, "")))
	// A group renamed to an account's name.
	refused("group pair renamed to bob, an account's name", admin.ModifyDN(ldap.NewModifyDNRequest(groupDN("pair"), "cn=bob", true, "")))
	for _, dn := range []string{groupDN("twin"), userDN("pair"), groupDN("bob")} {
		if e.directoryEntry(dn, "cn") != nil {
			t.Errorf("the directory has %s, which the gateway refused", dn)
		}
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	// In Axigen a group's name is an address of the domain as an account's
	// local part is (twin@example.com): the simulator keeps the two apart,
	// so the checker above cannot see the clash; a name held by both is
	// one the real server would have refused to the second ADD or SET
	// name, leaving it out of step with the directory.
	for _, a := range e.sim.Accounts(mirrorDomain) {
		for _, gr := range e.sim.Groups(mirrorDomain) {
			if strings.EqualFold(a.Name, gr.Name) {
				t.Errorf("%s@%s is both an account and a group: the gateway let the directory give one name to an account and a group", a.Name, mirrorDomain)
			}
		}
	}
	e.noSecretsInLog(t, e.dir.RootPW, "pw-twin")
}

// noSecretsInLog fails when the gateway log holds any of secrets.
func (e *mirrorEnv) noSecretsInLog(t *testing.T, secrets ...string) {
	t.Helper()
	log := e.logTail(1 << 30)
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the gateway log holds the secret %q", s)
		}
	}
}

// ppolicy's pwdAccountLockedTime (the OpenLDAP dialect's disabled
// attribute), with the ppolicy overlay loaded: an admin's lock disables
// the Axigen account, its removal enables it with its password; a lock
// set by a user on themselves is refused by someone (the directory: the
// attribute is operational).
func TestAttackWaitsPpolicyLock(t *testing.T) {
	e := newAttackEnv(t, "moduleload ppolicy\noverlay ppolicy\n", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	adminModify(t, admin, userDN("alice"), "pwdAccountLockedTime", "000001010000Z")
	e.waitAccount("alice", "disabled while locked", func(a axigensim.AccountState, ok bool) bool { return ok && !a.Enabled })
	if en := e.directoryEntry(userDN("alice"), "pwdAccountLockedTime"); en == nil || en.GetAttributeValue("pwdAccountLockedTime") == "" {
		t.Errorf("the directory has no lock on alice")
	}
	// The lock lifted together with a password change, in one modify.
	m := ldap.NewModifyRequest(userDN("alice"), nil)
	m.Delete("pwdAccountLockedTime", nil)
	m.Replace("userPassword", []string{"alice-unlocked-pw"})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.setKnownPassword("alice", "alice-unlocked-pw")
	e.waitAccount("alice", "enabled with its new password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "alice-unlocked-pw"
	})
	// bob locks himself.
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	m = ldap.NewModifyRequest(userDN("bob"), nil)
	m.Replace("pwdAccountLockedTime", []string{"000001010000Z"})
	err := bob.Modify(m)
	t.Logf("bob locking himself: %v", err)
	if err == nil {
		e.waitAccount("bob", "disabled once locked", func(a axigensim.AccountState, ok bool) bool { return ok && !a.Enabled })
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	e.noSecretsInLog(t, e.dir.RootPW, "alice-unlocked-pw")
}

// Renames chained round on one connection, pipelined in one segment with
// writes between: r1 -> r2, r2 -> r3, r3 -> r1 (one entry round three
// names), then three entries rotating names through a spare (a -> t,
// b -> a, c -> b, t -> c), a phone written to each after each rename.
// Every answer is success, promptly; Axigen ends with each person's
// password at the right name.
func TestAttackWaitsRenamesChainedRound(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for _, uid := range []string{"r1", "ra", "rb", "rc"} {
		if err := admin.Add(accountAdd(userDN(uid), uid)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDrained(20*time.Second, false)
	c := e.rawAdmin(t)
	id := int64(1)
	var burst []byte
	rename := func(from, to, phone string) {
		id++
		burst = append(burst, modDNRequest(id, userDN(from), "uid="+to, "")...)
		id++
		burst = append(burst, modifyPhone(id, userDN(to), phone)...)
	}
	rename("r1", "r2", "+1 555 0201")
	rename("r2", "r3", "+1 555 0202")
	rename("r3", "r1", "+1 555 0203")
	rename("ra", "rt", "+1 555 0301")
	rename("rb", "ra", "+1 555 0302")
	rename("rc", "rb", "+1 555 0303")
	rename("rt", "rc", "+1 555 0304")
	start := time.Now()
	c.send(t, burst)
	// Answers to writes of different entries may come in either order
	// (RFC 4511 4.1.1.1: a server answers each as it completes).
	answered := map[int64]bool{}
	for range id - 1 {
		m, err := c.next(12 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the answers (%d of %d so far): %v (after %v)", len(answered), id-1, err, time.Since(start))
		}
		if m.ID < 2 || m.ID > id || answered[m.ID] || m.ResultCode != 0 {
			t.Errorf("answer %v, want success to one of 2..%d not answered yet", m, id)
		}
		answered[m.ID] = true
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d pipelined writes answered in %v", id-1, d)
	}
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	// Who is where: the directory's uid → the person's password.
	for name, person := range map[string]string{"r1": "r1", "ra": "rb", "rb": "rc", "rc": "ra"} {
		a, ok := e.sim.Account(mirrorDomain, name)
		if !ok || a.Password != "pw-"+person {
			t.Errorf("Axigen account %s: %+v %v, want %s's password", name, a, ok, person)
		}
	}
	for _, name := range []string{"r2", "r3", "rt"} {
		if _, ok := e.sim.Account(mirrorDomain, name); ok {
			t.Errorf("Axigen still has %s", name)
		}
	}
	e.logAccounts(t)
	e.noSecretsInLog(t, e.dir.RootPW, "pw-ra", "pw-rb", "pw-rc")
}

// A write that waits its whole patience: the directory stays frozen past
// 10 s while a mail change of p1 is on its way. The waiting write is
// answered busy (51) with the gateway's diagnostic in about 10 s, not
// made; a search and a Cancel pipelined behind it on its connection are
// answered once the directory resumes; the mail change is made. Then the
// gateway is stopped (SIGTERM) while a write to p2 waits: the waiting
// write is answered (or its connection ended) promptly, the gateway exits
// 0 once the directory resumes, and after a restart Axigen equals the
// directory.
func TestAttackWaitsPatienceRunsOutAndShutdown(t *testing.T) {
	// Mostly waiting (a grace, a hold past holdPatience): alongside the
	// other tests that mostly wait, at the end of the package's run.
	t.Parallel()
	e := newAttackEnv(t, "", nil)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for _, uid := range []string{"p1", "p2"} {
		if err := admin.Add(accountAdd(userDN(uid), uid)); err != nil {
			t.Fatal(err)
		}
	}
	e.waitDrained(20*time.Second, false)
	changer := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	b := e.rawAdmin(t)
	b.send(t, modifyPhone(2, userDN("p1"), "+1 555 0001"))
	b.expectResult(t, 2, 0)

	resume := e.freezeDirectory(t)
	changed := make(chan error, 1)
	go func() {
		m := ldap.NewModifyRequest(userDN("p1"), nil)
		m.Replace("mail", []string{"p1.new@example.com"})
		changed <- changer.Modify(m)
	}()
	e.waitWriteOnItsWay(t, "p1's mail change holding p1")
	start := time.Now()
	burst := append(modifyPhone(10, userDN("p1"), "+1 555 0101"), searchRequest(t, 11, userDN("p1"), "(objectClass=*)", "mail")...)
	burst = append(burst, cancelOpRequest(12, 10)...)
	b.send(t, burst)
	e.waitHolding(t, 1)
	m, err := b.next(15 * time.Second)
	waited := time.Since(start)
	if err != nil {
		t.Fatalf("the waiting write: no answer within 15 s: %v", err)
	}
	if m.ID != 10 || m.ResultCode != ldap.LDAPResultBusy || !strings.HasPrefix(m.Diagnostic, "ldapgate: ") {
		t.Errorf("the write that waited %v: %v, want 10: busy (51) with the gateway's diagnostic", waited, m)
	}
	if waited < 9*time.Second || waited > 13*time.Second {
		t.Errorf("the write was answered after %v, want about 10 s", waited)
	}
	resume()
	if err := <-changed; err != nil {
		t.Errorf("p1's mail change: %v", err)
	}
	got, err := collect(b, 3*time.Second)
	t.Logf("after the busy answer: %v (ended: %v)", got, err)
	if ms := got[11]; len(ms) == 0 || ms[len(ms)-1].ResultCode != 0 {
		t.Errorf("the search behind the waiting write: %v, want success", ms)
	}
	if ms := got[12]; len(ms) != 1 || ms[0].ResultCode != ldap.LDAPResultNoSuchOperation {
		t.Errorf("the Cancel of the write answered busy: %v, want noSuchOperation (119)", ms)
	}
	if p := e.phoneOf("p1"); p != "+1 555 0001" {
		t.Errorf("p1's phone %q: the write answered busy was made", p)
	}
	if en := e.directoryEntry(userDN("p1"), "mail"); en.GetAttributeValue("mail") != "p1.new@example.com" {
		t.Errorf("p1's mail %q after its change", en.GetAttributeValue("mail"))
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(20*time.Second, false)

	// SIGTERM while a write waits.
	changer2 := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	b2 := e.rawAdmin(t)
	b2.send(t, modifyPhone(2, userDN("p2"), "+1 555 0002"))
	b2.expectResult(t, 2, 0)
	resume = e.freezeDirectory(t)
	go func() {
		m := ldap.NewModifyRequest(userDN("p2"), nil)
		m.Replace("mail", []string{"p2.new@example.com"})
		changed <- changer2.Modify(m)
	}()
	e.waitWriteOnItsWay(t, "p2's mail change holding p2")
	b2.send(t, modifyPhone(10, userDN("p2"), "+1 555 0202"))
	e.waitHolding(t, 1)
	start = time.Now()
	_ = e.gw.cmd.Process.Signal(syscall.SIGTERM)
	got, err = collect(b2, 5*time.Second)
	t.Logf("the waiting write's client after SIGTERM (%v): %v (ended: %v)", time.Since(start), got, err)
	if isTimeout(err) && len(got[10]) == 0 {
		t.Errorf("5 s after SIGTERM the waiting write has no answer and its connection is open")
	}
	resume()
	select {
	case <-e.gw.exited:
		if code := e.gw.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("gateway exited %d on SIGTERM with a write waiting", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("gateway still running 20 s after SIGTERM (the directory resumed)")
	}
	<-changed
	t.Logf("p2 in the directory: phone %q", e.phoneOf("p2"))
	for _, ms := range got[10] {
		if ms.ResultCode == 0 && e.phoneOf("p2") != "+1 555 0202" {
			t.Errorf("the waiting write answered success, not made")
		}
	}
	e.start()
	e.waitDrained(30*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	if crash := e.logCrash(4000); crash != "" {
		t.Errorf("gateway log shows a crash:\n%s", crash)
	}
	e.noSecretsInLog(t, e.dir.RootPW, "pw-p1", "pw-p2")
}

// heldInIntercept counts the writes in the gateway's intercept past
// identify and their hold (reading the directory with their DNs held),
// plus those prepared: identity changes on their way to a frozen
// directory.
func (e *mirrorEnv) heldInIntercept() (int, error) {
	body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=2", 5*time.Second)
	if err != nil {
		return 0, err
	}
	st, err := e.runningStats()
	if err != nil {
		return 0, err
	}
	return strings.Count(string(body), "mirror.(*Mirror).intercept(") - strings.Count(string(body), "mirror.(*Mirror).identify(") -
		strings.Count(string(body), "mirror.(*onWay).hold(") + st.Prepared, nil
}

// A member's mail changes while the group listing it is renamed (staff
// -> staff2, on its way to the frozen directory): the member's write
// races the rename's answer (it reads alice, then the groups listing her,
// from the directory once it resumes), and Axigen's staff2 must list the
// new address. A member added to the group by its old DN meanwhile
// finds no entry there.
func TestAttackWaitsMemberMailWhileGroupRenamed(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	renamer := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	mailer := e.rawAdmin(t)
	adder := e.rawAdmin(t)
	resume := e.freezeDirectory(t)
	renamed := make(chan error, 1)
	go func() {
		renamed <- renamer.ModifyDN(ldap.NewModifyDNRequest(groupDN("staff"), "cn=staff2", true, ""))
	}()
	waitFor(t, 8*time.Second, "the rename of staff holding it", func() error {
		n, err := e.heldInIntercept()
		if err == nil && n < 1 {
			err = errNotYet
		}
		return err
	})
	mailer.send(t, modifyRequest(10, userDN("alice"), "mail", "alice.new@example.com"))
	adder.send(t, envelope(10, memberAddOp(groupDN("staff"), userDN("bob"))))
	// The add waits for the rename; alice's change holds alice and reads
	// her from the frozen directory, to find the groups listing her once
	// it resumes, racing the rename's answer.
	e.waitHolding(t, 1)
	waitFor(t, 8*time.Second, "alice's mail change holding alice", func() error {
		n, err := e.heldInIntercept()
		if err == nil && n < 2 {
			err = fmt.Errorf("%d held", n)
		}
		return err
	})
	resume()
	if err := <-renamed; err != nil {
		t.Errorf("rename of staff: %v", err)
	}
	got, _ := collect(mailer, 2*time.Second)
	t.Logf("alice's mail change: %v", got)
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != 0 {
		t.Errorf("alice's mail change, waiting for her group's rename: %v, want success", ms)
	}
	got, _ = collect(adder, 2*time.Second)
	t.Logf("bob added to staff by its old DN: %v", got)
	if ms := got[10]; len(ms) != 1 || ms[0].ResultCode != ldap.LDAPResultNoSuchObject {
		t.Errorf("bob added to staff by its old DN while it was renamed: %v, want noSuchObject (32)", ms)
	}
	e.waitDrained(20*time.Second, false)
	deadline := time.Now().Add(10 * time.Second)
	for e.checkMirrored(false) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	if err := e.checkMirrored(false); err != nil {
		t.Errorf("after every record was delivered: %v", err)
		for _, g := range e.sim.Groups(mirrorDomain) {
			t.Logf("Axigen group %s: %v", g.Name, g.Members)
		}
		e.stop()
		for _, r := range e.journalRecords() {
			t.Logf("journal: seq %d %s %s %s new %q name %q state %v note %q", r.Seq, r.Kind, r.Op, r.DN, r.NewDN, r.Name, r.State, r.Note)
		}
	}
	g, ok := e.sim.Group(mirrorDomain, "staff2")
	if !ok || !slices.ContainsFunc(g.Members, func(m string) bool { return strings.EqualFold(m, "alice.new@example.com") }) {
		t.Errorf("Axigen group staff2: %+v %v, want alice's new address listed", g, ok)
	}
	if _, ok := e.sim.Group(mirrorDomain, "staff"); ok {
		t.Errorf("Axigen still has group staff")
	}
}

// memberAddOp is a modify adding member to group.
func memberAddOp(group, member string) *ber.Packet {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationModifyRequest, nil, "modify")
	op.AppendChild(octets(group))
	changes := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "changes")
	ch := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "change")
	ch.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(0), "add"))
	pa := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "modification")
	pa.AppendChild(octets("member"))
	set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "values")
	set.AppendChild(octets(member))
	pa.AppendChild(set)
	ch.AppendChild(pa)
	changes.AppendChild(ch)
	op.AppendChild(changes)
	return op
}

// waitWriteOnItsWay waits until a write is past the gateway's checks and
// on its way (in intercept beyond identify and any hold, or prepared).
func (e *mirrorEnv) waitWriteOnItsWay(t *testing.T, what string) {
	t.Helper()
	waitFor(t, 8*time.Second, what, func() error {
		body, err := readAdmin(e.dataDir, "/debug/pprof/goroutine?debug=2", 5*time.Second)
		if err != nil {
			return err
		}
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		in := strings.Count(string(body), "mirror.(*Mirror).intercept(") - strings.Count(string(body), "mirror.(*Mirror).identify(") -
			strings.Count(string(body), "mirror.(*onWay).hold(")
		if in+st.Prepared < 1 {
			return errNotYet
		}
		return nil
	})
}
