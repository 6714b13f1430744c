package main

// The mirrored-write suite (issue 19): the CPU time each account write
// costs each process, written straight to slapd and through a gateway that
// journals it and mirrors it into the Axigen simulator, side by side in one
// run, with the gateway's journal on disk and on tmpfs.
//
// The simulator runs as a process of its own (this binary, re-executed as
// "axigen-sim"), so its CPU time is measured apart from the clients'. It
// reports every committed account change (name, nickName, time) when the
// suite asks, so the time from a client's success to the change in Axigen
// is measured without polling Axigen.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/proccpu"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

const (
	benchDomain      = "example.com"
	benchSuffix      = "dc=example,dc=com"
	benchAccountBase = "ou=people," + benchSuffix
	benchGroupBase   = "ou=groups," + benchSuffix
	benchAxigenAdmin = "admin"
	benchAxigenPW    = "axigen-admin-pw"
	// benchAttr is what the clients replace; the gateway mirrors it as
	// the account's nickName.
	benchAttr  = "displayName"
	benchField = "nickName"
)

// mirrorPath is one way the clients' writes reach slapd: direct, or
// through a mirroring gateway (pid set) whose journal is in dataDir.
type mirrorPath struct {
	name    string
	addr    string
	addrs   []string // several gateways: client c writes through addrs[c%len(addrs)] (addr unused)
	pid     int
	dataDir string
	fsType  string
	rate    float64 // writes/s the clients keep to (0: as fast as they can)
}

// mirrorRun is what one path measured over the rounds.
type mirrorRun struct {
	rates   []float64      // writes/s per round
	cpu     proccpu.Sample // slapd, gateway, simulator, clients
	writes  int64
	latency []time.Duration // success → Axigen, per write (gateway paths)
	ops     map[string]int  // operations slapd completed, by type
	slapd   slapdCounters   // what slapd did besides, summed over the rounds
}

// slapdCounters are counts of slapd's from /proc that say where its CPU
// time goes (issue 19: why it costs more per write through the gateway):
// user and system time, read and write system calls (every call the
// kernel counts as either, sockets and files alike), and context switches
// of all its threads (wake-ups: fewer per write when busier).
type slapdCounters struct {
	user, sys        time.Duration
	syscr, syscw     int64
	voluntary, invol int64
}

// readSlapdCounters reads pid's counters; what cannot be read stays 0.
func readSlapdCounters(pid int) slapdCounters {
	var c slapdCounters
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(raw), ')'); i >= 0 && i+2 <= len(raw) {
			if f := strings.Fields(string(raw[i+2:])); len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				c.user, c.sys = time.Duration(u)*10*time.Millisecond, time.Duration(st)*10*time.Millisecond
			}
		}
	}
	if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			k, v, _ := strings.Cut(line, ": ")
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "syscr":
				c.syscr = n
			case "syscw":
				c.syscw = n
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			k, v, _ := strings.Cut(line, ":")
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch k {
			case "voluntary_ctxt_switches":
				c.voluntary += n
			case "nonvoluntary_ctxt_switches":
				c.invol += n
			}
		}
	}
	return c
}

// plus is c + d - e: d's counts since e added to c. Threads that ended
// between e and d take their switches with them: the count is a floor.
func (c slapdCounters) plus(d, e slapdCounters) slapdCounters {
	return slapdCounters{user: c.user + d.user - e.user, sys: c.sys + d.sys - e.sys,
		syscr: c.syscr + d.syscr - e.syscr, syscw: c.syscw + d.syscw - e.syscw,
		voluntary: c.voluntary + d.voluntary - e.voluntary, invol: c.invol + d.invol - e.invol}
}

