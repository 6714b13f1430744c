package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/store"
)

// Writes made as Axigen's own bind DN are judged (issue 16): it may write
// what Axigen's own synchronisation writes (contact info and passwords of
// existing accounts), relayed to the directory but never mirrored back
// into Axigen, and never journaled: no loops. Anything else (an add, a
// group's members) is refused, whatever the directory's ACLs give it.
func TestMirrorAxigenBindDNIsRelayedNotMirrored(t *testing.T) {
	const axigenDN, axigenPW = "cn=axigen,dc=example,dc=com", "axigen-ldap-pw"
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: " + axigenDN + "\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: axigen\nuserPassword: " + axigenPW + "\n"},
		// One delivery worker: records are delivered in journal order, so
		// the admin's later write being in Axigen means the gateway has had
		// its chance to mirror the earlier ones.
		Extra: []string{"--axigen-bind-dn", axigenDN, "--delivery-workers", "1"},
	})
	// slapd lets members of cn=admins write everything.
	c, err := e.dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := ldap.NewModifyRequest(groupDN("admins"), nil)
	m.Add("member", []string{axigenDN})
	if err := c.Modify(m); err != nil {
		t.Fatalf("make %s a directory admin: %v", axigenDN, err)
	}
	c.Close()

	e.mustTool("dn: "+userDN("bob")+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 4242\n",
		"ldapmodify", axigenDN, axigenPW)
	for _, refused := range []struct{ input, tool string }{
		{"dn: " + userDN("frank") + "\nobjectClass: inetOrgPerson\nuid: frank\ncn: Frank\nsn: Frank\nmail: frank@example.com\nuserPassword: frank-pw\n", "ldapadd"},
		{"dn: " + groupDN("staff") + "\nchangetype: modify\nadd: member\nmember: " + userDN("carol") + "\n", "ldapmodify"},
	} {
		r := e.tool(refused.input, refused.tool, axigenDN, axigenPW)
		if r.Code != 50 || !strings.Contains(r.Out, "Axigen's connector") {
			t.Errorf("%s as Axigen's bind DN exited %d, want 50 naming the connector's rule:\n%s", refused.tool, r.Code, r.Out)
		}
	}
	// The allowed write is relayed: slapd has it; the refused ones are not.
	if got := e.directoryEntry(userDN("bob"), "telephoneNumber").GetAttributeValue("telephoneNumber"); got != "+1 555 4242" {
		t.Fatalf("slapd's phone of bob is %q: the write was not relayed", got)
	}
	if e.directoryEntry(userDN("frank")) != nil {
		t.Fatal("slapd holds frank: Axigen's bind DN's add was relayed")
	}
	if got := e.directoryEntry(groupDN("staff"), "member").GetAttributeValues("member"); len(got) != 2 {
		t.Fatalf("slapd's staff members are %v: Axigen's bind DN's modify was relayed", got)
	}

	// A later admin write is mirrored; Axigen's own ones were not.
	e.asAdmin("dn: "+userDN("alice")+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 1111\n", "ldapmodify")
	e.waitAccount("alice", "the admin's phone change", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 1111"
	})
	if a, _ := e.sim.Account(mirrorDomain, "bob"); a.Contact["phone"] != "+1 555 0102" {
		t.Errorf("Axigen's phone of bob is %q: a write by Axigen's bind DN was mirrored back", a.Contact["phone"])
	}
	if _, ok := e.sim.Account(mirrorDomain, "frank"); ok {
		t.Error("Axigen holds frank: an add by Axigen's bind DN was mirrored back")
	}
	if g, _ := e.sim.Group(mirrorDomain, "staff"); len(g.Members) != 2 {
		t.Errorf("Axigen's staff members are %v: a modify by Axigen's bind DN was mirrored back", g.Members)
	}

	e.waitDrained(10*time.Second, false)
	e.stop()
	if e.journalMissing() {
		return
	}
	recs := e.journalRecords()
	for _, r := range recs {
		if strings.EqualFold(r.Actor, axigenDN) {
			t.Errorf("journal record %d (%s %s) was made by Axigen's bind DN", r.Seq, r.Op, r.DN)
		}
	}
	if len(recs) != 1 || !strings.EqualFold(recs[0].DN, userDN("alice")) {
		t.Errorf("journal holds %+v; want only the admin's change of alice", recs)
	}
}

