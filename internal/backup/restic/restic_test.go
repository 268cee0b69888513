package restic_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/backup/restic"
	"tend.dev/tend/internal/testenv"
)

const password = "correct-horse-battery-staple"

// newRepo starts an S3 server with a bucket "backups" and returns an
// initialised repository at prefix t in it.
func newRepo(t *testing.T) (*restic.Repo, *testenv.S3) {
	t.Helper()
	s3 := testenv.NewS3(t)
	s3.CreateBucket(t, "backups")
	r := repoOn(s3, "backups", "t")
	if err := r.Ensure(context.Background()); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return r, s3
}

func repoOn(s3 *testenv.S3, bucket, prefix string) *restic.Repo {
	return &restic.Repo{
		URL:             restic.S3URL(s3.Endpoint, bucket, prefix),
		Password:        password,
		AccessKeyID:     s3.AccessKey,
		SecretAccessKey: s3.SecretKey,
		Host:            "m1",
	}
}

// noSecrets fails when err's text, or its hint, shows a secret.
func noSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	text := err.Error()
	var e *restic.Error
	if errors.As(err, &e) {
		text += " " + e.Hint + " " + e.Msg
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
}

func wantKind(t *testing.T, err error, kind restic.Kind) *restic.Error {
	t.Helper()
	var e *restic.Error
	if !errors.As(err, &e) || e.Kind != kind {
		t.Fatalf("err = %v (kind %q), want kind %s", err, restic.KindOf(err), kind)
	}
	if e.Hint == "" && kind != restic.KindAborted {
		t.Errorf("%s error without a hint: %v", kind, err)
	}
	return e
}

