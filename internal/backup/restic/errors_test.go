package restic

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The texts are restic 0.14's, as it printed them against versitygw.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, stderr string
		want         Kind
	}{
		{"no repository", "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?\ns3:http://127.0.0.1:7071/bkt1/p", KindNoRepository},
		{"missing bucket", "Fatal: unable to open config file: Stat: The specified bucket does not exist.\nIs there a repository at the following location?", KindNoBucket},
		{"wrong secret", "Fatal: unable to open config file: Stat: The request signature we calculated does not match the signature you provided. Check your key and signing method.", KindCredentials},
		{"unknown access key (versitygw)", "Fatal: unable to open config file: Stat: No user exists with the provided access key ID.", KindCredentials},
		{"unknown access key (AWS)", "Fatal: unable to open config file: Stat: The AWS Access Key Id you provided does not exist in our records.", KindCredentials},
		{"access denied", "Fatal: unable to open config file: Stat: Access Denied.", KindCredentials},
		{"connection refused", `Fatal: unable to open config file: Stat: Get "http://127.0.0.1:7999/bkt1/?location=": dial tcp 127.0.0.1:7999: connect: connection refused`, KindUnreachable},
		{"no such host", `Fatal: unable to open config file: Stat: Get "http://nonexist.invalid:7999/bkt1/?location=": dial tcp: lookup nonexist.invalid: no such host`, KindUnreachable},
		{"wrong password", "Fatal: wrong password or no key found", KindPassword},
		{"locked", "unable to create lock in backend: repository is already locked by PID 17246 on vm by root (UID 0, GID 0)\nlock was created at 2026-12-04 21:17:14 (1.543430173s ago)\nstorage ID 139c9396\nthe `unlock` command can be used to remove stale locks", KindLocked},
		{"check: pack damaged", "Pack ID does not match, want d273adc2, got 3ae44199\nFatal: repository contains errors", KindCorrupt},
		{"restore: blob damaged", "ignoring error for /data/f15: ciphertext verification failed\nFatal: There were 1 errors", KindCorrupt},
		{"unknown", "Fatal: something new", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hint := classify(tc.stderr)
			if got != tc.want {
				t.Errorf("classify = %q, want %q", got, tc.want)
			}
			if (hint == "") != (tc.want == "") {
				t.Errorf("hint = %q", hint)
			}
		})
	}
}

func TestMessage(t *testing.T) {
	for _, tc := range []struct{ name, stderr, want string }{
		{"fatal with restic's question", "Fatal: unable to open config file: Stat: The specified key does not exist.\nIs there a repository at the following location?\ns3:http://h/b/p\n",
			"unable to open config file: Stat: The specified key does not exist."},
		{"check output", "create exclusive lock for repository\nload indexes\ncheck all packs\ncheck snapshots, trees and blobs\n[0:00] 100.00%  3 / 3 snapshots\n\nread all data\n[0:00] 100.00%  11 / 11 packs\nPack ID does not match, want a, got b\nFatal: repository contains errors\n",
			"Pack ID does not match, want a, got b; repository contains errors"},
		{"retries collapse to the last", "Save(<data/1>) returned error, retrying after 1s: x\nSave(<data/2>) returned error, retrying after 2s: y\nFatal: unable to save snapshot: z",
			"Save(<data/2>) returned error, retrying after 2s: y; unable to save snapshot: z"},
		{"terminal escapes", "\x1b[2Ksignal interrupt received, cleaning up\n\x1b[2KFatal: boom", "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := message(tc.stderr); got != tc.want {
				t.Errorf("message = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{max: 8, fn: func(b []byte) { got = append(got, string(b)) }}
	for _, chunk := range []string{"ab", "c\r\nd", "efghijklmnopqrstuvwxyz\nshort\n", "tail"} {
		w.Write([]byte(chunk)) //nolint:errcheck
	}
	w.flush()
	if diff := cmp.Diff([]string{"abc", "defghijk", "short", "tail"}, got); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	tb := &tailBuffer{max: 12}
	for _, l := range []string{"first", "second", "third"} {
		tb.add([]byte(l))
	}
	if got := tb.String(); got != "third" {
		t.Errorf("tail = %q", got)
	}
}

func TestS3URL(t *testing.T) {
	for _, tc := range []struct{ endpoint, bucket, prefix, want string }{
		{"http://127.0.0.1:7070", "backups", "shop", "s3:http://127.0.0.1:7070/backups/shop"},
		{"https://s3.example.com/", "/backups/", "/a/b/", "s3:https://s3.example.com/backups/a/b"},
		{"https://s3.example.com", "backups", "", "s3:https://s3.example.com/backups"},
	} {
		if got := S3URL(tc.endpoint, tc.bucket, tc.prefix); got != tc.want {
			t.Errorf("S3URL(%q, %q, %q) = %q, want %q", tc.endpoint, tc.bucket, tc.prefix, got, tc.want)
		}
	}
	r := &Repo{URL: "s3:https://key:secret@s3.example.com/b/p"}
	if got := r.redactedURL(); got != "s3:https://s3.example.com/b/p" {
		t.Errorf("redactedURL = %q", got)
	}
}

func TestErrorNeverShowsSecrets(t *testing.T) {
	r := &Repo{URL: "s3:http://h/b/p", Password: "pa55word-xyz", SecretAccessKey: "s3cr3t-key-abc"}
	e := r.fail(call{op: "backup"}, "bad pa55word-xyz and s3cr3t-key-abc", errors.New("env RESTIC_PASSWORD=pa55word-xyz"))
	for _, s := range []string{e.Error(), e.Unwrap().Error()} {
		if strings.Contains(s, "pa55word-xyz") || strings.Contains(s, "s3cr3t-key-abc") {
			t.Errorf("secret in %q", s)
		}
	}
	if got, want := e.Error(), "restic backup s3:http://h/b/p: bad [redacted] and [redacted]"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestStall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &stall{}
	s.retry(t0, "a", time.Second)
	if _, ok := s.expired(t0.Add(3*time.Second), 5*time.Second); ok {
		t.Error("expired before the timeout")
	}
	s.retry(t0.Add(4*time.Second), "b", 2*time.Second)
	if last, ok := s.expired(t0.Add(6*time.Second), 5*time.Second); !ok || last != "b" {
		t.Errorf("expired = %q, %v; want b after 6s of failures", last, ok)
	}
	// Quiet past the announced retry: the server recovered; a new failure starts a new streak.
	s.retry(t0.Add(60*time.Second), "c", time.Second)
	if _, ok := s.expired(t0.Add(62*time.Second), 5*time.Second); ok {
		t.Error("an old streak counted toward a new one")
	}
}
