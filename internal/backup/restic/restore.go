package restic

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"time"
)

// Restore restores snapshot into target (its paths appear under target,
// e.g. target/srv/app/data). snapshot is an ID, full or short, or
// "latest": the newest of r.Host (any host when Host is empty); for tag
// filters, pick the snapshot with Latest and pass its ID. include limits
// the restore to matching paths. verify reads every restored file back
// and checks it against the snapshot (restic restore --verify).
func (r *Repo) Restore(ctx context.Context, snapshot, target string, include []string, verify bool) error {
	s, err := r.resolve(ctx, snapshot)
	if err != nil {
		return err
	}
	args := []string{"restore", s.ID, "--target", target}
	for _, p := range include {
		args = append(args, "--include", p)
	}
	if verify {
		args = append(args, "--verify")
	}
	_, err = r.run(ctx, call{op: "restore", snapshot: s.ID, args: args})
	return err
}

// Dump writes file of snapshot (see Restore for snapshot) to w: the
// file's content, or a tar archive of a directory. A stdin backup's file
// is "/" + StdinFilename.
func (r *Repo) Dump(ctx context.Context, snapshot, file string, w io.Writer) error {
	s, err := r.resolve(ctx, snapshot)
	if err != nil {
		return err
	}
	ew := &errWriter{w: w}
	c := call{op: "dump", snapshot: s.ID, args: []string{"dump", "--", s.ID, file}, stdout: ew}
	_, err = r.run(ctx, c)
	if ew.err != nil {
		// restic died of the broken pipe; the writer's error says why.
		return r.fail(c, "writing "+file+": "+ew.err.Error(), ew.err)
	}
	return err
}

// errWriter remembers the first error of w.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// Node is a file, directory or link in a snapshot.
type Node struct {
	// Path is its absolute path in the snapshot, e.g. /srv/app/data/a.txt.
	Path  string      `json:"path"`
	Type  string      `json:"type"` // file, dir, symlink, dev, chardev, fifo, socket
	Size  int64       `json:"size"`
	Mode  os.FileMode `json:"mode"`
	MTime time.Time   `json:"mtime"`
}

// List lists every node of snapshot (see Restore for snapshot).
func (r *Repo) List(ctx context.Context, snapshot string) ([]Node, error) {
	s, err := r.resolve(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	var nodes []Node
	var bad error
	c := call{op: "ls", snapshot: s.ID, args: []string{"ls", "--json", "--", s.ID}}
	c.stdoutLine = func(line []byte) {
		var n struct {
			StructType string      `json:"struct_type"`
			Path       string      `json:"path"`
			Type       string      `json:"type"`
			Size       int64       `json:"size"`
			Mode       os.FileMode `json:"mode"`
			MTime      time.Time   `json:"mtime"`
		}
		if len(line) == 0 {
			return
		}
		if err := json.Unmarshal(line, &n); err != nil {
			if bad == nil {
				bad = err
			}
			return
		}
		if n.StructType == "node" {
			nodes = append(nodes, Node{Path: n.Path, Type: n.Type, Size: n.Size, Mode: n.Mode, MTime: n.MTime})
		}
	}
	if _, err := r.run(ctx, c); err != nil {
		return nil, err
	}
	if bad != nil {
		return nil, r.fail(c, "reading restic's listing: "+bad.Error(), bad)
	}
	return nodes, nil
}
