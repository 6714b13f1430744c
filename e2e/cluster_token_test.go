package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/netproxy"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/store"
)

// TestClusterLostPrepareAnswerDoesNotHoldTheEntry (issue 18): a write
// whose Prepare reached the log but whose answer was lost with the leader
// is refused (52, not relayed), and the entry's next write reaches Axigen
// within seconds, not after --cluster-orphan-age: the gateway aborts the
// record it could not name by its Prepare's token. Before tokens, the
// orphan record, prepared on every node, held the next write's delivery
// until the leader settled it, 1 to 1.5 orphan ages later.
//
// The fault: the leader's answers to the follower's forwarded proposals
// are dropped (its proxy), the follower's write is journaled by a quorum
// (the follower applies it too: the leader's replication to it is not
// cut), then the leader is killed.
func TestClusterLostPrepareAnswerDoesNotHoldTheEntry(t *testing.T) {
	const orphanAge = 2 * time.Minute
	c := newClusterEnv(t, clusterOptions{Users: 2, OrphanAge: orphanAge})
	leader := c.waitLeader(30 * time.Second)
	var follower *gwNode
	for _, n := range c.members() {
		if n != leader {
			follower = n
			break
		}
	}
	uid := slapd.UserUID(0)
	dn := userDN(uid)
	conn := c.dialAdmin(follower, 30*time.Second)
	defer conn.Close()
	phone := func(v string) *ldap.ModifyRequest {
		req := ldap.NewModifyRequest(dn, nil)
		req.Replace("telephoneNumber", []string{v})
		return req
	}
	// A first write through the follower: delivered, and the follower's
	// connection to the leader's cluster port is open (the proxy holds new
	// connections of a blocked sender).
	if err := conn.Modify(phone("+1 555 0000001")); err != nil {
		t.Fatal(err)
	}
	c.e.waitAccount(uid, "the first phone number", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 0000001"
	})

	c.net.Proxy(leader.name).Block(follower.name, netproxy.FromTarget)
	c.note("drop answers to "+follower.name, leader.name)
	const lost = "+1 555 0000002"
	refused := make(chan error, 1)
	go func() { refused <- conn.Modify(phone(lost)) }()
	waitFor(t, 20*time.Second, "the write with the lost answer journaled on "+follower.name, func() error {
		for _, r := range c.nodeRecords(follower) {
			if r.State == store.StatePrepared && holdsValue(r, lost) {
				return nil
			}
		}
		return errNotYet
	})
	killed := c.kill(leader)
	var err error
	select {
	case err = <-refused:
	case <-time.After(30 * time.Second):
		t.Fatal("the write whose answer was lost is not answered 30s after the leader's death")
	}
	var le *ldap.Error
	if !errors.As(err, &le) || le.ResultCode != ldap.LDAPResultUnavailable || !strings.Contains(err.Error(), "leader failed while the change was being journaled") {
		t.Fatalf("the write whose answer was lost: %v, want unavailable (52) saying the leader failed", err)
	}
	t.Logf("refused %v after the leader's death: %v", time.Since(killed).Round(time.Millisecond), err)
	c.net.HealAll()

	// The next write to the entry, through the same gateway.
	const next = "+1 555 0000003"
	if err := retryModify(t, conn, phone(next), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	acked := time.Now()
	// Well under the orphan age: the fence delay, an election, a delivery.
	waitFor(t, 30*time.Second, "Axigen to hold the next write's phone number", func() error {
		a, ok := c.e.sim.Account(mirrorDomain, uid)
		if ok && a.Contact["phone"] == next {
			return nil
		}
		return fmt.Errorf("Axigen holds %q", a.Contact["phone"])
	})
	t.Logf("the next write reached Axigen %v after its acknowledgement (orphan age %v)", time.Since(acked).Round(time.Millisecond), orphanAge)

	// Every node, the dead leader restarted, ends with the entry settled:
	// the refused write's record gone, nothing prepared.
	c.start(leader)
	c.waitCaughtUp(60 * time.Second)
	for _, n := range c.members() {
		waitFor(t, 30*time.Second, n.name+"'s journal settled", func() error {
			for _, r := range recordsAbout(c.nodeRecords(n), dn) {
				if holdsValue(r, lost) {
					return fmt.Errorf("record %d of the refused write is %s", r.Seq, r.State)
				}
				if r.State == store.StatePrepared || r.State == store.StateCommitted {
					return fmt.Errorf("record %d is %s", r.Seq, r.State)
				}
			}
			return nil
		})
	}
	if got := c.directoryValue("phone:" + uid); got != next {
		t.Fatalf("the directory holds %q", got)
	}
	if a, _ := c.e.sim.Account(mirrorDomain, uid); a.Contact["phone"] != next {
		t.Fatalf("Axigen ends with %q", a.Contact["phone"])
	}
}

// dialAdmin connects to node n's LDAP port and binds as the directory's
// admin, retrying until d passes.
func (c *clusterEnv) dialAdmin(n *gwNode, d time.Duration) *ldap.Conn {
	c.t.Helper()
	var conn *ldap.Conn
	waitFor(c.t, d, "an admin connection to "+n.name, func() error {
		var err error
		conn, err = ldap.DialURL(n.url, ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}))
		if err != nil {
			return err
		}
		if err := conn.Bind(mirrorAdminDN, c.e.dir.RootPW); err != nil {
			conn.Close()
			return err
		}
		return nil
	})
	conn.SetTimeout(60 * time.Second)
	return conn
}

// retryModify sends req until it succeeds, while the gateway answers
// unavailable (a cluster electing its leader), for at most d.
func retryModify(t *testing.T, conn *ldap.Conn, req *ldap.ModifyRequest, d time.Duration) error {
	t.Helper()
	var last error
	waitFor(t, d, "the write to be taken", func() error {
		last = conn.Modify(req)
		var le *ldap.Error
		if last != nil && (!errors.As(last, &le) || le.ResultCode != ldap.LDAPResultUnavailable) {
			t.Fatalf("write: %v", last)
		}
		return last
	})
	return last
}

// nodeRecords are node n's journal records (`ldapgate journal ls`, through
// its admin socket).
func (c *clusterEnv) nodeRecords(n *gwNode) []store.Record {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, "journal", "ls", "--json", "--limit", "0", "--data-dir", n.dataDir)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("journal ls on %s: %v", n.name, err)
	}
	recs, err := decodeRecords(string(out))
	if err != nil {
		c.t.Fatalf("journal ls on %s: %v\n%s", n.name, err, out)
	}
	return recs
}

// holdsValue reports whether record r writes value v.
func holdsValue(r store.Record, v string) bool {
	for _, ch := range r.Changes {
		if slices.Contains(ch.Values, v) {
			return true
		}
	}
	return false
}
