package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Dir is a local directory used as it is, uncommitted changes included:
// what `tend apply --repo .` users expect while editing.
type Dir struct{ root string }

var _ Source = (*Dir)(nil)

// NewDir returns a Source for a local directory.
func NewDir(root string) (*Dir, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", root, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open %s: not a directory", root)
	}
	return &Dir{root: root}, nil
}

// URL is the directory path.
func (d *Dir) URL() string { return d.root }

// Resolve hashes the tree, so a changed file is a new revision.
func (d *Dir) Resolve(ctx context.Context) (Revision, error) {
	h := sha256.New()
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != d.root && strings.HasPrefix(e.Name(), ".") {
				return filepath.SkipDir
			}
			return ctx.Err()
		}
		if !e.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(d.root, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00", filepath.ToSlash(rel))
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return Revision{}, fmt.Errorf("hash %s: %w", d.root, err)
	}
	return Revision{ID: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

// Checkout returns the directory itself.
func (d *Dir) Checkout(context.Context, Revision) (string, error) { return d.root, nil }
