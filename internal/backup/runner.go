package backup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"tend.dev/tend/internal/backup/restic"
	"tend.dev/tend/internal/model"
)

// Credentials open a Backup's repository. They come from the Backup's
// SOPS file and live only in memory and in restic's environment.
type Credentials struct {
	AccessKeyID     string `yaml:"accessKeyID"`
	SecretAccessKey string `yaml:"secretAccessKey"`
	Password        string `yaml:"password"`
}

// ParseCredentials reads the decrypted credentials file. Errors never
// quote the file's content.
func ParseCredentials(file string, plain []byte) (Credentials, error) {
	var c Credentials
	dec := yaml.NewDecoder(bytes.NewReader(plain))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, model.WithHint(fmt.Errorf("%s: not a credentials file (the content is not shown)", file),
			"the decrypted file is YAML with accessKeyID, secretAccessKey and password; edit it with tend secret edit %s", file)
	}
	var missing []string
	for k, v := range map[string]string{"accessKeyID": c.AccessKeyID, "secretAccessKey": c.SecretAccessKey, "password": c.Password} {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return c, model.WithHint(fmt.Errorf("%s: %s missing", file, strings.Join(missing, ", ")),
			"password is the restic repository's encryption password: keep it somewhere safe too, without it no snapshot can be read")
	}
	return c, nil
}

// Objects is the cluster side of a Backup: exporting a cluster's objects
// as manifests and applying them back. It is an interface so that the
// machine build of tend links no Kubernetes code.
type Objects interface {
	Export(ctx context.Context, b *model.ClusterBackup, dir string) (int64, error)
	Restore(ctx context.Context, dir, namespace string) (string, error)
}

// Runner runs the Backups of one target: a machine, or a cluster.
type Runner struct {
	// Target is the machine's or the cluster's name: restic's host of
	// every snapshot this runner makes, so targets sharing a repository
	// keep their snapshots and retention apart.
	Target string
	// Restic is the restic binary (default "restic" from PATH).
	Restic string
	// Dir holds restic's cache, scratch restores and exports.
	Dir string
	// Root is the checkout of the ops repository the Backups came from.
	Root string
	// Decrypt decrypts a SOPS file of the repository.
	Decrypt func(file string, data []byte) ([]byte, error)
	// Objects exports and restores cluster objects; nil on machines.
	Objects Objects
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Initializes says whether this target creates b's repository when it
	// is missing (default yes). Targets sharing a repository must leave
	// that to one of them: two concurrent restic inits leave a repository
	// whose key and config do not match.
	Initializes func(b *model.Backup) bool
	// LockWait bounds how long a run waits for a repository another
	// target holds (default 3m); Sleep is the pause between tries.
	LockWait time.Duration
	Sleep    func(time.Duration)
	// RetryTimeout bounds how long restic retries a server that stopped
	// answering (default restic.DefaultRetryTimeout).
	RetryTimeout time.Duration
}

