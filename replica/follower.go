package replica

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ldapgate/ldapgate/store"
)

// FollowerConfig wires a standby's Follower.
type FollowerConfig struct {
	// Primary is the base URL of the primary's admin endpoint
	// (http://host:port).
	Primary string
	Secret  []byte
	// Journal is the standby's copy, opened with store.Options.Follower.
	Journal *store.Journal
	State   *StateFile
	// TakeoverAfter is how long the primary may stay silent before Run
	// returns for the standby to take over (10s).
	TakeoverAfter time.Duration
	// Client makes the requests (a default client when nil).
	Client *http.Client
	Logger *slog.Logger
}

// Follower is the standby's side: it applies the primary's feed to its own
// copy, confirms what it holds, and watches the primary.
type Follower struct {
	cfg     FollowerConfig
	log     *slog.Logger
	client  *http.Client
	applied chan struct{} // capacity 1: the copy moved, tell the primary

	started     time.Time
	lastContact atomic.Int64 // unix nanoseconds
	primaryPos  atomic.Uint64
	connected   atomic.Bool
}

// feedIdleLimit drops a feed connection that has been silent this long
// (the primary sends a heartbeat every second): a half-open connection.
const feedIdleLimit = 5 * time.Second

// NewFollower builds the standby's side.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	if cfg.Journal == nil || cfg.State == nil {
		return nil, errors.New("replica: a follower needs a journal and a state file")
	}
	u, err := url.Parse(cfg.Primary)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("replica: primary %q is not an http:// URL of its admin endpoint", cfg.Primary)
	}
	cfg.Primary = strings.TrimRight(cfg.Primary, "/")
	if cfg.TakeoverAfter <= 0 {
		cfg.TakeoverAfter = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{}
	}
	f := &Follower{cfg: cfg, log: cfg.Logger.With("component", "replication", "primary", cfg.Primary),
		client: client, applied: make(chan struct{}, 1), started: time.Now()}
	f.lastContact.Store(f.started.UnixNano())
	return f, nil
}

// Run follows the primary until ctx ends (it returns ctx's error) or the
// primary has not been heard from for TakeoverAfter while this copy is
// complete: then it returns nil, and the caller takes over. A primary is
// heard from by a feed line (heartbeats included) or a status answer that
// it is primary. A copy is complete once it has a history: a standby that
// never reached its primary, or is in the middle of a snapshot, never
// takes over.
func (f *Follower) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { f.followLoop(ctx); done <- struct{}{} }()
	go func() { f.pollLoop(ctx); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()
	tick := time.NewTicker(min(100*time.Millisecond, f.cfg.TakeoverAfter/10))
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		silent := time.Since(f.LastContact())
		if silent < f.cfg.TakeoverAfter {
			warned = false
			continue
		}
		if f.Ready() {
			f.log.Warn("the primary has not answered: taking over", "silentFor", silent.Round(time.Millisecond),
				"position", f.cfg.Journal.Position())
			return nil
		}
		if !warned {
			f.log.Error("the primary does not answer, but this standby's copy is incomplete (never synchronised, or a snapshot was under way): it will not take over",
				"silentFor", silent.Round(time.Millisecond))
			warned = true
		}
	}
}

// Ready reports whether the copy is complete enough to take over.
func (f *Follower) Ready() bool { return f.cfg.State.Get().History != "" }

// LastContact is when the primary was last heard from (the start, at first).
func (f *Follower) LastContact() time.Time { return time.Unix(0, f.lastContact.Load()) }

func (f *Follower) contact() { f.lastContact.Store(time.Now().UnixNano()) }

