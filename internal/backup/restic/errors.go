package restic

import (
	"errors"
	"strings"
)

// Kind says what went wrong, so that callers can react without parsing text.
type Kind string

// The kinds of errors restic runs end in.
const (
	// KindCredentials: the S3 server rejected the access key or secret.
	KindCredentials Kind = "Credentials"
	// KindNoBucket: the bucket does not exist; tend never creates buckets.
	KindNoBucket Kind = "NoBucket"
	// KindUnreachable: the S3 server could not be reached.
	KindUnreachable Kind = "Unreachable"
	// KindPassword: the repository's password opens none of its keys.
	KindPassword Kind = "Password"
	// KindLocked: another run holds the repository's lock.
	KindLocked Kind = "Locked"
	// KindCorrupt: the repository's data is damaged.
	KindCorrupt Kind = "Corrupt"
	// KindNoRepository: the bucket holds no repository at the prefix.
	KindNoRepository Kind = "NoRepository"
	// KindIncomplete: a snapshot was saved, but some files could not be read.
	KindIncomplete Kind = "Incomplete"
	// KindAborted: the run was stopped (context, or its input failed);
	// for a backup, no snapshot was written.
	KindAborted Kind = "Aborted"
	// KindRefused: tend refused to run it (a retention that keeps nothing).
	KindRefused Kind = "Refused"
	// KindNoSnapshot: no snapshot matches.
	KindNoSnapshot Kind = "NoSnapshot"
)

// Error is a failed restic run. Its text never holds a secret.
type Error struct {
	// Op is restic's command: backup, restore, check, …
	Op string
	// Repo is the repository URL without credentials.
	Repo string
	// Snapshot is the snapshot being restored, dumped or listed, if any.
	Snapshot string
	// Kind classifies the failure ("" when restic's text matched nothing known).
	Kind Kind
	// Msg is restic's standard error, trimmed to what matters.
	Msg string
	// Hint says what to do about it.
	Hint string
	// Files are the files that could not be read (KindIncomplete).
	Files []string
	// Err is the underlying error, if any (an exit status, a context error).
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("restic " + e.Op)
	if e.Repo != "" {
		b.WriteString(" " + e.Repo)
	}
	if e.Snapshot != "" {
		b.WriteString(" snapshot " + short(e.Snapshot))
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// ErrorHint says what to do about it (see model.HintOf).
func (e *Error) ErrorHint() string { return e.Hint }

// KindOf returns the Kind of the first *Error in err's chain, or "".
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

var hints = map[Kind]string{
	KindCredentials:  "the S3 server rejected the access key: check accessKeyID and secretAccessKey in the credentials file",
	KindNoBucket:     "create the bucket; tend never creates buckets",
	KindUnreachable:  "check the endpoint URL and that the S3 server is up and reachable from here",
	KindPassword:     "the repository exists but this password opens none of its keys: check password in the credentials file (changing it there does not change the repository's)",
	KindLocked:       "another restic run holds the lock: wait for it; a lock left by a killed run is removed by Unlock (restic unlock) once it is stale",
	KindCorrupt:      "the repository is damaged: `restic check --read-data` names the damaged packs; remove them, run `restic rebuild-index`, and back up again",
	KindNoRepository: "no restic repository at this location yet: it is initialised on first use (Ensure); check the bucket and prefix",
	KindNoSnapshot:   "list the snapshots with `tend backup snapshots` or `restic snapshots`",
}

// patterns map restic's (lower-cased) standard error to a Kind, first
// match wins. The texts are restic 0.14's and minio-go's, as versitygw
// and AWS answer.
var patterns = []struct {
	kind Kind
	any  []string
}{
	{KindPassword, []string{"wrong password or no key found"}},
	{KindLocked, []string{"repository is already locked"}},
	{KindNoBucket, []string{"nosuchbucket", "the specified bucket does not exist", "bucket does not exist"}},
	{KindCredentials, []string{
		"invalidaccesskeyid", "signaturedoesnotmatch", "the request signature we calculated does not match",
		"no user exists with the provided access key id", "the aws access key id you provided does not exist",
		"access denied", "accessdenied", "403 forbidden", "status code 403", "invalid access key",
	}},
	{KindUnreachable, []string{
		"connection refused", "no such host", "i/o timeout", "timeout awaiting", "tls handshake timeout",
		"network is unreachable", "no route to host", "connection reset by peer", "server misbehaving",
		"context deadline exceeded", "dial tcp",
	}},
	{KindCorrupt, []string{
		"ciphertext verification failed", "hash does not match", "pack id does not match", "unable to load",
		"repository contains errors", "invalid data returned", "pack file cannot be listed", "header length",
		"blob not found", "not found in index", "incomplete pack", "decrypting blob", "ciphertext too small",
	}},
}

// classify returns the Kind and hint for restic's standard error.
func classify(stderr string) (Kind, string) {
	low := strings.ToLower(stderr)
	for _, p := range patterns {
		for _, s := range p.any {
			if strings.Contains(low, s) {
				return p.kind, hints[p.kind]
			}
		}
		// After bucket, credentials and network errors, whose text
		// follows the same prefix: "unable to open config file: Stat:
		// The specified key does not exist."
		if p.kind == KindUnreachable && noRepository(low) {
			return KindNoRepository, hints[KindNoRepository]
		}
	}
	return "", ""
}

func noRepository(low string) bool {
	if !strings.Contains(low, "unable to open config file") {
		return false
	}
	return strings.Contains(low, "does not exist") || strings.Contains(low, "nosuchkey") || strings.Contains(low, "no such file")
}

func short(id string) string {
	if len(id) > 8 && !strings.Contains(id, " ") && id != "latest" {
		return id[:8]
	}
	return id
}