// retryLocked runs f until it ends in anything but another target's lock,
// or LockWait passed: targets sharing a repository take turns at the
// exclusive lock forget and prune need (restic 0.14 has no --retry-lock).
func (r *Runner) retryLocked(ctx context.Context, f func() error) error {
	wait := r.LockWait
	if wait <= 0 {
		wait = 3 * time.Minute
	}
	sleep := r.Sleep
	if sleep == nil {
		sleep = time.Sleep
	}
	deadline := r.now().Add(wait)
	pause := 2 * time.Second
	for {
		err := f()
		if restic.KindOf(err) != restic.KindLocked || r.now().After(deadline) || ctx.Err() != nil {
			return err
		}
		sleep(pause + Jitter(model.Schedule{Jitter: model.Duration{Duration: time.Second}}, r.Target+r.now().String()))
		pause = min(pause*2, 20*time.Second)
	}
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Tags mark the snapshots of Backup name.
func Tags(name string) []string { return []string{"tend", "tend-backup=" + name} }

// Repo opens b's repository with its decrypted credentials.
func (r *Runner) Repo(b *model.Backup) (*restic.Repo, error) {
	file := b.Spec.Repository.Credentials
	data, err := os.ReadFile(filepath.Join(r.Root, filepath.FromSlash(file)))
	if err != nil {
		return nil, model.WithHint(fmt.Errorf("read credentials %s: %w", file, err), "spec.repository.credentials is a file in the ops repository")
	}
	if r.Decrypt == nil {
		return nil, fmt.Errorf("no decrypter for %s", file)
	}
	plain, err := r.Decrypt(file, data)
	if err != nil {
		return nil, fmt.Errorf("decrypt credentials: %w", err)
	}
	c, err := ParseCredentials(file, plain)
	if err != nil {
		return nil, err
	}
	s3 := b.Spec.Repository.S3
	return &restic.Repo{
		Bin:             r.Restic,
		URL:             restic.S3URL(s3.Endpoint, s3.Bucket, b.Prefix()),
		Password:        c.Password,
		AccessKeyID:     c.AccessKeyID,
		SecretAccessKey: c.SecretAccessKey,
		Region:          s3.Region,
		CacheDir:        filepath.Join(r.Dir, "cache"),
		Host:            r.Target,
		RetryTimeout:    r.RetryTimeout,
	}, nil
}

// Backup runs b once and applies its retention. The returned Run says
// how it went; it never holds a secret.
func (r *Runner) Backup(ctx context.Context, b *model.Backup, trigger Trigger) Run {
	run := Run{Backup: b.Metadata.Name, Kind: KindBackup, Trigger: trigger, Start: r.now().UTC()}
	err := r.backup(ctx, b, &run)
	return finish(run, err, r.now())
}

func finish(run Run, err error, now time.Time) Run {
	run.Duration = now.Sub(run.Start).Round(time.Millisecond)
	run.Result = Succeeded
	if err != nil {
		run.Result = Failed
		run.Error, run.Hint = err.Error(), model.HintOf(err)
	}
	return run
}

func (r *Runner) backup(ctx context.Context, b *model.Backup, run *Run) error {
	repo, err := r.Repo(b)
	if err != nil {
		return err
	}
	if r.Initializes == nil || r.Initializes(b) {
		err = repo.Ensure(ctx)
	} else if err = repo.Open(ctx); restic.KindOf(err) == restic.KindNoRepository {
		err = model.WithHint(fmt.Errorf("backup %s: the repository does not exist yet", b.Metadata.Name),
			"the Backup's first target creates it on its first run; this target backs up at its next slot, or now: tend backup run %s", b.Metadata.Name)
	}
	if err != nil {
		return err
	}
	// A run killed earlier leaves a stale lock; restic removes only locks
	// that are stale.
	if err := repo.Unlock(ctx); err != nil {
		return err
	}
	opts := restic.BackupOptions{Tags: Tags(b.Metadata.Name)}
	var dump *dumpReader
	switch {
	case b.Spec.Cluster != nil:
		if r.Objects == nil {
			return fmt.Errorf("this target cannot back up cluster objects")
		}
		dir := filepath.Join(r.Dir, "objects", b.Metadata.Name)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		// The export holds Secrets in plaintext until restic has
		// encrypted it: it lives only for the run.
		defer os.RemoveAll(dir)
		if _, err := r.Objects.Export(ctx, b.Spec.Cluster, dir); err != nil {
			return fmt.Errorf("export objects: %w", err)
		}
		opts.Paths = []string{dir}
	case b.Spec.Machines.Command != nil:
		c := b.Spec.Machines.Command
		dump, err = startCommand(ctx, c.User, c.Dump, nil)
		if err != nil {
			return err
		}
		defer dump.kill()
		opts.Stdin, opts.StdinFilename = dump, b.DumpFilename()
	default:
		opts.Paths = b.Spec.Machines.Paths
		opts.Exclude = b.Spec.Machines.Exclude
	}
	var sum restic.Summary
	if dump != nil {
		// A stream cannot be read twice: no retry.
		sum, err = repo.Backup(ctx, opts)
	} else {
		err = r.retryLocked(ctx, func() (err error) { sum, err = repo.Backup(ctx, opts); return err })
	}
	if dump != nil && dump.err != nil {
		// The dump's own failure says more than restic's abort.
		return dump.err
	}
	if err != nil {
		return err
	}
	run.Snapshot, run.Bytes, run.Added = sum.SnapshotID, sum.TotalBytesProcessed, sum.DataAdded
	run.Files = sum.FilesNew + sum.FilesChanged + sum.FilesUnmodified
	k := b.Spec.Keep
	var res restic.ForgetResult
	err = r.retryLocked(ctx, func() (err error) {
		res, err = repo.Forget(ctx, restic.Keep{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly, Yearly: k.Yearly},
			Tags(b.Metadata.Name), r.Target, false)
		return err
	})
	if restic.KindOf(err) == restic.KindLocked {
		// The snapshot is safe; the next run applies the retention.
		run.Note = "retention deferred to the next run: the repository stayed locked by another target"
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot %s was made, but retention failed: %w", shortID(sum.SnapshotID), err)
	}
	run.Pruned = len(res.Remove)
	return nil
}

// Do runs task t and records it in st: the run, and the slot it was for.
func (r *Runner) Do(ctx context.Context, st *State, t Task) Run {
	rec := st.Record(t.Backup.Metadata.Name, r.now())
	var run Run
	if t.Kind == KindVerify {
		run = r.Verify(ctx, t.Backup)
		if !t.Slot.IsZero() {
			rec.VerifySlot = t.Slot
		}
	} else {
		run = r.Backup(ctx, t.Backup, t.Trigger)
		if !t.Slot.IsZero() {
			rec.Slot = t.Slot
		}
	}
	rec.Add(run)
	return run
}

// Snapshots lists b's snapshots of this target, oldest first; all
// targets' when allTargets is set.
func (r *Runner) Snapshots(ctx context.Context, b *model.Backup, allTargets bool) ([]restic.Snapshot, error) {
	repo, err := r.Repo(b)
	if err != nil {
		return nil, err
	}
	host := r.Target
	if allTargets {
		host = ""
	}
	return repo.Snapshots(ctx, Tags(b.Metadata.Name), host)
}

// snapshot resolves id ("latest", a short or a full ID) among b's
// snapshots of this target.
func (r *Runner) snapshot(ctx context.Context, repo *restic.Repo, b *model.Backup, id string) (restic.Snapshot, error) {
	snaps, err := repo.Snapshots(ctx, Tags(b.Metadata.Name), r.Target)
	if err != nil {
		return restic.Snapshot{}, err
	}
	if len(snaps) == 0 {
		return restic.Snapshot{}, model.WithHint(fmt.Errorf("backup %s has no snapshot of %s yet", b.Metadata.Name, r.Target),
			"run one now: tend backup run %s", b.Metadata.Name)
	}
	if id == "" || id == "latest" {
		return snaps[len(snaps)-1], nil
	}
	for _, s := range snaps {
		if s.ID == id || s.ShortID == id || strings.HasPrefix(s.ID, id) {
			return s, nil
		}
	}
	return restic.Snapshot{}, model.WithHint(fmt.Errorf("backup %s has no snapshot %s of %s", b.Metadata.Name, id, r.Target),
		"list them: tend backup list %s", b.Metadata.Name)
}

// Verify restores b's latest snapshot into a scratch place and checks it:
// every file's content against the snapshot's hashes, or, for a dump, the
// declared restore into a scratch database and the query.
func (r *Runner) Verify(ctx context.Context, b *model.Backup) Run {
	run := Run{Backup: b.Metadata.Name, Kind: KindVerify, Start: r.now().UTC()}
	err := r.verify(ctx, b, &run)
	return finish(run, err, r.now())
}

func (r *Runner) verify(ctx context.Context, b *model.Backup, run *Run) error {
	repo, err := r.Repo(b)
	if err != nil {
		return err
	}
	snap, err := r.snapshot(ctx, repo, b, "latest")
	if err != nil {
		return err
	}
	run.Snapshot = snap.ID
	fail := func(err error) error { return fmt.Errorf("snapshot %s: %w", snap.ShortID, err) }
	if m := b.Spec.Machines; m != nil && m.Command != nil {
		v := b.Spec.Verify
		if v == nil || v.Restore == "" {
			return fmt.Errorf("spec.verify.restore is not set")
		}
		user := m.Command.User
		if v.Cleanup != "" {
			defer func() {
				if c, err := startCommand(context.WithoutCancel(ctx), user, v.Cleanup, nil); err == nil {
					io.Copy(io.Discard, c)
				}
			}()
		}
		if err := r.pipeDump(ctx, repo, snap, b, user, v.Restore); err != nil {
			return fail(fmt.Errorf("verify restore: %w", err))
		}
		out, err := output(ctx, user, v.Query)
		if err != nil {
			return fail(fmt.Errorf("verify query: %w", err))
		}
		rows := 0
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.TrimSpace(l) != "" {
				rows++
			}
		}
		if rows == 0 {
			return fail(model.WithHint(fmt.Errorf("verify query returned no rows"), "the restored dump is empty or lacks the data the query expects"))
		}
		run.Files = int64(rows)
		return nil
	}
	scratch := filepath.Join(r.Dir, "verify", b.Metadata.Name)
	os.RemoveAll(scratch)
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := repo.Restore(ctx, snap.ID, scratch, nil, true); err != nil {
		return fail(err)
	}
	nodes, err := repo.List(ctx, snap.ID)
	if err != nil {
		return fail(err)
	}
	// restic checked every restored blob's hash; what is left is that
	// every file of the snapshot is there at its size.
	for _, n := range nodes {
		if n.Type != "file" {
			continue
		}
		fi, err := os.Lstat(filepath.Join(scratch, n.Path))
		if err != nil {
			return fail(fmt.Errorf("%s missing after restore", n.Path))
		}
		if fi.Size() != n.Size {
			return fail(fmt.Errorf("%s restored with %d bytes, the snapshot has %d", n.Path, fi.Size(), n.Size))
		}
		run.Files++
		run.Bytes += n.Size
	}
	return nil
}

