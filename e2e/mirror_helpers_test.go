package e2e

// Helpers of the mirror tests (issue 5): a real slapd, the in-process Axigen
// simulator and the built gateway with mirroring on, restartable on the same
// data folder; a checker that compares the simulator with the directory; the
// `ldapgate journal` command; ldap-utils wrappers.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

const (
	mirrorDomain      = "example.com"
	mirrorSuffix      = "dc=example,dc=com"
	mirrorAccountBase = "ou=people," + mirrorSuffix
	mirrorGroupBase   = "ou=groups," + mirrorSuffix
	mirrorAdminDN     = "cn=admin," + mirrorSuffix // slapd's rootdn: service DN and gateway admin
	mirrorAxigenAdmin = "admin"
	mirrorAxigenPW    = "axigen-admin-pw"
)

// userDN is the DN of the account entry uid.
func userDN(uid string) string { return "uid=" + uid + "," + mirrorAccountBase }

// groupDN is the DN of the group entry cn.
func groupDN(cn string) string { return "cn=" + cn + "," + mirrorGroupBase }

// mirrorOptions shape a mirrorEnv.
type mirrorOptions struct {
	Users, Groups int      // generated entries (slapd.Options)
	LDIF          []string // extra entries loaded with slapadd
	// Extra are further `ldapgate serve` flags (--axigen-bind-dn, ...).
	Extra []string
	// LogLevel of the gateway; "debug" when empty.
	LogLevel string
	// DataParent, when set, holds the gateway's data folder (its journal)
	// instead of the test's temporary folder: a benchmark can put the
	// journal on another file system.
	DataParent string
}

// mirrorEnv is one end-to-end set-up: slapd, the simulator seeded with the
// directory's accounts and groups (as if Axigen had been in sync before the
// gateway started), and the gateway in front of slapd.
type mirrorEnv struct {
	t       testing.TB
	dir     *slapd.Server
	sim     *axigensim.Server
	mapping *schema.Mapping
	dataDir string
	logPath string
	args    []string
	gw      *mirrorGateway

	mu    sync.Mutex
	known map[string]string // account name -> password the test set (the directory may hold it hashed)
	// parent is the env a forT copy was made from: it owns mu and known.
	parent *mirrorEnv
}

// forT is the env reporting to t (a subtest); it must not start or stop
// the gateway.
func (e *mirrorEnv) forT(t testing.TB) *mirrorEnv {
	return &mirrorEnv{t: t, dir: e.dir, sim: e.sim, mapping: e.mapping, dataDir: e.dataDir,
		logPath: e.logPath, args: e.args, gw: e.gw, parent: e.root()}
}

func (e *mirrorEnv) root() *mirrorEnv {
	if e.parent != nil {
		return e.parent
	}
	return e
}

// mirrorGateway is one run of `ldapgate serve`.
type mirrorGateway struct {
	URL    string
	cmd    *exec.Cmd
	exited chan struct{}
}

func (g *mirrorGateway) alive() bool {
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

func newMirrorEnv(t testing.TB, opts mirrorOptions) *mirrorEnv {
	t.Helper()
	e, root := newEnv(t)
	if opts.DataParent != "" {
		parent, err := os.MkdirTemp(opts.DataParent, "ldapgate-data-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(parent) })
		e.dataDir = filepath.Join(parent, "data")
	}
	e.dir = slapd.StartT(t, slapd.Options{Users: opts.Users, Groups: opts.Groups, LDIF: opts.LDIF})
	e.startMirroring(root, mirrorSetup{
		dialect:     schema.OpenLDAP,
		accountBase: mirrorAccountBase,
		groupBase:   mirrorGroupBase,
		serviceDN:   mirrorAdminDN,
		servicePW:   e.dir.RootPW,
		upstream:    []string{"--upstream", e.dir.URL},
		logLevel:    opts.LogLevel,
		extra:       opts.Extra,
	}, e.seed)
	return e
}

// newEnv makes an env with its own data folder (under root), whose
// gateway log is shown if the test fails.
func newEnv(t testing.TB) (e *mirrorEnv, root string) {
	root = t.TempDir()
	e = &mirrorEnv{
		t:       t,
		dataDir: filepath.Join(root, "data"),
		logPath: filepath.Join(root, "gateway.log"),
		known:   map[string]string{},
	}
	// Registered first, so it runs last: after the gateway has stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log (tail):\n%s", e.logTail(12000))
			keepLog(t, e.logPath)
			if crash := e.logCrash(12000); crash != "" {
				t.Logf("gateway crash:\n%s", crash)
			}
		}
	})
	return e, root
}