func (f *Follower) followLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := f.followOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		f.log.Warn("replication feed interrupted; following again", "err", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// followOnce follows one feed connection until it fails.
func (f *Follower) followOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := f.cfg.State.Get()
	j := f.cfg.Journal
	q := url.Values{"after": {strconv.FormatUint(j.Position(), 10)}, "history": {st.History}, "node": {st.Node}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.cfg.Primary+"/replication/feed?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	setAuth(req, f.cfg.Secret)
	idle := time.AfterFunc(feedIdleLimit, cancel)
	defer idle.Stop()
	resp, err := f.client.Do(req)
	if err != nil {
		return fmt.Errorf("connect to the feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("feed: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	f.contact()
	history := resp.Header.Get(headerHistory)
	session := resp.Header.Get(headerSession)
	snapshot := resp.Header.Get(headerSnapshot) == "true"
	if history == "" || session == "" {
		return errors.New("feed: the primary sent no history or session")
	}
	if snapshot {
		f.reportDiscarded(st)
	} else if err := f.cfg.State.Update(func(s *NodeState) { s.History, s.Role = history, RoleStandby }); err != nil {
		return err
	}
	f.connected.Store(true)
	defer f.connected.Store(false)
	f.log.Info("following the primary", "after", j.Position(), "snapshot", snapshot)
	go f.ackLoop(ctx, session)

	rd := bufio.NewReaderSize(resp.Body, 64<<10)
	var batch []store.Event
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("read the feed: %w", err)
		}
		idle.Reset(feedIdleLimit)
		f.contact()
		var ev store.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("feed line: %w", err)
		}
		if ev.Type == Heartbeat {
			f.seen(ev.Pos)
		} else {
			batch = append(batch, ev)
		}
		if len(batch) == 0 || (rd.Buffered() > 0 && len(batch) < 512) {
			continue
		}
		if err := f.apply(ctx, batch, history); err != nil {
			return err
		}
		batch = batch[:0]
	}
}

// apply writes a batch of changes to the copy. A snapshot's Reset marks
// the copy incomplete (no history) before it empties it; its Ready makes it
// complete again.
func (f *Follower) apply(ctx context.Context, batch []store.Event, history string) error {
	ready := false
	for _, ev := range batch {
		switch ev.Type {
		case store.EventReset:
			if err := f.cfg.State.Update(func(s *NodeState) { s.History, s.Role = "", RoleStandby }); err != nil {
				return err
			}
		case store.EventReady:
			ready = true
		}
	}
	if err := f.cfg.Journal.Feed().ApplyAll(ctx, batch); err != nil {
		return err
	}
	if ready {
		if err := f.cfg.State.Update(func(s *NodeState) { s.History, s.Role = history, RoleStandby }); err != nil {
			return err
		}
		f.log.Info("snapshot applied: the copy is complete", "position", f.cfg.Journal.Position())
	}
	f.seen(batch[len(batch)-1].Pos)
	select {
	case f.applied <- struct{}{}:
	default:
	}
	return nil
}

func (f *Follower) seen(pos uint64) {
	for {
		old := f.primaryPos.Load()
		if pos <= old || f.primaryPos.CompareAndSwap(old, pos) {
			return
		}
	}
}

// reportDiscarded warns, before a snapshot replaces this journal, about
// the records it holds that were not delivered: a former primary's writes
// the new primary may never have seen (in async mode, or unacknowledged).
func (f *Follower) reportDiscarded(st NodeState) {
	if st.Role != RolePrimary {
		return
	}
	recs, err := f.cfg.Journal.List(store.Filter{States: []store.State{store.StatePrepared, store.StateCommitted, store.StateDead}})
	if err != nil || len(recs) == 0 {
		return
	}
	seqs := make([]uint64, 0, len(recs))
	for _, r := range recs {
		seqs = append(seqs, r.Seq)
	}
	f.log.Error("this journal, from when this gateway was primary, is replaced by the new primary's copy; "+
		"its undelivered records are discarded: run `ldapgate resync` if Axigen may lack them",
		"undelivered", len(recs), "seqs", seqs)
}

