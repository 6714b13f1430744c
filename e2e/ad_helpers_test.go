package e2e

// Helpers of the Active Directory tests (issue 9): a real Samba AD domain
// controller (internal/testenv/samba), started once per test binary by
// TestActiveDirectory and reset to a fresh domain before each scenario; the
// gateway in front of it with the activedirectory dialect, over LDAPS (or
// StartTLS) verified against the DC's CA; the in-process Axigen simulator;
// and a checker that compares the simulator with what AD holds.
//
// adEnv embeds a mirrorEnv for the gateway's process handling (start, stop,
// kill, the journal command, the admin socket) and the simulator waits; it
// never uses the mirrorEnv's slapd helpers.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/samba"
	"github.com/ldapgate/ldapgate/schema"
)

const (
	adAddr   = "127.0.0.2" // the DC's own loopback address (its ports are fixed)
	adBase   = "DC=example,DC=test"
	adPeople = "OU=People," + adBase
	adGroups = "OU=Groups," + adBase
	adAdmin  = "CN=Administrator,CN=Users," + adBase
)

// adUserDN is the DN of the account whose CN is cn (AD names users by
// their full name; the account name is sAMAccountName).
func adUserDN(cn string) string { return "CN=" + cn + "," + adPeople }

// adGroupDN is the DN of the group whose CN is cn.
func adGroupDN(cn string) string { return "CN=" + cn + "," + adGroups }

// adUser is one seeded account.
type adUser struct {
	CN, Sam, Given, SN, Password, Phone string
}

// The accounts every scenario starts with, enabled and with a password.
var adSeedUsers = []adUser{
	{"Alice Archer", "alice", "Alice", "Archer", "Alice-Passw0rd!", "+1 555 0101"},
	{"Bob Baker", "bob", "Bob", "Baker", "Bob-Passw0rd!", "+1 555 0102"},
	{"Carol Cooper", "carol", "Carol", "Cooper", "Carol-Passw0rd!", "+1 555 0103"},
}

// adScenario is one part of the AD suite, run on a fresh domain.
type adScenario struct {
	name string
	run  func(t *testing.T, dc *samba.Server)
}

// TestActiveDirectory runs the mirror's end-to-end scenarios, DirSync and
// paged results against a real Samba AD DC with the activedirectory
// dialect. The DC is provisioned once (cached across runs) and reset to a
// fresh domain before each scenario.
func TestActiveDirectory(t *testing.T) {
	if err := samba.Installed(); err != nil {
		t.Skip(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("the Samba AD DC needs root (a loopback address of its own, ports 389/636)")
	}
	dc := samba.StartT(t, samba.Options{Addr: adAddr})
	first := true
	for _, sc := range adScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			if !first {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				if err := dc.Reset(ctx); err != nil {
					t.Fatalf("reset the domain: %v", err)
				}
			}
			first = false
			sc.run(t, dc)
		})
	}
}

// adOptions shape an adEnv.
type adOptions struct {
	// StartTLS makes the gateway reach the DC on ldap:// with StartTLS
	// instead of ldaps://.
	StartTLS bool
	// Users adds generated accounts user000..; Groups generated groups
	// group000.. (user i in group i%Groups).
	Users, Groups int
	// ExtraUsers are seeded after the seed accounts, in OU=People; UPNs
	// gives accounts (by sAMAccountName) an explicit userPrincipalName.
	ExtraUsers []adUser
	UPNs       map[string]string
	Extra      []string
	LogLevel   string
	// SkipSeed reuses the directory as a previous adEnv on the same
	// domain left it (no reset in between): only the simulator is seeded.
	SkipSeed bool
}

// adEnv is the AD end-to-end set-up.
type adEnv struct {
	*mirrorEnv
	dc *samba.Server
}

func adGenUser(i int) adUser {
	return adUser{
		CN: fmt.Sprintf("User %03d", i), Sam: fmt.Sprintf("user%03d", i), Given: "User", SN: fmt.Sprintf("N%03d", i),
		Password: fmt.Sprintf("User-%03d-Passw0rd!", i), Phone: fmt.Sprintf("+1 555 %07d", i),
	}
}

func adGenGroup(g int) string { return fmt.Sprintf("group%03d", g) }