// runMirror measures the mirrored-write suite against dir and prints its
// table. It reports whether a target was missed.
func runMirror(ctx context.Context, o options, log *slog.Logger, dir *slapd.Server, tmp, gatewayBin string, out io.Writer) (bool, error) {
	sim, pwFile, axFile, err := startMirrorSim(tmp, dir, log)
	if err != nil {
		return false, err
	}
	defer sim.stop()

	paths := []mirrorPath{{name: "direct", addr: strings.TrimPrefix(dir.URL, "ldap://")}}
	journals := []struct{ name, bin, parent string }{{"gateway-disk", gatewayBin, o.diskDir}, {"gateway-tmpfs", gatewayBin, o.tmpfsDir}}
	if o.compare != "" {
		// -compare: the second binary with its journal on disk, for an A/B
		// of a change under the same machine load.
		journals = append(journals, struct{ name, bin, parent string }{"gateway-b-disk", o.compare, o.diskDir})
	}
	for _, j := range journals {
		if j.parent == "" {
			continue
		}
		parent, err := os.MkdirTemp(j.parent, "ldapgate-bench-")
		if err != nil {
			return false, fmt.Errorf("%s journal folder: %w", j.name, err)
		}
		defer os.RemoveAll(parent)
		data := filepath.Join(parent, "data")
		addr, pid, stopGW, err := startChild(ctx, tmp, j.name, func(addrFile string) *exec.Cmd {
			return exec.Command(j.bin, mirrorServeArgs(dir, sim, data, addrFile, pwFile, axFile)...)
		})
		if err != nil {
			return false, fmt.Errorf("%s: %w", j.name, err)
		}
		defer stopGW()
		paths = append(paths, mirrorPath{name: j.name, addr: addr, pid: pid, dataDir: data, fsType: fsType(parent)})
	}

	for _, p := range paths { // warm the caches, connections and journal
		if _, err := mirrorRound(ctx, o, p, sim, dir.RootDN, dir.RootPW, "warm", o.warmup); err != nil {
			return false, fmt.Errorf("warm-up of %s: %w", p.name, err)
		}
	}
	runs := map[string]*mirrorRun{}
	// paced is direct at the rate the gateway-disk path made in the same
	// round: slapd's CPU per write depends on how busy it is, so the
	// gateway's cost to slapd is compared at the gateway's own rate too.
	paced := mirrorPath{name: "direct-paced", addr: paths[0].addr}
	for r := range o.rounds {
		order := make([]mirrorPath, 0, len(paths)+1)
		for k := range paths {
			order = append(order, paths[(k+r)%len(paths)])
		}
		if slices.ContainsFunc(paths, func(p mirrorPath) bool { return p.name == "gateway-disk" }) {
			order = append(order, paced)
		}
		for _, p := range order {
			if p.name == paced.name {
				rates := runs["gateway-disk"].rates
				p.rate = rates[len(rates)-1]
			}
			pids := []int{dir.PID(), p.pid, 0, os.Getpid()}
			if p.pid != 0 {
				pids[2] = sim.pid
			}
			stopProfiles := startMirrorProfiles(p, r, o.duration)
			opsBefore, err := slapdOps(dir)
			if err != nil {
				return false, err
			}
			countersBefore := readSlapdCounters(dir.PID())
			before := proccpu.Take(pids...)
			res, err := mirrorRound(ctx, o, p, sim, dir.RootDN, dir.RootPW, fmt.Sprintf("r%d", r), o.duration)
			used := proccpu.Take(pids...).Since(before) // deliveries included
			countersAfter := readSlapdCounters(dir.PID())
			if perr := stopProfiles(); perr != nil {
				log.Warn("profile", "path", p.name, "err", perr)
			}
			if err != nil {
				return false, fmt.Errorf("round %d via %s: %w", r+1, p.name, err)
			}
			opsAfter, err := slapdOps(dir)
			if err != nil {
				return false, err
			}
			run := runs[p.name]
			if run == nil {
				run = &mirrorRun{ops: map[string]int{}}
				runs[p.name] = run
			}
			for k, n := range opsAfter {
				run.ops[k] += n - opsBefore[k] - 1 // the count's own search and bind
			}
			run.slapd = run.slapd.plus(countersAfter, countersBefore)
			run.rates = append(run.rates, float64(res.writes)/res.elapsed.Seconds())
			run.cpu = run.cpu.Add(used)
			run.writes += res.writes
			run.latency = append(run.latency, res.latency...)
			log.Info("measured", "round", r+1, "path", p.name, "writes/s", int(float64(res.writes)/res.elapsed.Seconds()),
				"writes", res.writes, "cpu", fmt.Sprint(used))
		}
	}
	if dir := os.Getenv("LDAPGATE_BENCH_PROFILE"); dir != "" {
		for _, p := range paths[1:] {
			path := filepath.Join(dir, p.name+"-allocs.pprof")
			if err := gatewayGet(filepath.Join(p.dataDir, "admin.sock"), "/debug/pprof/allocs", path); err != nil {
				log.Warn("allocation profile", "path", p.name, "err", err)
			}
		}
	}
	if runs[paced.name] != nil {
		paths = append(paths, paced)
	}
	return reportMirror(out, o, paths, runs), nil
}