// mirrorSetup is what an env's gateway needs to know of its directory.
type mirrorSetup struct {
	dialect                schema.Dialect
	accountBase, groupBase string
	serviceDN, servicePW   string   // the gateway's own bind, also its admin
	upstream               []string // --upstream and its TLS flags
	logLevel               string   // debug when empty
	extra                  []string // more serve flags
}

// startMirroring starts the Axigen simulator, seeds it (seed, from the
// directory), and starts the gateway mirroring the directory into it.
func (e *mirrorEnv) startMirroring(root string, s mirrorSetup, seed func()) {
	t := e.t
	t.Helper()
	e.sim = axigensim.New(axigensim.Options{
		Admins:  map[string]string{mirrorAxigenAdmin: mirrorAxigenPW},
		Domains: []string{mirrorDomain},
	})
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.sim.Start(ctx); err != nil {
		cancel()
		t.Fatalf("start the Axigen simulator: %v", err)
	}
	t.Cleanup(func() { cancel(); e.sim.Close() })

	var err error
	if e.mapping, err = schema.NewMapping(schema.Config{
		Dialect:     s.dialect,
		AccountBase: schema.DNList{s.accountBase},
		GroupBase:   schema.DNList{s.groupBase},
	}); err != nil {
		t.Fatalf("schema mapping: %v", err)
	}
	seed()

	axPW := filepath.Join(root, "axigen.pw")
	svcPW := filepath.Join(root, "service.pw")
	for path, pw := range map[string]string{axPW: mirrorAxigenPW, svcPW: s.servicePW} {
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	level := s.logLevel
	if level == "" {
		level = "debug"
	}
	e.args = append(append([]string{"serve",
		"--listen", "ldap://127.0.0.1:0",
		"--addr-file", filepath.Join(root, "addr"),
	}, s.upstream...),
		"--data-dir", e.dataDir,
		"--axigen", e.sim.Addr(),
		"--axigen-user", mirrorAxigenAdmin,
		"--axigen-password-file", axPW,
		"--axigen-domain", mirrorDomain,
		"--dialect", string(s.dialect),
		"--account-base", s.accountBase,
		"--group-base", s.groupBase,
		"--service-dn", s.serviceDN,
		"--service-password-file", svcPW,
		"--admin-dn", s.serviceDN,
		"--log-level", level,
	)
	if !slices.Contains(s.extra, "--on-account-delete") {
		// The tests that predate the delete setting check that Axigen holds
		// exactly the directory's accounts, so a delete removes; the
		// default (disable) has tests of its own (mirror_delete_test.go).
		e.args = append(e.args, "--on-account-delete", "delete")
	}
	e.args = append(e.args, s.extra...)
	e.start()
}

// seed puts the directory's accounts and groups into the simulator.
func (e *mirrorEnv) seed() {
	e.t.Helper()
	want, err := e.directoryState()
	if err != nil {
		e.t.Fatalf("read the directory to seed the simulator: %v", err)
	}
	for _, a := range want.Accounts {
		e.sim.PutAccount(mirrorDomain, axigensim.AccountState{Name: a.Name, Password: a.Password, Contact: a.Contact})
	}
	for _, g := range want.Groups {
		e.sim.PutGroup(mirrorDomain, axigensim.GroupState{Name: g.Name, Members: g.Members})
	}
}

// start runs the gateway on the env's data folder and waits until it
// listens. It is stopped with SIGTERM at the end of the test.
func (e *mirrorEnv) start() {
	e.t.Helper()
	if e.gw != nil && e.gw.alive() {
		e.t.Fatal("start: the gateway is already running")
	}
	addrFile := e.args[slices.Index(e.args, "--addr-file")+1]
	_ = os.Remove(addrFile)
	logf, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(logf, "===== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(gatewayBin, e.args...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		e.t.Fatalf("start the gateway: %v", err)
	}
	logf.Close() // the child holds its own descriptor
	g := &mirrorGateway{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(g.exited)
	}()
	e.gw = g
	e.t.Cleanup(func() {
		if g.alive() {
			e.stopGateway(g)
		}
	})
	waitFor(e.t, 30*time.Second, "gateway address file", func() error {
		if !g.alive() {
			e.t.Fatalf("gateway exited during start-up (%v):\n%s", cmd.ProcessState, e.logTail(4000))
		}
		data, err := os.ReadFile(addrFile)
		if err != nil {
			return err
		}
		for _, line := range strings.Fields(string(data)) {
			if strings.HasPrefix(line, "ldap://") {
				g.URL = line
				return nil
			}
		}
		return fmt.Errorf("no ldap:// URL in %q", data)
	})
}

// stop ends the running gateway with SIGTERM; it must exit 0.
func (e *mirrorEnv) stop() {
	e.t.Helper()
	e.stopGateway(e.gw)
}

func (e *mirrorEnv) stopGateway(g *mirrorGateway) {
	e.t.Helper()
	if !g.alive() {
		e.t.Errorf("gateway had already exited: %v", g.cmd.ProcessState)
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			e.t.Errorf("gateway exited with %d on SIGTERM", code)
		}
	case <-time.After(20 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
		e.t.Errorf("gateway did not stop within 20s of SIGTERM")
	}
}

// kill ends the running gateway with SIGKILL and waits until it is gone.
func (e *mirrorEnv) kill() {
	e.t.Helper()
	_ = e.gw.cmd.Process.Kill()
	<-e.gw.exited
}

func (e *mirrorEnv) logTail(n int) string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}