// pipeDump feeds the dump file of snap to command's standard input.
func (r *Runner) pipeDump(ctx context.Context, repo *restic.Repo, snap restic.Snapshot, b *model.Backup, user, command string) error {
	pr, pw := io.Pipe()
	cmd := shellCommand(ctx, user, command)
	cmd.Stdin = pr
	var stderr tail
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	derr := repo.Dump(ctx, snap.ID, "/"+b.DumpFilename(), pw)
	pw.CloseWithError(derr)
	werr := cmd.Wait()
	if derr != nil {
		return derr
	}
	if werr != nil {
		return commandError(command, werr, stderr.String())
	}
	return nil
}

// RestoreOptions say which snapshot goes where.
type RestoreOptions struct {
	// Snapshot is an ID or "latest".
	Snapshot string
	// To restores files under this directory instead of their original
	// place (machines).
	To string
	// Namespace restores objects into this namespace (clusters).
	Namespace string
	// Yes overwrites local changes and runs a dump's restore command.
	Yes bool
}

// RestoreResult says what a restore did.
type RestoreResult struct {
	Backup   string    `json:"backup"`
	Target   string    `json:"target"`
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
	// Files restored; Where they went.
	Files   int64  `json:"files,omitempty"`
	Where   string `json:"where"`
	Summary string `json:"summary,omitempty"`
}