// startMirrorSim writes the password files the gateways read (slapd's
// root, the simulator's admin) and starts the simulator, seeded from dir.
func startMirrorSim(tmp string, dir *slapd.Server, log *slog.Logger) (sim *simProc, pwFile, axFile string, err error) {
	pwFile = filepath.Join(tmp, "root.pw")
	axFile = filepath.Join(tmp, "axigen.pw")
	for path, pw := range map[string]string{pwFile: dir.RootPW, axFile: benchAxigenPW} {
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			return nil, "", "", err
		}
	}
	log.Info("starting the Axigen simulator, seeded from slapd")
	if sim, err = startSim(tmp, dir.URL, dir.RootDN, pwFile); err != nil {
		return nil, "", "", fmt.Errorf("axigen simulator: %w", err)
	}
	return sim, pwFile, axFile, nil
}

// mirrorServeArgs are the serve flags of a gateway that mirrors the
// clients' writes to dir into the simulator, its journal in data.
func mirrorServeArgs(dir *slapd.Server, sim *simProc, data, addrFile, pwFile, axFile string) []string {
	return []string{"serve", "--listen", "ldap://127.0.0.1:0", "--upstream", dir.URL,
		"--data-dir", data, "--addr-file", addrFile, "--log-level", "warn", "--max-bind-failures", "0",
		"--axigen", sim.addr, "--axigen-user", benchAxigenAdmin, "--axigen-password-file", axFile,
		"--axigen-domain", benchDomain, "--dialect", "openldap",
		"--account-base", benchAccountBase, "--group-base", benchGroupBase,
		"--service-dn", dir.RootDN, "--service-password-file", pwFile, "--admin-dn", dir.RootDN}
}

// roundResult is one path's measurement.
type roundResult struct {
	writes  int64
	elapsed time.Duration
	latency []time.Duration
	took    []time.Duration // each write's own time, request to response
}

// sentWrite is one acknowledged write, for the latency to Axigen.
type sentWrite struct {
	value   string
	ack     time.Time
	visible time.Time
}