// logCrash returns the gateway log from its first panic, fatal error or
// race report on (n bytes at most), or "": the tail of a crash is only the
// other goroutines' stacks, and the cause is at its start.
func (e *mirrorEnv) logCrash(n int) string {
	b, err := os.ReadFile(e.logPath)
	if err != nil {
		return ""
	}
	i := -1
	for _, mark := range []string{"\npanic: ", "\nfatal error: ", "WARNING: DATA RACE"} {
		if j := bytes.Index(b, []byte(mark)); j >= 0 && (i < 0 || j < i) {
			i = j
		}
	}
	if i < 0 {
		return ""
	}
	b = b[i:]
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// requireAlive fails the test when the gateway has died.
func (e *mirrorEnv) requireAlive() {
	e.t.Helper()
	if !e.gw.alive() {
		e.t.Fatalf("gateway died (%v)", e.gw.cmd.ProcessState)
	}
}

// setKnownPassword records a password the test set, for accounts whose
// directory value is a hash the checker cannot compare with.
func (e *mirrorEnv) setKnownPassword(account, pw string) {
	r := e.root()
	r.mu.Lock()
	r.known[strings.ToLower(account)] = pw
	r.mu.Unlock()
}

// ---- ldap-utils ----

// tool runs an ldap-utils command against the gateway bound as dn.
func (e *mirrorEnv) tool(stdin, name, dn, pw string, args ...string) toolResult {
	e.t.Helper()
	full := append([]string{"-x", "-H", e.gw.URL, "-D", dn, "-w", pw}, args...)
	return runTool(e.t, stdin, name, full...)
}

// mustTool is tool that requires exit code 0.
func (e *mirrorEnv) mustTool(stdin, name, dn, pw string, args ...string) toolResult {
	e.t.Helper()
	r := e.tool(stdin, name, dn, pw, args...)
	if r.Code != 0 {
		e.t.Fatalf("%s %v exited %d:\n%s\ninput:\n%s", name, args, r.Code, r.Out, stdin)
	}
	return r
}

// asAdmin runs a tool bound as the gateway admin (slapd's rootdn).
func (e *mirrorEnv) asAdmin(stdin, name string, args ...string) toolResult {
	e.t.Helper()
	return e.mustTool(stdin, name, mirrorAdminDN, e.dir.RootPW, args...)
}

// ---- the directory as slapd holds it ----

// directoryEntry reads one entry straight from slapd (not through the
// gateway) as the rootdn; nil when it does not exist.
func (e *mirrorEnv) directoryEntry(dn string, attrs ...string) *ldap.Entry {
	e.t.Helper()
	c, err := e.dir.AdminConn(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=*)", attrs, nil))
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("read %s from slapd: %v", dn, err)
	}
	return res.Entries[0]
}

