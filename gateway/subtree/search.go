package subtree

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
	"github.com/jimlambrt/gldap"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

// routes registers every operation gldap can route: the token bind and
// searches. A session relays nothing else here (Conn.Answer takes the
// rest); the default route answers strangers on the loopback port.
func (s *Server) routes() (*gldap.Mux, error) {
	mux, err := gldap.NewMux()
	if err != nil {
		return nil, err
	}
	if err := mux.Bind(s.guard(s.bind)); err != nil {
		return nil, err
	}
	if err := mux.Search(s.guard(s.search)); err != nil {
		return nil, err
	}
	err = mux.DefaultRoute(s.guard(func(w *gldap.ResponseWriter, r *gldap.Request) {
		_ = w.Write(r.NewResponse(gldap.WithResponseCode(gldap.ResultUnwillingToPerform),
			gldap.WithMatchedDN(""), gldap.WithDiagnosticMessage("ldapgate: the subtree is read-only")))
	}))
	return mux, err
}

// guard keeps a panic in a handler from taking the gateway down: gldap
// runs each request in a goroutine of its own without a recover.
func (s *Server) guard(h gldap.HandlerFunc) gldap.HandlerFunc {
	return func(w *gldap.ResponseWriter, r *gldap.Request) {
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("subtree handler panicked", "panic", p)
				if _, err := r.GetSearchMessage(); err == nil {
					done := r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultOther))
					done.SetDiagnosticMessage("ldapgate: internal error")
					_ = w.Write(done)
				}
			}
		}()
		h(w, r)
	}
}

func (s *Server) bind(w *gldap.ResponseWriter, r *gldap.Request) {
	m, err := r.GetSimpleBindMessage()
	code := gldap.ResultInvalidCredentials
	if err == nil && strings.EqualFold(m.UserName, internalBindDN) && s.useToken(string(m.Password)) {
		s.mu.Lock()
		s.authed[r.ConnectionID()] = true
		s.byToken[string(m.Password)] = r.ConnectionID()
		s.mu.Unlock()
		code = gldap.ResultSuccess
	}
	resp := r.NewBindResponse(gldap.WithResponseCode(code))
	if code == gldap.ResultSuccess {
		resp.SetDiagnosticMessage(s.proof(string(m.Password))) // tells the gateway it reached this server
	}
	_ = w.Write(resp)
}

// searchError is a result other than success, with its matched DN.
type searchError struct {
	code      int
	matchedDN string
	msg       string
}

func (e *searchError) Error() string { return e.msg }

func (s *Server) search(w *gldap.ResponseWriter, r *gldap.Request) {
	finish := func(code int, matched, msg string, controls ...gldap.Control) {
		done := r.NewSearchDoneResponse(gldap.WithResponseCode(code))
		done.SetMatchedDN(matched)
		done.SetDiagnosticMessage(msg)
		if len(controls) > 0 {
			done.SetControls(controls...)
		}
		_ = w.Write(done)
	}
	m, err := r.GetSearchMessage()
	if err != nil {
		finish(gldap.ResultProtocolError, "", "ldapgate: "+err.Error())
		return
	}
	if !s.isAuthed(r.ConnectionID()) {
		finish(gldap.ResultInsufficientAccessRights, "", "ldapgate: not authorised")
		return
	}
	var paging *gldap.ControlPaging
	for _, c := range m.Controls {
		switch c := c.(type) {
		case *gldap.ControlPaging:
			paging = c
		case *gldap.ControlManageDsaIT:
		case *gldap.ControlString:
			if c.Criticality {
				finish(gldap.ResultUnavailableCriticalExtension, "",
					fmt.Sprintf("ldapgate: control %s is not supported by the gateway's subtree", c.ControlType))
				return
			}
		}
	}
	filter, err := compileFilter(m.Filter)
	if err != nil {
		finish(gldap.ResultProtocolError, "", "ldapgate: "+err.Error())
		return
	}
	sel := newAttrSelection(m.Attributes)
	send := func(e *entry) bool {
		resp := r.NewSearchResponseEntry(e.dn)
		for _, a := range e.attrs {
			if !sel.wants(a.name) {
				continue
			}
			if m.TypesOnly {
				resp.AddAttribute(a.name, nil)
			} else {
				resp.AddAttribute(a.name, a.values)
			}
		}
		return w.Write(resp) == nil
	}
	stop, forget := s.startSearch(searchKey{conn: r.ConnectionID(), msg: m.GetID()})
	defer forget()
	q := query{scope: int(m.Scope), filter: filter, sizeLimit: m.SizeLimit, paging: paging, stop: stop}
	q.deadline, q.timeLimitMsg = s.deadline(time.Now(), m.TimeLimit)
	var res result
	if walksChangelog(m.BaseDN, q.scope) {
		res = s.walkChangelog(q, send)
	} else {
		entries, err := s.candidates(m.BaseDN, q.scope, filter)
		if err != nil {
			var se *searchError
			if errors.As(err, &se) {
				finish(se.code, se.matchedDN, se.msg)
			} else {
				s.log.Warn("subtree search failed", "base", m.BaseDN, "err", err)
				finish(gldap.ResultOther, "", "ldapgate: "+err.Error())
			}
			return
		}
		res = q.run(sliceSource(entries), send)
	}
	if res.err != nil {
		s.log.Warn("subtree search failed", "base", m.BaseDN, "err", res.err)
		finish(gldap.ResultOther, "", "ldapgate: "+res.err.Error())
		return
	}
	if res.gone {
		return // the connection is gone
	}
	if paging != nil {
		finish(res.code, "", res.msg, &gldap.ControlPaging{Cookie: res.cookie})
		return
	}
	finish(res.code, "", res.msg)
}

