// Command apply benchmarks tend against kubectl on the dev cluster: a cold
// apply of 1,000 objects (250 components × ServiceAccount, Service,
// Deployment, ConfigMap), a no-op reconcile of the same with its write
// request count, and the peak memory of `tend run` holding them. kubectl
// (built from the same Kubernetes module) applies the same objects with
// --server-side --prune in the same run. Results print as Markdown.
//
//	go run ./bench/apply [-components 250]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"tend.dev/tend/internal/devcluster"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
)

type counter struct {
	rt     http.RoundTripper
	writes atomic.Int64
	all    atomic.Int64
}

func (c *counter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.all.Add(1)
	if r.Method != http.MethodGet {
		c.writes.Add(1)
	}
	return c.rt.RoundTrip(r)
}

func main() {
	n := flag.Int("components", 250, "components of 4 objects each")
	flag.Parse()
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tend-bench-")
	defer os.RemoveAll(dir)
	cp, err := devcluster.Start(ctx, devcluster.Options{Dir: filepath.Join(dir, "cp")})
	if err != nil {
		log.Fatal(err)
	}
	defer cp.Stop()
	repo := filepath.Join(dir, "repo")
	gen(repo, "bench-tend", *n, true)
	kdir := filepath.Join(dir, "kubectl")
	gen(kdir, "bench-kubectl", *n, false)
	kubectl := filepath.Join(devcluster.BinDir(), "kubectl")
	sh := func(args ...string) {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECTL_APPLYSET=true")
		if out, err := cmd.CombinedOutput(); err != nil {
			log.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
	}
	sh("create", "namespace", "bench-tend")
	sh("create", "namespace", "bench-kubectl")

	cfg := rest.CopyConfig(cp.Config)
	cnt := &counter{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { cnt.rt = rt; return cnt }
	c, err := kube.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	src, _ := source.NewDir(repo)
	once := func() (time.Duration, int64, int64) {
		cnt.writes.Store(0)
		cnt.all.Store(0)
		t0 := time.Now()
		res, _, err := reconcile.New(reconcile.Options{Source: src, Cluster: "bench", Kube: c, Workers: 16}).Once(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, r := range res {
			if !r.Ready {
				log.Fatalf("%s not Ready: %s", r.Component, r.Message)
			}
		}
		return time.Since(t0), cnt.writes.Load(), cnt.all.Load()
	}
	kapply := func() time.Duration {
		t0 := time.Now()
		// Server-side apply prunes only through an ApplySet (kubectl's
		// inventory), the fair equivalent of tend's.
		sh("apply", "--server-side", "--prune", "--applyset=bench", "-n", "bench-kubectl", "-R", "-f", kdir)
		return time.Since(t0)
	}
	// Controllers, the scheduler and kwok keep the 2 cores busy after 250
	// Deployments arrive; let them settle so neither tool pays for the other.
	settle := func() { time.Sleep(20 * time.Second) }
	tCold, tColdWrites, tColdReqs := once()
	settle()
	kCold := kapply()
	settle()
	tNoop, tNoopWrites, tNoopReqs := once()
	kNoop := kapply()

	// tend run: peak RSS while holding the objects in its watch cache.
	bin := filepath.Join(dir, "tend")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/tend").CombinedOutput(); err != nil {
		log.Fatalf("build tend: %v\n%s", err, out)
	}
	run := exec.Command(bin, "run", "--repo", repo, "--cluster", "bench", "--kubeconfig", cp.Kubeconfig, "--log-level", "warn")
	run.Stderr = os.Stderr
	if err := run.Start(); err != nil {
		log.Fatal(err)
	}
	time.Sleep(20 * time.Second) // the first pass reads all 1,000 objects into the cache
	peak := procStatus(run.Process.Pid, "VmHWM")
	rss := procStatus(run.Process.Pid, "VmRSS")
	run.Process.Kill()
	run.Wait()

	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Printf("Machine: %d cores (%s), %s, Kubernetes %s, %d objects (%d components).\n\n", runtime.NumCPU(), cpu, runtime.Version(), devcluster.KubernetesVersion, *n*4, *n)
	fmt.Printf("| measurement | tend | kubectl apply --server-side --prune --applyset |\n|---|---|---|\n")
	fmt.Printf("| cold apply | %.2f s (%d write requests, %d in all) | %.2f s |\n", tCold.Seconds(), tColdWrites, tColdReqs, kCold.Seconds())
	fmt.Printf("| no-op reconcile | %.2f s (**%d write requests**, %d in all) | %.2f s |\n", tNoop.Seconds(), tNoopWrites, tNoopReqs, kNoop.Seconds())
	fmt.Printf("| `tend run` memory holding them | peak %s, now %s | — |\n", peak, rss)
}

func procStatus(pid int, key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key+":") {
			return strings.TrimSpace(strings.TrimPrefix(l, key+":"))
		}
	}
	return "?"
}

// gen writes n components of 4 objects. With cluster it writes a tend
// Cluster too; without, plain files labelled for kubectl's prune.
func gen(dir, ns string, n int, cluster bool) {
	var comps strings.Builder
	for i := range n {
		name := fmt.Sprintf("app%03d", i)
		label := ""
		if !cluster {
			label = ""
		}
		objs := fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[1]s
  namespace: %[2]s%[3]s
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: %[1]s
  namespace: %[2]s%[3]s
data: {index: "%[4]d", greeting: hello}
---
apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s%[3]s
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s%[3]s
spec:
  replicas: 1
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      serviceAccountName: %[1]s
      containers: [{name: app, image: "example.test/app:1", envFrom: [{configMapRef: {name: %[1]s}}]}]
`, name, ns, label, i)
		p := filepath.Join(dir, "apps", name, "all.yaml")
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(objs), 0o644)
		fmt.Fprintf(&comps, "  - {name: %s, path: apps/%s}\n", name, name)
	}
	if cluster {
		os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte("apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: bench}\nspec:\n  interval: 10m\n  components:\n"+comps.String()), 0o644)
	}
}