// mirrorRound runs the clients over one path for d. Through a gateway it
// then waits until Axigen shows every acknowledged write (the deliveries'
// CPU time counts), and returns each write's success → Axigen time.
func mirrorRound(ctx context.Context, o options, p mirrorPath, sim *simProc, rootDN, rootPW, tag string, d time.Duration) (roundResult, error) {
	if p.pid != 0 {
		if _, err := sim.commits(); err != nil { // forget earlier rounds' commits
			return roundResult{}, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		byUser   = map[string][]*sentWrite{} // writes of one user, in order
		total    int64
		tookAll  []time.Duration
	)
	start := time.Now()
	deadline := start.Add(d)
	for c := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := p.addr
			if len(p.addrs) > 0 {
				addr = p.addrs[c%len(p.addrs)]
			}
			cn, err := dial(addr)
			if err == nil {
				err = cn.bind(rootDN, rootPW)
			}
			if err != nil {
				mu.Lock()
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
				cancel()
				return
			}
			defer func() { _ = cn.unbind(); cn.close() }()
			rng := rand.New(rand.NewPCG(uint64(c), uint64(start.UnixNano())))
			var mine []struct {
				uid string
				w   *sentWrite
			}
			var took []time.Duration
			// Each client writes its own share of the users (i ≡ c mod
			// clients), picked at random, so writes to one user are never
			// concurrent and their order is the order sent.
			share := (o.users - c + o.clients - 1) / o.clients
			var interval time.Duration // a paced client's time between writes
			next := start
			if p.rate > 0 {
				interval = time.Duration(float64(o.clients) / p.rate * float64(time.Second))
				next = start.Add(interval * time.Duration(c) / time.Duration(o.clients))
			}
			for n := 0; time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				if interval > 0 {
					time.Sleep(time.Until(next)) // pacing, not synchronisation
					next = next.Add(interval)
				}
				i := c + o.clients*rng.IntN(share)
				uid := slapd.UserUID(i)
				value := fmt.Sprintf("bench %s %s %d %d", tag, p.name, c, n)
				t0 := time.Now()
				if err := cn.replace("uid="+uid+","+benchAccountBase, benchAttr, value); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					cancel()
					return
				}
				ack := time.Now()
				took = append(took, ack.Sub(t0))
				mine = append(mine, struct {
					uid string
					w   *sentWrite
				}{uid, &sentWrite{value: value, ack: ack}})
			}
			mu.Lock()
			tookAll = append(tookAll, took...)
			for _, s := range mine {
				byUser[s.uid] = append(byUser[s.uid], s.w)
			}
			total += int64(len(mine))
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := roundResult{writes: total, elapsed: time.Since(start), took: tookAll}
	if firstErr != nil {
		return res, firstErr
	}
	if p.pid == 0 {
		return res, nil
	}
	pending := int(total)
	waitUntil := time.Now().Add(60 * time.Second)
	for pending > 0 {
		commits, err := sim.commits()
		if err != nil {
			return res, err
		}
		for _, cm := range commits {
			ws := byUser[cm.name]
			i := slices.IndexFunc(ws, func(w *sentWrite) bool { return w.value == cm.value })
			if i < 0 {
				continue
			}
			// Delivery is state-based: a later value proves the earlier
			// writes of the user arrived.
			for _, w := range ws[:i+1] {
				if w.visible.IsZero() {
					w.visible = cm.at
					pending--
				}
			}
		}
		if pending == 0 {
			break
		}
		if time.Now().After(waitUntil) {
			return res, fmt.Errorf("%d of %d acknowledged writes not in Axigen within 60s", pending, total)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond): // the simulator's report interval
		}
	}
	for _, ws := range byUser {
		for _, w := range ws {
			res.latency = append(res.latency, max(0, w.visible.Sub(w.ack)))
		}
	}
	return res, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// reportMirror prints the suite's table and says whether a target was
