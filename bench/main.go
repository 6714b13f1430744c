// Command bench measures, side by side in one run, the ways for LDAP
// clients to reach one slapd holding -users users. Rounds are interleaved
// (every path in every round, in a rotating order) so drift in the
// machine's load hits all paths alike.
//
//	go run ./bench [-users 10000] [-duration 3s] [-rounds 3] [-clients 8] [-quick] [-suites relay,mirror,cluster]
//
// Suite relay: reads and binds directly, through a plain TCP byte pipe,
// through slapd's own back-ldap proxy, and through the ldapgate binary
// (mirroring off).
//
// Suite mirror (mirror.go): -clients clients replacing displayName on
// random users, directly and through a gateway that journals each write
// and mirrors it into the Axigen simulator, once with the journal on disk
// (-journal-disk, the temporary folder by default) and once on tmpfs
// (-journal-tmpfs, /dev/shm). It prints the CPU time per write of slapd,
// the gateway, the simulator and the clients (from /proc), the writes/s,
// the time from each write's success to the change in Axigen, and the
// ratios issue 19 sets targets for.
//
// Suite postread (postread.go), run only when named: slapd alone, the
// mirror suite's modifies without and with the post-read control the
// gateway adds to them (issue 19: what it costs slapd by itself).
//
// Suite cluster (cluster.go): the mirror suite's writes through one lone
// gateway and through three gateways clustered over Raft on loopback (the
// clients spread over them), in the same rounds: writes/s, each write's
// time (p50, p99) and what the cluster adds to it, CPU time per write.
//
// LDAPGATE_BENCH_PROFILE=DIR writes, for the mirror suite, CPU profiles of
// each gateway round (from the gateway's admin socket) and of the clients,
// the simulator's over the run, and each gateway's allocation profile.
//
// -compare BINARY measures a second gateway binary as path gateway-b in the
// same rounds (in the mirror suite: gateway-b-disk, its journal on disk),
// for an A/B of a change under the same machine load.
//
// Workloads:
//   - search-N: N clients, each one bound connection searching for a random
//     uid= after the previous answer (N = -clients, and 1);
//   - bind-N: N clients each looping connect, bind as a random user, one
//     search, unbind.
//
// It prints ops/s per path and workload (median of the rounds, and the
// spread) and the ratios gateway/pipe, gateway/back-ldap and each/direct,
// with the project's targets: gateway >= 0.9 of pipe and >= 1.25 of
// back-ldap.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/proccpu"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

type options struct {
	users    int
	duration time.Duration
	warmup   time.Duration
	rounds   int
	clients  int
	gateway  string
	compare  string
	paths    string
	work     string
	strict   bool
	verbose  bool
	suites   string
	diskDir  string
	tmpfsDir string
}

