// Package testpki makes a throw-away certificate authority and a server
// certificate for the loopback addresses, so that tests can run LDAPS and
// StartTLS against slapd and the gateway with full certificate verification
// (clients demand a valid chain, as they would in production).
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a CA and one server certificate valid for 127.0.0.1, ::1 and
// localhost. The PEM files live in the directory given to New.
type PKI struct {
	CAFile   string // PEM CA certificate: give it to clients (LDAPTLS_CACERT)
	CertFile string // PEM server certificate (leaf only)
	KeyFile  string // PEM PKCS#8 server key, mode 0600
	CAPool   *x509.CertPool

	CACert  *x509.Certificate
	Cert    tls.Certificate
	CertPEM []byte
	KeyPEM  []byte
	CAPEM   []byte
}

// New creates a fresh CA and server certificate (ECDSA P-256) and writes
// ca.pem, server.pem and server-key.pem into dir, which must exist.
func New(dir string) (*PKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ldapgate test CA", Organization: []string{"ldapgate tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("testpki: parse CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testpki: server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"ldapgate tests"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("testpki: server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("testpki: marshal server key: %w", err)
	}

	p := &PKI{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server-key.pem"),
		CAPool:   x509.NewCertPool(),
		CACert:   caCert,
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	p.CAPool.AddCert(caCert)
	p.Cert, err = tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("testpki: key pair: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.CAFile, p.CAPEM, 0o644},
		{p.CertFile, p.CertPEM, 0o644},
		{p.KeyFile, p.KeyPEM, 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("testpki: write %s: %w", f.path, err)
		}
	}
	return p, nil
}

// ServerTLSConfig is a server configuration presenting the server certificate.
func (p *PKI) ServerTLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.Cert}, MinVersion: tls.VersionTLS12}
}

// ClientTLSConfig is a client configuration that trusts only the test CA and
// verifies serverName (use "127.0.0.1" or "localhost").
func (p *PKI) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: p.CAPool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// TLSConfig is ClientTLSConfig("127.0.0.1"), the address every test server uses.
func (p *PKI) TLSConfig() *tls.Config { return p.ClientTLSConfig("127.0.0.1") }

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still work.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