// ConflictError is a restore refused because it would overwrite local
// changes; --yes overwrites them.
type ConflictError struct {
	Backup, Snapshot string
	Paths            []string
	// Command is set for a dump, whose restore replaces the live data.
	Command string
}

func (e *ConflictError) Error() string {
	if e.Command != "" {
		return fmt.Sprintf("restoring %s from snapshot %s runs %q, which replaces the live data", e.Backup, e.Snapshot, e.Command)
	}
	shown := e.Paths
	if len(shown) > 10 {
		shown = append(shown[:10:10], fmt.Sprintf("and %d more", len(e.Paths)-10))
	}
	return fmt.Sprintf("restoring %s from snapshot %s would overwrite %d locally changed file(s): %s", e.Backup, e.Snapshot, len(e.Paths), strings.Join(shown, ", "))
}

// ErrorHint says how to go on.
func (e *ConflictError) ErrorHint() string {
	return "pass --yes to overwrite, or restore elsewhere with --to DIR and compare"
}

// Restore restores a snapshot of b on this target.
func (r *Runner) Restore(ctx context.Context, b *model.Backup, o RestoreOptions) (*RestoreResult, error) {
	repo, err := r.Repo(b)
	if err != nil {
		return nil, err
	}
	snap, err := r.snapshot(ctx, repo, b, o.Snapshot)
	if err != nil {
		return nil, err
	}
	res := &RestoreResult{Backup: b.Metadata.Name, Target: r.Target, Snapshot: snap.ID, Time: snap.Time}
	switch {
	case b.Spec.Cluster != nil:
		if r.Objects == nil {
			return nil, fmt.Errorf("this target cannot restore cluster objects")
		}
		dir := filepath.Join(r.Dir, "restore", b.Metadata.Name)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := repo.Restore(ctx, snap.ID, dir, nil, true); err != nil {
			return nil, err
		}
		// The export's own directory is the snapshot's only path.
		src := dir
		if len(snap.Paths) == 1 {
			src = filepath.Join(dir, snap.Paths[0])
		}
		sum, err := r.Objects.Restore(ctx, src, o.Namespace)
		if err != nil {
			return nil, err
		}
		res.Where, res.Summary = "cluster "+r.Target, sum
		if o.Namespace != "" {
			res.Where += ", namespace " + o.Namespace
		}
		return res, nil
	case b.Spec.Machines.Command != nil:
		c := b.Spec.Machines.Command
		if o.To != "" {
			// A dump restored elsewhere is the file itself.
			if err := os.MkdirAll(o.To, 0o700); err != nil {
				return nil, err
			}
			if err := repo.Restore(ctx, snap.ID, o.To, nil, true); err != nil {
				return nil, err
			}
			res.Where, res.Files = filepath.Join(o.To, b.DumpFilename()), 1
			return res, nil
		}
		if !o.Yes {
			return nil, &ConflictError{Backup: b.Metadata.Name, Snapshot: snap.ShortID, Command: c.Restore}
		}
		if err := r.pipeDump(ctx, repo, snap, b, c.User, c.Restore); err != nil {
			return nil, fmt.Errorf("restore command: %w", err)
		}
		res.Where, res.Summary = "restore command", c.Restore
		return res, nil
	}
	nodes, err := repo.List(ctx, snap.ID)
	if err != nil {
		return nil, err
	}
	target := "/"
	if o.To != "" {
		target = o.To
	}
	if !o.Yes {
		if changed := localChanges(target, nodes); len(changed) > 0 {
			return nil, &ConflictError{Backup: b.Metadata.Name, Snapshot: snap.ShortID, Paths: changed}
		}
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, err
	}
	if err := repo.Restore(ctx, snap.ID, target, nil, true); err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.Type == "file" {
			res.Files++
		}
	}
	res.Where = target
	return res, nil
}

