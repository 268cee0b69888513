package machine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// fileRes is a regular file with exact content, mode and owner.
type fileRes struct {
	path      string
	content   []byte
	mode      fs.FileMode
	owner     string
	group     string
	absent    bool
	sensitive bool
}

func (f *fileRes) key() string { return "file " + f.path }

// fileState is what a file is now.
type fileState struct {
	exists   bool
	isFile   bool
	content  []byte
	mode     fs.FileMode
	uid, gid int
}

func observeFile(path string) (fileState, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{}, nil
	}
	if err != nil {
		return fileState{}, err
	}
	st := fileState{exists: true, isFile: fi.Mode().IsRegular(), mode: fi.Mode().Perm()}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.uid, st.gid = int(s.Uid), int(s.Gid)
	}
	if st.isFile {
		st.content, err = os.ReadFile(path)
	}
	return st, err
}

func (f *fileRes) plan(ctx context.Context, sys *System) (*Change, error) {
	st, err := observeFile(sys.Path(f.path))
	if err != nil {
		return nil, err
	}
	if f.absent {
		if st.exists {
			return &Change{Action: Delete}, nil
		}
		return nil, nil
	}
	uid, gid, err := owner(sys, f.owner, f.group)
	if err != nil {
		// The user may be created earlier in this same apply; apply
		// resolves the owner again and fails if it is still missing.
		c := diffFile(f, st, -1, -1)
		if c == nil {
			c = &Change{Action: Update}
		}
		c.Details = append(c.Details, fmt.Sprintf("owner → %s:%s (not on the machine yet)", orDash(f.owner), orDash(f.group)))
		return c, nil
	}
	return diffFile(f, st, uid, gid), nil
}

// diffFile compares a file with its desired state. Pure.
func diffFile(f *fileRes, st fileState, uid, gid int) *Change {
	if !st.exists {
		d := []string{fmt.Sprintf("%d bytes, mode %04o", len(f.content), f.mode)}
		if !f.sensitive {
			d = append(d, textDiff(nil, f.content)...)
		}
		return &Change{Action: Create, Details: d}
	}
	var d []string
	if !st.isFile {
		d = append(d, "is not a regular file")
	}
	if !bytes.Equal(st.content, f.content) {
		if f.sensitive {
			d = append(d, "content differs (secret, not shown)")
		} else {
			d = append(d, textDiff(st.content, f.content)...)
		}
	}
	if st.mode != f.mode {
		d = append(d, fmt.Sprintf("mode %04o → %04o", st.mode, f.mode))
	}
	if uid >= 0 && st.uid != uid || gid >= 0 && st.gid != gid {
		d = append(d, fmt.Sprintf("owner %d:%d → %s:%s", st.uid, st.gid, orDash(f.owner), orDash(f.group)))
	}
	if len(d) == 0 {
		return nil
	}
	return &Change{Action: Update, Details: d}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (f *fileRes) apply(ctx context.Context, sys *System, c *Change) error {
	p := sys.Path(f.path)
	if f.absent {
		return os.Remove(p)
	}
	uid, gid, err := owner(sys, f.owner, f.group)
	if err != nil {
		return err
	}
	return writeAtomic(p, f.content, f.mode, uid, gid)
}

// writeAtomic replaces path with data so that a reader sees the old file or
// the new one, never a part: temp file in the same directory, fsync,
// rename. A full disk leaves the old file in place.
func writeAtomic(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tend-*")
	if err != nil {
		return err
	}
	clean := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return clean(err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return clean(err)
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return clean(err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return clean(err)
	}
	if err := tmp.Close(); err != nil {
		return clean(err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.IsDir() {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: a directory is in the way", path)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// dirRes is a directory.
type dirRes struct {
	path         string
	mode         fs.FileMode
	owner, group string
}

func (d *dirRes) key() string { return "directory " + d.path }

func (d *dirRes) plan(ctx context.Context, sys *System) (*Change, error) {
	fi, err := os.Lstat(sys.Path(d.path))
	if errors.Is(err, fs.ErrNotExist) {
		return &Change{Action: Create, Details: []string{fmt.Sprintf("mode %04o", d.mode)}}, nil
	}
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, withHint(fmt.Errorf("%s exists and is not a directory", d.path), "remove it, or manage it as a file")
	}
	uid, gid, err := owner(sys, d.owner, d.group)
	if err != nil {
		return &Change{Action: Update, Details: []string{fmt.Sprintf("owner → %s:%s (not on the machine yet)", orDash(d.owner), orDash(d.group))}}, nil
	}
	var det []string
	if fi.Mode().Perm() != d.mode {
		det = append(det, fmt.Sprintf("mode %04o → %04o", fi.Mode().Perm(), d.mode))
	}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok && (uid >= 0 && int(s.Uid) != uid || gid >= 0 && int(s.Gid) != gid) {
		det = append(det, fmt.Sprintf("owner %d:%d → %s:%s", s.Uid, s.Gid, orDash(d.owner), orDash(d.group)))
	}
	if len(det) == 0 {
		return nil, nil
	}
	return &Change{Action: Update, Details: det}, nil
}

func (d *dirRes) apply(ctx context.Context, sys *System, c *Change) error {
	p := sys.Path(d.path)
	if err := os.MkdirAll(p, d.mode); err != nil {
		return err
	}
	if err := os.Chmod(p, d.mode); err != nil {
		return err
	}
	uid, gid, err := owner(sys, d.owner, d.group)
	if err != nil {
		return err
	}
	if uid >= 0 || gid >= 0 {
		return os.Chown(p, uid, gid)
	}
	return nil
}

// linkRes is a symbolic link.
type linkRes struct{ path, target string }

func (l *linkRes) key() string { return "symlink " + l.path }

func (l *linkRes) plan(ctx context.Context, sys *System) (*Change, error) {
	got, err := os.Readlink(sys.Path(l.path))
	if errors.Is(err, fs.ErrNotExist) {
		return &Change{Action: Create, Details: []string{"→ " + l.target}}, nil
	}
	if err != nil {
		if _, serr := os.Lstat(sys.Path(l.path)); serr == nil {
			return &Change{Action: Update, Details: []string{"is not a symlink; → " + l.target}}, nil
		}
		return nil, err
	}
	if got == l.target {
		return nil, nil
	}
	return &Change{Action: Update, Details: []string{got + " → " + l.target}}, nil
}

func (l *linkRes) apply(ctx context.Context, sys *System, c *Change) error {
	p := sys.Path(l.path)
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return withHint(fmt.Errorf("%s is a directory", l.path), "remove the directory by hand: tend does not delete directories")
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tend-link")
	os.Remove(tmp)
	if err := os.Symlink(l.target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// owner resolves user and group names from the machine's own databases
// (-1 leaves it unchanged).
func owner(sys *System, user, group string) (int, int, error) {
	uid, gid := -1, -1
	if user != "" {
		id, err := lookupID(sys.Path("/etc/passwd"), user)
		if err != nil {
			return 0, 0, withHint(fmt.Errorf("owner %s: %w", user, err), "create the user first (state.users), or fix the name")
		}
		uid = id
	}
	if group != "" {
		id, err := lookupID(sys.Path("/etc/group"), group)
		if err != nil {
			return 0, 0, withHint(fmt.Errorf("group %s: %w", group, err), "create the group first (state.groups), or fix the name")
		}
		gid = id
	}
	return uid, gid, nil
}

func lookupID(db, name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	data, err := os.ReadFile(db)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == name {
			return strconv.Atoi(f[2])
		}
	}
	return 0, fmt.Errorf("no such entry in %s", filepath.Base(db))
}
