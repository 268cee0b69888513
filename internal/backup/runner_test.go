package backup_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/testenv"
)

// world is a real S3 server, an ops repository with encrypted
// credentials, and a runner for target m1 on this host.
type world struct {
	s3     *testenv.S3
	runner *backup.Runner
	root   string
	data   string // a directory of data to back up
}

func newWorld(t *testing.T, secretKey string) *world {
	t.Helper()
	s3 := testenv.NewS3(t)
	s3.CreateBucket(t, "backups")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rule, _ := secret.AgeRule(id.Recipient().String())
	if secretKey == "" {
		secretKey = s3.SecretKey
	}
	creds := "accessKeyID: " + s3.AccessKey + "\nsecretAccessKey: " + secretKey + "\npassword: correct-horse-battery\n"
	enc, err := secret.Encrypt("secrets/s3.yaml", []byte(creds), rule)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	testenv.WriteFiles(t, root, map[string]string{"secrets/s3.yaml": string(enc)})
	ids := &secret.Identities{}
	if err := ids.Add("test", []byte(id.String())); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	testenv.WriteFiles(t, data, map[string]string{"a.txt": "alpha\n", "sub/b.bin": strings.Repeat("b", 300_000), "sub/c.txt": "gamma\n"})
	return &world{s3: s3, root: root, data: data, runner: &backup.Runner{Target: "m1", Dir: t.TempDir(), Root: root,
		Decrypt: func(file string, data []byte) ([]byte, error) { return secret.Decrypt(file, data, ids) }}}
}

func (w *world) backupOf(name string, mb model.MachineBackup) *model.Backup {
	mb.Pool = "web"
	return &model.Backup{Metadata: model.ObjectMeta{Name: name}, Spec: model.BackupSpec{
		Machines:   &mb,
		Repository: model.BackupRepository{S3: model.S3Location{Endpoint: w.s3.Endpoint, Bucket: "backups"}, Credentials: "secrets/s3.yaml"},
		Schedule:   model.Schedule{Cron: "@daily"},
		Keep:       model.Retention{Last: 3},
	}}
}

func must(t *testing.T, run backup.Run) backup.Run {
	t.Helper()
	if run.Result != backup.Succeeded {
		t.Fatalf("%s %s failed: %s (hint: %s)", run.Kind, run.Backup, run.Error, run.Hint)
	}
	return run
}

func TestPaths(t *testing.T) {
	w := newWorld(t, "")
	ctx := context.Background()
	b := w.backupOf("files", model.MachineBackup{Paths: []string{w.data}})

	first := must(t, w.runner.Backup(ctx, b, backup.Scheduled))
	if first.Snapshot == "" || first.Files != 3 || first.Bytes < 300_000 {
		t.Fatalf("first backup = %+v", first)
	}
	second := must(t, w.runner.Backup(ctx, b, backup.Scheduled))
	if second.Added > 2048 {
		t.Errorf("an unchanged second backup uploaded %d bytes", second.Added)
	}
	if v := must(t, w.runner.Verify(ctx, b)); v.Files != 3 {
		t.Errorf("verify checked %d files, want 3", v.Files)
	}

	t.Run("restore refuses to overwrite local changes", func(t *testing.T) {
		os.WriteFile(filepath.Join(w.data, "a.txt"), []byte("changed by hand\n"), 0o644)
		os.Remove(filepath.Join(w.data, "sub/c.txt"))
		_, err := w.runner.Restore(ctx, b, backup.RestoreOptions{Snapshot: "latest"})
		var ce *backup.ConflictError
		if !errors.As(err, &ce) || len(ce.Paths) != 1 || !strings.HasSuffix(ce.Paths[0], "a.txt") || model.HintOf(err) == "" {
			t.Fatalf("err = %v, want a conflict on a.txt only, with a hint", err)
		}
		if b, _ := os.ReadFile(filepath.Join(w.data, "a.txt")); string(b) != "changed by hand\n" {
			t.Fatal("a refused restore changed the file")
		}
		res, err := w.runner.Restore(ctx, b, backup.RestoreOptions{Snapshot: first.Snapshot[:8], Yes: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Files != 3 || res.Snapshot != first.Snapshot {
			t.Errorf("restore = %+v", res)
		}
		for f, want := range map[string]string{"a.txt": "alpha\n", "sub/c.txt": "gamma\n", "sub/b.bin": strings.Repeat("b", 300_000)} {
			if got, _ := os.ReadFile(filepath.Join(w.data, f)); string(got) != want {
				t.Errorf("%s not restored byte for byte", f)
			}
		}
	})
	t.Run("restore elsewhere", func(t *testing.T) {
		to := t.TempDir()
		if _, err := w.runner.Restore(ctx, b, backup.RestoreOptions{Snapshot: "latest", To: to}); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(to, w.data, "a.txt")); string(got) != "alpha\n" {
			t.Errorf("restored under --to: %q", got)
		}
	})
	t.Run("a corrupted object fails the drill, naming the snapshot", func(t *testing.T) {
		corruptPacks(t, filepath.Join(w.s3.Dir, "backups", "files", "data"))
		run := w.runner.Verify(ctx, b)
		if run.Result != backup.Failed || !strings.Contains(run.Error, "snapshot "+second.Snapshot[:8]) {
			t.Fatalf("verify = %s: %s; want a failure naming snapshot %.8s", run.Result, run.Error, second.Snapshot)
		}
	})
}

func countFiles(dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// corruptPacks flips bytes in the middle of every pack file under dir.
func corruptPacks(t *testing.T, dir string) {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || fi.Size() < 64 {
			return nil
		}
		b, _ := os.ReadFile(p)
		for i := len(b) / 3; i < len(b)/3+16; i++ {
			b[i] ^= 0xff
		}
		os.WriteFile(p, b, 0o644)
		n++
		return nil
	})
	if n == 0 {
		t.Fatalf("no pack files under %s", dir)
	}
}