// deadline is when a search that starts at now stops: at the client's
// time limit (seconds; 0 asks for none) or at the server's cap, whichever
// comes first, with the diagnostic that says which.
func (s *Server) deadline(now time.Time, clientSeconds int64) (time.Time, string) {
	var at time.Time
	msg := ""
	if clientSeconds > 0 {
		// RFC 4511 bounds the time limit by maxInt (2^31-1 s); a larger
		// one would overflow a Duration and end the search at once.
		at = now.Add(time.Duration(min(clientSeconds, math.MaxInt32)) * time.Second)
	}
	if limit := s.cfg.SearchTimeLimit; limit > 0 && (at.IsZero() || now.Add(limit).Before(at)) {
		at = now.Add(limit)
		msg = fmt.Sprintf("ldapgate: the search ran past the gateway's time limit of %s for its own subtree; "+
			"ask for pages (paged results) or bound it by changeNumber", limit)
	}
	return at, msg
}

// query is a search's conditions: what it matches and where it stops.
type query struct {
	scope     int
	filter    *ber.Packet
	sizeLimit int64
	deadline  time.Time // zero: no time limit
	// timeLimitMsg is the diagnostic of a search stopped at deadline.
	timeLimitMsg string
	paging       *gldap.ControlPaging
	stop         *atomic.Bool // set when the client abandons the search
}

// result is how a search ended.
type result struct {
	code   int
	msg    string
	cookie []byte // the paged results cookie of the next page; nil at the end
	err    error  // the journal could not be read
	gone   bool   // the client's connection failed
}

// source yields a search's candidate entries in order, starting at a
// cursor position (0: from the start). next returns the entry and its
// position, or ok false at the end; the position after an entry is
// pos+1.
type source func(from uint64) (next func() (e *entry, pos uint64, ok bool, err error))

// sliceSource serves a list already built (the monitor's few entries, one
// change, the changelog's root).
func sliceSource(list []*entry) source {
	return func(from uint64) func() (*entry, uint64, bool, error) {
		i := from
		return func() (*entry, uint64, bool, error) {
			if i >= uint64(len(list)) {
				return nil, 0, false, nil
			}
			i++
			return list[i-1], i - 1, true, nil
		}
	}
}

// run sends the entries of src that match, one at a time, up to the size
// limit, the time limit and the page. The paged results cookie is the
// position to go on from and the count sent so far (for the size limit),
// so a page costs what it sends, whatever came before.
func (q query) run(src source, send func(*entry) bool) result {
	var from, sent uint64
	if q.paging != nil {
		if len(q.paging.Cookie) > 0 {
			var ok bool
			if from, sent, ok = parseCookie(q.paging.Cookie); !ok {
				return result{code: gldap.ResultProtocolError, msg: "ldapgate: invalid paged results cookie"}
			}
		}
		if q.paging.PagingSize == 0 { // the client abandons the paged search
			return result{code: gldap.ResultSuccess}
		}
	}
	next := src(from)
	page := uint32(0)
	for {
		if q.stop != nil && q.stop.Load() {
			return result{gone: true} // abandoned: nothing more is sent
		}
		if !q.deadline.IsZero() && time.Now().After(q.deadline) {
			return result{code: gldap.ResultTimeLimitExceeded, msg: q.timeLimitMsg}
		}
		e, pos, ok, err := next()
		if err != nil {
			return result{err: err}
		}
		if !ok {
			return result{code: gldap.ResultSuccess}
		}
		if !matches(q.filter, e) {
			continue
		}
		if q.sizeLimit > 0 && int64(sent) >= q.sizeLimit {
			return result{code: gldap.ResultSizeLimitExceeded}
		}
		if q.paging != nil && page == q.paging.PagingSize {
			return result{code: gldap.ResultSuccess, cookie: formatCookie(pos, sent)}
		}
		if !send(e) {
			return result{gone: true}
		}
		sent++
		page++
	}
}

