package gateway

import (
	"bytes"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// searchWithPaging is a search request carrying go-ldap's own encoding of
// the paging control.
func searchWithPaging(id int64) []byte {
	op := ldapwire.AppendSearchRequest(nil, ldapwire.SearchRequest{
		Base: "dc=example,dc=com", Scope: ldapwire.ScopeSubtree, Filter: ldapwire.FilterEqual("uid", "alice"),
	})
	op = ldapwire.AppendTLV(op, ldapwire.TagControls, ldap.NewControlPaging(100).Encode().Bytes())
	return ldapwire.AppendMessage(nil, id, op)
}

func TestDecodeControls(t *testing.T) {
	m, err := ldapwire.Parse(searchWithPaging(3))
	if err != nil {
		t.Fatal(err)
	}
	ctls, err := decodeControls(m.Controls)
	if err != nil || len(ctls) != 1 || ctls[0].OID != ldap.ControlTypePaging || !ctls[0].HasValue {
		t.Fatalf("controls: %v %+v", err, ctls)
	}
}

// FuzzMessageDecoders feeds arbitrary bytes to the reader and the decoders:
// they may reject the input but must never panic, loop, or hand back a
// message whose parts lie outside what was read.
func FuzzMessageDecoders(f *testing.F) {
	f.Add(searchWithPaging(1))
	f.Add([]byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x42, 0x00})
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x30, 0x0c, 0x02, 0x01, 0x02, 0x4a, 0x07, 'c', 'n', '=', 'x', ',', 'o', 'k'})
	f.Add(encodeResponse(3, ldapwire.TagModifyResponse, 0, "", "ok", ""))
	f.Add(ldapwire.Notice(2, "bye"))
	f.Add(ldapwire.AppendMessage(nil, 4, ldapwire.AppendExtendedRequest(nil, ldapwire.OIDPasswordModify, nil)))
	f.Fuzz(func(t *testing.T, data []byte) {
		mr := ldapwire.NewReader(bytes.NewReader(data), 1<<16)
		for i := 0; i < 64; i++ {
			m, err := mr.Next()
			if err != nil {
				return
			}
			if !bytes.Contains(data, m.Raw) || len(m.OpContent) > len(m.Raw) {
				t.Fatalf("message parts outside the input")
			}
			_, _ = decodeWrite(m)
			_, _ = decodeBind(m.OpContent)
			_, _ = decodeResult(m, true)
			_, _, _, _ = decodeExtended(m.OpContent)
			_, _ = decodeControls(m.Controls)
		}
	})
}

func TestBindLimiter(t *testing.T) {
	l := newBindLimiter(3, time.Minute)
	now := time.Unix(1000, 0)
	// A bind that succeeds gives its count back.
	tk, ok, _ := l.admit("10.0.0.1:5000", now)
	if !ok {
		t.Fatal("first bind refused")
	}
	l.settle(tk, false)
	for i := 0; i < 3; i++ {
		tk, ok, _ := l.admit("10.0.0.1:5000", now)
		if !ok {
			t.Fatalf("refused after %d failures", i)
		}
		l.settle(tk, true)
	}
	if _, ok, wait := l.admit("10.0.0.1:6000", now.Add(10*time.Second)); ok || wait != 50*time.Second {
		t.Fatalf("after 3 failures: admitted=%v wait=%v, want refused for 50s (any port of the same host)", ok, wait)
	}
	if _, ok, _ := l.admit("10.0.0.2:5000", now); !ok {
		t.Fatal("another address is refused too")
	}
	if _, ok, _ := l.admit("10.0.0.1:5000", now.Add(time.Minute)); !ok {
		t.Fatal("still refused after the window")
	}
}