// ackLoop tells the primary how far the copy is held, whenever it moves.
func (f *Follower) ackLoop(ctx context.Context, session string) {
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.applied:
		}
		pos := f.cfg.Journal.Position()
		if pos <= sent {
			continue
		}
		q := url.Values{"session": {session}, "position": {strconv.FormatUint(pos, 10)}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.cfg.Primary+"/replication/ack?"+q.Encode(), nil)
		if err != nil {
			return
		}
		setAuth(req, f.cfg.Secret)
		resp, err := f.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Debug("acknowledgement failed", "err", err)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			sent = pos
		}
	}
}

// pollLoop asks the primary for its status a few times per takeover
// period: a primary answering that it is primary is alive even when the
// feed is broken. When the peer answers that it is a standby too (two
// standbys after a double restart), the better copy takes over: the one
// further ahead, or the lower node id; the other keeps waiting.
func (f *Follower) pollLoop(ctx context.Context) {
	interval := min(max(f.cfg.TakeoverAfter/5, 200*time.Millisecond), 2*time.Second)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		st, err := FetchStatus(pctx, f.client, f.cfg.Primary, f.cfg.Secret)
		cancel()
		if err != nil {
			continue
		}
		switch st.Role {
		case RolePrimary:
			f.contact()
			f.seen(st.Position)
		case RoleStandby:
			me := f.cfg.State.Get()
			mine := f.cfg.Journal.Position()
			peerBetter := st.History != "" && (st.Position > mine || (st.Position == mine && st.Node < me.Node))
			if peerBetter || !f.Ready() {
				f.contact() // leave the takeover to the peer
			}
		}
	}
}

// FetchStatus asks a gateway's admin endpoint at base who it is.
func FetchStatus(ctx context.Context, client *http.Client, base string, secret []byte) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/replication/status", nil)
	if err != nil {
		return Status{}, err
	}
	setAuth(req, secret)
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return Status{}, fmt.Errorf("status of %s: %s: %s", base, resp.Status, bytes.TrimSpace(msg))
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return Status{}, fmt.Errorf("status of %s: %w", base, err)
	}
	return st, nil
}

// Status describes this standby.
func (f *Follower) Status() Status {
	st := f.cfg.State.Get()
	return Status{Role: RoleStandby, Node: st.Node, History: st.History, Position: f.cfg.Journal.Position()}
}

// ServeHTTP answers /replication/status for a standby; it has no feed.
func (f *Follower) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !authorized(r, f.cfg.Secret) {
		http.Error(w, "replication: missing or wrong secret", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/replication/status" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(f.Status())
		return
	}
	http.Error(w, "replication: this gateway is a standby", http.StatusServiceUnavailable)
}

// Collector returns the standby's replication metrics.
func (f *Follower) Collector() prometheus.Collector { return followerMetrics{f} }

var (
	descPrimaryPos = prometheus.NewDesc("ldapgate_replication_primary_position",
		"Last position of the primary's journal this standby heard of.", nil, nil)
	descContactAge = prometheus.NewDesc("ldapgate_replication_primary_contact_age_seconds",
		"Time since the primary was last heard from.", nil, nil)
	descFollowing = prometheus.NewDesc("ldapgate_replication_feed_connected",
		"1 while this standby is connected to the primary's feed.", nil, nil)
)

type followerMetrics struct{ f *Follower }

func (m followerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRole, descPosition, descPrimaryPos, descLag, descContactAge, descFollowing} {
		ch <- d
	}
}

func (m followerMetrics) Collect(ch chan<- prometheus.Metric) {
	f := m.f
	pos, ppos := f.cfg.Journal.Position(), f.primaryPos.Load()
	lag := float64(0)
	if ppos > pos {
		lag = float64(ppos - pos)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descRole, 1, string(RoleStandby))
	gauge(descPosition, float64(pos))
	gauge(descPrimaryPos, float64(ppos))
	gauge(descLag, lag)
	gauge(descContactAge, time.Since(f.LastContact()).Seconds())
	gauge(descFollowing, b2f(f.connected.Load()))
}
