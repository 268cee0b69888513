package model

import (
	"strings"
	"testing"
)

const backupPool = `apiVersion: tend.dev/v1alpha1
kind: MachinePool
metadata: {name: db}
spec:
  machines:
  - {name: db-1, address: 10.0.0.1, hostKey: "` + hostKey + `"}
  - {name: db-2, address: 10.0.0.2, hostKey: "` + hostKey + `"}
`

const backupCluster = `apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: prod}
spec:
  components:
  - {name: shop, path: apps/shop, backupBefore: shop-objects}
`

func backupFile(spec string) string {
	return "apiVersion: tend.dev/v1alpha1\nkind: Backup\nmetadata: {name: b}\nspec:\n" + spec
}

const repoAndSchedule = `  repository:
    s3: {endpoint: "https://s3.example.test", bucket: backups}
    credentials: secrets/s3.yaml
  schedule: {cron: "30 2 * * *", timeZone: Europe/Berlin, jitter: 10m}
  keep: {last: 3, daily: 7}
`

func TestBackupLoad(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"machines/db.yaml":   backupPool,
		"clusters/prod.yaml": backupCluster,
		"backups/db.yaml": `apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: shop-db}
spec:
  machines:
    pool: db
    machines: [db-1]
    command: {dump: pg_dump -Fc shop, restore: pg_restore -d shop, user: postgres}
  verify:
    schedule: {cron: "0 5 * * 0"}
    restore: createdb verify && pg_restore -d verify
    query: psql -d verify -tAc 'select 1 from orders limit 1'
` + repoAndSchedule,
		"backups/objects.yaml": `apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: shop-objects}
spec:
  cluster: {name: prod, namespaces: [shop], selector: "app=shop"}
` + repoAndSchedule,
	})
	r, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.BackupsFor("db", "db-1"); len(got) != 1 || got[0].Metadata.Name != "shop-db" || got[0].DumpFilename() != "shop-db.dump" || got[0].Prefix() != "shop-db" {
		t.Errorf("backups of db-1 = %v", got)
	}
	if got := r.BackupsFor("db", "db-2"); len(got) != 0 {
		t.Errorf("db-2 is not listed, but runs %v", got)
	}
	if got := r.ClusterBackups("prod"); len(got) != 1 || got[0].Spec.Cluster.Selector != "app=shop" {
		t.Errorf("cluster backups = %v", got)
	}
}

func TestBackupBadInput(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{name: "both machines and cluster", files: map[string]string{"b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n  cluster: {name: prod, namespaces: [a]}\n" + repoAndSchedule)},
			want: "exactly one of spec.machines and spec.cluster"},
		{name: "pool not in the repository", files: map[string]string{"b.yaml": backupFile("  machines: {pool: nope, paths: [/srv]}\n" + repoAndSchedule)},
			want: `MachinePool "nope" is not in the repository`},
		{name: "machine not in the pool", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, machines: [db-9], paths: [/srv]}\n" + repoAndSchedule)},
			want: `machine "db-9" is not in MachinePool db`},
		{name: "relative path", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [srv/data]}\n" + repoAndSchedule)},
			want: `path "srv/data" must be absolute`},
		{name: "nothing to back up", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db}\n" + repoAndSchedule)},
			want: "needs paths or a command"},
		{name: "retention keeping nothing", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n" +
			strings.Replace(repoAndSchedule, "keep: {last: 3, daily: 7}", "keep: {last: 0}", 1))},
			want: "keeps no snapshot"},
		{name: "bad cron", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n" +
			strings.Replace(repoAndSchedule, `"30 2 * * *"`, `"61 * * * *"`, 1))},
			want: `spec.schedule.cron "61 * * * *"`},
		{name: "unknown time zone", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n" +
			strings.Replace(repoAndSchedule, "Europe/Berlin", "Mars/Olympus", 1))},
			want: `timeZone "Mars/Olympus" is not a time zone`},
		{name: "drill of a dump without a query", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile(
			"  machines: {pool: db, command: {dump: pg_dump x, restore: pg_restore}}\n  verify: {schedule: {cron: '@weekly'}, restore: pg_restore}\n" + repoAndSchedule)},
			want: "needs restore and query"},
		{name: "bad selector", files: map[string]string{"c.yaml": backupCluster, "b.yaml": backupFile("  cluster: {name: prod, namespaces: [shop], selector: 'app in (a'}\n" + repoAndSchedule)},
			want: `selector "app in (a"`},
		{name: "credentials outside the repository", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n" +
			strings.Replace(repoAndSchedule, "secrets/s3.yaml", "../s3.yaml", 1))},
			want: "leaves the repository"},
		{name: "backupBefore of another target", files: map[string]string{"c.yaml": backupCluster, "m.yaml": backupPool,
			"b.yaml": strings.Replace(backupFile("  machines: {pool: db, paths: [/srv]}\n"+repoAndSchedule), "name: b}", "name: shop-objects}", 1)},
			want: `component "shop": backupBefore "shop-objects" is not a Backup of this cluster`},
		{name: "unknown field", files: map[string]string{"m.yaml": backupPool, "b.yaml": backupFile("  machines: {pool: db, paths: [/srv]}\n  retention: {last: 1}\n" + repoAndSchedule)},
			want: `unknown field "retention"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFiles(t, dir, tc.files)
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), ".yaml:") || HintOf(err) == "" {
				t.Errorf("err = %v (hint %q): want file:line and a hint", err, HintOf(err))
			}
		})
	}
}
