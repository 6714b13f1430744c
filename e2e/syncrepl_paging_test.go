package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

const pagedUsers = 10000

// The generated users user00000..user09999 in two halves.
const (
	lowerHalf = "(|(uid=user00*)(uid=user01*)(uid=user02*)(uid=user03*)(uid=user04*))"
	upperHalf = "(|(uid=user05*)(uid=user06*)(uid=user07*)(uid=user08*)(uid=user09*))"
)

// pager walks one paged search by hand, a page per call, so that two can
// be interleaved on one connection.
type pager struct {
	c      *ldap.Conn
	filter string
	size   uint32
	cookie []byte
	done   bool
	seen   map[string]bool
	pages  int
}

func (p *pager) next(t *testing.T) {
	t.Helper()
	if err := p.try(); err != nil {
		t.Fatal(err)
	}
}

// try fetches the next page; an error is the server's answer to it.
func (p *pager) try() error {
	ctl := ldap.NewControlPaging(p.size)
	ctl.SetCookie(p.cookie)
	res, err := p.c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		p.filter, []string{"uid"}, []ldap.Control{ctl}))
	if err != nil {
		return fmt.Errorf("page %d of %s: %w", p.pages+1, p.filter, err)
	}
	p.pages++
	for _, e := range res.Entries {
		if p.seen[e.DN] {
			return fmt.Errorf("%s returned twice by %s", e.DN, p.filter)
		}
		p.seen[e.DN] = true
	}
	resp, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
	if !ok {
		return fmt.Errorf("page %d of %s: no paging control in the result", p.pages, p.filter)
	}
	p.cookie = resp.Cookie
	p.done = len(p.cookie) == 0
	return nil
}

// interleave alternates the pages of two paged searches on one connection
// and returns what happened, step by step.
func interleave(c *ldap.Conn) []string {
	a := &pager{c: c, filter: lowerHalf, size: 700, seen: map[string]bool{}}
	b := &pager{c: c, filter: upperHalf, size: 300, seen: map[string]bool{}}
	var steps []string
	for step := 0; (!a.done || !b.done) && step < 100; step++ {
		for _, p := range []*pager{a, b} {
			if p.done {
				continue
			}
			err := p.try()
			code := 0
			var le *ldap.Error
			if errors.As(err, &le) {
				code = int(le.ResultCode)
			}
			steps = append(steps, fmt.Sprintf("%s page %d: result %d, %d entries so far", p.filter, p.pages, code, len(p.seen)))
			if err != nil {
				p.done = true // the server ended it
			}
		}
	}
	return steps
}

// Paged results over 10,000 entries through the gateway: a whole paged
// search, two paged searches interleaved on one connection, and paged
// searches abandoned both ways RFC 2696 and RFC 4511 allow.
func TestSyncreplPagedResultsOverTenThousandEntries(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: pagedUsers})
	g := startGateway(t, "--upstream", s.URL)
	c := bindConn(t, g.URL, adminDN, adminPW)

	start := time.Now()
	res, err := c.SearchWithPaging(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=inetOrgPerson)", []string{"uid"}, nil), 500)
	if err != nil {
		t.Fatalf("paged search: %v", err)
	}
	if len(res.Entries) != pagedUsers+3 {
		t.Fatalf("%d entries, want %d", len(res.Entries), pagedUsers+3)
	}
	t.Logf("10,003 entries in pages of 500 through the gateway: %v", time.Since(start).Round(time.Millisecond))

	// Two paged searches on one connection, pages alternating: slapd keeps
	// one paged search per connection and ends the first with protocolError
	// ("paged results cookie is invalid") when the second starts. The
	// gateway keeps one upstream connection per client connection, so its
	// client sees exactly that, step for step.
	direct := interleave(bindConn(t, s.URL, adminDN, adminPW))
	via := interleave(bindConn(t, g.URL, adminDN, adminPW))
	if strings.Join(direct, "\n") != strings.Join(via, "\n") {
		t.Errorf("interleaved paged searches differ:\n--- direct:\n%s\n--- gateway:\n%s", strings.Join(direct, "\n"), strings.Join(via, "\n"))
	}
	t.Logf("interleaved on one connection (same direct and through the gateway):\n%s", strings.Join(via, "\n"))

	// Interleaved on two connections of one client, both complete; and
	// ordinary operations between the pages of a paged search are fine.
	wantA, wantB := pagedUsers/2, pagedUsers/2
	a := &pager{c: c, filter: lowerHalf, size: 700, seen: map[string]bool{}}
	b := &pager{c: bindConn(t, g.URL, adminDN, adminPW), filter: upperHalf, size: 300, seen: map[string]bool{}}
	for !a.done || !b.done {
		if !a.done {
			a.next(t)
			if _, err := c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
				"(uid=alice)", []string{"mail"}, nil)); err != nil {
				t.Fatalf("a search between pages: %v", err)
			}
		}
		if !b.done {
			b.next(t)
		}
	}
	if len(a.seen) != wantA || len(b.seen) != wantB {
		t.Errorf("interleaved: %d and %d entries, want %d and %d", len(a.seen), len(b.seen), wantA, wantB)
	}

	// RFC 2696 abandon: a page size of 0 with the cookie ends the search.
	p := &pager{c: c, filter: "(objectClass=inetOrgPerson)", size: 100, seen: map[string]bool{}}
	p.next(t)
	ctl := ldap.NewControlPaging(0)
	ctl.SetCookie(p.cookie)
	res, err = c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
		p.filter, []string{"uid"}, []ldap.Control{ctl}))
	if err != nil || len(res.Entries) != 0 {
		t.Errorf("zero-size page: %v, %v", err, res)
	}
	// slapd sends no paging control then; a following paged search starts afresh.
	if resp, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging); ok && len(resp.Cookie) != 0 {
		t.Errorf("zero-size page returned a cookie")
	}

	// RFC 4511 Abandon of a paged search, then the connection goes on.
	raw := dialRaw(t, g.URL)
	raw.send(t, bindRequest(1, adminDN, adminPW))
	raw.expectResult(t, 1, 0)
	raw.send(t, pagedSearch(t, 2, 5000, nil))
	raw.send(t, abandonRequest(3, 2))
	raw.send(t, searchRequest(t, 4, people, "(uid=alice)", "uid"))
	msgs := raw.expectResult(t, 4, 0)
	t.Logf("%d messages before the next search's result", len(msgs))
	// Page 1 of a fresh paged search on the same connection is complete.
	raw.send(t, pagedSearch(t, 5, 1000, nil))
	var entries int
	for _, m := range raw.expectResult(t, 5, 0) {
		if m.ID == 5 && m.Op == ldap.ApplicationSearchResultEntry {
			entries++
		}
	}
	if entries != 1000 {
		t.Errorf("page after the abandon: %d entries, want 1000", entries)
	}
	if !g.alive() {
		t.Fatal("gateway died")
	}
}

func pagedSearch(t *testing.T, id int64, size uint32, cookie []byte) []byte {
	t.Helper()
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "search")
	op.AppendChild(octets(people))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.ScopeWholeSubtree), "scope"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.NeverDerefAliases), "deref"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "sizeLimit"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "timeLimit"))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "typesOnly"))
	f, err := ldap.CompileFilter("(objectClass=inetOrgPerson)")
	if err != nil {
		t.Fatal(err)
	}
	op.AppendChild(f)
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	attrs.AppendChild(octets("uid"))
	op.AppendChild(attrs)
	ctl := ldap.NewControlPaging(size)
	ctl.SetCookie(cookie)
	return envelope(id, op, ctl.Encode())
}