func newADEnv(t *testing.T, dc *samba.Server, opts adOptions) *adEnv {
	t.Helper()
	m, root := newEnv(t)
	e := &adEnv{mirrorEnv: m, dc: dc}
	if opts.SkipSeed {
		e.rememberSeedPasswords(opts)
	} else {
		e.seedDirectory(opts)
	}
	upstream := []string{"--upstream", dc.LDAPSURL, "--upstream-ca", dc.CAFile}
	if opts.StartTLS {
		upstream = []string{"--upstream", dc.URL, "--upstream-starttls", "--upstream-ca", dc.CAFile}
	}
	e.startMirroring(root, mirrorSetup{
		dialect:     schema.ActiveDirectory,
		accountBase: adPeople,
		groupBase:   adGroups,
		serviceDN:   adAdmin,
		servicePW:   dc.AdminPassword,
		upstream:    upstream,
		logLevel:    opts.LogLevel,
		extra:       opts.Extra,
	}, e.seedAxigen)
	return e
}

// userAttrs is the add request of an enabled account with a password.
func (u adUser) add(parent string) *ldap.AddRequest {
	a := ldap.NewAddRequest("CN="+u.CN+","+parent, nil)
	a.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	a.Attribute("sAMAccountName", []string{u.Sam})
	a.Attribute("givenName", []string{u.Given})
	a.Attribute("sn", []string{u.SN})
	a.Attribute("displayName", []string{u.Given + " " + u.SN})
	a.Attribute("mail", []string{u.Sam + "@" + mirrorDomain})
	a.Attribute("telephoneNumber", []string{u.Phone})
	a.Attribute("unicodePwd", []string{string(schema.EncodeUnicodePwd(u.Password))})
	a.Attribute("userAccountControl", []string{"512"})
	return a
}

// seedDirectory loads the sample tree straight into the DC (not through
// the gateway): the OUs, the seed accounts, a group "Team" (alice, bob).
func (e *adEnv) seedDirectory(opts adOptions) {
	e.t.Helper()
	c := e.dcConn()
	defer c.Close()
	for _, ou := range []string{adPeople, adGroups} {
		a := ldap.NewAddRequest(ou, nil)
		a.Attribute("objectClass", []string{"top", "organizationalUnit"})
		if err := c.Add(a); err != nil {
			e.t.Fatalf("add %s: %v", ou, err)
		}
	}
	users := append(append([]adUser(nil), adSeedUsers...), opts.ExtraUsers...)
	for i := range opts.Users {
		users = append(users, adGenUser(i))
	}
	for _, u := range users {
		a := u.add(adPeople)
		if upn := opts.UPNs[u.Sam]; upn != "" {
			a.Attribute("userPrincipalName", []string{upn})
		}
		if err := c.Add(a); err != nil {
			e.t.Fatalf("add %s: %v", u.Sam, err)
		}
		e.setKnownPassword(u.Sam, u.Password)
	}
	addGroup := func(cn, sam string, members []string) {
		a := ldap.NewAddRequest(adGroupDN(cn), nil)
		a.Attribute("objectClass", []string{"top", "group"})
		a.Attribute("sAMAccountName", []string{sam})
		if len(members) > 0 {
			a.Attribute("member", members)
		}
		if err := c.Add(a); err != nil {
			e.t.Fatalf("add group %s: %v", cn, err)
		}
	}
	addGroup("Team", "team", []string{adUserDN("Alice Archer"), adUserDN("Bob Baker")})
	for g := range opts.Groups {
		var members []string
		for i := g; i < opts.Users; i += opts.Groups {
			members = append(members, adUserDN(adGenUser(i).CN))
		}
		addGroup(adGenGroup(g), adGenGroup(g), members)
	}
}

// rememberSeedPasswords records the seed accounts' passwords without
// adding them (the domain holds them already).
func (e *adEnv) rememberSeedPasswords(opts adOptions) {
	for _, u := range append(append([]adUser(nil), adSeedUsers...), opts.ExtraUsers...) {
		e.setKnownPassword(u.Sam, u.Password)
	}
	for i := range opts.Users {
		e.setKnownPassword(adGenUser(i).Sam, adGenUser(i).Password)
	}
}

// seedAxigen puts the directory's accounts and groups into the simulator,
// as if Axigen had been in sync before the gateway started.
func (e *adEnv) seedAxigen() {
	e.t.Helper()
	want, err := e.adState()
	if err != nil {
		e.t.Fatalf("read the directory to seed the simulator: %v", err)
	}
	known := e.knownPasswords()
	for key, a := range want.Accounts {
		e.sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: a.Name, Password: known[key], Contact: a.Contact})
	}
	for _, g := range want.Groups {
		e.sim.PutGroup(mirrorDomain, axigensim.GroupState{Name: g.Name, Members: g.Members})
	}
}

