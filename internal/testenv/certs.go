package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of the files the control plane is started with.
type pki struct {
	caCert, serverCert, serverKey string
	saPub, saKey                  string
	caPEM                         []byte
}

// ECDSA P-256 everywhere: key generation is instant (RSA-2048 costs up to a
// second on these machines) and every component accepts it.
func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

// serverSANs are the names clients use for the apiserver: loopback through
// the forwarder, the in-cluster names, and the first service IP behind the
// `kubernetes` Service.
func serverSANs(firstServiceIP net.IP, extra []string) ([]net.IP, []string) {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), firstServiceIP}
	dns := []string{"localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	for _, s := range extra {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, s)
		}
	}
	return ips, dns
}

func writePKI(dir string, firstServiceIP net.IP, extraSANs []string) (*pki, error) {
	p := &pki{
		caCert: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey: filepath.Join(dir, "apiserver.key"), saPub: filepath.Join(dir, "sa.pub"),
		saKey: filepath.Join(dir, "sa.key"),
	}
	ca, caKey, err := p.writeCA()
	if err != nil {
		return nil, err
	}
	ips, dns := serverSANs(firstServiceIP, extraSANs)
	if err := p.writeServing(ca, caKey, ips, dns); err != nil {
		return nil, err
	}
	return p, p.writeSAKeys()
}

func (p *pki) writeCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "fastpath-testenv-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(p.caCert, p.caPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

func (p *pki) writeServing(ca *x509.Certificate, caKey *ecdsa.PrivateKey, ips []net.IP, dns []string) error {
	key, err := newKey()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("serving cert: %w", err)
	}
	if err := writePEM(p.serverCert, "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(p.serverKey, key)
}

func (p *pki) writeSAKeys() error {
	key, err := newKey()
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(p.saPub, "PUBLIC KEY", pub); err != nil {
		return err
	}
	return writeKey(p.saKey, key)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
