package restic_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tend.dev/tend/internal/backup/restic"
	"tend.dev/tend/internal/testenv"
)

// countFiles counts the files under dir (the repository's packs).
func countFiles(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// waitForUpload returns once a new pack has landed in the repository's
// data directory on the server, i.e. restic is in the middle of uploading.
func waitForUpload(t *testing.T, s3 *testenv.S3, prefix string, before int, done <-chan struct{}) {
	t.Helper()
	data := filepath.Join(s3.Dir, "backups", prefix, "data")
	deadline := time.Now().Add(time.Minute)
	for countFiles(data) <= before {
		select {
		case <-done:
			t.Fatal("the backup ended before it uploaded a pack; make the data larger")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("restic uploaded no pack within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// resticChildren are the PIDs of this process's restic children.
func resticChildren(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.HasSuffix(s[:i], "(restic") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func bigTree(t *testing.T, seed uint64) string {
	dir := t.TempDir()
	for i := range 4 {
		writeRandom(t, filepath.Join(dir, "f"+strconv.Itoa(i)), 16<<20, seed*10+uint64(i))
	}
	return dir
}

// TestKilledMidUpload: restic killed (SIGKILL) during an upload leaves a
// stale lock and unreferenced packs, no snapshot; Unlock, a new backup
// and a full check are clean.
func TestKilledMidUpload(t *testing.T) {
	ctx := context.Background()
	r, s3 := newRepo(t)
	dir := bigTree(t, 1)
	done := make(chan struct{})
	var err error
	go func() { defer close(done); _, err = r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}}) }()
	waitForUpload(t, s3, "t", 0, done)
	pids := resticChildren(t)
	if len(pids) != 1 {
		t.Fatalf("restic children = %v, want one", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL) //nolint:errcheck
	<-done
	t.Log(err)
	if err == nil {
		t.Fatal("a killed backup reported success")
	}
	if n := countFiles(filepath.Join(s3.Dir, "backups", "t", "locks")); n != 1 {
		t.Errorf("%d locks after the kill, want the killed run's one", n)
	}
	if n := countSnapshots(t, r); n != 0 {
		t.Fatalf("%d snapshots after a killed backup", n)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Check(ctx, true); err != nil {
		t.Fatalf("check --read-data after the kill: %v", err)
	}
}

// TestS3GoneMidUpload: the server stops during an upload. restic 0.14
// would retry for many minutes; RetryTimeout ends the run with an
// unreachable error. Once the server is back the next run succeeds, and
// no half snapshot is listed.
func TestS3GoneMidUpload(t *testing.T) {
	ctx := context.Background()
	r, s3 := newRepo(t)
	r.RetryTimeout = 2 * time.Second
	dir := bigTree(t, 2)
	done := make(chan struct{})
	var err error
	start := time.Now()
	go func() { defer close(done); _, err = r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}}) }()
	waitForUpload(t, s3, "t", 0, done)
	s3.Stop()
	stopped := time.Now()
	<-done
	t.Logf("gave up %s after the server stopped: %v", time.Since(stopped).Round(time.Millisecond), err)
	wantKind(t, err, restic.KindUnreachable)
	noSecrets(t, err, password, s3.SecretKey)
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the failing backup took %s to give up", d)
	}
	if pids := resticChildren(t); len(pids) != 0 {
		t.Errorf("restic still runs: %v", pids)
	}

	s3.Start(t)
	if n := countSnapshots(t, r); n != 0 {
		t.Fatalf("%d snapshots after the broken upload, want none", n)
	}
	if err := r.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}}); err != nil {
		t.Fatalf("backup with the server back: %v", err)
	}
	if n := countSnapshots(t, r); n != 1 {
		t.Errorf("%d snapshots, want 1", n)
	}
	if err := r.Check(ctx, false); err != nil {
		t.Errorf("check: %v", err)
	}
}

// TestCorruptPack damages a pack file on the server: restore --verify and
// check --read-data fail with a corruption error; restore names the
// snapshot.
func TestCorruptPack(t *testing.T) {
	ctx := context.Background()
	r, s3 := newRepo(t)
	dir := t.TempDir()
	writeRandom(t, filepath.Join(dir, "big.bin"), 6<<20, 3)
	sum, err := r.Backup(ctx, restic.BackupOptions{Paths: []string{dir}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(ctx, true); err != nil {
		t.Fatalf("check before the damage: %v", err)
	}
	// The largest pack holds big.bin's data.
	var pack string
	var size int64
	filepath.WalkDir(filepath.Join(s3.Dir, "backups", "t", "data"), func(p string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil && fi.Size() > size {
				pack, size = p, fi.Size()
			}
		}
		return nil
	})
	if size < 1<<20 {
		t.Fatalf("no data pack in the bucket (largest %s, %d bytes)", pack, size)
	}
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tend was here, damaging a pack"), size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	for _, tc := range []struct {
		name string
		run  func() error
		want []string
	}{
		{"restore --verify", func() error { return r.Restore(ctx, sum.SnapshotID, t.TempDir(), nil, true) },
			[]string{"snapshot " + sum.SnapshotID[:8], "ciphertext verification failed"}},
		{"check --read-data", func() error { return r.Check(ctx, true) },
			[]string{"Pack ID does not match", filepath.Base(pack)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			t.Log(err)
			e := wantKind(t, err, restic.KindCorrupt)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to say %q", err, w)
				}
			}
			if tc.name == "restore --verify" && e.Snapshot != sum.SnapshotID {
				t.Errorf("error's snapshot = %q, want %s", e.Snapshot, sum.SnapshotID)
			}
			noSecrets(t, err, password, s3.SecretKey)
		})
	}
}
