package restic

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BackupOptions is what one backup saves.
type BackupOptions struct {
	// Paths are the files and directories to back up; relative paths are
	// made absolute, so that snapshots name what they hold.
	Paths []string
	// Exclude are restic exclude patterns ("*.tmp", "/srv/app/cache").
	Exclude []string
	// Stdin backs up a stream as one file named StdinFilename (default
	// "stdin") instead of Paths. The snapshot is written only when Stdin
	// reaches io.EOF: any other error from it, or the end of ctx, stops
	// restic first, and no snapshot is written.
	Stdin         io.Reader
	StdinFilename string
	// Tags are added to the snapshot.
	Tags []string
	// Time is the snapshot's time (zero: now), for tests that simulate a
	// calendar. restic keeps it to the second.
	Time time.Time
	// Progress, when set, is called with restic's status as it goes.
	Progress func(Progress)
}

// Progress is restic's status during a backup.
type Progress struct {
	PercentDone           float64
	FilesDone, TotalFiles int64
	BytesDone, TotalBytes int64
}

// Summary is what a backup did.
type Summary struct {
	SnapshotID                              string
	FilesNew, FilesChanged, FilesUnmodified int64
	// DataAdded is what the snapshot added to the repository, after
	// deduplication and compression.
	DataAdded           int64
	TotalBytesProcessed int64
	Duration            time.Duration
}

// restic 0.14's backup --json lines.
type backupLine struct {
	MessageType string `json:"message_type"`
	// status
	PercentDone float64 `json:"percent_done"`
	FilesDone   int64   `json:"files_done"`
	TotalFiles  int64   `json:"total_files"`
	BytesDone   int64   `json:"bytes_done"`
	TotalBytes  int64   `json:"total_bytes"`
	// summary
	FilesNew            int64   `json:"files_new"`
	FilesChanged        int64   `json:"files_changed"`
	FilesUnmodified     int64   `json:"files_unmodified"`
	DataAdded           int64   `json:"data_added"`
	TotalBytesProcessed int64   `json:"total_bytes_processed"`
	TotalDuration       float64 `json:"total_duration"`
	SnapshotID          string  `json:"snapshot_id"`
	// error
	Error *struct {
		Op   string          `json:"Op"`
		Path string          `json:"Path"`
		Err  json.RawMessage `json:"Err"`
	} `json:"error"`
	Item string `json:"item"`
}

// maxFiles is how many unreadable files an error names.
const maxFiles = 50

// Backup saves a snapshot of o.Paths, or of o.Stdin. When some files could
// not be read (restic's exit status 3) or a path does not exist, the
// snapshot is saved without them and Backup returns its Summary with an
// error of KindIncomplete that names them.
func (r *Repo) Backup(ctx context.Context, o BackupOptions) (Summary, error) {
	var sum Summary
	args := []string{"backup", "--json"}
	if r.Host != "" {
		args = append(args, "--host", r.Host)
	}
	for _, t := range o.Tags {
		args = append(args, "--tag", t)
	}
	for _, x := range o.Exclude {
		args = append(args, "--exclude", x)
	}
	if !o.Time.IsZero() {
		args = append(args, "--time", o.Time.UTC().Format("2006-01-02 15:04:05"))
	}
	c := call{op: "backup", progress: o.Progress != nil}
	switch {
	case o.Stdin != nil && len(o.Paths) > 0:
		return sum, &Error{Op: "backup", Repo: r.redactedURL(), Kind: KindRefused, Msg: "both paths and a stream to back up", Hint: "back up paths or a stream, in two backups"}
	case o.Stdin != nil:
		name := o.StdinFilename
		if name == "" {
			name = "stdin"
		}
		args = append(args, "--stdin", "--stdin-filename", name)
		c.stdin = o.Stdin
	case len(o.Paths) == 0:
		return sum, &Error{Op: "backup", Repo: r.redactedURL(), Kind: KindRefused, Msg: "nothing to back up", Hint: "give paths or a stream"}
	default:
		args = append(args, "--")
		for _, p := range o.Paths {
			abs, err := filepath.Abs(p)
			if err != nil {
				return sum, fmt.Errorf("restic backup: %w", err)
			}
			args = append(args, abs)
		}
	}
	c.args = args

	var failed []string
	addFailed := func(s string) {
		if len(failed) < maxFiles {
			failed = append(failed, r.scrub(s))
		}
	}
	var short string
	c.stdoutLine = func(line []byte) {
		var l backupLine
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &l) != nil {
			return
		}
		switch l.MessageType {
		case "status":
			if o.Progress != nil {
				o.Progress(Progress{PercentDone: l.PercentDone, FilesDone: l.FilesDone, TotalFiles: l.TotalFiles, BytesDone: l.BytesDone, TotalBytes: l.TotalBytes})
			}
		case "summary":
			short = l.SnapshotID
			sum = Summary{
				SnapshotID: l.SnapshotID, FilesNew: l.FilesNew, FilesChanged: l.FilesChanged, FilesUnmodified: l.FilesUnmodified,
				DataAdded: l.DataAdded, TotalBytesProcessed: l.TotalBytesProcessed,
				Duration: time.Duration(l.TotalDuration * float64(time.Second)),
			}
		}
	}
	c.stderrLine = func(line []byte) {
		s := string(line)
		if strings.HasSuffix(s, " does not exist, skipping") {
			addFailed(strings.TrimSuffix(s, " does not exist, skipping") + " (does not exist)")
			return
		}
		var l backupLine
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &l) != nil || l.MessageType != "error" {
			return
		}
		addFailed(itemError(l))
	}
	res, err := r.run(ctx, c)
	if err != nil {
		return sum, err
	}
	if short == "" {
		return sum, r.fail(c, "no summary in restic's output: "+message(res.stderr), nil)
	}
	// restic 0.14 reports the short ID only.
	if snaps, err := r.snapshotsByID(ctx, short); err == nil && len(snaps) == 1 {
		sum.SnapshotID = snaps[0].ID
	}
	if res.exit == 3 || len(failed) > 0 {
		e := r.fail(c, fmt.Sprintf("snapshot %s is missing %d unreadable files: %s", short, len(failed), strings.Join(failed, ", ")), nil)
		e.Kind, e.Files, e.Snapshot = KindIncomplete, failed, sum.SnapshotID
		e.Hint = "the snapshot was saved without these files: make them readable, or exclude them"
		return sum, e
	}
	return sum, nil
}

// itemError renders one of backup's JSON error lines:
// {"message_type":"error","error":{"Op":"open","Path":"/x","Err":13},"item":"/x"}.
func itemError(l backupLine) string {
	item := l.Item
	if l.Error == nil {
		return item
	}
	if item == "" {
		item = l.Error.Path
	}
	what := l.Error.Op
	var errno int
	if json.Unmarshal(l.Error.Err, &errno) == nil && errno != 0 {
		what += ": " + syscall.Errno(errno).Error()
	}
	if what == "" {
		return item
	}
	return item + " (" + what + ")"
}
