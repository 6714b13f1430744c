package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const todayHash = "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="

// FIXED. The usual way to change a password in LDAP without replace: delete the
// old value by name and add the new one, here pre-hashed. The directory
// no longer takes alice's old password; Axigen must not either, as for a
// replace by a hash (replacedByHashes): it went on opening the mailbox.
func TestAttackTodayDeleteOldAddHashKeepsOldPassword(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	m := ldap.NewModifyRequest(userDN("alice"), nil)
	m.Delete("userPassword", []string{slapd.AlicePassword})
	m.Add("userPassword", []string{todayHash})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	// Same, with the old value deleted without naming it.
	m = ldap.NewModifyRequest(userDN("bob"), nil)
	m.Delete("userPassword", nil)
	m.Add("userPassword", []string{todayHash})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20*time.Second, false)
	for name, old := range map[string]string{"alice": slapd.AlicePassword, "bob": slapd.BobPassword} {
		if a, ok := e.sim.Account(mirrorDomain, name); !ok || (a.Enabled && a.Password == old) {
			t.Errorf("%s after its old password was deleted and a hash added: %+v, %v; the old password still opens the mailbox", name, a, ok)
		}
	}
}

// HELD. An account added with a hashed password only: Axigen gets one
// nobody knows (enabled, unlike a replace by a hash, which disables).
func TestAttackTodayAddWithHashOnly(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	add := ldap.NewAddRequest(userDN("hashy"), nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("cn", []string{"Hashy"})
	add.Attribute("sn", []string{"Hashy"})
	add.Attribute("uid", []string{"hashy"})
	add.Attribute("mail", []string{"hashy@example.com"})
	add.Attribute("userPassword", []string{todayHash})
	if err := admin.Add(add); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(20*time.Second, false)
	a, ok := e.sim.Account(mirrorDomain, "hashy")
	t.Logf("hashy: %+v %v", a, ok)
	if ok && a.Enabled && a.Password == "" {
		t.Errorf("hashy, added with a hash only, is enabled with an empty password")
	}
}

// HELD. A locked account whose password is replaced by a hash, then set in
// clear while still locked: it must stay disabled until unlocked, and
// then open with the password in clear.
func TestAttackTodayLockedHashThenPlaintext(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(cfg, []byte("mirror:\n  schema:\n    disabled:\n      attribute: employeeType\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newAttackEnv(t, "", nil, "--config", cfg)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	adminModify(t, admin, userDN("alice"), "employeeType", "locked")
	e.waitAccount("alice", "disabled while locked", func(a axigensim.AccountState, ok bool) bool { return ok && !a.Enabled })
	adminModify(t, admin, userDN("alice"), "userPassword", todayHash)
	adminModify(t, admin, userDN("alice"), "userPassword", "alice-clear-pw")
	// Both password records wait in the journal while alice is locked.
	waitFor(t, 20*time.Second, "the password records waiting, alice disabled", func() error {
		st, err := e.runningStats()
		if err != nil {
			return err
		}
		if st.LastSeq < 3 || st.InFlight > 0 || !strings.Contains(e.logTail(20000), "waits in the journal") {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if a, ok := e.sim.Account(mirrorDomain, "alice"); !ok || a.Enabled {
		t.Errorf("alice, locked, after a password in clear: %+v, %v; want disabled", a, ok)
	}
	m := ldap.NewModifyRequest(userDN("alice"), nil)
	m.Delete("employeeType", nil)
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	e.waitAccount("alice", "enabled once unlocked, with the password set in clear", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "alice-clear-pw"
	})
	e.waitDrained(20*time.Second, false)
}

// HELD. Resync from the command line while the gateway is stopped with a
// rename committed and not delivered (Axigen refused its SET name): the
// resync opens the journal itself, leaves alice2 to it, takes no name for
// extra; the gateway then starts (the journal closed again) and the
// rename carries the mailbox over.
func TestAttackTodayResyncWhileStoppedWithCommittedRename(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	e.renameRefusedByAxigen(t, "alice", "alice2")
	e.stop()
	dry := runLdapgate(t, 2*time.Minute, append(append([]string{"resync"}, e.args[1:]...), "--remove-extra", "--dry-run")...)
	out := runLdapgate(t, 2*time.Minute, append(append([]string{"resync"}, e.args[1:]...), "--remove-extra")...)
	for _, o := range []string{dry, out} {
		e.checkResyncLeftRename(t, o, "alice", "alice2")
	}
	e.sim.ClearFaults()
	e.start()
	e.waitDrained(60*time.Second, false)
	e.waitAccount("alice2", "alice's mailbox, renamed", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == slapd.AlicePassword
	})
	if _, ok := e.sim.Account(mirrorDomain, "alice"); ok {
		t.Errorf("alice still there beside alice2")
	}
}

// pacedReader reads from r at most rate bytes a second, steadily.
type pacedReader struct {
	r     io.Reader
	rate  int
	start time.Time
	n     int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(b) > 8<<10 {
		b = b[:8<<10]
	}
	// The pace is the test's subject (a client on a slow link), not a wait
	// for something to happen.
	if ahead := time.Duration(p.n)*time.Second/time.Duration(p.rate) - time.Since(p.start); ahead > 0 {
		time.Sleep(ahead)
	}
	n, err := p.r.Read(b)
	p.n += n
	return n, err
}

// FIXED. A client that reads its answers steadily, at 1 MiB/s (an 8 Mbit/s
// link), a search whose one entry is 8 MiB: it never leaves its answers
// unread, yet the write timeout (3 s here; the default 1 min cut the
// same way an entry of more than about a minute of the client's link)
// ended its session in the middle of the entry: the deadline bounded each
// whole write (the entry was one Write of 8 MiB), not the progress of the
// reading. Now each 64 KiB goes under a deadline of its own.
func TestAttackTodayWriteTimeoutCutsASteadyReader(t *testing.T) {
	e := newAttackEnv(t, "", nil, "--write-timeout", "3s")
	e.waitMirrored(20*time.Second, false)
	direct := bindConn(t, e.dir.URL, mirrorAdminDN, e.dir.RootPW)
	big := addBigEntry(t, direct)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.gw.URL, "ldap://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, err := conn.Write(append(bindRequest(1, mirrorAdminDN, e.dir.RootPW), searchRequest(t, 2, big, "(objectClass=*)", "description")...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	pr := &pacedReader{r: conn, rate: 1 << 20, start: time.Now()}
	entries := 0
	for {
		p, err := ber.ReadPacket(pr)
		if err != nil {
			t.Fatalf("after %d bytes in %v, reading steadily at 1 MiB/s: %v (%d entries read)", pr.n, time.Since(pr.start), err, entries)
		}
		if len(p.Children) < 2 {
			t.Fatalf("odd message %v", p)
		}
		switch p.Children[1].Tag {
		case ldap.ApplicationSearchResultEntry:
			entries++
		case ldap.ApplicationSearchResultDone:
			if entries != 1 {
				t.Errorf("%d entries", entries)
			}
			t.Logf("read %d bytes in %v", pr.n, time.Since(pr.start))
			return
		}
	}
}

// HELD. With a short write timeout, a client idle far longer than it (nothing
// to read) keeps its session, and one that read its answers, then idled,
// is answered again.
func TestAttackTodayWriteTimeoutSparesIdleClients(t *testing.T) {
	e := newAttackEnv(t, "", nil, "--write-timeout", "1s")
	e.waitMirrored(20*time.Second, false)
	c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	search := func() error {
		_, err := c.Search(ldap.NewSearchRequest(userDN("alice"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil))
		return err
	}
	for i := range 3 {
		if err := search(); err != nil {
			t.Fatalf("search %d: %v", i, err)
		}
		// Idle for longer than the write timeout: the subject of the test.
		time.Sleep(2500 * time.Millisecond)
	}
	if err := search(); err != nil {
		t.Fatalf("last search: %v", err)
	}
}