// A value Axigen cannot take (a givenName with a TAB, written base64 with
// ldapmodify) is refused at the write through the gateway (issue 16:
// constraintViolation naming the limit). One written to the directory
// behind the gateway's back is left out of the entry's deliveries (issue
// 16, item 9): the admin's phone change of that entry reaches Axigen,
// Axigen keeps its own firstName, and the record is delivered with what
// was left out, which `ldapgate journal ls` shows; nothing is a dead
// letter, and a later fix of the value is delivered.
func TestMirrorUnsendableValueIsLeftOutOfItsEntrysDeliveries(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})

	// "Ali\tce"
	const tab = "dn: uid=alice,ou=people,dc=example,dc=com\nchangetype: modify\nreplace: givenName\ngivenName:: QWxpCWNl\n"
	if r := e.tool(tab, "ldapmodify", mirrorAdminDN, e.dir.RootPW); r.Code != 19 || !strings.Contains(r.Out, "control character") {
		t.Fatalf("the TAB through the gateway: exit %d, want 19 (constraint violation) naming the control character:\n%s", r.Code, r.Out)
	}
	// Behind the gateway's back, straight to slapd.
	if r := runTool(t, tab, "ldapmodify", "-x", "-H", e.dir.URL, "-D", e.dir.RootDN, "-w", e.dir.RootPW); r.Code != 0 {
		t.Fatalf("ldapmodify to slapd: exit %d:\n%s", r.Code, r.Out)
	}
	e.asAdmin("dn: "+userDN("alice")+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 2323\n", "ldapmodify")
	if got := e.directoryEntry(userDN("alice"), "givenName").GetAttributeValue("givenName"); got != "Ali\tce" {
		t.Fatalf("slapd's givenName of alice is %q", got)
	}
	e.waitAccount("alice", "the phone changed beside the unsendable value", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 2323"
	})
	if a, _ := e.sim.Account(mirrorDomain, "alice"); a.Contact["firstName"] != "Alice" {
		t.Errorf("Axigen's firstName of alice is %q; the unsendable value must be neither altered and sent nor cleared", a.Contact["firstName"])
	}
	if st := e.waitDrained(10*time.Second, false); st.Dead != 0 {
		t.Errorf("running gateway's journal stats: %+v, want no dead letter", st)
	}
	e.stop()
	if !e.journalMissing() {
		checkLeftOut(t, e)
	}

	// Fixing the value is delivered.
	e.start()
	e.asAdmin("dn: "+userDN("alice")+"\nchangetype: modify\nreplace: givenName\ngivenName: Alicia\n", "ldapmodify")
	e.waitAccount("alice", "the fixed givenName", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["firstName"] == "Alicia"
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}

// checkLeftOut checks that alice's phone record was delivered with a note
// naming the attribute left out, but not holding the value.
func checkLeftOut(t *testing.T, e *mirrorEnv) {
	recs := recordsAbout(e.journalRecords(), userDN("alice"))
	if len(recs) != 1 {
		t.Fatalf("journal lists %d records of alice, want the phone change: %+v", len(recs), recs)
	}
	d := recs[0]
	if d.State != store.StateDelivered || !strings.Contains(d.LastError, "givenName") || !strings.Contains(d.LastError, "control character") {
		t.Errorf("alice's record is %s with %q; want delivered, naming givenName and the control character", d.State, d.LastError)
	}
	if strings.Contains(d.LastError, "Ali\tce") {
		t.Errorf("the record's note carries the value itself: %q", d.LastError)
	}
	if out := e.journal("ls").Out; !strings.Contains(out, "delivered; not sent: attribute givenName") {
		t.Errorf("journal ls (text) does not show what was left out:\n%s", out)
	}
}

// Axigen errors that a retry can cure do not lose the change: a command
// answered -ERR, then a session cut in the middle of a plan, are retried
// until Axigen holds the directory's state.
func TestMirrorAxigenErrorsAreRetried(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})

	e.sim.FailMatching(regexp.MustCompile(`^SET phone`), "temporarily unavailable")
	e.asAdmin("dn: "+userDN("bob")+"\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 5151\n", "ldapmodify")
	waitFor(t, 10*time.Second, "a failed delivery", func() error {
		if st, err := e.runningStats(); err != nil || st.Backlog == 0 {
			return fmt.Errorf("stats %+v, %v", st, err)
		}
		if !strings.Contains(e.logTail(1<<20), "temporarily unavailable") {
			return errNotYet
		}
		return nil
	})
	if a, _ := e.sim.Account(mirrorDomain, "bob"); a.Contact["phone"] == "+1 555 5151" {
		t.Fatal("the phone reached Axigen although SET phone failed")
	}
	e.sim.ClearFaults()
	e.waitAccount("bob", "the phone, once Axigen accepts it", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 5151"
	})

	// The session is cut after a few commands of the next plan.
	e.sim.DropAfter(3)
	e.asAdmin("dn: "+userDN("carol")+"\nchangetype: modify\nreplace: mobile\nmobile: +1 555 6161\n-\nreplace: displayName\ndisplayName: Captain\n", "ldapmodify")
	e.waitAccount("carol", "both fields despite the cut", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["mobilePhone"] == "+1 555 6161" && a.Contact["nickName"] == "Captain"
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}