// localChanges lists the files under target that exist and differ from
// the snapshot in size or modification time, as rsync decides: restic
// restores both, so a file restic restored matches until someone edits it.
func localChanges(target string, nodes []restic.Node) []string {
	var out []string
	for _, n := range nodes {
		if n.Type != "file" {
			continue
		}
		p := filepath.Join(target, n.Path)
		fi, err := os.Lstat(p)
		if err != nil {
			continue // missing: restoring it overwrites nothing
		}
		if !fi.Mode().IsRegular() || fi.Size() != n.Size || !fi.ModTime().Equal(n.MTime) {
			out = append(out, p)
		}
	}
	return out
}

// dumpReader is a dump command's standard output. At its end it waits for
// the command: a dump that failed or wrote nothing ends in an error, not
// io.EOF, so restic is stopped before it writes a snapshot.
type dumpReader struct {
	cmd     *exec.Cmd
	out     io.ReadCloser
	stderr  *tail
	command string
	n       int64
	err     error
	done    bool
}

func startCommand(ctx context.Context, user, command string, stdin io.Reader) (*dumpReader, error) {
	cmd := shellCommand(ctx, user, command)
	cmd.Stdin = stdin
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	d := &dumpReader{cmd: cmd, out: out, stderr: &tail{}, command: command}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %q: %w", command, err)
	}
	return d, nil
}

func (d *dumpReader) Read(p []byte) (int, error) {
	if d.done {
		if d.err != nil {
			return 0, d.err
		}
		return 0, io.EOF
	}
	n, err := d.out.Read(p)
	d.n += int64(n)
	if err == nil {
		return n, nil
	}
	d.done = true
	werr := d.cmd.Wait()
	switch {
	case werr != nil:
		d.err = commandError(d.command, werr, d.stderr.String())
	case !errors.Is(err, io.EOF):
		d.err = fmt.Errorf("read the output of %q: %w", d.command, err)
	case d.n == 0:
		d.err = model.WithHint(fmt.Errorf("dump %q wrote nothing", d.command), "an empty dump is never kept as a backup; run the command by hand on the machine to see why")
	}
	if d.err != nil {
		return n, d.err
	}
	return n, io.EOF
}

// kill stops a dump still running (restic failed first).
func (d *dumpReader) kill() {
	if !d.done && d.cmd.Process != nil {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		d.cmd.Wait()
		d.done = true
	}
}

func output(ctx context.Context, user, command string) ([]byte, error) {
	cmd := shellCommand(ctx, user, command)
	var stderr tail
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, commandError(command, err, stderr.String())
	}
	return out.Bytes(), nil
}

// shellCommand runs command with /bin/sh -c, as user when set, in its own
// process group so that a cancelled run stops the whole pipeline.
func shellCommand(ctx context.Context, user, command string) *exec.Cmd {
	var cmd *exec.Cmd
	if user == "" || user == "root" {
		cmd = exec.CommandContext(ctx, "/bin/sh", "-c", command)
	} else {
		cmd = exec.CommandContext(ctx, "runuser", "-u", user, "--", "/bin/sh", "-c", command)
	}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func commandError(command string, err error, stderr string) error {
	msg := strings.TrimSpace(stderr)
	if msg != "" {
		msg = ": " + msg
	}
	return model.WithHint(fmt.Errorf("%q: %v%s", command, err, msg), "run the command by hand on the machine to see why it fails")
}

// tail keeps the last 4 KiB written: a command's stderr for its error.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append([]byte(nil), t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	s := bufio.NewScanner(bytes.NewReader(t.b))
	var lines []string
	for s.Scan() {
		if l := strings.TrimSpace(s.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "; ")
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
