package subtree

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

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
	entries, err := s.candidates(m.BaseDN, int(m.Scope), filter)
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
	var matched []*entry
	for _, e := range entries {
		if matches(filter, e) {
			matched = append(matched, e)
		}
	}
	sel := newAttrSelection(m.Attributes)
	send := func(list []*entry) bool {
		for _, e := range list {
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
			if w.Write(resp) != nil {
				return false
			}
		}
		return true
	}

	if paging != nil {
		// The cookie is the offset of the next page among the matching
		// entries; the journal only grows at the end, so it stays valid.
		offset := 0
		if len(paging.Cookie) > 0 {
			n, err := strconv.Atoi(string(paging.Cookie))
			if err != nil || n < 0 {
				finish(gldap.ResultProtocolError, "", "ldapgate: invalid paged results cookie")
				return
			}
			offset = min(n, len(matched))
		}
		if paging.PagingSize == 0 { // the client abandons the paged search
			finish(gldap.ResultSuccess, "", "", &gldap.ControlPaging{})
			return
		}
		end := min(offset+int(paging.PagingSize), len(matched))
		if m.SizeLimit > 0 && int64(end) > m.SizeLimit {
			end = max(offset, int(m.SizeLimit))
			if !send(matched[offset:end]) {
				return
			}
			finish(gldap.ResultSizeLimitExceeded, "", "", &gldap.ControlPaging{})
			return
		}
		if !send(matched[offset:end]) {
			return
		}
		next := &gldap.ControlPaging{}
		if end < len(matched) {
			next.Cookie = []byte(strconv.Itoa(end))
		}
		finish(gldap.ResultSuccess, "", "", next)
		return
	}
	if m.SizeLimit > 0 && int64(len(matched)) > m.SizeLimit {
		if send(matched[:m.SizeLimit]) {
			finish(gldap.ResultSizeLimitExceeded, "", "")
		}
		return
	}
	if send(matched) {
		finish(gldap.ResultSuccess, "", "")
	}
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

// changelogCandidates reads the journal for a search under cn=changelog.
func (s *Server) changelogCandidates(base *ldap.DN, scope int, filter *ber.Packet) ([]*entry, error) {
	if len(base.RDNs) == 1 {
		if scope != int(gldap.BaseObject) {
			if lo, hi, ok := changeNumberRange(filter); ok {
				// A follower asking for the changes after the last it has
				// reads those records only; the root has no changeNumber, so
				// the filter could not match it.
				return s.changeRange(lo, hi)
			}
		}
		recs, err := s.cfg.Journal.List(store.Filter{})
		if err != nil {
			return nil, err
		}
		var first, last uint64
		if len(recs) > 0 {
			first, last = recs[0].Seq, recs[len(recs)-1].Seq
		}
		var out []*entry
		if scope == int(gldap.BaseObject) || scope == int(gldap.WholeSubtree) {
			out = append(out, changelogRoot(first, last))
		}
		if scope != int(gldap.BaseObject) {
			for _, r := range recs {
				out = append(out, changeEntry(r))
			}
		}
		return out, nil
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

// maxRangeReads bounds the records read one by one for a change number
// range; a wider range lists the journal instead.
const maxRangeReads = 4096

// changeRange returns the change entries numbered lo..hi.
func (s *Server) changeRange(lo, hi uint64) ([]*entry, error) {
	newest, err := s.cfg.Journal.List(store.Filter{Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(newest) == 0 {
		return nil, nil
	}
	hi = min(hi, newest[0].Seq)
	lo = max(lo, 1)
	if lo > hi {
		return nil, nil
	}
	var out []*entry
	if hi-lo < maxRangeReads {
		for seq := lo; seq <= hi; seq++ {
			e, err := s.changeEntryBySeq(seq)
			if err != nil {
				return nil, err
			}
			if e != nil {
				out = append(out, e)
			}
		}
		return out, nil
	}
	recs, err := s.cfg.Journal.List(store.Filter{})
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.Seq >= lo && r.Seq <= hi {
			out = append(out, changeEntry(r))
		}
	}
	return out, nil
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
		n, err := strconv.ParseUint(it.Children[1].Data.String(), 10, 64)
		if err != nil {
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