func writeRandom(t *testing.T, path string, n int, seed uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	rng.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

func countSnapshots(t *testing.T, r *restic.Repo) int {
	t.Helper()
	snaps, err := r.Snapshots(context.Background(), nil, "")
	if err != nil {
		t.Fatalf("Snapshots: %v", err)
	}
	return len(snaps)
}

var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestEnsure(t *testing.T) {
	ctx := context.Background()
	s3 := testenv.NewS3(t)
	s3.CreateBucket(t, "backups")

	t.Run("initialises on first use, then only opens", func(t *testing.T) {
		r := repoOn(s3, "backups", "first")
		if err := r.Ensure(ctx); err != nil {
			t.Fatalf("first Ensure: %v", err)
		}
		if _, err := os.Stat(filepath.Join(s3.Dir, "backups", "first", "config")); err != nil {
			t.Fatalf("no repository config in the bucket: %v", err)
		}
		if err := r.Ensure(ctx); err != nil {
			t.Fatalf("second Ensure: %v", err)
		}
		if n := countSnapshots(t, r); n != 0 {
			t.Errorf("a new repository has %d snapshots", n)
		}
	})
	t.Run("a missing bucket is an error, and is not created", func(t *testing.T) {
		r := repoOn(s3, "nobucket", "p")
		e := wantKind(t, r.Ensure(ctx), restic.KindNoBucket)
		if !strings.Contains(e.Hint, "tend never creates buckets") {
			t.Errorf("hint = %q", e.Hint)
		}
		_, err := r.Backup(ctx, restic.BackupOptions{Stdin: strings.NewReader("x")})
		wantKind(t, err, restic.KindNoBucket)
		if _, err := os.Stat(filepath.Join(s3.Dir, "nobucket")); !os.IsNotExist(err) {
			t.Errorf("the bucket was created (stat: %v)", err)
		}
	})
	t.Run("wrong secret key", func(t *testing.T) {
		r := repoOn(s3, "backups", "first")
		r.SecretAccessKey = "not-the-secret-key-0123456789"
		err := r.Ensure(ctx)
		wantKind(t, err, restic.KindCredentials)
		noSecrets(t, err, r.SecretAccessKey, password)
		_, err = r.Backup(ctx, restic.BackupOptions{Stdin: strings.NewReader("x")})
		wantKind(t, err, restic.KindCredentials)
		noSecrets(t, err, r.SecretAccessKey, password)
		if n := countSnapshots(t, repoOn(s3, "backups", "first")); n != 0 {
			t.Errorf("%d snapshots after backups with wrong credentials", n)
		}
	})
	t.Run("unknown access key", func(t *testing.T) {
		r := repoOn(s3, "backups", "first")
		r.AccessKeyID = "nobody"
		wantKind(t, r.Ensure(ctx), restic.KindCredentials)
	})
	t.Run("wrong repository password", func(t *testing.T) {
		r := repoOn(s3, "backups", "first")
		r.Password = "wrong-password-xyz"
		_, err := r.Snapshots(ctx, nil, "")
		wantKind(t, err, restic.KindPassword)
		noSecrets(t, err, r.Password, s3.SecretKey)
	})
	t.Run("server unreachable", func(t *testing.T) {
		r := repoOn(s3, "backups", "first")
		r.URL = restic.S3URL("http://127.0.0.1:1", "backups", "first")
		wantKind(t, r.Ensure(ctx), restic.KindUnreachable)
	})
}

func TestBackupAndRestore(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	src := filepath.Join(t.TempDir(), "srv", "app")
	big := writeRandom(t, filepath.Join(src, "data", "big.bin"), 3<<20, 1)
	if err := os.WriteFile(filepath.Join(src, "config.yaml"), []byte("version: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(src, "cache", "junk.tmp"), 1<<10, 2)

	var progress int
	first, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{src}, Exclude: []string{"*.tmp"}, Tags: []string{"tend", "files"},
		Progress: func(restic.Progress) { progress++ }})
	if err != nil {
		t.Fatalf("first backup: %v", err)
	}
	if !fullID.MatchString(first.SnapshotID) || first.FilesNew != 2 || first.DataAdded < 3<<20 {
		t.Errorf("first backup summary = %+v, want a full ID, 2 new files, >= 3 MiB added", first)
	}
	if progress == 0 {
		t.Error("no progress reported")
	}

	second, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{src}, Exclude: []string{"*.tmp"}, Tags: []string{"tend", "files"}})
	if err != nil {
		t.Fatalf("unchanged backup: %v", err)
	}
	if second.DataAdded > 4<<10 || second.FilesUnmodified != 2 {
		t.Errorf("unchanged backup summary = %+v, want ~0 bytes added and 2 unmodified files", second)
	}

	snaps, err := r.Snapshots(ctx, []string{"files"}, "m1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range snaps {
		got = append(got, s.ID)
	}
	if diff := cmp.Diff([]string{first.SnapshotID, second.SnapshotID}, got); diff != "" {
		t.Fatalf("snapshots, oldest first (-want +got):\n%s", diff)
	}
	if s := snaps[1]; s.Parent != first.SnapshotID || s.Host != "m1" || !cmp.Equal(s.Paths, []string{src}) || s.ShortID != s.ID[:8] {
		t.Errorf("second snapshot = %+v", s)
	}
	if other, err := r.Snapshots(ctx, []string{"files"}, "m2"); err != nil || len(other) != 0 {
		t.Errorf("snapshots of host m2 = %v, %v", other, err)
	}

	t.Run("list", func(t *testing.T) {
		nodes, err := r.List(ctx, second.SnapshotID)
		if err != nil {
			t.Fatal(err)
		}
		byPath := map[string]restic.Node{}
		for _, n := range nodes {
			byPath[n.Path] = n
		}
		n, ok := byPath[filepath.Join(src, "data", "big.bin")]
		if !ok || n.Type != "file" || n.Size != 3<<20 || n.Mode.Perm() != 0o644 || n.MTime.IsZero() {
			t.Errorf("big.bin in the listing = %+v (found %v)", n, ok)
		}
		if d := byPath[filepath.Join(src, "data")]; d.Type != "dir" || !d.Mode.IsDir() {
			t.Errorf("data dir = %+v", d)
		}
		if _, ok := byPath[filepath.Join(src, "cache", "junk.tmp")]; ok {
			t.Error("an excluded file is in the snapshot")
		}
	})
	t.Run("restore latest, verified", func(t *testing.T) {
		target := t.TempDir()
		if err := r.Restore(ctx, "latest", target, nil, true); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(target, src, "data", "big.bin"))
		if err != nil || !bytes.Equal(b, big) {
			t.Fatalf("restored big.bin differs (%d bytes, %v)", len(b), err)
		}
		fi, err := os.Stat(filepath.Join(target, src, "config.yaml"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("config.yaml restored as %v, %v", fi, err)
		}
	})
	t.Run("restore with include", func(t *testing.T) {
		target := t.TempDir()
		if err := r.Restore(ctx, first.SnapshotID[:8], target, []string{filepath.Join(src, "config.yaml")}, false); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(target, src, "data", "big.bin")); !os.IsNotExist(err) {
			t.Errorf("a file outside include was restored (%v)", err)
		}
	})
	t.Run("an unknown snapshot", func(t *testing.T) {
		_, err := r.List(ctx, "deadbeef")
		wantKind(t, err, restic.KindNoSnapshot)
	})
}

