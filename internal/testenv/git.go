package testenv

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// GitServer serves bare repositories under Root with git http-backend.
type GitServer struct {
	Root string
	URL  string
	// User and Password, when set, are required (basic auth).
	User, Password string

	readOnly atomic.Bool
}

// SetReadOnly makes the server refuse pushes over HTTP (403), as a forge
// does for a read-only deploy token. Work trees still push to the bare
// path.
func (s *GitServer) SetReadOnly(ro bool) { s.readOnly.Store(ro) }

// NewGitServer starts git http-backend on loopback for the test.
func NewGitServer(t testing.TB, user, password string) *GitServer {
	t.Helper()
	return NewGitServerOn(t, "127.0.0.1", user, password)
}

// NewGitServerOn is NewGitServer listening on host (a test bridge's
// address, so that test machines can fetch).
func NewGitServerOn(t testing.TB, host, user, password string) *GitServer {
	t.Helper()
	backend, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git is needed for the git server (apt-get install git): %v", err)
	}
	bin := filepath.Join(strings.TrimSpace(string(backend)), "git-http-backend")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("git http-backend not found at %s: %v", bin, err)
	}
	s := &GitServer{Root: t.TempDir(), User: user, Password: password}
	h := &cgi.Handler{Path: bin, Env: []string{"GIT_PROJECT_ROOT=" + s.Root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER=tend-test"}}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.User != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(s.User)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(s.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		if s.readOnly.Load() && (r.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(r.URL.Path, "/git-receive-pack")) {
			http.Error(w, "read-only", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + ln.Addr().String()
	return s
}

// Repo creates a bare repository name.git and a work tree that pushes to
// it, and returns the work tree.
func (s *GitServer) Repo(t testing.TB, name string) *WorkTree {
	t.Helper()
	bare := filepath.Join(s.Root, name+".git")
	Git(t, "", "init", "-q", "--bare", "-b", "main", bare)
	wt := &WorkTree{Dir: t.TempDir(), Bare: bare}
	Git(t, wt.Dir, "init", "-q", "-b", "main")
	Git(t, wt.Dir, "remote", "add", "origin", bare)
	return wt
}

// WorkTree is a local clone that pushes to a bare repository.
type WorkTree struct{ Dir, Bare string }

// Write writes files (path → content) into the work tree.
func (w *WorkTree) Write(t testing.TB, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(w.Dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Remove deletes files from the work tree.
func (w *WorkTree) Remove(t testing.TB, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.RemoveAll(filepath.Join(w.Dir, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// Commit commits everything and pushes to main; it returns the commit hash.
func (w *WorkTree) Commit(t testing.TB, msg string) string {
	t.Helper()
	Git(t, w.Dir, "add", "-A")
	Git(t, w.Dir, "-c", "user.name=test", "-c", "user.email=test@example.test", "commit", "-q", "--allow-empty", "-m", msg)
	Git(t, w.Dir, "push", "-q", "origin", "HEAD:main")
	return strings.TrimSpace(Git(t, w.Dir, "rev-parse", "HEAD"))
}

// Git runs git in dir and fails the test on error.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+os.TempDir(),
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.test", "GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
