// Package mirror is the gateway's write path for account and group entries
// (docs/architecture.md, "The write path"): it classifies each intercepted write,
// enforces who may change what, journals the change durably before the
// directory sees it, commits or aborts it on the directory's answer, and
// delivers committed changes to Axigen by reading the entry's current state
// and applying it, so a retry or a replay is harmless.
//
// Mirror implements gateway.Interceptor; the relay knows nothing of it.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
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
	Logger  *slog.Logger
	// Audit, when set, gets one record per decision, directory result and
	// delivery attempt of an intercepted write (never a password).
	Audit *slog.Logger
	// OnDelivery, when set, hears about every delivery attempt (metrics).
	OnDelivery func(kind string, err error)
	// WaitReplicated, when set, is called once a write's record is on disk
	// (prepared) and before the directory sees the write, and again before
	// the client hears of its success (then it returns at once, unless the
	// directory generated a password, journaled in a record of its own).
	// It returns when a standby gateway holds the record (synchronous
	// replication): a standby that takes over settles a prepared record as
	// recovery does. Its error is logged and the write goes on: sync
	// replication degrades rather than stopping writes.
	WaitReplicated func(ctx context.Context, seq uint64) error
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

	settling sync.WaitGroup // commits and aborts on their way to the journal

	idMu       sync.Mutex
	identities map[string]cachedIdentity

	adminMu      sync.Mutex
	adminMembers map[string]bool
	adminExpires time.Time

	entries *entryCache
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = slog.New(slog.DiscardHandler)
	}
	m := &Mirror{cfg: cfg, log: cfg.Logger, entries: newEntryCache(cfg.EntryCacheTTL, entryCacheLimit)}
	m.policy.Store(&Policy{Mapping: cfg.Mapping, AdminDNs: cfg.AdminDNs, AdminGroup: cfg.AdminGroup, AxigenBindDN: cfg.AxigenBindDN})
	return m, nil
}

// SetPolicy replaces the mapping and the admin identities for the writes
// and deliveries that start from now on; those under way finish as they began.
func (m *Mirror) SetPolicy(p Policy) error {
	if p.Mapping == nil {
		return errors.New("mirror: policy without a mapping")
	}
	m.policy.Store(&p)
	m.adminMu.Lock()
	m.adminMembers = nil // the admin group may have changed
	m.adminMu.Unlock()
	m.entries.forgetAll() // the attributes that classify may have changed
	return nil
}

func (m *Mirror) pol() *Policy { return m.policy.Load() }

// SetDirectoryURLs points the gateway's own directory connections at new
// upstreams (a configuration reload).
func (m *Mirror) SetDirectoryURLs(urls []string) { m.cfg.Directory.SetURLs(urls) }

func (m *Mirror) mapping() *schema.Mapping { return m.pol().Mapping }

// refusal is the answer to a write the policy does not allow.
func refusal(rule, dn, actor string) *gateway.Result {
	who := actor
	if who == "" {
		who = "an anonymous session"
	}
	return &gateway.Result{
		Code:       ldap.LDAPResultInsufficientAccessRights,
		Diagnostic: fmt.Sprintf("ldapgate: policy rule %q refuses this change of %s by %s", rule, dn, who),
	}
}

