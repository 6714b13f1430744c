// Package packaging_test checks what the Debian package ships: the
// Prometheus alerts against a real gateway's /metrics, and the package
// itself installed with dpkg.
package packaging_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"gopkg.in/yaml.v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const (
	alertsFile = "prometheus/alerts.yml"
	// The labels Prometheus adds to every scraped series (the job the
	// rules' comments tell administrators to configure).
	scrapeJob      = "ldapgate"
	scrapeInstance = "gateway:9389"

	domain      = "example.com"
	accountBase = "ou=people,dc=example,dc=com"
	groupBase   = "ou=groups,dc=example,dc=com"
	axigenAdmin = "admin"
	axigenPW    = "axigen-admin-pw"

	// The promtool timeline: each scenario's observed trend is followed
	// for seriesSteps minutes and the alerts are read at evalMinute, long
	// enough for every rule's window and `for`.
	seriesSteps = 45
	evalMinute  = 40
)

// A snapshot is one scrape of /metrics: series (name and labels as
// exposed) to value, and when it was taken.
type snapshot struct {
	at     time.Time
	values map[string]float64
}

// firing is an alert expected in a scenario, with the labels it must carry
// besides alertname, severity, job and instance (an empty value: the alert
// has no such label, as one about a whole cluster).
type firing struct {
	alert  string
	labels map[string]string
}

// scenario is a state the gateway was driven into, seen by two scrapes a
// moment apart, and the alerts that state must fire (no others).
type scenario struct {
	name        string
	first, last snapshot
	want        []firing
}

