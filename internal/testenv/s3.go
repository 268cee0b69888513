package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tend.dev/tend/internal/devcluster"
)

// VersityGWVersion is the S3 server the tests run, installed by
// hack/test.sh into the tend cache.
const VersityGWVersion = "v1.8.0"

// VersityGWBin is where hack/test.sh installs versitygw.
func VersityGWBin() string { return filepath.Join(devcluster.CacheDir(), "bin", "versitygw") }

// S3 is a real S3 server (versitygw over a posix directory) that checks
// request signatures. A bucket is a directory under Dir, and an object a
// file in it, so tests can damage stored data directly.
type S3 struct {
	// Endpoint is the server's URL, e.g. http://127.0.0.1:PORT.
	Endpoint             string
	AccessKey, SecretKey string
	// Dir is the posix root: Dir/BUCKET/KEY.
	Dir string

	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
}

// syncBuffer keeps the first 64 KiB of a server's output, for failures.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 64<<10 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NewS3 starts an S3 server on a free loopback port; it stops with the test.
func NewS3(t testing.TB) *S3 { t.Helper(); return NewS3On(t, "127.0.0.1") }

// NewS3On starts an S3 server on a free port of host, e.g. the test
// machines' bridge address Machines.Gateway.
func NewS3On(t testing.TB, host string) *S3 {
	t.Helper()
	bin := VersityGWBin()
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("the S3 server versitygw is not installed at %s, so this test cannot run (hack/test.sh builds it: GOBIN=%s CGO_ENABLED=0 go install github.com/versity/versitygw/cmd/versitygw@%s): %v",
			bin, filepath.Dir(bin), VersityGWVersion, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("S3 server: no free port on %s: %v", host, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &S3{
		AccessKey: "tend-" + randomHex(t, 8),
		SecretKey: randomHex(t, 20),
		Dir:       t.TempDir(),
		addr:      net.JoinHostPort(host, strconv.Itoa(port)),
	}
	s.Endpoint = "http://" + s.addr
	t.Cleanup(s.Stop)
	s.Start(t)
	return s
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Start starts the server again after Stop, on the same address and
// data, and waits until it answers. It fails t when it cannot.
func (s *S3) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	out := &syncBuffer{}
	cmd := exec.Command(VersityGWBin(), "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.addr, "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the S3 server versitygw (hack/test.sh builds it): %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.out = cmd, done, out
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close() // any answer (403 without a signature) means it is up
			return
		}
		select {
		case <-done:
			s.cmd = nil
			t.Fatalf("the S3 server versitygw exited on start (%s; hack/test.sh builds it): %s", cmd.ProcessState, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the S3 server versitygw did not answer on %s within 15s: %v; its output: %s", s.addr, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server; its data stays for Start. Safe to call twice.
func (s *S3) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// CreateBucket creates bucket name through the S3 API.
func (s *S3) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
}

// Client is an S3 client for the server, with its credentials.
func (s *S3) Client() *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		UsePathStyle: true,
	})
}

// String is the server's endpoint, for test messages.
func (s *S3) String() string { return fmt.Sprintf("S3 %s (data %s)", s.Endpoint, s.Dir) }
