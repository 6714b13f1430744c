package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// UpstreamHealth is what the gateway knows of one upstream.
type UpstreamHealth struct {
	URL       string
	Up        bool
	Since     time.Time // when it last changed state
	LastError string
}

type upstreamState struct {
	up        bool
	since     time.Time
	lastErr   string
	failures  int
	nextProbe time.Time
}

// UpstreamSet is the Dialer for several upstreams: new sessions go to the
// first healthy one in configured order; failed ones are probed in the
// background with backoff and never given up on.
type UpstreamSet struct {
	ups            []Upstream
	dialTimeout    time.Duration
	maxMessageSize int
	log            *slog.Logger

	mu    sync.Mutex
	state []upstreamState
}

// Probe intervals: a healthy upstream is checked every healthyProbe; a
// failed one after a backoff doubling from failedProbeMin to failedProbeMax.
const (
	healthyProbe   = 10 * time.Second
	failedProbeMin = 500 * time.Millisecond
	failedProbeMax = 30 * time.Second
)

// NewUpstreamSet returns a Dialer over ups. Every upstream starts healthy.
func NewUpstreamSet(ups []Upstream, dialTimeout time.Duration, maxMessageSize int, log *slog.Logger) *UpstreamSet {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	st := make([]upstreamState, len(ups))
	for i := range st {
		st[i] = upstreamState{up: true, since: now, nextProbe: now} // probed at once by Run
	}
	return &UpstreamSet{ups: ups, dialTimeout: dialTimeout, maxMessageSize: maxMessageSize, log: log, state: st}
}

// SetUpstreams replaces the list (a configuration reload). Upstreams kept
// keep what is known of their health; sessions already open keep their
// connections.
func (u *UpstreamSet) SetUpstreams(ups []Upstream) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	old := map[string]upstreamState{}
	for i, up := range u.ups {
		old[up.URL] = u.state[i]
	}
	st := make([]upstreamState, len(ups))
	for i, up := range ups {
		if prev, ok := old[up.URL]; ok {
			st[i] = prev
		} else {
			st[i] = upstreamState{up: true, since: now, nextProbe: now}
		}
	}
	u.ups, u.state = ups, st
}

// Dial connects to the first healthy upstream; when none is known to be
// healthy it tries them all, so a recovered server is found at once.
func (u *UpstreamSet) Dial(ctx context.Context) (net.Conn, error) {
	conn, _, err := u.DialRoute(ctx)
	return conn, err
}

// Route names (by URL) the upstream Dial tries first now: the first
// healthy one.
func (u *UpstreamSet) Route() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, st := range u.state {
		if st.up {
			return u.ups[i].URL
		}
	}
	return ""
}

// DialRoute is Dial, also naming the upstream it connected to.
func (u *UpstreamSet) DialRoute(ctx context.Context) (net.Conn, string, error) {
	u.mu.Lock()
	ups := u.ups
	if len(ups) == 0 {
		u.mu.Unlock()
		return nil, "", errors.New("no upstream configured")
	}
	order := make([]int, 0, len(ups))
	for i, st := range u.state {
		if st.up {
			order = append(order, i)
		}
	}
	for i, st := range u.state {
		if !st.up {
			order = append(order, i)
		}
	}
	u.mu.Unlock()
	var errs []error
	for _, i := range order {
		conn, err := ups[i].dial(ctx, u.dialTimeout)
		if err != nil && ctx.Err() != nil {
			// The caller gave up (its client left during an early dial):
			// that says nothing of the upstream's health.
			errs = append(errs, fmt.Errorf("%s: %w", ups[i].URL, err))
			break
		}
		u.record(ups[i].URL, err)
		if err == nil {
			return conn, ups[i].URL, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ups[i].URL, err))
	}
	return nil, "", errors.Join(errs...)
}

// record notes the outcome of a dial or a probe of the upstream at url.
func (u *UpstreamSet) record(url string, err error) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	i := slices.IndexFunc(u.ups, func(up Upstream) bool { return up.URL == url })
	if i < 0 {
		return // removed by a reload meanwhile
	}
	st := &u.state[i]
	if err == nil {
		if !st.up {
			u.log.Info("upstream is back", "upstream", u.ups[i].URL, "down_for", now.Sub(st.since).Round(time.Millisecond))
			st.since = now
		}
		st.up, st.failures, st.lastErr = true, 0, ""
		st.nextProbe = now.Add(healthyProbe)
		return
	}
	if st.up {
		u.log.Warn("upstream is down", "upstream", u.ups[i].URL, "err", err)
		st.since = now
	}
	st.up = false
	st.failures++
	st.lastErr = err.Error()
	wait := failedProbeMin << min(st.failures-1, 16)
	if wait > failedProbeMax || wait <= 0 {
		wait = failedProbeMax
	}
	// Jitter keeps several gateways from probing in step.
	wait -= time.Duration(rand.Int64N(int64(wait)/4 + 1))
	st.nextProbe = now.Add(wait)
}

// Health reports every upstream's state.
func (u *UpstreamSet) Health() []UpstreamHealth {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]UpstreamHealth, len(u.ups))
	for i, st := range u.state {
		out[i] = UpstreamHealth{URL: u.ups[i].URL, Up: st.up, Since: st.since, LastError: st.lastErr}
	}
	return out
}

// AnyUp reports whether at least one upstream is known to be healthy.
func (u *UpstreamSet) AnyUp() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, st := range u.state {
		if st.up {
			return true
		}
	}
	return false
}

// Run probes the upstreams until ctx ends.
func (u *UpstreamSet) Run(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		u.mu.Lock()
		var due []Upstream
		for i, st := range u.state {
			if !now.Before(st.nextProbe) {
				due = append(due, u.ups[i])
			}
		}
		u.mu.Unlock()
		for _, up := range due {
			u.record(up.URL, u.probeUpstream(ctx, up))
		}
	}
}

// Probe checks upstream i now, without changing what is known of it.
func (u *UpstreamSet) Probe(ctx context.Context, i int) error {
	u.mu.Lock()
	up := u.ups[i]
	u.mu.Unlock()
	return u.probeUpstream(ctx, up)
}

// probeUpstream asks an upstream for its root DSE: a server that accepts
// TCP but does not answer LDAP is not healthy.
func (u *UpstreamSet) probeUpstream(ctx context.Context, up Upstream) error {
	conn, err := up.dial(ctx, u.dialTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(u.dialTimeout))
	if _, err := conn.Write(ldapwire.RootDSESearch(1)); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	mr := ldapwire.NewReader(conn, u.maxMessageSize)
	for {
		m, err := mr.Next()
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		if m.Op == ldapwire.TagSearchDone {
			return nil
		}
	}
}
