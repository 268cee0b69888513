// Package source fetches revisions of the ops repository. A Source resolves
// which revision its ref points at (cheaply, without downloading content where
// the transport allows) and checks a revision out into a local directory.
// Backends register by URL scheme: a plain path is a local directory,
// file://, http(s):// and ssh:// are git remotes (source/gogit).
package source

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
)

// Revision identifies one state of the source.
type Revision struct {
	// Ref is the branch or tag followed ("main", "v1.2.0"); empty for a
	// local directory or a pinned commit.
	Ref string `json:"ref,omitempty"`
	// ID is the commit hash, or a content hash for a local directory.
	ID string `json:"id"`
}

// String formats a revision the way Flux users know: main@sha1:<hash>.
func (r Revision) String() string {
	if r.Ref == "" {
		return r.ID
	}
	return r.Ref + "@" + r.ID
}

// Short is a revision fit for a table column.
func (r Revision) Short() string {
	id := r.ID
	if i := strings.LastIndex(id, ":"); i >= 0 && len(id)-i > 13 {
		id = id[:i+13]
	}
	if r.Ref == "" {
		return id
	}
	return r.Ref + "@" + id
}

// Source is a place desired state comes from.
type Source interface {
	// Resolve returns the revision the source's ref points at now.
	Resolve(ctx context.Context) (Revision, error)
	// Checkout makes rev available as a directory. The directory stays
	// valid until the next Checkout of another revision.
	Checkout(ctx context.Context, rev Revision) (string, error)
	// URL is the location, with any credentials removed.
	URL() string
}

// Options configure a Source.
type Options struct {
	// Ref selects the revision: a branch, a tag, a semver range (">=1.2 <2"),
	// or a commit hash. Prefixes branch:, tag:, semver: and commit: remove
	// any doubt. Empty follows the remote's default branch.
	Ref string
	// Auth for git remotes.
	Username, Password, Token  string
	SSHKeyFile, KnownHostsFile string
	// CacheDir keeps checkouts between runs.
	CacheDir string
}

// Factory opens a source for a URL.
type Factory func(url string, opts Options) (Source, error)

var (
	mu        sync.Mutex
	factories = map[string]Factory{}
)

// Register makes a backend available for a URL scheme ("https", "ssh", "file").
func Register(scheme string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	factories[scheme] = f
}

// Open returns the Source for url: a local directory or a registered scheme.
// A local directory with a Ref is read as a git repository.
func Open(url string, opts Options) (Source, error) {
	scheme := ""
	if i := strings.Index(url, "://"); i > 0 {
		scheme = url[:i]
	} else if strings.HasPrefix(url, "git@") {
		scheme = "ssh"
	}
	if scheme == "" {
		abs, err := filepath.Abs(url)
		if err != nil {
			return nil, err
		}
		if opts.Ref == "" {
			return NewDir(abs)
		}
		scheme, url = "file", "file://"+abs
	}
	mu.Lock()
	f, ok := factories[scheme]
	mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("open source %s: no backend for scheme %q; use a local path, file://, https:// or ssh://", url, scheme)
	}
	return f(url, opts)
}
