// Package testenv starts the real components tests run against: the
// Kubernetes control plane (devcluster), a git server over HTTP (git
// http-backend) and over SSH (sshd). A component that cannot start fails
// the test and says why; nothing is skipped silently.
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tend.dev/tend/internal/devcluster"
)

var (
	cpOnce sync.Once
	cp     *devcluster.Cluster
	cpErr  error
)

// ControlPlane returns the package's control plane, started on first use
// and shared by the tests of one package. Call StopControlPlane from TestMain.
func ControlPlane(t testing.TB) *devcluster.Cluster {
	t.Helper()
	cpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tend-cp-")
		if err != nil {
			cpErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cp, cpErr = devcluster.Start(ctx, devcluster.Options{Dir: dir})
	})
	if cpErr != nil {
		t.Fatalf("the control plane could not start, so this test cannot run: %v", cpErr)
	}
	return cp
}

// StopControlPlane stops the shared control plane, if it was started, and
// removes its data unless keep is set.
func StopControlPlane(keep bool) {
	if cp != nil {
		cp.Stop()
		if !keep {
			os.RemoveAll(cp.Dir)
		}
	}
}

// Main runs a package's tests and stops the shared components afterwards;
// when a test failed, the control plane's logs are kept for the post-mortem.
func Main(m *testing.M) {
	code := m.Run()
	StopControlPlane(code != 0)
	if code != 0 && cp != nil {
		fmt.Fprintln(os.Stderr, "control plane logs are kept in", filepath.Join(cp.Dir, "log"))
	}
	os.Exit(code)
}

// NewControlPlane starts a further, separate control plane for tests that
// need several clusters; it stops when the test ends.
func NewControlPlane(t testing.TB) *devcluster.Cluster {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := devcluster.Start(ctx, devcluster.Options{Dir: dir})
	if err != nil {
		t.Fatalf("a second control plane could not start, so this test cannot run: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}
