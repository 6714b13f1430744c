package ldapwire

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
)

// The encoders write what go-asn1-ber writes for the same message, so that
// replacing one by the other changes no byte on the wire.
func TestResponseMatchesGoASN1BER(t *testing.T) {
	for _, tc := range []struct {
		id                          int64
		tag                         byte
		code                        int
		matched, diag, responseName string
	}{
		{1, TagBindResponse, 49, "", "invalid credentials", ""},
		{300, TagSearchDone, 0, "dc=example,dc=com", "", ""},
		{0, TagExtendedResponse, 52, "", strings.Repeat("x", 300), OIDNoticeOfDisconnection},
		{1 << 30, TagModifyResponse, 32, "ou=people", "no such object", ""},
	} {
		msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAPMessage")
		msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, tc.id, "messageID"))
		op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(tc.tag&0x1f), nil, "protocolOp")
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(tc.code), "resultCode"))
		op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, tc.matched, "matchedDN"))
		op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, tc.diag, "diagnosticMessage"))
		if tc.responseName != "" {
			op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, tc.responseName, "responseName"))
		}
		msg.AppendChild(op)
		got := Response(tc.id, tc.tag, Result{Code: tc.code, MatchedDN: tc.matched, Diagnostic: tc.diag, ResponseName: tc.responseName})
		if !bytes.Equal(got, msg.Bytes()) {
			t.Errorf("message %d: %x, go-asn1-ber writes %x", tc.id, got, msg.Bytes())
		}
	}
}

func TestResultRoundTrip(t *testing.T) {
	in := Result{Code: 10, MatchedDN: "dc=example", Diagnostic: "go there",
		Referrals: []string{"ldap://a/", "ldap://b/"}, ResponseName: "1.2.3", ResponseValue: []byte{}, HasValue: true}
	m, err := Parse(Response(7, TagExtendedResponse, in))
	if err != nil || m.ID != 7 || m.Op != TagExtendedResponse {
		t.Fatalf("parse: %+v, %v", m, err)
	}
	out, err := DecodeResult(m.OpContent)
	if err != nil {
		t.Fatal(err)
	}
	if out.Code != in.Code || out.MatchedDN != in.MatchedDN || out.Diagnostic != in.Diagnostic ||
		strings.Join(out.Referrals, " ") != strings.Join(in.Referrals, " ") ||
		out.ResponseName != in.ResponseName || !out.HasValue || len(out.ResponseValue) != 0 {
		t.Fatalf("got %+v, want %+v", out, in)
	}
	if code, ok := ResultCode(m.OpContent); !ok || code != 10 {
		t.Fatalf("ResultCode: %d %v", code, ok)
	}
	for name, content := range map[string][]byte{
		"empty":        nil,
		"code only":    AppendInt(nil, TagEnumerated, 0),
		"not a code":   AppendTLV(nil, TagOctetString, []byte("0")),
		"bad referral": append(AppendResult(nil, TagSearchDone, Result{})[2:], 0xa3, 0x02, 0x02, 0x00),
	} {
		if _, err := DecodeResult(content); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestGeneratedPassword(t *testing.T) {
	value := AppendTLV(nil, TagSequence, AppendTLV(nil, 0x80, []byte("s3cret")))
	if pw, err := GeneratedPassword(value); err != nil || string(pw) != "s3cret" {
		t.Fatalf("got %q, %v", pw, err)
	}
	if pw, err := GeneratedPassword(AppendTLV(nil, TagSequence, nil)); err != nil || pw != nil {
		t.Fatalf("no genPasswd: got %q, %v", pw, err)
	}
	if _, err := GeneratedPassword([]byte{0x04, 0x00}); err == nil {
		t.Fatal("a value that is not a SEQUENCE was accepted")
	}
}

func TestRequestsFrame(t *testing.T) {
	for name, raw := range map[string][]byte{
		"bind":     AppendMessage(nil, 1, AppendBindRequest(nil, "cn=admin", []byte("pw"))),
		"search":   AppendMessage(nil, 2, AppendSearchRequest(nil, SearchRequest{Base: "dc=x", Scope: ScopeSubtree, Filter: FilterEqual("uid", "a"), Attributes: []string{"cn"}})),
		"extended": AppendMessage(nil, 3, AppendExtendedRequest(nil, OIDWhoAmI, nil)),
		"root DSE": RootDSESearch(4),
	} {
		m, err := Parse(raw)
		if err != nil || !IsRequest(m.Op) {
			t.Errorf("%s: %+v, %v", name, m, err)
		}
	}
}

func TestTagTable(t *testing.T) {
	for req, resp := range map[byte]byte{
		TagBindRequest: TagBindResponse, TagSearchRequest: TagSearchDone, TagModifyRequest: TagModifyResponse,
		TagAddRequest: TagAddResponse, TagDelRequest: TagDelResponse, TagModDNRequest: TagModDNResponse,
		TagCompareRequest: TagCompareResponse, TagExtendedRequest: TagExtendedResponse,
		TagUnbindRequest: 0, TagAbandonRequest: 0,
	} {
		if got := ResponseTag(req); got != resp {
			t.Errorf("ResponseTag(%s) = 0x%02x, want 0x%02x", OpName(req), got, resp)
		}
		if !IsRequest(req) {
			t.Errorf("%s is not a request", OpName(req))
		}
		if resp != 0 && !IsFinal(resp) {
			t.Errorf("0x%02x is not final", resp)
		}
	}
	for _, tag := range []byte{TagSearchEntry, TagSearchReference, TagIntermediate} {
		if IsFinal(tag) || IsRequest(tag) {
			t.Errorf("0x%02x taken as final or as a request", tag)
		}
	}
}

func TestParseURL(t *testing.T) {
	for raw, want := range map[string]string{
		"ldap://dir.example":       "dir.example:389",
		"ldaps://dir.example":      "dir.example:636",
		"LDAP://dir.example:1389/": "dir.example:1389",
		"ldap://[::1]":             "[::1]:389",
	} {
		e, err := ParseURL(raw)
		if err != nil || e.Address != want || e.TLS != strings.HasPrefix(raw, "ldaps") {
			t.Errorf("%s: %+v, %v", raw, e, err)
		}
	}
	for _, raw := range []string{"http://dir.example", "ldap://", "ldap://dir.example/dc=example", "ldap://%zz"} {
		if _, err := ParseURL(raw); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
}

// StartTLS is not taken as done on a refusal nor when plain bytes follow
// its answer (a forged answer to what the caller sends next).
func TestDialStartTLSRefusals(t *testing.T) {
	for name, answer := range map[string][]byte{
		"refused": Response(1, TagExtendedResponse, Result{Code: 2}),
		"injected": append(Response(1, TagExtendedResponse, Result{}),
			Response(2, TagBindResponse, Result{})...),
		"wrong ID": Response(5, TagExtendedResponse, Result{}),
	} {
		t.Run(name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if m, err := NewReader(c, 1<<10).Next(); err == nil && m.Op == TagExtendedRequest {
					_, _ = c.Write(answer)
				}
				_, _ = c.Read(make([]byte, 1))
			}()
			e, err := ParseURL("ldap://" + ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			e.StartTLS = true
			conn, err := e.Dial(context.Background(), 2*time.Second)
			if err == nil {
				conn.Close()
				t.Fatal("dial succeeded")
			}
			if !strings.Contains(err.Error(), "StartTLS") {
				t.Fatalf("error %q does not name StartTLS", err)
			}
		})
	}
}
