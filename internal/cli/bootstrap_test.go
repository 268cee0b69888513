package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"tend.dev/tend/internal/devcluster"
	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

func TestBootstrapHandOverAndSelfUpdate(t *testing.T) {
	cp := testenv.ControlPlane(t)
	kc := cp.Kubeconfig
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: boot}\nspec:\n  interval: 1s\n  components:\n  - {name: tend, path: tend}\n  - {name: bootapp, path: app, namespace: tend-system}\n",
		"app/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-cfg}\ndata: {k: v}\n",
	})
	id, _ := keygen(t)
	t.Setenv("TEND_GIT_TOKEN", "git-token-value")
	args := []string{"bootstrap", "--repo", "https://git.example.test/ops.git", "--cluster", "boot", "--image", "registry.example.test/tend:1.0.0",
		"--write", dir, "--kubeconfig", kc, "--age-identity", id}
	code, out, stderr := run(t, args...)
	if code != 0 || !strings.Contains(out, "agent installed in tend-system") || !strings.Contains(out, "secret tend-system/tend-source written") {
		t.Fatalf("bootstrap = %d\n%s%s", code, out, stderr)
	}
	manifests, _ := os.ReadFile(filepath.Join(dir, "tend/tend.yaml"))
	if strings.Contains(string(manifests), "git-token-value") || strings.Contains(string(manifests), "AGE-SECRET-KEY") {
		t.Fatal("credentials were written into the repository")
	}
	c, err := kube.NewClient(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := c.Typed.AppsV1().Deployments("tend-system").Get(ctx, "tend", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Spec.Containers[0].Image != "registry.example.test/tend:1.0.0" {
		t.Fatalf("agent Deployment: %v", err)
	}
	if s, err := c.Typed.CoreV1().Secrets("tend-system").Get(ctx, "sops-age", metav1.GetOptions{}); err != nil || !strings.Contains(string(s.Data["age.agekey"]), "AGE-SECRET-KEY") {
		t.Fatalf("age Secret: %v", err)
	}
	// Idempotent: a second run changes nothing.
	code, out, _ = run(t, args...)
	if code != 0 || !strings.Contains(out, "0 created, 0 configured") || strings.Contains(out, "written") {
		t.Fatalf("second bootstrap = %d\n%s", code, out)
	}

	// The agent (a local process here: kwok pods run no containers) takes
	// over: it finds its own objects in the inventory and changes nothing.
	src, _ := source.NewDir(dir)
	var mu sync.Mutex
	results := map[string][]reconcile.Result{}
	r := reconcile.New(reconcile.Options{Source: src, Cluster: "boot", Kube: c})
	r.OnResult = func(res reconcile.Result) {
		mu.Lock()
		results[res.Component] = append(results[res.Component], res)
		mu.Unlock()
	}
	go r.Run(ctx)
	first := func(name string) *reconcile.Result {
		mu.Lock()
		defer mu.Unlock()
		if len(results[name]) == 0 {
			return nil
		}
		return &results[name][0]
	}
	testenv.Eventually(t, 30*time.Second, "agent reconciled both components", func() bool { return first("tend") != nil && first("bootapp") != nil })
	if res := first("tend"); !res.Ready || res.Changes.Count(kube.Created) != 0 || res.Changes.Count(kube.Configured) != 0 {
		t.Fatalf("hand-over re-created or changed the agent's objects: %+v", res.Changes)
	}
	appCM, _ := c.Typed.CoreV1().ConfigMaps("tend-system").Get(ctx, "app-cfg", metav1.GetOptions{})

	// Self-update: a commit changes the agent's version.
	testenv.WriteFiles(t, dir, map[string]string{"tend/tend.yaml": strings.Replace(string(manifests), "tend:1.0.0", "tend:1.1.0", 1)})
	testenv.Eventually(t, 30*time.Second, "agent updated its own Deployment", func() bool {
		d, err := c.Typed.AppsV1().Deployments("tend-system").Get(ctx, "tend", metav1.GetOptions{})
		return err == nil && d.Spec.Template.Spec.Containers[0].Image == "registry.example.test/tend:1.1.0"
	})
	again, _ := c.Typed.CoreV1().ConfigMaps("tend-system").Get(ctx, "app-cfg", metav1.GetOptions{})
	if again.ResourceVersion != appCM.ResourceVersion {
		t.Error("the self-update disturbed another component")
	}

	testenv.Eventually(t, 30*time.Second, "agent 1.1.0 rolled out", func() bool {
		d, err := c.Typed.AppsV1().Deployments("tend-system").Get(ctx, "tend", metav1.GetOptions{})
		return err == nil && d.Status.ObservedGeneration == d.Generation && d.Status.UpdatedReplicas == 2 && d.Status.AvailableReplicas == 2 && d.Status.Replicas == 2
	})

	// A commit that breaks the agent (an image that does not exist): the
	// rolling update never removes a ready agent, and status says why.
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml":         strings.Replace(readFile(t, filepath.Join(dir, "c.yaml")), "{name: tend, path: tend}", "{name: tend, path: tend, wait: true, timeout: 4s}", 1),
		"tend/tend.yaml": strings.Replace(string(manifests), "tend:1.0.0", "tend:"+devcluster.MissingImageTag, 1),
	})
	last := func(name string) *reconcile.Result {
		mu.Lock()
		defer mu.Unlock()
		if len(results[name]) == 0 {
			return nil
		}
		return &results[name][len(results[name])-1]
	}
	testenv.Eventually(t, 60*time.Second, "the broken update reported", func() bool {
		res := last("tend")
		return res != nil && !res.Ready && res.Err != nil && strings.Contains(res.Err.Error(), "ErrImagePull")
	})
	d, err = c.Typed.AppsV1().Deployments("tend-system").Get(ctx, "tend", metav1.GetOptions{})
	if err != nil || d.Status.AvailableReplicas != 2 || d.Status.UnavailableReplicas != 1 {
		pods, _ := c.Typed.CoreV1().Pods("tend-system").List(ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			t.Logf("pod %s image %s phase %s node %q conditions %+v", p.Name, p.Spec.Containers[0].Image, p.Status.Phase, p.Spec.NodeName, p.Status.Conditions)
		}
		t.Fatalf("the old agents did not keep running: %v %+v", err, d.Status)
	}
	code, out, _ = run(t, "status", "--cluster", "boot", "--kubeconfig", kc)
	if code != 1 || !strings.Contains(out, "ErrImagePull") {
		t.Fatalf("status does not show the failed agent update: %d\n%s", code, out)
	}
	t.Logf("tend status:\n%s", out)
	cancel()

	code, out, _ = run(t, "bootstrap", "--repo", "https://x/ops.git", "--cluster", "boot", "--image", "i:1", "--print")
	if code != 0 || !strings.Contains(out, "kind: Deployment") || !strings.Contains(out, "maxUnavailable: 0") {
		t.Fatalf("--print = %d\n%s", code, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
