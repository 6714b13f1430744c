package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ldapgate/ldapgate/store"
)

// ErrNotReplicated says a synchronous wait for the standby timed out: the
// write is acknowledged without it, and the primary runs degraded (async)
// until the standby has caught up.
var ErrNotReplicated = errors.New("the standby did not confirm the record in time")

// SourceConfig wires a primary's Source.
type SourceConfig struct {
	Journal *store.Journal
	State   *StateFile
	Secret  []byte
	Mode    Mode
	// SyncTimeout bounds a synchronous wait for the standby (3s).
	SyncTimeout time.Duration
	// Heartbeat is the idle interval between heartbeat lines (1s).
	Heartbeat time.Duration
	// Peer, when set, is the other gateway's admin endpoint: WatchPeer
	// checks that it is not a primary too.
	Peer   string
	Logger *slog.Logger
}

// Source is the primary's side: it serves the feed, tracks how far the
// standby holds the journal, and makes synchronous writes wait for it.
type Source struct {
	cfg SourceConfig
	log *slog.Logger
	mux *http.ServeMux

	mu        sync.Mutex
	session   *feedSession
	nextID    uint64
	acked     uint64        // what the current session's standby holds
	ackedCh   chan struct{} // closed and replaced when acked moves
	degraded  bool
	resumeAt  uint64 // degraded: sync resumes once the standby holds this
	timeouts  uint64 // synchronous waits that timed out
	unsynced  uint64 // writes acknowledged in sync mode while degraded
	lastAckAt time.Time
	// twoPrimaries: the peer answered that it is a primary too.
	twoPrimaries bool
	closed       bool
}

type feedSession struct {
	id     uint64
	node   string
	cancel context.CancelFunc
}

// NewSource builds the primary's side on an open (non-follower) journal.
func NewSource(cfg SourceConfig) *Source {
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 3 * time.Second
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Mode == "" {
		cfg.Mode = Async
	}
	s := &Source{cfg: cfg, log: cfg.Logger.With("component", "replication"), ackedCh: make(chan struct{})}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /replication/status", s.serveStatus)
	s.mux.HandleFunc("GET /replication/feed", s.serveFeed)
	s.mux.HandleFunc("POST /replication/ack", s.serveAck)
	return s
}

// ServeHTTP implements http.Handler for the /replication/ paths.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !authorized(r, s.cfg.Secret) {
		http.Error(w, "replication: missing or wrong secret", http.StatusUnauthorized)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Status describes this primary.
func (s *Source) Status() Status {
	st := s.cfg.State.Get()
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Role: RolePrimary, Node: st.Node, History: st.History, Position: s.cfg.Journal.Position(), Acked: s.acked}
}

func (s *Source) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.Status())
}

// resumable reports whether a follower at after in history can go on from
// there: its copy is a prefix of this journal.
func (s *Source) resumable(history string, after uint64) bool {
	st := s.cfg.State.Get()
	switch {
	case after == 0 || history == "":
		return false
	case history == st.History:
		return after <= s.cfg.Journal.Position()
	case history == st.Parent:
		return after <= st.ForkPos
	}
	return false
}

func (s *Source) serveFeed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := strconv.ParseUint(q.Get("after"), 10, 64)
	if err != nil && q.Get("after") != "" {
		http.Error(w, "replication: bad after", http.StatusBadRequest)
		return
	}
	if !s.resumable(q.Get("history"), after) {
		after = 0 // the follower starts again from a snapshot
	}
	rc := http.NewResponseController(w)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sess := s.startSession(q.Get("node"), after, cancel)
	if sess == nil {
		http.Error(w, "replication: the gateway is stopping", http.StatusServiceUnavailable)
		return
	}
	defer s.endSession(sess)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(headerHistory, s.cfg.State.Get().History)
	w.Header().Set(headerSession, strconv.FormatUint(sess.id, 10))
	w.Header().Set(headerSnapshot, strconv.FormatBool(after == 0))
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	s.log.Info("standby following", "node", sess.node, "after", after, "snapshot", after == 0, "remote", r.RemoteAddr)

	// Events and heartbeats share the connection: one writer at a time.
	var wmu sync.Mutex
	lastWrite := time.Now()
	send := func(ev store.Event) error {
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		wmu.Lock()
		defer wmu.Unlock()
		if _, err := w.Write(append(b, '\n')); err != nil {
			return err
		}
		lastWrite = time.Now()
		return rc.Flush()
	}
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		t := time.NewTicker(s.cfg.Heartbeat / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			wmu.Lock()
			idle := time.Since(lastWrite) >= s.cfg.Heartbeat
			wmu.Unlock()
			if idle {
				if err := send(store.Event{Type: Heartbeat, Pos: s.cfg.Journal.Position(), Time: time.Now()}); err != nil {
					cancel()
					return
				}
			}
		}
	}()
	err = s.cfg.Journal.Feed().Stream(ctx, after, send)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("feed to the standby stopped", "node", sess.node, "err", err)
	}
	// The heartbeat goroutine must not write after the handler returns.
	cancel()
	<-hbDone
}

