// Package restic drives the restic command-line program to keep backups
// in restic repositories on S3.
//
// tend drives restic's CLI rather than writing its own format: restic's
// repository format is documented and maintained, and whoever holds the
// password and the bucket can restore with restic itself, with or without
// tend. restic's Go packages live under internal/ and cannot be imported,
// so, as Velero did before it moved to kopia, we run the binary and read
// its --json output.
//
// The driver targets restic 0.14 (Debian 12's), the oldest restic it
// meets: no --stdin-from-command, no restore --delete, no `repair`, and a
// backend that retries a failing request for many minutes. Secrets reach
// restic only through its environment; errors are *Error values whose
// text never holds them.
package restic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Repo is one restic repository. Secrets live only in Env, never in args,
// logs or errors.
type Repo struct {
	// Bin is the restic binary (default "restic", looked up in PATH).
	Bin string
	// URL is the repository, e.g. "s3:http://127.0.0.1:7070/bucket/prefix".
	URL string
	// Password encrypts the repository (RESTIC_PASSWORD).
	Password string
	// AccessKeyID and SecretAccessKey are the S3 credentials.
	AccessKeyID, SecretAccessKey string
	// Region is the bucket's region. Left empty, restic asks the server
	// (GetBucketLocation) and falls back to us-east-1 when the server
	// declines: that is also what keeps errors precise, because with a
	// region set restic's first request is a HEAD, whose error has no
	// body, so a missing bucket or an unknown access key both read "The
	// specified key does not exist".
	Region string
	// CacheDir is restic's local cache (default: --no-cache).
	CacheDir string
	// Host is the snapshot's host for backups: the machine or cluster name
	// (default: restic uses the hostname).
	Host string
	// RetryTimeout is how long restic may keep retrying a failing server
	// before the run is stopped with an unreachable error (default 2m).
	// restic 0.14 retries each request for many minutes on its own.
	RetryTimeout time.Duration
}

// DefaultRetryTimeout is Repo.RetryTimeout's default.
const DefaultRetryTimeout = 2 * time.Minute

// killGrace is how long restic has to clean up (remove its lock) after
// SIGINT before its process group is killed.
const killGrace = 5 * time.Second

// stderrTail is how much of restic's standard error is kept.
const stderrTail = 32 << 10

// S3URL returns the restic repository URL of prefix in bucket on an S3
// endpoint "http(s)://host:port": "s3:http://host:port/bucket/prefix".
func S3URL(endpoint, bucket, prefix string) string {
	u := "s3:" + strings.TrimRight(endpoint, "/") + "/" + strings.Trim(bucket, "/")
	if p := strings.Trim(prefix, "/"); p != "" {
		u += "/" + p
	}
	return u
}

// redactedURL is the repository URL without any user information.
func (r *Repo) redactedURL() string {
	scheme, rest, ok := strings.Cut(r.URL, ":")
	if !ok {
		return r.URL
	}
	u, err := url.Parse(rest)
	if err != nil || u.User == nil {
		return r.URL
	}
	u.User = nil
	return scheme + ":" + u.String()
}

func (r *Repo) bin() string {
	if r.Bin != "" {
		return r.Bin
	}
	return "restic"
}

// env is restic's whole environment: the repository's settings and a
// minimal base, not the caller's environment.
func (r *Repo) env(c *call) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	home := os.Getenv("HOME")
	if home == "" {
		home = os.TempDir()
	}
	env := []string{
		"PATH=" + path,
		"HOME=" + home,
		"TZ=UTC", // --time and the retention buckets are in UTC
		"RESTIC_PASSWORD=" + r.Password,
		"AWS_ACCESS_KEY_ID=" + r.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + r.SecretAccessKey,
		"RESTIC_PROGRESS_FPS=" + c.fps(),
	}
	if d := os.Getenv("TMPDIR"); d != "" {
		env = append(env, "TMPDIR="+d)
	}
	if r.Region != "" && !c.probe {
		env = append(env, "AWS_DEFAULT_REGION="+r.Region)
	}
	return env
}

// globalArgs come before the command.
func (r *Repo) globalArgs(c *call) []string {
	args := []string{"--repo", r.URL}
	if r.CacheDir != "" {
		args = append(args, "--cache-dir", r.CacheDir)
	} else {
		args = append(args, "--no-cache")
	}
	if r.Region != "" && !c.probe {
		args = append(args, "--option", "s3.region="+r.Region)
	}
	return args
}

