package natsbus_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gustfaas/gust/internal/natsbus"
	"github.com/gustfaas/gust/internal/natsbus/natsbustest"
	"go.uber.org/zap/zaptest"
)

// mustSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key in dir and returns their paths (the certificate is its own CA).
func mustSelfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gust-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestServerTLS: a server given a certificate takes TLS clients that trust
// its CA (and still asks for their password), and refuses a client that
// does not trust it.
func TestServerTLS(t *testing.T) {
	cert, key := mustSelfSigned(t, t.TempDir())
	srv, err := natsbus.RunServer(natsbus.ServerConfig{
		Listen: "127.0.0.1:0", StoreDir: t.TempDir(), Name: "tls", Users: natsbustest.Users(t), TLSCert: cert, TLSKey: key,
	}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	url := strings.Replace(srv.UserURL(natsbus.UserEvents), "nats://", "tls://", 1)

	b, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: url, CAFile: cert}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("connect over TLS trusting the CA: %v", err)
	}
	if !b.NC.TLSRequired() {
		t.Error("the connection is not TLS")
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	if b, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: url}, zaptest.NewLogger(t)); err == nil {
		b.Close()
		t.Error("a client that does not trust the server's CA connected")
	}
	noPassword := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	if b, err := natsbus.ConnectWith(natsbus.ClientConfig{URL: noPassword, CAFile: cert}, zaptest.NewLogger(t)); err == nil {
		b.Close()
		t.Error("a TLS client without a password connected")
	}
}
