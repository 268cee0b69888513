// Package gogit is the git backend of source, built on go-git. It lists the
// remote's refs to learn whether anything moved, and fetches only then, as a
// shallow single-ref clone when the ref allows it.
package gogit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/source"
)

func init() {
	for _, s := range []string{"file", "http", "https", "ssh"} {
		source.Register(s, func(u string, o source.Options) (source.Source, error) { return New(u, o) })
	}
}

// Repo is a git remote followed at a ref.
type Repo struct {
	url  string
	ref  refSpec
	auth transport.AuthMethod
	dir  string

	mu       sync.Mutex
	current  string // checked-out directory
	anyIsTag bool   // a bare --revision name resolved to a tag
}

var _ source.Source = (*Repo)(nil)

type refKind int

const (
	refDefault refKind = iota
	refBranch
	refTag
	refSemver
	refCommit
	refAny // a bare name: branch or tag, whichever exists
)

type refSpec struct {
	kind   refKind
	name   string
	range_ *semver.Constraints
}

var hexCommit = regexp.MustCompile(`^[0-9a-f]{40}$`)

func parseRef(s string) (refSpec, error) {
	switch {
	case s == "":
		return refSpec{kind: refDefault}, nil
	case strings.HasPrefix(s, "branch:"):
		return refSpec{kind: refBranch, name: strings.TrimPrefix(s, "branch:")}, nil
	case strings.HasPrefix(s, "tag:"):
		return refSpec{kind: refTag, name: strings.TrimPrefix(s, "tag:")}, nil
	case strings.HasPrefix(s, "commit:"):
		return refSpec{kind: refCommit, name: strings.TrimPrefix(s, "commit:")}, nil
	case strings.HasPrefix(s, "semver:"):
		c, err := semver.NewConstraint(strings.TrimPrefix(s, "semver:"))
		if err != nil {
			return refSpec{}, model.WithHint(fmt.Errorf("revision %q: %w", s, err), "write a semver range such as semver:>=1.2.0 <2.0.0")
		}
		return refSpec{kind: refSemver, name: s, range_: c}, nil
	case hexCommit.MatchString(s):
		return refSpec{kind: refCommit, name: s}, nil
	case strings.ContainsAny(s, "<>=~^* ,|"):
		c, err := semver.NewConstraint(s)
		if err != nil {
			return refSpec{}, model.WithHint(fmt.Errorf("revision %q: %w", s, err), "write a semver range such as >=1.2.0 <2.0.0")
		}
		return refSpec{kind: refSemver, name: s, range_: c}, nil
	}
	return refSpec{kind: refAny, name: s}, nil
}

// New returns a Repo for a git URL.
func New(rawURL string, opts source.Options) (*Repo, error) {
	ref, err := parseRef(opts.Ref)
	if err != nil {
		return nil, err
	}
	auth, err := authFor(rawURL, opts)
	if err != nil {
		return nil, err
	}
	dir := opts.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir = filepath.Join(base, "tend", "sources")
	}
	return &Repo{url: rawURL, ref: ref, auth: auth, dir: filepath.Join(dir, cacheKey(rawURL))}, nil
}

// URL returns the remote without credentials.
func (r *Repo) URL() string { return Redact(r.url) }

// Redact removes a password from a URL.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	if _, ok := p.User.Password(); ok {
		p.User = url.UserPassword(p.User.Username(), "redacted")
	}
	return p.String()
}

func cacheKey(u string) string {
	r := strings.NewReplacer("://", "_", "/", "_", ":", "_", "@", "_")
	return r.Replace(Redact(u))
}

