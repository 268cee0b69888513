package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/authn"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/testenv"
)

func policy(semverRange, regex, extract, order string) *model.ImagePolicy {
	p := &model.ImagePolicy{Metadata: model.ObjectMeta{Name: "shop"}, Spec: model.ImagePolicySpec{Image: "r.test/shop"}}
	if semverRange != "" {
		p.Spec.Semver = &model.SemverPolicy{Range: semverRange}
	} else {
		p.Spec.Pattern = &model.PatternPolicy{Regex: regex, Extract: extract, Order: order}
	}
	return p
}

func TestSelect(t *testing.T) {
	tags := []string{"1.4.2", "v1.5.0", "1.6.0-rc.1", "2.0.0", "latest", "main-100", "main-99", "main-1000", "feature-7"}
	tests := []struct {
		name string
		p    *model.ImagePolicy
		want string
		err  string
	}{
		{"semver range", policy(">=1.0.0 <2.0.0", "", "", ""), "v1.5.0", ""},
		{"caret", policy("^2", "", "", ""), "2.0.0", ""},
		{"prereleases only when asked", func() *model.ImagePolicy {
			p := policy(">=1.5.0 <2", "", "", "")
			p.Spec.Semver.Prereleases = true
			return p
		}(), "1.6.0-rc.1", ""},
		{"pattern numerical", policy("", `main-(?P<n>[0-9]+)`, "$n", "numerical"), "main-1000", ""},
		{"pattern alphabetical", policy("", `main-[0-9]+`, "", ""), "main-99", ""},
		{"no match", policy(">=3.0.0", "", "", ""), "", "no tag of r.test/shop matches semver >=3.0.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Select(tc.p, tags)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || model.HintOf(err) == "" {
					t.Fatalf("err = %v, want %q with a hint", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Select = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRewriteGolden(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
      - name: shop
        image: r.test/shop:1.4.2 # {"$imagepolicy": "shop"}
      - name: sidecar
        image: "r.test/shop:1.4.2" # {"$imagepolicy": "flux-system:shop"}
      - name: other
        image: r.test/other:1.0 # {"$imagepolicy": "other"}
  tag: 1.4.2 # {"$imagepolicy": "shop:tag"}
  repo: r.test/old # {"$imagepolicy": "shop:name"}
`
	sel := Selected{"shop": {Image: "r.test/shop", Tag: "1.5.0"}}
	out, changes := Rewrite("deploy.yaml", []byte(in), sel)
	want := strings.NewReplacer(
		"image: r.test/shop:1.4.2 #", "image: r.test/shop:1.5.0 #",
		`image: "r.test/shop:1.4.2" #`, `image: "r.test/shop:1.5.0" #`,
		"tag: 1.4.2 #", "tag: 1.5.0 #",
		"repo: r.test/old #", "repo: r.test/shop #").Replace(in)
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("(-want +got)\n%s", diff)
	}
	if len(changes) != 4 || changes[0].From != "1.4.2" || changes[0].Line != 8 {
		t.Errorf("changes = %+v", changes)
	}
	again, changes := Rewrite("deploy.yaml", out, sel)
	if len(changes) != 0 || string(again) != string(out) {
		t.Error("a second rewrite must change nothing")
	}
	k := "resources: [deploy.yaml]\nimages:\n  - name: r.test/shop\n    newTag: 1.4.2 # pinned by tend\n  - name: r.test/other\n    newTag: \"3\"\n"
	out, changes = Rewrite("app/kustomization.yaml", []byte(k), sel)
	if !strings.Contains(string(out), "newTag: \"1.5.0\" # pinned by tend\n") || !strings.Contains(string(out), "newTag: \"3\"") || len(changes) != 1 {
		t.Errorf("kustomization:\n%s\n%+v", out, changes)
	}
}

// pushImage pushes a tiny image under each tag.
func pushImage(t *testing.T, host, repo string, tags ...string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte(repo), 0o644)
	res, err := Build(context.Background(), BuildOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		if _, err := Push(context.Background(), res, host+"/"+repo+":"+tag, authn.DefaultKeychain, true); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	reg := testenv.NewRegistry(t, "", "")
	pushImage(t, reg.Host, "shop", "1.4.2", "1.5.0", "2.0.0", "not-semver")
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "ops")
	wt.Write(t, map[string]string{
		"policies/shop.yaml":    "apiVersion: tend.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: shop}\nspec:\n  image: " + reg.Host + "/shop\n  semver: {range: \"^1\"}\n",
		"apps/shop/deploy.yaml": "image: " + reg.Host + "/shop:1.4.2 # {\"$imagepolicy\": \"shop\"}\n",
	})
	wt.Commit(t, "feat: shop")
	o := UpdateOptions{RepoURL: srv.URL + "/ops.git", Insecure: true}

	// Someone else pushes between tend's clone and its push.
	o.BeforePush = func(attempt int) {
		if attempt == 1 {
			other := t.TempDir()
			testenv.Git(t, "", "clone", "-q", srv.URL+"/ops.git", other)
			testenv.Git(t, other, "commit", "-q", "--allow-empty", "-m", "fix: concurrent change")
			testenv.Git(t, other, "push", "-q", "origin", "HEAD:main")
		}
	}
	res, err := Update(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Pushed || res.Attempts != 2 || res.Message != "chore(deploy): shop 1.4.2 → 1.5.0" {
		t.Fatalf("update = %+v", res)
	}
	testenv.Git(t, wt.Dir, "pull", "-q", "origin", "main")
	log := testenv.Git(t, wt.Dir, "log", "--format=%s")
	if !strings.Contains(log, "fix: concurrent change") || !strings.HasPrefix(log, "chore(deploy): shop 1.4.2 → 1.5.0") {
		t.Fatalf("history lost the concurrent commit or the update:\n%s", log)
	}
	b, _ := os.ReadFile(filepath.Join(wt.Dir, "apps/shop/deploy.yaml"))
	if !strings.Contains(string(b), "/shop:1.5.0") {
		t.Fatalf("deploy.yaml = %s", b)
	}
	head := testenv.Git(t, wt.Dir, "rev-parse", "HEAD")
	o.BeforePush = nil

	t.Run("nothing changed: no commit", func(t *testing.T) {
		res, err := Update(ctx, o)
		if err != nil || res.Commit != "" || len(res.Changes) != 0 {
			t.Fatalf("second update = %+v, %v", res, err)
		}
		testenv.Git(t, wt.Dir, "fetch", "-q", "origin")
		if testenv.Git(t, wt.Dir, "rev-parse", "origin/main") != head {
			t.Error("a commit was made with nothing to change")
		}
	})
	t.Run("unreachable registry: no commit", func(t *testing.T) {
		wt.Write(t, map[string]string{"policies/other.yaml": "apiVersion: tend.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: other}\nspec:\n  image: 127.0.0.1:1/other\n  semver: {range: \"*\"}\n"})
		before := wt.Commit(t, "chore: other policy")
		_, err := Update(ctx, o)
		if err == nil || !strings.Contains(model.HintOf(err), "unreachable") {
			t.Fatalf("err = %v", err)
		}
		testenv.Git(t, wt.Dir, "fetch", "-q", "origin")
		if strings.TrimSpace(testenv.Git(t, wt.Dir, "rev-parse", "origin/main")) != before {
			t.Error("a commit was made although the registry failed")
		}
		wt.Remove(t, "policies/other.yaml")
		wt.Commit(t, "chore: drop other")
	})
	t.Run("policy matches no tag: no commit", func(t *testing.T) {
		wt.Write(t, map[string]string{"policies/shop.yaml": "apiVersion: tend.dev/v1alpha1\nkind: ImagePolicy\nmetadata: {name: shop}\nspec:\n  image: " + reg.Host + "/shop\n  semver: {range: \">=9\"}\n"})
		before := wt.Commit(t, "chore: impossible policy")
		_, err := Update(ctx, o)
		if err == nil || !strings.Contains(err.Error(), "no tag of") {
			t.Fatalf("err = %v", err)
		}
		testenv.Git(t, wt.Dir, "fetch", "-q", "origin")
		if strings.TrimSpace(testenv.Git(t, wt.Dir, "rev-parse", "origin/main")) != before {
			t.Error("a commit was made although the policy matched nothing")
		}
	})
	t.Run("registry refuses auth", func(t *testing.T) {
		authed := testenv.NewRegistry(t, "u", "p")
		_, err := ListTags(ctx, authed.Host+"/shop", authn.DefaultKeychain, true)
		if err == nil || !strings.Contains(model.HintOf(err), "refused the credentials") {
			t.Fatalf("err = %v", err)
		}
	})
	_ = http.BasicAuth{}
	_ = time.Second
}