// dcConn is an LDAPS connection straight to the DC as the Administrator.
func (e *adEnv) dcConn() *ldap.Conn {
	e.t.Helper()
	c, err := e.dc.AdminConn(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// gwConn is a connection to the gateway bound as dn.
func (e *adEnv) gwConn(dn, pw string) *ldap.Conn {
	e.t.Helper()
	return bindConn(e.t, e.gw.URL, dn, pw)
}

// asAdmin is a connection to the gateway bound as the Administrator.
func (e *adEnv) asAdmin() *ldap.Conn { return e.gwConn(adAdmin, e.dc.AdminPassword) }

// modify sends one modify request over c and fails the test on error.
func (e *adEnv) modify(c *ldap.Conn, dn string, build func(m *ldap.ModifyRequest)) {
	e.t.Helper()
	m := ldap.NewModifyRequest(dn, nil)
	build(m)
	if err := c.Modify(m); err != nil {
		e.t.Fatalf("modify %s: %v", dn, err)
	}
}

// adTool runs an ldap-utils command against the gateway bound as dn.
func (e *adEnv) adTool(stdin, name, dn, pw string, args ...string) toolResult {
	e.t.Helper()
	return runTool(e.t, stdin, name, append([]string{"-x", "-H", e.gw.URL, "-D", dn, "-w", pw}, args...)...)
}

// dcEntry reads one entry straight from the DC; nil when there is none.
func (e *adEnv) dcEntry(dn string, attrs ...string) *ldap.Entry {
	e.t.Helper()
	c := e.dcConn()
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", attrs, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read %s from the DC: %v", dn, err)
	}
	return res.Entries[0]
}

// guidOf is the entry's objectGUID as the journal and Axigen write it.
func (e *adEnv) guidOf(dn string) string {
	e.t.Helper()
	en := e.dcEntry(dn, "objectGUID")
	if en == nil {
		e.t.Fatalf("%s does not exist", dn)
	}
	s, err := schema.FormatGUID(en.GetRawAttributeValue("objectGUID"))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// adState reads every account and group from the DC and maps them with
// the gateway's default AD mapping. Disabled accounts are listed too.
func (e *adEnv) adState() (mirrorState, error) {
	c, err := e.dc.AdminConn(context.Background())
	if err != nil {
		return mirrorState{}, err
	}
	defer c.Close()
	return readDirectoryState(c, e.mapping, adBase, adPeople, adGroups)
}

// checkAD compares the simulator with AD: the same accounts (names, every
// contact field, the password the test set; for a disabled account, a
// password other than the one it had: see adDisabledScenario) and the same
// groups (names, member addresses).
func (e *adEnv) checkAD() error {
	want, err := e.adState()
	if err != nil {
		return err
	}
	known := e.knownPasswords()
	return diffMirror(want, e.sim, nil, true, func(key string, w schema.Account, g axigensim.AccountState) string {
		pw := known[key]
		switch {
		case w.Disabled && pw != "" && g.Password == pw:
			return "disabled in AD, but Axigen still takes its password"
		case !w.Disabled && pw != "" && g.Password != pw:
			return "Axigen password differs from the one set in AD"
		}
		return ""
	})
}

// waitAD waits until the simulator equals AD.
func (e *adEnv) waitAD(d time.Duration) {
	e.t.Helper()
	waitFor(e.t, d, "Axigen equal to AD", func() error {
		e.requireAlive()
		return e.checkAD()
	})
}

// requireNoSecretInLog fails when the gateway's log holds any of the
// passwords (the unicodePwd values are decoded, so look for the text).
func (e *adEnv) requireNoSecretInLog(secrets ...string) {
	e.t.Helper()
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(string(b), s) {
			e.t.Errorf("the gateway log contains the password %q", s)
		}
		if strings.Contains(string(b), string(schema.EncodeUnicodePwd(s))) {
			e.t.Errorf("the gateway log contains the unicodePwd value of %q", s)
		}
	}
}

// ldapCode is the LDAP result code of err, or -1.
func ldapCode(err error) int {
	var le *ldap.Error
	if errors.As(err, &le) {
		return int(le.ResultCode)
	}
	return -1
}