// missed.
func reportMirror(out io.Writer, o options, paths []mirrorPath, runs map[string]*mirrorRun) bool {
	fmt.Fprintf(out, "\nmirrored writes: %d clients replacing %s (mirrored as %s) on random users of %d, %d round(s) of %v per path\n",
		o.clients, benchAttr, benchField, o.users, o.rounds, o.duration)
	for _, p := range paths[1:] {
		if p.pid != 0 {
			fmt.Fprintf(out, "  %s: journal in %s (%s)\n", p.name, p.dataDir, p.fsType)
		}
	}
	fmt.Fprintln(out, "  direct-paced: direct, each round at the rate gateway-disk made in it")
	fmt.Fprintf(out, "\n%-26s", "per write")
	for _, p := range paths {
		fmt.Fprintf(out, " %16s", p.name)
	}
	fmt.Fprintln(out)
	row := func(label string, f func(p mirrorPath, r *mirrorRun) string) {
		fmt.Fprintf(out, "%-26s", label)
		for _, p := range paths {
			v := "-"
			if r := runs[p.name]; r != nil && r.writes > 0 {
				v = f(p, r)
			}
			fmt.Fprintf(out, " %16s", v)
		}
		fmt.Fprintln(out)
	}
	per := func(r *mirrorRun, i int) float64 { return float64(r.cpu[i].Microseconds()) / float64(r.writes) }
	row("writes/s (median)", func(_ mirrorPath, r *mirrorRun) string { return fmt.Sprintf("%.0f", median(r.rates)) })
	row("writes measured", func(_ mirrorPath, r *mirrorRun) string { return fmt.Sprint(r.writes) })
	names := []string{"slapd CPU µs", "gateway CPU µs", "simulator CPU µs", "clients CPU µs"}
	for i, name := range names {
		row(name, func(p mirrorPath, r *mirrorRun) string {
			if p.pid == 0 && (i == 1 || i == 2) {
				return "-"
			}
			return fmt.Sprintf("%.0f", per(r, i))
		})
	}
	lat := func(q float64) func(p mirrorPath, r *mirrorRun) string {
		return func(p mirrorPath, r *mirrorRun) string {
			if p.pid == 0 {
				return "-"
			}
			s := slices.Clone(r.latency)
			slices.Sort(s)
			return fmt.Sprint(percentile(s, q).Round(100 * time.Microsecond))
		}
	}
	for _, op := range []string{"Search", "Modify", "Bind"} {
		row("slapd "+strings.ToLower(op)+" ops", func(_ mirrorPath, r *mirrorRun) string {
			return fmt.Sprintf("%.2f", float64(r.ops[op])/float64(r.writes))
		})
	}
	perWrite := func(f func(c slapdCounters) float64, format string) func(mirrorPath, *mirrorRun) string {
		return func(_ mirrorPath, r *mirrorRun) string { return fmt.Sprintf(format, f(r.slapd)/float64(r.writes)) }
	}
	row("slapd user CPU µs", perWrite(func(c slapdCounters) float64 { return float64(c.user.Microseconds()) }, "%.0f"))
	row("slapd system CPU µs", perWrite(func(c slapdCounters) float64 { return float64(c.sys.Microseconds()) }, "%.0f"))
	row("slapd read syscalls", perWrite(func(c slapdCounters) float64 { return float64(c.syscr) }, "%.2f"))
	row("slapd write syscalls", perWrite(func(c slapdCounters) float64 { return float64(c.syscw) }, "%.2f"))
	row("slapd ctx switches", perWrite(func(c slapdCounters) float64 { return float64(c.voluntary + c.invol) }, "%.2f"))
	row("success→Axigen p50", lat(0.50))
	row("success→Axigen p99", lat(0.99))
	row("success→Axigen max", lat(1))

	direct, paced := runs["direct"], runs["direct-paced"]
	disk, tmpfs := runs["gateway-disk"], runs["gateway-tmpfs"]
	missed := false
	check := func(label string, x float64, ok bool, target string) {
		mark := "ok"
		if !ok {
			mark, missed = "MISS", true
		}
		fmt.Fprintf(out, "%-58s %6.2f  (target %s: %s)\n", label, x, target, mark)
	}
	fmt.Fprintln(out)
	if direct != nil && disk != nil {
		slapdDirect := per(direct, 0)
		check("gateway CPU per write / slapd CPU per direct write", per(disk, 1)/slapdDirect, per(disk, 1)/slapdDirect <= 1.0, "<= 1.00")
		check("slapd CPU per write through the gateway / direct", per(disk, 0)/slapdDirect, per(disk, 0)/slapdDirect <= 1.15, "<= 1.15")
		fmt.Fprintf(out, "%-58s %6.2f\n", "gateway writes/s (disk) / direct", median(disk.rates)/median(direct.rates))
	}
	if paced != nil && disk != nil {
		fmt.Fprintf(out, "%-58s %6.2f\n", "slapd CPU per write through the gateway / direct-paced", per(disk, 0)/per(paced, 0))
		fmt.Fprintf(out, "%-58s %6.2f\n", "gateway CPU per write / slapd CPU per direct-paced write", per(disk, 1)/per(paced, 0))
	}
	if b := runs["gateway-b-disk"]; b != nil && disk != nil && direct != nil {
		fmt.Fprintf(out, "%-58s %6.2f\n", "gateway-b (-compare) CPU per write / slapd CPU per direct write", per(b, 1)/per(direct, 0))
		fmt.Fprintf(out, "%-58s %6.2f\n", "slapd CPU per write through gateway-b / direct", per(b, 0)/per(direct, 0))
		fmt.Fprintf(out, "%-58s %6.2f\n", "gateway CPU per write / gateway-b's", per(disk, 1)/per(b, 1))
	}
	if disk != nil && tmpfs != nil {
		x := median(disk.rates) / median(tmpfs.rates)
		check("throughput, journal on disk / on tmpfs", x, x >= 0.8, ">= 0.80")
	}
	if disk != nil {
		s := slices.Clone(disk.latency)
		slices.Sort(s)
		p99 := percentile(s, 0.99)
		check("p99 success→Axigen, journal on disk (s)", p99.Seconds(), p99 < time.Second, "< 1")
	}
	return missed
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*q)]
}