// Intercept implements gateway.Interceptor.
func (m *Mirror) Intercept(ctx context.Context, s gateway.SessionInfo, req *gateway.WriteRequest) (gateway.Completion, *gateway.Result) {
	if m.cfg.Journal == nil {
		return nil, &gateway.Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: mirroring is not set up (no journal)"}
	}
	// AD lets users bind as user@domain or DOMAIN\user: policy needs the DN.
	bound, err := m.identity(ctx, s.BoundDN)
	if err != nil {
		m.log.Warn("cannot resolve the bound identity", "err", err)
		return nil, &gateway.Result{Code: ldap.LDAPResultUnavailable,
			Diagnostic: "ldapgate: cannot resolve the bound identity to check the change: the directory is unreachable for the gateway"}
	}
	s.BoundDN = bound
	target := req.DN
	if req.Op == gateway.OpPasswordModify && target == "" {
		target = s.BoundDN
	}
	newDN := ""
	if req.Op == gateway.OpModifyDN {
		newDN = renamedDN(req)
	}
	mp := m.mapping()
	inScope := func(dn string) bool { return dn != "" && (mp.UnderAccountBase(dn) || mp.UnderGroupBase(dn)) }
	if !inScope(target) && !inScope(newDN) {
		return nil, nil
	}
	// A write that may change what classifies its entry drops the entry
	// from the cache now and again once the directory has it, whoever makes
	// it and whether or not it is mirrored.
	var forget gateway.Completion
	if dns := m.identityChange(req, target, newDN); dns != nil {
		m.entries.forget(dns...)
		forget = func(_ context.Context, res gateway.Result) {
			if res.Unanswered {
				// The directory may still apply it: keep those entries out
				// of the cache as long as one read could stay in it.
				m.entries.hold(time.Now(), dns...)
				return
			}
			m.entries.forget(dns...)
		}
	}
	if m.pol().AxigenBindDN != "" && s.BoundDN != "" && schema.EqualDN(s.BoundDN, m.pol().AxigenBindDN) {
		return forget, nil // Axigen's own writes: never mirrored back
	}

	var cur *schema.Entry
	var kind schema.Kind
	if req.Op == gateway.OpAdd {
		kind = mp.Classify(target, attributeValues(mp, req.Attributes, "objectClass"))
	} else {
		var err error
		cur, err = m.readEntry(ctx, target)
		if err != nil {
			m.log.Warn("cannot read the entry a write targets", "dn", target, "err", err)
			return nil, &gateway.Result{Code: ldap.LDAPResultUnavailable,
				Diagnostic: "ldapgate: cannot read the target entry to check the change: the directory is unreachable for the gateway"}
		}
		if cur == nil {
			return forget, nil // the directory will answer noSuchObject
		}
		kind = mp.ClassifyEntry(*cur)
		if kind == schema.KindNone && newDN != "" {
			kind = mp.Classify(newDN, cur.ObjectClasses())
		}
	}
	if kind == schema.KindNone {
		return forget, nil
	}

	admin, err := m.isAdmin(ctx, s.BoundDN)
	if err != nil {
		m.log.Warn("cannot check admin group membership", "err", err)
		return nil, &gateway.Result{Code: ldap.LDAPResultUnavailable,
			Diagnostic: "ldapgate: cannot check the admin group: the directory is unreachable for the gateway"}
	}
	owner := s.BoundDN != "" && schema.EqualDN(s.BoundDN, target)
	d := m.decide(kind, req, admin, owner)
	audit := m.cfg.Audit.With("actor", s.BoundDN, "client", s.RemoteAddr, "op", req.Op.String(),
		"kind", kind.String(), "dn", target)
	if newDN != "" {
		audit = audit.With("newDN", newDN)
	}
	if d.refuse != "" {
		audit.Info("decision", "decision", "refused", "rule", d.refuse)
		return nil, refusal(d.refuse, target, s.BoundDN)
	}
	if !d.mirror {
		audit.Info("decision", "decision", "allowed", "mirrored", false)
		return forget, nil
	}

	// A deleted account leaves its groups inside the directory (refint)
	// with no write the gateway sees: note them, to re-apply at delivery.
	var groups []string
	if req.Op == gateway.OpDelete && kind == schema.KindAccount {
		if groups, err = m.groupsOf(ctx, target); err != nil {
			m.log.Warn("cannot list the groups of an account being deleted", "dn", target, "err", err)
			return nil, &gateway.Result{Code: ldap.LDAPResultUnavailable,
				Diagnostic: "ldapgate: cannot read the groups of the account: the directory is unreachable for the gateway"}
		}
	}
	rec, err := m.record(s, req, kind, target, newDN, cur, groups)
	if err != nil {
		return nil, &gateway.Result{Code: ldap.LDAPResultOther, Diagnostic: "ldapgate: " + err.Error()}
	}
	seq, err := m.cfg.Journal.Prepare(ctx, rec)
	if err != nil {
		m.log.Error("cannot journal a write; refusing it", "dn", target, "err", err)
		return nil, &gateway.Result{Code: ldap.LDAPResultUnavailable,
			Diagnostic: "ldapgate: the change cannot be journaled, so it is not made: " + err.Error()}
	}
	rec.Seq = seq
	if m.cfg.WaitReplicated != nil {
		// The standby holds the record before the directory sees the write:
		// a primary that dies between the directory's answer and the
		// client's can leave nothing (a new password above all) that only
		// the directory knows.
		if err := m.cfg.WaitReplicated(ctx, seq); err != nil {
			m.log.Warn("write relayed before the standby confirmed holding its record", "seq", seq, "err", err)
		}
	}
	audit.Info("decision", "decision", "allowed", "mirrored", true, "seq", seq, "attributes", changedAttributes(rec))
	return func(ctx context.Context, res gateway.Result) {
		m.cfg.Audit.Info("directory result", "seq", seq, "result", res.Code, "unanswered", res.Unanswered)
		if forget != nil {
			forget(ctx, res)
		}
		m.complete(ctx, rec, req, res)
	}, nil
}

