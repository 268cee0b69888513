// Package backup measures Backups against a real S3 server (versitygw)
// with Debian's restic 0.14:
//
//   - BenchmarkBackup1GiB: a 1 GiB tree of mixed files backed up twice
//     through backup.Runner (the second time unchanged) and restored,
//     against `tar | zstd -T0 -3` uploaded to and downloaded from the same
//     server in the same run;
//   - BenchmarkAgentMemoryDuringBackup: the machine agent (tend-node, the
//     systemd service) on a real test machine running a scheduled Backup
//     that streams a 1 GiB dump through it, then one of a 1 GiB tree, with
//     its resident memory sampled every 100 ms.
//
// Run both, once:
//
//	go test ./bench/backup -run '^$' -bench . -benchtime 1x -timeout 60m
package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
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

// Shape of the tree: 20,000 small text files (1–16 KiB), 200 medium files
// of 1 MiB (half text, half random), 6 large files of 110 MiB (2 log-like
// text, 4 random). About 1 GiB, 47% compressible text, 53% random.
const (
	smallFiles  = 20_000
	mediumFiles = 200
	largeFiles  = 6
	largeSize   = 110 * mib
)

// genTree generates the tree deterministically and hands each file to
// emit (relative path, content). It returns the total size.
func genTree(emit func(name string, data []byte) error) (int64, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	var total int64
	put := func(name string, data []byte) error {
		total += int64(len(data))
		return emit(name, data)
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
	words := strings.Fields(`tend backup restic snapshot cluster machine git drift apply prune render plan
		status leader lease agent node pool package unit sysctl firewall user file directory symlink
		schedule retention restore drill verify bucket object region endpoint secret age sops key
		commit branch revision release image registry layer digest manifest helm chart value`)
	text := func(n int) []byte {
		b := make([]byte, 0, n+32)
		for len(b) < n {
			b = append(b, words[rng.IntN(len(words))]...)
			if rng.IntN(12) == 0 {
				b = append(b, '\n')
			} else {
				b = append(b, ' ')
			}
		}
		return b[:n]
	}
	logText := func(n int) []byte {
		b := make([]byte, 0, n+256)
		t := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for len(b) < n {
			t = t.Add(time.Duration(rng.IntN(2_000_000)) * time.Microsecond)
			b = fmt.Appendf(b, "%s m%d tend-node[%d]: %s %s %s %d bytes in %d ms\n", t.Format(time.RFC3339Nano), 1+rng.IntN(40), 1000+rng.IntN(9000),
				words[rng.IntN(len(words))], words[rng.IntN(len(words))], words[rng.IntN(len(words))], rng.IntN(1<<20), rng.IntN(5000))
		}
		return b[:n]
	}
	for i := range smallFiles {
		if err := put(fmt.Sprintf("small/%02d/f%05d.txt", i%100, i), text(1024+rng.IntN(15*1024))); err != nil {
			return total, err
		}
	}
	for i := range mediumFiles {
		data := random(mib)
		if i%2 == 0 {
			data = text(mib)
		}
		if err := put(fmt.Sprintf("medium/m%03d.bin", i), data); err != nil {
			return total, err
		}
	}
	for i := range largeFiles {
		data := random(largeSize)
		if i < 2 {
			data = logText(largeSize)
		}
		if err := put(fmt.Sprintf("large/l%d.bin", i), data); err != nil {
			return total, err
		}
	}
	return total, nil
}

// writeTree generates the tree under dir.
func writeTree(b *testing.B, dir string) int64 {
	size, err := genTree(func(name string, data []byte) error {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		return os.WriteFile(p, data, 0o644)
	})
	if err != nil {
		b.Fatal(err)
	}
	return size
}

// tarTree generates the tree as a tar stream into w.
func tarTree(w io.Writer) (int64, error) {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	mtime := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	size, err := genTree(func(name string, data []byte) error {
		if d := filepath.Dir(name); !dirs[d] {
			for _, p := range []string{filepath.Dir(d), d} {
				if p != "." && !dirs[p] {
					dirs[p] = true
					if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: mtime}); err != nil {
						return err
					}
				}
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	})
	if err != nil {
		return size, err
	}
	return size, tw.Close()
}

// dirSize is the size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func syncDisks() { exec.Command("sync").Run() }

// logLoad logs the host's load average: the 2 cores may be shared.
func logLoad(b *testing.B, when string) {
	l, _ := os.ReadFile("/proc/loadavg")
	b.Logf("load average %s: %s", when, bytes.TrimSpace(l))
}

func logTable(b *testing.B, title string, rows [][]string) {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	b.Logf("%s\n%s", title, buf.String())
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
	if err := os.WriteFile(filepath.Join(root, "s3.yaml"), enc, 0o644); err != nil {
		b.Fatal(err)
	}
	ids := &secret.Identities{}
	ids.Add("bench", []byte(id.String()))
	data := b.TempDir()
	t0 := time.Now()
	size := writeTree(b, data)
	syncDisks()
	b.Logf("tree: %d files, %.1f MiB, written in %s", smallFiles+mediumFiles+largeFiles, float64(size)/mib, time.Since(t0).Round(time.Millisecond))
	if v, err := exec.Command("restic", "version").Output(); err == nil {
		b.Logf("%s", bytes.TrimSpace(v))
	}
	r := &backup.Runner{Target: "bench", Dir: b.TempDir(), Root: root,
		Decrypt: func(f string, d []byte) ([]byte, error) { return secret.Decrypt(f, d, ids) }}
	bk := &model.Backup{Metadata: model.ObjectMeta{Name: "tree"}, Spec: model.BackupSpec{
		Machines:   &model.MachineBackup{Pool: "p", Paths: []string{data}},
		Repository: model.BackupRepository{S3: model.S3Location{Endpoint: srv.Endpoint, Bucket: "backups"}, Credentials: "s3.yaml"},
		Schedule:   model.Schedule{Cron: "@daily"}, Keep: model.Retention{Last: 5}}}
	repoDir := filepath.Join(srv.Dir, "backups", "tree")
	mbps := func(d time.Duration) float64 { return float64(size) / mib / d.Seconds() }
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")})

	logLoad(b, "before")
	defer logLoad(b, "after")
	b.ResetTimer()
	for range b.N {
		// tend: backup.Runner, as the agents run it.
		first := r.Backup(ctx, bk, backup.Manual)
		if first.Result != backup.Succeeded {
			b.Fatalf("first backup: %s", first.Error)
		}
		syncDisks()
		repo1 := dirSize(repoDir)
		second := r.Backup(ctx, bk, backup.Manual)
		if second.Result != backup.Succeeded {
			b.Fatalf("second backup: %s", second.Error)
		}
		syncDisks()
		repo2 := dirSize(repoDir)
		to := b.TempDir()
		t0 := time.Now()
		res, err := r.Restore(ctx, bk, backup.RestoreOptions{Snapshot: "latest", To: to})
		if err != nil {
			b.Fatal(err)
		}
		restore := time.Since(t0)
		if got := dirSize(to); got != size || res.Files != smallFiles+mediumFiles+largeFiles {
			b.Fatalf("restore: %d files, %d bytes; want %d files, %d bytes", res.Files, got, smallFiles+mediumFiles+largeFiles, size)
		}
		syncDisks()
		os.RemoveAll(to)

		// Baseline: tar | zstd -T0 -3 streamed into one object, twice (a
		// tarball has no incrementality), then downloaded through
		// zstd -d | tar -x.
		upload := func(key string) (time.Duration, int64) {
			t0 := time.Now()
			cmd := exec.Command("sh", "-c", "tar -C "+data+" -cf - . | zstd -q -T0 -3")
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			cr := &countReader{r: out}
			if _, err := manager.NewUploader(client).Upload(ctx, &s3.PutObjectInput{Bucket: aws.String("backups"), Key: aws.String(key), Body: cr}); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
			d := time.Since(t0)
			syncDisks()
			return d, cr.n
		}
		tz1, tzBytes := upload("tar/1.tar.zst")
		tz2, tzBytes2 := upload("tar/2.tar.zst")
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
		obj.Body.Close()
		tzRestore := time.Since(t0)
		if got := dirSize(to); got != size {
			b.Fatalf("untar: %d bytes, want %d", got, size)
		}
		os.RemoveAll(to)

		b.ReportMetric(float64(size), "tree-bytes")
		b.ReportMetric(first.Duration.Seconds(), "first-s")
		b.ReportMetric(mbps(first.Duration), "first-MiB/s")
		// restic 0.14's data_added counts new blobs before compression
		// (repositories are format 2, compressed): what reached the server
		// is the repository's growth.
		b.ReportMetric(float64(first.Added), "first-data-added-bytes")
		b.ReportMetric(float64(repo1), "first-repo-bytes")
		b.ReportMetric(second.Duration.Seconds(), "second-s")
		b.ReportMetric(mbps(second.Duration), "second-MiB/s")
		b.ReportMetric(float64(second.Added), "second-data-added-bytes")
		b.ReportMetric(float64(repo2-repo1), "second-repo-growth-bytes")
		b.ReportMetric(restore.Seconds(), "restore-s")
		b.ReportMetric(mbps(restore), "restore-MiB/s")
		b.ReportMetric(tz1.Seconds(), "baseline-first-s")
		b.ReportMetric(mbps(tz1), "baseline-first-MiB/s")
		b.ReportMetric(tz2.Seconds(), "baseline-second-s")
		b.ReportMetric(mbps(tz2), "baseline-second-MiB/s")
		b.ReportMetric(float64(tzBytes), "baseline-uploaded-bytes")
		b.ReportMetric(tzRestore.Seconds(), "baseline-restore-s")
		b.ReportMetric(mbps(tzRestore), "baseline-restore-MiB/s")
		up := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/mib) }
		row := func(d time.Duration) string { return fmt.Sprintf("%.2f s, %.1f MiB/s", d.Seconds(), mbps(d)) }
		logTable(b, fmt.Sprintf("1 GiB tree (%s, %d files) to versitygw on loopback", up(size), res.Files), [][]string{
			{"measurement", "tend (backup.Runner, restic)", "repository growth (data_added)", "tar | zstd -T0 -3", "uploaded"},
			{"first backup", row(first.Duration), up(repo1) + " (" + up(first.Added) + ")", row(tz1), up(tzBytes)},
			{"second backup, unchanged", row(second.Duration), up(repo2-repo1) + " (" + up(second.Added) + ")", row(tz2), up(tzBytes2)},
			{"restore", row(restore), "", row(tzRestore), ""},
		})
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

// sampler reads, every 100 ms on the machine, the agent's VmRSS and
// RssAnon and the VmRSS (summed) and VmHWM (largest) of its restic
// processes; one line per sample: epoch-seconds agent anon restic hwm (kB).
const sampler = `pid=$1
while :; do
  t=$EPOCHREALTIME a=0 an=0 r=0 rh=0
  while read -r k v _; do case $k in VmRSS:) a=$v;; RssAnon:) an=$v;; esac; done 2>/dev/null </proc/$pid/status
  for d in /proc/[0-9]*; do
    c=
    read -r c 2>/dev/null <$d/comm
    [ "$c" = restic ] || continue
    while read -r k v _; do case $k in VmRSS:) r=$((r+v));; VmHWM:) [ "$v" -gt "$rh" ] && rh=$v;; esac; done 2>/dev/null <$d/status
  done
  echo "$t $a $an $r $rh"
  sleep 0.1
done >>/run/bench-rss.tsv
`

type sample struct {
	t                time.Time
	agent, anon      float64 // MiB
	restic, resticHW float64 // MiB
}

func parseSamples(b *testing.B, tsv string) []sample {
	var out []sample
	for _, l := range strings.Split(strings.TrimSpace(tsv), "\n") {
		f := strings.Fields(l)
		if len(f) != 5 {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		v := make([]float64, 4)
		for i := range v {
			kb, _ := strconv.ParseFloat(f[i+1], 64)
			v[i] = kb / 1024
		}
		out = append(out, sample{t: time.Unix(0, int64(sec*1e9)), agent: v[0], anon: v[1], restic: v[2], resticHW: v[3]})
	}
	if len(out) == 0 {
		b.Fatalf("no memory samples: %q", tsv)
	}
	return out
}

// window summarizes the samples in [from, to).
type window struct {
	n                                int
	agentPeak, anonPeak, agentMedian float64
	resticPeakRSS, resticPeakHWM     float64
	first, last                      time.Time
}

func summarize(ss []sample, from, to time.Time) window {
	var w window
	var agents []float64
	for _, s := range ss {
		if s.t.Before(from) || !s.t.Before(to) {
			continue
		}
		if w.n == 0 {
			w.first = s.t
		}
		w.n++
		w.last = s.t
		agents = append(agents, s.agent)
		w.agentPeak = max(w.agentPeak, s.agent)
		w.anonPeak = max(w.anonPeak, s.anon)
		w.resticPeakRSS = max(w.resticPeakRSS, s.restic)
		w.resticPeakHWM = max(w.resticPeakHWM, s.resticHW)
	}
	if len(agents) > 0 {
		slices.Sort(agents)
		w.agentMedian = agents[len(agents)/2]
	}
	return w
}

// BenchmarkAgentMemoryDuringBackup runs the machine agent (`tend-node node
// run`, the systemd service) on a test machine with Debian's restic from
// the machine's apt, and lets its scheduler run two Backups to S3 on the
// bridge: a dump command streaming 1 GiB through the agent into restic,
// then the paths of a 1 GiB tree. The agent's and restic's resident memory
// is sampled every 100 ms on the machine throughout.
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
	if err := os.WriteFile(key, []byte(id.String()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	rule, _ := secret.AgeRule(id.Recipient().String())
	enc, err := secret.Encrypt("s3.yaml", []byte(fmt.Sprintf("accessKeyID: %s\nsecretAccessKey: %s\npassword: bench\n", srv.AccessKey, srv.SecretKey)), rule)
	if err != nil {
		b.Fatal(err)
	}
	pool := fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: MachinePool
metadata: {name: bench}
spec:
  interval: 30s
  machines:
  - {name: %s, address: %s, hostKey: %q}
  state:
    files: [{path: /etc/apt/sources.list.d/bench.list, content: %q}]
    packages: [{name: restic}]
`, m.Name, m.IP, m.HostKey, apt)
	wt.Write(b, map[string]string{"machines/bench.yaml": pool, "s3.yaml": string(enc)})
	wt.Commit(b, "bench pool")
	var out, errb bytes.Buffer
	if code := cli.Main(context.Background(), []string{"bootstrap", "machines", "--pool", filepath.Join(wt.Dir, "machines/bench.yaml"),
		"--repo", git.URL + "/ops.git", "-i", ms.ClientKey, "--binary", bin, "--age-identity", key}, &out, &errb); code != 0 {
		b.Fatalf("bootstrap: %s%s", out.String(), errb.String())
	}
	testenv.Eventually(b, 5*time.Minute, "restic installed by the agent", func() bool {
		_, err := m.Exec("command -v restic")
		if err != nil {
			time.Sleep(time.Second)
		}
		return err == nil
	})
	machine := strings.Join(strings.Fields(m.Run(b, "restic version | cut -d' ' -f1-2; nproc")), " ")

	// The tree for the paths backup, generated on the host and unpacked on
	// the machine through SSH.
	t0 := time.Now()
	treeSize := func() int64 {
		c, err := m.Dial()
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		pr, pw := io.Pipe()
		var o bytes.Buffer
		s.Stdin, s.Stdout, s.Stderr = pr, &o, &o
		if err := s.Start("mkdir -p /srv/tree && tar -C /srv/tree -xf - && sync"); err != nil {
			b.Fatal(err)
		}
		done := make(chan struct {
			n   int64
			err error
		}, 1)
		go func() {
			n, err := tarTree(pw)
			pw.CloseWithError(err)
			done <- struct {
				n   int64
				err error
			}{n, err}
		}()
		werr := s.Wait()
		pr.Close()
		g := <-done
		if werr != nil || g.err != nil {
			b.Fatalf("unpack the tree on the machine: %v %v %s", werr, g.err, o.String())
		}
		return g.n
	}()
	unpack := time.Since(t0).Round(time.Millisecond)

	// The Backups, on schedules the agent's scheduler runs by itself: the
	// dump at the first whole minute at least 45 s away, the tree three
	// minutes later (it waits for the dump if that is still running).
	now := time.Now().UTC()
	slot1 := now.Add(45 * time.Second).Truncate(time.Minute).Add(time.Minute)
	slot2 := slot1.Add(3 * time.Minute)
	cron := func(t time.Time) string { return fmt.Sprintf("%d %d * * *", t.Minute(), t.Hour()) }
	backups := fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: dump}
spec:
  machines: {pool: bench, command: {dump: "head -c 1073741824 /dev/urandom", restore: "cat >/dev/null"}}
  repository: {s3: {endpoint: %[1]q, bucket: backups}, credentials: s3.yaml}
  schedule: {cron: %[2]q, timeZone: UTC}
  keep: {last: 1}
---
apiVersion: tend.dev/v1alpha1
kind: Backup
metadata: {name: tree}
spec:
  machines: {pool: bench, paths: [/srv/tree]}
  repository: {s3: {endpoint: %[1]q, bucket: backups}, credentials: s3.yaml}
  schedule: {cron: %[3]q, timeZone: UTC}
  keep: {last: 1}
`, srv.Endpoint, cron(slot1), cron(slot2))
	wt.Write(b, map[string]string{"machines/backups.yaml": backups})
	wt.Commit(b, "bench backups")
	m.Run(b, "systemctl restart tend-node")
	time.Sleep(10 * time.Second)
	pid := strings.TrimSpace(m.Run(b, "systemctl show -p MainPID --value tend-node"))
	m.Run(b, "cat >/root/bench-rss.sh <<'EOF'\n"+sampler+"EOF\nrm -f /run/bench-rss.tsv; systemd-run -q --unit bench-rss /bin/bash /root/bench-rss.sh "+pid)
	b.Cleanup(func() { m.Exec("systemctl stop bench-rss") })
	l, _ := os.ReadFile("/proc/loadavg")
	b.Logf("machine: %s cores; tree %.1f MiB unpacked in %s; agent pid %s; dump at %s, tree at %s UTC; load average before: %s",
		machine, float64(treeSize)/mib, unpack, pid, slot1.Format("15:04:05"), slot2.Format("15:04:05"), bytes.TrimSpace(l))
	defer logLoad(b, "after")
	b.ResetTimer()
	for range b.N {
		var st backup.State
		testenv.Eventually(b, slot2.Sub(time.Now())+20*time.Minute, "the agent's two scheduled backups", func() bool {
			time.Sleep(3 * time.Second)
			o, err := m.Exec("cat /var/lib/tend/node/backups.json")
			if err != nil || json.Unmarshal([]byte(o), &st) != nil {
				return false
			}
			for _, name := range []string{"dump", "tree"} {
				if rec := st.Backups[name]; rec == nil || rec.Last == nil {
					return false
				}
			}
			return true
		})
		dump, tree := st.Backups["dump"].Last, st.Backups["tree"].Last
		for _, r := range []*backup.Run{dump, tree} {
			if r.Result != backup.Succeeded || r.Trigger != backup.Scheduled {
				b.Fatalf("backup %s: %s (%s): %s", r.Backup, r.Result, r.Trigger, r.Error)
			}
		}
		time.Sleep(15 * time.Second) // idle after the runs
		hwm := m.Run(b, "grep VmHWM /proc/"+pid+"/status | awk '{print $2}'")
		if p := strings.TrimSpace(m.Run(b, "systemctl show -p MainPID --value tend-node")); p != pid {
			b.Fatalf("the agent restarted during the run: pid %s, was %s", p, pid)
		}
		m.Run(b, "systemctl stop bench-rss")
		ss := parseSamples(b, m.Run(b, "cat /run/bench-rss.tsv"))
		end := func(r *backup.Run) time.Time { return r.Start.Add(r.Duration) }
		idle := summarize(ss, ss[0].t, dump.Start)
		wd := summarize(ss, dump.Start, end(dump))
		wf := summarize(ss, tree.Start, end(tree))
		after := summarize(ss, end(tree).Add(5*time.Second), ss[len(ss)-1].t.Add(time.Second))
		all := summarize(ss, ss[0].t, ss[len(ss)-1].t.Add(time.Second))
		agentHWM, _ := strconv.ParseFloat(strings.TrimSpace(hwm), 64)
		agentHWM /= 1024
		interval := ss[len(ss)-1].t.Sub(ss[0].t) / time.Duration(len(ss)-1)
		dumpMiBps := float64(dump.Bytes) / mib / dump.Duration.Seconds()
		treeMiBps := float64(tree.Bytes) / mib / tree.Duration.Seconds()

		b.ReportMetric(idle.agentMedian, "agent-idle-rss-MB")
		b.ReportMetric(wd.agentPeak, "agent-peak-rss-dump-MB")
		b.ReportMetric(wf.agentPeak, "agent-peak-rss-paths-MB")
		b.ReportMetric(after.agentMedian, "agent-idle-after-rss-MB")
		b.ReportMetric(agentHWM, "agent-hwm-MB")
		b.ReportMetric(wd.resticPeakHWM, "restic-peak-rss-dump-MB")
		b.ReportMetric(wf.resticPeakHWM, "restic-peak-rss-paths-MB")
		b.ReportMetric(dump.Duration.Seconds(), "dump-s")
		b.ReportMetric(dumpMiBps, "dump-MiB/s")
		b.ReportMetric(float64(dump.Added), "dump-data-added-bytes")
		b.ReportMetric(tree.Duration.Seconds(), "paths-s")
		b.ReportMetric(treeMiBps, "paths-MiB/s")
		b.ReportMetric(float64(tree.Added), "paths-data-added-bytes")
		mb := func(v float64) string { return fmt.Sprintf("%.1f MB", v) }
		logTable(b, fmt.Sprintf("agent %s on %s, %d samples every %s (idle %d, dump %d, paths %d, idle after %d)",
			pid, m.Name, all.n, interval.Round(time.Millisecond), idle.n, wd.n, wf.n, after.n), [][]string{
			{"phase", "agent VmRSS", "agent RssAnon peak", "restic VmRSS peak", "restic VmHWM", "run"},
			{"idle before", "median " + mb(idle.agentMedian) + ", peak " + mb(idle.agentPeak), mb(idle.anonPeak), mb(idle.resticPeakRSS), mb(idle.resticPeakHWM), ""},
			{"1 GiB dump", "peak " + mb(wd.agentPeak), mb(wd.anonPeak), mb(wd.resticPeakRSS), mb(wd.resticPeakHWM),
				fmt.Sprintf("%s, %.1f MiB/s, data_added %.1f MiB", dump.Duration, dumpMiBps, float64(dump.Added)/mib)},
			{"1 GiB tree (paths)", "peak " + mb(wf.agentPeak), mb(wf.anonPeak), mb(wf.resticPeakRSS), mb(wf.resticPeakHWM),
				fmt.Sprintf("%s, %.1f MiB/s, %d files, data_added %.1f MiB", tree.Duration, treeMiBps, tree.Files, float64(tree.Added)/mib)},
			{"idle after", "median " + mb(after.agentMedian) + ", peak " + mb(after.agentPeak), mb(after.anonPeak), mb(after.resticPeakRSS), "", ""},
			{"agent VmHWM at the end", mb(agentHWM), "", "", "", ""},
		})
	}
}
