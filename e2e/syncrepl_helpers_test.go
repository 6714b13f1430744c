package e2e

// Helpers of the syncrepl and long-lived search tests (issue 6): a second
// slapd replicating through the gateway, tree comparison, slapd's own
// statistics.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// consumerMode is a syncrepl type: refreshAndPersist, or refreshOnly
// polling every second.
type consumerMode string

const (
	refreshAndPersist consumerMode = "type=refreshAndPersist"
	refreshOnly       consumerMode = "type=refreshOnly interval=00:00:00:01"
)

// startConsumer starts an empty slapd that replicates suffix from
// providerURL (the gateway) with syncrepl, binding as the provider's root
// DN; extra holds further syncrepl options (TLS).
func startConsumer(t testing.TB, providerURL string, mode consumerMode, extra ...string) *slapd.Server {
	t.Helper()
	conf := fmt.Sprintf(`syncrepl rid=001
  provider=%s
  %s
  retry="1 +"
  searchbase="%s"
  scope=sub
  bindmethod=simple
  binddn="%s"
  credentials=%s
  schemachecking=off
  timeout=1
  network-timeout=5`, providerURL, mode, suffix, adminDN, adminPW)
	for _, x := range extra {
		conf += "\n  " + x
	}
	return slapd.StartT(t, slapd.Options{Empty: true, ExtraConfig: conf})
}

// treeOf reads every entry under suffix with its user attributes and
// entryUUID, one text per entry keyed by the normalised DN.
func treeOf(s *slapd.Server) (map[string]string, error) {
	c, err := s.AdminConn(context.Background())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest(suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"*", "entryUUID"}, nil))
	if err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			return map[string]string{}, nil
		}
		return nil, err
	}
	tree := make(map[string]string, len(res.Entries))
	for _, e := range res.Entries {
		var lines []string
		for _, a := range e.Attributes {
			vals := append([]string(nil), a.Values...)
			sort.Strings(vals)
			lines = append(lines, strings.ToLower(a.Name)+": "+strings.Join(vals, " | "))
		}
		sort.Strings(lines)
		dn, err := ldap.ParseDN(e.DN)
		if err != nil {
			return nil, err
		}
		tree[strings.ToLower(dn.String())] = strings.Join(lines, "\n")
	}
	return tree, nil
}

// diffTrees describes how two trees differ, "" when they are equal.
func diffTrees(want, got map[string]string) string {
	var d []string
	for dn, w := range want {
		g, ok := got[dn]
		switch {
		case !ok:
			d = append(d, "missing on the consumer: "+dn)
		case g != w:
			d = append(d, fmt.Sprintf("differs: %s\n--- provider:\n%s\n--- consumer:\n%s", dn, w, g))
		}
	}
	for dn := range got {
		if _, ok := want[dn]; !ok {
			d = append(d, "only on the consumer: "+dn)
		}
	}
	sort.Strings(d)
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... and %d more", len(d)-5))
	}
	return strings.Join(d, "\n")
}

// waitReplicated waits until the consumer holds the provider's tree.
func waitReplicated(t testing.TB, provider, consumer *slapd.Server, d time.Duration) {
	t.Helper()
	waitFor(t, d, "consumer equal to the provider", func() error {
		want, err := treeOf(provider)
		if err != nil {
			return fmt.Errorf("read the provider: %w", err)
		}
		got, err := treeOf(consumer)
		if err != nil {
			return fmt.Errorf("read the consumer: %w", err)
		}
		if diff := diffTrees(want, got); diff != "" {
			return fmt.Errorf("%d entries on the provider, %d on the consumer:\n%s", len(want), len(got), diff)
		}
		return nil
	})
}

// entriesSent is slapd's count of entries it has sent to clients
// (cn=Entries,cn=Statistics,cn=Monitor), replication included.
func entriesSent(t testing.TB, s *slapd.Server) int {
	t.Helper()
	c, err := s.AdminConn(context.Background())
	if err != nil {
		t.Fatalf("read cn=Monitor: %v", err)
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest("cn=Entries,cn=Statistics,cn=Monitor", ldap.ScopeBaseObject,
		ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", []string{"monitorCounter"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("read cn=Entries,cn=Statistics,cn=Monitor: %v", err)
	}
	n, err := strconv.Atoi(res.Entries[0].GetAttributeValue("monitorCounter"))
	if err != nil {
		t.Fatalf("monitorCounter: %v", err)
	}
	return n
}

// entryExists reports whether dn is on s.
func entryExists(s *slapd.Server, dn string) (bool, error) {
	c, err := s.AdminConn(context.Background())
	if err != nil {
		return false, err
	}
	defer c.Close()
	_, err = c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", []string{"1.1"}, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return false, nil
	}
	return err == nil, err
}

// waitEntry waits until dn exists (or, with present false, is gone) on s.
func waitEntry(t testing.TB, s *slapd.Server, dn string, present bool) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s present=%v", dn, present), func() error {
		ok, err := entryExists(s, dn)
		if err != nil {
			return err
		}
		if ok != present {
			return fmt.Errorf("present=%v", ok)
		}
		return nil
	})
}