// complete settles a journaled write on the directory's answer. Commit and
// abort need not reach the disk before the client hears the answer: a
// record still prepared at the next start is settled as recovery does
// (delivered, since delivery reads the directory's state; a password only
// if the directory accepts it), so they run in the background and the
// client waits for one fsync (Prepare's), not two.
func (m *Mirror) complete(ctx context.Context, rec *store.Record, req *gateway.WriteRequest, res gateway.Result) {
	// The journal must settle even if the client has gone.
	ctx = context.WithoutCancel(ctx)
	j := m.cfg.Journal
	held := rec.Seq // the record the standby must hold before the client hears success
	background := func(what string, fn func() error) {
		m.settling.Add(1)
		go func() {
			defer m.settling.Done()
			if err := fn(); err != nil {
				m.log.Error("cannot "+what+" a journal record; it will be settled at the next start", "seq", rec.Seq, "err", err)
			}
		}()
	}
	switch {
	case res.Unanswered:
		// The directory may or may not have made the change.
		m.settling.Add(1)
		go func() { defer m.settling.Done(); m.resolve(ctx, rec) }()
	case res.Code != ldap.LDAPResultSuccess:
		background("abort", func() error { return j.Abort(ctx, rec.Seq) })
	case req.Op == gateway.OpPasswordModify && len(req.NewPassword) == 0 && len(res.GeneratedPassword) > 0:
		// The directory chose the password: it exists nowhere else, so it is
		// journaled in a record of its own before the client hears of it.
		gen := *rec
		gen.Seq, gen.Secret, gen.Note = 0, res.GeneratedPassword, "password generated by the directory"
		seq, err := j.Prepare(ctx, &gen)
		if err != nil {
			m.log.Error("cannot journal a generated password", "dn", rec.DN, "err", err)
		} else {
			held = seq
			background("commit", func() error { return j.Commit(ctx, seq, "") })
		}
		background("abort", func() error { return j.Abort(ctx, rec.Seq) })
	case req.Op == gateway.OpAdd:
		// The new entry's stable key exists only now; the journal keeps its
		// history under it.
		background("commit", func() error { return j.Commit(ctx, rec.Seq, m.keyOf(ctx, rec.DN)) })
	default:
		background("commit", func() error { return j.Commit(ctx, rec.Seq, "") })
	}
	if m.cfg.WaitReplicated != nil && !res.Unanswered && res.Code == ldap.LDAPResultSuccess {
		if err := m.cfg.WaitReplicated(ctx, held); err != nil {
			m.log.Warn("write acknowledged before the standby confirmed holding its record", "seq", held, "err", err)
		}
	}
}