func formatCookie(from, sent uint64) []byte {
	return []byte(strconv.FormatUint(from, 10) + ":" + strconv.FormatUint(sent, 10))
}

func parseCookie(c []byte) (from, sent uint64, ok bool) {
	a, b, found := strings.Cut(string(c), ":")
	if !found {
		return 0, 0, false
	}
	from, err1 := strconv.ParseUint(a, 10, 64)
	sent, err2 := strconv.ParseUint(b, 10, 64)
	return from, sent, err1 == nil && err2 == nil
}

// walksChangelog reports whether a search walks the journal: one based at
// cn=changelog that reaches below it.
func walksChangelog(base string, scope int) bool {
	if scope == int(gldap.BaseObject) {
		return false
	}
	dn, err := ldap.ParseDN(base)
	if err != nil || len(dn.RDNs) != 1 {
		return false
	}
	changelog, _ := ldap.ParseDN(changelogDN)
	return changelog.EqualFold(dn)
}

// journalPage bounds what one read of the journal holds: a search's
// memory does not grow with the journal, and no Badger transaction stays
// open while the client reads.
const (
	journalPageRecords = 32
	journalPageBytes   = 256 << 10
)

// walkChangelog streams a search of cn=changelog's children (and, for a
// subtree search, cn=changelog itself, at position 0) from the journal,
// page by page, in change number order; a filter bounding changeNumber
// starts and stops the walk there. Record N is at position N.
func (s *Server) walkChangelog(q query, send func(*entry) bool) result {
	lo, hi, bounded := changeNumberRange(q.filter)
	if !bounded {
		lo, hi = 0, math.MaxUint64
	}
	src := func(from uint64) func() (*entry, uint64, bool, error) {
		var page []*store.Record
		next := max(from, 1, lo)
		rootDue := from == 0 && q.scope == int(gldap.WholeSubtree)
		return func() (*entry, uint64, bool, error) {
			if rootDue {
				rootDue = false
				first, last, err := s.cfg.Journal.Bounds()
				if err != nil {
					return nil, 0, false, err
				}
				return changelogRoot(first, last), 0, true, nil
			}
			if len(page) == 0 {
				if next > hi {
					return nil, 0, false, nil
				}
				var err error
				if page, err = s.cfg.Journal.Range(next, journalPageRecords, journalPageBytes); err != nil {
					return nil, 0, false, err
				}
				if len(page) == 0 {
					next = hi + 1
					return nil, 0, false, nil
				}
			}
			r := page[0]
			page = page[1:]
			if r.Seq > hi {
				page, next = nil, hi+1
				return nil, 0, false, nil
			}
			next = r.Seq + 1
			return changeEntry(r), r.Seq, true, nil
		}
	}
	return q.run(src, send)
}

// attrSelection is the attribute list of a search request.
type attrSelection struct {
	all   bool
	names map[string]bool
}

func newAttrSelection(attrs []string) attrSelection {
	sel := attrSelection{names: map[string]bool{}}
	if len(attrs) == 0 {
		sel.all = true
	}
	for _, a := range attrs {
		switch a {
		case "*":
			sel.all = true
		case "1.1", "+":
		default:
			sel.names[strings.ToLower(a)] = true
		}
	}
	return sel
}

func (s attrSelection) wants(name string) bool { return s.all || s.names[strings.ToLower(name)] }

// candidates returns the entries in scope of a search, before filtering;
// filter (nil for all) may narrow the journal records read.
func (s *Server) candidates(base string, scope int, filter *ber.Packet) ([]*entry, error) {
	dn, err := ldap.ParseDN(base)
	if err != nil {
		return nil, &searchError{code: gldap.ResultInvalidDNSyntax, msg: "ldapgate: invalid base DN: " + err.Error()}
	}
	changelog, _ := ldap.ParseDN(changelogDN)
	monitor, _ := ldap.ParseDN(monitorDN)
	switch {
	case changelog.EqualFold(dn) || changelog.AncestorOfFold(dn):
		return s.changelogCandidates(dn, scope, filter)
	case monitor.EqualFold(dn) || monitor.AncestorOfFold(dn):
		js, jsErr := s.cfg.Journal.Stats()
		var health []gateway.UpstreamHealth
		if s.cfg.UpstreamHealth != nil {
			health = s.cfg.UpstreamHealth()
		}
		all := monitorEntries(s.cfg.GatewayStats(), health, js, jsErr)
		if s.cfg.Cluster != nil {
			all = append(all, clusterEntry(s.cfg.Cluster()))
		}
		return inScope(all, dn, scope, monitorDN)
	}
	return nil, &searchError{code: gldap.ResultNoSuchObject, msg: "ldapgate: not in the gateway's subtree"}
}

