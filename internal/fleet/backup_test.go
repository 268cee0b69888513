package fleet_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/node"
	"tend.dev/tend/internal/nodecli"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/testenv"
)

// backupState is the pool's state for the backup tests: an app directory
// on every machine, PostgreSQL on m1.
const backupState = `    - path: /srv/app/config.yaml
      content: "version: 1\n"
    directories:
    - {path: /srv/app/data, mode: "0750"}
`

// backups writes the Backups: files on m1 and m2 (every 20s at first, so
// the test sees scheduled runs), and the shop database on m1.
func (l *lab) backups(s3 *testenv.S3, filesCron string, extra string) {
	l.t.Helper()
	repo := fmt.Sprintf(`  repository:
    s3: {endpoint: %q, bucket: backups}
    credentials: secrets/backup-s3.yaml
`, s3.Endpoint)
	l.wt.Write(l.t, map[string]string{"backups/files.yaml": `apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: files}
spec:
  machines: {pool: web, machines: [m1, m2], paths: [/srv/app/data]}
` + repo + fmt.Sprintf(`  schedule: {cron: %q, timeZone: Europe/Berlin}
  keep: {last: 5, daily: 7}
  verify: {schedule: {cron: "@weekly"}}
`, filesCron), "backups/shop-db.yaml": `apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: shop-db}
spec:
  machines:
    pool: web
    machines: [m1]
    command:
      dump: pg_dump -Fc shop
      restore: pg_restore --clean --if-exists -d shop
      user: postgres
  verify:
    schedule: {cron: "@weekly"}
    restore: dropdb --if-exists tend_verify && createdb tend_verify && pg_restore -d tend_verify
    query: psql -d tend_verify -tAc 'select id, item from orders'
    cleanup: dropdb --if-exists tend_verify
` + repo + `  schedule: {cron: "0 3 * * *"}
  keep: {last: 3}
` + extra})
}

func (l *lab) backupCLI(args ...string) (int, string, string) {
	return l.tend(append(append([]string{"backup"}, args...), "--repo", l.wt.Dir, "-i", l.ms.ClientKey)...)
}

func backupOf(st *node.Status, name string) *node.BackupStatus {
	for i := range st.Backups {
		if st.Backups[i].Name == name {
			return &st.Backups[i]
		}
	}
	return nil
}

