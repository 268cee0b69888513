package testenv

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// TendBinary builds tend and, beside it, the machine agent tend-node once
// per test process (static, for test machines) and returns tend's path.
func TendBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "tend-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "tend")
		for _, b := range [][2]string{{binPath, "./cmd/tend"}, {NodeBinaryBeside(binPath), "./cmd/tend-node"}} {
			cmd := exec.Command("go", "build", "-trimpath", "-o", b[0], b[1])
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
			if out, err := cmd.CombinedOutput(); err != nil {
				binErr = fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// NodeBinary returns the machine agent, tend-node, built by TendBinary.
func NodeBinary(t testing.TB) string {
	return NodeBinaryBeside(TendBinary(t))
}

// NodeBinaryBeside is where tend-node sits next to tend.
func NodeBinaryBeside(tend string) string {
	return filepath.Join(filepath.Dir(tend), "tend-node")
}

// Deb is a package for a test apt repository: a small one AptRepo builds
// from Files, or a prebuilt .deb in File (see DebianPackages).
type Deb struct {
	Name, Version string
	// Files maps paths in the package to content.
	Files map[string]string
	// File, when set, is a prebuilt .deb that goes into the repository as
	// it is; Files is then unused, and Name and Version only describe it.
	File string
}

// AptRepo builds debs with dpkg-deb (or takes their prebuilt File),
// indexes them with dpkg-scanpackages and serves the repository on the
// machines' bridge. It returns the line for /etc/apt/sources.list.d.
func (ms *Machines) AptRepo(t testing.TB, debs []Deb) string {
	t.Helper()
	for _, tool := range []string{"dpkg-deb", "dpkg-scanpackages"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the test apt repository needs %s (apt-get install dpkg-dev; the README's test command does)", tool)
		}
	}
	repo := t.TempDir()
	for _, d := range debs {
		if d.File != "" {
			if err := linkOrCopy(d.File, filepath.Join(repo, filepath.Base(d.File))); err != nil {
				t.Fatalf("put %s into the test apt repository: %v", d.File, err)
			}
			continue
		}
		src := t.TempDir()
		WriteFiles(t, src, map[string]string{"DEBIAN/control": fmt.Sprintf(
			"Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: tend tests <test@tend.invalid>\nDescription: tend test package\n", d.Name, d.Version)})
		WriteFiles(t, src, d.Files)
		out := filepath.Join(repo, fmt.Sprintf("%s_%s_all.deb", d.Name, d.Version))
		if b, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", src, out).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb: %v\n%s", err, b)
		}
	}
	idx, err := exec.Command("sh", "-c", "cd "+repo+" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null").Output()
	if err != nil {
		t.Fatalf("dpkg-scanpackages: %v", err)
	}
	if err := os.WriteFile(filepath.Join(repo, "Packages"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	url := ms.Serve(t, http.FileServer(http.Dir(repo)))
	return fmt.Sprintf("deb [trusted=yes] %s/ ./\n", url)
}

// linkOrCopy hard-links src to dst, or copies it across file systems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