// TestUnreadableFiles: restic saves the snapshot without what it could
// not read and exits 3; that is an error naming the files, not success.
func TestUnreadableFiles(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ok"), []byte("fine"), 0o644)
	unreadable := filepath.Join(dir, "secret")
	os.WriteFile(unreadable, []byte("x"), 0o644)
	if os.Geteuid() == 0 {
		// root reads any file; a write-only sysctl refuses even root.
		unreadable = "/proc/sys/vm/compact_memory"
		if _, err := os.ReadFile(unreadable); err == nil {
			t.Fatalf("%s is readable, so this test cannot make restic fail to read a file", unreadable)
		}
	} else if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "gone")

	for _, tc := range []struct {
		name  string
		paths []string
		want  string
	}{
		{"unreadable file (exit status 3)", []string{dir, unreadable}, unreadable},
		{"missing path", []string{dir, missing}, missing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum, err := r.Backup(ctx, restic.BackupOptions{Paths: tc.paths})
			e := wantKind(t, err, restic.KindIncomplete)
			if len(e.Files) != 1 || !strings.HasPrefix(e.Files[0], tc.want) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("files = %q, err = %v; want %s named", e.Files, err, tc.want)
			}
			if sum.SnapshotID == "" || e.Snapshot != sum.SnapshotID {
				t.Errorf("the saved snapshot is not reported: summary %+v, error snapshot %q", sum, e.Snapshot)
			}
		})
	}
}