func TestBackups(t *testing.T) {
	debs := testenv.DebianPackages(t, "restic", "postgresql")
	l := newLab(t, debs...)
	m1, m2 := l.ms.List[0], l.ms.List[1]
	s3 := testenv.NewS3On(t, l.ms.Gateway)
	s3.CreateBucket(t, "backups")

	id, err := age.ParseX25519Identity(strings.TrimSpace(readFile(t, l.ageKey)))
	if err != nil {
		t.Fatal(err)
	}
	rule, _ := secret.AgeRule(id.Recipient().String())
	enc, err := secret.Encrypt("secrets/backup-s3.yaml", []byte(fmt.Sprintf("accessKeyID: %s\nsecretAccessKey: %s\npassword: repo-passphrase-not-in-logs\n", s3.AccessKey, s3.SecretKey)), rule)
	if err != nil {
		t.Fatal(err)
	}
	l.wt.Write(t, map[string]string{"secrets/backup-s3.yaml": string(enc)})
	l.machineState["m1"] = "      packages: [{name: postgresql}]\n"
	l.backups(s3, "@every 20s", "")
	l.commit("backups", l.pool(backupState, ""))
	if code, out, errOut := l.bootstrap(); code != 0 {
		t.Fatalf("bootstrap = %d\n%s\n%s", code, out, errOut)
	}
	l.wait("restic and PostgreSQL installed", 5*time.Minute, synced)
	m1.Run(t, `cd / && su postgres -c "createdb shop && psql -d shop -c \"create table orders(id int primary key, item text); insert into orders values (1, 'tea'), (2, 'cake')\""`)
	for _, m := range []*testenv.Machine{m1, m2} {
		m.Run(t, "head -c 2000000 /dev/urandom > /srv/app/data/blob.bin && echo 'hello from "+m.Name+"' > /srv/app/data/notes.txt && mkdir -p /srv/app/data/sub && echo deep > /srv/app/data/sub/deep.txt")
	}
	sums := func(m *testenv.Machine) string {
		return m.Run(t, "cd /srv/app/data && find . -type f | sort | xargs sha256sum")
	}
	want := map[string]string{"m1": sums(m1), "m2": sums(m2)}

	t.Run("scheduled backups run on each machine", func(t *testing.T) {
		fs := l.wait("a scheduled backup of files on m1 and m2", 2*time.Minute, func(m string, st *node.Status) bool {
			b := backupOf(st, "files")
			return b != nil && b.LastSuccess != nil && b.Last.Trigger == backup.Scheduled && b.Last.Bytes > 2_000_000
		}, "m1", "m2")
		for _, m := range fs.Machines {
			if m.Machine == "m3" && len(m.Status.Backups) != 0 {
				t.Errorf("m3 runs backups it is not listed for: %+v", m.Status.Backups)
			}
		}
		metrics := m1.Run(t, "cat /var/lib/tend/node/metrics.prom")
		if !strings.Contains(metrics, `tend_node_backup_last_success_timestamp_seconds{backup="files"`) || !strings.Contains(metrics, `tend_node_backup_runs_total{backup="files",kind="backup",machine="m1",pool="web",result="succeeded"}`) {
			t.Errorf("metrics lack the backup:\n%s", grepLines(metrics, "backup"))
		}
	})
	// From here on, files backs up once a day: the snapshots stay put.
	l.backups(s3, "0 3 * * *", "")
	l.commit("daily files backups", l.pool(backupState, ""))
	l.wait("daily schedule", time.Minute, synced)

	t.Run("a dump on demand, listed", func(t *testing.T) {
		code, out, errOut := l.backupCLI("run", "shop-db")
		if code != 0 || !strings.Contains(out, "✓ backup shop-db on m1") {
			t.Fatalf("backup run = %d\n%s%s", code, out, errOut)
		}
		code, out, errOut = l.backupCLI("list", "shop-db", "-o", "json")
		var ls []nodecli.BackupListing
		if err := json.Unmarshal([]byte(out), &ls); err != nil || code != 0 || len(ls) != 1 || len(ls[0].Snapshots) != 1 {
			t.Fatalf("backup list = %d %v\n%s%s", code, err, out, errOut)
		}
		if !strings.Contains(ls[0].Snapshots[0].Paths[0], "shop-db.dump") {
			t.Errorf("snapshot paths = %v", ls[0].Snapshots[0].Paths)
		}
		_, text, _ := l.backupCLI("list", "files")
		t.Logf("tend backup list files:\n%s", text)
		for _, m := range []string{"m1", "m2"} {
			if !strings.Contains(grepLines(text, " "+m+" "), "20") {
				t.Errorf("list shows no snapshot of %s:\n%s", m, text)
			}
		}
	})

	t.Run("restore files and the database after damage", func(t *testing.T) {
		m1.Run(t, "echo vandalized > /srv/app/data/notes.txt && rm -r /srv/app/data/sub")
		m1.Run(t, `cd / && su postgres -c "psql -d shop -c 'drop table orders'"`)

		code, out, errOut := l.backupCLI("restore", "files", "--machine", "m1")
		if code != 2 || !strings.Contains(errOut, "locally changed") || !strings.Contains(errOut, "notes.txt") || !strings.Contains(errOut, "--yes") {
			t.Fatalf("restore without --yes = %d, want a refusal naming notes.txt\n%s%s", code, out, errOut)
		}
		if got := m1.Run(t, "cat /srv/app/data/notes.txt"); got != "vandalized\n" {
			t.Fatalf("a refused restore changed the file: %q", got)
		}
		if code, out, errOut := l.backupCLI("restore", "files", "--machine", "m1", "--yes"); code != 0 {
			t.Fatalf("restore --yes = %d\n%s%s", code, out, errOut)
		}
		if got := sums(m1); got != want["m1"] {
			t.Errorf("m1's files after restore:\n%s\nwant:\n%s", got, want["m1"])
		}
		if code, out, errOut := l.backupCLI("restore", "shop-db", "--yes"); code != 0 {
			t.Fatalf("restore shop-db = %d\n%s%s", code, out, errOut)
		}
		if got := m1.Run(t, `cd / && su postgres -c "psql -d shop -tAc 'select id, item from orders order by id'"`); got != "1|tea\n2|cake\n" {
			t.Errorf("orders after restore = %q", got)
		}
		to := "/var/tmp/restored"
		if code, out, errOut := l.backupCLI("restore", "files", "--machine", "m2", "--to", to); code != 0 {
			t.Fatalf("restore --to = %d\n%s%s", code, out, errOut)
		}
		if got := m2.Run(t, "cat "+to+"/srv/app/data/notes.txt"); got != "hello from m2\n" {
			t.Errorf("restored under --to: %q", got)
		}
	})

	t.Run("restore drills", func(t *testing.T) {
		for _, name := range []string{"files", "shop-db"} {
			code, out, errOut := l.backupCLI("run", name, "--verify")
			if code != 0 || !strings.Contains(out, "✓ verified "+name) {
				t.Fatalf("verify %s = %d\n%s%s", name, code, out, errOut)
			}
		}
		if got := m1.Run(t, `cd / && su postgres -c "psql -tAc \"select count(*) from pg_database where datname = 'tend_verify'\""`); got != "0\n" {
			t.Errorf("the drill left its scratch database: %q", got)
		}
	})

	t.Run("restic's own CLI restores a snapshot without tend", func(t *testing.T) {
		out := t.TempDir()
		cmd := exec.Command("restic", "-r", "s3:"+s3.Endpoint+"/backups/files", "--no-cache", "restore", "latest", "--host", "m2", "--tag", "tend-backup=files", "--target", out)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey, "RESTIC_PASSWORD=repo-passphrase-not-in-logs")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restic restore: %v\n%s", err, b)
		}
		if got := readFile(t, filepath.Join(out, "srv/app/data/notes.txt")); got != "hello from m2\n" {
			t.Errorf("restic restored %q", got)
		}
	})

	t.Run("a failing dump keeps no snapshot and says why", func(t *testing.T) {
		l.wt.Write(t, map[string]string{"backups/bad.yaml": strings.ReplaceAll(strings.ReplaceAll(readFile(t, filepath.Join(l.wt.Dir, "backups/shop-db.yaml")),
			"name: shop-db", "name: bad-dump"), "pg_dump -Fc shop", "pg_dump -Fc no_such_db")})
		l.commit("a dump that fails", l.pool(backupState, ""))
		l.wait("the new revision", time.Minute, synced)
		code, out, _ := l.backupCLI("run", "bad-dump")
		if code != 1 || !strings.Contains(out, `database "no_such_db" does not exist`) || !strings.Contains(out, "hint:") {
			t.Fatalf("run bad-dump = %d, want a failure with pg_dump's reason and a hint\n%s", code, out)
		}
		_, out, _ = l.backupCLI("list", "bad-dump", "-o", "json")
		var ls []nodecli.BackupListing
		json.Unmarshal([]byte(out), &ls)
		if len(ls) != 1 || len(ls[0].Snapshots) != 0 {
			t.Errorf("a failed dump left snapshots: %s", out)
		}
	})

	t.Run("backupBefore holds a change until its backup succeeded", func(t *testing.T) {
		l.machineState["m1"] = "      packages: [{name: postgresql}]\n      backupBefore: files\n"
		l.commit("m1 backs up before changes", l.pool(backupState, ""))
		l.wait("backupBefore set", time.Minute, synced)
		s3.Stop()
		l.commit("config v2 while S3 is down", l.pool(strings.Replace(backupState, "version: 1", "version: 2", 1), ""))
		fs := l.wait("m1 holds its change, the others apply it", 2*time.Minute, func(m string, st *node.Status) bool {
			if m == "m1" {
				return failing(st, "backup files") != "" && len(st.Pending) > 0
			}
			return st.InSync
		})
		_ = fs
		if got := m1.Run(t, "cat /srv/app/config.yaml"); got != "version: 1\n" {
			t.Errorf("m1 applied the change without its backup: %q", got)
		}
		if got := m2.Run(t, "cat /srv/app/config.yaml"); got != "version: 2\n" {
			t.Errorf("m2 did not apply the change: %q", got)
		}
		s3.Start(t)
		l.wait("m1 backed up, then applied", 2*time.Minute, func(m string, st *node.Status) bool {
			b := backupOf(st, "files")
			return st.InSync && (m != "m1" || (b != nil && b.Last.Trigger == backup.Before && b.Last.Result == backup.Succeeded))
		})
		if got := m1.Run(t, "cat /srv/app/config.yaml"); got != "version: 2\n" {
			t.Errorf("m1 after its backup: %q", got)
		}
	})

	t.Run("a run missed while the agent was down runs at the next start", func(t *testing.T) {
		l.backups(s3, "@every 15s", "")
		l.commit("files every 15s", l.pool(strings.Replace(backupState, "version: 1", "version: 2", 1), ""))
		l.wait("15s schedule", time.Minute, synced, "m2")
		m2.Run(t, "systemctl stop tend-node")
		time.Sleep(20 * time.Second)
		m2.Run(t, "systemctl start tend-node")
		l.wait("the missed run", time.Minute, func(m string, st *node.Status) bool {
			b := backupOf(st, "files")
			return b != nil && b.Last != nil && b.Last.Trigger == backup.Missed && b.Last.Result == backup.Succeeded
		}, "m2")
	})

	t.Run("the agent killed during an upload: the next run completes, the repository checks clean", func(t *testing.T) {
		m2.Run(t, "mkdir -p /srv/big && head -c 400000000 /dev/urandom > /srv/big/blob.bin")
		l.wt.Write(t, map[string]string{"backups/big.yaml": fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: big}
spec:
  machines: {pool: web, machines: [m2], paths: [/srv/big]}
  repository:
    s3: {endpoint: %q, bucket: backups}
    credentials: secrets/backup-s3.yaml
  schedule: {cron: "@every 10s"}
  keep: {last: 2}
`, s3.Endpoint)})
		l.commit("a big backup on m2", l.pool(strings.Replace(backupState, "version: 1", "version: 2", 1), ""))
		testenv.Eventually(t, 2*time.Minute, "restic uploading on m2", func() bool {
			out, _ := m2.Exec("pgrep -af 'restic.*backup.*/srv/big'")
			return strings.Contains(out, "/srv/big")
		})
		time.Sleep(time.Second)
		m2.Run(t, "kill -KILL $(systemctl show -p MainPID --value tend-node)")
		testenv.Eventually(t, 20*time.Second, "restic gone with the killed agent", func() bool {
			out, _ := m2.Exec("pgrep -af 'restic.*backup' || true")
			return !strings.Contains(out, "/srv/big")
		})
		l.wait("the next run after the kill", 3*time.Minute, func(m string, st *node.Status) bool {
			b := backupOf(st, "big")
			return b != nil && b.LastSuccess != nil && b.Last.Result == backup.Succeeded
		}, "m2")
		cmd := exec.Command("restic", "-r", "s3:"+s3.Endpoint+"/backups/big", "--no-cache", "check")
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey, "RESTIC_PASSWORD=repo-passphrase-not-in-logs")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restic check after the kill: %v\n%s", err, b)
		}
	})

	t.Run("no secret in status, logs or listings", func(t *testing.T) {
		_, status, _ := l.tend("machines", "status", "--pool", l.poolFile, "-i", l.ms.ClientKey, "-o", "json")
		_, list, _ := l.backupCLI("list", "files", "-o", "json")
		journal := m1.Run(t, "journalctl -u tend-node --no-pager")
		for what, text := range map[string]string{"status": status, "list": list, "journal": journal} {
			for _, s := range []string{"repo-passphrase-not-in-logs", s3.SecretKey} {
				if strings.Contains(text, s) {
					t.Errorf("%s shows a secret", what)
				}
			}
		}
		if !strings.Contains(journal, "backup=files result=succeeded trigger=schedule") {
			t.Errorf("the agent's journal does not log the backup runs:\n%s", grepLines(journal, "backup"))
		}
	})
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
