package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/kube"
	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
	"tend.dev/tend/internal/testenv"
)

// TestAPIServerOutage: the agent loses the API server for 30 s, recovers
// without a restart, applies what changed in git meanwhile, and corrects
// drift by watch again.
func TestAPIServerOutage(t *testing.T) {
	// Its own control plane: the outage must not disturb the other tests.
	cp := testenv.NewControlPlane(t)
	c, err := kube.NewClient(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	testenv.WriteFiles(t, dir, map[string]string{
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: out}\nspec:\n  interval: 2s\n  components:\n  - {name: out-ns, path: ns}\n  - {name: out-app, path: app, namespace: out, dependsOn: [out-ns]}\n",
		"ns/a.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata: {name: out}\n",
		"app/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {v: \"1\"}\n",
	})
	src, _ := source.NewDir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reconcile.New(reconcile.Options{Source: src, Cluster: "out", Kube: c}).Run(ctx)
	cms := c.Typed.CoreV1().ConfigMaps("out")
	value := func() string {
		cm, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return cm.Data["v"]
	}
	testenv.Eventually(t, 30*time.Second, "first apply", func() bool { return value() == "1" })

	cp.StopAPIServer()
	// git moves while the cluster is away.
	os.WriteFile(filepath.Join(dir, "app/a.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {v: \"2\"}\n"), 0o644)
	time.Sleep(30 * time.Second)
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	defer scancel()
	if err := cp.StartAPIServer(sctx); err != nil {
		t.Fatalf("restart the API server: %v", err)
	}
	testenv.Eventually(t, 60*time.Second, "caught up with git after the outage", func() bool { return value() == "2" })
	// The watches are back: drift is corrected within 5 s again.
	if _, err := cms.Patch(ctx, "cfg", types.MergePatchType, []byte(`{"data":{"v":"hand"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "drift corrected after the outage", func() bool { return value() == "2" })
}