// identity turns the name a session bound with into its entry's DN. AD
// accepts a userPrincipalName (user@domain) and a down-level name
// (DOMAIN\user); anything else is taken as the DN it is. Answers are
// remembered for a few minutes.
func (m *Mirror) identity(ctx context.Context, name string) (string, error) {
	// Filters to try in turn: an account without an explicit
	// userPrincipalName still binds as sAMAccountName@domain.
	var filters []string
	switch {
	case name == "" || strings.Contains(name, "="):
		return name, nil
	case strings.Contains(name, `\`):
		filters = []string{"(sAMAccountName=" + ldap.EscapeFilter(name[strings.LastIndex(name, `\`)+1:]) + ")"}
	case strings.Contains(name, "@"):
		filters = []string{"(userPrincipalName=" + ldap.EscapeFilter(name) + ")",
			"(sAMAccountName=" + ldap.EscapeFilter(name[:strings.LastIndex(name, "@")]) + ")"}
	default:
		return name, nil
	}
	m.idMu.Lock()
	c, ok := m.identities[strings.ToLower(name)]
	m.idMu.Unlock()
	if ok && time.Now().Before(c.expires) {
		return c.dn, nil
	}
	var e *schema.Entry
	for _, f := range filters {
		found, err := m.cfg.Directory.Find(ctx, namingContexts(m.mapping()), f, []string{"1.1"})
		if err != nil {
			return "", err
		}
		if found != nil {
			e = found
			break
		}
	}
	if e == nil {
		return name, nil // no such entry: compared as given, it matches no DN
	}
	m.idMu.Lock()
	if m.identities == nil || len(m.identities) > 10000 {
		m.identities = map[string]cachedIdentity{}
	}
	m.identities[strings.ToLower(name)] = cachedIdentity{dn: e.DN, expires: time.Now().Add(5 * time.Minute)}
	m.idMu.Unlock()
	return e.DN, nil
}

type cachedIdentity struct {
	dn      string
	expires time.Time
}

// namingContexts are the domain roots above the account bases (the DC=
// part), where users and administrators alike live.
func namingContexts(mp *schema.Mapping) []string {
	var out []string
	for _, base := range mp.Config().AccountBase {
		dn, err := ldap.ParseDN(base)
		if err != nil {
			continue
		}
		i := 0
		for i < len(dn.RDNs) && !(len(dn.RDNs[i].Attributes) == 1 && strings.EqualFold(dn.RDNs[i].Attributes[0].Type, "dc")) {
			i++
		}
		root := (&ldap.DN{RDNs: dn.RDNs[i:]}).String()
		if i == len(dn.RDNs) {
			root = base
		}
		if !slices.Contains(out, root) {
			out = append(out, root)
		}
	}
	return out
}

// readEntry reads what classifies a write's target (nil: no such entry),
// from the cache when a write read it lately.
func (m *Mirror) readEntry(ctx context.Context, dn string) (*schema.Entry, error) {
	norm := m.mapping().CanonicalDN(dn)
	e, gen := m.entries.get(norm, time.Now())
	if e != nil {
		return e, nil
	}
	e, err := m.cfg.Directory.Read(ctx, dn, m.readAttributes())
	if err != nil {
		return nil, err
	}
	m.entries.put(norm, e, gen, time.Now())
	return e, nil
}

// identityChange returns the canonical DNs whose cached entries a write
// makes stale, or nil: those it deletes, renames or adds, and those whose
// object classes, key or name attributes it modifies.
func (m *Mirror) identityChange(req *gateway.WriteRequest, target, newDN string) []string {
	mp := m.mapping()
	canonical := func(dn string) string {
		if dn == "" {
			return ""
		}
		return mp.CanonicalDN(dn)
	}
	switch req.Op {
	case gateway.OpAdd, gateway.OpDelete, gateway.OpModifyDN:
		return []string{canonical(target), canonical(newDN)}
	case gateway.OpModify:
		read := m.readAttributes()
		for _, c := range req.Changes {
			for _, a := range read {
				if a != "" && mp.SameAttribute(c.Type, a) {
					return []string{canonical(target)}
				}
			}
		}
	}
	return nil
}

// keyOf reads an entry's stable key, or "" when it cannot (delivery then
// finds the entry by its DN).
func (m *Mirror) keyOf(ctx context.Context, dn string) string {
	e, err := m.cfg.Directory.Read(ctx, dn, []string{m.mapping().KeyAttribute()})
	if err != nil || e == nil {
		return ""
	}
	key, _ := m.entryKey(*e)
	return key
}

// IsAdmin reports whether dn is a configured admin or a member of the
// admin group (cached briefly).
func (m *Mirror) IsAdmin(ctx context.Context, dn string) (bool, error) { return m.isAdmin(ctx, dn) }

// Close waits until every write the Mirror saw is settled in the journal.
// Call it after the gateway stopped accepting writes, before the journal
// closes.
func (m *Mirror) Close() { m.settling.Wait() }

// resolve settles a record whose outcome is unknown (docs/architecture.md): deliver it
// anyway, since delivery reads the directory's state; but a password is
// kept only if the directory accepts it.
func (m *Mirror) resolve(ctx context.Context, rec *store.Record) {
	j := m.cfg.Journal
	if len(rec.Secret) > 0 {
		dn := rec.DN
		if rec.NewDN != "" {
			dn = rec.NewDN
		}
		ok, err := m.cfg.Directory.CheckPassword(ctx, dn, string(rec.Secret))
		if err != nil {
			m.log.Warn("cannot confirm the password of an unsettled record; it stays prepared", "seq", rec.Seq, "err", err)
			return
		}
		if !ok {
			if err := j.Abort(ctx, rec.Seq); err != nil {
				m.log.Error("cannot drop an unconfirmed password record", "seq", rec.Seq, "err", err)
			}
			return
		}
	}
	if err := j.Commit(ctx, rec.Seq, ""); err != nil {
		m.log.Error("cannot commit an unsettled record", "seq", rec.Seq, "err", err)
	}
}

// CheckService reads the account base with the service identity, proving
// the directory is reachable and the service bind works.
func (m *Mirror) CheckService(ctx context.Context) error {
	for _, base := range m.mapping().Config().AccountBase {
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

// Recover settles the records left prepared by a crash.
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

// Run delivers committed records until ctx ends.
func (m *Mirror) Run(ctx context.Context) error {
	if m.cfg.Journal == nil {
		return errors.New("mirror: no journal to deliver from")
	}
	return m.cfg.Journal.Run(ctx, m.cfg.Workers, deliverer{m})
}

// deliverer is the journal's view of the mirror: it delivers a record and
// says which later records a delivery takes along.
type deliverer struct{ m *Mirror }

func (d deliverer) Covers(rec *store.Record) bool { return d.m.covered(rec) }

func (d deliverer) Deliver(ctx context.Context, rec *store.Record) error {
	m := d.m
	start := time.Now()
	err := m.deliver(ctx, rec)
	if m.cfg.OnDelivery != nil {
		m.cfg.OnDelivery(string(rec.Kind), err)
	}
	if err != nil {
		m.cfg.Audit.Info("delivery", "seq", rec.Seq, "outcome", "failed", "attempt", rec.Attempts+1,
			"retryable", !store.IsPermanent(err), "error", err.Error())
		m.log.Warn("delivery to Axigen failed", "seq", rec.Seq, "dn", rec.DN, "attempt", rec.Attempts+1, "err", err)
	} else {
		m.cfg.Audit.Info("delivery", "seq", rec.Seq, "outcome", "delivered", "attempt", rec.Attempts+1,
			"ms", time.Since(start).Milliseconds())
	}
	return err
}

// covered reports whether delivering an earlier record of the same entry
// delivers this modify too (store.Coverer): delivery applies the
// entry's state, except for what a change does by itself — disabling the
// account scrambles its password, a new address refreshes its groups.
func (m *Mirror) covered(rec *store.Record) bool {
	return rec.Op == store.OpModify && len(rec.Secret) == 0 && !m.touchesDisabled(rec) && !m.touchesAddress(rec)
}

// changedAttributes lists the attributes a record changes, for the audit log.
func changedAttributes(rec *store.Record) []string {
	out := make([]string, 0, len(rec.Changes))
	for _, c := range rec.Changes {
		out = append(out, c.Op+":"+c.Attr)
	}
	return out
}

// readAttributes is what the gateway reads of an entry before a write.
func (m *Mirror) readAttributes() []string {
	mp := m.mapping()
	attrs := []string{"objectClass", mp.KeyAttribute(), mp.NameAttribute(), mp.GroupNameAttribute(), mp.MemberMailAttribute()}
	return dedupFold(attrs)
}

func dedupFold(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		k := strings.ToLower(s)
		if s == "" || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, s)
	}
	return out
}

// isAdmin reports whether dn is a configured admin or in the admin group.
func (m *Mirror) isAdmin(ctx context.Context, dn string) (bool, error) {
	if dn == "" {
		return false, nil
	}
	for _, a := range m.pol().AdminDNs {
		if schema.EqualDN(a, dn) {
			return true, nil
		}
	}
	if m.pol().AdminGroup == "" {
		return false, nil
	}
	members, err := m.adminGroupMembers(ctx)
	if err != nil {
		return false, err
	}
	return members[schema.CanonicalDN(dn)], nil
}

func (m *Mirror) adminGroupMembers(ctx context.Context) (map[string]bool, error) {
	m.adminMu.Lock()
	defer m.adminMu.Unlock()
	if m.adminMembers != nil && time.Now().Before(m.adminExpires) {
		return m.adminMembers, nil
	}
	e, err := m.cfg.Directory.Read(ctx, m.pol().AdminGroup, []string{"member", "uniqueMember"})
	if err != nil {
		return nil, err
	}
	members := map[string]bool{}
	if e != nil {
		for _, attr := range []string{"member", "uniqueMember"} {
			for _, v := range e.Get(attr) {
				members[schema.CanonicalDN(v)] = true
			}
		}
	}
	m.adminMembers, m.adminExpires = members, time.Now().Add(m.cfg.AdminCacheTTL)
	return members, nil
}

// renamedDN is the DN a modify DN request gives its entry.
func renamedDN(req *gateway.WriteRequest) string {
	parent := req.NewSuperior
	if parent == "" {
		parsed, err := ldap.ParseDN(req.DN)
		if err != nil || len(parsed.RDNs) == 0 {
			return ""
		}
		parent = (&ldap.DN{RDNs: parsed.RDNs[1:]}).String()
	}
	if parent == "" {
		return req.NewRDN
	}
	return req.NewRDN + "," + parent
}

func attributeValues(mp *schema.Mapping, attrs []gateway.Attribute, name string) []string {
	var out []string
	for _, a := range attrs {
		if mp.SameAttribute(a.Type, name) {
			for _, v := range a.Values {
				out = append(out, string(v))
			}
		}
	}
	return out
}
