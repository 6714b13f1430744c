package axigen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "axigen-sim test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestTLS: the client applies over TLS with a verified certificate, and
// refuses a server it cannot verify with a connection error that is not
// temporary (the certificate will not verify on a retry either).
func TestTLS(t *testing.T) {
	cert, roots := selfSigned(t)
	sim := axigensim.New(axigensim.Options{
		Admins:  map[string]string{testAdmin: testPassword},
		Domains: []string{testDomain},
		TLS:     &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	})
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := Config{Addr: sim.Addr(), User: testAdmin, Password: testPassword,
		TLS: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}}
	pool := NewPool(cfg, 1)
	defer pool.Close()
	if _, err := NewClient(pool).ApplyAccount(testCtx(t), testDomain, schema.Account{Name: "john"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.Account(testDomain, "john"); !ok {
		t.Fatal("account not created over TLS")
	}
	cfg.TLS = &tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12} // system roots: untrusted
	if _, err := Dial(testCtx(t), cfg); KindOf(err) != KindConnection || IsTemporary(err) {
		t.Fatalf("untrusted certificate: %v", err)
	}
}
