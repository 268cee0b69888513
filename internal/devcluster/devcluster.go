// Package devcluster runs a real local Kubernetes control plane without
// Docker: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
// built from their Go modules, plus kwok fake nodes so that pods report
// Running and Deployments become Available.
//
// The same code backs the tests and `tend dev up`, so what the tests prove is
// what users try. Binaries are built once and cached under
// $HOME/.cache/tend/k8s/<version>/bin.
package devcluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Versions of the components, kept in step with build-controlplane.sh.
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.6.16"
	KwokVersion       = "v0.8.0"
)

//go:embed build-controlplane.sh
var buildScript []byte

// CacheDir is where tend keeps built binaries and the dev cluster state.
func CacheDir() string {
	if d := os.Getenv("TEND_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "tend-cache")
	}
	return filepath.Join(home, ".cache", "tend")
}

// BinDir is where the control plane binaries are cached.
func BinDir() string { return filepath.Join(CacheDir(), "k8s", KubernetesVersion, "bin") }

var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok"}

// Missing lists the binaries not built yet.
func Missing() []string {
	var out []string
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(BinDir(), b)); err != nil {
			out = append(out, b)
		}
	}
	return out
}

// Build builds whatever binaries are missing, streaming progress to w. It
// needs the go toolchain and the module proxy; a cold build takes about 8
// minutes on 2 cores, a warm one nothing.
func Build(ctx context.Context, w io.Writer) error {
	if len(Missing()) == 0 {
		return nil
	}
	if _, err := exec.LookPath("go"); err != nil {
		return fmt.Errorf("build control plane: the go toolchain is needed to build %s: %w", strings.Join(Missing(), ", "), err)
	}
	f, err := os.CreateTemp("", "tend-build-*.sh")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(buildScript); err != nil {
		return err
	}
	f.Close()
	cmd := exec.CommandContext(ctx, "bash", f.Name())
	cmd.Env = append(os.Environ(), "TEND_CACHE="+CacheDir(), "K8S_VERSION="+KubernetesVersion, "ETCD_VERSION="+EtcdVersion, "KWOK_VERSION="+KwokVersion)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build control plane: %w", err)
	}
	return nil
}

// Options configure Start.
type Options struct {
	// Dir holds the PKI, etcd data and logs. Reusing a Dir restarts the
	// same cluster with its data.
	Dir string
	// Nodes is the number of kwok fake nodes (default 2).
	Nodes int
	// Detach leaves the processes running after the caller exits (tend dev up).
	Detach bool
	// Log receives progress lines; may be nil.
	Log io.Writer
}

// Cluster is a running control plane.
type Cluster struct {
	Dir        string
	Kubeconfig string
	Server     string
	Config     *rest.Config
	procs      []*exec.Cmd
	byName     map[string]*exec.Cmd
	args       map[string][]string
	detach     bool
}