func authFor(rawURL string, o source.Options) (transport.AuthMethod, error) {
	switch {
	case strings.HasPrefix(rawURL, "http://") || strings.HasPrefix(rawURL, "https://"):
		if o.Token != "" {
			user := o.Username
			if user == "" {
				user = "git"
			}
			return &http.BasicAuth{Username: user, Password: o.Token}, nil
		}
		if o.Username != "" || o.Password != "" {
			return &http.BasicAuth{Username: o.Username, Password: o.Password}, nil
		}
		return nil, nil
	case strings.HasPrefix(rawURL, "ssh://") || strings.HasPrefix(rawURL, "git@"):
		if o.KnownHostsFile == "" {
			return nil, model.WithHint(errors.New("ssh source needs a pinned host key"),
				"pass --known-hosts FILE with the server's entry (ssh-keyscan HOST > FILE, then check it out of band); tend never trusts an unknown host key")
		}
		user := "git"
		if p, err := transport.NewEndpoint(rawURL); err == nil && p.User != "" {
			user = p.User
		}
		if o.SSHKeyFile == "" {
			return nil, model.WithHint(errors.New("ssh source needs a private key"), "pass --ssh-key FILE")
		}
		keys, err := gitssh.NewPublicKeysFromFile(user, o.SSHKeyFile, o.Password)
		if err != nil {
			return nil, model.WithHint(fmt.Errorf("read ssh key %s: %w", o.SSHKeyFile, err), "the key must be an unencrypted OpenSSH private key, or pass its passphrase")
		}
		cb, algos, err := pinnedHostKeys(o.KnownHostsFile, rawURL)
		if err != nil {
			return nil, err
		}
		keys.HostKeyCallbackHelper = gitssh.HostKeyCallbackHelper{HostKeyCallback: cb}
		return &pinnedKeys{PublicKeys: keys, algos: algos}, nil
	}
	return nil, nil
}

// pinnedKeys restricts the host key algorithms to those pinned for the
// host, so that the server presents the key known_hosts holds.
type pinnedKeys struct {
	*gitssh.PublicKeys
	algos []string
}

func (p *pinnedKeys) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := p.PublicKeys.ClientConfig()
	if err != nil {
		return nil, err
	}
	if len(p.algos) > 0 {
		c.HostKeyAlgorithms = p.algos
	}
	return c, nil
}

func pinnedHostKeys(file, rawURL string) (ssh.HostKeyCallback, []string, error) {
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, nil, model.WithHint(fmt.Errorf("read known_hosts %s: %w", file, err), "the file must be in OpenSSH known_hosts format")
	}
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, nil, err
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	addr := knownhosts.Normalize(net.JoinHostPort(ep.Host, fmt.Sprint(port)))
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	var algos []string
	for rest := data; len(rest) > 0; {
		_, hosts, key, _, r, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			break
		}
		rest = r
		for _, h := range hosts {
			if h == addr || knownhosts.Normalize(h) == addr {
				algos = append(algos, algorithmsFor(key.Type())...)
			}
		}
	}
	if len(algos) == 0 {
		return nil, nil, model.WithHint(fmt.Errorf("known_hosts %s has no entry for %s", file, addr),
			"add the server's host key for %s to the file", addr)
	}
	return cb, algos, nil
}

func algorithmsFor(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// Resolve lists the remote's refs (no content is fetched) and picks the one
// the ref spec names.
func (r *Repo) Resolve(ctx context.Context) (source.Revision, error) {
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{r.url}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: r.auth, PeelingOption: git.AppendPeeled})
	if err != nil {
		return source.Revision{}, r.classify("list refs of", err)
	}
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, ref := range refs {
		byName[ref.Name()] = ref
	}
	commitOf := func(name plumbing.ReferenceName) (string, bool) {
		if p, ok := byName[plumbing.ReferenceName(string(name)+"^{}")]; ok {
			return p.Hash().String(), true
		}
		if ref, ok := byName[name]; ok {
			if ref.Type() == plumbing.SymbolicReference {
				if t, ok := byName[ref.Target()]; ok {
					return t.Hash().String(), true
				}
				return "", false
			}
			return ref.Hash().String(), true
		}
		return "", false
	}
	rev := func(ref, id string) source.Revision { return source.Revision{Ref: ref, ID: "sha1:" + id} }
	switch r.ref.kind {
	case refDefault:
		head, ok := byName[plumbing.HEAD]
		if ok && head.Type() == plumbing.SymbolicReference {
			if id, ok := commitOf(head.Target()); ok {
				return rev(head.Target().Short(), id), nil
			}
		}
		for _, b := range []string{"main", "master"} {
			if id, ok := commitOf(plumbing.NewBranchReferenceName(b)); ok {
				return rev(b, id), nil
			}
		}
		return source.Revision{}, model.WithHint(fmt.Errorf("%s has no default branch", r.URL()), "pass --revision BRANCH")
	case refBranch, refAny:
		if id, ok := commitOf(plumbing.NewBranchReferenceName(r.ref.name)); ok {
			return rev(r.ref.name, id), nil
		}
		if r.ref.kind == refBranch {
			break
		}
		fallthrough
	case refTag:
		if id, ok := commitOf(plumbing.NewTagReferenceName(r.ref.name)); ok {
			r.mu.Lock()
			r.anyIsTag = true
			r.mu.Unlock()
			return rev(r.ref.name, id), nil
		}
	case refSemver:
		var best *semver.Version
		bestName := ""
		for name := range byName {
			if !name.IsTag() || strings.HasSuffix(string(name), "^{}") {
				continue
			}
			v, err := semver.NewVersion(name.Short())
			if err != nil || !r.ref.range_.Check(v) {
				continue
			}
			if best == nil || v.GreaterThan(best) {
				best, bestName = v, name.Short()
			}
		}
		if best == nil {
			return source.Revision{}, model.WithHint(fmt.Errorf("no tag of %s matches %s", r.URL(), r.ref.name), "push a tag in the range, or widen the range")
		}
		id, _ := commitOf(plumbing.NewTagReferenceName(bestName))
		return rev(bestName, id), nil
	case refCommit:
		return source.Revision{ID: "sha1:" + r.ref.name}, nil
	}
	var names []string
	for n := range byName {
		if n.IsBranch() || (n.IsTag() && !strings.HasSuffix(string(n), "^{}")) {
			names = append(names, n.Short())
		}
	}
	sort.Strings(names)
	if len(names) > 10 {
		names = append(names[:10], "…")
	}
	return source.Revision{}, model.WithHint(fmt.Errorf("revision %q not found in %s", r.ref.name, r.URL()),
		"the remote has: %s", strings.Join(names, ", "))
}

