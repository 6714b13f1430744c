package e2e

import (
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// writeBatch makes adds, modifies, renames and deletes through the gateway
// as the admin, among them account and group writes the gateway intercepts
// and mirrors into Axigen; tag keeps the names of two batches apart.
func writeBatch(t *testing.T, c *ldap.Conn, tag string) {
	t.Helper()
	uid := "sync" + tag
	add := ldap.NewAddRequest(userDN(uid), nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("uid", []string{uid})
	add.Attribute("cn", []string{"Sync " + tag})
	add.Attribute("sn", []string{"Sync"})
	add.Attribute("mail", []string{uid + "@example.com"})
	add.Attribute("userPassword", []string{"pw-" + uid})
	if err := c.Add(add); err != nil {
		t.Fatalf("add %s: %v", uid, err)
	}
	m := ldap.NewModifyRequest(userDN(uid), nil)
	m.Replace("telephoneNumber", []string{"+1 555 0" + tag})
	m.Add("description", []string{"replicated " + tag})
	if err := c.Modify(m); err != nil {
		t.Fatalf("modify %s: %v", uid, err)
	}
	if err := c.ModifyDN(ldap.NewModifyDNRequest(userDN(uid), "uid="+uid+"r", true, "")); err != nil {
		t.Fatalf("rename %s: %v", uid, err)
	}
	g := ldap.NewModifyRequest(groupDN("staff"), nil)
	g.Add("member", []string{userDN(uid + "r")})
	if err := c.Modify(g); err != nil {
		t.Fatalf("add %s to staff: %v", uid, err)
	}
	// A write outside the mirrored bases, relayed untouched.
	ou := ldap.NewAddRequest("ou=devices"+tag+","+suffix, nil)
	ou.Attribute("objectClass", []string{"organizationalUnit"})
	ou.Attribute("ou", []string{"devices" + tag})
	if err := c.Add(ou); err != nil {
		t.Fatalf("add ou: %v", err)
	}
	if err := c.Del(ldap.NewDelRequest("ou=devices"+tag+","+suffix, nil)); err != nil {
		t.Fatalf("delete ou: %v", err)
	}
	// An account in no group comes and goes (deleting a group member has a
	// side effect that TestMirrorDeletedAccountLeavesItsGroups covers).
	tmp := "tmp" + tag
	add = ldap.NewAddRequest(userDN(tmp), nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("uid", []string{tmp})
	add.Attribute("cn", []string{"Temp " + tag})
	add.Attribute("sn", []string{"Temp"})
	add.Attribute("mail", []string{tmp + "@example.com"})
	if err := c.Add(add); err != nil {
		t.Fatalf("add %s: %v", tmp, err)
	}
	if err := c.Del(ldap.NewDelRequest(userDN(tmp), nil)); err != nil {
		t.Fatalf("delete %s: %v", tmp, err)
	}
}

// A real OpenLDAP consumer replicates the whole tree through the mirroring
// gateway, refreshAndPersist: the initial refresh, then every kind of
// write made through the gateway (the mirrored ones included), then the
// writes made while the consumer was down, resumed from its cookie.
func TestSyncreplConsumerRefreshAndPersistThroughGateway(t *testing.T) {
	env := newMirrorEnv(t, mirrorOptions{Users: 300, Groups: 3, LogLevel: "info"})
	consumer := startConsumer(t, env.gw.URL, refreshAndPersist)
	waitReplicated(t, env.dir, consumer, 30*time.Second)

	admin := bindConn(t, env.gw.URL, mirrorAdminDN, env.dir.RootPW)
	writeBatch(t, admin, "1")
	waitReplicated(t, env.dir, consumer, 20*time.Second)
	env.waitMirrored(20*time.Second, false)

	// Writes while the consumer is down reach it when it comes back, and
	// only they: the consumer resumes from its cookie instead of reloading
	// 300-odd entries.
	if err := consumer.Halt(); err != nil {
		t.Fatal(err)
	}
	writeBatch(t, admin, "2")
	before := entriesSent(t, env.dir)
	if err := consumer.Restart(t.Context()); err != nil {
		t.Fatalf("restart the consumer: %v", err)
	}
	waitEntry(t, consumer, userDN("sync2r"), true)
	waitEntry(t, consumer, userDN("sync2"), false)
	sent := entriesSent(t, env.dir) - before - 1 // the count's own read
	if sent > 20 {
		t.Errorf("the provider sent %d entries to the restarted consumer: a full reload, not a resume", sent)
	}
	t.Logf("entries sent to resume the consumer: %d", sent)
	waitReplicated(t, env.dir, consumer, 20*time.Second)
	env.waitMirrored(20*time.Second, false)
	env.requireAlive()
}

// The same with refreshOnly polling: each poll through the gateway brings
// the consumer up to date.
func TestSyncreplConsumerRefreshOnlyThroughGateway(t *testing.T) {
	env := newMirrorEnv(t, mirrorOptions{Users: 50, Groups: 2, LogLevel: "info"})
	consumer := startConsumer(t, env.gw.URL, refreshOnly)
	waitReplicated(t, env.dir, consumer, 30*time.Second)

	admin := bindConn(t, env.gw.URL, mirrorAdminDN, env.dir.RootPW)
	writeBatch(t, admin, "1")
	waitReplicated(t, env.dir, consumer, 20*time.Second)
	writeBatch(t, admin, "2")
	waitReplicated(t, env.dir, consumer, 20*time.Second)
	env.waitMirrored(20*time.Second, false)
	env.requireAlive()
}

// A consumer that reaches the gateway over LDAPS or StartTLS replicates
// the same way (the gateway terminates TLS, the upstream is plain).
func TestSyncreplConsumerOverTLS(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 20})
	g := startGateway(t, "--upstream", s.URL)
	tlsOpts := []string{"tls_cacert=" + testPKI.CAFile, "tls_reqcert=demand"}
	for _, tc := range []struct {
		name, url string
		extra     []string
	}{
		{"ldaps", g.LDAPSURL, tlsOpts},
		{"starttls", g.URL, append([]string{"starttls=critical"}, tlsOpts...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			consumer := startConsumer(t, tc.url, refreshAndPersist, tc.extra...)
			waitReplicated(t, s, consumer, 30*time.Second)
			admin := bindConn(t, g.URL, adminDN, adminPW)
			if err := modifyDescription(admin, aliceDN, "over "+tc.name); err != nil {
				t.Fatal(err)
			}
			victim := "uid=user0000" + map[string]string{"ldaps": "7", "starttls": "8"}[tc.name] + "," + people
			if err := admin.Del(ldap.NewDelRequest(victim, nil)); err != nil {
				t.Fatal(err)
			}
			waitReplicated(t, s, consumer, 20*time.Second)
		})
	}
	g.requireAlive(t)
}
