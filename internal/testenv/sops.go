package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"tend.dev/tend/internal/devcluster"
)

// SopsVersion is the sops CLI the interop tests run, installed by
// hack/test.sh into the tend cache; it is the version of the sops library
// tend builds with.
const SopsVersion = "v3.13.3"

// SopsCLI returns the path of the real sops CLI, failing the test, with
// the command that installs it, when it is missing.
func SopsCLI(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(devcluster.CacheDir(), "bin", "sops")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the sops CLI is not installed at %s (hack/test.sh installs it: GOBIN=%s go install github.com/getsops/sops/v3/cmd/sops@%s): %v",
			bin, filepath.Dir(bin), SopsVersion, err)
	}
	return bin
}