// Checkout clones rev shallowly into the cache, unless it is there already.
func (r *Repo) Checkout(ctx context.Context, rev source.Revision) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	hash := strings.TrimPrefix(rev.ID, "sha1:")
	dir := filepath.Join(r.dir, hash)
	if _, err := os.Stat(filepath.Join(dir, ".tend-complete")); err == nil {
		r.switchTo(dir)
		return dir, nil
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(r.dir, ".clone-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	opts := &git.CloneOptions{URL: r.url, Auth: r.auth, Depth: 1, SingleBranch: true, Tags: git.NoTags, NoCheckout: true}
	switch {
	case r.ref.kind == refCommit:
		opts.Depth, opts.SingleBranch = 0, false
	case rev.Ref != "":
		if r.isTag(rev) {
			opts.ReferenceName = plumbing.NewTagReferenceName(rev.Ref)
		} else {
			opts.ReferenceName = plumbing.NewBranchReferenceName(rev.Ref)
		}
	}
	repo, err := git.PlainCloneContext(ctx, tmp, false, opts)
	if err != nil {
		return "", r.classify("clone", err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return "", err
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(hash), Force: true}); err != nil {
		// The ref moved between Resolve and the clone: take what we got.
		head, herr := repo.Head()
		if herr != nil || r.ref.kind == refCommit {
			return "", model.WithHint(fmt.Errorf("checkout %s: %w", hash, err), "check that the commit exists on the remote")
		}
		if err := wt.Checkout(&git.CheckoutOptions{Hash: head.Hash(), Force: true}); err != nil {
			return "", fmt.Errorf("checkout %s: %w", head.Hash(), err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".tend-complete"), nil, 0o600); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	r.switchTo(dir)
	return dir, nil
}

func (r *Repo) isTag(rev source.Revision) bool {
	return r.ref.kind == refTag || r.ref.kind == refSemver || (r.ref.kind == refAny && r.anyIsTag)
}

// switchTo removes the previous checkout once a new one is in place.
func (r *Repo) switchTo(dir string) {
	if r.current != "" && r.current != dir {
		os.RemoveAll(r.current)
	}
	r.current = dir
}

// classify turns transport errors into errors that say what to do.
func (r *Repo) classify(op string, err error) error {
	wrapped := fmt.Errorf("%s %s: %w", op, r.URL(), err)
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		strings.Contains(err.Error(), "unable to authenticate"), strings.Contains(err.Error(), "authentication required"):
		return model.WithHint(wrapped, "the git credentials were refused: check --git-token/TEND_GIT_TOKEN, --git-username/--git-password or --ssh-key, and that they may read this repository")
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return model.WithHint(wrapped, "check the repository URL")
	case strings.Contains(err.Error(), "knownhosts") || strings.Contains(err.Error(), "host key"):
		return model.WithHint(wrapped, "the server's host key does not match the pinned entry in --known-hosts: if the server's key really changed, verify the new one out of band and update the file")
	}
	var ne net.Error
	if errors.As(err, &ne) || strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such host") ||
		strings.Contains(err.Error(), "i/o timeout") {
		return model.WithHint(wrapped, "the git remote is unreachable: check the URL, DNS and network; tend keeps the last applied revision and retries")
	}
	return wrapped
}