// fsType names the file system holding path (ext4, tmpfs, ...), best effort.
func fsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case 0x01021994:
		return "tmpfs"
	case 0xef53:
		return "ext2/3/4"
	case 0x58465342:
		return "xfs"
	case 0x9123683e:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// startMirrorProfiles starts, when LDAPGATE_BENCH_PROFILE names a folder,
// a CPU profile of a gateway path's round (from its admin socket) and of
// this process; the returned func ends them and waits for the files.
func startMirrorProfiles(p mirrorPath, round int, d time.Duration) func() error {
	dir := os.Getenv("LDAPGATE_BENCH_PROFILE")
	if dir == "" || p.pid == 0 {
		return func() error { return nil }
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return func() error { return err }
	}
	own, err := os.Create(filepath.Join(dir, fmt.Sprintf("clients-%s-r%d.pprof", p.name, round)))
	if err != nil {
		return func() error { return err }
	}
	if err := pprof.StartCPUProfile(own); err != nil {
		own.Close()
		return func() error { return err }
	}
	gw := make(chan error, 1)
	go func() {
		gw <- gatewayProfile(filepath.Join(p.dataDir, "admin.sock"), filepath.Join(dir, fmt.Sprintf("%s-r%d.pprof", p.name, round)), d)
	}()
	return func() error {
		pprof.StopCPUProfile()
		return errors.Join(own.Close(), <-gw)
	}
}

// gatewayProfile writes to path a CPU profile of a running gateway over d,
// taken from its admin socket.
func gatewayProfile(sock, path string, d time.Duration) error {
	secs := max(1, int(d.Round(time.Second).Seconds()))
	return gatewayGet(sock, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), path)
}

