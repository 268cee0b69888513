package release

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"tend.dev/tend/internal/model"
)

// Repo is a git work tree to release from.
type Repo struct {
	dir  string
	repo *git.Repository
}

// Open opens the git repository containing dir.
func Open(dir string) (*Repo, error) {
	r, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("open git repository %s: %w", dir, err), "run tend release inside a git work tree, or pass --dir")
	}
	wt, err := r.Worktree()
	if err != nil {
		return nil, err
	}
	return &Repo{dir: wt.Filesystem.Root(), repo: r}, nil
}

// Plan is what a release would do, computed without writing anything.
type Plan struct {
	// Last is the previous stable release, nil when there is none.
	Last    *Tag   `json:"-"`
	LastTag string `json:"lastTag,omitempty"`
	// Version is the next version; empty when there is nothing to release.
	Version string   `json:"version,omitempty"`
	Tag     string   `json:"tag,omitempty"`
	Bump    string   `json:"bump"`
	Commits []Commit `json:"commits"`
	// Notes lists tags ignored because they are not semver.
	Ignored []string `json:"ignoredTags,omitempty"`
	// Invalid lists commits that are not Conventional Commits.
	Invalid []Commit `json:"invalid,omitempty"`
	Head    string   `json:"head"`
}

// Releasable reports whether the plan has a version.
func (p *Plan) Releasable() bool { return p.Version != "" }

// PlanOptions select what to release.
type PlanOptions struct {
	Options
	// Path limits a monorepo release to commits touching it (relative to
	// the repository root).
	Path string
}

// Plan reads the tags and the commits since the last release.
func (r *Repo) Plan(o PlanOptions) (*Plan, error) {
	head, err := r.repo.Head()
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("read HEAD: %w", err), "the repository needs at least one commit")
	}
	tags, ignored, err := r.tags(o.TagPrefix)
	if err != nil {
		return nil, err
	}
	p := &Plan{Head: head.Hash().String(), Ignored: ignored}
	// The last stable release reachable from HEAD.
	reachable := map[string]bool{}
	iter, err := r.repo.Log(&git.LogOptions{From: head.Hash()})
	if err != nil {
		return nil, err
	}
	var history []*object.Commit
	_ = iter.ForEach(func(c *object.Commit) error {
		reachable[c.Hash.String()] = true
		history = append(history, c)
		return nil
	})
	var stable []Tag
	var all []*semver.Version
	for _, t := range tags {
		all = append(all, t.Version)
		if reachable[t.Commit] && t.Version.Prerelease() == "" {
			stable = append(stable, t)
		}
	}
	p.Last = Latest(stable, false)
	stop := ""
	if p.Last != nil {
		stop = p.Last.Commit
		p.LastTag = p.Last.Name
	}
	for _, c := range history {
		if c.Hash.String() == stop {
			break
		}
		if o.Path != "" {
			touches, err := touchesPath(c, o.Path)
			if err != nil {
				return nil, err
			}
			if !touches {
				continue
			}
		}
		pc := Parse(c.Hash.String(), c.Message)
		if len(c.ParentHashes) > 1 {
			pc.Merge = true
		}
		p.Commits = append(p.Commits, pc)
		if pc.Err != "" && !pc.Merge {
			p.Invalid = append(p.Invalid, pc)
		}
	}
	var last *semver.Version
	if p.Last != nil {
		last = p.Last.Version
	}
	v, bump, ok, err := Next(last, p.Commits, all, o.Options)
	if err != nil {
		return nil, err
	}
	p.Bump = bump.String()
	if ok {
		p.Version = v.String()
		p.Tag = o.TagPrefix + v.String()
	}
	return p, nil
}

// tags returns the semver tags with the prefix, and the names of tags
// with the prefix that are not semver.
func (r *Repo) tags(prefix string) ([]Tag, []string, error) {
	iter, err := r.repo.Tags()
	if err != nil {
		return nil, nil, err
	}
	var out []Tag
	var ignored []string
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		name := ref.Name().Short()
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		rest := strings.TrimPrefix(name, prefix)
		if strings.Contains(rest, "/") {
			return nil // another path's tags in a monorepo
		}
		v, err := semver.StrictNewVersion(rest)
		if err != nil {
			ignored = append(ignored, name)
			return nil
		}
		commit := ref.Hash()
		if to, err := r.repo.TagObject(ref.Hash()); err == nil {
			c, err := to.Commit()
			if err != nil {
				return nil
			}
			commit = c.Hash
		}
		out = append(out, Tag{Name: name, Version: v, Commit: commit.String()})
		return nil
	})
	return out, ignored, err
}

// touchesPath reports whether c changed a file under path.
func touchesPath(c *object.Commit, path string) (bool, error) {
	path = strings.TrimSuffix(filepath.ToSlash(path), "/") + "/"
	tree, err := c.Tree()
	if err != nil {
		return false, err
	}
	var parentTree *object.Tree
	if c.NumParents() > 0 {
		parent, err := c.Parent(0)
		if err != nil {
			return false, err
		}
		if parentTree, err = parent.Tree(); err != nil {
			return false, err
		}
	}
	changes, err := object.DiffTree(parentTree, tree)
	if err != nil {
		return false, err
	}
	for _, ch := range changes {
		if strings.HasPrefix(ch.From.Name+"/", path) || strings.HasPrefix(ch.To.Name, path) || strings.HasPrefix(ch.From.Name, path) {
			return true, nil
		}
	}
	return false, nil
}

