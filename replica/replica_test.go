package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ldapgate/ldapgate/store"
)

var testSecret = []byte("0123456789abcdef-test-secret")

// node is one gateway's data folder: journal, key, replication state.
type node struct {
	t     *testing.T
	dir   string
	key   string
	j     *store.Journal
	state *StateFile
}

func newNode(t *testing.T, key string) *node {
	t.Helper()
	dir := t.TempDir()
	st, err := LoadState(StatePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	return &node{t: t, dir: dir, key: key, state: st}
}

// open (re)opens the node's journal, as a follower or not.
func (n *node) open(follower bool) *store.Journal {
	n.t.Helper()
	if n.j != nil {
		if err := n.j.Close(); err != nil {
			n.t.Fatal(err)
		}
	}
	j, err := store.Open(filepath.Join(n.dir, "journal"), store.Options{KeyFile: n.key, NoSync: true,
		HousekeepingInterval: -1, Follower: follower, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		n.t.Fatal(err)
	}
	n.j = j
	n.t.Cleanup(func() { j.Close() })
	return j
}

// write journals and commits a record with a secret, as the mirror does.
func (n *node) write(uid string) uint64 {
	n.t.Helper()
	ctx := context.Background()
	seq, err := n.j.Prepare(ctx, &store.Record{Kind: store.KindAccount, Op: store.OpPassword,
		DN: "uid=" + uid + ",ou=people,dc=example,dc=com", Secret: []byte("pw-" + uid)})
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.j.Commit(ctx, seq, ""); err != nil {
		n.t.Fatal(err)
	}
	return seq
}

// primary serves n's journal as a primary on a test HTTP server.
func (n *node) primary(mode Mode, timeout time.Duration) (*Source, *httptest.Server) {
	n.t.Helper()
	if err := n.state.BecomePrimary(n.j.Position()); err != nil {
		n.t.Fatal(err)
	}
	src := NewSource(SourceConfig{Journal: n.j, State: n.state, Secret: testSecret, Mode: mode,
		SyncTimeout: timeout, Heartbeat: 100 * time.Millisecond})
	srv := httptest.NewServer(src)
	n.t.Cleanup(srv.Close)
	return src, srv
}

// follow runs a follower of url on n until the returned stop is called;
// Run's outcome arrives on the channel.
func (n *node) follow(url string, takeover time.Duration) (*Follower, func(), <-chan error) {
	n.t.Helper()
	f, err := NewFollower(FollowerConfig{Primary: url, Secret: testSecret, Journal: n.j, State: n.state,
		TakeoverAfter: takeover})
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- f.Run(ctx); close(finished) }()
	stop := func() {
		cancel()
		<-finished
	}
	n.t.Cleanup(stop)
	return f, stop, done
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// content is a journal's records as comparable text, secrets included.
func content(t *testing.T, j *store.Journal) string {
	t.Helper()
	recs, err := j.List(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range recs {
		js, _ := json.Marshal(r)
		fmt.Fprintf(&b, "%s\n", js)
	}
	return b.String()
}

// holds reports whether j has a record about uid.
func holds(t *testing.T, j *store.Journal, uid string) bool {
	t.Helper()
	return strings.Contains(content(t, j), `"uid=`+uid+`,`)
}

func sameCopy(t *testing.T, a, b *store.Journal) {
	t.Helper()
	if a.Position() != b.Position() {
		t.Fatalf("positions differ: %d and %d", a.Position(), b.Position())
	}
	if ca, cb := content(t, a), content(t, b); ca != cb {
		t.Fatalf("copies differ:\n%s\n---\n%s", ca, cb)
	}
}

func TestFollowerKeepsAnIdenticalCopyAndResumes(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	p, s := newNode(t, key), newNode(t, key)
	p.open(false)
	for i := range 10 {
		p.write(fmt.Sprintf("a%d", i))
	}
	src, srv := p.primary(Async, time.Second)
	s.open(true)
	_, stop, _ := s.follow(srv.URL, time.Hour)
	waitUntil(t, 10*time.Second, "the standby to catch up", func() bool { return s.j.Position() == p.j.Position() })
	for i := range 10 {
		p.write(fmt.Sprintf("b%d", i))
	}
	waitUntil(t, 10*time.Second, "the standby to confirm", func() bool { return src.Status().Acked == p.j.Position() })
	sameCopy(t, p.j, s.j)
	if s.state.Get().History != p.state.Get().History {
		t.Fatalf("standby history %q, primary %q", s.state.Get().History, p.state.Get().History)
	}
	stop()

	// Changes made while the standby is away arrive when it follows
	// again, from where it stopped (no snapshot: the copy is kept).
	for i := range 5 {
		p.write(fmt.Sprintf("c%d", i))
	}
	s.open(true)
	s.follow(srv.URL, time.Hour)
	waitUntil(t, 10*time.Second, "the standby to catch up again", func() bool { return s.j.Position() == p.j.Position() })
	sameCopy(t, p.j, s.j)
}

func TestFeedRefusesAWrongSecret(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	p := newNode(t, key)
	p.open(false)
	p.write("a")
	_, srv := p.primary(Async, time.Second)
	for _, auth := range []string{"", "Bearer wrong-secret-wrong-secret", "Basic " + string(testSecret)} {
		for _, path := range []string{"/replication/feed?after=0", "/replication/status"} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s with %q: %s, want 401", path, auth, resp.Status)
			}
		}
	}
}

// Sync mode: a write waits until the standby holds it; with the standby
// gone it waits SyncTimeout once, then the primary runs degraded (no wait)
// until the standby has caught up, when waiting resumes.
func TestSyncWaitsForTheStandbyThenDegradesAndResumes(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	p, s := newNode(t, key), newNode(t, key)
	p.open(false)
	src, srv := p.primary(Sync, 300*time.Millisecond)
	s.open(true)
	_, stop, _ := s.follow(srv.URL, time.Hour)
	ctx := context.Background()
	for i := range 20 {
		seq := p.write(fmt.Sprintf("s%d", i))
		if err := src.WaitReplicated(ctx, seq); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		// The standby holds the record, committed, when the wait returns.
		r, err := s.j.Get(seq)
		if err != nil || r.State != store.StateCommitted {
			t.Fatalf("standby's copy of %d after the wait: %v %v", seq, r, err)
		}
	}
	stop()

	start := time.Now()
	seq := p.write("away")
	if err := src.WaitReplicated(ctx, seq); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("wait with the standby away: %v, want ErrNotReplicated", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
		t.Fatalf("the first wait took %v, want about the 300ms timeout", took)
	}
	start = time.Now()
	seq = p.write("away2")
	if err := src.WaitReplicated(ctx, seq); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("degraded wait: %v, want ErrNotReplicated", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Fatalf("degraded wait took %v; want no wait", took)
	}
	metrics := scrape(t, src)
	for _, want := range []string{"ldapgate_replication_sync_degraded 1", "ldapgate_replication_loss_window_changes 4",
		"ldapgate_replication_sync_timeouts_total 1", "ldapgate_replication_unconfirmed_acks_total 2"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}

	s.open(true)
	s.follow(srv.URL, time.Hour)
	waitUntil(t, 10*time.Second, "sync replication to resume", func() bool {
		return strings.Contains(scrape(t, src), "ldapgate_replication_sync_degraded 0")
	})
	seq = p.write("back")
	if err := src.WaitReplicated(ctx, seq); err != nil {
		t.Fatalf("wait after the standby's return: %v", err)
	}
	sameCopy(t, p.j, s.j)
}

// The standby takes over once the primary is silent for TakeoverAfter,
// with a complete copy; a standby that never synchronised does not. The
// old primary, back as a standby of the new one, gets a snapshot that
// replaces its journal, including a change the new primary never saw.
func TestTakeoverAndFailback(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	a, b := newNode(t, key), newNode(t, key)
	a.open(false)
	for i := range 5 {
		a.write(fmt.Sprintf("a%d", i))
	}
	srcA, srvA := a.primary(Sync, time.Second)
	b.open(true)
	_, _, doneB := b.follow(srvA.URL, 400*time.Millisecond)
	waitUntil(t, 10*time.Second, "the standby to confirm", func() bool { return srcA.Status().Acked == a.j.Position() })

	// A never-synchronised standby of a dead address never takes over.
	c := newNode(t, key)
	c.open(true)
	_, _, doneC := c.follow("http://127.0.0.1:1", 300*time.Millisecond)

	// The primary stops answering (the server goes) after a change the
	// standby may or may not have seen.
	srvA.CloseClientConnections()
	srvA.Close()
	a.write("lost")
	start := time.Now()
	select {
	case err := <-doneB:
		if err != nil {
			t.Fatalf("standby stopped with %v, want a takeover", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the standby did not take over within 10s")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("took over after %v, before the primary was silent for 400ms", took)
	}
	select {
	case err := <-doneC:
		t.Fatalf("a standby with no copy took over (%v)", err)
	default:
	}
	if holds(t, b.j, "lost") {
		t.Fatal("the standby holds a change made after the primary stopped answering")
	}

	// B becomes primary: its copy reopened as a normal journal, a new history.
	b.open(false)
	oldHistory := a.state.Get().History
	srcB, srvB := b.primary(Sync, time.Second)
	if st := b.state.Get(); st.History == oldHistory || st.Parent != oldHistory || st.ForkPos != b.j.Position() {
		t.Fatalf("promoted state %+v; want a new history forked from %q at %d", st, oldHistory, b.j.Position())
	}
	b.write("after-takeover")

	// A comes back as B's standby: its extra change is replaced.
	a.open(true)
	a.follow(srvB.URL, time.Hour)
	waitUntil(t, 10*time.Second, "the old primary to follow the new one", func() bool {
		return srcB.Status().Acked == b.j.Position() && a.j.Position() == b.j.Position()
	})
	sameCopy(t, b.j, a.j)
	if holds(t, a.j, "lost") || !holds(t, a.j, "after-takeover") {
		t.Fatal("the old primary's copy is not the new primary's")
	}
	if a.state.Get().History != b.state.Get().History {
		t.Fatal("the old primary's copy did not take the new primary's history")
	}
}

// A standby that held a prefix of the old history resumes on the new
// primary without a snapshot.
func TestResumeAcrossAForkWithoutSnapshot(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	a, b := newNode(t, key), newNode(t, key)
	a.open(false)
	for i := range 3 {
		a.write(fmt.Sprintf("a%d", i))
	}
	srcB := func() *Source {
		src, srv := a.primary(Async, time.Second)
		b.open(true)
		_, stop, _ := b.follow(srv.URL, time.Hour)
		waitUntil(t, 10*time.Second, "the standby to confirm", func() bool { return src.Status().Acked == a.j.Position() })
		stop()
		srv.Close()
		return src
	}
	_ = srcB()
	// B takes over; A, which has nothing B lacks, follows B from its position.
	b.open(false)
	src, srv := b.primary(Async, time.Second)
	b.write("b0")
	if !src.resumable(a.state.Get().History, a.j.Position()) {
		t.Fatalf("a prefix of the parent history (%d <= fork %d) is not resumable", a.j.Position(), b.state.Get().ForkPos)
	}
	a.open(true)
	a.follow(srv.URL, time.Hour)
	waitUntil(t, 10*time.Second, "A to catch up", func() bool { return a.j.Position() == b.j.Position() })
	sameCopy(t, b.j, a.j)
}

func TestStateFileSurvivesAndForks(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(StatePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	node := st.Get().Node
	if err := st.BecomePrimary(0); err != nil {
		t.Fatal(err)
	}
	h := st.Get().History
	if err := st.BecomePrimary(7); err != nil { // a restart as primary keeps the history
		t.Fatal(err)
	}
	again, err := LoadState(StatePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Get(); got.Node != node || got.History != h || got.Role != RolePrimary {
		t.Fatalf("reloaded %+v; want node %s history %s primary", got, node, h)
	}
	if err := again.Update(func(s *NodeState) { s.Role = RoleStandby }); err != nil {
		t.Fatal(err)
	}
	if err := again.BecomePrimary(9); err != nil {
		t.Fatal(err)
	}
	if got := again.Get(); got.History == h || got.Parent != h || got.ForkPos != 9 {
		t.Fatalf("promotion from a copy: %+v", got)
	}
	if b, _ := os.ReadFile(StatePath(dir)); !strings.Contains(string(b), again.Get().History) {
		t.Fatalf("state file not saved: %s", b)
	}
}

// scrape renders a Source's metrics as /metrics would.
func scrape(t *testing.T, src *Source) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(src.Collector())
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// Two primaries (a split brain) are reported as a metric by the one that
// watches its peer; a standby peer is not.
func TestWatchPeerReportsTwoPrimaries(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	a, b := newNode(t, key), newNode(t, key)
	b.open(false)
	if err := b.state.BecomePrimary(0); err != nil {
		t.Fatal(err)
	}
	var handlerB atomic.Pointer[http.Handler]
	asPrimary := http.Handler(NewSource(SourceConfig{Journal: b.j, State: b.state, Secret: testSecret}))
	handlerB.Store(&asPrimary)
	srvB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*handlerB.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(srvB.Close)
	a.open(false)
	if err := a.state.BecomePrimary(0); err != nil {
		t.Fatal(err)
	}
	src := NewSource(SourceConfig{Journal: a.j, State: a.state, Secret: testSecret, Peer: srvB.URL})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.WatchPeer(ctx, http.DefaultClient, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, 10*time.Second, "the split brain to be reported", func() bool {
		return strings.Contains(scrape(t, src), "ldapgate_replication_peer_is_primary 1")
	})

	// The peer becomes a standby: the report clears.
	asStandby := http.Handler(&Follower{cfg: FollowerConfig{Secret: testSecret, Journal: b.j, State: b.state}})
	handlerB.Store(&asStandby)
	waitUntil(t, 10*time.Second, "the report to clear", func() bool {
		return strings.Contains(scrape(t, src), "ldapgate_replication_peer_is_primary 0")
	})
}

// Close ends the standby's feed connection at once (a stopping primary
// must not wait for it) and refuses new ones.
func TestSourceCloseEndsTheFeed(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	p, s := newNode(t, key), newNode(t, key)
	p.open(false)
	src, srv := p.primary(Async, time.Second)
	s.open(true)
	f, _, _ := s.follow(srv.URL, time.Hour)
	waitUntil(t, 10*time.Second, "the standby to connect", f.connected.Load)
	src.Close()
	waitUntil(t, 10*time.Second, "the feed to end", func() bool { return !f.connected.Load() })
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/replication/feed?after=0", nil)
	setAuth(req, testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("feed after Close: %s, want 503", resp.Status)
	}
}

// Two standbys of each other (both restarted while neither was primary):
// the one further ahead takes over, the other keeps waiting for it.
func TestTwoStandbysTheFurtherAheadTakesOver(t *testing.T) {
	key := filepath.Join(t.TempDir(), "journal.key")
	ahead, behind := newNode(t, key), newNode(t, key)
	for i, n := range []*node{ahead, behind} {
		n.open(false)
		for k := range 5 - 3*i {
			n.write(fmt.Sprintf("n%d-%d", i, k))
		}
		if err := n.state.BecomePrimary(n.j.Position()); err != nil {
			t.Fatal(err)
		}
		if err := n.state.Update(func(s *NodeState) { s.Role = RoleStandby }); err != nil {
			t.Fatal(err)
		}
		n.open(true)
	}
	var hAhead, hBehind atomic.Pointer[http.Handler]
	serve := func(h *atomic.Pointer[http.Handler]) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p := h.Load(); p != nil {
				(*p).ServeHTTP(w, r)
				return
			}
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	srvAhead, srvBehind := serve(&hAhead), serve(&hBehind)
	fAhead, _, doneAhead := ahead.follow(srvBehind.URL, 500*time.Millisecond)
	fBehind, _, doneBehind := behind.follow(srvAhead.URL, 500*time.Millisecond)
	ha, hb := http.Handler(fAhead), http.Handler(fBehind)
	hAhead.Store(&ha)
	hBehind.Store(&hb)
	select {
	case err := <-doneAhead:
		if err != nil {
			t.Fatalf("the standby ahead stopped with %v, want a takeover", err)
		}
	case err := <-doneBehind:
		t.Fatalf("the standby behind returned first (%v)", err)
	case <-time.After(10 * time.Second):
		t.Fatal("neither standby took over")
	}
	select {
	case err := <-doneBehind:
		t.Fatalf("the standby behind took over too (%v)", err)
	case <-time.After(time.Second): // twice its takeover time: it keeps waiting
	}
}
