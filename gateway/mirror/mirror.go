// Package mirror is the gateway's write path for account and group entries
// (docs/architecture.md, "The write path"). Mirror.Intercept (pipeline.go)
// takes each intercepted write through named steps, in order: identify the
// writer, classify the entry, decide by the policy, prepare a durable
// journal record, and once the directory has answered, settle the record;
// Mirror.Run delivers settled records to Axigen by reading the entry's
// current state and applying it, so a retry or a replay is harmless.
//
// Mirror implements gateway.Interceptor; the relay knows nothing of it.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// Config wires a Mirror.
type Config struct {
	// Journal is needed to intercept and deliver; a Mirror without one can
	// only Resync.
	Journal   *store.Journal
	Mapping   *schema.Mapping
	Axigen    *axigen.Client
	Directory *Directory
	// Domain is the Axigen domain accounts and groups live in.
	Domain string
	// AdminDNs may make every change; so may members of AdminGroup.
	AdminDNs   []string
	AdminGroup string
	// AdminCacheTTL is how long the admin group's members are remembered.
	AdminCacheTTL time.Duration
	// EntryCacheTTL is how long what a write's classification read of its
	// entry (object classes, key, name) is reused for the next writes to
	// that entry (10s when 0; negative: never reused). Writes through the
	// gateway that change those values drop it at once.
	EntryCacheTTL time.Duration
	// AxigenBindDN is the identity Axigen's own connector writes with: its
	// writes are relayed but never mirrored back.
	AxigenBindDN string
	// Workers deliver different entries in parallel.
	Workers int
	// Batch is the most records of different entries one worker delivers
	// together, their Axigen commands sharing one session's round trips
	// (axigen.Client.ApplyAccounts); below 2, one record at a time.
	Batch  int
	Logger *slog.Logger
	// Audit, when set, gets one record per decision, directory result and
	// delivery attempt of an intercepted write (never a password).
	Audit *slog.Logger
	// Observer, when set, hears about every delivery attempt (metrics).
	Observer DeliveryObserver
	// Deletes says what a directory delete does to an account (accounts.go).
	Deletes Deletes
}

// DeliveryObserver hears about every delivery attempt, for metrics. It runs
// on a delivery worker: it must be quick.
type DeliveryObserver interface {
	// DeliveryDone reports one attempt of a record of kind ("account",
	// "group"); err is nil when it was delivered.
	DeliveryDone(kind string, err error)
}

// Policy is the part of a Mirror's configuration that SetPolicy replaces
// while it runs (a configuration reload): the mapping and who is an admin.
type Policy struct {
	Mapping      *schema.Mapping
	AdminDNs     []string
	AdminGroup   string
	AxigenBindDN string
}

// Mirror intercepts writes and delivers them to Axigen.
type Mirror struct {
	cfg    Config
	log    *slog.Logger
	policy atomic.Pointer[Policy]
	admins atomic.Pointer[Admins]

	settling sync.WaitGroup // commits and aborts on their way to the journal
	closing  atomic.Bool    // Close began: settling stops trying again
	orphans  orphanWatch    // records seen prepared (SettleOrphans)

	idMu       sync.Mutex
	identities map[string]cachedIdentity
	domains    adDomainCache // AD's domain names, for bind names (adnames.go)

	entries *entryCache
	images  *images
	lists   atomic.Pointer[attrLists] // of the mapping in force
	claims  nameClaims                // names given by writes on their way (values.go)
	onWay   onWay                     // DNs of writes on their way, for modify DNs (onway.go)
}

// entryCacheLimit bounds the entries remembered for classification.
const entryCacheLimit = 100_000