// mirrorState is what Axigen should hold for the directory (or what it
// holds), keyed by lower-case name.
type mirrorState struct {
	Accounts map[string]schema.Account
	Groups   map[string]schema.Group
	// Unmappable are entries with a value Axigen cannot take (their mapping
	// error); the checker leaves them out.
	Unmappable map[string]error
}

// directoryState reads every account and group from slapd directly and maps
// them with the gateway's default OpenLDAP mapping.
func (e *mirrorEnv) directoryState() (mirrorState, error) {
	c, err := e.dir.AdminConn(context.Background())
	if err != nil {
		return mirrorState{}, err
	}
	defer c.Close()
	return readDirectoryState(c, e.mapping, mirrorSuffix, mirrorAccountBase, mirrorGroupBase)
}

// readDirectoryState reads every account under accountBase and group under
// groupBase and maps them as the gateway would; member addresses come from
// the mail of every entry under root. The checkers compare it with Axigen.
func readDirectoryState(c *ldap.Conn, mapping *schema.Mapping, root, accountBase, groupBase string) (mirrorState, error) {
	st := mirrorState{Accounts: map[string]schema.Account{}, Groups: map[string]schema.Group{}, Unmappable: map[string]error{}}
	search := func(base string, attrs []string) ([]*ldap.Entry, error) {
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, "(objectClass=*)", attrs, nil), 500)
		if err != nil {
			return nil, fmt.Errorf("search %s: %w", base, err)
		}
		return res.Entries, nil
	}
	mails := map[string]string{}
	all, err := search(root, []string{"mail"})
	if err != nil {
		return st, err
	}
	for _, en := range all {
		if m := en.GetAttributeValue("mail"); m != "" {
			mails[normalizeDN(en.DN)] = m
		}
	}
	accounts, err := search(accountBase, mapping.AccountAttributes())
	if err != nil {
		return st, err
	}
	for _, en := range accounts {
		se := toSchemaEntry(en)
		if mapping.ClassifyEntry(se) != schema.KindAccount {
			continue
		}
		a, err := mapping.AccountState(se)
		if err != nil {
			st.Unmappable[en.DN] = err
			continue
		}
		st.Accounts[strings.ToLower(a.Name)] = a
	}
	groups, err := search(groupBase, mapping.GroupAttributes())
	if err != nil {
		return st, err
	}
	resolve := func(dn string) (string, bool, error) {
		m, ok := mails[normalizeDN(dn)]
		return m, ok, nil
	}
	for _, en := range groups {
		se := toSchemaEntry(en)
		if mapping.ClassifyEntry(se) != schema.KindGroup {
			continue
		}
		g, err := mapping.GroupState(se, resolve)
		if err != nil {
			st.Unmappable[en.DN] = err
			continue
		}
		st.Groups[strings.ToLower(g.Name)] = g
	}
	return st, nil
}