// Each alert's expression is evaluated on the gateway's real /metrics: the
// gateway runs against slapd and the Axigen simulator and is driven healthy,
// to an unreachable upstream, to an unreachable Axigen and to a dead letter.
// Two scrapes of each state give every series' value and trend; the trend is
// followed for 45 minutes of promtool time (a backlog that grew keeps
// growing, an age keeps ageing, a failure counter keeps counting, a gauge
// stays put) and `promtool test rules` must find exactly the alerts the
// state calls for.
func TestAlertsFireOnTheGatewaysRealMetrics(t *testing.T) {
	t.Parallel()
	promtool := requirePromtool(t)
	checkRules(t, promtool)
	alerts := alertNames(t)

	g := startGateway(t)
	var scenarios []scenario

	// Healthy: writes are delivered, the upstream answers.
	g.modify(t, "alice", "telephoneNumber", "+1 555 7001")
	g.waitMetric(t, `ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`, atLeast(1))
	g.waitMetric(t, "ldapgate_journal_backlog", equal(0))
	healthy := g.scrape(t)
	g.modify(t, "bob", "telephoneNumber", "+1 555 7002")
	g.waitMetric(t, `ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`, atLeast(2))
	g.waitMetric(t, "ldapgate_journal_backlog", equal(0))
	scenarios = append(scenarios, scenario{name: "healthy", first: healthy, last: g.scrape(t)})

	// The one upstream is killed: it is reported down, a write is refused
	// as unavailable, and the journal alert must not take that for a
	// journal failure.
	upstreamURL := g.dir.URL
	if err := g.dir.Kill(); err != nil {
		t.Fatal(err)
	}
	refused := `ldapgate_operations_total{op="modify",result="unavailable"}`
	g.modifyRefused(t, "carol", "telephoneNumber", "+1 555 7003")
	g.waitMetric(t, fmt.Sprintf("ldapgate_upstream_up{upstream=%q}", upstreamURL), equal(0))
	g.waitMetric(t, refused, atLeast(1))
	down := g.scrape(t)
	g.modifyRefused(t, "carol", "telephoneNumber", "+1 555 7004")
	g.waitMetric(t, refused, above(down.values[refused]))
	scenarios = append(scenarios, scenario{name: "upstream down", first: down, last: g.scrape(t),
		want: []firing{
			{alert: "LdapgateUpstreamDown", labels: map[string]string{"upstream": upstreamURL}},
			{alert: "LdapgateNoUpstreamReachable"},
		}})
	if err := g.dir.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.waitMetric(t, fmt.Sprintf("ldapgate_upstream_up{upstream=%q}", upstreamURL), equal(1))

	// Axigen refuses connections: writes still succeed, deliveries fail,
	// the backlog and the age of its oldest change grow.
	if err := g.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	failed := `ldapgate_delivery_attempts_total{kind="account",outcome="failed"}`
	g.modify(t, "alice", "telephoneNumber", "+1 555 7005")
	g.waitMetric(t, failed, atLeast(1))
	g.waitMetric(t, "ldapgate_journal_backlog", atLeast(1))
	axDown := g.scrape(t)
	g.modify(t, "bob", "telephoneNumber", "+1 555 7006")
	g.waitMetric(t, "ldapgate_journal_backlog", atLeast(2))
	g.waitMetric(t, failed, above(axDown.values[failed]))
	g.waitMetric(t, "ldapgate_journal_oldest_pending_seconds", above(axDown.values["ldapgate_journal_oldest_pending_seconds"]))
	scenarios = append(scenarios, scenario{name: "Axigen down", first: axDown, last: g.scrape(t),
		want: []firing{
			{alert: "LdapgateAxigenUnreachable"},
			{alert: "LdapgateJournalBacklogGrowing"},
			{alert: "LdapgateOldestChangeUndelivered"},
		}})
	if err := g.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	g.waitMetric(t, "ldapgate_journal_backlog", equal(0))

	// Carol's Axigen account is tied to another directory entry (its LDAP
	// association says so): delivering her entry there would take over
	// someone else's mailbox, so the next delivery becomes a dead letter;
	// the deliveries after it succeed.
	if !g.sim.SetAssociation(domain, "carol", "another-entry", "uid=another,"+accountBase) {
		t.Fatal("the simulator has no account carol")
	}
	g.modify(t, "carol", "telephoneNumber", "+1 555 7008")
	g.waitMetric(t, "ldapgate_dead_letters", equal(1))
	dead := g.scrape(t)
	g.modify(t, "alice", "telephoneNumber", "+1 555 7007")
	g.waitMetric(t, `ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`,
		above(dead.values[`ldapgate_delivery_attempts_total{kind="account",outcome="delivered"}`]))
	g.waitMetric(t, "ldapgate_journal_backlog", equal(0))
	scenarios = append(scenarios, scenario{name: "dead letter", first: dead, last: g.scrape(t),
		want: []firing{{alert: "LdapgateDeadLetters"}}})

	// A gateway of a cluster whose other voter never answers: no quorum,
	// no leader. (No write is tried: it would be refused, as it should.)
	self, ghost := freeLoopbackAddr(t), freeLoopbackAddr(t)
	lone := startGateway(t, "--node-id", "a", "--cluster-listen", self,
		"--cluster-peer", "a@"+self, "--cluster-peer", "b@"+ghost)
	lone.waitMetric(t, "ldapgate_cluster_leader_known", equal(0))
	noQuorum := lone.scrape(t)
	lone.waitMetric(t, `ldapgate_cluster_role{role="candidate"}`, atLeast(0))
	scenarios = append(scenarios, scenario{name: "cluster without quorum", first: noQuorum, last: lone.scrape(t),
		want: []firing{{alert: "LdapgateNoLeader", labels: map[string]string{"instance": ""}}}})

	checkMetricNames(t, scenarios)
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			for _, w := range sc.want {
				if !slices.Contains(alerts, w.alert) {
					t.Fatalf("%s expects alert %s, which %s does not define", sc.name, w.alert, alertsFile)
				}
			}
			runPromtoolTest(t, promtool, sc, alerts)
		})
	}
}

// metricName finds the gateway's metric names in rule expressions and
// dashboard queries.
var metricName = regexp.MustCompile(`\bldapgate_[a-z_]+\b`)

// checkMetricNames checks that every metric the alerts and the dashboard
// read is one the gateway exported in the scenarios. The cluster's
// metrics appear only on a clustered gateway; they must be defined in its
// collector (cmd/ldapgate/cluster_admin.go).
func checkMetricNames(t *testing.T, scenarios []scenario) {
	t.Helper()
	exported := map[string]bool{}
	for _, sc := range scenarios {
		for _, snap := range []snapshot{sc.first, sc.last} {
			for series := range snap.values {
				name, _, _ := strings.Cut(series, "{")
				exported[name] = true
			}
		}
	}
	clusterSource := readAll(t, filepath.Join(moduleRoot(t), "cmd", "ldapgate"), "cluster_admin.go")
	for _, file := range []string{alertsFile, "grafana/ldapgate.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "#") {
				text.WriteString(line + "\n")
			}
		}
		for _, name := range metricName.FindAllString(text.String(), -1) {
			switch {
			case exported[name], exported[name+"_bucket"]: // a histogram's family name
			case strings.HasPrefix(name, "ldapgate_cluster_") && strings.Contains(clusterSource, `"`+name+`"`):
			default:
				t.Errorf("%s reads %s, which the gateway does not export", file, name)
			}
		}
	}
}

