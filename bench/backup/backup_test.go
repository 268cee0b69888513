// Package backup measures Backups against a real S3 server (versitygw)
// with Debian's restic: a 1 GiB tree of mixed files backed up twice (the
// second time unchanged) and restored, against `tar | zstd` uploaded to
// and downloaded from the same server in the same run; and the memory of
// the machine agent (tend-node) while it streams a 1 GiB dump.
//
//	go test ./bench/backup -run '^$' -bench . -benchtime 1x -timeout 30m
package backup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"tend.dev/tend/internal/backup"
	"tend.dev/tend/internal/cli"
	"tend.dev/tend/internal/model"
	"tend.dev/tend/internal/secret"
	"tend.dev/tend/internal/testenv"
)

const mib = 1 << 20

// tree writes about 1 GiB: 20,000 small text files (1–16 KiB), 200
// medium ones (1 MiB, half compressible), and 6 large random ones (100 MiB).
func tree(b *testing.B, dir string) int64 {
	rng := rand.New(rand.NewPCG(1, 2))
	var total int64
	write := func(p string, data []byte) {
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(len(data))
	}
	random := func(n int) []byte {
		buf := make([]byte, n)
		for i := 0; i < n; i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < n; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		return buf
	}
	words := []string{"tend ", "backup ", "restic ", "snapshot ", "cluster ", "machine ", "git ", "drift "}
	for i := range 20_000 {
		var sb strings.Builder
		n := 1024 + rng.IntN(15*1024)
		for sb.Len() < n {
			sb.WriteString(words[rng.IntN(len(words))])
		}
		write(filepath.Join(dir, "small", fmt.Sprint(i%100), fmt.Sprintf("f%05d.txt", i)), []byte(sb.String()))
	}
	for i := range 200 {
		data := random(mib)
		if i%2 == 0 {
			data = bytes.Repeat([]byte(words[i%len(words)]), mib/len(words[i%len(words)]))
		}
		write(filepath.Join(dir, "medium", fmt.Sprintf("m%03d.bin", i)), data)
	}
	for i := range 6 {
		write(filepath.Join(dir, "large", fmt.Sprintf("l%d.bin", i)), random(100*mib))
	}
	return total
}