// toSchemaEntry keeps every value byte for byte (binary ones such as
// objectGUID included).
func toSchemaEntry(en *ldap.Entry) schema.Entry {
	se := schema.Entry{DN: en.DN, Attrs: map[string][]string{}}
	for _, a := range en.Attributes {
		for _, v := range a.ByteValues {
			se.Attrs[a.Name] = append(se.Attrs[a.Name], string(v))
		}
	}
	return se
}

func normalizeDN(dn string) string {
	p, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(dn)
	}
	return strings.ToLower(p.String())
}

// checkMirrored compares the simulator with the directory: the same
// accounts (names, every contact field, the password where the directory
// holds it in plaintext or the test set it) and the same groups (names,
// member addresses). Entries the mapping refuses are left out when
// allowUnmappable, else they are a difference.
func (e *mirrorEnv) checkMirrored(allowUnmappable bool) error {
	want, err := e.directoryState()
	if err != nil {
		return err
	}
	unmapped := map[string]bool{}
	for dn := range want.Unmappable {
		if p, err := ldap.ParseDN(dn); err == nil && len(p.RDNs) > 0 {
			unmapped[strings.ToLower(p.RDNs[0].Attributes[0].Value)] = true
		}
	}
	known := e.knownPasswords()
	return diffMirror(want, e.sim, unmapped, !allowUnmappable, func(key string, w schema.Account, g axigensim.AccountState) string {
		pw := w.Password
		if pw == "" {
			pw = known[key]
		}
		if pw != "" && g.Password != pw {
			return "Axigen password differs from the directory's"
		}
		return ""
	})
}

// knownPasswords are the passwords tests set, by account name (the
// directory may hold them hashed).
func (e *mirrorEnv) knownPasswords() map[string]string {
	r := e.root()
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.known)
}

// diffMirror says how the simulator differs from want, the directory's
// state: accounts (names, contact info, password as checkPassword judges
// it) and groups (members). Axigen may hold what unmapped names (entries
// whose values it cannot take); with reportUnmappable each such entry is a
// difference too.
func diffMirror(want mirrorState, sim *axigensim.Server, unmapped map[string]bool, reportUnmappable bool,
	checkPassword func(key string, w schema.Account, g axigensim.AccountState) string) error {
	var diffs []string
	add := func(format string, a ...any) { diffs = append(diffs, fmt.Sprintf(format, a...)) }
	if reportUnmappable {
		for dn, err := range want.Unmappable {
			add("directory entry %s cannot be mapped: %v", dn, err)
		}
	}
	got := map[string]axigensim.AccountState{}
	for _, a := range sim.Accounts(mirrorDomain) {
		got[strings.ToLower(a.Name)] = a
	}
	for key, w := range want.Accounts {
		g, ok := got[key]
		if !ok {
			add("account %s: missing in Axigen", w.Name)
			continue
		}
		if g.Name != w.Name {
			add("account %s: Axigen names it %q", w.Name, g.Name)
		}
		if d := diffContact(w.Contact, g.Contact); d != "" {
			add("account %s: contact %s", w.Name, d)
		}
		if d := checkPassword(key, w, g); d != "" {
			add("account %s: %s", w.Name, d)
		}
	}
	for key, g := range got {
		if _, ok := want.Accounts[key]; !ok && !unmapped[key] {
			add("account %s: in Axigen, not in the directory", g.Name)
		}
	}
	gotGroups := map[string]axigensim.GroupState{}
	for _, g := range sim.Groups(mirrorDomain) {
		gotGroups[strings.ToLower(g.Name)] = g
	}
	for key, w := range want.Groups {
		g, ok := gotGroups[key]
		if !ok {
			add("group %s: missing in Axigen", w.Name)
			continue
		}
		if !equalFoldSets(w.Members, g.Members) {
			add("group %s: members %v in Axigen, %v in the directory", w.Name, g.Members, w.Members)
		}
	}
	for key, g := range gotGroups {
		if _, ok := want.Groups[key]; !ok && !unmapped[key] {
			add("group %s: in Axigen, not in the directory", g.Name)
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	n := len(diffs)
	if n > 15 {
		diffs = append(diffs[:15], fmt.Sprintf("... and %d more", n-15))
	}
	return fmt.Errorf("%d differences between Axigen and the directory:\n  %s", n, strings.Join(diffs, "\n  "))
}

// waitMirrored waits until the simulator equals the directory.
func (e *mirrorEnv) waitMirrored(d time.Duration, allowUnmappable bool) {
	e.t.Helper()
	waitFor(e.t, d, "Axigen equal to the directory", func() error { return e.checkMirrored(allowUnmappable) })
}

func diffContact(want, got map[string]string) string {
	var d []string
	for _, f := range schema.ContactFields {
		if want[f] != got[f] {
			d = append(d, fmt.Sprintf("%s=%q in Axigen, %q in the directory", f, got[f], want[f]))
		}
	}
	for k := range got {
		if !slices.Contains(schema.ContactFields, k) {
			d = append(d, fmt.Sprintf("unexpected field %s=%q", k, got[k]))
		}
	}
	return strings.Join(d, ", ")
}

func equalFoldSets(a, b []string) bool {
	fold := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = strings.ToLower(s)
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(fold(a), fold(b))
}

// waitAccount waits until the simulator's account name satisfies cond.
func (e *mirrorEnv) waitAccount(name, what string, cond func(a axigensim.AccountState, ok bool) bool) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, "Axigen account "+name+": "+what, func() error {
		a, ok := e.sim.Account(mirrorDomain, name)
		if cond(a, ok) {
			return nil
		}
		if !ok {
			return errors.New("no such account")
		}
		return fmt.Errorf("account is %+v", a)
	})
}

