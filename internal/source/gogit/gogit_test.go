package gogit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/source/gogit"
	"tend.dev/tend/internal/testenv"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestHTTPRefs(t *testing.T) {
	srv := testenv.NewGitServer(t, "alice", "s3cret")
	wt := srv.Repo(t, "ops")
	wt.Write(t, map[string]string{"a.txt": "one"})
	first := wt.Commit(t, "feat: one")
	testenv.Git(t, wt.Dir, "tag", "v1.0.0")
	testenv.Git(t, wt.Dir, "tag", "-a", "v1.1.0", "-m", "annotated")
	wt.Write(t, map[string]string{"a.txt": "two"})
	second := wt.Commit(t, "feat: two")
	testenv.Git(t, wt.Dir, "tag", "v2.0.0")
	testenv.Git(t, wt.Dir, "push", "-q", "--tags", "origin")

	tests := []struct {
		name, ref, wantRef, wantID, wantFile string
	}{
		{"default branch", "", "main", second, "two"},
		{"branch", "main", "main", second, "two"},
		{"tag", "v1.0.0", "v1.0.0", first, "one"},
		{"annotated tag peels to its commit", "tag:v1.1.0", "v1.1.0", first, "one"},
		{"semver range", ">=1.0.0 <2.0.0", "v1.1.0", first, "one"},
		{"commit", first, "", first, "one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := source.Open(srv.URL+"/ops.git", source.Options{Ref: tc.ref, Username: "alice", Password: "s3cret", CacheDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			rev, err := src.Resolve(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if rev.Ref != tc.wantRef || rev.ID != "sha1:"+tc.wantID {
				t.Fatalf("Resolve = %+v, want ref %q id %s", rev, tc.wantRef, tc.wantID)
			}
			dir, err := src.Checkout(ctx(t), rev)
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "a.txt"))
			if err != nil || string(b) != tc.wantFile {
				t.Fatalf("a.txt = %q, %v; want %q", b, err, tc.wantFile)
			}
		})
	}
}

func TestShallowAndFetchOnlyWhenMoved(t *testing.T) {
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "ops")
	for i := range 5 {
		wt.Write(t, map[string]string{"a.txt": fmt.Sprint(i)})
		wt.Commit(t, fmt.Sprintf("fix: %d", i))
	}
	cache := t.TempDir()
	src, err := source.Open(srv.URL+"/ops.git", source.Options{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := src.Resolve(ctx(t))
	dir, err := src.Checkout(ctx(t), rev)
	if err != nil {
		t.Fatal(err)
	}
	// A shallow clone holds one commit, not the history.
	if n := strings.TrimSpace(testenv.Git(t, dir, "rev-list", "--count", "HEAD")); n != "1" {
		t.Errorf("clone has %s commits, want 1 (shallow)", n)
	}
	marker := filepath.Join(dir, "marker")
	os.WriteFile(marker, nil, 0o600)
	rev2, _ := src.Resolve(ctx(t))
	dir2, err := src.Checkout(ctx(t), rev2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir2, "marker")); err != nil || rev2 != rev {
		t.Errorf("unchanged remote was fetched again (dir %s → %s)", dir, dir2)
	}
	wt.Write(t, map[string]string{"a.txt": "moved"})
	wt.Commit(t, "fix: moved")
	rev3, _ := src.Resolve(ctx(t))
	if rev3 == rev {
		t.Fatal("Resolve did not see the new commit")
	}
	dir3, err := src.Checkout(ctx(t), rev3)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir3, "a.txt")); string(b) != "moved" {
		t.Errorf("a.txt = %q after the remote moved", b)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("old checkout %s was not cleaned up", dir)
	}
}

