package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"tend.dev/tend/internal/model"
)

// UpdateOptions configure Update.
type UpdateOptions struct {
	// RepoURL is the ops repository; Branch defaults to its default branch.
	RepoURL, Branch string
	GitAuth         transport.AuthMethod
	Keychain        authn.Keychain
	// Insecure allows plain-HTTP registries (local ones).
	Insecure bool
	Author   object.Signature
	DryRun   bool
	// Retries bounds the rebase-and-push attempts on a moving remote (default 5).
	Retries int
	// BeforePush, when set, runs before each push attempt. Tests use it to
	// push a concurrent commit and so exercise the retry against a real server.
	BeforePush func(attempt int)
}

// UpdateResult is what Update did.
type UpdateResult struct {
	Selected map[string]string `json:"selected"`
	Changes  []Change          `json:"changes"`
	Commit   string            `json:"commit,omitempty"`
	Message  string            `json:"message,omitempty"`
	Pushed   bool              `json:"pushed"`
	Attempts int               `json:"attempts,omitempty"`
}

// Update picks the newest allowed tag for every ImagePolicy in the ops
// repository, rewrites the marked references, and commits and pushes. A
// registry or policy error stops everything before a commit is made. When
// the remote moved meanwhile, it rebases (re-applies the rewrite on the new
// head) and retries; it never force-pushes.
func Update(ctx context.Context, o UpdateOptions) (*UpdateResult, error) {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	dir, err := os.MkdirTemp("", "tend-image-update-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	co := &git.CloneOptions{URL: o.RepoURL, Auth: o.GitAuth, SingleBranch: true, Tags: git.NoTags}
	if o.Branch != "" {
		co.ReferenceName = plumbing.NewBranchReferenceName(o.Branch)
	}
	repo, err := git.PlainCloneContext(ctx, dir, false, co)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("clone %s: %w", o.RepoURL, err), "check the URL and the git credentials (TEND_GIT_TOKEN); the update needs write access to the ops repository")
	}
	head, err := repo.Head()
	if err != nil {
		return nil, err
	}
	branch := head.Name()
	r, lerr := model.Load(dir)
	if r == nil {
		return nil, lerr
	}
	if len(r.ImagePolicies) == 0 {
		return nil, model.WithHint(errors.New("no ImagePolicy in the repository"), "add a file with kind: ImagePolicy naming the image and a semver range or tag pattern")
	}
	res := &UpdateResult{Selected: map[string]string{}}
	sel := Selected{}
	var errs []error
	for _, p := range r.ImagePolicies {
		tags, err := ListTags(ctx, p.Spec.Image, o.Keychain, o.Insecure)
		if err != nil {
			errs = append(errs, fmt.Errorf("ImagePolicy/%s: %w", p.Metadata.Name, err))
			continue
		}
		tag, err := Select(p, tags)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sel[p.Metadata.Name] = struct{ Image, Tag string }{p.Spec.Image, tag}
		res.Selected[p.Metadata.Name] = tag
	}
	if len(errs) > 0 {
		return res, errors.Join(errs...)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	for attempt := 1; attempt <= o.Retries; attempt++ {
		res.Attempts = attempt
		changes, err := rewriteTree(dir, sel)
		if err != nil {
			return nil, err
		}
		res.Changes = changes
		if len(changes) == 0 || o.DryRun {
			return res, nil
		}
		res.Message = commitMessage(changes)
		if _, err := wt.Add("."); err != nil {
			return nil, err
		}
		sig := o.Author
		if sig.Name == "" {
			sig = object.Signature{Name: "tend image update", Email: "image-update@tend.dev"}
		}
		sig.When = time.Now()
		hash, err := wt.Commit(res.Message, &git.CommitOptions{Author: &sig, Committer: &sig})
		if err != nil {
			return nil, err
		}
		res.Commit = hash.String()
		if o.BeforePush != nil {
			o.BeforePush(attempt)
		}
		err = repo.PushContext(ctx, &git.PushOptions{Auth: o.GitAuth, Progress: io.Discard,
			RefSpecs: []config.RefSpec{config.RefSpec(branch.String() + ":" + branch.String())}})
		if err == nil {
			res.Pushed = true
			return res, nil
		}
		if !isNonFastForward(err) {
			return res, model.WithHint(fmt.Errorf("push %s: %w", o.RepoURL, err), "check that the credentials may push to the branch")
		}
		// The remote moved: take its head and apply the rewrite again.
		if err := repo.FetchContext(ctx, &git.FetchOptions{Auth: o.GitAuth, Force: true,
			RefSpecs: []config.RefSpec{config.RefSpec("+" + branch.String() + ":refs/remotes/origin/" + branch.Short())}}); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return res, fmt.Errorf("fetch after a rejected push: %w", err)
		}
		remoteRef, err := repo.Reference(plumbing.NewRemoteReferenceName("origin", branch.Short()), true)
		if err != nil {
			return res, err
		}
		if err := wt.Reset(&git.ResetOptions{Commit: remoteRef.Hash(), Mode: git.HardReset}); err != nil {
			return res, err
		}
		res.Commit = ""
	}
	return res, model.WithHint(fmt.Errorf("push %s: the branch kept moving after %d attempts", o.RepoURL, o.Retries), "run the update again; tend never force-pushes")
}

func isNonFastForward(err error) bool {
	s := err.Error()
	return errors.Is(err, git.ErrNonFastForwardUpdate) || strings.Contains(s, "non-fast-forward") || strings.Contains(s, "fetch first")
}

// ListTags lists the tags of an image repository.
func ListTags(ctx context.Context, image string, kc authn.Keychain, insecure bool) ([]string, error) {
	repo, err := name.NewRepository(image, nameOpts(insecure)...)
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("image %q: %w", image, err), "write REGISTRY/REPOSITORY")
	}
	tags, err := remote.List(repo, remote.WithContext(ctx), remote.WithAuthFromKeychain(kc))
	if err != nil {
		return nil, registryError("list tags of "+image, err)
	}
	return tags, nil
}

func rewriteTree(dir string, sel Selected) ([]Change, error) {
	var all []Change
	err := model.WalkRepo(dir, func(p, rel string) error {
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out, changes := Rewrite(rel, data, sel)
		if len(changes) == 0 {
			return nil
		}
		all = append(all, changes...)
		return os.WriteFile(p, out, 0o644)
	})
	return all, err
}

// commitMessage says what changed, in Conventional Commits form:
// "chore(deploy): shop 1.4.2 → 1.5.0".
func commitMessage(changes []Change) string {
	type up struct{ from, to string }
	seen := map[string]up{}
	for _, c := range changes {
		if _, ok := seen[c.Policy]; !ok {
			seen[c.Policy] = up{c.From, c.To}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	line := func(n string) string {
		u := seen[n]
		if u.from == "" {
			return fmt.Sprintf("%s → %s", n, u.to)
		}
		return fmt.Sprintf("%s %s → %s", n, u.from, u.to)
	}
	if len(names) == 1 {
		return "chore(deploy): " + line(names[0])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chore(deploy): update %d images\n\n", len(names))
	for _, n := range names {
		fmt.Fprintf(&b, "- %s\n", line(n))
	}
	return b.String()
}