// Close ends the feed (the gateway is stopping): the standby's connection
// closes now instead of holding up the admin endpoint's shutdown, and no
// new one is served.
func (s *Source) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.session != nil {
		s.session.cancel()
	}
}

// startSession makes a new follower connection the current one (there is
// one standby): its acknowledgements start from what it says it holds. It
// returns nil once the Source is closed.
func (s *Source) startSession(node string, after uint64, cancel context.CancelFunc) *feedSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.session != nil {
		s.session.cancel()
	}
	s.nextID++
	s.session = &feedSession{id: s.nextID, node: node, cancel: cancel}
	s.acked = after
	s.lastAckAt = time.Now()
	s.notifyLocked()
	return s.session
}

func (s *Source) endSession(sess *feedSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == sess {
		s.session = nil
		s.log.Warn("standby disconnected", "node", sess.node)
	}
}

func (s *Source) serveAck(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, err1 := strconv.ParseUint(q.Get("session"), 10, 64)
	pos, err2 := strconv.ParseUint(q.Get("position"), 10, 64)
	if err1 != nil || err2 != nil {
		http.Error(w, "replication: bad session or position", http.StatusBadRequest)
		return
	}
	if !s.ack(id, pos) {
		http.Error(w, "replication: not the current feed session", http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ack records that the standby of session id holds every change up to pos.
func (s *Source) ack(id, pos uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == nil || s.session.id != id {
		return false
	}
	s.lastAckAt = time.Now()
	if pos > s.acked {
		s.acked = pos
		s.notifyLocked()
	}
	if s.degraded && s.acked >= s.resumeAt {
		s.degraded = false
		s.log.Warn("the standby has caught up: synchronous replication resumed", "position", s.acked)
	}
	return true
}

func (s *Source) notifyLocked() {
	close(s.ackedCh)
	s.ackedCh = make(chan struct{})
}

// WaitReplicated returns once the standby holds the journal up to its
// position now, which includes the record seq the caller journaled (at
// least as prepared: a standby that takes over settles it as recovery
// does, so the write is not lost).
// In async mode it returns at once. In sync mode it waits up to
// SyncTimeout; then it logs loudly, counts the timeout, and the primary
// runs degraded (it acknowledges without waiting) until the standby has
// caught up, so a standby outage costs clients one timeout, not a hang.
func (s *Source) WaitReplicated(ctx context.Context, seq uint64) error {
	if s.cfg.Mode != Sync {
		return nil
	}
	target := s.cfg.Journal.Position()
	var timer *time.Timer
	for {
		s.mu.Lock()
		if s.acked >= target {
			s.mu.Unlock()
			return nil
		}
		if s.degraded {
			s.unsynced++
			s.mu.Unlock()
			return fmt.Errorf("record %d: %w (replication degraded)", seq, ErrNotReplicated)
		}
		ch := s.ackedCh
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(s.cfg.SyncTimeout)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			s.mu.Lock()
			s.timeouts++
			s.unsynced++
			if !s.degraded {
				s.degraded = true
				s.resumeAt = s.cfg.Journal.Position()
				s.log.Error("SYNCHRONOUS REPLICATION DEGRADED: the standby did not confirm a record in time; "+
					"writes are acknowledged without it (async) until it catches up",
					"seq", seq, "position", target, "standbyHolds", s.acked, "timeout", s.cfg.SyncTimeout,
					"standbyConnected", s.session != nil)
			}
			s.mu.Unlock()
			return fmt.Errorf("record %d: %w", seq, ErrNotReplicated)
		}
	}
}

// WatchPeer asks the peer who it is every interval until ctx ends. Two
// primaries (after a network partition, or a peer check at start that
// could not reach a running primary) both accept writes and their journals
// diverge: it is reported loudly, at every check, and as a metric, for an
// operator to stop one of them (it comes back as the other's standby).
// Nothing is resolved automatically: which writes to keep is not a choice
// a gateway can make.
func (s *Source) WatchPeer(ctx context.Context, client *http.Client, interval time.Duration) {
	if s.cfg.Peer == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		st, err := FetchStatus(pctx, client, s.cfg.Peer, s.cfg.Secret)
		cancel()
		if err != nil {
			continue
		}
		both := st.Role == RolePrimary
		s.mu.Lock()
		s.twoPrimaries = both
		s.mu.Unlock()
		if both {
			s.log.Error("TWO PRIMARIES: the peer serves as primary too; their journals diverge. Stop one of them: restarted, it becomes the other's standby",
				"peer", s.cfg.Peer, "peerNode", st.Node, "peerPosition", st.Position)
		}
	}
}

// Collector returns the primary's replication metrics.
func (s *Source) Collector() prometheus.Collector { return sourceMetrics{s} }

var (
	descRole = prometheus.NewDesc("ldapgate_replication_role",
		"1 for the role this gateway runs in (primary or standby).", []string{"role"}, nil)
	descPosition = prometheus.NewDesc("ldapgate_replication_position",
		"Position of the last change in this gateway's journal.", nil, nil)
	descStandbyPos = prometheus.NewDesc("ldapgate_replication_standby_position",
		"Position up to which the standby confirmed holding the journal.", nil, nil)
	descLag = prometheus.NewDesc("ldapgate_replication_lag_changes",
		"Journal changes the standby does not hold yet (primary position minus standby position).", nil, nil)
	descLoss = prometheus.NewDesc("ldapgate_replication_loss_window_changes",
		"Changes already acknowledged to clients that the standby does not hold: what losing this gateway's disk would lose (always 0 in sync mode unless degraded).", nil, nil)
	descConnected = prometheus.NewDesc("ldapgate_replication_standby_connected",
		"1 while a standby follows the feed.", nil, nil)
	descDegraded = prometheus.NewDesc("ldapgate_replication_sync_degraded",
		"1 while sync replication runs degraded (acknowledging without the standby) after a timeout.", nil, nil)
	descTimeouts = prometheus.NewDesc("ldapgate_replication_sync_timeouts_total",
		"Synchronous waits for the standby that timed out.", nil, nil)
	descUnsynced = prometheus.NewDesc("ldapgate_replication_unconfirmed_acks_total",
		"Writes acknowledged in sync mode without the standby's confirmation (timeouts and degraded mode).", nil, nil)
	descTwoPrimaries = prometheus.NewDesc("ldapgate_replication_peer_is_primary",
		"1 when the peer gateway answered that it serves as primary too (split brain: stop one).", nil, nil)
	descAckAge = prometheus.NewDesc("ldapgate_replication_standby_ack_age_seconds",
		"Time since the standby last confirmed a position (or connected).", nil, nil)
)

type sourceMetrics struct{ s *Source }

func (m sourceMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRole, descPosition, descStandbyPos, descLag, descLoss,
		descConnected, descDegraded, descTimeouts, descUnsynced, descAckAge, descTwoPrimaries} {
		ch <- d
	}
}

func (m sourceMetrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	pos := s.cfg.Journal.Position()
	s.mu.Lock()
	acked, degraded, connected := s.acked, s.degraded, s.session != nil
	timeouts, unsynced, lastAck, two := s.timeouts, s.unsynced, s.lastAckAt, s.twoPrimaries
	s.mu.Unlock()
	lag := float64(0)
	if pos > acked {
		lag = float64(pos - acked)
	}
	loss := lag
	if s.cfg.Mode == Sync && !degraded {
		loss = 0
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descRole, 1, string(RolePrimary))
	gauge(descPosition, float64(pos))
	gauge(descStandbyPos, float64(acked))
	gauge(descLag, lag)
	gauge(descLoss, loss)
	gauge(descConnected, b2f(connected))
	gauge(descDegraded, b2f(degraded))
	gauge(descTwoPrimaries, b2f(two))
	ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(timeouts))
	ch <- prometheus.MustNewConstMetric(descUnsynced, prometheus.CounterValue, float64(unsynced))
	if !lastAck.IsZero() {
		gauge(descAckAge, time.Since(lastAck).Seconds())
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
