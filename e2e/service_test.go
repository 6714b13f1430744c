package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/store"
)

// adminGet reads a path of the running gateway's admin endpoint through
// its socket in the data folder.
func adminGet(t *testing.T, dataDir, path string) []byte {
	t.Helper()
	b, err := readAdmin(dataDir, path, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// scrape reads the gateway's /metrics.
func scrape(t *testing.T, dataDir string) string { return string(adminGet(t, dataDir, "/metrics")) }

// runningRecords lists a running gateway's journal records in a state.
func runningRecords(t *testing.T, dataDir, state string) []store.Record {
	t.Helper()
	var recs []store.Record
	if err := json.Unmarshal(adminGet(t, dataDir, "/journal/records?state="+state), &recs); err != nil {
		t.Fatalf("journal records: %v", err)
	}
	return recs
}

// metric reads one sample's value; -1 when absent.
func metric(body, series string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func setPhone(c *ldap.Conn, dn, phone string) error {
	req := ldap.NewModifyRequest(dn, nil)
	req.Replace("telephoneNumber", []string{phone})
	return c.Modify(req)
}

// TestServiceMetricsAfterWorkload runs a known workload and checks the
// counters /metrics reports.
func TestServiceMetricsAfterWorkload(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info"})
	c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
	for i := 0; i < 5; i++ {
		if _, err := c.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeWholeSubtree, 0, 0, 0, false, "(uid=alice)", []string{"cn"}, nil)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		_, err := c.Search(ldap.NewSearchRequest("ou=nowhere,"+mirrorSuffix, ldap.ScopeBaseObject, 0, 0, 0, false, "(objectClass=*)", nil, nil))
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			t.Fatalf("search of a missing base: %v", err)
		}
	}
	for i, uid := range []string{"alice", "bob", "carol"} {
		if err := setPhone(c, userDN(uid), fmt.Sprintf("+1 555 77%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	bob := bindConn(t, e.gw.URL, userDN("bob"), slapd.BobPassword)
	if err := setPhone(bob, userDN("alice"), "+1 555 6666"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("bob changing alice's phone: %v, want 50", err)
	}
	e.waitMirrored(30*time.Second, false)

	var body string
	waitFor(t, 10*time.Second, "delivery counters", func() error {
		body = scrape(t, e.dataDir)
		// The journal marks a record delivered just after the attempt is
		// counted: wait for both.
		if v := metric(body, `ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`); v < 3 {
			return fmt.Errorf("delivered %v", v)
		}
		if v := metric(body, `ldapgate_journal_records{state="delivered"}`); v < 3 {
			return fmt.Errorf("journal delivered %v", v)
		}
		return nil
	})
	want := map[string]float64{
		`ldapgate_operations_total{op="bind",result="success"}`:                      2,
		`ldapgate_operations_total{op="search",result="success"}`:                    5,
		`ldapgate_operations_total{op="search",result="no_such_object"}`:             2,
		`ldapgate_operations_total{op="modify",result="success"}`:                    3,
		`ldapgate_operations_total{op="modify",result="insufficient_access_rights"}`: 1,
		`ldapgate_operation_duration_seconds_count{op="search"}`:                     7,
		`ldapgate_connections`:                        2,
		`ldapgate_journal_backlog`:                    0,
		`ldapgate_dead_letters`:                       0,
		`ldapgate_journal_records{state="delivered"}`: 3,
		`ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`: 3,
		`ldapgate_upstream_up{upstream="` + e.dir.URL + `"}`:                   1,
	}
	for series, v := range want {
		if got := metric(body, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	if strings.Contains(body, "uid=") || strings.Contains(body, "dc=example") {
		t.Error("a DN appears in the metrics")
	}
}

// TestServiceReloadPolicyUnderLoad changes the policy with SIGHUP while
// clients read and write: no operation fails, and the new policy applies.
func TestServiceReloadPolicyUnderLoad(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "ldapgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("log:\n  level: info\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newMirrorEnv(t, mirrorOptions{Users: 8, LogLevel: "info", Extra: []string{"--config", cfgFile}})

	// carol may write anything in the directory (cn=admins), but the
	// gateway does not count her as an admin yet.
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	if err := setPhone(carol, userDN("alice"), "+1 555 1111"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) ||
		!strings.Contains(err.Error(), "ldapgate: policy rule") {
		t.Fatalf("before the reload, carol changing alice's phone: %v, want the gateway's 50", err)
	}

	var ops, failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ldap.DialURL(e.gw.URL)
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer c.Close()
			uid := slapd.UserUID(w)
			if err := c.Bind(userDN(uid), slapd.UserPassword(w)); err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if i%2 == 0 {
					_, err = c.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeWholeSubtree, 0, 0, 0, false, "(uid=alice)", []string{"mail"}, nil))
				} else {
					err = setPhone(c, userDN(uid), fmt.Sprintf("+1 555 %04d", i))
				}
				ops.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "load running", func() error {
		if ops.Load() < 50 {
			return fmt.Errorf("%d operations so far", ops.Load())
		}
		return nil
	})

	// The new policy: members of cn=admins (carol) are gateway admins too.
	if err := os.WriteFile(cfgFile, []byte("log:\n  level: info\nmirror:\n  adminGroup: "+groupDN("admins")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = e.gw.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "reload logged", func() error {
		if !strings.Contains(e.logTail(1<<20), "configuration reloaded") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	before := ops.Load()
	waitFor(t, 10*time.Second, "load after the reload", func() error {
		if ops.Load() < before+50 {
			return fmt.Errorf("%d operations since the reload", ops.Load()-before)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d operations failed across the reload; first: %v", n, ops.Load(), firstErr.Load())
	}
	if err := setPhone(carol, userDN("alice"), "+1 555 2222"); err != nil {
		t.Fatalf("after the reload, carol (now an admin through cn=admins) changing alice's phone: %v", err)
	}
	e.waitAccount("alice", "phone +1 555 2222 mirrored", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 2222"
	})
	t.Logf("%d operations, none failed, across a policy reload", ops.Load())
	e.requireAlive()
}

// TestServiceSIGTERMUnderLoad stops the gateway with SIGTERM while clients
// write: it exits 0, and every write a client was told succeeded reaches
// the directory and, after a restart, Axigen.
func TestServiceSIGTERMUnderLoad(t *testing.T) {
	const writers = 6
	e := newMirrorEnv(t, mirrorOptions{Users: writers, LogLevel: "info"})
	acked := make([]atomic.Int64, writers) // last acknowledged sequence number per user
	var wg sync.WaitGroup
	var total atomic.Int64
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ldap.DialURL(e.gw.URL)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetTimeout(15 * time.Second)
			if c.Bind(mirrorAdminDN, e.dir.RootPW) != nil {
				return
			}
			for i := int64(1); ; i++ {
				if err := setPhone(c, userDN(slapd.UserUID(w)), fmt.Sprintf("+1 %06d", i)); err != nil {
					return // the gateway is going away
				}
				acked[w].Store(i)
				total.Add(1)
			}
		}()
	}
	waitFor(t, 20*time.Second, "writes flowing", func() error {
		if total.Load() < 100 {
			return fmt.Errorf("%d writes", total.Load())
		}
		return nil
	})
	e.stop() // SIGTERM; fails the test unless the exit code is 0
	wg.Wait()
	t.Logf("%d writes acknowledged before SIGTERM", total.Load())

	// Each user's phone in the directory is its last acknowledged write,
	// or one sent after it whose answer the shutdown cut off.
	for w := 0; w < writers; w++ {
		en := e.directoryEntry(userDN(slapd.UserUID(w)), "telephoneNumber")
		var got int64
		fmt.Sscanf(en.GetAttributeValue("telephoneNumber"), "+1 %d", &got)
		if got < acked[w].Load() {
			t.Errorf("user %d: the directory has write %d, but write %d was acknowledged", w, got, acked[w].Load())
		}
	}
	e.start()
	e.waitMirrored(60*time.Second, false)
}

// TestServiceSIGTERMWithPersistentSearch: a persistent (sync) search never
// finishes by itself, so it must not hold the shutdown for the whole grace
// period; its client is told the gateway is going away.
func TestServiceSIGTERMWithPersistentSearch(t *testing.T) {
	dir := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", dir.URL)
	st := startStreamingTool(t, "ldapsearch", "-x", "-H", g.URL, "-D", dir.RootDN, "-w", dir.RootPW,
		"-b", dir.Suffix, "-E", "sync=rp", "-LLL", "dn")
	st.waitOutput(t, "dn: uid=carol", 1)
	start := time.Now()
	g.stop(t) // SIGTERM; fails the test unless it exits 0
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %s with a persistent search open", took)
	}
	st.kill()
}
