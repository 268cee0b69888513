package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"tend.dev/tend/internal/reconcile"
	"tend.dev/tend/internal/source"
)

// TestLeaderElection: of two replicas only the leader writes; when it dies
// without releasing the Lease, the standby takes over within 15 s and
// corrects drift again.
func TestLeaderElection(t *testing.T) {
	c, _ := client(t)
	dir := t.TempDir()
	writeRepo(t, dir, map[string]string{
		"c.yaml":     "apiVersion: tend.dev/v1alpha1\nkind: Cluster\nmetadata: {name: ha}\nspec:\n  interval: 1h\n  components:\n  - {name: ha-ns, path: ns}\n  - {name: ha-app, path: app, namespace: ha, dependsOn: [ha-ns]}\n",
		"ns/a.yaml":  "apiVersion: v1\nkind: Namespace\nmetadata: {name: ha}\n",
		"app/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {k: git}\n",
	})
	src, _ := source.NewDir(dir)
	// Production timings (the zero values): the bound below is the real one.
	lo := func(id string) reconcile.LeaderOptions { return reconcile.LeaderOptions{Identity: id} }
	// The leader dies as in a crash: it stops renewing and keeps the Lease.
	leaderCtx, kill := context.WithCancel(context.Background())
	a := reconcile.New(reconcile.Options{Source: src, Cluster: "ha", Kube: c})
	crash := lo("a")
	crash.KeepOnExit = true
	go a.RunLeaderElected(leaderCtx, crash)
	time.Sleep(500 * time.Millisecond) // a goes first
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := reconcile.New(reconcile.Options{Source: src, Cluster: "ha", Kube: c})
	go b.RunLeaderElected(ctx, lo("b"))

	cms := c.Typed.CoreV1().ConfigMaps("ha")
	eventually(t, 30*time.Second, "applied by the leader", func() bool {
		cm, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		return err == nil && cm.Data["k"] == "git"
	})
	lease, err := c.Typed.CoordinationV1().Leases("tend-system").Get(ctx, "tend-ha", metav1.GetOptions{})
	if err != nil || *lease.Spec.HolderIdentity != "a" {
		t.Fatalf("lease holder = %v, %v; want a", lease, err)
	}
	kill()
	died := time.Now()
	eventually(t, 15*time.Second, "standby b holds the lease", func() bool {
		l, err := c.Typed.CoordinationV1().Leases("tend-system").Get(ctx, "tend-ha", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "b"
	})
	t.Logf("standby took over %s after the leader died", time.Since(died).Round(100*time.Millisecond))
	if _, err := cms.Patch(ctx, "cfg", types.MergePatchType, []byte(`{"data":{"k":"edited"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the new leader corrects drift", func() bool {
		cm, err := cms.Get(ctx, "cfg", metav1.GetOptions{})
		return err == nil && cm.Data["k"] == "git" && !strings.Contains(cm.Data["k"], "edited")
	})
}
