package reconcile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/notify"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	_ "tend.dev/tend/internal/source/gogit"
	"tend.dev/tend/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// writeCounter counts the requests tend makes that could change the cluster.
type writeCounter struct {
	rt     http.RoundTripper
	writes atomic.Int64
	mu     sync.Mutex
	log    []string
}

func (w *writeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet {
		w.writes.Add(1)
		w.mu.Lock()
		w.log = append(w.log, r.Method+" "+r.URL.Path)
		w.mu.Unlock()
	}
	return w.rt.RoundTrip(r)
}

func client(t *testing.T) (*kube.Client, *writeCounter) {
	cp := testenv.ControlPlane(t)
	cfg := rest.CopyConfig(cp.Config)
	wc := &writeCounter{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { wc.rt = rt; return wc }
	c, err := kube.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, wc
}

func once(t *testing.T, c *kube.Client, dir, cluster string) map[string]reconcile.Result {
	t.Helper()
	src, err := source.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, _, err := reconcile.New(reconcile.Options{Source: src, Cluster: cluster, Kube: c}).Once(ctx)
	if err != nil {
		t.Fatalf("Once: %v", err)
	}
	out := map[string]reconcile.Result{}
	for _, r := range results {
		out[r.Component] = r
	}
	return out
}

func mustReady(t *testing.T, res map[string]reconcile.Result, names ...string) {
	t.Helper()
	for _, n := range names {
		r, ok := res[n]
		if !ok || !r.Ready {
			t.Fatalf("component %s not Ready: %+v (err %v)", n, r, r.Err)
		}
	}
}

const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.test}
spec:
  group: example.test
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