// readAll concatenates the files of dir whose names end in suffix.
func readAll(t *testing.T, dir, suffix string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), suffix) {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
	}
	return b.String()
}

func requirePromtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian package prometheus; `make packaging-deps`)")
	}
	return path
}

// checkRules runs `promtool check rules` on the shipped file.
func checkRules(t *testing.T, promtool string) {
	t.Helper()
	if out, err := exec.Command(promtool, "check", "rules", alertsFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", alertsFile, err, out)
	}
}

// ruleFile is the part of a Prometheus rule file the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string           `yaml:"name"`
		Rules []map[string]any `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return rf
}

// alertNames lists every alert the shipped file defines.
func alertNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if name, ok := r["alert"].(string); ok {
				names = append(names, name)
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("%s defines no alerts", alertsFile)
	}
	return names
}

// rulesWithoutAnnotations writes the shipped rules with their annotations
// removed: expressions, `for` and labels decide what fires and stay as
// shipped; the annotations' texts would otherwise have to be repeated in
// every expectation (promtool compares them too, and check rules has
// already parsed their templates).
func rulesWithoutAnnotations(t *testing.T, dir string) string {
	t.Helper()
	rf := readRules(t)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			delete(r, "annotations")
		}
	}
	data, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// promtool test rules' input, as far as this test uses it.
type (
	ruleTests struct {
		RuleFiles          []string   `yaml:"rule_files"`
		EvaluationInterval string     `yaml:"evaluation_interval"`
		Tests              []ruleTest `yaml:"tests"`
	}
	ruleTest struct {
		Interval      string          `yaml:"interval"`
		InputSeries   []inputSeries   `yaml:"input_series"`
		AlertRuleTest []alertRuleTest `yaml:"alert_rule_test"`
	}
	inputSeries struct {
		Series string `yaml:"series"`
		Values string `yaml:"values"`
	}
	alertRuleTest struct {
		EvalTime  string          `yaml:"eval_time"`
		Alertname string          `yaml:"alertname"`
		ExpAlerts []expectedAlert `yaml:"exp_alerts"`
	}
	expectedAlert struct {
		ExpLabels map[string]string `yaml:"exp_labels"`
	}
)

// runPromtoolTest writes sc's series and expectations (every alert of the
// file: the wanted ones with their labels, the others expected silent) and
// runs `promtool test rules`.
func runPromtoolTest(t *testing.T, promtool string, sc scenario, alerts []string) {
	dir := t.TempDir()
	rules := rulesWithoutAnnotations(t, dir)
	severity := map[string]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if labels, ok := r["labels"].(map[string]any); ok {
				severity[fmt.Sprint(r["alert"])] = fmt.Sprint(labels["severity"])
			}
		}
	}
	test := ruleTest{Interval: "1m", InputSeries: inputFromScrapes(sc.first, sc.last)}
	for _, name := range alerts {
		art := alertRuleTest{EvalTime: fmt.Sprintf("%dm", evalMinute), Alertname: name, ExpAlerts: []expectedAlert{}}
		for _, w := range sc.want {
			if w.alert != name {
				continue
			}
			labels := map[string]string{"severity": severity[name], "job": scrapeJob, "instance": scrapeInstance}
			for k, v := range w.labels {
				if v == "" {
					delete(labels, k) // an alert about the whole job has no instance
					continue
				}
				labels[k] = v
			}
			art.ExpAlerts = append(art.ExpAlerts, expectedAlert{ExpLabels: labels})
		}
		test.AlertRuleTest = append(test.AlertRuleTest, art)
	}
	data, err := yaml.Marshal(ruleTests{RuleFiles: []string{rules}, EvaluationInterval: "1m", Tests: []ruleTest{test}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "test.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", path).CombinedOutput()
	if err != nil {
		t.Errorf("promtool test rules (%s; want %v): %v\n%s", sc.name, sc.want, err, out)
		if testing.Verbose() {
			t.Logf("input:\n%s", data)
		}
	}
}

// inputFromScrapes turns two scrapes into promtool series: each series
// starts at its last scraped value and changes every minute by what it
// changed per minute between the scrapes. Prometheus' own `up` is 1: both
// scrapes succeeded.
func inputFromScrapes(first, last snapshot) []inputSeries {
	elapsed := last.at.Sub(first.at).Minutes()
	extra := fmt.Sprintf(`job=%q,instance=%q`, scrapeJob, scrapeInstance)
	series := []inputSeries{{Series: "up{" + extra + "}", Values: fmt.Sprintf("1x%d", seriesSteps)}}
	keys := make([]string, 0, len(last.values))
	for k := range last.values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := last.values[k]
		perMinute := 0.0
		if before, ok := first.values[k]; ok && elapsed > 0 {
			perMinute = (v - before) / elapsed
		}
		name, labels, _ := strings.Cut(k, "{")
		labels = strings.TrimSuffix(labels, "}")
		if labels != "" {
			labels += ","
		}
		step := "+" + formatValue(perMinute)
		if perMinute < 0 {
			step = formatValue(perMinute)
		}
		series = append(series, inputSeries{
			Series: name + "{" + labels + extra + "}",
			Values: fmt.Sprintf("%s%sx%d", formatValue(v), step, seriesSteps),
		})
	}
	return series
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// gateway is a running `ldapgate serve` mirroring slapd into the simulator,
// with its admin endpoint on a loopback port.
type gateway struct {
	url, admin string
	dir        *slapd.Server
	sim        *axigensim.Server
	log        *os.File
}

func startGateway(t *testing.T, extra ...string) *gateway {
	t.Helper()
	bin := buildBinary(t)
	root := t.TempDir()
	dir := slapd.StartT(t, slapd.Options{})
	sim := axigensim.New(axigensim.Options{Admins: map[string]string{axigenAdmin: axigenPW}, Domains: []string{domain}})
	ctx, cancel := context.WithCancel(context.Background())
	if err := sim.Start(ctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); sim.Close() })
	// Axigen holds the directory's accounts, as if in sync before.
	for _, uid := range []string{"alice", "bob", "carol"} {
		sim.PutAccount(domain, axigensim.AccountState{Name: uid})
	}

	axPW, svcPW := filepath.Join(root, "axigen.pw"), filepath.Join(root, "service.pw")
	for path, pw := range map[string]string{axPW: axigenPW, svcPW: dir.RootPW} {
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	admin := freeLoopbackAddr(t)
	addrFile := filepath.Join(root, "addr")
	logf, err := os.Create(filepath.Join(root, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve",
		"--listen", "ldap://127.0.0.1:0", "--addr-file", addrFile,
		"--upstream", dir.URL, "--data-dir", filepath.Join(root, "data"),
		"--admin-listen", admin,
		"--axigen", sim.Addr(), "--axigen-user", axigenAdmin, "--axigen-password-file", axPW,
		"--axigen-domain", domain, "--dialect", "openldap",
		"--account-base", accountBase, "--group-base", groupBase,
		"--service-dn", dir.RootDN, "--service-password-file", svcPW, "--admin-dn", dir.RootDN,
		"--max-attempts", "25", "--log-level", "debug")
	cmd.Args = append(cmd.Args, extra...)
	if slices.Contains(extra, "--cluster-peer") {
		// A clustered gateway needs the cluster's shared key in place.
		if err := os.MkdirAll(filepath.Join(root, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "data", "journal.key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Env = withoutLDAPGateEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	g := &gateway{admin: admin, dir: dir, sim: sim, log: logf}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("the gateway did not stop within 20s of SIGTERM")
		}
		if t.Failed() {
			g.showLog(t)
		}
		logf.Close()
	})
	waitFor(t, 30*time.Second, "the gateway's address file", func() (bool, string) {
		select {
		case <-exited:
			g.showLog(t)
			t.Fatalf("the gateway exited during start-up: %v", cmd.ProcessState)
		default:
		}
		data, err := os.ReadFile(addrFile)
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Fields(string(data)) {
			if strings.HasPrefix(line, "ldap://") {
				g.url = line
				return true, ""
			}
		}
		return false, fmt.Sprintf("no ldap:// URL in %q", data)
	})
	return g
}

func (g *gateway) showLog(t *testing.T) {
	data, _ := os.ReadFile(g.log.Name())
	if len(data) > 12000 {
		data = data[len(data)-12000:]
	}
	t.Logf("gateway log (tail):\n%s", data)
}

// buildBinary builds ./cmd/ldapgate from the module root.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ldapgate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ldapgate")
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ldapgate: %v\n%s", err, out)
	}
	return bin
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

func withoutLDAPGateEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, "LDAPGATE_") {
			out = append(out, kv)
		}
	}
	return out
}

// freeLoopbackAddr is a loopback address with a port free a moment ago:
// the admin listener has no address file of its own.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// modify replaces attr of the account uid through the gateway, as the
// directory's administrator; it must succeed.
func (g *gateway) modify(t *testing.T, uid, attr, value string) {
	t.Helper()
	if err := g.tryModify(uid, attr, value); err != nil {
		t.Fatalf("modify %s of %s through the gateway: %v", attr, uid, err)
	}
}

func (g *gateway) tryModify(uid, attr, value string) error {
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Bind(g.dir.RootDN, g.dir.RootPW); err != nil {
		return err
	}
	return modify(conn, uid, attr, value)
}

// modifyDirect replaces attr of the account uid in the directory itself,
// behind the gateway's back; it must succeed.
func (g *gateway) modifyDirect(t *testing.T, uid, attr, value string) {
	t.Helper()
	conn, err := ldap.DialURL(g.dir.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Bind(g.dir.RootDN, g.dir.RootPW); err != nil {
		t.Fatal(err)
	}
	if err := modify(conn, uid, attr, value); err != nil {
		t.Fatalf("modify %s of %s in the directory: %v", attr, uid, err)
	}
}

// modifyRefused tries the change anonymously while the directory is down:
// the gateway must refuse it as unavailable (it cannot read the entry to
// check the change).
func (g *gateway) modifyRefused(t *testing.T, uid, attr, value string) {
	t.Helper()
	conn, err := g.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := modify(conn, uid, attr, value); !ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) {
		t.Fatalf("a write with the directory down: %v; want unavailable (52)", err)
	}
}

func (g *gateway) dial() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(g.url, ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(10 * time.Second)
	return conn, nil
}

func modify(conn *ldap.Conn, uid, attr, value string) error {
	req := ldap.NewModifyRequest("uid="+uid+","+accountBase, nil)
	req.Replace(attr, []string{value})
	return conn.Modify(req)
}

// scrape reads /metrics from the admin endpoint's TCP listener, as
// Prometheus does.
func (g *gateway) scrape(t *testing.T) snapshot {
	t.Helper()
	s, err := g.tryScrape()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (g *gateway) tryScrape() (snapshot, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + g.admin + "/metrics")
	if err != nil {
		return snapshot{}, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return snapshot{}, fmt.Errorf("scrape: %s", resp.Status)
	}
	s := snapshot{at: time.Now(), values: map[string]float64{}}
	if err := parseExposition(resp.Body, s.values); err != nil {
		return snapshot{}, err
	}
	return s, nil
}

// parseExposition reads the text exposition format's samples of the
// gateway's own metrics (ldapgate_*), keyed by name and labels as written
// (the same syntax PromQL's series selectors use). Go runtime and process
// metrics are left out: no alert reads them.
func parseExposition(r io.Reader, into map[string]float64) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "ldapgate_") {
			continue
		}
		end := strings.IndexByte(line, ' ')
		if i := strings.IndexByte(line, '{'); i >= 0 && (end < 0 || i < end) {
			end = labelsEnd(line, i)
		}
		if end < 0 || end >= len(line) {
			return fmt.Errorf("metrics line %q: no value", line)
		}
		fields := strings.Fields(line[end:])
		if len(fields) == 0 {
			return fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return fmt.Errorf("metrics line %q: %w", line, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		into[line[:end]] = v
	}
	return sc.Err()
}

// labelsEnd is the index after the '}' closing the label set opened at
// open, skipping quoted values (which may hold '}' and escaped quotes).
func labelsEnd(line string, open int) int {
	quoted := false
	for i := open + 1; i < len(line); i++ {
		switch c := line[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i + 1
		}
	}
	return -1
}

func equal(want float64) func(float64) bool   { return func(v float64) bool { return v == want } }
func atLeast(want float64) func(float64) bool { return func(v float64) bool { return v >= want } }
func above(want float64) func(float64) bool   { return func(v float64) bool { return v > want } }

// waitMetric waits until series (name and labels as exposed) satisfies ok.
func (g *gateway) waitMetric(t *testing.T, series string, ok func(float64) bool) {
	t.Helper()
	waitFor(t, 45*time.Second, series, func() (bool, string) {
		s, err := g.tryScrape()
		if err != nil {
			return false, err.Error()
		}
		v, found := s.values[series]
		if !found {
			return false, "not in /metrics"
		}
		return ok(v), fmt.Sprintf("value %v", v)
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", limit, what, state)
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}
