package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// A resync run while changes wait in the running gateway's journal (here a
// rename whose SET name Axigen refuses a while: an outage, a busy Axigen)
// leaves their entries to those records and their names alone. Before,
// the resync applied alice's entry, now named alice2, as it is: it created
// a second account alice2 beside alice (whose rename is to carry the
// mailbox over), and with --remove-extra disabled alice, the mailbox, as
// an account the directory no longer has; the rename then found alice2
// taken. Now the resync reports the entry as left to the journal, alice
// stays enabled, no account alice2 is created but by the rename, and once
// Axigen takes it the one mailbox has the new name.
func TestResyncLeavesEntriesWithChangesWaiting(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	e.renameRefusedByAxigen(t, "alice", "alice2")
	out := runLdapgate(t, 2*time.Minute, append(append([]string{"resync"}, e.args[1:]...), "--remove-extra")...)
	e.checkResyncLeftRename(t, out, "alice", "alice2")
	e.sim.ClearFaults()
	e.waitDrained(60*time.Second, false)
	e.waitMirrored(20*time.Second, false)
	e.waitAccount("alice2", "alice's mailbox, renamed, with her password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "alice-pw"
	})
	for _, c := range e.sim.Commands() {
		if c.Change != nil && c.Change.Kind == "account" && strings.EqualFold(c.Change.Name, "alice") && c.Change.Removed {
			t.Errorf("alice's mailbox was removed (%s), not renamed", c.Line)
		}
	}
}

// checkResyncLeftRename checks a resync's output and Axigen after it,
// while the rename of from to to waited in the journal: the entry is
// reported left to the journal, no account is extra, from's mailbox is
// there and enabled for its rename, and no account to was made beside it.
func (e *mirrorEnv) checkResyncLeftRename(t *testing.T, out, from, to string) {
	t.Helper()
	if !strings.Contains(out, "left to the gateway's journal") || !strings.Contains(out, "uid="+to) {
		t.Errorf("the resync does not say it left %s to the journal:\n%s", to, out)
	}
	if strings.Contains(out, "extra account in Axigen") {
		t.Errorf("the resync took an account for extra:\n%s", out)
	}
	if a, ok := e.sim.Account(mirrorDomain, from); !ok || !a.Enabled {
		t.Errorf("%s's mailbox after the resync: %+v, %v; want it there, enabled, for its rename", from, a, ok)
	}
	if _, ok := e.sim.Account(mirrorDomain, to); ok {
		t.Errorf("the resync made an account %s beside %s's, whose rename is waiting", to, from)
	}
}

// renameRefusedByAxigen renames from to to through the gateway while
// Axigen refuses every SET name of to (until ClearFaults), and waits for
// the first refusal: the rename's record is committed and waits.
func (e *mirrorEnv) renameRefusedByAxigen(t *testing.T, from, to string) {
	t.Helper()
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	defer admin.Close() // a gateway stopped next has no session left
	e.sim.FailMatching(regexp.MustCompile(`(?i)^SET name "?`+regexp.QuoteMeta(to)), "temporary failure")
	if err := admin.ModifyDN(ldap.NewModifyDNRequest(userDN(from), "uid="+to, true, "")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the rename's SET name refused", func() error {
		for _, c := range e.sim.Commands() {
			if !c.OK && strings.Contains(strings.ToLower(c.Line), "set name") {
				return nil
			}
		}
		return errNotYet
	})
}