// An IPv6 client is counted by its /64: fresh addresses of one host do
// not get it fresh guesses. IPv4 addresses are counted one by one.
func TestBindLimiterCountsIPv6ByNetwork(t *testing.T) {
	l := newBindLimiter(2, time.Minute)
	now := time.Unix(1000, 0)
	for _, a := range []string{"[2001:db8:1:2::1]:5000", "[2001:db8:1:2:ffff::9]:5001"} {
		tk, ok, _ := l.admit(a, now)
		if !ok {
			t.Fatalf("%s refused", a)
		}
		l.settle(tk, true)
	}
	if _, ok, _ := l.admit("[2001:db8:1:2:abcd::1]:6000", now); ok {
		t.Error("a third address of the same /64 admitted after two failures")
	}
	if _, ok, _ := l.admit("[2001:db8:1:3::1]:6000", now); !ok {
		t.Error("another /64 refused")
	}
	for _, a := range []string{"10.0.0.1:1", "10.0.0.1:2"} {
		tk, _, _ := l.admit(a, now)
		l.settle(tk, true)
	}
	if _, ok, _ := l.admit("10.0.0.2:1", now); !ok {
		t.Error("an IPv4 neighbour refused")
	}
	if _, ok, _ := l.admit("[::ffff:10.0.0.1]:3", now); ok {
		t.Error("an IPv4-mapped address escapes its IPv4 address's count")
	}
}

// The per-address connection limit counts an IPv6 client by its /64 too.
func TestConnectionLimitCountsIPv6ByNetwork(t *testing.T) {
	a := addrCounts{limit: 2, open: map[string]int{}}
	for _, addr := range []string{"[2001:db8::1]:1000", "[2001:db8::2]:1000"} {
		if !a.take(clientOf(addr)) {
			t.Fatalf("%s refused", addr)
		}
	}
	if a.take(clientOf("[2001:db8::ffff:3]:1000")) {
		t.Error("a third connection from the same /64 taken at a limit of 2")
	}
	if !a.take(clientOf("[2001:db8:0:1::1]:1000")) {
		t.Error("another /64 refused")
	}
	a.give(clientOf("[2001:db8::1]:1000"))
	if !a.take(clientOf("[2001:db8::5]:1000")) {
		t.Error("a place given back is not free")
	}
}

// Binds admitted together count before their answers: three outstanding
// binds fill a limit of three, and an answer from a past window gives
// nothing back to the present one.
func TestBindLimiterCountsOutstandingBinds(t *testing.T) {
	l := newBindLimiter(3, time.Minute)
	now := time.Unix(1000, 0)
	var tickets []bindTicket
	for i := 0; i < 3; i++ {
		tk, ok, _ := l.admit("10.0.0.1:5000", now)
		if !ok {
			t.Fatalf("bind %d refused", i)
		}
		tickets = append(tickets, tk)
	}
	if _, ok, _ := l.admit("10.0.0.1:5001", now); ok {
		t.Fatal("a fourth bind admitted while three are outstanding")
	}
	l.settle(tickets[0], false)
	if _, ok, _ := l.admit("10.0.0.1:5001", now); !ok {
		t.Fatal("refused after an outstanding bind succeeded")
	}
	later := now.Add(time.Minute)
	if _, ok, _ := l.admit("10.0.0.1:5002", later); !ok {
		t.Fatal("refused in a new window")
	}
	for i := 0; i < 2; i++ {
		l.settle(tickets[1+i], false) // answers of the old window
	}
	for i := 0; i < 2; i++ {
		if _, ok, _ := l.admit("10.0.0.1:5003", later); !ok {
			t.Fatalf("bind %d of the new window refused", i)
		}
	}
	if _, ok, _ := l.admit("10.0.0.1:5003", later); ok {
		t.Fatal("the old window's answers gave counts back to the new one")
	}
}

// resetBind is the anonymous bind with ID 1 a directory expects.
func TestResetBindEncoding(t *testing.T) {
	want := []byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00}
	if !bytes.Equal(resetBind, want) {
		t.Fatalf("resetBind is %x, want %x", resetBind, want)
	}
}

// admit is the limiter's decision without waiting (try without its channel).
func (l *bindLimiter) admit(addr string, now time.Time) (bindTicket, bool, time.Duration) {
	t, ok, wait, _ := l.try(addr, now)
	return t, ok, wait
}
