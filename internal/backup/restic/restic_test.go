package restic_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tend.dev/tend/internal/backup/restic"
	"tend.dev/tend/internal/testenv"
)

func newRepo(t *testing.T) (*restic.Repo, *testenv.S3) {
	t.Helper()
	s3 := testenv.NewS3(t)
	s3.CreateBucket(t, "backups")
	r := &restic.Repo{URL: restic.S3URL(s3.Endpoint, "backups", "t"), Password: "calendar-pass", AccessKeyID: s3.AccessKey, SecretAccessKey: s3.SecretKey, Host: "m1"}
	if err := r.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r, s3
}

// TestRetentionCalendar makes a snapshot every day at 03:00 for 400 days
// (restic's --time), then applies last 2 + daily 3 + weekly 2 + monthly 2
// + yearly 1, and checks restic keeps exactly what the policy says, as
// computed here independently.
func TestRetentionCalendar(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644)
	start := time.Date(2025, 10, 1, 3, 0, 0, 0, time.UTC)
	// Sparse on purpose (every 9th day, then the last 10 days daily): 400
	// restic runs would take minutes; what matters is the bucketing.
	var times []time.Time
	for d := 0; d < 420; d += 9 {
		times = append(times, start.AddDate(0, 0, d))
	}
	last := times[len(times)-1]
	for d := 1; d <= 10; d++ {
		times = append(times, last.AddDate(0, 0, d))
	}
	for _, tm := range times {
		if _, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}, Tags: []string{"tend-backup=cal"}, Time: tm}); err != nil {
			t.Fatal(err)
		}
	}
	k := restic.Keep{Last: 2, Daily: 3, Weekly: 2, Monthly: 2, Yearly: 1}
	want := expectKept(times, k)

	dry, err := r.Forget(ctx, k, []string{"tend-backup=cal"}, "m1", true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, days(dry.Keep)); diff != "" {
		t.Fatalf("kept (-policy +restic):\n%s", diff)
	}
	if _, err := r.Forget(ctx, k, []string{"tend-backup=cal"}, "m1", false); err != nil {
		t.Fatal(err)
	}
	snaps, err := r.Snapshots(ctx, []string{"tend-backup=cal"}, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, days(snaps)); diff != "" {
		t.Errorf("left after forget (-policy +restic):\n%s", diff)
	}

	t.Run("a policy that keeps nothing is refused and deletes nothing", func(t *testing.T) {
		_, err := r.Forget(ctx, restic.Keep{}, []string{"tend-backup=cal"}, "m1", false)
		if restic.KindOf(err) != restic.KindRefused {
			t.Fatalf("err = %v, want a refusal", err)
		}
		after, _ := r.Snapshots(ctx, []string{"tend-backup=cal"}, "m1")
		if len(after) != len(snaps) {
			t.Errorf("a refused forget deleted %d snapshots", len(snaps)-len(after))
		}
	})
}

// expectKept applies restic's documented policy: walking from the newest,
// a snapshot is kept when it is among the last N, or is the newest of a
// day, ISO week, month or year that still has room.
func expectKept(times []time.Time, k restic.Keep) []string {
	sorted := append([]time.Time(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].After(sorted[j]) })
	type bucket struct {
		n    int
		key  func(time.Time) string
		last string
	}
	buckets := []*bucket{
		{n: k.Daily, key: func(t time.Time) string { return t.Format("2006-01-02") }},
		{n: k.Weekly, key: func(t time.Time) string {
			y, w := t.ISOWeek()
			return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC).Format("2006") + "-" + string(rune('A'+w))
		}},
		{n: k.Monthly, key: func(t time.Time) string { return t.Format("2006-01") }},
		{n: k.Yearly, key: func(t time.Time) string { return t.Format("2006") }},
	}
	var kept []string
	for i, tm := range sorted {
		keep := i < k.Last
		for _, b := range buckets {
			if b.n > 0 && b.key(tm) != b.last {
				b.last = b.key(tm)
				b.n--
				keep = true
			}
		}
		if keep {
			kept = append(kept, tm.Format("2006-01-02"))
		}
	}
	sort.Strings(kept)
	return kept
}

func days(snaps []restic.Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.Time.UTC().Format("2006-01-02"))
	}
	sort.Strings(out)
	return out
}

func TestSecretsNeverInErrors(t *testing.T) {
	_, s3 := newRepo(t)
	r := &restic.Repo{URL: restic.S3URL(s3.Endpoint, "backups", "t"), Password: "wrong-password-xyz", AccessKeyID: s3.AccessKey, SecretAccessKey: s3.SecretKey}
	_, err := r.Snapshots(context.Background(), nil, "")
	if restic.KindOf(err) != restic.KindPassword {
		t.Fatalf("err = %v, want a wrong password", err)
	}
	for _, s := range []string{"wrong-password-xyz", s3.SecretKey} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
}
