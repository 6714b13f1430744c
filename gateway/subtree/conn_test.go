package subtree

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/store"
)

// openJournal opens an empty journal in a temporary folder.
func openJournal(t *testing.T) *store.Journal {
	t.Helper()
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{
		NoSync: true, KeyFile: filepath.Join(dir, "key"), HousekeepingInterval: -1,
	})
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// startSubtree runs a subtree Server over an empty journal, without a
// directory.
func startSubtree(t *testing.T) *Server {
	t.Helper()
	sub, err := New(Config{Journal: openJournal(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	return sub
}

// oddSearch encodes a search of cn=changelog whose scope and typesOnly
// use the given tags, with the given attribute list content and controls.
func oddSearch(id int64, scopeTag, typesOnlyTag byte, attrs, controls []byte) []byte {
	var b []byte
	b = ldapwire.AppendTLV(b, ldapwire.TagOctetString, []byte("cn=changelog"))
	b = ldapwire.AppendInt(b, scopeTag, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagEnumerated, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagInteger, 0)
	b = ldapwire.AppendInt(b, ldapwire.TagInteger, 0)
	if typesOnlyTag == ldapwire.TagBoolean {
		b = append(b, ldapwire.TagBoolean, 1, 0)
	} else {
		b = ldapwire.AppendInt(b, typesOnlyTag, 0)
	}
	b = append(b, ldapwire.FilterPresent("objectClass")...)
	b = ldapwire.AppendTLV(b, ldapwire.TagSequence, attrs)
	var body []byte
	body = ldapwire.AppendInt(body, ldapwire.TagInteger, id)
	body = ldapwire.AppendTLV(body, ldapwire.TagSearchRequest, b)
	if controls != nil {
		body = ldapwire.AppendTLV(body, ldapwire.TagControls, controls)
	}
	return ldapwire.AppendTLV(nil, ldapwire.TagSequence, body)
}

// control encodes one Control from its already encoded elements.
func control(elements ...[]byte) []byte {
	var b []byte
	for _, e := range elements {
		b = append(b, e...)
	}
	return ldapwire.AppendTLV(nil, ldapwire.TagSequence, b)
}

func octets(s string) []byte { return ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(s)) }

// Every search gldap would drop the connection over (or panic on) is
// answered by Conn.Answer with a result; the searches gldap can take are
// left to it and served.
func TestAnswerRefusesSearchesGldapCannotTake(t *testing.T) {
	sub := startSubtree(t)
	nc, err := sub.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*Conn)
	var enum, boolean byte = ldapwire.TagEnumerated, ldapwire.TagBoolean
	integer := ldapwire.AppendInt(nil, ldapwire.TagInteger, 1)
	pagingValue := func(inner []byte) []byte { return ldapwire.AppendTLV(nil, ldapwire.TagOctetString, inner) }
	goodPaging := pagingValue(ldapwire.AppendTLV(nil, ldapwire.TagSequence, append(ldapwire.AppendInt(nil, ldapwire.TagInteger, 10), octets("")...)))
	refused := map[string][]byte{
		"scope INTEGER":              oddSearch(2, ldapwire.TagInteger, boolean, nil, nil),
		"typesOnly INTEGER":          oddSearch(2, enum, ldapwire.TagInteger, nil, nil),
		"attribute INTEGER":          oddSearch(2, enum, boolean, integer, nil),
		"control not a SEQUENCE":     oddSearch(2, enum, boolean, nil, octets("1.2.3")),
		"controlType INTEGER":        oddSearch(2, enum, boolean, nil, control(integer)),
		"empty control":              oddSearch(2, enum, boolean, nil, control()),
		"criticality INTEGER":        oddSearch(2, enum, boolean, nil, control(octets("1.2.3"), integer, octets("v"))),
		"controlValue INTEGER":       oddSearch(2, enum, boolean, nil, control(octets("1.2.3"), integer)),
		"paging value garbage":       oddSearch(2, enum, boolean, nil, control(octets(ldap.ControlTypePaging), octets("x"))),
		"paging value one child":     oddSearch(2, enum, boolean, nil, control(octets(ldap.ControlTypePaging), pagingValue(ldapwire.AppendTLV(nil, ldapwire.TagSequence, integer)))),
		"paging size not INTEGER":    oddSearch(2, enum, boolean, nil, control(octets(ldap.ControlTypePaging), pagingValue(ldapwire.AppendTLV(nil, ldapwire.TagSequence, append(octets("10"), octets("")...))))),
		"ppolicy request with value": oddSearch(2, enum, boolean, nil, control(octets(ldap.ControlTypeBeheraPasswordPolicy), octets("x"))),
	}
	for name, req := range refused {
		m, err := ldapwire.Parse(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		reply, handled := c.Answer(m)
		if !handled {
			t.Errorf("%s: left to gldap, which drops the connection over it", name)
			continue
		}
		r, err := ldapwire.Parse(reply)
		if err != nil {
			t.Fatalf("%s: reply: %v", name, err)
		}
		if res, _ := ldapwire.DecodeResult(r.OpContent); r.Op != ldapwire.TagSearchDone || res.Code != ldap.LDAPResultProtocolError {
			t.Errorf("%s: answered 0x%02x %d %q, want a SearchDone with protocolError", name, r.Op, res.Code, res.Diagnostic)
		}
	}

	// What gldap can take is left to it, and the connection serves it:
	// nothing above reached gldap.
	served := [][]byte{
		oddSearch(3, enum, boolean, octets("cn"), nil),
		oddSearch(4, enum, boolean, nil, control(octets(ldap.ControlTypePaging), goodPaging)),
		oddSearch(5, enum, boolean, nil, control(octets(ldap.ControlTypePaging), ldapwire.AppendTLV(nil, ldapwire.TagBoolean, []byte{0}), goodPaging)),
		oddSearch(6, enum, boolean, nil, control(octets(ldap.ControlTypeManageDsaIT))),
	}
	r := ldapwire.NewReader(c, 1<<20)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, req := range served {
		m, err := ldapwire.Parse(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, handled := c.Answer(m); handled {
			t.Fatalf("search %d answered by Answer, want it left to gldap", m.ID)
		}
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		for {
			a, err := r.Next()
			if err != nil {
				t.Fatalf("search %d: the subtree connection failed: %v", m.ID, err)
			}
			if a.Op == ldapwire.TagSearchDone {
				if a.ID != m.ID {
					t.Fatalf("SearchDone for %d, want %d", a.ID, m.ID)
				}
				break
			}
		}
	}
}

// A process that took the loopback port and accepts any token cannot
// pass for the subtree server: Dial refuses it, so no admin's query
// reaches it.
func TestDialRefusesAnImpostor(t *testing.T) {
	sub := startSubtree(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	requests := make(chan byte, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := ldapwire.NewReader(c, 1<<20)
				for {
					m, err := r.Next()
					if err != nil {
						return
					}
					requests <- m.Op
					if m.Op == ldapwire.TagBindRequest {
						_, _ = c.Write(ldapwire.Response(m.ID, ldapwire.TagBindResponse, ldapwire.Result{}))
					}
				}
			}()
		}
	}()
	sub.mu.Lock()
	sub.addr = ln.Addr().String()
	sub.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := sub.Dial(ctx); err == nil {
		c.Close()
		t.Fatal("Dial accepted a server that answered the token bind without the proof")
	}
	if op := <-requests; op != ldapwire.TagBindRequest {
		t.Fatalf("the impostor got 0x%02x first, want only the token bind", op)
	}
	select {
	case op := <-requests:
		t.Fatalf("the impostor got a request 0x%02x after the bind", op)
	default:
	}
}
