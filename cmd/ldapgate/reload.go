package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/schema"
)

// listenerSet holds the gateway's listeners by their configured URL, so a
// reload can open new ones and close removed ones; closing a listener
// leaves its established sessions alone.
type listenerSet struct {
	srv  *gateway.Server
	log  *slog.Logger
	errc chan error

	mu     sync.Mutex
	active map[string]net.Listener
	bound  map[string]string // configured URL -> URL with the actual port
}

func newListenerSet(srv *gateway.Server, log *slog.Logger) *listenerSet {
	return &listenerSet{srv: srv, log: log, errc: make(chan error, 1),
		active: map[string]net.Listener{}, bound: map[string]string{}}
}

// apply makes the listeners match urls: all new ones open or none does.
func (ls *listenerSet) apply(urls []string) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	opened := map[string]net.Listener{}
	for _, raw := range urls {
		if _, ok := ls.active[raw]; ok {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			err = fmt.Errorf("invalid setting listen (--listen) %s: %w", raw, err)
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", u.Host); err == nil {
				opened[raw] = ln
				continue
			}
			err = fmt.Errorf("invalid setting listen (--listen) %s: %w", raw, err)
		}
		for _, ln := range opened {
			ln.Close()
		}
		return err
	}
	for raw, ln := range ls.active {
		if !slices.Contains(urls, raw) {
			delete(ls.active, raw)
			delete(ls.bound, raw)
			ln.Close()
			ls.log.Info("listener closed", "listen", raw)
		}
	}
	for raw, ln := range opened {
		u, _ := url.Parse(raw)
		ls.active[raw] = ln
		ls.bound[raw] = u.Scheme + "://" + ln.Addr().String()
		go ls.serve(raw, u.Scheme, ln)
	}
	return nil
}

func (ls *listenerSet) serve(raw, scheme string, ln net.Listener) {
	var err error
	if scheme == "ldaps" {
		err = ls.srv.ServeTLS(ln)
	} else {
		err = ls.srv.Serve(ln)
	}
	ls.mu.Lock()
	removed := ls.active[raw] != ln
	ls.mu.Unlock()
	if removed || errors.Is(err, gateway.ErrServerClosed) {
		return
	}
	select {
	case ls.errc <- err:
	default:
	}
}

// urls lists the bound listener URLs (actual ports) in configured order.
func (ls *listenerSet) urls(order []string) []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var out []string
	for _, raw := range order {
		if b, ok := ls.bound[raw]; ok {
			out = append(out, b)
		}
	}
	return out
}

func (ls *listenerSet) closeAll() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for raw, ln := range ls.active {
		delete(ls.active, raw)
		ln.Close()
	}
}

// reloadableTLS serves whatever certificate was loaded last, so a reload
// renews it for new handshakes.
type reloadableTLS struct{ cur atomic.Pointer[tls.Config] }

func (r *reloadableTLS) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.cur.Load(), nil
		},
	}
}

// running is what a reload may change in a serving gateway.
type running struct {
	cfg       Config
	listeners *listenerSet
	tls       *reloadableTLS // nil when the gateway started without a certificate
	upstreams *gateway.UpstreamSet
	mirror    *mirror.Mirror // nil when mirroring is off
	log       *slog.Logger
}

// reload applies a new configuration: listeners, the TLS certificate,
// upstreams, the policy and the mapping. Everything that can fail is
// checked before anything changes, so a bad configuration leaves the
// running one as it was.
func (r *running) reload(next Config) error {
	var newTLS *tls.Config
	if r.tls != nil {
		if next.TLS.Cert == "" {
			return errors.New("the TLS certificate cannot be removed by a reload (restart instead)")
		}
		c, err := next.serverTLS()
		if err != nil {
			return err
		}
		newTLS = c
	} else if next.TLS.Cert != "" {
		return errors.New("TLS can be switched on only by a restart")
	}
	ups, err := next.upstreams()
	if err != nil {
		return err
	}
	var policy *mirror.Policy
	if r.mirror != nil {
		if !next.Mirror.enabled() {
			return errors.New("mirroring can be switched off only by a restart")
		}
		mp, err := schema.NewMapping(next.Mirror.Schema)
		if err != nil {
			return fmt.Errorf("invalid setting mirror.%w", err)
		}
		policy = &mirror.Policy{Mapping: mp, AdminDNs: next.Mirror.AdminDNs,
			AdminGroup: next.Mirror.AdminGroup, AxigenBindDN: next.Mirror.AxigenBindDN}
	} else if next.Mirror.enabled() {
		return errors.New("mirroring can be switched on only by a restart")
	}
	if err := r.listeners.apply(next.Listen); err != nil {
		return err
	}
	if newTLS != nil {
		r.tls.cur.Store(newTLS)
	}
	r.upstreams.SetUpstreams(ups)
	if r.mirror != nil {
		r.mirror.SetDirectoryURLs(next.Upstream.URLs)
	}
	if policy != nil {
		if err := r.mirror.SetPolicy(*policy); err != nil {
			return err
		}
	}
	if stale := restartOnly(r.cfg, next); len(stale) > 0 {
		r.log.Warn("these settings change only at the next restart", "settings", strings.Join(stale, ", "))
	}
	r.cfg = next
	return nil
}

// restartOnly names the settings that differ and that a reload cannot
// change.
func restartOnly(old, next Config) []string {
	var out []string
	diff := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, name)
		}
	}
	diff("dataDir", old.DataDir, next.DataDir)
	diff("limits", old.Limits, next.Limits)
	diff("log", old.Log, next.Log)
	diff("confidentialityRequired", old.ConfidentialityRequired, next.ConfidentialityRequired)
	diff("adminListen", old.AdminListen, next.AdminListen)
	diff("cluster", old.Cluster, next.Cluster)
	oldUp, nextUp := old.Upstream, next.Upstream
	oldUp.URLs, nextUp.URLs = nil, nil
	diff("upstream TLS settings", oldUp, nextUp)
	diff("mirror.axigen", old.Mirror.Axigen, next.Mirror.Axigen)
	diff("mirror.serviceDN", old.Mirror.ServiceDN+old.Mirror.ServicePasswordFile, next.Mirror.ServiceDN+next.Mirror.ServicePasswordFile)
	diff("mirror.workers/maxAttempts/retention/auditLog/resyncInterval/groupCommitDelay",
		[]any{old.Mirror.Workers, old.Mirror.MaxAttempts, old.Mirror.Retention, old.Mirror.AuditLog, old.Mirror.ResyncInterval, old.Mirror.GroupCommitDelay},
		[]any{next.Mirror.Workers, next.Mirror.MaxAttempts, next.Mirror.Retention, next.Mirror.AuditLog, next.Mirror.ResyncInterval, next.Mirror.GroupCommitDelay})
	diff("mirror.onAccountDelete/deleteAfter/protectedAccounts/maxRemovalsPerSweep",
		[]any{old.Mirror.OnAccountDelete, old.Mirror.DeleteAfter, old.Mirror.ProtectedAccounts, old.Mirror.MaxRemovalsPerSweep},
		[]any{next.Mirror.OnAccountDelete, next.Mirror.DeleteAfter, next.Mirror.ProtectedAccounts, next.Mirror.MaxRemovalsPerSweep})
	return out
}