// TestRetentionCalendar makes snapshots over 400 days with restic's
// --time, applies policies, and checks that restic keeps exactly what the
// policy says, as computed here independently.
func TestRetentionCalendar(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	tags := []string{"tend-backup=cal"}
	at := func(s string) time.Time {
		tm, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	times := []time.Time{
		at("2025-01-10 03:00"), // 0
		at("2025-04-20 03:00"), // 1
		at("2025-07-29 03:00"), // 2
		at("2025-11-06 03:00"), // 3
		at("2025-12-26 03:00"), // 4
		at("2026-01-25 03:00"), // 5: the newest of January 2026
		at("2026-02-09 10:00"), // 6
		at("2026-02-10 10:00"), // 7: the newest of Feb 10
		at("2026-02-11 09:00"), // 8: not the newest of Feb 11
		at("2026-02-11 15:00"), // 9: second to last
		at("2026-02-12 08:00"), // 10: last
	}
	ids := make([]string, len(times))
	for i, tm := range times {
		sum, err := r.Backup(ctx, restic.BackupOptions{Stdin: strings.NewReader(tm.String()), StdinFilename: "db.dump", Tags: tags, Time: tm})
		if err != nil {
			t.Fatalf("backup at %s: %v", tm, err)
		}
		ids[i] = sum.SnapshotID
	}
	// A snapshot of another host is in no group of m1 and stays.
	other := *r
	other.Host = "m2"
	if _, err := other.Backup(ctx, restic.BackupOptions{Stdin: strings.NewReader("m2"), StdinFilename: "db.dump", Tags: tags, Time: times[0]}); err != nil {
		t.Fatal(err)
	}
	snaps, err := r.Snapshots(ctx, tags, "m1")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range snaps {
		if !s.Time.Equal(times[i]) || s.ID != ids[i] {
			t.Fatalf("snapshot %d = %s at %s, want %s at %s", i, s.ID, s.Time, ids[i], times[i])
		}
	}

	for _, tc := range []struct {
		name string
		keep restic.Keep
		want []int // by hand; nil: only the independent computation
	}{
		// Newest first: 10 and 9 are the last 2; the daily 3 are 10
		// (Feb 12), 9 (Feb 11) and 7 (Feb 10); the monthly 2 are 10
		// (February) and 5 (January).
		{"last 2, daily 3, monthly 2", restic.Keep{Last: 2, Daily: 3, Monthly: 2}, []int{5, 7, 9, 10}},
		// ISO weeks: 10, 9, 8, 7 and 6 (Mon Feb 9) share 2026-W07, so the
		// weekly 4 are 10, 5 (W04), 4 (2025-W52) and 3 (W45); the years
		// are 2026 (10) and 2025 (4): 0 is not the newest of 2025.
		{"weekly 4, yearly 3", restic.Keep{Weekly: 4, Yearly: 3}, []int{3, 4, 5, 10}},
		{"hourly 3", restic.Keep{Hourly: 3}, []int{8, 9, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := expectKept(times, tc.keep)
			if tc.want != nil {
				if diff := cmp.Diff(tc.want, want); diff != "" {
					t.Fatalf("the test's own computation disagrees with the hand count (-hand +computed):\n%s", diff)
				}
			}
			res, err := r.Forget(ctx, tc.keep, tags, "m1", true)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(pick(ids, want), idsOf(res.Keep)); diff != "" {
				t.Errorf("kept (-policy +restic):\n%s", diff)
			}
			if len(res.Keep)+len(res.Remove) != len(times) {
				t.Errorf("keep %d + remove %d != %d snapshots", len(res.Keep), len(res.Remove), len(times))
			}
		})
	}

	t.Run("a policy that keeps nothing is refused and deletes nothing", func(t *testing.T) {
		for _, k := range []restic.Keep{{}, {Last: -1}} {
			_, err := r.Forget(ctx, k, tags, "m1", false)
			wantKind(t, err, restic.KindRefused)
		}
		if n := countSnapshots(t, r); n != len(times)+1 {
			t.Errorf("a refused forget left %d of %d snapshots", n, len(times)+1)
		}
	})

	t.Run("forget removes what the dry run said, and prunes", func(t *testing.T) {
		k := restic.Keep{Last: 2, Daily: 3, Monthly: 2}
		res, err := r.Forget(ctx, k, tags, "m1", false)
		if err != nil {
			t.Fatal(err)
		}
		want := pick(ids, []int{5, 7, 9, 10})
		if diff := cmp.Diff(want, idsOf(res.Keep)); diff != "" {
			t.Errorf("kept (-want +got):\n%s", diff)
		}
		left, err := r.Snapshots(ctx, tags, "m1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, idsOf(left)); diff != "" {
			t.Errorf("left after forget (-want +got):\n%s", diff)
		}
		if m2, err := r.Snapshots(ctx, tags, "m2"); err != nil || len(m2) != 1 {
			t.Errorf("m2's snapshot: %v, %v", m2, err)
		}
		if err := r.ForgetIDs(ctx, want[0]); err != nil {
			t.Fatal(err)
		}
		if n := countSnapshots(t, r); n != len(want) {
			t.Errorf("after ForgetIDs: %d snapshots, want %d", n, len(want))
		}
	})
}

// expectKept applies restic's documented policy: walking from the newest,
// a snapshot is kept when it is among the last N, or is the newest of an
// hour, day, ISO week, month or year that still has room. It returns
// indexes into times, ascending.
func expectKept(times []time.Time, k restic.Keep) []int {
	order := make([]int, len(times))
	for i := range order {
		order[i] = len(times) - 1 - i // times are oldest first
	}
	type bucket struct {
		n    int
		key  func(time.Time) string
		last string
	}
	buckets := []*bucket{
		{n: k.Hourly, key: func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{n: k.Daily, key: func(t time.Time) string { return t.Format("2006-01-02") }},
		{n: k.Weekly, key: func(t time.Time) string {
			y, w := t.ISOWeek()
			return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC).Format("2006") + "w" + string(rune('A'+w))
		}},
		{n: k.Monthly, key: func(t time.Time) string { return t.Format("2006-01") }},
		{n: k.Yearly, key: func(t time.Time) string { return t.Format("2006") }},
	}
	var kept []int
	for rank, i := range order {
		keep := rank < k.Last
		for _, b := range buckets {
			if b.n > 0 && b.key(times[i]) != b.last {
				b.last = b.key(times[i])
				b.n--
				keep = true
			}
		}
		if keep {
			kept = append([]int{i}, kept...)
		}
	}
	return kept
}

func pick(ids []string, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, ids[i])
	}
	return out
}

