package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/proccpu"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// BenchmarkMirrorModify measures ldapmodify-style load on account entries
// (telephoneNumber replaced, one entry per request) from 8 concurrent go-ldap
// clients bound as the admin: straight to slapd, and through the gateway
// with journal (fsync) and delivery to the Axigen simulator on, in
// interleaved rounds of the same run. It reports both throughputs, their
// ratio (target >= 0.9), and the time from a client's success to the change
// being visible in the simulator (p50, p99; target p99 < 1s).
//
// The body runs a fixed schedule whatever b.N is; run it with -benchtime=1x:
//
//	go test -run '^$' -bench MirrorModify -benchtime=1x ./e2e/
//
// With LDAPGATE_BENCH_JOURNAL_DIR set to a folder, the gateway's data
// folder (its journal) is made there: LDAPGATE_BENCH_JOURNAL_DIR=/dev/shm
// shows what the journal's syncs to this machine's disk cost.
//
// With LDAPGATE_BENCH_PROFILE set to a folder, each gateway round also
// writes CPU profiles there: the gateway's (gateway-rN.pprof, from its admin
// socket) and this process's, the clients' and the simulator's
// (test-rN.pprof). `go tool pprof` merges the rounds' files.
func BenchmarkMirrorModify(b *testing.B) {
	const (
		users   = 1000
		clients = 8
		rounds  = 3
		span    = 3 * time.Second
	)
	e := newMirrorEnv(b, mirrorOptions{Users: users, Groups: 10, LogLevel: "warn",
		DataParent: os.Getenv("LDAPGATE_BENCH_JOURNAL_DIR")})
	uids := make([]string, users)
	for i := range users {
		uids[i] = slapd.UserUID(i)
	}
	procs := []string{"slapd", "gateway", "clients+simulator"}
	pids := []int{e.dir.PID(), e.gw.cmd.Process.Pid, os.Getpid()}
	b.ResetTimer()
	var direct, gateway []float64
	var lat []time.Duration
	var directCPU, gatewayCPU proccpu.Sample
	var directN, gatewayN int64
	for r := range rounds {
		before := proccpu.Take(pids...)
		n := modifyLoad(b, e.dir.URL, e.dir.RootPW, clients, uids, span, fmt.Sprintf("d%d", r), nil)
		directCPU = directCPU.Add(proccpu.Take(pids...).Since(before))
		directN += n
		direct = append(direct, float64(n)/span.Seconds())
		vis := newVisibility(e)
		stopProfiles := startProfiles(b, e, r, span)
		before = proccpu.Take(pids...)
		n = modifyLoad(b, e.gw.URL, e.dir.RootPW, clients, uids, span, fmt.Sprintf("g%d", r), vis)
		stopProfiles()
		lat = append(lat, vis.finish(b, 30*time.Second)...)
		gatewayCPU = gatewayCPU.Add(proccpu.Take(pids...).Since(before)) // deliveries included
		gatewayN += n
		gateway = append(gateway, float64(n)/span.Seconds())
	}
	// Diagnostic: the write path alone (journal, policy read, relay) while
	// deliveries fail fast against a refusing Axigen.
	if err := e.sim.SetDown(true); err != nil {
		b.Fatal(err)
	}
	n := modifyLoad(b, e.gw.URL, e.dir.RootPW, clients, uids, span, "down", nil)
	writePath := float64(n) / span.Seconds()
	b.StopTimer()
	if err := e.sim.SetDown(false); err != nil {
		b.Fatal(err)
	}
	e.waitDrained(120*time.Second, false)

	d, g := median(direct), median(gateway)
	slices.Sort(lat)
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	b.ReportMetric(d, "direct-mods/s")
	b.ReportMetric(g, "gateway-mods/s")
	b.ReportMetric(g/d, "ratio")
	b.ReportMetric(writePath, "no-delivery-mods/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-visible-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-visible-ms")
	b.Logf("modify, %d clients, %d rounds of %v: direct %.0f/s %v, gateway %.0f/s %v, ratio %.2f (target >= 0.90); "+
		"success-to-Axigen over %d changes: p50 %v, p99 %v, max %v (target p99 < 1s); "+
		"write path alone (Axigen down, no delivery) %.0f/s, ratio %.2f",
		clients, rounds, span, d, round0(direct), g, round0(gateway), g/d, len(lat),
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), writePath, writePath/d)
	b.Logf("CPU per write (µs; the gateway's rounds include delivering to the simulator): direct %s; through the gateway %s",
		perWrite(directCPU, procs, directN), perWrite(gatewayCPU, procs, gatewayN))
}

// startProfiles starts the CPU profiles of a gateway round when
// LDAPGATE_BENCH_PROFILE names a folder; the returned func ends them and
// waits for the files.
func startProfiles(b *testing.B, e *mirrorEnv, round int, span time.Duration) func() {
	dir := os.Getenv("LDAPGATE_BENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	own, err := os.Create(filepath.Join(dir, fmt.Sprintf("test-r%d.pprof", round)))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(own); err != nil {
		b.Fatal(err)
	}
	gw := make(chan error, 1)
	go func() { gw <- e.gatewayProfile(filepath.Join(dir, fmt.Sprintf("gateway-r%d.pprof", round)), span) }()
	return func() {
		pprof.StopCPUProfile()
		if err := own.Close(); err != nil {
			b.Error(err)
		}
		if err := <-gw; err != nil {
			b.Errorf("gateway profile: %v", err)
		}
	}
}