func main() {
	// Re-executed as the byte pipe: a process of its own, like the gateway
	// and back-ldap, so it does not share the client's CPU scheduling.
	if len(os.Args) == 4 && os.Args[1] == "pipe" {
		if err := runPipe(os.Args[2], os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "bench pipe:", err)
			os.Exit(1)
		}
		return
	}
	// Re-executed as the Axigen simulator of the mirror suite.
	if len(os.Args) == 6 && os.Args[1] == "axigen-sim" {
		if err := runSim(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "bench axigen-sim:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	quick := false
	flag.IntVar(&o.users, "users", 10000, "users in the directory")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "length of one measurement (path × workload × round)")
	flag.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "warm-up per path before the first round")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each measures every path and workload once")
	flag.IntVar(&o.clients, "clients", 8, "concurrent clients of the concurrent workloads")
	flag.StringVar(&o.gateway, "gateway", "bin/ldapgate", "gateway binary; built into a temporary folder if missing")
	flag.StringVar(&o.compare, "compare", "", "a second gateway binary, measured as path gateway-b in the same rounds (A/B of a change)")
	flag.StringVar(&o.paths, "paths", "direct,pipe,back-ldap,gateway", "paths to measure")
	flag.StringVar(&o.work, "workloads", "", "workloads to run (default: all)")
	flag.BoolVar(&quick, "quick", false, "1 s measurements, 1 round, unless -duration/-rounds/-warmup say otherwise (proves the bench runs)")
	flag.BoolVar(&o.strict, "strict", false, "exit 1 when a target is missed")
	flag.BoolVar(&o.verbose, "v", false, "log set-up steps")
	flag.StringVar(&o.suites, "suites", "relay,mirror,cluster", "suites to run: relay (reads and binds), mirror (mirrored writes), cluster (mirrored writes through a lone gateway and a 3-gateway Raft cluster), postread (slapd alone: modifies with and without the gateway's post-read control; not run by default)")
	flag.StringVar(&o.diskDir, "journal-disk", os.TempDir(), "folder for the journal of the gateway-disk path of the mirror suite (\"\": skip that path)")
	flag.StringVar(&o.tmpfsDir, "journal-tmpfs", "/dev/shm", "folder (tmpfs) for the journal of the gateway-tmpfs path of the mirror suite (\"\": skip that path)")
	flag.Parse()
	if quick { // shorter defaults; flags given explicitly still win
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = time.Second
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["warmup"] {
			o.warmup = 200 * time.Millisecond
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// path is one way to reach the directory.
type path struct {
	name string
	addr string // host:port of an ldap:// endpoint
	pid  int    // the proxy's process; 0 for direct
}

type workload struct {
	name    string
	clients int
	op      func(w *worker) error // one counted operation
	perConn bool                  // each op opens its own connection
}

func workloads(clients int) []workload {
	return []workload{
		{name: fmt.Sprintf("search-%d", clients), clients: clients, op: (*worker).search},
		{name: "search-1", clients: 1, op: (*worker).search},
		{name: fmt.Sprintf("bind-%d", clients), clients: clients, op: (*worker).bindCycle, perConn: true},
	}
}

var errTargetMissed = errors.New("a target was missed")

func run(ctx context.Context, o options, out io.Writer) error {
	logLevel := slog.LevelWarn
	if o.verbose {
		logLevel = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	tmp, err := os.MkdirTemp("", "ldapgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	log.Info("starting slapd", "users", o.users)
	dir, err := slapd.Start(ctx, slapd.Options{Users: o.users})
	if err != nil {
		return err
	}
	defer dir.Stop()
	suites := strings.Split(o.suites, ",")
	missed := false
	if slices.Contains(suites, "relay") {
		m, err := runRelay(ctx, o, log, dir, tmp, out)
		if err != nil {
			return err
		}
		missed = missed || m
	}
	if slices.Contains(suites, "mirror") {
		bin, err := gatewayBinary(o.gateway, tmp)
		if err != nil {
			return err
		}
		m, err := runMirror(ctx, o, log, dir, tmp, bin, out)
		if err != nil {
			return err
		}
		missed = missed || m
	}
	if slices.Contains(suites, "postread") {
		if err := runPostRead(ctx, o, log, dir, out); err != nil {
			return err
		}
	}
	if slices.Contains(suites, "cluster") {
		bin, err := gatewayBinary(o.gateway, tmp)
		if err != nil {
			return err
		}
		m, err := runCluster(ctx, o, log, dir, tmp, bin, out)
		if err != nil {
			return err
		}
		missed = missed || m
	}
	if missed && o.strict {
		return errTargetMissed
	}
	return nil
}

// runRelay measures the relay suite and prints its tables; it reports
// whether a target was missed.
func runRelay(ctx context.Context, o options, log *slog.Logger, dir *slapd.Server, tmp string, out io.Writer) (bool, error) {
	wantPaths := strings.Split(o.paths, ",")
	want := func(name string) bool { return slices.Contains(wantPaths, name) }
	upstream := strings.TrimPrefix(dir.URL, "ldap://")
	paths := []path{{"direct", upstream, 0}}

	if want("pipe") {
		addr, pid, stopPipe, err := startChild(ctx, tmp, "pipe", func(addrFile string) *exec.Cmd {
			self, _ := os.Executable()
			return exec.Command(self, "pipe", upstream, addrFile)
		})
		if err != nil {
			return false, fmt.Errorf("byte pipe: %w", err)
		}
		defer stopPipe()
		paths = append(paths, path{"pipe", addr, pid})
	}
	if want("back-ldap") {
		proxy, err := slapd.Start(ctx, slapd.Options{ProxyTo: dir.URL})
		if err != nil {
			return false, fmt.Errorf("back-ldap proxy: %w", err)
		}
		defer proxy.Stop()
		paths = append(paths, path{"back-ldap", strings.TrimPrefix(proxy.URL, "ldap://"), proxy.PID()})
	}
	gateways := map[string]string{}
	if want("gateway") {
		bin, err := gatewayBinary(o.gateway, tmp)
		if err != nil {
			return false, err
		}
		gateways["gateway"] = bin
	}
	if o.compare != "" {
		gateways["gateway-b"] = o.compare
	}
	for _, name := range []string{"gateway", "gateway-b"} {
		bin, ok := gateways[name]
		if !ok {
			continue
		}
		addr, pid, stopGW, err := startChild(ctx, tmp, name, func(addrFile string) *exec.Cmd {
			return exec.Command(bin, "serve", "--listen", "ldap://127.0.0.1:0", "--upstream", dir.URL,
				"--data-dir", filepath.Join(tmp, name+"-data"), "--addr-file", addrFile,
				"--log-level", "warn", "--max-bind-failures", "0")
		})
		if err != nil {
			return false, fmt.Errorf("%s: %w", name, err)
		}
		defer stopGW()
		paths = append(paths, path{name, addr, pid})
	}
	if !want("direct") {
		paths = paths[1:]
	}

	works := workloads(o.clients)
	if o.work != "" {
		names := strings.Split(o.work, ",")
		works = slices.DeleteFunc(works, func(w workload) bool { return !slices.Contains(names, w.name) })
	}
	for _, p := range paths { // warm caches and connection set-up paths
		if _, err := measure(ctx, p, works[0], o.warmup, o.users); err != nil {
			return false, fmt.Errorf("warm-up of %s: %w", p.name, err)
		}
	}

	results := map[string]map[string][]float64{} // workload -> path -> ops/s per round
	cpu := map[string]map[string]*cpuUse{}       // workload -> path -> CPU over the rounds
	for r := range o.rounds {
		for wi, w := range works {
			if results[w.name] == nil {
				results[w.name] = map[string][]float64{}
				cpu[w.name] = map[string]*cpuUse{}
			}
			// Rotate the order of the paths every round and workload.
			for k := range paths {
				p := paths[(k+r+wi)%len(paths)]
				pids := []int{dir.PID(), p.pid, os.Getpid()}
				before := proccpu.Take(pids...)
				res, err := measure(ctx, p, w, o.duration, o.users)
				if err != nil {
					return false, fmt.Errorf("round %d, %s via %s: %w", r+1, w.name, p.name, err)
				}
				u := cpu[w.name][p.name]
				if u == nil {
					u = &cpuUse{}
					cpu[w.name][p.name] = u
				}
				u.used = u.used.Add(proccpu.Take(pids...).Since(before))
				u.ops += res * o.duration.Seconds()
				log.Info("measured", "round", r+1, "workload", w.name, "path", p.name, "ops/s", int(res))
				results[w.name][p.name] = append(results[w.name][p.name], res)
			}
		}
	}
	missed := report(out, o, paths, works, results)
	reportCPU(out, paths, works, cpu)
	return missed, nil
}

// measure runs one workload over one path for d and returns ops/s.
func measure(ctx context.Context, p path, w workload, d time.Duration, users int) (float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var ops atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wk := &worker{addr: p.addr, users: users, rng: rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))}
			defer wk.close()
			if !w.perConn {
				if err := wk.open(); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
			}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := w.op(wk); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(ops.Load()) / elapsed.Seconds(), nil
}

// worker is one client.
type worker struct {
	addr  string
	users int
	rng   *rand.Rand
	c     *conn
}

func userDN(i int) string { return "uid=" + slapd.UserUID(i) + ",ou=people,dc=example,dc=com" }

// open connects and binds as a random user for the search workloads.
func (w *worker) open() error {
	c, err := dial(w.addr)
	if err != nil {
		return err
	}
	i := w.rng.IntN(w.users)
	if err := c.bind(userDN(i), slapd.UserPassword(i)); err != nil {
		c.close()
		return err
	}
	w.c = c
	return nil
}

func (w *worker) close() {
	if w.c != nil {
		_ = w.c.unbind()
		w.c.close()
		w.c = nil
	}
}

func (w *worker) search() error {
	return w.c.searchOne("ou=people,dc=example,dc=com", "uid", slapd.UserUID(w.rng.IntN(w.users)))
}

// bindCycle is connect, bind as a random user, one search, unbind.
func (w *worker) bindCycle() error {
	c, err := dial(w.addr)
	if err != nil {
		return err
	}
	defer c.close()
	i := w.rng.IntN(w.users)
	if err := c.bind(userDN(i), slapd.UserPassword(i)); err != nil {
		return err
	}
	if err := c.searchOne("ou=people,dc=example,dc=com", "uid", slapd.UserUID(i)); err != nil {
		return err
	}
	return c.unbind()
}

// report prints the table and the ratios, and says whether a target was
// missed.
func report(out io.Writer, o options, paths []path, works []workload, results map[string]map[string][]float64) bool {
	fmt.Fprintf(out, "ldapgate relay benchmark: %d users, %d round(s) of %v per path and workload, %d CPU(s), %s\n",
		o.users, o.rounds, o.duration, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "throughput in ops/s, median of rounds [min-max]\n\n")
	fmt.Fprintf(out, "%-10s", "workload")
	for _, p := range paths {
		fmt.Fprintf(out, " %22s", p.name)
	}
	fmt.Fprintln(out)
	med := func(w, p string) float64 { return median(results[w][p]) }
	for _, w := range works {
		fmt.Fprintf(out, "%-10s", w.name)
		for _, p := range paths {
			v := results[w.name][p.name]
			fmt.Fprintf(out, " %22s", fmt.Sprintf("%.0f [%.0f-%.0f]", median(v), slices.Min(v), slices.Max(v)))
		}
		fmt.Fprintln(out)
	}
	has := func(name string) bool {
		return slices.ContainsFunc(paths, func(p path) bool { return p.name == name })
	}
	type ratio struct {
		num, den string
		target   float64 // 0: none
	}
	var ratios []ratio
	if has("gateway") && has("pipe") {
		ratios = append(ratios, ratio{"gateway", "pipe", 0.9})
	}
	if has("gateway") && has("back-ldap") {
		ratios = append(ratios, ratio{"gateway", "back-ldap", 1.25})
	}
	if has("gateway") && has("gateway-b") {
		ratios = append(ratios, ratio{"gateway-b", "gateway", 0})
	}
	if has("direct") {
		for _, p := range paths[1:] {
			ratios = append(ratios, ratio{p.name, "direct", 0})
		}
	}
	missed := false
	fmt.Fprintf(out, "\n%-10s", "ratio")
	for _, r := range ratios {
		fmt.Fprintf(out, " %20s", r.num+"/"+r.den)
	}
	fmt.Fprintln(out)
	for _, w := range works {
		fmt.Fprintf(out, "%-10s", w.name)
		for _, r := range ratios {
			x := med(w.name, r.num) / med(w.name, r.den)
			mark := ""
			if r.target > 0 {
				mark = fmt.Sprintf(" (>=%.2f ok)", r.target)
				if x < r.target {
					mark = fmt.Sprintf(" (>=%.2f MISS)", r.target)
					missed = true
				}
			}
			fmt.Fprintf(out, " %20s", fmt.Sprintf("%.2f%s", x, mark))
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintln(out, "\ntargets: gateway >= 0.90 × pipe, gateway >= 1.25 × back-ldap")
	return missed
}

// cpuUse is the CPU time the directory, the proxy and the clients used
// over the rounds of one workload and path, and the operations made.
type cpuUse struct {
	used proccpu.Sample
	ops  float64
}

// reportCPU prints the CPU time each operation cost the directory, the
// proxy and the clients: on two cores shared by all three, throughput is
// bound by their sum.
func reportCPU(out io.Writer, paths []path, works []workload, cpu map[string]map[string]*cpuUse) {
	fmt.Fprintf(out, "\nCPU per operation in µs: directory + proxy + clients = total\n%-10s", "workload")
	for _, p := range paths {
		fmt.Fprintf(out, " %22s", p.name)
	}
	fmt.Fprintln(out)
	for _, w := range works {
		fmt.Fprintf(out, "%-10s", w.name)
		for _, p := range paths {
			u := cpu[w.name][p.name]
			if u == nil || u.ops == 0 {
				fmt.Fprintf(out, " %22s", "-")
				continue
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / u.ops }
			var total time.Duration
			for _, d := range u.used {
				total += d
			}
			fmt.Fprintf(out, " %22s", fmt.Sprintf("%.0f+%.0f+%.0f=%.0f", per(u.used[0]), per(u.used[1]), per(u.used[2]), per(total)))
		}
		fmt.Fprintln(out)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// gatewayBinary returns bin if it exists, else builds ./cmd/ldapgate.
func gatewayBinary(bin, tmp string) (string, error) {
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root to build the gateway: %w", err)
	}
	out := filepath.Join(tmp, "ldapgate")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/ldapgate")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the gateway: %w\n%s", err, b)
	}
	return out, nil
}

// startChild starts a server process that writes its ldap:// URL (or
// host:port) to an address file, and waits for that file.
func startChild(ctx context.Context, tmp, name string, mk func(addrFile string) *exec.Cmd) (string, int, func(), error) {
	addrFile := filepath.Join(tmp, name+".addr")
	cmd := mk(addrFile)
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
			return strings.TrimPrefix(first, "ldap://"), cmd.Process.Pid, stop, nil
		}
		select {
		case <-exited:
			return "", 0, nil, fmt.Errorf("%s exited during start-up: %s", name, stderr.String())
		case <-ctx.Done():
			stop()
			return "", 0, nil, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling interval for the file
		}
		if time.Now().After(deadline) {
			stop()
			return "", 0, nil, fmt.Errorf("%s wrote no address within 20s: %s", name, stderr.String())
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// runPipe is the byte pipe: every accepted connection gets its own
// upstream connection and bytes are copied both ways until either side
// closes. It writes its address to addrFile and runs until SIGTERM.
func runPipe(upstream, addrFile string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tmp := addrFile + ".tmp"
	if err := os.WriteFile(tmp, []byte("ldap://"+ln.Addr().String()+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, addrFile); err != nil {
		return err
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			return nil // listener closed by SIGTERM
		}
		go pipe(c, upstream)
	}
}

func pipe(client net.Conn, upstream string) {
	defer client.Close()
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, up); done <- struct{}{} }()
	<-done
}