func idsOf(snaps []restic.Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.ID)
	}
	return out
}

// failingReader yields n bytes of data, then fails, as a dump command that
// dies halfway does.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = byte(i)
	}
	f.n -= k
	return k, nil
}

func TestStdin(t *testing.T) {
	ctx := context.Background()
	r, _ := newRepo(t)
	dump := make([]byte, 2<<20+123)
	rand.NewChaCha8([32]byte{7}).Read(dump)

	t.Run("backup and dump round-trip byte for byte", func(t *testing.T) {
		sum, err := r.Backup(ctx, restic.BackupOptions{Stdin: bytes.NewReader(dump), StdinFilename: "shop.dump", Tags: []string{"db"}})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := r.Dump(ctx, sum.SnapshotID, "/shop.dump", &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), dump) {
			t.Fatalf("dump differs: %d bytes back, %d in", out.Len(), len(dump))
		}
	})
	t.Run("a failing input writes no snapshot", func(t *testing.T) {
		before := countSnapshots(t, r)
		cause := errors.New("pg_dump: exit status 1")
		_, err := r.Backup(ctx, restic.BackupOptions{Stdin: &failingReader{n: 1 << 20, err: cause}, StdinFilename: "shop.dump"})
		wantKind(t, err, restic.KindAborted)
		if !errors.Is(err, cause) {
			t.Errorf("err = %v, want it to wrap the input's error", err)
		}
		if n := countSnapshots(t, r); n != before {
			t.Errorf("%d snapshots after an aborted backup, want %d", n, before)
		}
	})
	t.Run("a cancelled context writes no snapshot", func(t *testing.T) {
		before := countSnapshots(t, r)
		pr, pw := io.Pipe()
		defer pw.Close()
		go pw.Write(make([]byte, 1<<20)) //nolint:errcheck
		ctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(1500*time.Millisecond, cancel)
		_, err := r.Backup(ctx, restic.BackupOptions{Stdin: pr, StdinFilename: "shop.dump"})
		wantKind(t, err, restic.KindAborted)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want it to wrap context.Canceled", err)
		}
		if n := countSnapshots(t, r); n != before {
			t.Errorf("%d snapshots after a cancelled backup, want %d", n, before)
		}
	})
	t.Run("after the aborts, the next backup works and the repository checks clean", func(t *testing.T) {
		if _, err := r.Backup(ctx, restic.BackupOptions{Stdin: bytes.NewReader(dump[:1000]), StdinFilename: "shop.dump"}); err != nil {
			t.Fatal(err)
		}
		if err := r.Check(ctx, false); err != nil {
			t.Fatal(err)
		}
	})
}
