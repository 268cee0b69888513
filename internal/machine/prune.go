package machine

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// Prune adds to d the removal of what an earlier state managed (previous,
// the keys the agent recorded) and this one no longer has, as Flux prunes
// objects that left git:
//
//   - files and symlinks are deleted, and so are tend's sysctl and module
//     files (the live values stay until the next boot);
//   - directories are removed once empty; one holding files tend did not
//     put there stays, and is looked at again on later runs;
//   - units are stopped, disabled and deleted, under a rollout slot.
//
// Packages, users and groups that left git stay: removing them can lose
// data, so that takes `state: absent`. The firewall and the hostname stay
// as they are. Pure: it only adds resources.
func (d *Desired) Prune(previous []string) {
	have := map[string]bool{}
	for _, k := range d.Keys() {
		have[k] = true
	}
	var units, files, dirs []resource
	for _, k := range previous {
		if have[k] {
			continue
		}
		kind, name, _ := strings.Cut(k, " ")
		if !path.IsAbs(name) && kind != "unit" {
			continue
		}
		switch kind {
		case "unit":
			units = append(units, &pruneRes{k: k, kind: kind, path: "/etc/systemd/system/" + name, unit: name})
		case "file", "symlink", "sysctl", "kernel-modules":
			files = append(files, &pruneRes{k: k, kind: kind, path: name})
		case "directory":
			dirs = append(dirs, &pruneRes{k: k, kind: kind, path: name})
		}
	}
	// Deepest directories first, so a tree empties from the bottom up.
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].(*pruneRes).path > dirs[j].(*pruneRes).path })
	d.resources = append(d.resources, units...)
	d.resources = append(d.resources, files...)
	d.resources = append(d.resources, dirs...)
}

// pruneRes removes one thing that left git.
type pruneRes struct {
	k, kind, path, unit string
	// present is what plan saw: the thing is still there, so it stays
	// managed until it is gone.
	present bool
}

func (p *pruneRes) key() string { return p.k }

func (p *pruneRes) plan(ctx context.Context, sys *System) (*Change, error) {
	st, err := os.Lstat(sys.Path(p.path))
	p.present = !errors.Is(err, fs.ErrNotExist)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	switch p.kind {
	case "unit":
		return &Change{Action: Delete, Disruptive: true, Details: []string{"left git: stop, disable and delete " + p.path}}, nil
	case "directory":
		if !st.IsDir() {
			return nil, nil
		}
		entries, err := os.ReadDir(sys.Path(p.path))
		if err != nil {
			return nil, err
		}
		if len(entries) > 0 {
			return nil, nil // not empty: kept, and looked at again
		}
		return &Change{Action: Delete, Details: []string{"left git: remove the empty directory"}}, nil
	case "symlink":
		if st.Mode()&fs.ModeSymlink == 0 {
			p.present = false // replaced by something else: not ours any more
			return nil, nil
		}
	default:
		if !st.Mode().IsRegular() {
			p.present = false
			return nil, nil
		}
	}
	return &Change{Action: Delete, Details: []string{"left git: delete " + p.path}}, nil
}

func (p *pruneRes) apply(ctx context.Context, sys *System, c *Change) error {
	if p.kind == "unit" {
		// A unit that is not loaded any more cannot be stopped: fine.
		sys.run(ctx, "systemctl", "disable", "--now", p.unit) //nolint:errcheck
		if err := os.Remove(sys.Path(p.path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		_, err := sys.run(ctx, "systemctl", "daemon-reload")
		return err
	}
	if err := os.Remove(sys.Path(p.path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Managed is what the agent records after a run, for the next run's
// Prune: every resource of the state, and what is left to prune (a removal
// that failed, waits for a slot, or a directory not yet empty). Pure.
func (d *Desired) Managed(results []Result) []string {
	done := map[string]bool{}
	for _, r := range results {
		if r.Error == "" {
			if _, ok := r.res.(*pruneRes); ok {
				done[r.Resource] = true
			}
		}
	}
	var out []string
	for _, r := range d.resources {
		if p, ok := r.(*pruneRes); ok && (done[p.k] || !p.present) {
			continue
		}
		out = append(out, r.key())
	}
	return out
}