// New checks cfg and returns a Mirror.
func New(cfg Config) (*Mirror, error) {
	switch {
	case cfg.Mapping == nil:
		return nil, errors.New("mirror: no attribute mapping")
	case cfg.Axigen == nil:
		return nil, errors.New("mirror: no Axigen client")
	case cfg.Directory == nil:
		return nil, errors.New("mirror: no directory client")
	case cfg.Domain == "":
		return nil, errors.New("mirror: no Axigen domain")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.AdminCacheTTL <= 0 {
		cfg.AdminCacheTTL = 30 * time.Second
	}
	if cfg.EntryCacheTTL == 0 {
		cfg.EntryCacheTTL = 10 * time.Second
	}
	if cfg.Journal != nil && cfg.Journal.Replicated() {
		// A cluster's gateways write the same entries: an entry cached by
		// one is stale once another renames or replaces it, and a write
		// judged by it was journaled under the wrong entry (its key), or,
		// asserted (entryAssertion), refused busy to a client whose write
		// came after the rename was answered. Each write reads its target.
		cfg.EntryCacheTTL = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = slog.New(slog.DiscardHandler)
	}
	m := &Mirror{cfg: cfg, log: cfg.Logger, entries: newEntryCache(cfg.EntryCacheTTL, entryCacheLimit), images: newImages()}
	m.policy.Store(&Policy{Mapping: cfg.Mapping, AdminDNs: cfg.AdminDNs, AdminGroup: cfg.AdminGroup, AxigenBindDN: cfg.AxigenBindDN})
	m.admins.Store(NewAdmins(cfg.AdminDNs, cfg.AdminGroup, cfg.Directory, cfg.AdminCacheTTL))
	return m, nil
}

// SetPolicy replaces the mapping and the admin identities for the writes
// and deliveries that start from now on; those under way finish as they began.
func (m *Mirror) SetPolicy(p Policy) error {
	if p.Mapping == nil {
		return errors.New("mirror: policy without a mapping")
	}
	m.policy.Store(&p)
	// A new Admins: the admin group may have changed, its members are read again.
	m.admins.Store(NewAdmins(p.AdminDNs, p.AdminGroup, m.cfg.Directory, m.cfg.AdminCacheTTL))
	m.entries.forgetAll() // the attributes that classify may have changed
	m.images.reset()      // and those delivery reads
	return nil
}

func (m *Mirror) pol() *Policy { return m.policy.Load() }

// SetDirectoryURLs points the gateway's own directory connections at new
// upstreams (a configuration reload).
func (m *Mirror) SetDirectoryURLs(urls []string) { m.cfg.Directory.SetURLs(urls) }

func (m *Mirror) mapping() *schema.Mapping { return m.pol().Mapping }

// IsAdmin reports whether dn is a configured admin or a member of the
// admin group (cached briefly), by the policy in force.
func (m *Mirror) IsAdmin(ctx context.Context, dn string) (bool, error) {
	return m.admins.Load().IsAdmin(ctx, dn)
}

// IsAdminSession reports whether a session bound with name is an admin,
// knowing the name as the write path does (identity): an AD logon name
// (user@domain, DOMAIN\user) or a DN spelled otherwise than the admin
// list means the entry the directory resolves it to, so that the subtree
// and the policy never disagree on who an admin is. A name that resolves
// to no entry is no admin.
func (m *Mirror) IsAdminSession(ctx context.Context, name string) (bool, error) {
	dn, sure, err := m.identity(ctx, name)
	if err != nil || !sure || dn == "" {
		return false, err
	}
	return m.IsAdmin(ctx, dn)
}

// Close waits until every write the Mirror saw is settled in the journal.
// Call it after the gateway stopped accepting writes, before the journal
// closes.
// A commit or abort still being tried again then (a cluster without a
// quorum) gives up: its record is settled as after a crash.
func (m *Mirror) Close() {
	m.closing.Store(true)
	m.settling.Wait()
}

// CheckService reads the account base with the service identity, proving
// the directory is reachable and the service bind works.
func (m *Mirror) CheckService(ctx context.Context) error {
	for _, base := range m.mapping().AccountBases() {
		e, err := m.cfg.Directory.Read(ctx, base, []string{"1.1"})
		if err != nil {
			return err
		}
		if e == nil {
			return fmt.Errorf("the account base %s does not exist (or the service DN cannot see it)", base)
		}
	}
	return nil
}

// Recover settles the records left prepared by a crash, as settle does a
// write the directory never answered.
func (m *Mirror) Recover(ctx context.Context) error {
	if m.cfg.Journal == nil {
		return errors.New("mirror: no journal to recover")
	}
	recs, err := m.cfg.Journal.Prepared()
	if err != nil {
		return fmt.Errorf("read prepared records: %w", err)
	}
	for _, rec := range recs {
		m.log.Info("settling a record prepared before the last stop", "seq", rec.Seq, "dn", rec.DN, "op", rec.Op)
		m.resolve(ctx, rec)
	}
	return nil
}