func BenchmarkBackup1GiB(b *testing.B) {
	ctx := context.Background()
	srv := testenv.NewS3(b)
	srv.CreateBucket(b, "backups")
	id, _ := age.GenerateX25519Identity()
	rule, _ := secret.AgeRule(id.Recipient().String())
	enc, err := secret.Encrypt("s3.yaml", []byte(fmt.Sprintf("accessKeyID: %s\nsecretAccessKey: %s\npassword: bench\n", srv.AccessKey, srv.SecretKey)), rule)
	if err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	os.WriteFile(filepath.Join(root, "s3.yaml"), enc, 0o644)
	ids := &secret.Identities{}
	ids.Add("bench", []byte(id.String()))
	data := b.TempDir()
	size := tree(b, data)
	exec.Command("sync").Run()
	r := &backup.Runner{Target: "bench", Dir: b.TempDir(), Root: root,
		Decrypt: func(f string, d []byte) ([]byte, error) { return secret.Decrypt(f, d, ids) }}
	bk := &model.Backup{Metadata: model.ObjectMeta{Name: "tree"}, Spec: model.BackupSpec{
		Machines:   &model.MachineBackup{Pool: "p", Paths: []string{data}},
		Repository: model.BackupRepository{S3: model.S3Location{Endpoint: srv.Endpoint, Bucket: "backups"}, Credentials: "s3.yaml"},
		Schedule:   model.Schedule{Cron: "@daily"}, Keep: model.Retention{Last: 5}}}
	mbps := func(d time.Duration) float64 { return float64(size) / mib / d.Seconds() }

	b.ResetTimer()
	for range b.N {
		first := r.Backup(ctx, bk, backup.Manual)
		second := r.Backup(ctx, bk, backup.Manual)
		for _, run := range []backup.Run{first, second} {
			if run.Result != backup.Succeeded {
				b.Fatalf("backup: %s", run.Error)
			}
		}
		to := b.TempDir()
		t0 := time.Now()
		if _, err := r.Restore(ctx, bk, backup.RestoreOptions{Snapshot: "latest", To: to}); err != nil {
			b.Fatal(err)
		}
		restore := time.Since(t0)
		os.RemoveAll(to)

		// Baseline: tar | zstd -T0 -3 streamed into one object, twice,
		// then downloaded through zstd -d | tar -x.
		client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
			Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")})
		upload := func(key string) (time.Duration, int64) {
			t0 := time.Now()
			cmd := exec.Command("sh", "-c", "tar -C "+data+" -cf - . | zstd -q -T0 -3")
			out, _ := cmd.StdoutPipe()
			cmd.Start()
			cr := &countReader{r: out}
			if _, err := manager.NewUploader(client).Upload(ctx, &s3.PutObjectInput{Bucket: aws.String("backups"), Key: aws.String(key), Body: cr}); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			return time.Since(t0), cr.n
		}
		tz1, tzBytes := upload("tar/1.tar.zst")
		tz2, _ := upload("tar/2.tar.zst")
		to = b.TempDir()
		t0 = time.Now()
		obj, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("backups"), Key: aws.String("tar/1.tar.zst")})
		if err != nil {
			b.Fatal(err)
		}
		x := exec.Command("sh", "-c", "zstd -q -d | tar -C "+to+" -xf -")
		x.Stdin = obj.Body
		if out, err := x.CombinedOutput(); err != nil {
			b.Fatalf("untar: %v %s", err, out)
		}
		tzRestore := time.Since(t0)

		b.ReportMetric(float64(size)/mib, "tree-MiB")
		b.ReportMetric(mbps(first.Duration), "first-MiB/s")
		b.ReportMetric(float64(first.Added)/mib, "first-uploaded-MiB")
		b.ReportMetric(mbps(second.Duration), "second-MiB/s")
		b.ReportMetric(float64(second.Added)/mib, "second-uploaded-MiB")
		b.ReportMetric(mbps(restore), "restore-MiB/s")
		b.ReportMetric(mbps(tz1), "baseline-tar-zstd-first-MiB/s")
		b.ReportMetric(mbps(tz2), "baseline-tar-zstd-second-MiB/s")
		b.ReportMetric(float64(tzBytes)/mib, "baseline-tar-zstd-uploaded-MiB")
		b.ReportMetric(mbps(tzRestore), "baseline-tar-zstd-restore-MiB/s")
		b.Logf("tree %d MiB: first %s (%.0f MiB up), second %s (%.2f MiB up), restore %s; tar|zstd %s, %s (%.0f MiB each), restore %s",
			size/mib, first.Duration, float64(first.Added)/mib, second.Duration, float64(second.Added)/mib, restore.Round(time.Millisecond),
			tz1.Round(time.Millisecond), tz2.Round(time.Millisecond), float64(tzBytes)/mib, tzRestore.Round(time.Millisecond))
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// BenchmarkAgentMemoryDuringBackup streams a 1 GiB dump through the node
// agent on a real machine and reads the agent's peak resident memory
// (VmHWM) against its idle VmRSS before, and restic's peak.
func BenchmarkAgentMemoryDuringBackup(b *testing.B) {
	ms := testenv.NewMachines(b, 1)
	m := ms.List[0]
	bin := testenv.NodeBinary(b)
	git := testenv.NewGitServerOn(b, ms.Gateway, "", "")
	git.SetReadOnly(true)
	wt := git.Repo(b, "ops")
	apt := ms.AptRepo(b, testenv.DebianPackages(b, "restic"))
	srv := testenv.NewS3On(b, ms.Gateway)
	srv.CreateBucket(b, "backups")
	id, _ := age.GenerateX25519Identity()
	key := filepath.Join(b.TempDir(), "age.key")
	os.WriteFile(key, []byte(id.String()+"\n"), 0o600)
	rule, _ := secret.AgeRule(id.Recipient().String())
	enc, _ := secret.Encrypt("s3.yaml", []byte(fmt.Sprintf("accessKeyID: %s\nsecretAccessKey: %s\npassword: bench\n", srv.AccessKey, srv.SecretKey)), rule)
	pool := fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: MachinePool
metadata: {name: bench}
spec:
  interval: 5s
  machines:
  - {name: %s, address: %s, hostKey: %q}
  state:
    files: [{path: /etc/apt/sources.list.d/bench.list, content: %q}]
---
apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: dump}
spec:
  machines: {pool: bench, command: {dump: "head -c 1073741824 /dev/urandom", restore: "cat >/dev/null"}}
  repository: {s3: {endpoint: %q, bucket: backups}, credentials: s3.yaml}
  schedule: {cron: "@every 1h"}
  keep: {last: 1}