// waitGroup waits until the simulator's group name satisfies cond.
func (e *mirrorEnv) waitGroup(name, what string, cond func(g axigensim.GroupState, ok bool) bool) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, "Axigen group "+name+": "+what, func() error {
		g, ok := e.sim.Group(mirrorDomain, name)
		if cond(g, ok) {
			return nil
		}
		if !ok {
			return errors.New("no such group")
		}
		return fmt.Errorf("group is %+v", g)
	})
}

// ---- ldapgate journal (on the data folder of a stopped gateway) ----

// journalMissing reports (as a test error) that the binary has no journal
// command yet, so that the rest of a test still runs.
func (e *mirrorEnv) journalMissing() bool {
	e.t.Helper()
	out, _ := exec.Command(gatewayBin, "journal", "--help").CombinedOutput()
	if strings.Contains(string(out), "No help topic for 'journal'") {
		e.t.Error("`ldapgate journal` is not registered in cmd/ldapgate/main.go; the journal checks of this test did not run")
		return true
	}
	return false
}

// journal runs `ldapgate journal <args> --data-dir D`.
func (e *mirrorEnv) journal(args ...string) toolResult {
	e.t.Helper()
	if e.gw != nil && e.gw.alive() {
		e.t.Fatal("journal: stop the gateway first; the journal is locked while it runs")
	}
	full := append(append([]string{}, args...), "--data-dir", e.dataDir)
	out, errOut, code := runJournal(e.t, full...)
	if code != 0 {
		e.t.Fatalf("ldapgate journal %v exited %d:\nstdout:\n%s\nstderr:\n%s", full, code, out, errOut)
	}
	return toolResult{Out: out, Code: code}
}