// inScope picks, from a complete list of entries, those within scope of dn.
func inScope(all []*entry, base *ldap.DN, scope int, suffix string) ([]*entry, error) {
	var out []*entry
	found := false
	for _, e := range all {
		edn, err := ldap.ParseDN(e.dn)
		if err != nil {
			continue
		}
		switch {
		case edn.EqualFold(base):
			found = true
			if scope == int(gldap.BaseObject) || scope == int(gldap.WholeSubtree) {
				out = append(out, e)
			}
		case scope == int(gldap.SingleLevel) && len(edn.RDNs) == len(base.RDNs)+1 && base.AncestorOfFold(edn),
			scope == int(gldap.WholeSubtree) && base.AncestorOfFold(edn):
			out = append(out, e)
		}
	}
	if !found {
		return nil, &searchError{code: gldap.ResultNoSuchObject, matchedDN: suffix, msg: "ldapgate: no such entry"}
	}
	return out, nil
}

// changelogCandidates returns cn=changelog itself (a base search; the
// searches below it walk the journal: walkChangelog) or one change.
func (s *Server) changelogCandidates(base *ldap.DN, scope int, _ *ber.Packet) ([]*entry, error) {
	if len(base.RDNs) == 1 {
		first, last, err := s.cfg.Journal.Bounds()
		if err != nil {
			return nil, err
		}
		if scope == int(gldap.SingleLevel) {
			return nil, nil
		}
		return []*entry{changelogRoot(first, last)}, nil
	}
	noSuch := &searchError{code: gldap.ResultNoSuchObject, matchedDN: changelogDN, msg: "ldapgate: no such change"}
	rdn := base.RDNs[0]
	if len(base.RDNs) != 2 || len(rdn.Attributes) != 1 || !strings.EqualFold(rdn.Attributes[0].Type, "changeNumber") {
		return nil, noSuch
	}
	seq, ok := parseChangeNumber(rdn.Attributes[0].Value)
	if !ok {
		return nil, noSuch
	}
	e, err := s.changeEntryBySeq(seq)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, noSuch
	}
	if scope == int(gldap.SingleLevel) {
		return nil, nil
	}
	return []*entry{e}, nil
}

// changeNumberRange reads from a filter the change numbers it can match:
// an AND (or a lone assertion) with changeNumber>=N, <=M or =N. ok is
// false when the filter does not bound them.
func changeNumberRange(f *ber.Packet) (lo, hi uint64, ok bool) {
	if f == nil || f.ClassType != ber.ClassContext {
		return 0, 0, false
	}
	items := []*ber.Packet{f}
	if f.Tag == ldap.FilterAnd {
		items = f.Children
	}
	lo, hi = 0, math.MaxUint64
	for _, it := range items {
		if it.ClassType != ber.ClassContext || len(it.Children) != 2 || !strings.EqualFold(it.Children[0].Data.String(), "changeNumber") {
			continue
		}
		v := it.Children[1].Data.String()
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if !isInteger(v) {
				continue
			}
			// An integer out of a change number's range: below zero or
			// beyond 2^64-1. What it bounds, it bounds to nothing.
			negative := strings.HasPrefix(v, "-")
			if negative && it.Tag == ldap.FilterGreaterOrEqual || !negative && it.Tag == ldap.FilterLessOrEqual {
				continue // no bound at all
			}
			if it.Tag == ldap.FilterGreaterOrEqual || it.Tag == ldap.FilterLessOrEqual || it.Tag == ldap.FilterEqualityMatch {
				lo, hi, ok = math.MaxUint64, 0, true
			}
			continue
		}
		switch it.Tag {
		case ldap.FilterGreaterOrEqual:
			lo, ok = max(lo, n), true
		case ldap.FilterLessOrEqual:
			hi, ok = min(hi, n), true
		case ldap.FilterEqualityMatch:
			lo, hi, ok = max(lo, n), min(hi, n), true
		}
	}
	return lo, hi, ok
}

// changeEntryBySeq returns the changelog entry of one record, nil if there
// is none.
func (s *Server) changeEntryBySeq(seq uint64) (*entry, error) {
	r, err := s.cfg.Journal.Get(seq)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read change %d: %w", seq, err)
	}
	return changeEntry(r), nil
}

// lookup returns the entry named dn, nil if there is none (for Compare).
func (s *Server) lookup(dn string) (*entry, error) {
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return nil, &searchError{code: gldap.ResultInvalidDNSyntax, msg: "ldapgate: invalid DN: " + err.Error()}
	}
	list, err := s.candidates(parsed.String(), int(gldap.BaseObject), nil)
	if err != nil {
		return nil, err
	}
	if len(list) != 1 {
		return nil, &searchError{code: gldap.ResultNoSuchObject, msg: "ldapgate: no such entry"}
	}
	return list[0], nil
}
