package cli_test

import (
	"strings"
	"testing"

	"tend.dev/tend/internal/testenv"
)

func commit(t *testing.T, wt *testenv.WorkTree, file, msg string) {
	t.Helper()
	wt.Write(t, map[string]string{file: msg + "\n"})
	testenv.Git(t, wt.Dir, "add", "-A")
	testenv.Git(t, wt.Dir, "commit", "-q", "-m", msg)
}

func TestRelease(t *testing.T) {
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "app")
	testenv.Git(t, wt.Dir, "remote", "set-url", "origin", srv.URL+"/app.git")
	commit(t, wt, "a.txt", "chore: init")
	commit(t, wt, "a.txt", "fix: first fix")
	d := []string{"--dir", wt.Dir}

	// No tags yet: 0.1.0, or what --initial-version says.
	if code, out, _ := run(t, append([]string{"release", "next"}, d...)...); code != 0 || strings.TrimSpace(out) != "0.1.0" {
		t.Fatalf("next with no tags = %d %q", code, out)
	}
	if _, out, _ := run(t, append([]string{"release", "next", "--initial-version", "1.0.0"}, d...)...); strings.TrimSpace(out) != "1.0.0" {
		t.Fatalf("next --initial-version = %q", out)
	}
	testenv.Git(t, wt.Dir, "tag", "v1.0.0")
	testenv.Git(t, wt.Dir, "tag", "v2") // not semver: ignored with a note
	commit(t, wt, "a.txt", "feat(api): add paging")
	commit(t, wt, "b.txt", "update stuff") // not conventional: no release, listed by lint
	commit(t, wt, "c.txt", "docs: readme")

	code, out, stderr := run(t, append([]string{"release", "next"}, d...)...)
	if code != 0 || strings.TrimSpace(out) != "1.1.0" {
		t.Fatalf("next = %d %q %s", code, out, stderr)
	}
	if !strings.Contains(stderr, "tag v2 is not semver; ignored") || !strings.Contains(stderr, `"update stuff" is not a Conventional Commit`) {
		t.Errorf("notes missing: %s", stderr)
	}
	head := testenv.Git(t, wt.Dir, "rev-parse", "HEAD")
	code, out, _ = run(t, append([]string{"release", "--dry-run"}, d...)...)
	if code != 0 || !strings.Contains(out, "would release v1.1.0") || !strings.Contains(out, "**api:** add paging") {
		t.Fatalf("dry-run = %d\n%s", code, out)
	}
	if testenv.Git(t, wt.Dir, "rev-parse", "HEAD") != head {
		t.Fatal("dry-run wrote a commit")
	}
	code, out, stderr = run(t, append([]string{"release", "--push"}, d...)...)
	if code != 0 || !strings.Contains(out, "released v1.1.0") || !strings.Contains(out, "pushed") {
		t.Fatalf("release --push = %d\n%s%s", code, out, stderr)
	}
	if subj := testenv.Git(t, wt.Dir, "log", "-1", "--format=%s"); strings.TrimSpace(subj) != "chore(release): v1.1.0" {
		t.Errorf("release commit = %q", subj)
	}
	if typ := testenv.Git(t, wt.Dir, "cat-file", "-t", "v1.1.0"); strings.TrimSpace(typ) != "tag" {
		t.Errorf("v1.1.0 is a %s, want an annotated tag", typ)
	}
	remote := testenv.Git(t, wt.Dir, "ls-remote", "origin")
	if !strings.Contains(remote, "refs/tags/v1.1.0") {
		t.Errorf("tag not pushed: %s", remote)
	}
	if cl := testenv.Git(t, wt.Dir, "show", "HEAD:CHANGELOG.md"); !strings.Contains(cl, "## v1.1.0") || !strings.Contains(cl, "### Features") {
		t.Errorf("CHANGELOG.md = %s", cl)
	}
	// Nothing since: exit 1, documented.
	if code, _, stderr := run(t, append([]string{"release", "next"}, d...)...); code != 1 || !strings.Contains(stderr, "nothing to release since v1.1.0") {
		t.Fatalf("next after release = %d %s", code, stderr)
	}
	// Lint: the range lists the bad message with an explanation; exit 2.
	code, out, stderr = run(t, append([]string{"release", "lint", "v1.0.0..HEAD"}, d...)...)
	if code != 2 || !strings.Contains(stderr, `"update stuff": no type`) || !strings.Contains(out, "1 not Conventional") {
		t.Fatalf("lint = %d\n%s%s", code, out, stderr)
	}

	t.Run("a concurrent push is never forced", func(t *testing.T) {
		other := t.TempDir()
		testenv.Git(t, "", "clone", "-q", srv.URL+"/app.git", other)
		testenv.Git(t, other, "commit", "-q", "--allow-empty", "-m", "fix: from elsewhere")
		testenv.Git(t, other, "push", "-q", "origin", "HEAD:main")
		commit(t, wt, "d.txt", "fix: local")
		code, _, stderr := run(t, append([]string{"release", "--push"}, d...)...)
		if code != 2 || !strings.Contains(stderr, "never force") {
			t.Fatalf("push over a moved remote = %d %s", code, stderr)
		}
		if !strings.Contains(testenv.Git(t, wt.Dir, "ls-remote", "origin", "main"), strings.TrimSpace(testenv.Git(t, other, "rev-parse", "HEAD"))) {
			t.Error("the remote's commit was overwritten")
		}
	})
}

func TestReleaseMonorepoAndChannel(t *testing.T) {
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "mono")
	commit(t, wt, "services/api/main.go", "feat(api): first")
	commit(t, wt, "services/web/main.go", "feat(web)!: break web")
	d := []string{"--dir", wt.Dir}
	code, out, _ := run(t, append([]string{"release", "--path", "services/api"}, d...)...)
	if code != 0 || !strings.Contains(out, "released api/v0.1.0") {
		t.Fatalf("monorepo release = %d %s", code, out)
	}
	commit(t, wt, "services/web/x.go", "fix(web): more")
	if code, _, _ := run(t, append([]string{"release", "next", "--path", "services/api"}, d...)...); code != 1 {
		t.Errorf("api has no new commits, next = %d", code)
	}
	commit(t, wt, "services/api/y.go", "fix(api): bug")
	if _, out, _ := run(t, append([]string{"release", "next", "--path", "services/api"}, d...)...); strings.TrimSpace(out) != "0.1.1" {
		t.Errorf("api next = %q, want 0.1.1 (web's breaking change must not count)", out)
	}
	testenv.Git(t, wt.Dir, "checkout", "-q", "-b", "next")
	args := append([]string{"release", "--path", "services/api", "--channel-branch", "next=rc"}, d...)
	if code, out, _ := run(t, args...); code != 0 || !strings.Contains(out, "api/v0.1.1-rc.1") {
		t.Fatalf("rc.1 = %d %s", code, out)
	}
	commit(t, wt, "services/api/z.go", "fix(api): another")
	if code, out, _ := run(t, args...); code != 0 || !strings.Contains(out, "api/v0.1.1-rc.2") {
		t.Fatalf("rc.2 = %d %s", code, out)
	}
}

func TestLintStdinAndHookFile(t *testing.T) {
	var code int
	code, _, stderr := runStdin(t, "wip stuff\n# a comment git adds\n", "release", "lint", "-")
	if code != 2 || !strings.Contains(stderr, "no type") {
		t.Fatalf("lint - = %d %s", code, stderr)
	}
	code, _, _ = runStdin(t, "fix(parser): handle tabs\n\nBody.\n", "release", "lint", "-")
	if code != 0 {
		t.Fatalf("valid message rejected: %d", code)
	}
}