func TestDump(t *testing.T) {
	w := newWorld(t, "")
	ctx := context.Background()
	db := filepath.Join(w.data, "db.txt")
	os.WriteFile(db, []byte("row 1\nrow 2\n"), 0o644)
	restored := filepath.Join(w.data, "restored.txt")
	b := w.backupOf("db", model.MachineBackup{Command: &model.DumpCommand{Dump: "cat " + db, Restore: "cat > " + restored}})
	b.Spec.Verify = &model.Verify{Schedule: model.Schedule{Cron: "@daily"},
		Restore: "cat > " + w.data + "/scratch.txt", Query: "cat " + w.data + "/scratch.txt", Cleanup: "rm -f " + w.data + "/scratch.txt"}

	run := must(t, w.runner.Backup(ctx, b, backup.Manual))
	if v := must(t, w.runner.Verify(ctx, b)); v.Files != 2 {
		t.Errorf("the drill's query returned %d rows, want 2", v.Files)
	}
	if _, err := os.Stat(w.data + "/scratch.txt"); err == nil {
		t.Error("the drill's cleanup did not run")
	}
	_, err := w.runner.Restore(ctx, b, backup.RestoreOptions{})
	var ce *backup.ConflictError
	if !errors.As(err, &ce) || ce.Command == "" {
		t.Fatalf("a dump restore without --yes = %v, want a refusal naming the command", err)
	}
	if _, err := w.runner.Restore(ctx, b, backup.RestoreOptions{Yes: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(restored); string(got) != "row 1\nrow 2\n" {
		t.Errorf("restore command got %q", got)
	}

	tests := []struct {
		name, dump, want string
	}{
		{name: "dump that exits non-zero", dump: "echo partial; echo 'pg_dump: connection refused' >&2; exit 3", want: "connection refused"},
		{name: "dump that writes nothing", dump: "true", want: "wrote nothing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bad := w.backupOf("db", model.MachineBackup{Command: &model.DumpCommand{Dump: tc.dump, Restore: "cat"}})
			got := w.runner.Backup(ctx, bad, backup.Manual)
			if got.Result != backup.Failed || !strings.Contains(got.Error, tc.want) || got.Hint == "" {
				t.Fatalf("run = %s %q (hint %q), want a failure with %q and a hint", got.Result, got.Error, got.Hint, tc.want)
			}
			snaps, err := w.runner.Snapshots(ctx, bad, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps) != 1 || snaps[0].ID != run.Snapshot {
				t.Errorf("snapshots after a failed dump = %d, want only the good one", len(snaps))
			}
		})
	}
}

func TestRepositoryFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("wrong S3 credentials", func(t *testing.T) {
		w := newWorld(t, "not-the-secret-key")
		b := w.backupOf("files", model.MachineBackup{Paths: []string{w.data}})
		run := w.runner.Backup(ctx, b, backup.Manual)
		if run.Result != backup.Failed || run.Hint == "" {
			t.Fatalf("run = %s %q, want a failure with a hint", run.Result, run.Error)
		}
		if strings.Contains(run.Error, "not-the-secret-key") || strings.Contains(run.Error, "correct-horse") {
			t.Errorf("the error shows a secret: %s", run.Error)
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		w := newWorld(t, "")
		b := w.backupOf("files", model.MachineBackup{Paths: []string{w.data}})
		b.Spec.Repository.S3.Bucket = "nope"
		run := w.runner.Backup(ctx, b, backup.Manual)
		if run.Result != backup.Failed || !strings.Contains(strings.ToLower(run.Error+run.Hint), "bucket") {
			t.Fatalf("run = %s %q (%s), want a failure about the bucket", run.Result, run.Error, run.Hint)
		}
		if _, err := os.Stat(filepath.Join(w.s3.Dir, "nope")); err == nil {
			t.Error("tend created the bucket")
		}
	})
	t.Run("S3 down, then back", func(t *testing.T) {
		w := newWorld(t, "")
		b := w.backupOf("files", model.MachineBackup{Paths: []string{w.data}})
		must(t, w.runner.Backup(ctx, b, backup.Manual))
		w.s3.Stop()
		if run := w.runner.Backup(ctx, b, backup.Manual); run.Result != backup.Failed || run.Hint == "" {
			t.Fatalf("with S3 down: %s %q", run.Result, run.Error)
		}
		w.s3.Start(t)
		must(t, w.runner.Backup(ctx, b, backup.Manual))
		snaps, err := w.runner.Snapshots(ctx, b, false)
		if err != nil || len(snaps) != 2 {
			t.Fatalf("snapshots = %d, %v; want the two that succeeded", len(snaps), err)
		}
	})
	t.Run("S3 gone in the middle of an upload", func(t *testing.T) {
		w := newWorld(t, "")
		w.runner.RetryTimeout = 5 * time.Second
		b := w.backupOf("files", model.MachineBackup{Paths: []string{w.data}})
		must(t, w.runner.Backup(ctx, b, backup.Manual))
		big := make([]byte, 150<<20)
		rand.Read(big)
		os.WriteFile(filepath.Join(w.data, "big.bin"), big, 0o644)
		done := make(chan backup.Run, 1)
		go func() { done <- w.runner.Backup(ctx, b, backup.Manual) }()
		// Stop the server once restic has begun to write new packs.
		data := filepath.Join(w.s3.Dir, "backups", "files", "data")
		before := countFiles(data)
		testenv.Eventually(t, time.Minute, "restic uploading", func() bool { return countFiles(data) > before })
		w.s3.Stop()
		run := <-done
		if run.Result != backup.Failed || run.Hint == "" {
			t.Fatalf("with S3 gone mid-upload: %s %q", run.Result, run.Error)
		}
		w.s3.Start(t)
		snaps, err := w.runner.Snapshots(ctx, b, false)
		if err != nil || len(snaps) != 1 {
			t.Fatalf("after the broken upload: %d snapshots, %v; want only the first", len(snaps), err)
		}
		must(t, w.runner.Backup(ctx, b, backup.Manual))
		repo, _ := w.runner.Repo(b)
		if err := repo.Check(ctx, false); err != nil {
			t.Errorf("the repository does not check clean: %v", err)
		}
	})
	t.Run("credentials file without the password", func(t *testing.T) {
		_, err := backup.ParseCredentials("secrets/s3.yaml", []byte("accessKeyID: a\nsecretAccessKey: very-secret\n"))
		if err == nil || !strings.Contains(err.Error(), "password missing") || strings.Contains(err.Error(), "very-secret") {
			t.Fatalf("err = %v", err)
		}
	})
}
