package testenv

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"tend.dev/tend/internal/devcluster"
)

// RegistryVersion is the go-containerregistry registry the tests run,
// installed by hack/test.sh into the tend cache.
const RegistryVersion = "v0.22.1"

// RegistryBin is where hack/test.sh installs the registry.
func RegistryBin() string { return filepath.Join(devcluster.CacheDir(), "bin", "registry") }

// Registry is a real OCI registry (go-containerregistry's cmd/registry) on
// loopback. Host is host:port for image references.
type Registry struct{ Host string }

// NewRegistry starts a registry. With user set, a proxy in front of it
// requires basic auth, as a private registry would.
func NewRegistry(t testing.TB, user, password string) *Registry {
	t.Helper()
	bin := RegistryBin()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the OCI registry is not installed at %s (hack/test.sh installs it: GOBIN=%s go install github.com/google/go-containerregistry/cmd/registry@%s): %v",
			bin, filepath.Dir(bin), RegistryVersion, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "-port", fmt.Sprint(port))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry did not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if user == "" {
		return &Registry{Host: addr}
	}
	target, _ := url.Parse("http://" + addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(password)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="registry"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(pl) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	return &Registry{Host: pl.Addr().String()}
}