// Result is what Release did.
type Result struct {
	Plan
	Changelog string `json:"changelog"`
	Commit    string `json:"releaseCommit,omitempty"`
	Pushed    bool   `json:"pushed"`
}

// ReleaseOptions configure Release.
type ReleaseOptions struct {
	PlanOptions
	// Changelog is the file to prepend notes to, relative to the repository root.
	Changelog string
	CommitURL string
	Author    object.Signature
	Push      bool
	Remote    string
	Auth      transport.AuthMethod
	Now       time.Time
}

// Release writes the changelog, commits "chore(release): <tag>", creates an
// annotated tag and, when asked, pushes both. The work tree must be clean.
func (r *Repo) Release(o ReleaseOptions) (*Result, error) {
	p, err := r.Plan(o.PlanOptions)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: *p}
	if !p.Releasable() {
		return res, nil
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	notes := Notes(p.Tag, o.Now, p.Commits, o.CommitURL)
	res.Changelog = notes
	wt, err := r.repo.Worktree()
	if err != nil {
		return nil, err
	}
	st, err := wt.Status()
	if err != nil {
		return nil, err
	}
	if !st.IsClean() {
		return nil, model.WithHint(errors.New("the work tree has uncommitted changes"), "commit or stash them; a release commit must contain only the changelog")
	}
	if o.Changelog == "" {
		o.Changelog = "CHANGELOG.md"
	}
	if o.Path != "" && !strings.Contains(o.Changelog, "/") {
		o.Changelog = filepath.ToSlash(filepath.Join(o.Path, o.Changelog))
	}
	file := filepath.Join(r.dir, filepath.FromSlash(o.Changelog))
	old, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, []byte(PrependChangelog(string(old), notes)), 0o644); err != nil {
		return nil, err
	}
	if _, err := wt.Add(o.Changelog); err != nil {
		return nil, err
	}
	sig := o.Author
	if sig.Name == "" {
		sig = object.Signature{Name: "tend release", Email: "release@tend.dev"}
	}
	sig.When = o.Now
	hash, err := wt.Commit("chore(release): "+p.Tag, &git.CommitOptions{Author: &sig, Committer: &sig})
	if err != nil {
		return nil, fmt.Errorf("commit release: %w", err)
	}
	res.Commit = hash.String()
	if _, err := r.repo.CreateTag(p.Tag, hash, &git.CreateTagOptions{Tagger: &sig, Message: p.Tag + "\n\n" + notes}); err != nil {
		return nil, fmt.Errorf("tag %s: %w", p.Tag, err)
	}
	if o.Push {
		remote := o.Remote
		if remote == "" {
			remote = "origin"
		}
		head, _ := r.repo.Head()
		specs := []config.RefSpec{
			config.RefSpec(fmt.Sprintf("%s:%s", head.Name(), head.Name())),
			config.RefSpec(fmt.Sprintf("refs/tags/%s:refs/tags/%s", p.Tag, p.Tag)),
		}
		if err := r.repo.Push(&git.PushOptions{RemoteName: remote, RefSpecs: specs, Auth: o.Auth, Progress: io.Discard}); err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return res, model.WithHint(fmt.Errorf("push %s: %w", p.Tag, err), "the release commit and tag exist locally; pull, then push them with git push --follow-tags (never force)")
		}
		res.Pushed = true
	}
	return res, nil
}

// Range parses the commits in "A..B" (or a single revision: its history),
// newest first, for lint.
func (r *Repo) Range(spec string) ([]Commit, error) {
	from, to, found := strings.Cut(spec, "..")
	if !found {
		to, from = spec, ""
	}
	if to == "" {
		to = "HEAD"
	}
	toHash, err := r.repo.ResolveRevision(plumbing.Revision(to))
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("resolve %s: %w", to, err), "give a range like origin/main..HEAD")
	}
	stop := ""
	if from != "" {
		h, err := r.repo.ResolveRevision(plumbing.Revision(from))
		if err != nil {
			return nil, model.WithHint(fmt.Errorf("resolve %s: %w", from, err), "give a range like origin/main..HEAD")
		}
		stop = h.String()
	}
	iter, err := r.repo.Log(&git.LogOptions{From: *toHash})
	if err != nil {
		return nil, err
	}
	var out []Commit
	err = iter.ForEach(func(c *object.Commit) error {
		if c.Hash.String() == stop {
			return errStop
		}
		pc := Parse(c.Hash.String(), c.Message)
		if len(c.ParentHashes) > 1 {
			pc.Merge = true
		}
		out = append(out, pc)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return out, nil
}

var errStop = errors.New("stop")

// Branch returns the checked-out branch name.
func (r *Repo) Branch() (string, error) {
	h, err := r.repo.Head()
	if err != nil {
		return "", err
	}
	return h.Name().Short(), nil
}
