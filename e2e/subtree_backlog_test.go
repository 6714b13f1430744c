package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// monitorValue reads one attribute of one cn=monitor entry through the gateway.
func monitorValue(c *ldap.Conn, dn, attr string) (string, error) {
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{attr}, nil))
	if err != nil {
		return "", err
	}
	if len(res.Entries) != 1 {
		return "", fmt.Errorf("%s: %d entries", dn, len(res.Entries))
	}
	return res.Entries[0].GetAttributeValue(attr), nil
}

// During an Axigen outage cn=monitor shows the backlog and its age and
// cn=changelog the failing delivery (state, attempts, last error); once
// Axigen is back both show it drained.
func TestSubtreeShowsTheBacklogOfAnAxigenOutage(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	requireSubtree(t, e)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	m := ldap.NewModifyRequest(aliceDN, nil)
	m.Replace("telephoneNumber", []string{"+1 555 0404"})
	if err := admin.Modify(m); err != nil {
		t.Fatalf("modify alice: %v", err)
	}
	filter := "(&(targetDN=" + aliceDN + ")(changes=*0404*))"
	waitFor(t, 20*time.Second, "a failed delivery in cn=changelog and cn=monitor", func() error {
		res, err := admin.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
			filter, []string{"deliveryState", "deliveryAttempts", "lastError"}, nil))
		if err != nil || len(res.Entries) != 1 {
			return fmt.Errorf("the change in cn=changelog: %v", err)
		}
		en := res.Entries[0]
		if en.GetAttributeValue("deliveryState") != "committed" || en.GetAttributeValue("lastError") == "" {
			return fmt.Errorf("state %q, attempts %q, error %q", en.GetAttributeValue("deliveryState"),
				en.GetAttributeValue("deliveryAttempts"), en.GetAttributeValue("lastError"))
		}
		backlog, err := monitorValue(admin, "cn=journal,cn=ldapgate,cn=monitor", "backlog")
		if err != nil || backlog != "1" {
			return fmt.Errorf("backlog %q: %v", backlog, err)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "the backlog ages", func() error {
		age, err := monitorValue(admin, "cn=journal,cn=ldapgate,cn=monitor", "oldestPendingSeconds")
		if n, _ := strconv.Atoi(age); err != nil || n < 1 {
			return fmt.Errorf("oldestPendingSeconds %q: %v", age, err)
		}
		return nil
	})

	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the backlog drained", func() error {
		res, err := admin.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
			filter, []string{"deliveryState"}, nil))
		if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("deliveryState") != "delivered" {
			return fmt.Errorf("not delivered yet: %v", err)
		}
		backlog, err := monitorValue(admin, "cn=journal,cn=ldapgate,cn=monitor", "backlog")
		if err != nil || backlog != "0" {
			return fmt.Errorf("backlog %q: %v", backlog, err)
		}
		return nil
	})
	e.waitMirrored(10*time.Second, false)
}