// gatewayProfile writes to path a CPU profile of the running gateway over
// d, taken from its admin socket (profiles are served there only).
func (e *mirrorEnv) gatewayProfile(path string, d time.Duration) error {
	client := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", filepath.Join(e.dataDir, "admin.sock"))
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(fmt.Sprintf("http://gateway/debug/pprof/profile?seconds=%d", int(d.Round(time.Second).Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// perWrite renders CPU time per write for each process and in all.
func perWrite(u proccpu.Sample, procs []string, writes int64) string {
	parts := make([]string, 0, len(u)+1)
	var total time.Duration
	for i, d := range u {
		total += d
		parts = append(parts, fmt.Sprintf("%s %.0f", procs[i], float64(d.Microseconds())/float64(max(writes, 1))))
	}
	return fmt.Sprintf("%s, total %.0f", strings.Join(parts, ", "), float64(total.Microseconds())/float64(max(writes, 1)))
}

// modifyLoad runs clients concurrent connections bound as the admin, each
// replacing the telephoneNumber of its own share of uids in turn, for span.
// It returns the number of successful modifies. With vis set, every write
// is registered there before it is sent and acknowledged on success.
func modifyLoad(b testing.TB, url, adminPW string, clients int, uids []string, span time.Duration, tag string, vis *visibility) int64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	deadline := time.Now().Add(span)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := ldap.DialURL(url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			conn.SetTimeout(30 * time.Second)
			if err := conn.Bind(mirrorAdminDN, adminPW); err != nil {
				errs <- err
				return
			}
			for n := 0; time.Now().Before(deadline); n++ {
				uid := uids[(c+n*clients)%len(uids)]
				value := fmt.Sprintf("+1 555 %s-%d-%d", tag, c, n)
				req := ldap.NewModifyRequest(userDN(uid), nil)
				req.Replace("telephoneNumber", []string{value})
				var w *pendingWrite
				if vis != nil {
					w = vis.sent(uid, value)
				}
				if err := conn.Modify(req); err != nil {
					errs <- fmt.Errorf("modify %s: %w", uid, err)
					return
				}
				if w != nil {
					vis.acked(w)
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("%s load: %v", tag, err)
	}
	return done.Load()
}

// visibility measures, per write, the time from its acknowledgement to the
// simulator showing its value (or a later one of the same entry: delivery
// is state-based, so a later value proves the earlier write arrived). The
// simulator reports each committed account, so measuring costs no polling.
type visibility struct {
	e *mirrorEnv

	mu      sync.Mutex
	pending map[string][]*pendingWrite // by uid, in the order sent
	all     []*pendingWrite
}

type pendingWrite struct {
	uid, value     string
	ack, visibleAt time.Time
}

func newVisibility(e *mirrorEnv) *visibility {
	v := &visibility{e: e, pending: map[string][]*pendingWrite{}}
	e.sim.OnAccountCommit(v.committed)
	return v
}

func (v *visibility) sent(uid, value string) *pendingWrite {
	w := &pendingWrite{uid: uid, value: value}
	v.mu.Lock()
	v.pending[uid] = append(v.pending[uid], w)
	v.all = append(v.all, w)
	v.mu.Unlock()
	return w
}

func (v *visibility) acked(w *pendingWrite) {
	now := time.Now()
	v.mu.Lock()
	w.ack = now
	v.mu.Unlock()
}

// committed marks the writes of an account up to the value Axigen now has.
func (v *visibility) committed(domain string, a axigensim.AccountState) {
	if domain != mirrorDomain {
		return
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	ws := v.pending[a.Name]
	for i := len(ws) - 1; i >= 0; i-- {
		if ws[i].value == a.Contact["phone"] {
			for _, w := range ws[:i+1] {
				w.visibleAt = now
			}
			v.pending[a.Name] = ws[i+1:]
			return
		}
	}
}

// finish waits until every acknowledged write is visible and returns the
// latencies (0 when the change was visible before the client heard back).
func (v *visibility) finish(b testing.TB, within time.Duration) []time.Duration {
	b.Helper()
	waitFor(b, within, "every acknowledged write visible in Axigen", func() error {
		v.mu.Lock()
		defer v.mu.Unlock()
		n := 0
		for _, ws := range v.pending {
			for _, w := range ws {
				if !w.ack.IsZero() {
					n++
				}
			}
		}
		if n > 0 {
			return fmt.Errorf("%d not yet", n)
		}
		return nil
	})
	v.e.sim.OnAccountCommit(nil)
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []time.Duration
	for _, w := range v.all {
		if w.ack.IsZero() {
			continue
		}
		out = append(out, max(0, w.visibleAt.Sub(w.ack)))
	}
	return out
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func round0(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
