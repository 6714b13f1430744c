package e2e

// Two group entries that touch one Axigen group name are delivered in
// journal order, though nothing else (key, DN) links them.

import (
	"regexp"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// Group entry A's name (cn, not its RDN) changes from team to squad, then a
// new group entry B is added with cn team and other members, while A's
// rename keeps failing in Axigen. Delivered before A's rename, B's add would
// find group team (still A's) and give it B's members, which A's rename then
// carried off to squad, leaving no group team. B's record must wait for A's:
// in the end squad is A's, with A's members, and team is B's, with B's.
func TestMirrorGroupNameReusedWaitsForTheRename(t *testing.T) {
	groupA := "ou=A," + mirrorGroupBase
	groupB := "ou=B," + mirrorGroupBase
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: " + groupA + "\nobjectClass: groupOfNames\nou: A\ncn: team\nmember: " + userDN("alice") + "\nmember: " + userDN("bob") + "\n"},
	})
	members := func(want ...string) func(axigensim.GroupState, bool) bool {
		return func(g axigensim.GroupState, ok bool) bool { return ok && equalFoldSets(g.Members, want) }
	}
	e.waitGroup("team", "A's, seeded", members("alice@example.com", "bob@example.com"))
	e.sim.FailMatching(regexp.MustCompile(`(?i)^SET name\b.*squad`), "Cannot save the configuration")
	e.asAdmin("dn: "+groupA+"\nchangetype: modify\nreplace: cn\ncn: squad\n", "ldapmodify")
	e.asAdmin("dn: "+groupB+"\nobjectClass: groupOfNames\nou: B\ncn: team\nmember: "+userDN("carol")+"\n", "ldapadd")
	// A's rename fails again after B's add was committed (B, ready at
	// once, had its chance to go first), or B was delivered already.
	waitFor(e.t, 30*time.Second, "team's rename retried, or B's add delivered", func() error {
		for _, r := range runningRecords(t, e.dataDir, "delivered") {
			if schema.EqualDN(r.DN, groupB) {
				return nil
			}
		}
		for _, r := range runningRecords(t, e.dataDir, "committed") {
			if schema.EqualDN(r.DN, groupA) && r.Attempts >= 2 {
				return nil
			}
		}
		return errNotYet
	})
	e.sim.ClearFaults()
	e.waitGroup("squad", "A's, renamed from team, with its members", members("alice@example.com", "bob@example.com"))
	e.waitGroup("team", "B's, with its members", members("carol@example.com"))
	e.waitDrained(20*time.Second, false)
	for _, name := range []string{"team", "squad"} {
		if _, ok := e.sim.Group(mirrorDomain, name); !ok {
			t.Errorf("group %s is gone once the journal drained", name)
		}
	}
	e.waitMirrored(10*time.Second, false)
}