func TestBadInput(t *testing.T) {
	srv := testenv.NewGitServer(t, "alice", "s3cret")
	wt := srv.Repo(t, "ops")
	wt.Write(t, map[string]string{"a.txt": "x"})
	wt.Commit(t, "feat: x")
	tests := []struct {
		name, url string
		opts      source.Options
		wantErr   string
		wantHint  string
	}{
		{"bad credentials", srv.URL + "/ops.git", source.Options{Username: "alice", Password: "wrong"}, "authentication", "credentials were refused"},
		{"no credentials", srv.URL + "/ops.git", source.Options{}, "authentication", "credentials were refused"},
		{"unreachable remote", "http://127.0.0.1:1/ops.git", source.Options{}, "connection refused", "unreachable"},
		{"missing branch", srv.URL + "/ops.git", source.Options{Username: "alice", Password: "s3cret", Ref: "nope"}, `revision "nope" not found`, "the remote has: main"},
		{"no tag in range", srv.URL + "/ops.git", source.Options{Username: "alice", Password: "s3cret", Ref: ">=5.0.0"}, "no tag", "push a tag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.CacheDir = t.TempDir()
			src, err := source.Open(tc.url, tc.opts)
			if err == nil {
				_, err = src.Resolve(ctx(t))
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
			if h := model.HintOf(err); !strings.Contains(h, tc.wantHint) {
				t.Errorf("hint = %q, want it to contain %q", h, tc.wantHint)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestSSHPinnedHostKey(t *testing.T) {
	sshd := testenv.NewSSHD(t)
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "ops")
	wt.Write(t, map[string]string{"a.txt": "over ssh"})
	wt.Commit(t, "feat: ssh")
	url := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", sshd.Port, wt.Bare)

	src, err := source.Open(url, source.Options{SSHKeyFile: sshd.ClientKey, KnownHostsFile: sshd.KnownHosts, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := src.Resolve(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := src.Checkout(ctx(t), rev)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(b) != "over ssh" {
		t.Fatalf("a.txt = %q", b)
	}

	t.Run("host key mismatch", func(t *testing.T) {
		src, err := source.Open(url, source.Options{SSHKeyFile: sshd.ClientKey, KnownHostsFile: sshd.WrongKnownHosts(t), CacheDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Resolve(ctx(t))
		if err == nil || !strings.Contains(model.HintOf(err), "host key does not match") {
			t.Fatalf("err = %v (hint %q), want a host key mismatch", err, model.HintOf(err))
		}
	})
	t.Run("no known_hosts", func(t *testing.T) {
		_, err := source.Open(url, source.Options{SSHKeyFile: sshd.ClientKey})
		if err == nil || !strings.Contains(model.HintOf(err), "never trusts an unknown host key") {
			t.Fatalf("err = %v, want a refusal to connect without a pinned key", err)
		}
	})
}

func TestRedact(t *testing.T) {
	if got := gogit.Redact("https://bob:tok@example.test/ops.git"); strings.Contains(got, "tok") {
		t.Errorf("Redact kept the password: %s", got)
	}
}

// TestCanPush asks a real git http-backend whether credentials may push,
// without pushing.
func TestCanPush(t *testing.T) {
	srv := testenv.NewGitServer(t, "alice", "s3cret")
	wt := srv.Repo(t, "ops")
	wt.Write(t, map[string]string{"a.txt": "one"})
	head := wt.Commit(t, "feat: one")
	url := srv.URL + "/ops.git"
	tests := []struct {
		name     string
		readOnly bool
		opts     source.Options
		want     bool
	}{
		{"writable", false, source.Options{Username: "alice", Password: "s3cret"}, true},
		{"read-only token", true, source.Options{Username: "alice", Password: "s3cret"}, false},
		{"no credential", false, source.Options{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv.SetReadOnly(tc.readOnly)
			got, err := gogit.CanPush(ctx(t), url, tc.opts)
			if err != nil || got != tc.want {
				t.Fatalf("CanPush = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	if got := strings.TrimSpace(testenv.Git(t, wt.Bare, "rev-parse", "main")); got != head {
		t.Errorf("the check changed the repository: main is %s, want %s", got, head)
	}
	if _, err := gogit.CanPush(ctx(t), "http://127.0.0.1:1/ops.git", source.Options{}); err == nil {
		t.Error("an unreachable remote gave no error")
	}
}