func appFiles(cluster string) map[string]string {
	return map[string]string{
		"clusters/c.yaml": fmt.Sprintf(`apiVersion: tend.dev/v1alpha1
kind: Cluster
metadata: {name: %[1]s}
spec:
  substitutions: {color: blue}
  components:
  - name: base-%[1]s
    path: base
  - name: app-%[1]s
    path: app
    namespace: %[1]s-app
    dependsOn: [base-%[1]s]
    wait: true
    timeout: 1m
`, cluster),
		"base/ns.yaml":    fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s-app}\n", cluster),
		"base/crd.yaml":   crd,
		"app/cm.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {color: \"${color}\", cluster: \"${cluster_name}\"}\n",
		"app/keep.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hands-off\n  annotations: {tend.dev/reconcile: disabled}\ndata: {v: \"1\"}\n",
		"app/widget.yaml": "apiVersion: example.test/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n",
		"app/deploy.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "example.test/web:1"}]
`,
		"app/svc.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
	}
}

// TestApplyIdlePrune: staged apply with a CRD and its instance, substitution,
// wait, then an idle reconcile with zero writes, then pruning.
func TestApplyIdlePrune(t *testing.T) {
	c, wc := client(t)
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, appFiles("e1"))
	res := once(t, c, dir, "e1")
	mustReady(t, res, "base-e1", "app-e1")
	if got := res["app-e1"].Changes.Count(kube.Created); got != 5 {
		t.Errorf("created %d objects in app, want 5", got)
	}
	ctx := context.Background()
	cm, err := c.Typed.CoreV1().ConfigMaps("e1-app").Get(ctx, "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["color"] != "blue" || cm.Data["cluster"] != "e1" || cm.Labels[kube.LabelComponent] != "app-e1" {
		t.Errorf("settings = %v labels %v", cm.Data, cm.Labels)
	}
	comps, err := c.ListComponents(ctx, "e1")
	if err != nil || len(comps) != 2 {
		t.Fatalf("components = %v, %v", comps, err)
	}

	t.Run("idle reconcile writes nothing", func(t *testing.T) {
		wc.writes.Store(0)
		wc.log = nil
		res := once(t, c, dir, "e1")
		mustReady(t, res, "base-e1", "app-e1")
		if n := wc.writes.Load(); n != 0 {
			t.Fatalf("idle reconcile made %d write requests, want 0: %v", n, wc.log)
		}
	})

	t.Run("prune removes what left git, and only that", func(t *testing.T) {
		// An object tend did not create, in the same namespace: never touched.
		other := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "not-tends", Namespace: "e1-app"}}
		if _, err := c.Typed.CoreV1().ConfigMaps("e1-app").Create(ctx, other, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "app/cm.yaml"))
		os.Remove(filepath.Join(dir, "app/widget.yaml"))
		res := once(t, c, dir, "e1")
		mustReady(t, res, "app-e1")
		if got := res["app-e1"].Changes.Count(kube.Deleted); got != 2 {
			t.Errorf("deleted %d, want 2: %+v", got, res["app-e1"].Changes.Changes)
		}
		if _, err := c.Typed.CoreV1().ConfigMaps("e1-app").Get(ctx, "settings", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("settings still there: %v", err)
		}
		if _, err := c.Typed.CoreV1().ConfigMaps("e1-app").Get(ctx, "not-tends", metav1.GetOptions{}); err != nil {
			t.Errorf("tend deleted an object it did not create: %v", err)
		}
	})
}

// TestRunDriftAndNewRevision runs the agent loop against a git remote served
// by git http-backend: drift is reverted within 5 s by watch, the opt-out
// annotation is honoured, and a pushed commit is applied.
func TestRunDriftAndNewRevision(t *testing.T) {
	c, _ := client(t)
	srv := testenv.NewGitServer(t, "", "")
	wt := srv.Repo(t, "ops")
	files := appFiles("e2")
	files["clusters/c.yaml"] = strings.Replace(files["clusters/c.yaml"], "spec:\n", "spec:\n  interval: 2s\n", 1)
	wt.Write(t, files)
	wt.Commit(t, "feat: app")
	src, err := source.Open(srv.URL+"/ops.git", source.Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m := reconcile.NewMetrics(reg)
	notified := make(chan string, 100)
	hook := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) {
		var e notify.Event
		_ = json.NewDecoder(req.Body).Decode(&e)
		notified <- e.Outcome + " " + e.Message
	}))
	defer hook.Close()
	n := &notify.Notifier{Targets: []notify.Target{{URL: hook.URL}}}
	r := reconcile.New(reconcile.Options{Source: src, Cluster: "e2", Kube: c, Metrics: m, Events: true, Notifier: n})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.Start(ctx)
	go r.Run(ctx)

	cms := c.Typed.CoreV1().ConfigMaps("e2-app")
	testenv.Eventually(t, 60*time.Second, "app Ready", func() bool {
		comp, ok, _ := c.GetComponent(ctx, "app-e2")
		return ok && comp.Status.Ready() != nil && comp.Status.Ready().Status == "True"
	})

	t.Run("edit by another manager is reverted within 5s", func(t *testing.T) {
		patch := []byte(`{"data":{"color":"red"}}`)
		if _, err := cms.Patch(ctx, "settings", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		testenv.Eventually(t, 5*time.Second, "color back to blue", func() bool {
			cm, err := cms.Get(ctx, "settings", metav1.GetOptions{})
			return err == nil && cm.Data["color"] == "blue"
		})
		t.Logf("reverted in %s", time.Since(t0))
		testenv.Eventually(t, 5*time.Second, "drift metric", func() bool {
			return testutil.ToFloat64(m.Drift.WithLabelValues("e2", "app-e2", "ConfigMap")) >= 1
		})
		testenv.Eventually(t, 5*time.Second, "drift notification", func() bool {
			for {
				select {
				case s := <-notified:
					if strings.HasPrefix(s, "drift ") && strings.Contains(s, "kubectl-edit") {
						return true
					}
				default:
					return false
				}
			}
		})
		testenv.Eventually(t, 5*time.Second, "DriftCorrected event", func() bool {
			evs, _ := c.Typed.CoreV1().Events(kube.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "reason=DriftCorrected"})
			for _, e := range evs.Items {
				if strings.Contains(e.Message, "kubectl-edit") {
					return true
				}
			}
			return false
		})
	})
	t.Run("deleted object is recreated within 5s", func(t *testing.T) {
		if err := c.Typed.AppsV1().Deployments("e2-app").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 5*time.Second, "deployment recreated", func() bool {
			d, err := c.Typed.AppsV1().Deployments("e2-app").Get(ctx, "web", metav1.GetOptions{})
			return err == nil && d.DeletionTimestamp == nil
		})
	})
	t.Run("opt-out annotation is left alone", func(t *testing.T) {
		patch := []byte(`{"data":{"v":"changed by hand"}}`)
		if _, err := cms.Patch(ctx, "hands-off", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // longer than the interval: two reconciles
		cm, _ := cms.Get(ctx, "hands-off", metav1.GetOptions{})
		if cm.Data["v"] != "changed by hand" {
			t.Errorf("tend reverted an object marked %s: disabled", kube.AnnotationReconcile)
		}
	})
	t.Run("a pushed commit is applied", func(t *testing.T) {
		wt.Write(t, map[string]string{"app/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {color: green}\n"})
		wt.Commit(t, "feat: green")
		testenv.Eventually(t, 20*time.Second, "color green", func() bool {
			cm, err := cms.Get(ctx, "settings", metav1.GetOptions{})
			return err == nil && cm.Data["color"] == "green"
		})
	})
}