// call is one restic run.
type call struct {
	op   string   // the Error's Op: "backup", "check", …
	args []string // the command and its arguments
	// probe leaves the region out, so that restic asks the server for
	// the bucket's location and its errors name what is wrong.
	probe bool
	// snapshot names the snapshot in errors.
	snapshot string
	// stdin, when set, is fed to restic through a pipe that is closed
	// only when stdin reaches io.EOF: on any other error, and when ctx
	// ends, restic is stopped before it sees the end of its input.
	stdin io.Reader
	// stdout receives restic's standard output; stdoutLine gets it line
	// by line instead. Neither: discarded.
	stdout     io.Writer
	stdoutLine func([]byte)
	// stderrLine sees each line of standard error (all are kept in a
	// bounded tail as well).
	stderrLine func([]byte)
	progress   bool // the caller wants status lines
}

func (c *call) fps() string {
	if c.progress {
		return "4"
	}
	return "1"
}

// result is what a finished run left behind.
type result struct {
	exit   int
	stderr string // the last stderrTail bytes
}

// errInput and errStalled are causes of a run's cancellation.
type errInput struct{ err error }

func (e *errInput) Error() string { return "reading the input: " + e.err.Error() }

type errStalled struct{ last string }

func (e *errStalled) Error() string { return e.last }

var retryRE = regexp.MustCompile(`returned error, retrying after ([0-9.]+[a-zµ]+)`)