// runJournal runs `ldapgate journal ARGS...` and returns its stdout, its
// stderr and its exit code.
func runJournal(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, append([]string{"journal"}, args...)...)
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("ldapgate journal %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// journalRecords lists the journal's records with `ldapgate journal ls
// --json` (plus extra flags such as --dead).
func (e *mirrorEnv) journalRecords(extra ...string) []store.Record {
	e.t.Helper()
	out := e.journal(append([]string{"ls", "--json", "--limit", "0"}, extra...)...).Out
	recs, err := decodeRecords(out)
	if err != nil {
		e.t.Fatalf("decode `ldapgate journal ls --json %s` output: %v\n%s", strings.Join(extra, " "), err, out)
	}
	return recs
}

// decodeRecords accepts a JSON array of records, one record per line, or a
// stream of either.
func decodeRecords(out string) ([]store.Record, error) {
	var recs []store.Record
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return recs, nil
		}
		if err != nil {
			return nil, err
		}
		raw = bytes.TrimSpace(raw)
		switch {
		case len(raw) > 0 && raw[0] == '[':
			var many []store.Record
			if err := json.Unmarshal(raw, &many); err != nil {
				return nil, err
			}
			recs = append(recs, many...)
		case len(raw) > 0 && raw[0] == '{':
			// An object: a record, or a wrapper holding "records".
			var wrapper struct {
				Records []store.Record `json:"records"`
			}
			if err := json.Unmarshal(raw, &wrapper); err == nil && wrapper.Records != nil {
				recs = append(recs, wrapper.Records...)
				continue
			}
			var r store.Record
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, err
			}
			recs = append(recs, r)
		default:
			return nil, fmt.Errorf("unexpected JSON value %s", raw)
		}
	}
}

// recordsAbout filters records whose DN or new DN is dn.
func recordsAbout(recs []store.Record, dn string) []store.Record {
	var out []store.Record
	for _, r := range recs {
		if schema.EqualDN(r.DN, dn) || (r.NewDN != "" && schema.EqualDN(r.NewDN, dn)) {
			out = append(out, r)
		}
	}
	return out
}

// errNotYet is a wait condition's "not yet" with nothing more to say.
var errNotYet = errors.New("not yet")

// runningStats asks the running gateway's admin endpoint (the Unix socket
// in its data folder) for the journal's counts.
func (e *mirrorEnv) runningStats() (store.Stats, error) {
	var st store.Stats
	return st, adminJSON(e.dataDir, "/journal/stats", 5*time.Second, &st)
}

// readAdmin reads path from the admin endpoint (the Unix socket in the
// data folder dataDir) of a running gateway.
func readAdmin(dataDir, path string, timeout time.Duration) ([]byte, error) {
	// No keep-alive: an idle admin connection is a goroutine in the gateway.
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(dataDir, "admin.sock"))
		}}}
	resp, err := client.Get("http://gateway" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// adminJSON reads path from a running gateway's admin endpoint into out.
func adminJSON(dataDir, path string, timeout time.Duration, out any) error {
	body, err := readAdmin(dataDir, path, timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode %s: %w: %s", path, err, body)
	}
	return nil
}

// waitDrained waits until the running gateway has no record left to
// settle or deliver, and fails if any is dead unless deadOK.
func (e *mirrorEnv) waitDrained(d time.Duration, deadOK bool) store.Stats {
	e.t.Helper()
	var st store.Stats
	waitFor(e.t, d, "journal drained", func() error {
		e.requireAlive()
		var err error
		if st, err = e.runningStats(); err != nil {
			return err
		}
		if st.Prepared+st.Committed+st.InFlight > 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if st.Dead > 0 && !deadOK {
		e.t.Errorf("journal holds %d dead letters: %+v", st.Dead, st)
	}
	return st
}

// keepLog copies a failed test's whole gateway log into the folder named
// by LDAPGATE_E2E_LOGS, when set: a failure seen once under load is read
// in full there, not only its tail.
func keepLog(t testing.TB, path string) {
	dir := os.Getenv("LDAPGATE_E2E_LOGS")
	if dir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("keeping the gateway log: %v", err)
		return
	}
	f, err := os.CreateTemp(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-*.log")
	if err == nil {
		_, err = f.Write(b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Logf("keeping the gateway log: %v", err)
		return
	}
	t.Logf("whole gateway log kept in %s", f.Name())
}
