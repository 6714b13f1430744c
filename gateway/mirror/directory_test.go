package mirror

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
)

// The Directory's reads of one entry (its own connections) give what
// go-ldap gives, over plain LDAP, ldaps:// and StartTLS; a missing entry is
// nil, an ambiguous one an error, and every value comes back byte for byte,
// long ones included.
func TestDirectoryReads(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{TLS: true})
	ctx := context.Background()
	people := "ou=people," + s.Suffix
	alice := "uid=alice," + people
	long := strings.Repeat("x", 70_000) + "é"
	admin, err := s.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	m := ldap.NewModifyRequest(alice, nil)
	m.Replace("description", []string{long, "short (with parentheses)", "two"})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	attrs := []string{"objectClass", "uid", "telephoneNumber", "description", "entryUUID", "memberOf"}
	res, err := admin.Search(ldap.NewSearchRequest(alice, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", attrs, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("go-ldap read: %v", err)
	}
	want := toEntry(res.Entries[0])

	tlsConfig := &tls.Config{RootCAs: s.PKI.CAPool, MinVersion: tls.VersionTLS12}
	transports := []struct {
		name     string
		url      string
		startTLS bool
	}{
		{"ldap", s.URL, false},
		{"ldaps", s.LDAPSURL, false},
		{"StartTLS", s.URL, true},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			d := NewDirectory(DirectoryConfig{URLs: []string{tr.url}, StartTLS: tr.startTLS, TLS: tlsConfig,
				ServiceDN: s.RootDN, ServicePassword: s.RootPW, Timeout: 5 * time.Second})
			defer d.Close()
			got, err := d.Read(ctx, alice, attrs)
			if err != nil || got == nil {
				t.Fatalf("read: %v, %v", got, err)
			}
			if !sameEntry(*got, want) {
				t.Errorf("read %+v\nwant %+v", summary(*got), summary(want))
			}
			if got.Attrs["description"] == nil || !slices.Contains(got.Attrs["description"], long) {
				t.Errorf("the long value did not come back whole")
			}
			if e, err := d.Read(ctx, "uid=nobody,"+people, attrs); e != nil || err != nil {
				t.Errorf("read of a missing entry: %v, %v", e, err)
			}
			if e, err := d.Read(ctx, "uid=nobody,ou=nowhere,"+s.Suffix, attrs); e != nil || err != nil {
				t.Errorf("read under a missing parent: %v, %v", e, err)
			}
			found, err := d.Find(ctx, []string{"ou=groups," + s.Suffix, people}, "(uid=alice)", []string{"1.1"})
			if err != nil || found == nil || !strings.EqualFold(found.DN, alice) || len(found.Attrs) != 0 {
				t.Errorf("find alice: %+v, %v", found, err)
			}
			if e, err := d.Find(ctx, []string{people}, "(cn=a\\28b\\29)", nil); e != nil || err != nil {
				t.Errorf("find nobody: %v, %v", e, err)
			}
			if e, err := d.Find(ctx, []string{people}, "(objectClass=inetOrgPerson)", nil); err == nil {
				t.Errorf("find of several entries: %v, want an error", e)
			}
			if _, err := d.Find(ctx, []string{people}, "(uid=alice", nil); err == nil {
				t.Error("a malformed filter was sent")
			}
			if tr.name == "ldap" {
				return
			}
			untrusted := NewDirectory(DirectoryConfig{URLs: []string{tr.url}, StartTLS: tr.startTLS, TLS: &tls.Config{MinVersion: tls.VersionTLS12},
				ServiceDN: s.RootDN, ServicePassword: s.RootPW, Timeout: 5 * time.Second})
			defer untrusted.Close()
			var verr *tls.CertificateVerificationError
			if _, err := untrusted.Read(ctx, alice, attrs); !errors.As(err, &verr) {
				t.Errorf("read from a directory whose certificate does not verify: %v", err)
			}
		})
	}
}

// A pooled read connection the directory has dropped is replaced on its
// next use; a wrong service password and a done context are errors.
func TestDirectoryReadFailures(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	ctx := context.Background()
	alice := "uid=alice,ou=people," + s.Suffix
	d := NewDirectory(DirectoryConfig{URLs: []string{s.URL}, ServiceDN: s.RootDN, ServicePassword: s.RootPW, Timeout: 5 * time.Second})
	defer d.Close()
	if e, err := d.Read(ctx, alice, []string{"uid"}); e == nil || err != nil {
		t.Fatalf("read: %v, %v", e, err)
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := d.Read(ctx, alice, []string{"uid"}); e == nil || err != nil {
		t.Fatalf("read after the directory restarted: %v, %v", e, err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Read(canceled, alice, []string{"uid"}); !errors.Is(err, context.Canceled) {
		t.Errorf("read with a done context: %v", err)
	}
	if e, err := d.Read(ctx, alice, []string{"uid"}); e == nil || err != nil {
		t.Fatalf("read after a canceled one: %v, %v", e, err)
	}

	bad := NewDirectory(DirectoryConfig{URLs: []string{s.URL}, ServiceDN: s.RootDN, ServicePassword: "wrong", Timeout: 5 * time.Second})
	defer bad.Close()
	if _, err := bad.Read(ctx, alice, []string{"uid"}); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Errorf("read with a wrong service password: %v", err)
	}
	none := NewDirectory(DirectoryConfig{URLs: []string{"ldap://127.0.0.1:1"}, ServiceDN: s.RootDN, ServicePassword: s.RootPW, Timeout: 5 * time.Second})
	defer none.Close()
	if _, err := none.Read(ctx, alice, []string{"uid"}); err == nil {
		t.Error("read from no directory succeeded")
	}
}

// A directory that takes a connection and never answers fails the read
// with a network error once the request timeout or the context's deadline
// has passed, whichever comes first.
func TestDirectoryReadTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	d := NewDirectory(DirectoryConfig{URLs: []string{"ldap://" + ln.Addr().String()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: 300 * time.Millisecond})
	defer d.Close()
	start := time.Now()
	_, err = d.Read(context.Background(), "uid=alice", []string{"uid"})
	if !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		t.Errorf("read from a silent directory: %v, want a network error", err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 5*time.Second {
		t.Errorf("the read gave up after %v, want the 300ms timeout", el)
	}

	d = NewDirectory(DirectoryConfig{URLs: []string{"ldap://" + ln.Addr().String()}, ServiceDN: "cn=svc", ServicePassword: "pw", Timeout: time.Minute})
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := d.Read(ctx, "uid=alice", []string{"uid"}); err == nil {
		t.Error("read from a silent directory succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the read gave up after %v, want the context's 200ms", el)
	}

	// A context cancelled (not timed out) mid-read ends the read too.
	ctx, cancelRead := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancelRead)
	start = time.Now()
	if _, err := d.Read(ctx, "uid=alice", []string{"uid"}); err == nil {
		t.Error("read from a silent directory succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the cancelled read gave up after %v, want about 200ms", el)
	}
}

func sameEntry(a, b schema.Entry) bool {
	if !strings.EqualFold(a.DN, b.DN) || len(a.Attrs) != len(b.Attrs) {
		return false
	}
	for k, v := range a.Attrs {
		if !slices.Equal(v, b.Attrs[k]) {
			return false
		}
	}
	return true
}

// summary shortens long values for a failure message.
func summary(e schema.Entry) map[string][]string {
	out := map[string][]string{"dn": {e.DN}}
	for k, vs := range e.Attrs {
		for _, v := range vs {
			if len(v) > 40 {
				v = v[:40] + "…"
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}
