// Package admin is the gateway's local administration endpoint: Prometheus
// metrics, health and readiness probes, pprof profiles, and the journal
// operations that
// `ldapgate journal` performs while the gateway runs (it holds the journal's
// lock, so the command goes through here). It listens on a Unix socket in
// the data folder, and optionally on a loopback TCP address for scraping.
//
// Metrics never carry DNs, filters or other directory data as labels.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

// Config wires the endpoint to what it reports on. Any part may be nil.
type Config struct {
	Gateway   func() gateway.Stats
	Upstreams *gateway.UpstreamSet
	Journal   *store.Journal
	Logger    *slog.Logger
}

// Server serves the endpoint and collects the operation metrics; it is the
// gateway's Observer.
type Server struct {
	cfg      Config
	registry *prometheus.Registry
	ops      *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	delivery *prometheus.CounterVec
	state    *stateCollector
	series   sync.Map // opKey -> opSeries
	mux      *http.ServeMux
}

// New builds the endpoint with its own registry (no global state).
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		registry: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldapgate_operations_total",
			Help: "LDAP operations finished, by operation and result.",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ldapgate_operation_duration_seconds",
			Help:    "Time from a request to its final answer, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"op"}),
		delivery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldapgate_delivery_attempts_total",
			Help: "Deliveries of journal records to Axigen, by kind and outcome (delivered, failed).",
		}, []string{"kind", "outcome"}),
	}
	s.state = newStateCollector(&s.cfg)
	s.registry.MustRegister(s.ops, s.latency, s.delivery,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.state)
	s.mux = http.NewServeMux()
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /journal/stats", s.journalStats)
	s.mux.HandleFunc("GET /journal/records", s.journalList)
	s.mux.HandleFunc("GET /journal/records/{seq}", s.journalShow)
	s.mux.HandleFunc("POST /journal/records/{seq}/retry", s.journalAct((*store.Journal).Retry))
	s.mux.HandleFunc("POST /journal/records/{seq}/drop", s.journalAct((*store.Journal).Drop))
	// Profiles of the running gateway, for finding where time goes.
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return s
}

// SetSources names the gateway and upstreams to report on, once they exist
// (the gateway is built with this Server as its Observer). Call it before
// serving.
func (s *Server) SetSources(stats func() gateway.Stats, ups *gateway.UpstreamSet) {
	s.cfg.Gateway, s.cfg.Upstreams = stats, ups
}

// Network returns the part of the endpoint that may be served on a TCP
// address: the probes and the metrics. The journal operations, the
// cluster's status and membership, and the profiles stay on the Unix
// socket, where the file's permissions guard them.
func (s *Server) Network() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/metrics", r.URL.Path == "/healthz", r.URL.Path == "/readyz":
			s.mux.ServeHTTP(w, r)
		default:
			http.Error(w, "only on the admin socket in the data folder (DATA_DIR/admin.sock)", http.StatusForbidden)
		}
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// opKey names one series of the operation metrics.
type opKey struct {
	op   string
	code int
}

// opSeries are the metrics of one operation and result, resolved once:
// label lookups (and the result's name) stay off the relay's hot path.
type opSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// OperationDone implements gateway.Observer.
func (s *Server) OperationDone(op string, code int, elapsed time.Duration) {
	k := opKey{op, code}
	v, ok := s.series.Load(k)
	if !ok {
		v, _ = s.series.LoadOrStore(k, opSeries{
			count:   s.ops.WithLabelValues(op, resultName(code)),
			latency: s.latency.WithLabelValues(op),
		})
	}
	series := v.(opSeries)
	series.count.Inc()
	if elapsed > 0 {
		series.latency.Observe(elapsed.Seconds())
	}
}

// DeliveryDone counts one delivery attempt (the write path's delivery
// observer, mirror.DeliveryObserver).
func (s *Server) DeliveryDone(kind string, err error) {
	outcome := "delivered"
	if err != nil {
		outcome = "failed"
	}
	s.delivery.WithLabelValues(kind, outcome).Inc()
}

// resultName is a short, bounded label for a result code.
func resultName(code int) string {
	if name, ok := ldap.LDAPResultCodeMap[uint16(code)]; ok && code >= 0 && code < 1<<16 {
		return strings.ReplaceAll(strings.ToLower(name), " ", "_")
	}
	return "other"
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	if s.cfg.Upstreams != nil && !s.cfg.Upstreams.AnyUp() {
		problems = append(problems, "no upstream directory is reachable")
	}
	if s.cfg.Journal != nil {
		if _, err := s.cfg.Journal.Stats(); err != nil {
			problems = append(problems, "journal: "+err.Error())
		}
	}
	if len(problems) > 0 {
		http.Error(w, "not ready: "+strings.Join(problems, "; "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) noJournal(w http.ResponseWriter) bool {
	if s.cfg.Journal == nil {
		http.Error(w, "this gateway has no journal", http.StatusNotFound)
		return true
	}
	return false
}

func (s *Server) journalStats(w http.ResponseWriter, _ *http.Request) {
	if s.noJournal(w) {
		return
	}
	st, err := s.cfg.Journal.Stats()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, st)
}

// journalList serves ?state=dead&state=committed&limit=N.
func (s *Server) journalList(w http.ResponseWriter, r *http.Request) {
	if s.noJournal(w) {
		return
	}
	var f store.Filter
	for _, v := range r.URL.Query()["state"] {
		st, err := store.ParseState(v)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.States = append(f.States, st)
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, "limit must be a whole number", http.StatusBadRequest)
			return
		}
		f.Limit = n
	}
	recs, err := s.cfg.Journal.List(f)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if recs == nil {
		recs = []*store.Record{}
	}
	writeJSON(w, recs)
}

