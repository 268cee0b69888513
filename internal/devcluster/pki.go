package devcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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

// pki is the set of certificates a local control plane needs. It is written
// once per data directory and reused, so kubeconfigs stay valid across restarts.
type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(cn string) (*certAuthority, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return &certAuthority{cert: cert, key: key}, pemBlock("CERTIFICATE", der), keyPEM, nil
}

func (ca *certAuthority) issue(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// clientIdentities are the client certificates the components use.
var clientIdentities = []struct {
	name    string
	subject pkix.Name
}{
	{"admin", pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}}},
	{"kube-controller-manager", pkix.Name{CommonName: "system:kube-controller-manager"}},
	{"kube-scheduler", pkix.Name{CommonName: "system:kube-scheduler"}},
	{"kwok", pkix.Name{CommonName: "kwok-controller", Organization: []string{"system:masters"}}},
	{"apiserver-kubelet-client", pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}}},
}

// ensure writes the PKI if the directory does not hold one yet.
func (p pki) ensure() error {
	if _, err := os.Stat(p.path("ca.crt")); err == nil {
		return nil
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{}
	ca, caCrt, caKey, err := newCA("tend-dev-ca")
	if err != nil {
		return err
	}
	files["ca.crt"], files["ca.key"] = caCrt, caKey
	crt, key, err := ca.issue(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	files["apiserver.crt"], files["apiserver.key"] = crt, key
	for i, id := range clientIdentities {
		crt, key, err := ca.issue(int64(10+i), id.subject, x509.ExtKeyUsageClientAuth, nil, nil)
		if err != nil {
			return err
		}
		files[id.name+".crt"], files[id.name+".key"] = crt, key
	}
	fp, fpCrt, fpKey, err := newCA("tend-dev-front-proxy-ca")
	if err != nil {
		return err
	}
	files["front-proxy-ca.crt"], files["front-proxy-ca.key"] = fpCrt, fpKey
	crt, key, err = fp.issue(2, pkix.Name{CommonName: "front-proxy-client"}, x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return err
	}
	files["front-proxy-client.crt"], files["front-proxy-client.key"] = crt, key
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	files["sa.key"] = pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	files["sa.pub"] = pemBlock("PUBLIC KEY", pub)
	for name, data := range files {
		if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubeconfig writes a kubeconfig for a client identity against server.
func (p pki) kubeconfig(identity, server string) (string, error) {
	file := p.path(identity + ".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: tend-dev
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: tend-dev
  context: {cluster: tend-dev, user: %s}
current-context: tend-dev
`, server, p.path("ca.crt"), identity, p.path(identity+".crt"), p.path(identity+".key"), identity)
	return file, os.WriteFile(file, []byte(cfg), 0o600)
}
