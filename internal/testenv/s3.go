package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tend.dev/tend/internal/devcluster"
)

// VersityGWVersion is the S3 server the tests run, installed by
// hack/test.sh into the tend cache.
const VersityGWVersion = "v1.8.0"

// VersityGWBin is where hack/test.sh installs versitygw.
func VersityGWBin() string { return filepath.Join(devcluster.CacheDir(), "bin", "versitygw") }

// S3 is a real S3 server (versitygw over a posix directory), which checks
// request signatures as AWS does. A bucket is a directory under Dir.
type S3 struct {
	Endpoint             string
	AccessKey, SecretKey string
	Dir                  string

	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// NewS3 starts an S3 server on loopback; it stops when the test ends.
func NewS3(t testing.TB) *S3 { return NewS3On(t, "127.0.0.1") }

// NewS3On starts an S3 server listening on host, e.g. the test machines'
// bridge gateway, so that machines reach it.
func NewS3On(t testing.TB, host string) *S3 {
	t.Helper()
	if _, err := os.Stat(VersityGWBin()); err != nil {
		t.Fatalf("the S3 server is not installed at %s (hack/test.sh builds it: GOBIN=%s go install github.com/versity/versitygw/cmd/versitygw@%s): %v",
			VersityGWBin(), filepath.Dir(VersityGWBin()), VersityGWVersion, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("S3 server: listen on %s: %v", host, err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &S3{Endpoint: "http://" + addr, AccessKey: "tend-test-access", SecretKey: "tend-test-secret-" + fmt.Sprint(time.Now().UnixNano()),
		Dir: t.TempDir(), addr: addr}
	s.Start(t)
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server (again, after Stop) on the same address and data.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(VersityGWBin(), "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.addr, "posix", s.Dir)
	log, err := os.OpenFile(filepath.Join(os.TempDir(), "tend-versitygw-"+filepath.Base(s.Dir)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		cmd.Stdout, cmd.Stderr = log, log
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the S3 server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("the S3 server did not answer on %s: %v", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server, keeping its data.
func (s *S3) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// CreateBucket creates a bucket: in the posix backend, a directory.
func (s *S3) CreateBucket(t testing.TB, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(s.Dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
}