`, m.Name, m.IP, m.HostKey, apt, srv.Endpoint)
	wt.Write(b, map[string]string{"machines/bench.yaml": pool, "s3.yaml": string(enc)})
	wt.Commit(b, "bench")
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{"bootstrap", "machines", "--pool", filepath.Join(wt.Dir, "machines/bench.yaml"),
		"--repo", git.URL + "/ops.git", "-i", ms.ClientKey, "--binary", bin, "--age-identity", key}, &out, &errb); code != 0 {
		b.Fatalf("bootstrap: %s%s", out.String(), errb.String())
	}
	testenv.Eventually(b, 3*time.Minute, "restic installed by the agent", func() bool {
		_, err := m.Exec("command -v restic")
		return err == nil
	})
	status := func(field string) float64 {
		o := m.Run(b, "grep "+field+" /proc/$(systemctl show -p MainPID --value tend-node)/status | awk '{print $2}'")
		kb, _ := strconv.ParseFloat(strings.TrimSpace(o), 64)
		return kb / 1024
	}
	m.Run(b, "systemctl restart tend-node")
	time.Sleep(8 * time.Second)
	idle := status("VmRSS")
	b.ResetTimer()
	for range b.N {
		// The agent's scheduled run of @every 1h would wait an hour: the
		// state file says the last slot was long ago, so it runs now.
		m.Run(b, `systemctl stop tend-node && echo '{"backups":{"dump":{"since":"2020-01-01T00:00:00Z","slot":"2020-01-01T00:00:00Z"}}}' > /var/lib/tend/node/backups.json && systemctl start tend-node`)
		var resticPeak float64
		testenv.Eventually(b, 10*time.Minute, "the agent's dump backup", func() bool {
			if o, err := m.Exec("for p in $(pgrep -x restic); do grep VmHWM /proc/$p/status | awk '{print $2}'; done | sort -n | tail -1"); err == nil {
				if kb, err := strconv.ParseFloat(strings.TrimSpace(o), 64); err == nil && kb/1024 > resticPeak {
					resticPeak = kb / 1024
				}
			}
			o, _ := m.Exec("cat /var/lib/tend/node/backups.json")
			return strings.Contains(o, `"result": "succeeded"`) || strings.Contains(o, `"result": "failed"`)
		})
		o := m.Run(b, "cat /var/lib/tend/node/backups.json")
		if !strings.Contains(o, `"result": "succeeded"`) {
			b.Fatalf("the backup failed: %s", o)
		}
		peak := status("VmHWM")
		b.ReportMetric(idle, "agent-idle-rss-MB")
		b.ReportMetric(peak, "agent-peak-rss-MB")
		b.ReportMetric(resticPeak, "restic-peak-rss-MB")
		b.Logf("agent idle %.1f MB, peak %.1f MB while streaming 1 GiB; restic peak %.1f MB", idle, peak, resticPeak)
	}
}