// run runs restic for c and returns a classified *Error unless it exits 0
// (or 3, which the caller interprets: res.exit tells).
func (r *Repo) run(ctx context.Context, c call) (result, error) {
	var res result
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	args := append(r.globalArgs(&c), c.args...)
	cmd := exec.CommandContext(ctx, r.bin(), args...)
	cmd.Env = r.env(&c)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	var killTimer *time.Timer
	var killMu sync.Mutex
	cmd.Cancel = func() error {
		pid := cmd.Process.Pid
		killMu.Lock()
		defer killMu.Unlock()
		if killTimer == nil {
			grace := killGrace
			var st *errStalled
			if errors.As(context.Cause(ctx), &st) {
				grace = time.Second // its cleanup cannot reach the server either
			}
			killTimer = time.AfterFunc(grace, func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
		}
		return syscall.Kill(-pid, syscall.SIGINT)
	}
	cmd.WaitDelay = killGrace + 5*time.Second

	tail := &tailBuffer{max: stderrTail}
	timeout := r.RetryTimeout
	if timeout <= 0 {
		timeout = DefaultRetryTimeout
	}
	st := &stall{}
	stderr := &lineWriter{max: 64 << 10, fn: func(line []byte) {
		tail.add(line)
		if m := retryRE.FindSubmatch(line); m != nil {
			d, _ := time.ParseDuration(string(m[1]))
			st.retry(time.Now(), string(line), d)
		}
		if c.stderrLine != nil {
			c.stderrLine(line)
		}
	}}
	cmd.Stderr = stderr
	var stdoutLines *lineWriter
	switch {
	case c.stdoutLine != nil:
		stdoutLines = &lineWriter{max: 1 << 20, fn: c.stdoutLine}
		cmd.Stdout = stdoutLines
	case c.stdout != nil:
		cmd.Stdout = c.stdout
	}

	var pw *os.File
	if c.stdin != nil {
		pr, w, err := os.Pipe()
		if err != nil {
			return res, r.fail(c, "", err)
		}
		pw = w
		cmd.Stdin = pr
	}

	err := cmd.Start()
	if pw != nil {
		cmd.Stdin.(*os.File).Close() // the child holds its own copy
	}
	if err != nil {
		if pw != nil {
			pw.Close()
		}
		e := r.fail(c, err.Error(), err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			e.Hint = "install restic (Debian: apt-get install restic) or set the restic binary's path"
		}
		return res, e
	}
	if pw != nil {
		// Not waited for: a caller's reader that blocks past ctx is the
		// caller's to end (a dump command dies with the same ctx).
		go func() {
			_, err := io.Copy(pw, c.stdin)
			switch {
			case ctx.Err() != nil:
				// Stopped: keep the pipe open until restic is gone.
			case err != nil:
				cancel(&errInput{err})
			default:
				pw.Close() // a complete input: restic may write its snapshot
			}
		}()
	}
	watchDone := make(chan struct{})
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchDone:
				return
			case now := <-tick.C:
				if last, ok := st.expired(now, timeout); ok {
					cancel(&errStalled{last})
					return
				}
			}
		}
	}()

	werr := cmd.Wait()
	close(watchDone)
	killMu.Lock()
	if killTimer != nil {
		killTimer.Stop()
	}
	killMu.Unlock()
	if pw != nil {
		pw.Close() // restic is gone: the copier fails instead of blocking on a full pipe
	}
	stderr.flush()
	if stdoutLines != nil {
		stdoutLines.flush()
	}
	res.stderr = tail.String()
	if cmd.ProcessState != nil {
		res.exit = cmd.ProcessState.ExitCode()
	}

	cause := context.Cause(ctx)
	var in *errInput
	var stalled *errStalled
	switch {
	case errors.As(cause, &in):
		e := r.fail(c, "stopped before the end of its input, so no snapshot was written: "+in.err.Error(), in.err)
		e.Kind = KindAborted
		e.Hint = "the command or stream that feeds the backup failed; its own error says why"
		return res, e
	case errors.As(cause, &stalled):
		e := r.fail(c, fmt.Sprintf("the server kept failing for %s: %s", timeout, stalled.last), nil)
		e.Kind, e.Hint = classify(stalled.last)
		if e.Kind == "" {
			e.Kind, e.Hint = KindUnreachable, hints[KindUnreachable]
		}
		return res, e
	case cause != nil:
		e := r.fail(c, "stopped: "+cause.Error(), cause)
		e.Kind = KindAborted
		return res, e
	}
	if werr == nil {
		return res, nil
	}
	var exitErr *exec.ExitError
	if errors.As(werr, &exitErr) && res.exit == 3 && c.op == "backup" {
		return res, nil // the caller reads the files that failed
	}
	if !errors.As(werr, &exitErr) {
		// Not restic's failure: writing its output failed (Dump's writer).
		return res, r.fail(c, werr.Error(), werr)
	}
	msg := message(res.stderr)
	if msg == "" {
		msg = werr.Error()
	}
	e := r.fail(c, msg, werr)
	e.Kind, e.Hint = classify(res.stderr)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && e.Kind == "" {
		e.Msg = fmt.Sprintf("restic was killed (signal %d, %s)", int(ws.Signal()), ws.Signal())
		if m := message(res.stderr); m != "" {
			e.Msg += ": " + r.scrub(m)
		}
		e.Hint = "nothing of this run was kept; the lock it leaves is removed by Unlock (restic unlock)"
	}
	return res, e
}

// fail builds an *Error of c with secrets scrubbed from msg.
func (r *Repo) fail(c call, msg string, err error) *Error {
	return &Error{Op: c.op, Repo: r.redactedURL(), Snapshot: c.snapshot, Msg: r.scrub(msg), Err: scrubbed(r, err)}
}

// scrub replaces every secret value in s.
func (r *Repo) scrub(s string) string {
	for _, v := range []string{r.Password, r.SecretAccessKey} {
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// scrubbed keeps err when its text holds no secret, else replaces it by
// its scrubbed text.
func scrubbed(r *Repo, err error) error {
	if err == nil {
		return nil
	}
	if s := err.Error(); r.scrub(s) != s {
		return errors.New(r.scrub(s))
	}
	return err
}

// stall follows restic's "retrying after" lines: a streak of failures
// starts with the first and ends when the announced retry passed with no
// new failure.
type stall struct {
	mu    sync.Mutex
	since time.Time
	until time.Time
	last  string
}

func (s *stall) retry(now time.Time, line string, delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() || now.After(s.until) {
		s.since = now
	}
	if u := now.Add(delay + 10*time.Second); u.After(s.until) {
		s.until = u
	}
	s.last = line
}

func (s *stall) expired(now time.Time, timeout time.Duration) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() || now.After(s.until) || now.Sub(s.since) < timeout {
		return "", false
	}
	return s.last, true
}