// start runs one component in the background, logging to Dir/log.
func (c *Cluster) start(name string, args ...string) error {
	lf, err := os.OpenFile(filepath.Join(c.Dir, "log", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(BinDir(), name), args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !c.detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	lf.Close()
	c.procs = append(c.procs, cmd)
	c.byName[name], c.args[name] = cmd, args
	if c.detach {
		return os.WriteFile(filepath.Join(c.Dir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	}
	go cmd.Wait() //nolint:errcheck // reaped so it does not linger as a zombie
	return nil
}

// StopAPIServer kills the kube-apiserver alone, as an outage would; the
// other components keep running. Tests use it to prove recovery.
func (c *Cluster) StopAPIServer() {
	if p := c.byName["kube-apiserver"]; p != nil && p.Process != nil {
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	}
}

// StartAPIServer starts the kube-apiserver again with the same flags and
// waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	if err := c.start("kube-apiserver", c.args["kube-apiserver"]...); err != nil {
		return err
	}
	rt, err := rest.TransportFor(c.Config)
	if err != nil {
		return err
	}
	return waitHTTP(ctx, c.Server+"/readyz", &http.Client{Transport: rt, Timeout: 2 * time.Second}, 120*time.Second)
}

// ErrNotBuilt says the binaries are missing.
var ErrNotBuilt = errors.New("control plane binaries are not built")

// Start starts a control plane in opts.Dir and waits until it serves and the
// kwok nodes are Ready.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("%w: %s missing in %s; run `tend dev up` or hack/test.sh, which build them once (about 8 min)", ErrNotBuilt, strings.Join(m, ", "), BinDir())
	}
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "log"), 0o700); err != nil {
		return nil, err
	}
	p := pki{dir: filepath.Join(opts.Dir, "pki")}
	if err := p.ensure(); err != nil {
		return nil, fmt.Errorf("write pki: %w", err)
	}
	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, etcdMetrics, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5], ports[6]
	c := &Cluster{Dir: opts.Dir, Server: fmt.Sprintf("https://127.0.0.1:%d", apiPort)}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	c.detach = opts.Detach
	c.args = map[string][]string{}
	c.byName = map[string]*exec.Cmd{}
	start := c.start
	t0 := time.Now()
	step := func(format string, a ...any) {
		fmt.Fprintf(logw, "  %-40s %5.1fs\n", fmt.Sprintf(format, a...), time.Since(t0).Seconds())
	}

	if err := start("etcd", "--name", "tend-dev", "--data-dir", filepath.Join(opts.Dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("tend-dev=http://127.0.0.1:%d", etcdPeer),
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdMetrics),
		"--unsafe-no-fsync", "--quota-backend-bytes=4294967296", "--log-level=warn"); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/health", etcdMetrics), nil, 30*time.Second); err != nil {
		return nil, c.startErr("etcd", err)
	}
	step("etcd ready")
	pk := p.path
	if err := start("kube-apiserver",
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClient),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort), "--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none",
		"--tls-cert-file="+pk("apiserver.crt"), "--tls-private-key-file="+pk("apiserver.key"),
		"--client-ca-file="+pk("ca.crt"),
		"--requestheader-client-ca-file="+pk("front-proxy-ca.crt"), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+pk("front-proxy-client.crt"), "--proxy-client-key-file="+pk("front-proxy-client.key"),
		"--kubelet-client-certificate="+pk("apiserver-kubelet-client.crt"), "--kubelet-client-key="+pk("apiserver-kubelet-client.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pk("sa.pub"), "--service-account-signing-key-file="+pk("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false"); err != nil {
		return nil, err
	}
	admin, err := p.kubeconfig("admin", c.Server)
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = admin
	c.Config, err = clientcmd.BuildConfigFromFlags("", admin)
	if err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	rt, err := rest.TransportFor(c.Config)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, c.Server+"/readyz", &http.Client{Transport: rt, Timeout: 2 * time.Second}, 120*time.Second); err != nil {
		return nil, c.startErr("kube-apiserver", err)
	}
	step("kube-apiserver ready")
	for _, id := range []string{"kube-controller-manager", "kube-scheduler", "kwok"} {
		if _, err := p.kubeconfig(id, c.Server); err != nil {
			return nil, err
		}
	}
	cm := pk("kube-controller-manager.kubeconfig")
	if err := start("kube-controller-manager", "--kubeconfig="+cm, "--authentication-kubeconfig="+cm, "--authorization-kubeconfig="+cm,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", cmPort), "--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pk("sa.key"), "--root-ca-file="+pk("ca.crt"),
		"--flex-volume-plugin-dir="+filepath.Join(opts.Dir, "flexvolume"),
		"--cluster-signing-cert-file="+pk("ca.crt"), "--cluster-signing-key-file="+pk("ca.key"),
		"--service-cluster-ip-range=10.96.0.0/16", "--cluster-name=tend-dev",
		"--controllers=*,bootstrapsigner,tokencleaner"); err != nil {
		return nil, err
	}
	sc := pk("kube-scheduler.kubeconfig")
	if err := start("kube-scheduler", "--kubeconfig="+sc, "--authentication-kubeconfig="+sc, "--authorization-kubeconfig="+sc,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedPort), "--leader-elect=false"); err != nil {
		return nil, err
	}
	kwokCfg, err := writeKwokConfig(opts.Dir, kwokPort)
	if err != nil {
		return nil, err
	}
	if err := start("kwok", "--kubeconfig="+pk("kwok.kubeconfig"), "--config="+kwokCfg); err != nil {
		return nil, err
	}
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	if err := waitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", cmPort), insecure, 60*time.Second); err != nil {
		return nil, c.startErr("kube-controller-manager", err)
	}
	if err := waitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", schedPort), insecure, 60*time.Second); err != nil {
		return nil, c.startErr("kube-scheduler", err)
	}
	step("controller-manager and scheduler ready")
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	if err := createNodes(ctx, cs, opts.Nodes); err != nil {
		return nil, err
	}
	if err := waitNodesReady(ctx, cs, opts.Nodes, 60*time.Second); err != nil {
		return nil, c.startErr("kwok", err)
	}
	step("%d kwok nodes Ready", opts.Nodes)
	if opts.Detach {
		if err := os.WriteFile(filepath.Join(opts.Dir, "server"), []byte(c.Server), 0o600); err != nil {
			return nil, err
		}
	}
	ok = true
	return c, nil
}