func seqOf(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		http.Error(w, "the record number must be a whole number", http.StatusBadRequest)
		return 0, false
	}
	return seq, true
}

func (s *Server) journalShow(w http.ResponseWriter, r *http.Request) {
	if s.noJournal(w) {
		return
	}
	seq, ok := seqOf(w, r)
	if !ok {
		return
	}
	rec, err := s.cfg.Journal.Get(seq)
	if err != nil {
		http.Error(w, err.Error(), statusOf(err))
		return
	}
	writeJSON(w, rec)
}

func (s *Server) journalAct(act func(*store.Journal, context.Context, uint64) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.noJournal(w) {
			return
		}
		seq, ok := seqOf(w, r)
		if !ok {
			return
		}
		if err := act(s.cfg.Journal, r.Context(), seq); err != nil {
			http.Error(w, err.Error(), statusOf(err))
			return
		}
		writeJSON(w, map[string]any{"seq": seq, "ok": true})
	}
}

func statusOf(err error) int {
	if errors.Is(err, store.ErrNotFound) {
		return http.StatusNotFound
	}
	return http.StatusConflict
}

// stateCollector reads gauges at scrape time, so they are never stale.
type stateCollector struct {
	cfg *Config

	connections, upstreamConns, accepted, rejected, upstreamFail *prometheus.Desc
	upstreamUp, records, backlog, oldest, dead                   *prometheus.Desc
	spareConns                                                   *prometheus.Desc
}

func newStateCollector(cfg *Config) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &stateCollector{
		cfg:           cfg,
		connections:   d("ldapgate_connections", "Open client sessions."),
		upstreamConns: d("ldapgate_upstream_connections", "Open connections to upstream directories, in use by sessions."),
		spareConns:    d("ldapgate_upstream_spare_connections", "Upstream connections reset to anonymous, waiting for a new session."),
		accepted:      d("ldapgate_connections_accepted_total", "Client connections accepted."),
		rejected:      d("ldapgate_connections_rejected_total", "Client connections refused by the connection limit."),
		upstreamFail:  d("ldapgate_upstream_failures_total", "Upstream dials that failed and upstream connections lost."),
		upstreamUp:    d("ldapgate_upstream_up", "1 when the upstream answers LDAP, else 0.", "upstream"),
		records:       d("ldapgate_journal_records", "Journal records by state.", "state"),
		backlog:       d("ldapgate_journal_backlog", "Committed records not yet delivered to Axigen."),
		oldest:        d("ldapgate_journal_oldest_pending_seconds", "Age of the oldest record not yet delivered."),
		dead:          d("ldapgate_dead_letters", "Records whose delivery gave up (ldapgate journal ls --dead)."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connections, c.upstreamConns, c.spareConns, c.accepted, c.rejected,
		c.upstreamFail, c.upstreamUp, c.records, c.backlog, c.oldest, c.dead} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.cfg.Gateway != nil {
		st := c.cfg.Gateway()
		ch <- prometheus.MustNewConstMetric(c.connections, prometheus.GaugeValue, float64(st.Connections))
		ch <- prometheus.MustNewConstMetric(c.upstreamConns, prometheus.GaugeValue, float64(st.UpstreamConns))
		ch <- prometheus.MustNewConstMetric(c.spareConns, prometheus.GaugeValue, float64(st.SpareConns))
		ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(st.Accepted))
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(st.Rejected))
		ch <- prometheus.MustNewConstMetric(c.upstreamFail, prometheus.CounterValue, float64(st.UpstreamFailures))
	}
	if c.cfg.Upstreams != nil {
		for _, h := range c.cfg.Upstreams.Health() {
			v := 0.0
			if h.Up {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.upstreamUp, prometheus.GaugeValue, v, h.URL)
		}
	}
	if c.cfg.Journal != nil {
		st, err := c.cfg.Journal.Stats()
		if err != nil {
			c.cfg.Logger.Warn("journal stats for metrics", "err", err)
			return
		}
		for state, n := range map[store.State]int{store.StatePrepared: st.Prepared, store.StateCommitted: st.Committed,
			store.StateDelivered: st.Delivered, store.StateDead: st.Dead} {
			ch <- prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue, float64(n), string(state))
		}
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(st.Backlog))
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, st.OldestPending.Seconds())
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(st.Dead))
	}
}