// gatewayGet writes to path what a gateway's admin socket answers to a GET
// of uri.
func gatewayGet(sock, uri, path string) error {
	body, err := adminGet(sock, uri)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// adminGet is what a gateway's admin socket answers to a GET of uri.
func adminGet(sock, uri string) ([]byte, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://gateway" + uri)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", uri, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// slapdOps reads how many operations of each type slapd has completed
// (cn=Operations,cn=Monitor); the reading costs one bind and one search.
func slapdOps(dir *slapd.Server) (map[string]int, error) {
	c, err := dir.AdminConn(context.Background())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	res, err := c.Search(ldap.NewSearchRequest("cn=Operations,cn=Monitor", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", []string{"monitorOpCompleted"}, nil))
	if err != nil {
		return nil, fmt.Errorf("read slapd's operation counts: %w", err)
	}
	out := map[string]int{}
	for _, e := range res.Entries {
		name, _, _ := strings.Cut(strings.TrimPrefix(e.DN, "cn="), ",")
		n, _ := strconv.Atoi(e.GetAttributeValue("monitorOpCompleted"))
		out[name] = n
	}
	return out, nil
}

// ---- the simulator's process ----

// simProc is the simulator's process, as the suite drives it: it answers
// "commits" on its standard input with the account changes committed since
// the last time, one per line, then "end".
type simProc struct {
	addr string
	pid  int
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	mu   sync.Mutex
}

type simCommit struct {
	name, value string
	at          time.Time
}

func startSim(tmp, url, rootDN, pwFile string) (*simProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addrFile := filepath.Join(tmp, "axigen-sim.addr")
	cmd := exec.Command(self, "axigen-sim", url, rootDN, pwFile, addrFile)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &simProc{pid: cmd.Process.Pid, cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	s.out.Buffer(make([]byte, 64<<10), 1<<20)
	// The simulator says "ready ADDR" once seeded.
	if !s.out.Scan() {
		s.stop()
		return nil, fmt.Errorf("the simulator exited during start-up: %v", s.out.Err())
	}
	addr, ok := strings.CutPrefix(s.out.Text(), "ready ")
	if !ok {
		s.stop()
		return nil, fmt.Errorf("the simulator said %q", s.out.Text())
	}
	s.addr = addr
	return s, nil
}

// commits returns the account changes committed since the last call.
func (s *simProc) commits() ([]simCommit, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.in, "commits\n"); err != nil {
		return nil, fmt.Errorf("ask the simulator: %w", err)
	}
	var out []simCommit
	for s.out.Scan() {
		line := s.out.Text()
		if line == "end" {
			return out, nil
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("the simulator said %q", line)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("the simulator said %q", line)
		}
		out = append(out, simCommit{at: time.Unix(0, ns), name: f[1], value: f[2]})
	}
	return nil, fmt.Errorf("the simulator stopped: %v", s.out.Err())
}

func (s *simProc) stop() {
	_ = s.in.Close() // the simulator exits at the end of its input
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// runSim is the simulator's process: it seeds the simulator with the
// directory's accounts (as if Axigen had been in sync before the gateway
// started), says "ready ADDR" and answers "commits" until its input ends.
func runSim(url, rootDN, pwFile string) error {
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return err
	}
	if dir := os.Getenv("LDAPGATE_BENCH_PROFILE"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, "simulator.pprof"))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	sim := axigensim.New(axigensim.Options{
		Admins:  map[string]string{benchAxigenAdmin: benchAxigenPW},
		Domains: []string{benchDomain},
	})
	if err := seedSim(sim, url, rootDN, strings.TrimSpace(string(pw))); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := sim.Start(ctx); err != nil {
		return err
	}
	defer sim.Close()
	var mu sync.Mutex
	var log []simCommit
	sim.OnAccountCommit(func(domain string, a axigensim.AccountState) {
		c := simCommit{name: a.Name, value: a.Contact[benchField], at: time.Now()}
		mu.Lock()
		log = append(log, c)
		mu.Unlock()
	})
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(w, "ready %s\n", sim.Addr())
	if err := w.Flush(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "commits" {
			return fmt.Errorf("unknown request %q", in.Text())
		}
		mu.Lock()
		batch := log
		log = nil
		mu.Unlock()
		for _, c := range batch {
			fmt.Fprintf(w, "%d\t%s\t%s\n", c.at.UnixNano(), c.name, strings.ReplaceAll(c.value, "\n", " "))
		}
		fmt.Fprintln(w, "end")
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return in.Err()
}

// seedSim puts every account of the directory into the simulator as the
// gateway maps it.
func seedSim(sim *axigensim.Server, url, rootDN, pw string) error {
	mapping, err := schema.NewMapping(schema.Config{
		Dialect:     schema.OpenLDAP,
		AccountBase: schema.DNList{benchAccountBase},
		GroupBase:   schema.DNList{benchGroupBase},
	})
	if err != nil {
		return err
	}
	c, err := ldap.DialURL(url)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Bind(rootDN, pw); err != nil {
		return err
	}
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(benchAccountBase, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", mapping.AccountAttributes(), nil), 1000)
	if err != nil {
		return err
	}
	for _, en := range res.Entries {
		e := schema.Entry{DN: en.DN, Attrs: map[string][]string{}}
		for _, a := range en.Attributes {
			e.Attrs[a.Name] = a.Values
		}
		if mapping.ClassifyEntry(e) != schema.KindAccount {
			continue
		}
		a, err := mapping.AccountState(e)
		if err != nil {
			continue
		}
		contact := map[string]string{}
		for k, v := range a.Contact {
			if v != "" {
				contact[k] = v
			}
		}
		sim.PutAccount(benchDomain, axigensim.AccountState{Name: a.Name, Password: a.Password, Contact: contact})
	}
	return nil
}