func (c *Cluster) startErr(component string, err error) error {
	log := filepath.Join(c.Dir, "log", component+".log")
	tail := ""
	if b, rerr := os.ReadFile(log); rerr == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 8 {
			lines = lines[len(lines)-8:]
		}
		tail = "\n" + strings.Join(lines, "\n")
	}
	return fmt.Errorf("start %s: %w (log: %s)%s", component, err, log, tail)
}

// Stop kills the processes started by this Cluster, newest first.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i].Process
		if p == nil {
			continue
		}
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
		_ = p.Kill()
	}
	c.procs = nil
}

// StopDetached stops a cluster started with Detach in dir, using its pid
// files: all components get SIGTERM at once, then SIGKILL after 10 s. It
// reports whether anything was running.
func StopDetached(dir string) (bool, error) {
	var pids []int
	for _, b := range binaries {
		f := filepath.Join(dir, b+".pid")
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		os.Remove(f)
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err == nil && syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			pids = append(pids, pid)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) && syscall.Kill(pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	return len(pids) > 0, nil
}

// Running reports whether a detached cluster in dir is up and its kubeconfig.
func Running(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "kube-apiserver.pid"))
	if err != nil {
		return "", false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return "", false
	}
	return filepath.Join(dir, "pki", "admin.kubeconfig"), true
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(ctx context.Context, url string, client *http.Client, timeout time.Duration) error {
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Second}
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("not ready after %s: %v", timeout, last)
}

// MissingImageTag marks an image the dev cluster treats as absent from its
// registry. kwok runs no containers, so without this every pod would become
// Ready whatever its image; with it, a pod whose image contains the tag stays
// Pending with ErrImagePull, as on a real node, and rolling updates stall.
const MissingImageTag = "does-not-exist"

const missingImageQuery = `'[.spec.containers[].image | contains("` + MissingImageTag + `")] | any'`

const notMissingImage = `    - key: ` + missingImageQuery + `
      operator: 'NotIn'
      values: ['true']
`

const imagePullFailedStage = `---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-image-pull-failed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.containerStatuses'
      operator: 'DoesNotExist'
    - key: ` + missingImageQuery + `
      operator: 'In'
      values: ['true']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodScheduled
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        type: Ready
        reason: ContainersNotReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        state:
          waiting:
            reason: ErrImagePull
            message: {{ printf "failed to pull image %s: not found" .image | Quote }}
      {{ end }}
      phase: Pending
`

func writeKwokConfig(dir string, port int) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  manageAllNodes: false
  manageNodesWithAnnotationSelector: kwok.x-k8s.io/node=fake
  nodeLeaseDurationSeconds: 40
  cidr: 10.244.0.0/16
  nodeIP: 10.0.0.1
  serverAddress: 127.0.0.1:%d
  nodeLeaseParallelism: 4
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
`, port)
	stage := filepath.Join(BinDir(), "kwok-stage")
	for _, f := range []string{"node/fast/node-initialize.yaml", "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"pod/fast/pod-ready.yaml", "pod/fast/pod-complete.yaml", "pod/fast/pod-delete.yaml"} {
		data, err := os.ReadFile(filepath.Join(stage, f))
		if err != nil {
			return "", fmt.Errorf("kwok stage file: %w", err)
		}
		if f == "pod/fast/pod-ready.yaml" {
			// Pods of a missing image never become ready: see MissingImageTag.
			data = []byte(strings.Replace(string(data), "    matchExpressions:\n", "    matchExpressions:\n"+notMissingImage, 1))
			if !strings.Contains(string(data), "does-not-exist") {
				return "", fmt.Errorf("kwok stage file %s: unexpected layout", f)
			}
		}
		b.WriteString("---\n")
		b.Write(data)
		if !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
	}
	b.WriteString(imagePullFailedStage)
	out := filepath.Join(dir, "kwok.yaml")
	return out, os.WriteFile(out, []byte(b.String()), 0o600)
}

func createNodes(ctx context.Context, cs kubernetes.Interface, n int) error {
	for i := range n {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("kwok-node-%d", i),
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
			Labels: map[string]string{"type": "kwok", "kubernetes.io/hostname": fmt.Sprintf("kwok-node-%d", i),
				"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
		}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", node.Name, err)
		}
	}
	return nil
}

func waitNodesReady(ctx context.Context, cs kubernetes.Interface, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: "type=kwok"})
		if err == nil {
			ready := 0
			for _, node := range nodes.Items {
				for _, c := range node.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
			if ready >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%d kwok nodes not Ready after %s", n, timeout)
}
